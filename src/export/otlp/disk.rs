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
//! magic (4) | payload length u32 LE | items u64 LE | crc32 u32 LE | payload
//! ```
//!
//! The magic says what the payload is: `GSQ1` a request's bytes as received
//! (what every earlier version wrote, still read), `GSQ2` a request
//! compressed when it was offered (a [`piece`](super::piece): its
//! uncompressed length and CRC-32, then raw deflate). The CRC-32 covers
//! length, items and payload. On start every segment is
//! scanned: a record whose header or checksum does not hold is counted and
//! skipped, the scan resynchronises on the next magic that starts a valid
//! record, and a torn tail (a crash during a write) ends the scan of that
//! segment. Recovered segments are never appended to; new records go to a new
//! segment. Delivery is at least once: a segment is deleted only when all
//! its records are delivered, and the delivered position kept in the
//! [`ledger`](super::ledger) says which records of the oldest segments were
//! delivered already, so a restart resends only the batches from the oldest
//! one in flight at the crash (without a valid ledger, every record of every
//! segment left).
//!
//! Writes go through one writer thread with group commit: every request that
//! arrives while a write is in progress is written and synced with the next
//! one, so the cost of `fdatasync` is shared by all concurrent senders.
//!
//! The disk is the queue: nothing but counters is kept in memory per record.
//! A reader walks the segments in order, reading the current one in large
//! sequential chunks ([`DiskLog::read_batch`], a blocking call the queue
//! makes on a blocking thread), up to what the writer has written; ranges
//! the start-up scan found damaged are skipped. A segment is open only while
//! there is more to read: a descriptor held on a delivered, deleted segment
//! would keep its space in use, and on a full filesystem that space is what
//! the next write needs.

use super::ledger::{self, Pos};
use super::piece::{self, Rec};
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const MAGIC: &[u8; 4] = b"GSQ1";
/// A record whose payload is a piece.
pub const MAGIC_PIECE: &[u8; 4] = b"GSQ2";
pub const HEADER: usize = 20;
/// Larger lengths in a header are taken as corruption.
const MAX_RECORD: u32 = 256 << 20;
/// The reader's sequential read size.
const CHUNK: u64 = 256 << 10;

/// Where a record's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub seg: u64,
    pub off: u64,
    pub len: u32,
    /// the payload is a piece (compressed)
    pub piece: bool,
}

/// A record found on disk at start.
#[derive(Debug)]
pub struct Recovered {
    pub loc: Loc,
    pub items: u64,
    /// uncompressed bytes
    pub raw: u64,
}

/// What the start-up scan found.
#[derive(Debug, Default, PartialEq)]
pub struct Scan {
    pub segments: usize,
    pub records: usize,
    pub items: u64,
    /// payload bytes of the valid records
    pub bytes: u64,
    /// corrupt or torn regions skipped
    pub corrupt_regions: usize,
    pub corrupt_bytes: u64,
    /// items claimed by headers of records whose checksum failed (a guess)
    pub corrupt_items: u64,
    /// valid records the ledger says were delivered before the restart:
    /// not sent again
    pub delivered: usize,
}

#[derive(Default)]
struct Seg {
    size: u64,
    /// records not yet delivered
    outstanding: u64,
    /// records (their items, payload bytes, uncompressed bytes) written but
    /// not yet read back
    unread: u64,
    unread_items: u64,
    unread_bytes: u64,
    unread_raw: u64,
    sealed: bool,
    /// damaged byte ranges the start-up scan found; the reader skips them
    skips: Vec<(u64, u64)>,
}

#[derive(Default)]
struct State {
    segs: BTreeMap<u64, Seg>,
    /// bytes on disk plus bytes reserved for writes in progress
    used: u64,
    /// items, and framed bytes, written and not yet delivered (or given up on)
    items: u64,
    bytes: u64,
    /// items and uncompressed bytes written and not yet read back
    pending_items: u64,
    pending_bytes: u64,
    /// groups written and synced
    syncs: u64,
}

/// The reader's place: a segment kept open and a buffer of it.
#[derive(Default)]
struct Reader {
    seq: u64,
    pos: u64,
    file: Option<File>,
    buf: Vec<u8>,
    /// file offset of `buf[0]`
    buf_off: u64,
}

impl Reader {
    fn move_to(&mut self, seq: u64) {
        self.seq = seq;
        self.pos = 0;
        self.file = None;
        self.buf.clear();
        self.buf_off = 0;
    }

    /// Moves to the next segment; with none yet, closes the finished one
    /// (None): an open descriptor would keep a deleted segment's space in
    /// use, and on a full filesystem that space is what new writes need.
    fn move_to_or_release(&mut self, next: Option<u64>) -> Option<()> {
        match next {
            Some(seq) => {
                self.move_to(seq);
                Some(())
            }
            None => {
                self.file = None;
                self.buf.clear();
                None
            }
        }
    }
}

/// Records read back for one batch.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// each record's place and items, in order
    pub recs: Vec<(Loc, u64)>,
    /// the records' payloads concatenated
    pub payload: Bytes,
    /// items of records that could not be read back (dropped, to be counted)
    pub failed_items: u64,
    /// the batch's place among those in flight, for the ledger (None when
    /// nothing was read)
    pub id: Option<u64>,
}

