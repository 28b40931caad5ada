//! The on-disk forward queue: append-only segment files of checksummed
//! records, written (and fsynced, by default) before a request is
//! acknowledged to the app, deleted only once every record in them has been
//! delivered.
//!
//! Layout: one directory per signal (`<dir>/logs`, `<dir>/traces`,
//! `<dir>/metrics`), holding `<seq>.seg` files (seq: 20 decimal digits, so
//! names sort in write order). A segment is a run of records:
//!
//! ```text
//! magic "GSQ1" (4) | payload length u32 LE | items u64 LE | crc32 u32 LE | payload
//! ```
//!
//! The CRC-32 covers length, items and payload. On start every segment is
//! scanned: a record whose header or checksum does not hold is counted and
//! skipped, the scan resynchronises on the next magic that starts a valid
//! record, and a torn tail (a crash during a write) ends the scan of that
//! segment. Recovered segments are never appended to; new records go to a new
//! segment. Delivery is therefore at least once: a segment is deleted only
//! when all its records are delivered, so records of a partially delivered
//! segment are sent again after a restart.
//!
//! Writes go through one writer thread with group commit: every request that
//! arrives while a write is in progress is written and synced with the next
//! one, so the cost of `fdatasync` is shared by all concurrent senders.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

pub const MAGIC: &[u8; 4] = b"GSQ1";
pub const HEADER: usize = 20;
/// Larger lengths in a header are taken as corruption.
const MAX_RECORD: u32 = 256 << 20;

/// Where a record's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub seg: u64,
    pub off: u64,
    pub len: u32,
}

/// A record found on disk at start.
#[derive(Debug)]
pub struct Recovered {
    pub loc: Loc,
    pub items: u64,
}

/// What the start-up scan found.
#[derive(Debug, Default, PartialEq)]
pub struct Scan {
    pub segments: usize,
    pub records: usize,
    pub items: u64,
    /// corrupt or torn regions skipped
    pub corrupt_regions: usize,
    pub corrupt_bytes: u64,
    /// items claimed by headers of records whose checksum failed (a guess)
    pub corrupt_items: u64,
}

struct Seg {
    size: u64,
    /// records not yet delivered
    outstanding: u64,
    sealed: bool,
}

struct State {
    segs: BTreeMap<u64, Seg>,
    /// bytes on disk plus bytes reserved for writes in progress
    used: u64,
}

enum Msg {
    Write(WriteReq),
    /// The current segment may have been delivered entirely: seal and
    /// delete it now rather than at the next rotation.
    Retire,
}

struct WriteReq {
    payload: Bytes,
    items: u64,
    reply: tokio::sync::oneshot::Sender<io::Result<Loc>>,
}

