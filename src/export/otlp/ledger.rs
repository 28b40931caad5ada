//! The on-disk queue's delivered position: a small file, `delivered`, next
//! to the segments, saying "every record before (segment, offset) was
//! delivered". Without it a restart after a crash resends every record of
//! every segment not yet deleted, up to a whole segment (16 MiB) of records
//! that were delivered already; with it, only the batches from the oldest
//! one still in flight at the crash.
//!
//! Batches are read from disk in order but delivered in any order
//! (`queue.consumers` at a time), so the position kept is the end of the
//! longest run of delivered batches from the start ([`InFlight`]).
//!
//! The file holds two 32-byte slots written in turn:
//!
//! ```text
//! magic "GSL1" (4) | generation u64 LE | segment u64 LE | offset u64 LE | crc32 u32 LE
//! ```
//!
//! (the CRC-32 covers generation, segment and offset); the valid slot with
//! the higher generation is in force, so a write torn by a crash leaves the
//! previous position. It is written by the queue's writer thread and not
//! synced: a process crash (kill -9, an OOM kill) keeps it in the page
//! cache; a node crash may lose its latest updates, which only means more
//! records sent twice. A position is only ever behind the truth, so it never
//! costs a record.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const FILE: &str = "delivered";
const MAGIC: &[u8; 4] = b"GSL1";
const SLOT: usize = 32;

/// A place in the queue: segment, and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub seg: u64,
    pub off: u64,
}

fn crc(generation: u64, p: Pos) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(&p.seg.to_le_bytes());
    h.update(&p.off.to_le_bytes());
    h.finalize()
}

fn encode(generation: u64, p: Pos) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[0..4].copy_from_slice(MAGIC);
    b[4..12].copy_from_slice(&generation.to_le_bytes());
    b[12..20].copy_from_slice(&p.seg.to_le_bytes());
    b[20..28].copy_from_slice(&p.off.to_le_bytes());
    b[28..32].copy_from_slice(&crc(generation, p).to_le_bytes());
    b
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// A valid slot: (generation, position).
fn decode(b: &[u8]) -> Option<(u64, Pos)> {
    if b.get(0..4)? != MAGIC {
        return None;
    }
    let generation = u64_at(b, 4)?;
    let p = Pos {
        seg: u64_at(b, 12)?,
        off: u64_at(b, 20)?,
    };
    let sum = u32::from_le_bytes(b.get(28..32)?.try_into().ok()?);
    (crc(generation, p) == sum).then_some((generation, p))
}

/// The delivered position the last run left, with its generation; None
/// when there is no ledger or neither slot is valid (then every record on
/// disk is sent, as without a ledger).
pub fn read(dir: &Path) -> Option<(u64, Pos)> {
    let b = std::fs::read(dir.join(FILE)).ok()?;
    let a = b.get(..SLOT).and_then(decode);
    let c = b.get(SLOT..2 * SLOT).and_then(decode);
    match (a, c) {
        (Some(x), Some(y)) => Some(if x.0 >= y.0 { x } else { y }),
        (x, y) => x.or(y),
    }
}

/// The writer's side: the ledger file, opened on the first write.
pub struct Writer {
    file: Option<File>,
    generation: u64,
}

impl Writer {
    /// Continues after `generation` (the one [`read`] found).
    pub fn new(generation: u64) -> Writer {
        Writer {
            file: None,
            generation,
        }
    }

    /// Writes `p` into the older slot. Blocking: the queue's writer thread.
    pub fn write(&mut self, dir: &Path, p: Pos) -> io::Result<()> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(FILE))?;
            self.file = Some(f);
        }
        let generation = self.generation + 1;
        let slot = (generation % 2) * SLOT as u64;
        match &self.file {
            Some(f) => f.write_all_at(&encode(generation, p), slot)?,
            None => return Err(io::Error::other("ledger not open")),
        }
        self.generation = generation;
        Ok(())
    }
}

/// Batches read and not yet all delivered, in read order, each with the
/// position just past its last record.
#[derive(Default)]
pub struct InFlight {
    next_id: u64,
    batches: VecDeque<(u64, Pos, bool)>,
}

impl InFlight {
    /// A batch read up to `end`: its id.
    pub fn read(&mut self, end: Pos) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.batches.push_back((id, end, false));
        id
    }

    /// Batch `id` is delivered (or given up on): the new delivered position
    /// when the run of delivered batches from the oldest one grew.
    pub fn done(&mut self, id: u64) -> Option<Pos> {
        let first = self.batches.front()?.0;
        let i = usize::try_from(id.checked_sub(first)?).ok()?;
        if let Some(b) = self.batches.get_mut(i) {
            b.2 = true;
        }
        let mut upto = None;
        while let Some(&(_, end, true)) = self.batches.front() {
            upto = Some(end);
            self.batches.pop_front();
        }
        upto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_is_the_end_of_the_delivered_run_from_the_oldest_batch() {
        let mut f = InFlight::default();
        let p = |off| Pos { seg: 1, off };
        let (a, b, c) = (f.read(p(10)), f.read(p(20)), f.read(p(30)));
        assert_eq!(f.done(b), None, "the oldest batch is still in flight");
        assert_eq!(f.done(a), Some(p(20)));
        assert_eq!(f.done(a), None, "a batch done twice moves nothing");
        assert_eq!(f.done(c), Some(p(30)));
        assert_eq!(f.done(c), None);
    }

    #[test]
    fn the_newer_valid_slot_wins_and_a_torn_one_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()), None);
        let mut w = Writer::new(0);
        w.write(dir.path(), Pos { seg: 3, off: 100 })
            .expect("write");
        w.write(dir.path(), Pos { seg: 3, off: 200 })
            .expect("write");
        assert_eq!(read(dir.path()), Some((2, Pos { seg: 3, off: 200 })));
        // tear the newer slot (generation 2, slot 0)
        let path = dir.path().join(FILE);
        let mut b = std::fs::read(&path).expect("read");
        b[25] ^= 0xff;
        std::fs::write(&path, &b).expect("write");
        assert_eq!(read(dir.path()), Some((1, Pos { seg: 3, off: 100 })));
        std::fs::write(&path, b"garbage").expect("write");
        assert_eq!(read(dir.path()), None);
    }
}
