//! The mergeable distinct-count sketch beside each exact per-pod count
//! (issue 21): a HyperLogLog whose registers are exposed as gauges
//! (`<rule>_sketch{register="i"}`) and max-merged across pods in PromQL.
//!
//! - Hash: SipHash-2-4 of the id's UTF-8 bytes (an integer id as its
//!   decimal digits) under the 128-bit fleet key (`store.distinct_key_file`,
//!   else [`DEFAULT_KEY`]); the key's first 8 bytes are k0 and the next 8
//!   k1, both little-endian, as in the SipHash paper and its reference code.
//! - Register: the hash's top `p` bits. Rank: the leading zeros of the
//!   remaining `64 - p` bits, plus 1 (1 ..= 65 - p).
//! - Window: the register maxima are kept per time slice, [`SLICES`] slices
//!   of `window / SLICES` seconds (rounded up); a scrape shows, per
//!   register, the maximum over the slices that end after `now - window`.
//!   An id therefore leaves the registers at most one slice after it left
//!   the exact count (which forgets it exactly `window` after it was seen).

use super::snapshot::{Family, Kind};
use super::Distinct;
use siphasher::sip::SipHasher24;

/// Slices per window.
pub const SLICES: u64 = 10;
/// Ring length: the live slices (at most `SLICES + 1`).
const RING: usize = SLICES as usize + 1;

/// The fleet key without `store.distinct_key_file`: the bytes 00 01 .. 0f
/// (the SipHash paper's test key), so an unconfigured fleet still merges.
pub const DEFAULT_KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Default precision (`store.distinct_sketch_precision`): 2^10 = 1024
/// registers, standard error 1.04/32 = 3.25 %, at most 1025 series per
/// rule and pod (p = 12 halves the error for four times the series;
/// BENCHMARKS.md, "Issue 21: sketch precision").
pub const DEFAULT_PRECISION: u8 = 10;
pub const MIN_PRECISION: u8 = 4;
pub const MAX_PRECISION: u8 = 16;

/// The fleet hash of an id's bytes.
#[derive(Clone)]
pub struct FleetHash(SipHasher24);

impl FleetHash {
    pub fn new(key: &[u8; 16]) -> Self {
        FleetHash(SipHasher24::new_with_key(key))
    }
    #[inline]
    pub fn hash(&self, id: &[u8]) -> u64 {
        self.0.hash(id)
    }
}

/// The register and rank of a hash at precision `p`.
#[inline]
pub fn register_rank(h: u64, p: u8) -> (usize, u8) {
    let reg = (h >> (64 - u32::from(p))) as usize;
    let rest = h << p;
    let rank = rest.leading_zeros().min(64 - u32::from(p)) + 1;
    (reg, rank as u8)
}

/// A fleet hash's register and rank at precision `p` in one u32 (register
/// << 8 | rank), as the exact set keeps them.
#[inline]
pub fn pack(h: u64, p: u8) -> u32 {
    let (reg, rank) = register_rank(h, p);
    (reg as u32) << 8 | u32::from(rank)
}

/// Parses a key file's text: exactly 32 hex digits (16 bytes, in order),
/// surrounding whitespace ignored.
pub fn parse_key(text: &str) -> Result<[u8; 16], String> {
    let t = text.trim();
    if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "must hold exactly 32 hex digits (a 128-bit key), found {} characters",
            t.len()
        ));
    }
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(key)
}

/// HyperLogLog registers per time slice.
pub struct Sketch {
    p: u8,
    slice_s: u64,
    window_s: u64,
    /// per ring slot: the slice number it holds (`u64::MAX`: none) and its
    /// `2^p` register maxima
    epochs: [u64; RING],
    regs: Vec<u8>,
}

impl Sketch {
    pub fn new(p: u8, window_s: u64) -> Self {
        let window_s = window_s.max(1);
        Sketch {
            p,
            slice_s: window_s.div_ceil(SLICES).max(1),
            window_s,
            epochs: [u64::MAX; RING],
            regs: vec![0; RING << p],
        }
    }

    pub fn precision(&self) -> u8 {
        self.p
    }

    pub fn window_s(&self) -> u64 {
        self.window_s
    }

    /// Number of registers, `2^p`.
    pub fn m(&self) -> usize {
        1 << self.p
    }

    /// Adds a fleet hash seen at `now_s`.
    #[inline]
    pub fn insert(&mut self, h: u64, now_s: u64) {
        let slice = self.slice(now_s);
        self.insert_into(slice, h);
    }

