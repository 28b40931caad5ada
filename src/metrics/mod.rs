//! The metric store (derived, distinct-count and pass-through families),
//! its configuration and its Prometheus encodings. The store holds series;
//! the components' own counters live with the components (and reach
//! `/metrics` through [`crate::telemetry::SelfMetrics`], see [`own`]).

pub mod config;
pub mod encode;
pub mod native;
pub mod own;
pub mod passthrough;
pub mod sanitize;
pub mod series_map;
pub mod sketch;
pub mod snapshot;
pub mod store;

use crate::telemetry::SelfMetrics;
use config::{PassthroughConfig, StoreConfig};
use opentelemetry::KeyValue;
use snapshot::{Kind, Snapshot};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use store::{Budget, Family};

/// [`Distinct`]'s set: keyed 64-bit hashes (`foldhash::quality` with a
/// random seed), when each was last seen and the id's sketch register and
/// rank, in an open-addressing table at most half full. The hashes are used
/// as they are (no second hash), and a hit is usually one probe. 0 marks an
/// empty bucket, so a hash of 0 counts as 1 (two ids merge with odds of
/// 2^-63). Keeping the register and rank here means an id's fleet hash
/// (SipHash-2-4, ~150 instructions) is computed once while the id stays in
/// the window, not once per span.
#[derive(Default)]
struct Seen {
    /// a power of two long, or empty
    buckets: Vec<Bucket>,
    len: usize,
}

/// 16 bytes: the exact hash, the unix second it was last seen (u32: good
/// until 2106) and [`sketch::pack`]ed register and rank.
#[derive(Clone, Copy, Default)]
struct Bucket {
    h: u64,
    t: u32,
    rr: u32,
}

impl Seen {
    /// Marks `h` seen at `now`: its packed register and rank (`rr()` for a
    /// new id), or None when it is new and `cap` is reached.
    #[inline]
    fn insert(&mut self, h: u64, now: u64, cap: usize, rr: impl FnOnce() -> u32) -> Option<u32> {
        let h = h.max(1);
        let t = u32::try_from(now).unwrap_or(u32::MAX);
        if self.buckets.is_empty() {
            self.rebuild(16);
        }
        let mask = self.buckets.len() - 1;
        let mut at = h as usize & mask;
        loop {
            let b = self.buckets.get_mut(at)?;
            if b.h == h {
                b.t = t;
                return Some(b.rr);
            }
            if b.h == 0 {
                if self.len >= cap {
                    return None;
                }
                let rr = rr();
                *b = Bucket { h, t, rr };
                self.len += 1;
                if self.len * 2 > self.buckets.len() {
                    self.rebuild(self.buckets.len() * 2);
                }
                return Some(rr);
            }
            at = (at + 1) & mask;
        }
    }

    /// Keeps the hashes seen after `cutoff` (the table shrinks with them).
    fn retain_after(&mut self, cutoff: u64) {
        let before = self.len;
        for b in &mut self.buckets {
            if b.h != 0 && u64::from(b.t) <= cutoff {
                *b = Bucket::default();
                self.len -= 1;
            }
        }
        if self.len != before {
            self.rebuild((self.len * 2 + 1).next_power_of_two().max(16));
        }
    }

    /// Re-places the live buckets into `n` buckets.
    fn rebuild(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::default(); n]);
        let mask = n - 1;
        for b in old.into_iter().filter(|b| b.h != 0) {
            let mut at = b.h as usize & mask;
            while self.buckets[at].h != 0 {
                at = (at + 1) & mask;
            }
            self.buckets[at] = b;
        }
    }
}

#[cfg(test)]
mod seen_tests {
    use super::Seen;