pub struct DiskLog {
    dir: PathBuf,
    max_bytes: u64,
    state: Arc<Mutex<State>>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn crc(len: u32, items: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&items.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one framed record to `out`.
pub fn frame(out: &mut Vec<u8>, payload: &[u8], items: u64) {
    let len = payload.len() as u32;
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&items.to_le_bytes());
    out.extend_from_slice(&crc(len, items, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// A valid record at `buf[pos..]`: (payload length, items).
fn record_at(buf: &[u8], pos: usize) -> Option<(u32, u64)> {
    let h = buf.get(pos..pos + HEADER)?;
    if &h[0..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().ok()?);
    let items = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let sum = u32::from_le_bytes(h[16..20].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = buf.get(pos + HEADER..pos + HEADER + len as usize)?;
    (crc(len, items, payload) == sum).then_some((len, items))
}

/// Indexes the valid records of one segment's bytes.
pub fn scan_segment(seg: u64, buf: &[u8], out: &mut Vec<Recovered>, scan: &mut Scan) {
    let finder = memchr::memmem::Finder::new(MAGIC);
    let mut pos = 0usize;
    while pos < buf.len() {
        if let Some((len, items)) = record_at(buf, pos) {
            out.push(Recovered {
                loc: Loc {
                    seg,
                    off: (pos + HEADER) as u64,
                    len,
                },
                items,
            });
            scan.records += 1;
            scan.items += items;
            pos += HEADER + len as usize;
            continue;
        }
        // corrupt or torn: guess the items it held, then resynchronise on the
        // next magic that starts a valid record
        scan.corrupt_regions += 1;
        if let Some(h) = buf.get(pos..pos + 16) {
            if &h[0..4] == MAGIC {
                let items = u64::from_le_bytes(h[8..16].try_into().unwrap_or([0; 8]));
                scan.corrupt_items += items.min(1 << 20);
            }
        }
        let mut next = buf.len();
        let mut from = pos + 1;
        while let Some(i) = buf.get(from..).and_then(|b| finder.find(b)) {
            if record_at(buf, from + i).is_some() {
                next = from + i;
                break;
            }
            from += i + 1;
        }
        scan.corrupt_bytes += (next - pos) as u64;
        pos = next;
    }
}

impl DiskLog {
    /// Opens (creating) the queue directory, indexes what an earlier run
    /// left, and starts the writer thread.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        fsync: bool,
    ) -> Result<(DiskLog, Vec<Recovered>, Scan), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create queue directory {}: {e}", dir.display()))?;
        let rd = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read queue directory {}: {e}", dir.display()))?;
        let mut seqs = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                seqs.push(n);
            }
        }
        seqs.sort_unstable();
        let mut recovered = Vec::new();
        let mut scan = Scan::default();
        let mut segs = BTreeMap::new();
        let mut used = 0u64;
        for &seq in &seqs {
            let path = seg_path(dir, seq);
            let buf = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read a queue segment; skipping it");
                    scan.corrupt_regions += 1;
                    continue;
                }
            };
            scan.segments += 1;
            let before = recovered.len();
            scan_segment(seq, &buf, &mut recovered, &mut scan);
            let n = (recovered.len() - before) as u64;
            if n == 0 {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            used += buf.len() as u64;
            segs.insert(
                seq,
                Seg {
                    size: buf.len() as u64,
                    outstanding: n,
                    sealed: true,
                },
            );
        }
        let next_seq = seqs.last().map(|s| s + 1).unwrap_or(1);
        let state = Arc::new(Mutex::new(State { segs, used }));
        let seg_max = (max_bytes / 8).clamp(4 << 10, 16 << 20);
        let (tx, rx) = mpsc::channel::<Msg>();
        let writer = Writer {
            dir: dir.to_path_buf(),
            state: state.clone(),
            seq: next_seq,
            file: None,
            size: 0,
            seg_max,
            fsync,
        };
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the queue writer: {e}"))?;
        Ok((
            DiskLog {
                dir: dir.to_path_buf(),
                max_bytes,
                state,
                tx: Mutex::new(Some(tx)),
            },
            recovered,
            scan,
        ))
    }

    /// Writes a record (durably, when fsync is on) and returns where it is.
    /// Refuses with a message when the size cap would be passed.
    pub async fn append(&self, payload: Bytes, items: u64) -> Result<Loc, String> {
        let need = (HEADER + payload.len()) as u64;
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.used + need > self.max_bytes && st.used > 0 {
                return Err(format!(
                    "on-disk queue full ({} of {} bytes, forward.queue.max_disk_bytes)",
                    st.used, self.max_bytes
                ));
            }
            st.used += need;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        let sent = {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            match tx.as_ref() {
                Some(tx) => tx
                    .send(Msg::Write(WriteReq {
                        payload,
                        items,
                        reply,
                    }))
                    .is_ok(),
                None => false,
            }
        };
        let res = if sent {
            match rx.await {
                Ok(Ok(loc)) => Ok(loc),
                Ok(Err(e)) => Err(format!("cannot write the on-disk queue: {e}")),
                Err(_) => Err("the queue writer stopped".to_string()),
            }
        } else {
            Err("the queue writer stopped".to_string())
        };
        if res.is_err() {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.used = st.used.saturating_sub(need);
        }
        res
    }

    /// Reads a record's payload back.
    pub fn read(&self, loc: Loc) -> io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let f = File::open(seg_path(&self.dir, loc.seg))?;
        let mut buf = vec![0u8; loc.len as usize];
        f.read_exact_at(&mut buf, loc.off)?;
        Ok(Bytes::from(buf))
    }

    /// The record at `loc` is delivered (or given up on): its segment is
    /// deleted once it is sealed and has no record left.
    pub fn ack(&self, loc: Loc) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (done, idle) = match st.segs.get_mut(&loc.seg) {
            Some(s) => {
                s.outstanding = s.outstanding.saturating_sub(1);
                (
                    s.sealed && s.outstanding == 0,
                    !s.sealed && s.outstanding == 0,
                )
            }
            None => (false, false),
        };
        if done {
            remove_seg(&self.dir, &mut st, loc.seg);
        }
        drop(st);
        if idle {
            if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = tx.send(Msg::Retire);
            }
        }
    }

    /// Bytes the queue holds on disk.
    pub fn used(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).used
    }

    /// Stops the writer thread once the writes already asked for are done.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