    /// The registers of `now_s`'s slice (cleared when the ring slot held
    /// an older slice): where a batch seen at `now_s` goes.
    #[inline]
    pub fn slice(&mut self, now_s: u64) -> usize {
        let e = now_s / self.slice_s;
        let slot = (e % RING as u64) as usize;
        let m = self.m();
        if self.epochs[slot] != e {
            self.epochs[slot] = e;
            if let Some(s) = self.regs.get_mut(slot * m..(slot + 1) * m) {
                s.fill(0);
            }
        }
        slot * m
    }

    /// Adds a fleet hash to the slice starting at `base` ([`Self::slice`]).
    #[inline]
    pub fn insert_into(&mut self, base: usize, h: u64) {
        self.insert_packed(base, pack(h, self.p));
    }

    /// Adds a [`pack`]ed register and rank to the slice starting at `base`.
    #[inline]
    pub fn insert_packed(&mut self, base: usize, rr: u32) {
        let (reg, rank) = ((rr >> 8) as usize, (rr & 0xff) as u8);
        if let Some(r) = self.regs.get_mut(base + reg) {
            *r = (*r).max(rank);
        }
    }

    /// The registers at `now_s`: per register, the maximum over the
    /// slices that end after `now_s - window` (an older slice's ids have
    /// all left the exact count).
    pub fn registers(&self, now_s: u64) -> Vec<u8> {
        let m = self.m();
        let cutoff = now_s.saturating_sub(self.window_s);
        let mut out = vec![0u8; m];
        for (slot, &e) in self.epochs.iter().enumerate() {
            let live = e != u64::MAX
                && e.saturating_add(1).saturating_mul(self.slice_s) > cutoff
                && e * self.slice_s <= now_s;
            if !live {
                continue;
            }
            if let Some(s) = self.regs.get(slot * m..(slot + 1) * m) {
                for (o, r) in out.iter_mut().zip(s) {
                    *o = (*o).max(*r);
                }
            }
        }
        out
    }
}

/// The names of a distinct-count rule's sketch families.
pub fn family_names(rule: &str) -> [String; 2] {
    [format!("{rule}_sketch"), format!("{rule}_sketch_registers")]
}

/// The sketch families of a distinct-count gauge at `now_s`:
/// `<rule>_sketch{register="i"}` = the rank of each register above 0 (an
/// absent register is 0), and `<rule>_sketch_registers` = m. They are not
/// counted against `store.max_series` or any cap: their number is bounded
/// by the precision (at most m + 1 series per rule).
pub fn families(d: &Distinct, now_s: u64) -> [Family; 2] {
    let [name, total] = family_names(&d.name);
    let regs = d.registers(now_s);
    let mut f = Family::new(
        name,
        Kind::Gauge,
        format!(
            "HyperLogLog registers of {} (SipHash-2-4 under the fleet key, p = {}): the largest rank per register in the window; merge pods with max by (register)",
            d.name, d.precision
        ),
    );
    let mut buf = itoa::Buffer::new();
    for (i, &r) in regs.iter().enumerate() {
        if r > 0 {
            f.value(&[("register", buf.format(i))], f64::from(r));
        }
    }
    let mut m = Family::new(
        total,
        Kind::Gauge,
        format!("Number of HyperLogLog registers of {}", d.name),
    );
    m.value(&[], regs.len() as f64);
    [f, m]
}