    #[test]
    fn counts_distinct_hashes_within_cap_and_window() {
        let mut s = Seen::default();
        let id = |h: u64| h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for h in 0..600u64 {
            assert_eq!(s.insert(id(h), h, 600, || h as u32), Some(h as u32));
        }
        assert_eq!(s.len, 600);
        assert_eq!(
            s.insert(id(7), 2000, 600, || unreachable!("known: rr is kept")),
            Some(7),
            "a known hash is refreshed at the cap, its register and rank kept"
        );
        assert_eq!(s.insert(12345, 2000, 600, || 1), None);
        s.retain_after(499);
        assert_eq!(s.len, 101, "ids 500..600 and 7 (refreshed at 2000)");
        for h in 500..600u64 {
            assert_eq!(s.insert(id(h), 3000, 101, || 0), Some(h as u32));
        }
        assert_eq!(s.len, 101);
        s.retain_after(2999);
        assert_eq!(s.len, 100);
    }
}

/// A gauge of distinct values (e.g. user ids) seen within a sliding window,
/// and its fleet sketch ([`sketch`]). Only keyed 64-bit hashes are kept,
/// never the values: for the exact per-pod set a random per-process key,
/// for the sketch the fleet key every pod shares.
pub struct Distinct {
    pub name: String,
    pub help: String,
    /// `store.active_users_window` and `store.max_active_users` (a reload may change them)
    window_s: AtomicU64,
    cap: AtomicUsize,
    pub hasher: foldhash::quality::RandomState,
    /// the sketch's SipHash-2-4 under the fleet key
    pub fleet: sketch::FleetHash,
    /// the fleet key and precision this gauge was made with (a reload that
    /// changes either makes a new gauge)
    pub key: [u8; 16],
    pub precision: u8,
    seen: Mutex<Counted>,
    /// values not tracked because the set was full
    pub overflowed: AtomicU64,
}

/// One id of a batch for [`Distinct::insert`]: its exact (per-process
/// key) hash and where its bytes are in the batch's byte buffer.
#[derive(Clone, Copy)]
pub struct IdRef {
    pub exact: u64,
    pub start: u32,
    pub end: u32,
}

/// The exact set and the sketch, under one lock (one lock per batch).
struct Counted {
    seen: Seen,
    sketch: sketch::Sketch,
}

impl Distinct {
    pub fn new(name: &str, help: &str, window_s: u64, cap: usize, sk: &SketchConfig) -> Self {
        Distinct {
            name: name.into(),
            help: help.into(),
            window_s: AtomicU64::new(window_s),
            cap: AtomicUsize::new(cap),
            hasher: Default::default(),
            fleet: sketch::FleetHash::new(&sk.key),
            key: sk.key,
            precision: sk.precision,
            seen: Mutex::new(Counted {
                seen: Seen::default(),
                sketch: sketch::Sketch::new(sk.precision, window_s),
            }),
            overflowed: AtomicU64::new(0),
        }
    }

    /// Counts a batch of ids seen at `now_s` (their exact hashes, their
    /// bytes in `bytes`). The sketch takes every id, also past the exact
    /// set's cap (its size is fixed); the fleet hash is computed only for
    /// an id the exact set does not hold.
    pub fn insert(&self, batch: &[IdRef], bytes: &[u8], now_s: u64) {
        let mut guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let m = &mut *guard;
        let cap = self.cap.load(Ordering::Relaxed);
        let slice = m.sketch.slice(now_s);
        let p = self.precision;
        for r in batch {
            let id = bytes
                .get(r.start as usize..r.end as usize)
                .unwrap_or_default();
            let rr = || sketch::pack(self.fleet.hash(id), p);
            let packed = match m.seen.insert(r.exact, now_s, cap, rr) {
                Some(packed) => packed,
                None => {
                    self.overflowed.fetch_add(1, Ordering::Relaxed);
                    rr()
                }
            };
            m.sketch.insert_packed(slice, packed);
        }
    }

    /// A new window and cap (a config reload); a new window empties the
    /// sketch (its slices are cut from the window), which refills as ids
    /// arrive.
    pub fn set_limits(&self, window_s: u64, cap: usize) {
        self.window_s.store(window_s, Ordering::Relaxed);
        self.cap.store(cap, Ordering::Relaxed);
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if m.sketch.window_s() != window_s.max(1) {
            m.sketch = sketch::Sketch::new(m.sketch.precision(), window_s);
        }
    }

