//! Native (exponential) histograms in Prometheus' schema: the buckets of a
//! derived histogram observed one value at a time, and OTLP exponential
//! histograms from apps converted to the same shape.
//!
//! Bucket `k` of the positive side covers `(base^(k-1), base^k]` with
//! `base = 2^(2^-schema)`, schema -4 ..= 8 (the negative side mirrors it on
//! `|v|`). Counts are kept dense from an offset, like OTLP, so an observation
//! is an index computation and an add. The width of each side is bounded:
//! past `max_buckets` the resolution is halved (schema - 1, neighbouring
//! buckets merged), as client_golang does when it exceeds its bucket limit.
//! Unlike client_golang the bound is on the width of the dense range rather
//! than on the populated buckets, which bounds memory whatever arrives. At
//! schema -4 the whole f64 range fits in 135 buckets, so the reduction
//! always terminates within that.
//!
//! Written here rather than taken from a crate: no maintained Rust crate
//! implements Prometheus' native histogram buckets (the `prometheus` crate
//! has classic histograms only), and the part needed is this small file.

use std::sync::OnceLock;

/// The finest and the coarsest schema Prometheus accepts.
pub const MAX_SCHEMA: i32 = 8;
pub const MIN_SCHEMA: i32 = -4;
/// client_golang's default zero threshold (2^-128).
pub const DEFAULT_ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;
/// client_golang's usual starting resolution (bucket factor 1.1 → schema 3).
pub const DEFAULT_SCHEMA: i32 = 3;
/// Buckets per side before the resolution is halved.
pub const DEFAULT_MAX_BUCKETS: usize = 160;

/// The finest scale OTLP defines.
pub const OTLP_MAX_SCALE: i32 = 20;

/// A bound on |bucket index| at `scale` that every finite f64 respects
/// (2^-1074 ..= 2^1024 is 1100 powers of two, `2^scale` buckets each).
fn key_limit(scale: i32) -> i64 {
    if scale >= 0 {
        1100i64 << scale
    } else {
        (1100i64 >> -scale) + 1
    }
}

/// `frexp`: `v = frac * 2^exp` with `frac` in [0.5, 1), for finite `v > 0`.
fn frexp(v: f64) -> (f64, i32) {
    let (v, adj) = if v < f64::MIN_POSITIVE {
        (v * 2f64.powi(54), -54) // subnormal: normalise first
    } else {
        (v, 0)
    };
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, exp + adj)
}

/// The lower bounds of the `2^schema` sub-buckets of one power of two, as
/// fractions in [0.5, 1) (client_golang's `nativeHistogramBounds`).
fn bounds(schema: i32) -> &'static [f64] {
    static TABLES: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    let t = TABLES.get_or_init(|| {
        (0..=MAX_SCHEMA)
            .map(|s| {
                let n = 1u32 << s;
                (0..n)
                    .map(|i| 0.5 * 2f64.powf(f64::from(i) / f64::from(n)))
                    .collect()
            })
            .collect()
    });
    t.get(schema.clamp(0, MAX_SCHEMA) as usize)
        .map_or(&[], Vec::as_slice)
}

/// The bucket index of `|v|` (finite, above the zero threshold) at `schema`.
pub fn key(v: f64, schema: i32) -> i32 {
    let v = v.abs().min(f64::MAX);
    let (frac, exp) = frexp(v);
    if schema > 0 {
        let b = bounds(schema);
        b.partition_point(|x| *x < frac) as i32 + (exp - 1) * b.len() as i32
    } else {
        let k = if frac == 0.5 { exp - 1 } else { exp };
        let shift = -schema;
        (k + (1 << shift) - 1) >> shift
    }
}

/// One side's counts, dense from `offset`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dense {
    pub offset: i32,
    pub counts: Vec<u64>,
}

impl Dense {
    /// The index range this side would need to also hold `k`.
    fn span_with(&self, k: i32) -> (i32, i32) {
        if self.counts.is_empty() {
            return (k, k);
        }
        let hi = self.offset + self.counts.len() as i32 - 1;
        (self.offset.min(k), hi.max(k))
    }