/// The HyperLogLog estimate of registers (harmonic mean, linear counting
/// at or below 2.5 m when some register is 0): what the recording rule
/// `geometra:active_users:fleet` computes.
pub fn estimate(regs: &[u8]) -> f64 {
    let m = regs.len() as f64;
    // the formula for every m, as the rule does (the paper's constants
    // for m = 16, 32, 64 differ from it by 0.4 % at most)
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = regs.iter().map(|&r| (-f64::from(r)).exp2()).sum();
    let raw = alpha * m * m / sum;
    let zeros = regs.iter().filter(|&&r| r == 0).count() as f64;
    if raw <= 2.5 * m && zeros > 0.0 {
        m * (m / zeros).ln()
    } else {
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_papers_vector() {
        // SipHash-2-4 paper, appendix A: key 00..0f, message 00..0e
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(
            FleetHash::new(&DEFAULT_KEY).hash(&msg),
            0xa129_ca61_49be_45e5
        );
    }

    #[test]
    fn register_is_the_top_bits_and_rank_the_leading_zeros_plus_one() {
        assert_eq!(
            register_rank(0xFFF0_0000_0000_0000 | 1 << 51, 12),
            (0xFFF, 1)
        );
        assert_eq!(register_rank(1 << 50, 12), (0, 2));
        assert_eq!(register_rank(1, 12), (0, 52));
        assert_eq!(register_rank(0, 12), (0, 53));
        assert_eq!(register_rank(0xABC0_0000_0000_0000, 12), (0xABC, 53));
    }

    #[test]
    fn key_file_is_32_hex_digits() {
        let k = parse_key(" 000102030405060708090a0b0c0d0e0F\n").unwrap();
        assert_eq!(k, DEFAULT_KEY);
        assert!(parse_key("0001").is_err());
        assert!(parse_key("zz0102030405060708090a0b0c0d0e0f").is_err());
    }

    #[test]
    fn registers_fall_when_their_ids_age_out() {
        let h = FleetHash::new(&DEFAULT_KEY);
        // window 300 s: slices of 30 s
        let mut s = Sketch::new(12, 300);
        let t0 = 1_000_000_020; // slice 33_333_334 starts at ..._020
        for i in 0..50u32 {
            s.insert(h.hash(i.to_string().as_bytes()), t0);
        }
        let at_t0 = s.registers(t0);
        assert!(at_t0.iter().filter(|&&r| r > 0).count() >= 45);
        // still inside the window, and at its last second
        assert_eq!(s.registers(t0 + 299), at_t0);
        // the exact count forgets them at t0 + 300; the slice [t0, t0+30)
        // ends after the cutoff until t0 + 329, then the registers are 0
        assert_eq!(s.registers(t0 + 300), at_t0);
        assert_eq!(s.registers(t0 + 329), at_t0);
        assert!(s.registers(t0 + 330).iter().all(|&r| r == 0));
        // a newer id keeps only its own register
        s.insert(h.hash(b"late"), t0 + 200);
        let late = s.registers(t0 + 400);
        assert_eq!(late.iter().filter(|&&r| r > 0).count(), 1);
        assert!(s.registers(t0 + 530).iter().all(|&r| r == 0));
        // a ring slot reused by a later slice starts from zero: "x" and
        // "late", not the 50 of the slot's former slice
        s.insert(h.hash(b"x"), t0 + 11 * 30);
        assert_eq!(
            s.registers(t0 + 11 * 30).iter().filter(|&&r| r > 0).count(),
            2
        );
    }

    #[test]
    fn estimate_is_within_three_standard_errors() {
        let h = FleetHash::new(&DEFAULT_KEY);
        for n in [10u32, 1000, 10_000, 100_000] {
            let mut s = Sketch::new(12, 300);
            for i in 0..n {
                s.insert(h.hash(format!("user-{i}").as_bytes()), 0);
            }
            let e = estimate(&s.registers(0));
            let err = (e - f64::from(n)).abs() / f64::from(n);
            assert!(err < 3.0 * 1.04 / 64.0 + 0.01, "n {n}: estimate {e}");
        }
    }

    /// docs/sketch-test-vectors.tsv, as this code computes it.
    fn vectors() -> String {
        let keys = [
            "000102030405060708090a0b0c0d0e0f",
            "9c2f6b1e04d87a35e1f0c4b2a6d89e73",
        ];
        let ids = [
            "alice",
            "bob",
            "user-1",
            "user-2",
            "42",
            "0",
            "a",
            "Zoë",
            "ユーザー",
            "550e8400-e29b-41d4-a716-446655440000",
            "an id longer than sixteen bytes, with spaces",
        ];
        let p = DEFAULT_PRECISION;
        let mut out = format!(
            "# SipHash-2-4 of the id's UTF-8 bytes under the 128-bit key (k0 = key bytes 0-7, k1 = bytes 8-15, little-endian);\n\
             # register = the hash's top p bits, rank = leading zeros of the other 64 - p bits + 1; p = {p}.\n\
             # Generated and checked by src/metrics/sketch.rs (test vectors_file_matches); tests/python/test_sketch_vectors.py reproduces it.\n\
             id\tkey\thash\tregister\trank\n"
        );
        for k in keys {
            let h = FleetHash::new(&parse_key(k).unwrap());
            for id in ids {
                let x = h.hash(id.as_bytes());
                let (reg, rank) = register_rank(x, p);
                out += &format!("{id}\t{k}\t{x:016x}\t{reg}\t{rank}\n");
            }
        }
        out
    }

    #[test]
    fn vectors_file_matches() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/sketch-test-vectors.tsv");
        let want = vectors();
        if std::env::var_os("GEOMETRA_WRITE_VECTORS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            have, want,
            "docs/sketch-test-vectors.tsv is stale: GEOMETRA_WRITE_VECTORS=1 cargo test --lib vectors_file"
        );
    }
}