enum Msg {
    Write(WriteReq),
    /// The current segment may have been delivered entirely: seal and
    /// delete it now rather than at the next rotation.
    Retire,
    /// A sealed segment was delivered entirely: delete it (here, off the
    /// async workers).
    Delete(u64),
    /// Every record before this position is delivered: write the ledger.
    Delivered(Pos),
}

struct WriteReq {
    payload: Bytes,
    piece: bool,
    /// uncompressed bytes
    raw: u64,
    items: u64,
    reply: tokio::sync::oneshot::Sender<io::Result<Loc>>,
}

pub struct DiskLog {
    dir: PathBuf,
    max_bytes: u64,
    state: Arc<Mutex<State>>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    reader: Mutex<Reader>,
    /// batches read and not yet delivered, for the ledger
    in_flight: Mutex<ledger::InFlight>,
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

/// Appends one framed record of a request's bytes (`GSQ1`) to `out`.
pub fn frame(out: &mut Vec<u8>, payload: &[u8], items: u64) {
    header(out, payload, items, false);
    out.extend_from_slice(payload);
}

/// Appends one record's header to `out`.
fn header(out: &mut Vec<u8>, payload: &[u8], items: u64, piece: bool) {
    let len = payload.len() as u32;
    out.extend_from_slice(if piece { MAGIC_PIECE } else { MAGIC });
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&items.to_le_bytes());
    out.extend_from_slice(&crc(len, items, payload).to_le_bytes());
}