    /// Adds `n` at `k`, growing the dense range (the caller bounded it).
    fn add(&mut self, k: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = k;
            self.counts.push(n);
            return;
        }
        if k < self.offset {
            let grow = (self.offset - k) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = k;
        }
        let i = (k - self.offset) as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(n);
        }
    }

    /// The first and last index `by` schemas coarser, if any bucket.
    fn ends(&self, by: u32) -> Option<(i32, i32)> {
        let last = self.offset + self.counts.len().checked_sub(1)? as i32;
        Some((coarser_key(self.offset, by), coarser_key(last, by)))
    }

    /// The same counts `by` schemas coarser (each step merges pairs).
    fn coarser(&self, by: u32) -> Dense {
        let mut out = Dense::default();
        for (i, c) in self.counts.iter().enumerate() {
            if *c > 0 {
                out.add(coarser_key(self.offset + i as i32, by), *c);
            }
        }
        out
    }
}

/// The index at a schema `by` steps coarser that holds bucket `k`.
fn coarser_key(k: i32, by: u32) -> i32 {
    let mut k = k;
    for _ in 0..by {
        k = (k + 1) >> 1; // arithmetic shift: floor, right for negative keys
    }
    k
}

/// How many schema steps make the range `lo..=hi` fit in `max` buckets.
fn steps_to_fit(lo: i32, hi: i32, max: usize, schema: i32) -> u32 {
    let (mut lo, mut hi, mut by) = (lo, hi, 0u32);
    while (i64::from(hi) - i64::from(lo) + 1) as usize > max && schema - (by as i32) > MIN_SCHEMA {
        lo = coarser_key(lo, 1);
        hi = coarser_key(hi, 1);
        by += 1;
    }
    by
}

/// A native histogram's buckets (count and sum are kept by the caller, as
/// for classic buckets).
#[derive(Debug, Clone, PartialEq)]
pub struct NativeHist {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub positive: Dense,
    pub negative: Dense,
    max_buckets: usize,
}

impl NativeHist {
    pub fn new(schema: i32, max_buckets: usize) -> Self {
        NativeHist {
            schema: schema.clamp(MIN_SCHEMA, MAX_SCHEMA),
            zero_threshold: DEFAULT_ZERO_THRESHOLD,
            zero_count: 0,
            positive: Dense::default(),
            negative: Dense::default(),
            max_buckets: max_buckets.max(1),
        }
    }

    /// Counts one observation (NaN is not a bucket; the caller refuses it).
    pub fn observe(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        if v.abs() <= self.zero_threshold {
            self.zero_count = self.zero_count.saturating_add(1);
            return;
        }
        let mut k = key(v, self.schema);
        let side = if v > 0.0 {
            &self.positive
        } else {
            &self.negative
        };
        let (lo, hi) = side.span_with(k);
        let by = steps_to_fit(lo, hi, self.max_buckets, self.schema);
        if by > 0 {
            self.reduce(by);
            k = coarser_key(k, by);
        }
        let side = if v > 0.0 {
            &mut self.positive
        } else {
            &mut self.negative
        };
        side.add(k, 1);
    }

    /// Halves the resolution `by` times (both sides share the schema).
    fn reduce(&mut self, by: u32) {
        self.positive = self.positive.coarser(by);
        self.negative = self.negative.coarser(by);
        self.schema -= by as i32;
    }