    /// Distinct values seen within the window (older ones are forgotten).
    pub fn count(&self, now_s: u64) -> usize {
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let cutoff = now_s.saturating_sub(self.window_s.load(Ordering::Relaxed));
        m.seen.retain_after(cutoff);
        m.seen.len
    }

    /// The sketch's registers at `now_s` (`2^p` ranks, 0 for none).
    pub fn registers(&self, now_s: u64) -> Vec<u8> {
        let m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        m.sketch.registers(now_s)
    }
}

/// The sketch's fleet key and precision (`store.distinct_key_file`,
/// `store.distinct_sketch_precision`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SketchConfig {
    pub key: [u8; 16],
    pub precision: u8,
}

/// The derived families and distinct-count gauges of the rules in force;
/// a config reload replaces the whole set (reusing unchanged families).
#[derive(Default)]
pub struct Derived {
    pub families: Vec<Arc<Family>>,
    pub distinct: Vec<Arc<Distinct>>,
}

/// The fleet key of `store.distinct_key_file` (the default key without
/// one); `fallback` if the file cannot be read now (validation read it).
fn sketch_key(st: &StoreConfig, fallback: [u8; 16]) -> [u8; 16] {
    match st.sketch_key() {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "distinct-count sketch: fleet key unreadable, the previous key stays");
            fallback
        }
    }
}

/// Everything `/metrics` shows.
pub struct Store {
    /// `store.*` limits; atomics so that a config reload can change them
    cap: AtomicUsize,
    ttl_s: AtomicU64,
    /// what the rules derive; read by scrapes and expiry, replaced on reload
    /// (the hot path writes through the deriver's own copy)
    derived: Mutex<Arc<Derived>>,
    window_s: AtomicU64,
    max_distinct: AtomicUsize,
    /// the fleet key and precision of new distinct-count gauges
    sketch: Mutex<SketchConfig>,
    pub passthrough: passthrough::Passthrough,
    /// the global series bound, shared by every family
    pub budget: Arc<Budget>,
}

impl Store {
    /// An empty store with the `store:` limits and `passthrough:` switches.
    pub fn new(st: &StoreConfig, pt: &PassthroughConfig) -> Self {
        let budget = Arc::new(Budget::new(st.max_series, st.max_series_bytes));
        Store {
            cap: AtomicUsize::new(st.max_series_per_metric),
            ttl_s: AtomicU64::new(st.series_ttl.0.as_secs().max(1)),
            derived: Mutex::new(Arc::new(Derived::default())),
            window_s: AtomicU64::new(st.active_users_window.0.as_secs().max(1)),
            max_distinct: AtomicUsize::new(st.max_active_users),
            sketch: Mutex::new(SketchConfig {
                key: sketch_key(st, sketch::DEFAULT_KEY),
                precision: st.distinct_sketch_precision,
            }),
            passthrough: passthrough::Passthrough::new(pt, st, budget.clone()),
            budget,
        }
    }

    /// Everything the store shows at this instant, followed by `own` (the
    /// sidecar's own families): the derived families with their series,
    /// the distinct-count gauges, the pass-through families.
    pub fn snapshot(&self, own: Vec<snapshot::Family>) -> Snapshot {
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let now = (timestamp_ms / 1000) as u64;
        let derived = self.derived();
        let mut families = Vec::with_capacity(derived.families.len() + derived.distinct.len() + 64);
        for f in &derived.families {
            families.extend(f.snapshot());
        }
        for x in &derived.distinct {
            let mut f = snapshot::Family::new(x.name.clone(), Kind::Gauge, x.help.clone());
            f.value(&[], x.count(now) as f64);
            families.push(f);
            families.extend(sketch::families(x, now));
        }
        self.passthrough.snapshot(&mut families, now);
        families.extend(own);
        Snapshot {
            families,
            timestamp_ms,
        }
    }