/// Writes every byte of `parts` with as few `writev` calls as it takes.
fn write_all_vectored(f: &mut File, mut parts: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    // at most IOV_MAX (1024) buffers a call
    while !parts.is_empty() {
        let upto = parts.len().min(1024);
        match f.write_vectored(&parts[..upto]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A record's magic: whether its payload is a piece, None if not a magic.
fn magic(h: &[u8]) -> Option<bool> {
    match h.get(0..4)? {
        m if m == MAGIC => Some(false),
        m if m == MAGIC_PIECE => Some(true),
        _ => None,
    }
}

/// A valid record at `buf[pos..]`: (payload length, items, piece).
fn record_at(buf: &[u8], pos: usize) -> Option<(u32, u64, bool)> {
    let h = buf.get(pos..pos + HEADER)?;
    let piece = magic(h)?;
    let len = u32::from_le_bytes(h[4..8].try_into().ok()?);
    let items = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let sum = u32::from_le_bytes(h[16..20].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = buf.get(pos + HEADER..pos + HEADER + len as usize)?;
    (crc(len, items, payload) == sum).then_some((len, items, piece))
}

/// Indexes the valid records of one segment's bytes.
pub fn scan_segment(seg: u64, buf: &[u8], out: &mut Vec<Recovered>, scan: &mut Scan) {
    // both magics start so
    let finder = memchr::memmem::Finder::new(&MAGIC[..3]);
    let mut pos = 0usize;
    while pos < buf.len() {
        if let Some((len, items, piece)) = record_at(buf, pos) {
            let payload = &buf[pos + HEADER..pos + HEADER + len as usize];
            out.push(Recovered {
                loc: Loc {
                    seg,
                    off: (pos + HEADER) as u64,
                    len,
                    piece,
                },
                items,
                raw: piece::raw_len(payload, piece),
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
            if magic(h).is_some() {
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

/// Refuses a directory the process cannot write to (read-only mount,
/// immutable, wrong owner): create, write, sync and remove a probe file.
fn probe_writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let res = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"probe").and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::remove_file(&probe));
    res.map_err(|e| {
        let _ = std::fs::remove_file(&probe);
        format!("queue directory {} is not writable: {e}", dir.display())
    })
}

/// Scans one segment left by an earlier run: its valid records, and the
/// damaged ranges between them. None when it holds no valid record (then it
/// is deleted) or cannot be read.
fn index_segment(dir: &Path, seq: u64, scan: &mut Scan, delivered: Option<Pos>) -> Option<Seg> {
    let path = seg_path(dir, seq);
    let buf = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read a queue segment; skipping it");
            scan.corrupt_regions += 1;
            return None;
        }
    };
    scan.segments += 1;
    let mut recs = Vec::new();
    scan_segment(seq, &buf, &mut recs, scan);
    // records the ledger says were delivered: kept on disk until the
    // segment goes, never read again
    if let Some(d) = delivered.filter(|d| d.seg == seq) {
        let done: Vec<&Recovered> = recs.iter().filter(|r| r.loc.off < d.off).collect();
        scan.delivered += done.len();
        scan.records -= done.len();
        scan.items -= done.iter().map(|r| r.items).sum::<u64>();
        recs.retain(|r| r.loc.off >= d.off);
    }
    if recs.is_empty() {
        let _ = std::fs::remove_file(&path);
        return None;
    }
    let mut seg = Seg {
        size: buf.len() as u64,
        sealed: true,
        ..Seg::default()
    };
    let mut at = 0u64;
    for r in &recs {
        let start = r.loc.off - HEADER as u64;
        if start > at {
            seg.skips.push((at, start));
        }
        at = r.loc.off + r.loc.len as u64;
        seg.unread += 1;
        seg.unread_items += r.items;
        seg.unread_bytes += r.loc.len as u64;
        seg.unread_raw += r.raw;
    }
    if at < seg.size {
        seg.skips.push((at, seg.size));
    }
    seg.outstanding = seg.unread;
    scan.bytes += seg.unread_bytes;
    Some(seg)
}

/// The sequence numbers of the segment files (`<n>.seg`) in the queue
/// directory, ascending.
fn segment_seqs(dir: &Path) -> Result<Vec<u64>, String> {
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
    Ok(seqs)
}

/// The queue's state from the segments an earlier run left (see [`index_segment`]).
fn index_segments(dir: &Path, seqs: &[u64], scan: &mut Scan, delivered: Option<Pos>) -> State {
    let mut st = State::default();
    for &seq in seqs {
        if delivered.is_some_and(|d| seq < d.seg) {
            // delivered entirely before the restart, not yet deleted
            let _ = std::fs::remove_file(seg_path(dir, seq));
            continue;
        }
        if let Some(seg) = index_segment(dir, seq, scan, delivered) {
            st.used += seg.size;
            st.items += seg.unread_items;
            st.bytes += seg.unread_bytes + seg.unread * HEADER as u64;
            st.pending_items += seg.unread_items;
            st.pending_bytes += seg.unread_raw;
            st.segs.insert(seq, seg);
        }
    }
    st
}

impl DiskLog {
    /// Opens (creating) the queue directory, checks that it is writable,
    /// indexes what an earlier run left, and starts the writer thread.
    /// `fsync`: `None` writes without syncing; `Some(delay)` syncs every
    /// write before it is acknowledged, the writer first waiting up to
    /// `delay` for more requests to share the sync (see [`Writer::gather`]).
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        fsync: Option<Duration>,
    ) -> Result<(DiskLog, Scan), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create queue directory {}: {e}", dir.display()))?;
        probe_writable(dir)?;
        let seqs = segment_seqs(dir)?;
        let mut scan = Scan::default();
        let (generation, delivered) = match ledger::read(dir) {
            Some((g, p)) => (g, Some(p)),
            None => (0, None),
        };
        let st = index_segments(dir, &seqs, &mut scan, delivered);
        // never reuse a segment number the ledger has passed: its records
        // would be taken as delivered
        let next_seq = seqs
            .last()
            .copied()
            .max(delivered.map(|d| d.seg))
            .map(|s| s.saturating_add(1))
            .unwrap_or(1);
        let first = st.segs.keys().next().copied().unwrap_or(next_seq);
        let state = Arc::new(Mutex::new(st));
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
            ledger: ledger::Writer::new(generation),
        };
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the queue writer: {e}"))?;
        let mut reader = Reader::default();
        reader.move_to(first);
        Ok((
            DiskLog {
                dir: dir.to_path_buf(),
                max_bytes,
                state,
                tx: Mutex::new(Some(tx)),
                reader: Mutex::new(reader),
                in_flight: Mutex::new(ledger::InFlight::default()),
            },
            scan,
        ))
    }

    /// Writes a record (durably, when fsync is on) and returns where it is.
    /// Refuses with a message when the size cap would be passed.
    pub async fn append(&self, rec: Rec, items: u64) -> Result<Loc, String> {
        let need = (HEADER + rec.data.len()) as u64;
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
                        raw: rec.raw_len(),
                        payload: rec.data,
                        piece: rec.piece,
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

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the next records back, in order, up to `max_items` items and
    /// `max_bytes` uncompressed bytes (at least one record when any waits).
    /// Blocking file I/O: call it on a blocking thread.
    pub fn read_batch(&self, max_items: u64, max_bytes: u64) -> ReadBatch {
        let mut rd = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = ReadBatch::default();
        let mut payload = BytesMut::new();
        let (mut items, mut bytes) = (0u64, 0u64);
        while let Some(end) = self.position(&mut rd) {
            match self.peek(&mut rd, end) {
                Ok((len, n, piece)) => {
                    let i = (rd.pos - rd.buf_off) as usize + HEADER;
                    let stored = &rd.buf[i..i + len as usize];
                    let raw = piece::raw_len(stored, piece);
                    if !out.recs.is_empty() && (items + n > max_items || bytes + raw > max_bytes) {
                        break;
                    }
                    payload.extend_from_slice(stored);
                    let loc = Loc {
                        seg: rd.seq,
                        off: rd.pos + HEADER as u64,
                        len,
                        piece,
                    };
                    out.recs.push((loc, n));
                    rd.pos += HEADER as u64 + len as u64;
                    items += n;
                    bytes += raw;
                    self.mark_read(rd.seq, n, len as u64, raw);
                }
                Err(e) => out.failed_items += self.give_up(&mut rd, &e),
            }
        }
        if rd.buf.capacity() > 4 * CHUNK as usize {
            // after an unusually large record: give the memory back
            rd.buf = Vec::new();
        }
        if !out.recs.is_empty() {
            let end = Pos {
                seg: rd.seq,
                off: rd.pos,
            };
            out.id = Some(self.lock_in_flight().read(end));
        }
        drop(rd);
        out.payload = payload.freeze();
        out
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, ledger::InFlight> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The batch read as `id` is delivered (or given up on): the ledger
    /// moves on when it was the oldest in flight.
    pub fn batch_done(&self, id: u64) {
        let Some(p) = self.lock_in_flight().done(id) else {
            return;
        };
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(Msg::Delivered(p));
        }
    }

    /// Moves the reader past damaged ranges and finished segments; the end
    /// of what can be read in its segment, or None when nothing can.
    fn position(&self, rd: &mut Reader) -> Option<u64> {
        let st = self.st();
        loop {
            use std::ops::Bound::{Excluded, Unbounded};
            let next = st
                .segs
                .range((Excluded(rd.seq), Unbounded))
                .next()
                .map(|(k, _)| *k);
            let Some(s) = st.segs.get(&rd.seq) else {
                rd.move_to_or_release(next)?;
                continue;
            };
            if let Some(&(_, e)) = s.skips.iter().find(|(a, e)| *a <= rd.pos && rd.pos < *e) {
                rd.pos = e;
                continue;
            }
            if rd.pos < s.size {
                return Some(s.size);
            }
            if !s.sealed {
                // caught up with the writer: close the segment until there
                // is more (the writer may retire and delete it meanwhile)
                rd.file = None;
                return None;
            }
            rd.move_to_or_release(next)?;
        }
    }

    /// Makes `rd.buf` hold `[off, off + n)`, reading sequentially from the
    /// open segment (never past `end`, what the writer has written).
    fn fill(&self, rd: &mut Reader, off: u64, n: u64, end: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let have = rd.buf_off + rd.buf.len() as u64;
        if off >= rd.buf_off && off + n <= have {
            return Ok(());
        }
        if off + n > end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "record runs past the end of the segment",
            ));
        }
        if rd.file.is_none() {
            rd.file = Some(File::open(seg_path(&self.dir, rd.seq))?);
        }
        let want = n.max(CHUNK).min(end - off) as usize;
        rd.buf.resize(want, 0);
        rd.buf_off = off;
        let res = match &rd.file {
            Some(f) => f.read_exact_at(&mut rd.buf, off),
            None => Err(io::Error::other("segment not open")),
        };
        if res.is_err() {
            rd.buf.clear();
        }
        res
    }

    /// The record at the reader's position, checked, in `rd.buf`:
    /// (payload length, items, piece). Does not move the reader.
    fn peek(&self, rd: &mut Reader, end: u64) -> io::Result<(u32, u64, bool)> {
        self.fill(rd, rd.pos, HEADER as u64, end)?;
        let i = (rd.pos - rd.buf_off) as usize;
        let len = rd
            .buf
            .get(i + 4..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .filter(|l| *l <= MAX_RECORD)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad record header"))?;
        self.fill(rd, rd.pos, HEADER as u64 + len as u64, end)?;
        let i = (rd.pos - rd.buf_off) as usize;
        record_at(&rd.buf, i)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "record checksum mismatch"))
    }

    fn mark_read(&self, seq: u64, items: u64, bytes: u64, raw: u64) {
        let mut st = self.st();
        st.pending_items = st.pending_items.saturating_sub(items);
        st.pending_bytes = st.pending_bytes.saturating_sub(raw);
        if let Some(s) = st.segs.get_mut(&seq) {
            s.unread = s.unread.saturating_sub(1);
            s.unread_items = s.unread_items.saturating_sub(items);
            s.unread_bytes = s.unread_bytes.saturating_sub(bytes);
            s.unread_raw = s.unread_raw.saturating_sub(raw);
        }
    }

    /// The rest of the reader's segment cannot be read back (changed or
    /// damaged after the start-up scan): its records are given up on, and
    /// their items returned to be counted as failed.
    fn give_up(&self, rd: &mut Reader, e: &io::Error) -> u64 {
        let mut st = self.st();
        let Some(s) = st.segs.get_mut(&rd.seq) else {
            return 0;
        };
        let (n, items, bytes, size) = (s.unread, s.unread_items, s.unread_bytes, s.size);
        let raw = s.unread_raw;
        s.unread = 0;
        s.unread_items = 0;
        s.unread_bytes = 0;
        s.unread_raw = 0;
        s.outstanding = s.outstanding.saturating_sub(n);
        let done = s.sealed && s.outstanding == 0;
        st.pending_items = st.pending_items.saturating_sub(items);
        st.pending_bytes = st.pending_bytes.saturating_sub(raw);
        st.items = st.items.saturating_sub(items);
        st.bytes = st.bytes.saturating_sub(bytes + n * HEADER as u64);
        if done {
            remove_seg(&self.dir, &mut st, rd.seq);
        }
        tracing::error!(segment = rd.seq, records = n, items, error = %e,
            "cannot read queued records back; dropped (counted as send_failed)");
        rd.pos = size;
        rd.buf.clear();
        items
    }

    /// (items, uncompressed bytes) written and not yet read back.
    pub fn pending(&self) -> (u64, u64) {
        let st = self.st();
        (st.pending_items, st.pending_bytes)
    }

    /// Items on disk not yet delivered.
    pub fn items(&self) -> u64 {
        self.st().items
    }

    /// Bytes (framed records) on disk not yet delivered.
    pub fn backlog_bytes(&self) -> u64 {
        self.st().bytes
    }

    /// The record at `loc` is delivered (or given up on): its segment is
    /// deleted once it is sealed and has no record left.
    pub fn ack(&self, loc: Loc, items: u64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.items = st.items.saturating_sub(items);
        st.bytes = st.bytes.saturating_sub(HEADER as u64 + loc.len as u64);
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
        drop(st);
        let msg = match (done, idle) {
            (true, _) => Msg::Delete(loc.seg),
            (_, true) => Msg::Retire,
            _ => return,
        };
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(msg);
        }
    }

    /// Groups of writes synced so far.
    #[cfg(test)]
    fn syncs(&self) -> u64 {
        self.st().syncs
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

/// What one turn of the writer took off its channel.
#[derive(Default)]
struct Gathered {
    group: Vec<WriteReq>,
    bytes: usize,
    retire: bool,
    delivered: Option<Pos>,
}

struct Writer {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    seq: u64,
    file: Option<File>,
    size: u64,
    seg_max: u64,
    /// `Some(delay)`: sync each group, gathered for up to `delay`
    fsync: Option<Duration>,
    ledger: ledger::Writer,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut buf = Vec::with_capacity(1 << 20);
        while let Ok(first) = rx.recv() {
            let mut g = Gathered::default();
            self.gather(first, &rx, &mut g);
            let Gathered {
                group,
                retire,
                delivered,
                ..
            } = g;
            if retire {
                self.retire_if_delivered();
            }
            if !group.is_empty() {
                self.write_group(group, &mut buf);
            }
            if let Some(p) = delivered {
                if let Err(e) = self.ledger.write(&self.dir, p) {
                    // only costs records sent twice after a crash
                    tracing::warn!(error = %e, "cannot write the on-disk queue's delivered position");
                }
            }
        }
        self.seal();
    }

    /// Takes `first` and what else waits on `rx` into `g`, up to 4 MiB or
    /// 4,096 writes. With fsync on, once a write is in hand it waits up to
    /// the fsync delay for more before returning: a sync costs the same for
    /// one request as for many, and at full speed the next requests are
    /// still being received while a sync runs, so without the wait a sync
    /// carried 1.45 requests on average (BENCHMARKS.md, stop 31).
    fn gather(&mut self, first: Msg, rx: &mpsc::Receiver<Msg>, g: &mut Gathered) {
        let mut until = None;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Write(r) => {
                    g.bytes += r.payload.len();
                    g.group.push(r);
                }
                Msg::Retire => g.retire = true,
                Msg::Delete(seq) => {
                    let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    remove_seg(&self.dir, &mut st, seq);
                }
                Msg::Delivered(p) => g.delivered = Some(p),
            }
            if g.bytes >= (4 << 20) || g.group.len() >= 4096 {
                return;
            }
            next = rx.try_recv().ok();
            if next.is_some() || g.group.is_empty() {
                continue;
            }
            let Some(delay) = self.fsync.filter(|d| !d.is_zero()) else {
                return;
            };
            let until = *until.get_or_insert_with(|| Instant::now() + delay);
            next = rx
                .recv_timeout(until.saturating_duration_since(Instant::now()))
                .ok();
        }
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
        if self.fsync.is_some() {
            // make the new file's directory entry durable too
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.segs.insert(self.seq, Seg::default());
        drop(st);
        self.file = Some(f);
        self.size = 0;
        Ok(())
    }

    /// Writes a group of records with one `writev` (their headers from
    /// `buf`, their payloads where they are: no copy) and one sync.
    fn write_group(&mut self, group: Vec<WriteReq>, buf: &mut Vec<u8>) {
        // split the group where it would overflow the segment
        let mut pending: Vec<(WriteReq, Loc)> = Vec::with_capacity(group.len());
        buf.clear();
        // payload bytes of `pending` (their headers are in `buf`)
        let mut payloads = 0u64;
        for r in group {
            let need = (HEADER + r.payload.len()) as u64;
            if self.file.is_some() && self.size + need > self.seg_max && self.size > 0 {
                self.flush(buf, &mut pending);
                payloads = 0;
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
                off: self.size + buf.len() as u64 + payloads + HEADER as u64,
                len: r.payload.len() as u32,
                piece: r.piece,
            };
            payloads += r.payload.len() as u64;
            header(buf, &r.payload, r.items, r.piece);
            pending.push((r, loc));
        }
        self.flush(buf, &mut pending);
    }

    /// Counts records just written to the current segment.
    fn written(&mut self, pending: &[(WriteReq, Loc)]) {
        let n = pending.len() as u64;
        let items: u64 = pending.iter().map(|(r, _)| r.items).sum();
        let bytes: u64 = pending.iter().map(|(_, l)| l.len as u64).sum();
        let raw: u64 = pending.iter().map(|(r, _)| r.raw).sum();
        let framed = bytes + n * HEADER as u64;
        self.size += framed;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = st.segs.get_mut(&self.seq) {
            s.size += framed;
            s.outstanding += n;
            s.unread += n;
            s.unread_items += items;
            s.unread_bytes += bytes;
            s.unread_raw += raw;
        }
        // reserved bytes already count in `used`: nothing to add
        st.items += items;
        st.bytes += framed;
        st.pending_items += items;
        st.pending_bytes += raw;
        st.syncs += u64::from(self.fsync.is_some());
    }

    fn flush(&mut self, buf: &mut Vec<u8>, pending: &mut Vec<(WriteReq, Loc)>) {
        if pending.is_empty() {
            return;
        }
        let mut parts: Vec<io::IoSlice<'_>> = Vec::with_capacity(2 * pending.len());
        for (hdr, (r, _)) in buf.chunks_exact(HEADER).zip(pending.iter()) {
            parts.push(io::IoSlice::new(hdr));
            parts.push(io::IoSlice::new(&r.payload));
        }
        let res = match self.file.as_mut() {
            Some(f) => write_all_vectored(f, &mut parts).and_then(|_| {
                if self.fsync.is_some() {
                    f.sync_data()
                } else {
                    Ok(())
                }
            }),
            None => Err(io::Error::other("no open segment")),
        };
        drop(parts);
        match res {
            Ok(()) => {
                self.written(pending);
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

    /// fsync on, with the default delay
    const SYNC: Option<Duration> = Some(Duration::from_millis(2));

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Two appends 50 ms apart: one sync with a 1 s fsync delay (the
    /// second joins the first's group), two without a delay.
    #[test]
    fn appends_within_the_fsync_delay_share_one_sync() {
        for (delay, syncs) in [(Duration::from_secs(1), 1), (Duration::ZERO, 2)] {
            let dir = tempfile::tempdir().expect("tempdir");
            rt().block_on(async {
                let (log, _) = DiskLog::open(dir.path(), 1 << 30, Some(delay)).expect("open");
                let log = Arc::new(log);
                let l = log.clone();
                let first = tokio::spawn(async move {
                    l.append(Rec::raw(Bytes::from_static(b"first")), 1).await
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
                let second = log.append(Rec::raw(Bytes::from_static(b"second")), 1);
                second.await.expect("second");
                first.await.expect("task").expect("first");
                assert_eq!(log.syncs(), syncs, "fsync delay {delay:?}");
                assert_eq!(log.pending(), (2, 11));
                log.close();
            });
        }
    }

    #[test]
    fn records_survive_reopen_and_delivered_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        rt().block_on(async {
            let (log, scan) = DiskLog::open(dir.path(), 1 << 30, SYNC).expect("open");
            assert_eq!(scan.records, 0);
            let a = log
                .append(Rec::raw(Bytes::from_static(b"hello")), 3)
                .await
                .expect("a");
            let b = log
                .append(Rec::raw(Bytes::from_static(b"world!")), 4)
                .await
                .expect("b");
            assert_eq!(log.pending(), (7, 11));
            let r = log.read_batch(100, 1 << 20);
            assert_eq!(r.recs, vec![(a, 3), (b, 4)]);
            assert_eq!(r.payload.as_ref(), b"helloworld!");
            assert_eq!(log.pending(), (0, 0));
            assert_eq!(log.items(), 7);
            log.close();
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        rt().block_on(async {
            let (log, scan) = DiskLog::open(dir.path(), 1 << 30, SYNC).expect("reopen");
            assert_eq!(scan.records, 2);
            assert_eq!(scan.items, 7);
            assert_eq!(scan.corrupt_regions, 0);
            // one item at most: one record per batch
            let first = log.read_batch(1, 1 << 20);
            assert_eq!(first.payload.as_ref(), b"hello");
            let second = log.read_batch(1, 1 << 20);
            assert_eq!(second.payload.as_ref(), b"world!");
            assert!(log.read_batch(1, 1 << 20).recs.is_empty());
            for (loc, items) in first.recs.into_iter().chain(second.recs) {
                log.ack(loc, items);
            }
            assert_eq!(log.items(), 0);
            // the writer thread deletes it
            let segs = || {
                std::fs::read_dir(dir.path())
                    .expect("ls")
                    .filter(|e| {
                        e.as_ref()
                            .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
                    })
                    .count()
            };
            for _ in 0..500 {
                if segs() == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert_eq!(segs(), 0, "delivered recovered segment deleted");
            assert_eq!(log.used(), 0);
        });
    }

    #[test]
    fn a_delivered_current_segment_is_deleted_without_waiting_for_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        rt().block_on(async {
            // 32 KiB cap: 4 KiB segments, retired from 1 KiB on
            let (log, _) = DiskLog::open(dir.path(), 32 << 10, None).expect("open");
            let a = log
                .append(Rec::raw(Bytes::from(vec![b'x'; 600])), 1)
                .await
                .expect("a");
            let b = log
                .append(Rec::raw(Bytes::from(vec![b'y'; 600])), 1)
                .await
                .expect("b");
            assert_eq!(log.read_batch(10, 1 << 20).recs.len(), 2);
            log.ack(a, 1);
            assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
            log.ack(b, 1);
            for _ in 0..100 {
                if std::fs::read_dir(dir.path()).expect("ls").count() == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
            assert_eq!(log.used(), 0);
            // and appending goes on in a new segment
            let c = log
                .append(Rec::raw(Bytes::from_static(b"z")), 1)
                .await
                .expect("c");
            let r = log.read_batch(10, 1 << 20);
            assert_eq!(r.recs, vec![(c, 1)]);
            assert_eq!(r.payload.as_ref(), b"z");
        });
    }

    /// A compressible request of `n` bytes, large enough to be a piece.
    fn big(n: usize, seed: u8) -> Bytes {
        let v: Vec<u8> = (0..n)
            .map(|i| b"resource.attributes"[(i + seed as usize) % 19])
            .collect();
        Bytes::from(v)
    }

    #[test]
    fn records_of_the_previous_version_are_delivered_after_an_upgrade() {
        let dir = tempfile::tempdir().expect("tempdir");
        // a segment as the previous version wrote it: GSQ1 records only
        let old = [
            big(40 << 10, 1),
            Bytes::from_static(b"small"),
            big(20 << 10, 2),
        ];
        let mut seg = Vec::new();
        for (i, b) in old.iter().enumerate() {
            frame(&mut seg, b, i as u64 + 1);
        }
        std::fs::write(seg_path(dir.path(), 1), &seg).expect("write");
        let new = big(64 << 10, 3);
        rt().block_on(async {
            let (log, scan) = DiskLog::open(dir.path(), 1 << 30, SYNC).expect("open");
            assert_eq!((scan.records, scan.items, scan.corrupt_regions), (3, 6, 0));
            let rec = piece::compress(new.clone());
            assert!(rec.piece);
            let loc = log.append(rec.clone(), 4).await.expect("append");
            assert!(loc.piece);
            assert_eq!(log.pending(), (10, (124 << 10) + 5), "uncompressed bytes");
            let r = log.read_batch(100, 1 << 30);
            assert_eq!(r.recs.len(), 4);
            assert_eq!(
                r.recs.iter().map(|(l, _)| l.piece).collect::<Vec<_>>(),
                [false, false, false, true]
            );
            // the batch as sent: old raw records and the new piece in one gzip member
            let mut at = 0;
            let recs: Vec<Rec> = r
                .recs
                .iter()
                .map(|(l, _)| {
                    at += l.len as usize;
                    Rec {
                        data: r.payload.slice(at - l.len as usize..at),
                        piece: l.piece,
                    }
                })
                .collect();
            let want: Vec<u8> = [&old[..], &[new.clone()][..]].concat().concat();
            assert_eq!(
                piece::tests::gunzip(&piece::gzip(&recs, Vec::new()).expect("gzip")),
                want
            );
            assert_eq!(piece::plain(&recs, Vec::new()).expect("plain"), want);
            log.close();
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        // reopened: the piece record is recovered as one
        rt().block_on(async {
            let (log, scan) = DiskLog::open(dir.path(), 1 << 30, SYNC).expect("reopen");
            assert_eq!((scan.records, scan.items, scan.corrupt_regions), (4, 10, 0));
            let r = log.read_batch(100, 1 << 30);
            let (l, items) = r.recs[3];
            assert!(l.piece && items == 4);
            assert_eq!(
                r.payload.slice(r.payload.len() - l.len as usize..),
                piece::compress(new).data
            );
            log.close();
        });
    }

    #[test]
    fn a_batch_is_cut_at_max_bytes_of_uncompressed_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        rt().block_on(async {
            let (log, _) = DiskLog::open(dir.path(), 1 << 30, SYNC).expect("open");
            for i in 0..3 {
                let rec = piece::compress(big(100 << 10, i));
                log.append(rec, 1).await.expect("append");
            }
            let r = log.read_batch(100, 250 << 10);
            assert_eq!(r.recs.len(), 2, "two 100 KiB records in 250 KiB");
            assert!(r.payload.len() < 20 << 10, "read back compressed");
            assert_eq!(log.pending(), (1, 100 << 10));
            log.close();
        });
    }

    #[test]
    fn a_corrupt_or_torn_piece_record_is_skipped_and_counted() {
        let rec = |seed| piece::compress(big(70 << 10, seed));
        let mut buf = Vec::new();
        let put = |buf: &mut Vec<u8>, r: &Rec, items| {
            header(buf, &r.data, items, true);
            buf.extend_from_slice(&r.data);
        };
        put(&mut buf, &rec(1), 1);
        let second = buf.len();
        put(&mut buf, &rec(2), 2);
        put(&mut buf, &rec(3), 3);
        buf[second + HEADER + 20] ^= 0xff;
        let mut torn = Vec::new();
        put(&mut torn, &rec(4), 4);
        buf.extend_from_slice(&torn[..torn.len() - 3]);
        let mut out = Vec::new();
        let mut scan = Scan::default();
        scan_segment(1, &buf, &mut out, &mut scan);
        let got: Vec<(u64, bool, u64)> =
            out.iter().map(|r| (r.items, r.loc.piece, r.raw)).collect();
        assert_eq!(got, vec![(1, true, 70 << 10), (3, true, 70 << 10)]);
        assert_eq!(scan.corrupt_regions, 2);
        assert_eq!(scan.corrupt_items, 2 + 4);
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
    fn the_reader_skips_damage_and_walks_segments_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seg1 = Vec::new();
        frame(&mut seg1, b"one", 1);
        let bad = seg1.len();
        frame(&mut seg1, b"two", 2);
        frame(&mut seg1, b"three", 3);
        seg1[bad + HEADER] ^= 0xff;
        let mut seg2 = Vec::new();
        frame(&mut seg2, b"four", 4);
        std::fs::write(seg_path(dir.path(), 7), &seg1).expect("seg 7");
        std::fs::write(seg_path(dir.path(), 9), &seg2).expect("seg 9");
        rt().block_on(async {
            let (log, scan) = DiskLog::open(dir.path(), 1 << 20, None).expect("open");
            assert_eq!((scan.records, scan.items, scan.corrupt_regions), (3, 8, 1));
            assert_eq!(log.pending(), (8, 12));
            let five = log
                .append(Rec::raw(Bytes::from_static(b"five")), 5)
                .await
                .expect("five");
            assert_eq!(five.seg, 10, "new records go to a new segment");
            let r = log.read_batch(100, 1 << 20);
            let items: Vec<u64> = r.recs.iter().map(|(_, n)| *n).collect();
            assert_eq!(items, vec![1, 3, 4, 5]);
            assert_eq!(r.payload.as_ref(), b"onethreefourfive");
            assert_eq!(r.failed_items, 0);
        });
    }

    /// B.8: the default `max_disk_bytes` holds an hour at 1,000 records/s of
    /// ~300-byte log records, even sent one record per request.
    #[test]
    fn the_default_disk_cap_holds_an_hour_of_a_busy_pod() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use prost::Message;
        let s = |v: &str| {
            Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            })
        };
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: s(v),
            ..Default::default()
        };
        let rec = LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            severity_text: "INFO".into(),
            body: s(&"chat request served; model gpt-4o, 812 tokens ".repeat(4)),
            attributes: vec![
                kv("http.route", "/api/chat"),
                kv("trace_id", &"f".repeat(32)),
            ],
            ..Default::default()
        };
        let one = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![rec],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        assert!((280..=360).contains(&one.len()), "{} bytes", one.len());
        let mut framed = Vec::new();
        frame(&mut framed, &one, 1);
        let hour = 3_600_000u64 * framed.len() as u64;
        let cap = crate::export::otlp::config::Queue::default().max_disk_bytes;
        assert!(
            hour <= cap,
            "an hour is {hour} bytes, the default cap {cap}"
        );
    }

    /// Waits for the writer thread to write the ledger.
    fn wait_ledger(dir: &Path, want: Option<Pos>) {
        for _ in 0..500 {
            if ledger::read(dir).map(|(_, p)| p) == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(ledger::read(dir).map(|(_, p)| p), want);
    }

    #[test]
    fn a_restart_resends_only_what_the_ledger_does_not_say_was_delivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        rt().block_on(async {
            let (log, _) = DiskLog::open(d, 1 << 30, None).expect("open");
            for p in [&b"one"[..], b"two", b"three", b"four"] {
                log.append(Rec::raw(Bytes::copy_from_slice(p)), 1)
                    .await
                    .expect("append");
            }
            let first = log.read_batch(2, 1 << 20);
            let second = log.read_batch(1, 1 << 20);
            let third = log.read_batch(1, 1 << 20);
            assert_eq!(third.payload.as_ref(), b"four");
            // a later batch delivered first moves nothing
            log.batch_done(second.id.expect("id"));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_eq!(ledger::read(d), None);
            log.batch_done(first.id.expect("id"));
            let end = Pos {
                seg: first.recs[0].0.seg,
                off: second.recs[0].0.off + 5,
            };
            wait_ledger(d, Some(end));
            log.close();
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        rt().block_on(async {
            let (log, scan) = DiskLog::open(d, 1 << 30, None).expect("reopen");
            assert_eq!((scan.delivered, scan.records, scan.items), (3, 1, 1));
            let r = log.read_batch(10, 1 << 20);
            assert_eq!(
                r.payload.as_ref(),
                b"four",
                "only the batch in flight again"
            );
            // new records go to a segment after the ledger's
            let loc = log
                .append(Rec::raw(Bytes::from_static(b"five")), 1)
                .await
                .expect("append");
            assert!(loc.seg > r.recs[0].0.seg);
            log.close();
        });
    }

    #[test]
    fn segments_wholly_before_the_ledger_are_deleted_and_never_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let mut w = ledger::Writer::new(0);
        w.write(d, Pos { seg: 7, off: 0 }).expect("ledger");
        let mut buf = Vec::new();
        frame(&mut buf, b"old", 1);
        std::fs::write(seg_path(d, 3), &buf).expect("segment");
        rt().block_on(async {
            let (log, scan) = DiskLog::open(d, 1 << 30, None).expect("open");
            assert_eq!(scan.records, 0);
            assert!(!seg_path(d, 3).exists(), "delivered segment deleted");
            let loc = log
                .append(Rec::raw(Bytes::from_static(b"new")), 1)
                .await
                .expect("append");
            assert_eq!(loc.seg, 8, "a number past the ledger's");
            log.close();
        });
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
            let (log, _) = DiskLog::open(dir.path(), 100, None).expect("open");
            log.append(Rec::raw(Bytes::from(vec![0u8; 60])), 1)
                .await
                .expect("first fits");
            let e = log.append(Rec::raw(Bytes::from(vec![0u8; 60])), 1).await;
            assert!(e.is_err_and(|m| m.contains("full")));
        });
    }
}
