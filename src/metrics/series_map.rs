//! A family's series by key. Series sit in a vector (scrapes and expiry
//! walk it in order); an open-addressing index of (hash tag, position)
//! words, at most half full, finds them. A lookup is one keyed hash (no
//! length prefix or sponge to finish), usually one probe, one tag compare
//! and one key compare done inline in 8-byte words instead of a memcmp call:
//! about a third of the instructions of a hashbrown map here.

use super::store::Series;
use std::hash::{BuildHasher, Hasher};

/// One series and its key.
pub struct Slot {
    hash: u64,
    pub key: Box<[u8]>,
    pub series: Series,
}

pub struct SeriesMap {
    slots: Vec<Slot>,
    /// per bucket: 0 when empty, else the hash's high 32 bits (the tag)
    /// above the slot's position plus one; a power of two, at least twice
    /// the slots
    index: Box<[u64]>,
    state: foldhash::fast::RandomState,
}

/// Buckets of an empty map.
const MIN_BUCKETS: usize = 8;

impl Default for SeriesMap {
    fn default() -> Self {
        SeriesMap {
            slots: Vec::new(),
            index: vec![0; MIN_BUCKETS].into(),
            state: foldhash::fast::RandomState::default(),
        }
    }
}

/// Whether two keys are equal; keys of up to 64 bytes (every derived key
/// seen so far) are compared in a few overlapping 16-, 8- or 4-byte words,
/// without a loop or a call.
#[inline(always)]
pub fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        33..=64 => {
            (w16(a, 0) == w16(b, 0))
                & (w16(a, 16) == w16(b, 16))
                & (w16(a, n - 32) == w16(b, n - 32))
                & (w16(a, n - 16) == w16(b, n - 16))
        }
        16..=32 => (w16(a, 0) == w16(b, 0)) & (w16(a, n - 16) == w16(b, n - 16)),
        8..=15 => (w8(a, 0) == w8(b, 0)) & (w8(a, n - 8) == w8(b, n - 8)),
        4..=7 => (w4(a, 0) == w4(b, 0)) & (w4(a, n - 4) == w4(b, n - 4)),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

/// The 16 bytes at `at` (callers keep `at + 16 <= b.len()`).
#[inline(always)]
fn w16(b: &[u8], at: usize) -> u128 {
    b.get(at..at + 16)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u128::from_ne_bytes)
}

