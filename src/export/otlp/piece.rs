//! Records compressed once, when they are offered (the pigz technique).
//!
//! A large request is compressed when the forwarder takes it, before it is
//! queued (in memory or on disk), as an independent *piece*: raw deflate
//! from a fresh state, ended by a sync flush (byte-aligned, no final block),
//! so pieces can be concatenated. Its stored form is
//!
//! ```text
//! uncompressed length u32 LE | CRC-32 of the uncompressed bytes u32 LE | deflate
//! ```
//!
//! A batch sent gzip-compressed is then one gzip member: header, the pieces
//! as they are (records kept raw, the small ones, compressed at send time
//! into pieces of their own), an empty final block, the CRC-32 of the whole
//! combined from the pieces' and the total length. It decompresses to the
//! concatenated requests, which protobuf reads as one request. A batch for an
//! endpoint without compression inflates its pieces instead, so what is
//! queued is sendable whatever a config reload makes of the endpoint.

use bytes::Bytes;

/// Requests smaller than this are queued raw and compressed at send time,
/// together with their neighbours: a piece costs a reset deflate state, and
/// cannot refer back to the requests before it in a batch (deflate's window
/// is 32 KiB). Measured on the load generator's logs (BENCHMARKS.md, branch
/// fpiece): cut into pieces of 16 KiB a batch grows 13.7 %, of 25 KiB 7.8 %,
/// of 64 KiB 2.1 %.
pub const PIECE_MIN: usize = 64 << 10;

/// The stored form's prefix: uncompressed length and CRC-32.
const PREFIX: usize = 8;

/// One queued record in its stored form: a request's bytes as received (or
/// redacted), or a piece (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub data: Bytes,
    pub piece: bool,
}

impl Rec {
    pub fn raw(data: Bytes) -> Rec {
        Rec { data, piece: false }
    }

    /// The request's bytes once decompressed.
    pub fn raw_len(&self) -> u64 {
        raw_len(&self.data, self.piece)
    }
}

/// The uncompressed length of a stored record (a piece's prefix says it; a
/// piece too short to hold one counts as empty, and fails to inflate).
pub fn raw_len(stored: &[u8], piece: bool) -> u64 {
    if !piece {
        return stored.len() as u64;
    }
    stored
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u32::from_le_bytes(b) as u64)
}

thread_local! {
    /// Each worker thread's deflate state, reset between pieces: a new one
    /// costs hundreds of KiB of zeroed tables each time.
    static DEFLATE: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::fast(), false));
}

/// `b` at level 1 (most of the size win for a fraction of the CPU of level
/// 6) as a piece, or raw when it is small ([`PIECE_MIN`]) or longer than a
/// gzip length field holds.
pub fn compress(b: Bytes) -> Rec {
    if b.len() < PIECE_MIN || b.len() > u32::MAX as usize {
        return Rec::raw(b);
    }
    // logs compress to about a sixth at level 1: room enough at once
    let mut out = Vec::with_capacity(PREFIX + b.len() / 3 + 4096);
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
    match deflate_run(&[&b], &mut out) {
        Ok(()) => Rec {
            data: Bytes::from(out),
            piece: true,
        },
        // cannot happen with a reset state and a growing buffer
        Err(()) => Rec::raw(b),
    }
}

/// Appends the concatenation of `run` to `out` as raw deflate from a reset
/// state, ended by a sync flush.
fn deflate_run(run: &[&[u8]], out: &mut Vec<u8>) -> Result<(), ()> {
    use flate2::FlushCompress;
    DEFLATE.with_borrow_mut(|d| {
        d.reset();
        for b in run {
            let start = d.total_in();
            while ((d.total_in() - start) as usize) < b.len() {
                let done = (d.total_in() - start) as usize;
                // only when short of room: a reserve that reallocates copies
                // what is there
                if out.capacity() - out.len() < 4096 {
                    out.reserve((b.len() - done) / 2 + 4096);
                }
                d.compress_vec(&b[done..], out, FlushCompress::None)
                    .map_err(|_| ())?;
            }
        }
        // flushed once the output did not fill the room it had
        loop {
            out.reserve(4096);
            d.compress_vec(&[], out, FlushCompress::Sync)
                .map_err(|_| ())?;
            if out.len() < out.capacity() {
                return Ok(());
            }
        }
    })
}