    /// An OTLP exponential histogram point's buckets: OTLP's scale is the
    /// schema, and OTLP's bucket `i` (`(base^i, base^(i+1)]`) is
    /// Prometheus' `i + 1`. A scale finer than 8 is merged down to 8, and
    /// wider than `max_buckets` reduced further; a scale below -4 is refused.
    pub fn from_otlp(
        scale: i32,
        zero_threshold: f64,
        zero_count: u64,
        positive: (i32, &[u64]),
        negative: (i32, &[u64]),
        max_buckets: usize,
    ) -> Result<NativeHist, &'static str> {
        if !(MIN_SCHEMA..=OTLP_MAX_SCALE).contains(&scale) {
            return Err("scale outside -4..=20");
        }
        if !(zero_threshold >= 0.0 && zero_threshold.is_finite()) {
            return Err("bad zero threshold");
        }
        let dense = |(off, c): (i32, &[u64])| Dense {
            offset: off.saturating_add(1),
            counts: c.to_vec(),
        };
        let mut h = NativeHist {
            schema: scale,
            zero_threshold,
            zero_count,
            positive: dense(positive),
            negative: dense(negative),
            max_buckets: max_buckets.max(1),
        };
        // no f64 lies in a bucket past these: a hostile offset would
        // otherwise make merging two points allocate the range between them
        let limit = key_limit(scale);
        for d in [&h.positive, &h.negative] {
            let last = i64::from(d.offset) + d.counts.len() as i64 - 1;
            if !d.counts.is_empty() && (i64::from(d.offset) < -limit || last > limit) {
                return Err("bucket index out of range");
            }
        }
        if scale > MAX_SCHEMA {
            h.reduce((scale - MAX_SCHEMA) as u32);
        }
        let width = h.positive.counts.len().max(h.negative.counts.len());
        if width > h.max_buckets {
            let side = if h.positive.counts.len() >= h.negative.counts.len() {
                &h.positive
            } else {
                &h.negative
            };
            let hi = side.offset + side.counts.len() as i32 - 1;
            let by = steps_to_fit(side.offset, hi, h.max_buckets, h.schema);
            if by > 0 {
                h.reduce(by);
            }
        }
        Ok(h)
    }

    /// Adds another histogram's buckets (a delta point) at the coarser of
    /// the two schemas, then bounds the width again. False (nothing
    /// changed) when a count would wrap.
    pub fn merge(&mut self, o: &NativeHist) -> bool {
        let common = self.schema.min(o.schema);
        let (mine, theirs) = ((self.schema - common) as u32, (o.schema - common) as u32);
        // halve further first if the union of a side would be too wide, so
        // that nothing wider than max_buckets is ever allocated
        let mut extra = 0;
        for (a, b) in [(&self.positive, &o.positive), (&self.negative, &o.negative)] {
            let ends = match (a.ends(mine), b.ends(theirs)) {
                (Some(x), Some(y)) => Some((x.0.min(y.0), x.1.max(y.1))),
                (x, y) => x.or(y),
            };
            if let Some((lo, hi)) = ends {
                extra = extra.max(steps_to_fit(lo, hi, self.max_buckets, common));
            }
        }
        let (mine, theirs) = (mine + extra, theirs + extra);
        let (mut pos, mut neg) = (self.positive.coarser(mine), self.negative.coarser(mine));
        for (to, from) in [(&mut pos, &o.positive), (&mut neg, &o.negative)] {
            for (i, c) in from.counts.iter().enumerate() {
                if *c == 0 {
                    continue;
                }
                let k = coarser_key(from.offset + i as i32, theirs);
                let cur = usize::try_from(i64::from(k) - i64::from(to.offset))
                    .ok()
                    .and_then(|i| to.counts.get(i));
                if cur.is_some_and(|x| x.checked_add(*c).is_none()) {
                    return false;
                }
                to.add(k, *c);
            }
        }
        let Some(zero) = self.zero_count.checked_add(o.zero_count) else {
            return false;
        };
        // thresholds of one SDK do not change; if they did, the wider one wins
        self.zero_threshold = self.zero_threshold.max(o.zero_threshold);
        self.zero_count = zero;
        self.schema = common - extra as i32;
        (self.positive, self.negative) = (pos, neg);
        true
    }

    /// The buckets in the exposition model.
    pub fn to_snapshot(&self) -> super::snapshot::Native<'_> {
        use super::snapshot::{Buckets, Native};
        fn b(d: &Dense) -> Buckets<'_> {
            Buckets {
                offset: d.offset,
                counts: &d.counts,
            }
        }
        Native {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count,
            positive: b(&self.positive),
            negative: b(&self.negative),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket bounds of key `k` at `schema`, computed independently.
    fn upper(k: i32, schema: i32) -> f64 {
        2f64.powf(f64::from(k) * 2f64.powi(-schema))
    }

    #[test]
    fn keys_match_the_bucket_definition() {
        // exact powers of two are upper bounds (inclusive)
        assert_eq!(key(1.0, 0), 0);
        assert_eq!(key(2.0, 0), 1);
        assert_eq!(key(1.5, 0), 1);
        assert_eq!(key(0.75, 0), 0);
        assert_eq!(key(1.0, 3), 0);
        assert_eq!(key(2.0, 3), 8);
        assert_eq!(key(4.0, -1), 1);
        assert_eq!(key(4.000_001, -1), 2);
        assert_eq!(key(16.0, -2), 1);
        assert_eq!(key(-1.5, 0), 1);
        // a pseudo-random sweep: v lies in (upper(k-1), upper(k)], allowing
        // one ulp-ish of slack at the boundaries where powf rounds
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits((x >> 2) | 0x0010_0000_0000_0000) % 1e300;
            if !(v.is_finite() && v > 1e-300) {
                continue;
            }
            for schema in MIN_SCHEMA..=MAX_SCHEMA {
                let k = key(v, schema);
                let (lo, hi) = (upper(k - 1, schema), upper(k, schema));
                assert!(
                    v > lo * (1.0 - 1e-12) && v <= hi * (1.0 + 1e-12),
                    "v={v} schema={schema} k={k} lo={lo} hi={hi}"
                );
            }
        }
    }

    #[test]
    fn subnormals_and_extremes_have_keys() {
        for v in [f64::MIN_POSITIVE / 8.0, 5e-324, f64::MAX, f64::INFINITY] {
            for s in MIN_SCHEMA..=MAX_SCHEMA {
                let k = key(v, s);
                assert!(k.abs() <= 1100 << s.max(0), "{v} {s} {k}");
            }
        }
    }

    #[test]
    fn observations_land_in_their_buckets_and_counts_add_up() {
        let mut h = NativeHist::new(3, 160);
        for v in [0.0, 1.0, 1.05, 2.0, -3.0, 1e-40] {
            h.observe(v);
        }
        assert_eq!(h.zero_count, 2);
        assert_eq!(h.schema, 3);
        let total: u64 =
            h.positive.counts.iter().sum::<u64>() + h.negative.counts.iter().sum::<u64>();
        assert_eq!(total, 4);
        assert_eq!(h.positive.offset, 0);
        assert_eq!(h.positive.counts.first(), Some(&1)); // 1.0 in (2^-1/8, 1]
        assert_eq!(h.positive.counts.get(1), Some(&1)); // 1.05 in (1, 2^1/8]
        assert_eq!(h.positive.counts.get(8), Some(&1)); // 2.0
        assert_eq!(h.negative.offset, key(3.0, 3));
    }

    #[test]
    fn a_wide_range_halves_the_resolution_and_stays_bounded() {
        let mut h = NativeHist::new(8, 20);
        let mut n = 0u64;
        let mut v = 1e-9;
        while v < 1e9 {
            h.observe(v);
            n += 1;
            v *= 1.37;
        }
        assert!(h.schema < 8);
        assert!(h.positive.counts.len() <= 20, "{}", h.positive.counts.len());
        assert_eq!(h.positive.counts.iter().sum::<u64>(), n);
        // every bucket still holds exactly the values of its range
        let mut check = NativeHist::new(h.schema, usize::MAX);
        let mut v = 1e-9;
        while v < 1e9 {
            check.observe(v);
            v *= 1.37;
        }
        assert_eq!(check.positive, h.positive);
    }

    #[test]
    fn the_whole_f64_range_fits_at_the_coarsest_schema() {
        let mut h = NativeHist::new(8, 1);
        for v in [1e-38, 1.0, f64::MAX, -1e-38, -f64::MAX, 5e-324] {
            h.observe(v);
        }
        assert_eq!(h.schema, MIN_SCHEMA);
        assert!(h.positive.counts.len() <= 140);
        assert_eq!(h.positive.counts.iter().sum::<u64>(), 3);
        assert_eq!(h.negative.counts.iter().sum::<u64>(), 2);
        assert_eq!(h.zero_count, 1); // 5e-324 is under the zero threshold
    }

    #[test]
    fn otlp_points_convert_with_the_index_shift_and_scale_reduction() {
        // OTLP scale 0, offset 0: (1, 2] and (2, 4] → Prometheus keys 1 and 2
        let h = NativeHist::from_otlp(0, 0.0, 3, (0, &[5, 7]), (-1, &[1]), 160).unwrap();
        assert_eq!(h.schema, 0);
        assert_eq!(
            h.positive,
            Dense {
                offset: 1,
                counts: vec![5, 7]
            }
        );
        assert_eq!(
            h.negative,
            Dense {
                offset: 0,
                counts: vec![1]
            }
        );
        assert_eq!(h.zero_count, 3);
        // scale 10 → schema 8: four neighbours merge into one
        let counts = [1u64; 8];
        let h = NativeHist::from_otlp(10, 0.0, 0, (3, &counts), (0, &[]), 160).unwrap();
        assert_eq!(h.schema, 8);
        assert_eq!(h.positive.counts.iter().sum::<u64>(), 8);
        // each merged bucket holds the OTLP buckets whose range it covers:
        // an OTLP bucket's midpoint falls in the schema-8 bucket it went to
        let mut want = Dense::default();
        for (i, c) in counts.iter().enumerate() {
            let mid = 2f64.powf((3.0 + i as f64 + 0.5) / 1024.0);
            want.add(key(mid, 8), *c);
        }
        assert_eq!(h.positive, want);
        // a delta merges at the coarser schema
        let mut a = NativeHist::from_otlp(1, 0.0, 1, (0, &[2, 3]), (0, &[]), 160).unwrap();
        let b = NativeHist::from_otlp(0, 0.0, 2, (0, &[4]), (0, &[1]), 160).unwrap();
        assert!(a.merge(&b));
        assert_eq!(a.schema, 0);
        assert_eq!(a.zero_count, 3);
        assert_eq!(a.positive.counts.iter().sum::<u64>(), 9);
        assert_eq!(a.negative.counts.iter().sum::<u64>(), 1);
        let mut full = NativeHist::from_otlp(0, 0.0, 0, (0, &[u64::MAX]), (0, &[]), 160).unwrap();
        let before = full.clone();
        assert!(!full.merge(&b));
        assert_eq!(full, before);
        // hostile offsets: refused, and far-apart deltas never allocate the gap
        assert!(NativeHist::from_otlp(0, 0.0, 0, (i32::MAX - 5, &[1]), (0, &[]), 160).is_err());
        assert!(NativeHist::from_otlp(21, 0.0, 0, (0, &[1]), (0, &[]), 160).is_err());
        let lo = NativeHist::from_otlp(8, 0.0, 0, (-270_000, &[1]), (0, &[]), 160).unwrap();
        let hi = NativeHist::from_otlp(8, 0.0, 0, (260_000, &[1]), (0, &[]), 160).unwrap();
        let mut m = lo.clone();
        assert!(m.merge(&hi));
        assert!(
            m.positive.counts.len() <= 160,
            "{}",
            m.positive.counts.len()
        );
        assert_eq!(m.positive.counts.iter().sum::<u64>(), 2);
        assert!(m.schema < 8);
        assert!(NativeHist::from_otlp(-5, 0.0, 0, (0, &[1]), (0, &[]), 160).is_err());
        assert!(NativeHist::from_otlp(0, f64::NAN, 0, (0, &[1]), (0, &[]), 160).is_err());
        assert!(NativeHist::from_otlp(0, 0.0, 0, (i32::MAX, &[1, 1]), (0, &[]), 160).is_err());
    }
}