    /// The derived families and gauges in force.
    pub fn derived(&self) -> Arc<Derived> {
        self.derived
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a rule set's families and gauges in force (start-up, reload).
    pub fn set_derived(&self, d: Arc<Derived>) {
        *self.derived.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }

    /// A new distinct-count gauge with the store's window and cap.
    pub fn new_distinct(&self, name: &str, help: &str) -> Distinct {
        Distinct::new(
            name,
            help,
            self.window_s.load(Ordering::Relaxed),
            self.max_distinct.load(Ordering::Relaxed),
            &self.sketch_config(),
        )
    }

    /// The fleet key and precision in force.
    pub fn sketch_config(&self) -> SketchConfig {
        *self.sketch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `store.max_series_per_metric`, for a new family.
    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }

    /// `store.series_ttl` in seconds.
    pub fn ttl_s(&self) -> u64 {
        self.ttl_s.load(Ordering::Relaxed)
    }

    /// Puts new `store.*` limits in force (a config reload): for new series
    /// and families, and for those that exist; what exceeds a lowered bound
    /// stays until it expires.
    pub fn set_limits(&self, s: &StoreConfig) {
        let window = s.active_users_window.0.as_secs().max(1);
        self.cap.store(s.max_series_per_metric, Ordering::Relaxed);
        self.ttl_s
            .store(s.series_ttl.0.as_secs().max(1), Ordering::Relaxed);
        self.window_s.store(window, Ordering::Relaxed);
        self.max_distinct
            .store(s.max_active_users, Ordering::Relaxed);
        self.budget.set_limits(s.max_series, s.max_series_bytes);
        self.passthrough.set_limits(s);
        {
            let mut sk = self.sketch.lock().unwrap_or_else(|p| p.into_inner());
            *sk = SketchConfig {
                key: sketch_key(s, sk.key),
                precision: s.distinct_sketch_precision,
            };
        }
        let d = self.derived();
        for f in &d.families {
            f.set_cap(s.max_series_per_metric);
        }
        for x in &d.distinct {
            x.set_limits(window, s.max_active_users);
        }
    }

    /// Drops series not updated within the TTL; returns how many.
    pub fn expire(&self, now_s: u64) -> usize {
        let cutoff = now_s.saturating_sub(self.ttl_s());
        let mut n = 0;
        for f in &self.derived().families {
            n += f.expire(cutoff);
        }
        n + self.passthrough.expire(cutoff)
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Store {
    /// The store's own metrics: series per metric, overflow and expiry,
    /// and the global series budget.
    pub fn declare(t: &SelfMetrics, store: &Arc<Store>) {
        let metric = |name: &str| [KeyValue::new("metric", name.to_string())];
        let s = store.clone();
        t.gauge(
            "geometra_sidecar_series",
            "Live series per metric.",
            "",
            move |o| {
                for f in &s.derived().families {
                    o.observe(f.series_count() as f64, &metric(&f.name));
                }
                for (name, n) in s.passthrough.series_counts() {
                    o.observe(n as f64, &metric(&name));
                }
            },
        );
        let s = store.clone();
        t.counter(
            "geometra_sidecar_series_overflow_total",
            "Points recorded in a metric's overflow series because it reached its series cap.",
            "",
            move |o| {
                let d = s.derived();
                for f in &d.families {
                    o.observe(load(&f.overflowed), &metric(&f.name));
                }
                for x in &d.distinct {
                    o.observe(load(&x.overflowed), &metric(&x.name));
                }
                for (name, n) in s.passthrough.overflow_counts() {
                    o.observe(n, &metric(&name));
                }
            },
        );
        let s = store.clone();
        t.counter(
            "geometra_sidecar_series_expired_total",
            "Series dropped because they were not updated within store.series_ttl.",
            "",
            move |o| {
                for f in &s.derived().families {
                    o.observe(load(&f.expired), &metric(&f.name));
                }
            },
        );
        Budget::declare(t, &store.budget);
    }
}