const NO_PREFIX: &str = "a queued piece without its prefix";

/// The deflate bytes, length and CRC-32 of a stored piece.
fn parts(stored: &[u8]) -> Option<(&[u8], u32, u32)> {
    let len = u32::from_le_bytes(stored.get(..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(stored.get(4..8)?.try_into().ok()?);
    Some((&stored[PREFIX..], len, crc))
}

/// `recs` as one gzip member appended to `out` (see the module doc). Fails
/// on a piece without its prefix (never made so).
pub fn gzip(recs: &[Rec], mut out: Vec<u8>) -> Result<Vec<u8>, String> {
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let stored: usize = recs.iter().map(|r| r.data.len()).sum();
    out.reserve(HEADER.len() + stored + 64);
    out.extend_from_slice(&HEADER);
    let mut crc = crc32fast::Hasher::new();
    let mut i = 0;
    while i < recs.len() {
        if recs[i].piece {
            let (deflate, len, sum) = parts(&recs[i].data).ok_or(NO_PREFIX)?;
            out.extend_from_slice(deflate);
            // the CRC-32 of the whole from the pieces' (zlib's crc32_combine)
            crc.combine(&crc32fast::Hasher::new_with_initial_len(sum, len as u64));
            i += 1;
            continue;
        }
        // a run of raw records: one piece of them
        let end = recs[i..]
            .iter()
            .position(|r| r.piece)
            .map_or(recs.len(), |n| i + n);
        let run: Vec<&[u8]> = recs[i..end].iter().map(|r| r.data.as_ref()).collect();
        if run.iter().any(|b| !b.is_empty()) {
            let mark = out.len();
            if deflate_run(&run, &mut out).is_err() {
                out.truncate(mark);
                stored_blocks(&run, &mut out);
            }
            run.iter().for_each(|b| crc.update(b));
        }
        i = end;
    }
    let total: u64 = recs.iter().map(Rec::raw_len).sum();
    // an empty final block of fixed codes: BFINAL 1, BTYPE 01, end of block
    out.extend_from_slice(&[0x03, 0x00]);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    Ok(out)
}

/// `run` as stored (uncompressed), non-final deflate blocks: what
/// [`gzip`] falls back to should deflate fail.
fn stored_blocks(run: &[&[u8]], out: &mut Vec<u8>) {
    for b in run {
        for c in b.chunks(0xffff) {
            let n = c.len() as u16;
            out.push(0);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(!n).to_le_bytes());
            out.extend_from_slice(c);
        }
    }
}

/// `recs` uncompressed (pieces inflated) appended to `out`. Fails on a
/// piece that does not inflate to its stated length and CRC-32.
pub fn plain(recs: &[Rec], mut out: Vec<u8>) -> Result<Vec<u8>, String> {
    let total: u64 = recs.iter().map(Rec::raw_len).sum();
    out.reserve(total as usize);
    for r in recs {
        if !r.piece {
            out.extend_from_slice(&r.data);
            continue;
        }
        let (deflate, len, sum) = parts(&r.data).ok_or(NO_PREFIX)?;
        let mark = out.len();
        out.reserve(len as usize);
        let mut d = flate2::Decompress::new(false);
        let res = d.decompress_vec(deflate, &mut out, flate2::FlushDecompress::Sync);
        let whole = d.total_in() == deflate.len() as u64 && d.total_out() == len as u64;
        if res.is_err() || !whole || crc32fast::hash(&out[mark..]) != sum {
            return Err("a queued piece does not inflate to what it held".into());
        }
    }
    Ok(out)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Read;

    fn request(n: usize, seed: u32) -> Bytes {
        // compressible, like OTLP: repeated keys, varying values
        let mut v = Vec::with_capacity(n);
        let mut x = seed;
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.extend_from_slice(b"service.name=checkout level=info msg=");
            v.extend_from_slice(&(x >> 16).to_le_bytes());
        }
        v.truncate(n);
        Bytes::from(v)
    }

    /// `b` decompressed by flate2's gzip reader (a test's independent
    /// check; also the disk queue's tests).
    pub fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut got)
            .expect("valid gzip");
        got
    }

    #[test]
    fn large_requests_become_pieces_and_small_ones_stay_raw() {
        let big = compress(request(128 << 10, 1));
        assert!(big.piece);
        assert!(!compress(request(PIECE_MIN - 1, 3)).piece);
        assert_eq!(big.raw_len(), 128 << 10);
        assert!(big.data.len() < (128 << 10) / 3, "compressed");
        let small = compress(request(300, 2));
        assert!(!small.piece);
        assert_eq!(small.data, request(300, 2));
    }

    #[test]
    fn any_mix_of_pieces_and_raw_records_is_one_gzip_member_of_their_concatenation() {
        let reqs: Vec<Bytes> = vec![
            request(100 << 10, 1),
            request(300, 2),
            Bytes::new(),
            request(70 << 10, 3),
            request(90 << 10, 4),
            request(5, 5),
            request(PIECE_MIN, 6),
        ];
        let recs: Vec<Rec> = reqs.iter().cloned().map(compress).collect();
        assert_eq!(recs.iter().filter(|r| r.piece).count(), 4);
        for (from, to) in [(0, 7), (0, 1), (1, 3), (2, 3), (3, 6), (5, 7), (0, 0)] {
            let want: Vec<u8> = reqs[from..to].concat();
            let gz = gzip(&recs[from..to], vec![9]).expect("gzip");
            assert_eq!(gz[0], 9, "appended after what was there");
            assert_eq!(gunzip(&gz[1..]), want, "gzip of {from}..{to}");
            let raw = plain(&recs[from..to], Vec::new()).expect("inflates");
            assert_eq!(raw, want, "plain of {from}..{to}");
        }
    }

    #[test]
    fn the_deflate_state_is_reset_between_pieces() {
        // the same request twice compresses the same: no history carried over
        let a = compress(request(64 << 10, 7));
        let b = compress(request(64 << 10, 7));
        assert_eq!(a, b);
        let gz = gzip(&[a.clone(), b], Vec::new()).expect("gzip");
        assert_eq!(gunzip(&gz), request(64 << 10, 7).repeat(2));
    }

    #[test]
    fn a_damaged_piece_is_refused_not_sent() {
        let mut p = compress(request(64 << 10, 8)).data.to_vec();
        let n = p.len();
        p[n / 2] ^= 0x55;
        let bad = Rec {
            data: Bytes::from(p),
            piece: true,
        };
        assert!(plain(&[bad], Vec::new()).is_err());
        let short = Rec {
            data: Bytes::from_static(b"abc"),
            piece: true,
        };
        assert_eq!(
            plain(std::slice::from_ref(&short), Vec::new()),
            Err(NO_PREFIX.into())
        );
        assert_eq!(gzip(&[short], Vec::new()), Err(NO_PREFIX.into()));
    }

    #[test]
    fn the_stored_fallback_is_valid_deflate() {
        let parts = [&b"hello "[..], &b"world"[..]];
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        stored_blocks(&parts, &mut out);
        out.extend_from_slice(&[0x03, 0x00]);
        out.extend_from_slice(&crc32fast::hash(b"hello world").to_le_bytes());
        out.extend_from_slice(&11u32.to_le_bytes());
        assert_eq!(gunzip(&out), b"hello world");
    }
}