#[inline(always)]
fn w8(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

#[inline(always)]
fn w4(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

impl SeriesMap {
    /// The key's hash: foldhash's byte hash alone (`write` mixes the length in).
    #[inline(always)]
    pub fn hash(&self, key: &[u8]) -> u64 {
        let mut h = self.state.build_hasher();
        h.write(key);
        h.finish()
    }

    /// The position of `key`'s series (hash from [`SeriesMap::hash`]), or
    /// Err with the empty bucket where it would go.
    #[inline(always)]
    pub fn find(&self, hash: u64, key: &[u8]) -> Result<usize, usize> {
        let mask = self.index.len() - 1;
        let tag = hash >> 32;
        let mut at = hash as usize & mask;
        loop {
            let b = self.index.get(at).copied().unwrap_or(0);
            let Some(i) = (b as u32 as usize).checked_sub(1) else {
                return Err(at);
            };
            if b >> 32 == tag {
                if let Some(s) = self.slots.get(i) {
                    if same_key(&s.key, key) {
                        return Ok(i);
                    }
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// The series at a position [`SeriesMap::find`] gave.
    #[inline(always)]
    pub fn at(&mut self, i: usize) -> Option<&mut Series> {
        self.slots.get_mut(i).map(|s| &mut s.series)
    }

    /// Adds a series for a key [`SeriesMap::find`] did not find (at
    /// `bucket`, the bucket it gave), growing the index when half full.
    pub fn insert(&mut self, hash: u64, bucket: usize, key: &[u8], series: Series) -> &mut Series {
        let i = self.slots.len();
        self.slots.push(Slot {
            hash,
            key: key.into(),
            series,
        });
        if self.slots.len() * 2 > self.index.len() {
            self.rebuild(self.index.len() * 2);
        } else if let Some(b) = self.index.get_mut(bucket) {
            *b = word_of(hash, i);
        }
        &mut self.slots[i].series
    }

    /// A new index of `buckets` buckets (a power of two) over the slots.
    fn rebuild(&mut self, buckets: usize) {
        let mut index = vec![0u64; buckets].into_boxed_slice();
        let mask = buckets - 1;
        for (i, s) in self.slots.iter().enumerate() {
            let mut at = s.hash as usize & mask;
            while index[at] != 0 {
                at = (at + 1) & mask;
            }
            index[at] = word_of(s.hash, i);
        }
        self.index = index;
    }

    pub fn get(&self, key: &[u8]) -> Option<&Series> {
        let i = self.find(self.hash(key), key).ok()?;
        self.slots.get(i).map(|s| &s.series)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Keys and series, in the order they were created (expiry aside).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Series)> {
        self.slots.iter().map(|s| (&*s.key, &s.series))
    }

    pub fn values(&self) -> impl Iterator<Item = &Series> {
        self.slots.iter().map(|s| &s.series)
    }

    /// Keeps the series for which `f` is true (expiry: rare, so the index
    /// is rebuilt, and shrinks with the series).
    pub fn retain(&mut self, mut f: impl FnMut(&[u8], &mut Series) -> bool) {
        let before = self.slots.len();
        self.slots.retain_mut(|s| f(&s.key, &mut s.series));
        if self.slots.len() != before {
            let buckets = (self.slots.len() * 2 + 1).next_power_of_two();
            self.rebuild(buckets.max(MIN_BUCKETS));
        }
    }
}

/// An index word: the hash's tag above the position plus one (never 0).
#[inline(always)]
fn word_of(hash: u64, i: usize) -> u64 {
    (hash >> 32 << 32) | (i as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_compares_every_byte_at_every_length() {
        for len in 0..80usize {
            let a: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert!(same_key(&a, &a.clone()), "{len}");
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 0x40;
                assert!(!same_key(&a, &b), "{len} {at}");
            }
            assert!(!same_key(&a, &a[..len.saturating_sub(1)]) || len == 0);
        }
    }

    fn series(v: f64) -> Series {
        Series {
            value: super::super::store::Value::Scalar(v),
            updated: v as u64,
            created_ms: 0,
        }
    }

    #[test]
    fn finds_what_was_inserted_through_growth_and_retain() {
        let mut m = SeriesMap::default();
        let keys: Vec<Vec<u8>> = (0..1000u32).map(|i| format!("k{i}").into_bytes()).collect();
        for (n, k) in keys.iter().enumerate() {
            let h = m.hash(k);
            let Err(b) = m.find(h, k) else {
                panic!("{n} found before insert");
            };
            m.insert(h, b, k, series(n as f64));
        }
        assert_eq!(m.len(), 1000);
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k).map(|s| s.updated), Some(n as u64));
        }
        m.retain(|_, s| s.updated % 3 == 0);
        assert_eq!(m.len(), 334);
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k).is_some(), n % 3 == 0, "{n}");
        }
        m.retain(|_, _| false);
        assert!(m.is_empty() && m.get(b"k0").is_none());
    }

    #[test]
    fn colliding_tags_still_compare_keys() {
        let mut m = SeriesMap::default();
        // the same hash for two keys: both are kept, each found by its key
        m.insert(7, 7, b"a", series(1.0));
        let Err(b) = m.find(7, b"b") else {
            panic!("b found");
        };
        m.insert(7, b, b"b", series(2.0));
        assert_eq!(m.find(7, b"a"), Ok(0));
        assert_eq!(m.find(7, b"b"), Ok(1));
    }
}