fn remove_seg(dir: &Path, st: &mut State, seq: u64) {
    if let Some(s) = st.segs.remove(&seq) {
        st.used = st.used.saturating_sub(s.size);
        if let Err(e) = std::fs::remove_file(seg_path(dir, seq)) {
            tracing::warn!(segment = seq, error = %e, "cannot delete a delivered queue segment");
        }
    }
}

struct Writer {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    seq: u64,
    file: Option<File>,
    size: u64,
    seg_max: u64,
    fsync: bool,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut buf = Vec::with_capacity(1 << 20);
        while let Ok(first) = rx.recv() {
            let mut group = Vec::new();
            let mut bytes = 0;
            let mut retire = false;
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Write(r) => {
                        bytes += r.payload.len();
                        group.push(r);
                    }
                    Msg::Retire => retire = true,
                }
                if bytes < (4 << 20) && group.len() < 4096 {
                    next = rx.try_recv().ok();
                }
            }
            if retire {
                self.retire_if_delivered();
            }
            if !group.is_empty() {
                self.write_group(group, &mut buf);
            }
        }
        self.seal();
    }

    /// Seals (and so deletes) the current segment when every record in it
    /// was delivered and it holds enough to be worth a new file (a quarter of
    /// a segment, at most 1 MiB).
    fn retire_if_delivered(&mut self) {
        if self.file.is_none() || self.size < (self.seg_max / 4).min(1 << 20) {
            return;
        }
        let idle = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .segs
            .get(&self.seq)
            .is_some_and(|s| s.outstanding == 0);
        if idle {
            self.seal();
        }
    }

    /// Seals the current segment (no more appends); deletes it if all its
    /// records were already delivered.
    fn seal(&mut self) {
        if self.file.take().is_none() {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let done = match st.segs.get_mut(&self.seq) {
            Some(s) => {
                s.sealed = true;
                s.outstanding == 0
            }
            None => false,
        };
        if done {
            remove_seg(&self.dir, &mut st, self.seq);
        }
        self.seq += 1;
        self.size = 0;
    }

    fn open_seg(&mut self) -> io::Result<()> {
        let path = seg_path(&self.dir, self.seq);
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        if self.fsync {
            // make the new file's directory entry durable too
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.segs.insert(
            self.seq,
            Seg {
                size: 0,
                outstanding: 0,
                sealed: false,
            },
        );
        drop(st);
        self.file = Some(f);
        self.size = 0;
        Ok(())
    }

    fn write_group(&mut self, group: Vec<WriteReq>, buf: &mut Vec<u8>) {
        // split the group where it would overflow the segment
        let mut pending: Vec<(WriteReq, Loc)> = Vec::with_capacity(group.len());
        buf.clear();
        for r in group {
            let need = (HEADER + r.payload.len()) as u64;
            if self.file.is_some() && self.size + need > self.seg_max && self.size > 0 {
                self.flush(buf, &mut pending);
                self.seal();
            }
            if self.file.is_none() {
                if let Err(e) = self.open_seg() {
                    let _ = r.reply.send(Err(e));
                    continue;
                }
            }
            let loc = Loc {
                seg: self.seq,
                off: self.size + buf.len() as u64 + HEADER as u64,
                len: r.payload.len() as u32,
            };
            frame(buf, &r.payload, r.items);
            pending.push((r, loc));
        }
        self.flush(buf, &mut pending);
    }

    fn flush(&mut self, buf: &mut Vec<u8>, pending: &mut Vec<(WriteReq, Loc)>) {
        if pending.is_empty() {
            return;
        }
        let res = match self.file.as_mut() {
            Some(f) => f
                .write_all(buf)
                .and_then(|_| if self.fsync { f.sync_data() } else { Ok(()) }),
            None => Err(io::Error::other("no open segment")),
        };
        match res {
            Ok(()) => {
                let n = pending.len() as u64;
                self.size += buf.len() as u64;
                {
                    let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(s) = st.segs.get_mut(&self.seq) {
                        s.size += buf.len() as u64;
                        s.outstanding += n;
                    }
                    // reserved bytes already count in `used`: nothing to add
                }
                for (r, loc) in pending.drain(..) {
                    let _ = r.reply.send(Ok(loc));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "writing the on-disk queue failed; refusing these requests");
                let kind = e.kind();
                for (r, _) in pending.drain(..) {
                    let _ = r.reply.send(Err(io::Error::new(
                        kind,
                        format!("queue write failed: {e}"),
                    )));
                }
                // the file may now end in a partial record: start a new one
                // (the scan on the next start skips the torn bytes)
                self.seal();
            }
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn records_survive_reopen_and_delivered_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        rt().block_on(async {
            let (log, rec, _) = DiskLog::open(dir.path(), 1 << 30, true).expect("open");
            assert!(rec.is_empty());
            let a = log
                .append(Bytes::from_static(b"hello"), 3)
                .await
                .expect("a");
            let b = log
                .append(Bytes::from_static(b"world!"), 4)
                .await
                .expect("b");
            assert_eq!(log.read(a).expect("read a").as_ref(), b"hello");
            assert_eq!(log.read(b).expect("read b").as_ref(), b"world!");
            log.close();
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        rt().block_on(async {
            let (log, rec, scan) = DiskLog::open(dir.path(), 1 << 30, true).expect("reopen");
            assert_eq!(rec.len(), 2);
            assert_eq!(scan.items, 7);
            assert_eq!(scan.corrupt_regions, 0);
            assert_eq!(log.read(rec[1].loc).expect("read").as_ref(), b"world!");
            for r in &rec {
                log.ack(r.loc);
            }
            assert_eq!(log.used(), 0);
            let segs = std::fs::read_dir(dir.path()).expect("ls").count();
            assert_eq!(segs, 0, "delivered recovered segment deleted");
        });
    }

    #[test]
    fn a_delivered_current_segment_is_deleted_without_waiting_for_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        rt().block_on(async {
            // 32 KiB cap: 4 KiB segments, retired from 1 KiB on
            let (log, _, _) = DiskLog::open(dir.path(), 32 << 10, false).expect("open");
            let a = log
                .append(Bytes::from(vec![b'x'; 600]), 1)
                .await
                .expect("a");
            let b = log
                .append(Bytes::from(vec![b'y'; 600]), 1)
                .await
                .expect("b");
            log.ack(a);
            assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
            log.ack(b);
            for _ in 0..100 {
                if std::fs::read_dir(dir.path()).expect("ls").count() == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
            assert_eq!(log.used(), 0);
            // and appending goes on in a new segment
            let c = log.append(Bytes::from_static(b"z"), 1).await.expect("c");
            assert_eq!(log.read(c).expect("read").as_ref(), b"z");
        });
    }

    #[test]
    fn torn_tail_and_corrupt_middle_are_skipped_and_counted() {
        let mut buf = Vec::new();
        frame(&mut buf, b"one", 1);
        let second = buf.len();
        frame(&mut buf, b"two", 2);
        frame(&mut buf, b"three", 3);
        buf[second + HEADER] ^= 0xff; // corrupt the second payload
        let mut torn = Vec::new();
        frame(&mut torn, b"four-torn", 4);
        buf.extend_from_slice(&torn[..torn.len() - 3]);
        let mut out = Vec::new();
        let mut scan = Scan::default();
        scan_segment(1, &buf, &mut out, &mut scan);
        let items: Vec<u64> = out.iter().map(|r| r.items).collect();
        assert_eq!(items, vec![1, 3]);
        assert_eq!(scan.corrupt_regions, 2);
        assert_eq!(scan.corrupt_items, 2 + 4);
    }

    #[test]
    fn garbage_file_does_not_crash() {
        let mut out = Vec::new();
        let mut scan = Scan::default();
        let junk: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        scan_segment(1, &junk, &mut out, &mut scan);
        assert!(out.is_empty());
        assert_eq!(scan.corrupt_bytes, junk.len() as u64);
    }

    #[test]
    fn size_cap_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        rt().block_on(async {
            let (log, _, _) = DiskLog::open(dir.path(), 100, false).expect("open");
            log.append(Bytes::from(vec![0u8; 60]), 1)
                .await
                .expect("first fits");
            let e = log.append(Bytes::from(vec![0u8; 60]), 1).await;
            assert!(e.is_err_and(|m| m.contains("full")));
        });
    }
}
