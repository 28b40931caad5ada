//! The metric store: families of series keyed by their encoded label values,
//! with a per-family series cap and a global budget shared by all families
//! (one overflow series per family past either), and expiry of series that
//! stopped being updated.
//!
//! Each family sits behind its own mutex, taken once per request by the
//! derive stage (which batches a whole request's updates first), so the
//! per-span cost is a hash lookup and plain adds, with no atomics and no
//! allocation once a series exists.

use super::native::NativeHist;
use super::series_map::SeriesMap;
use super::snapshot as snap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// hashbrown directly (std's map is the same table) for `entry_ref`: one
/// hash and one compare per update, with the owned key made only on insert.
pub type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// The type of a family, as Prometheus sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Explicit upper bounds, ascending, without +Inf.
    Histogram(Vec<f64>),
    /// Quantiles, count and sum (pass-through OTLP summaries only).
    Summary,
}

/// How a histogram family's series keep their buckets: classic (the
/// family's bounds), native (exponential, `store.histograms`), or both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistMode {
    pub classic: bool,
    /// starting schema and most buckets per side of native histograms
    pub native: Option<(i32, usize)>,
}

impl Default for HistMode {
    fn default() -> Self {
        HistMode {
            classic: true,
            native: None,
        }
    }
}

impl Kind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// How the label names of a family are known.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelNames {
    /// Fixed names; a series key holds only the values, in this order.
    Fixed(Vec<String>),
    /// Names differ per series (pass-through metrics); a key holds name, value pairs.
    InKey,
}

/// An exemplar on a histogram bucket (OpenMetrics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub value: f64,
    /// unix nanoseconds
    pub time: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    /// Per bucket (not cumulative), the last one is +Inf; empty when the
    /// series keeps no classic buckets (native only).
    pub counts: Box<[u64]>,
    pub sum: f64,
    pub count: u64,
    /// Bounds of this series, for pass-through histograms whose bounds differ
    /// from the family's (None: the family's).
    pub bounds: Option<Box<[f64]>>,
    pub exemplars: Option<Box<[Option<Exemplar>]>>,
    /// Native (exponential) buckets, if the family keeps them.
    pub native: Option<Box<NativeHist>>,
}

impl Hist {
    fn new(buckets: Option<usize>, native: Option<(i32, usize)>) -> Self {
        Hist {
            counts: buckets.map_or_else(Vec::new, |b| vec![0; b + 1]).into(),
            sum: 0.0,
            count: 0,
            bounds: None,
            exemplars: None,
            native: native.map(|(schema, max)| Box::new(NativeHist::new(schema, max))),
        }
    }
}

/// A pass-through summary point.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SummaryValue {
    pub count: u64,
    pub sum: f64,
    /// (quantile, value), ascending by quantile
    pub quantiles: Box<[(f64, f64)]>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Hist(Box<Hist>),
    Summary(Box<SummaryValue>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub value: Value,
    /// unix seconds of the last update
    pub updated: u64,
    /// unix milliseconds of creation, for `_created` (OpenMetrics)
    pub created_ms: u64,
}

pub struct FamilyInner {
    pub series: SeriesMap,
    pub overflow: Option<Series>,
}

/// The global bound on series across all families (`store.max_series`) and
/// on their estimated size in the exposition (`store.max_series_bytes`):
/// each series is charged its lines times (name + labels + a number).
/// Taken when a series is created, given back when it expires.
///
/// A *share* ([`Budget::share`]) is a smaller budget inside another one:
/// pass-through series take from their share and from the global budget,
/// so an application's metrics (whose labels the sidecar does not choose)
/// can never take the room the derived metrics, the dashboards' and the
/// alerts', need (`store.passthrough_share_percent`).
pub struct Budget {
    max_series: AtomicUsize,
    max_bytes: AtomicUsize,
    series: AtomicUsize,
    bytes: AtomicUsize,
    /// points sent to an overflow series because this budget was spent
    pub refused: AtomicU64,
    /// the budget a share is part of, taken from as well
    parent: Option<Arc<Budget>>,
}

impl Budget {
    pub fn new(max_series: usize, max_bytes: usize) -> Self {
        Budget {
            max_series: AtomicUsize::new(max_series),
            max_bytes: AtomicUsize::new(max_bytes),
            series: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            parent: None,
        }
    }

    pub fn unlimited() -> Self {
        Budget::new(usize::MAX, usize::MAX)
    }

    /// A budget of at most `max_series` and `max_bytes` inside `parent`.
    pub fn share(parent: Arc<Budget>, max_series: usize, max_bytes: usize) -> Self {
        Budget {
            parent: Some(parent),
            ..Budget::new(max_series, max_bytes)
        }
    }

    /// Takes one series of `cost` bytes, if both bounds allow (the
    /// parent's first, for a share); a refusal is counted by the budget
    /// that refused: the global one when the whole store is full.
    fn take(&self, cost: usize) -> bool {
        if let Some(p) = &self.parent {
            if !p.take(cost) {
                return false;
            }
        }
        if !self.take_own(cost) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = &self.parent {
                p.give_back(1, cost);
            }
            return false;
        }
        true
    }

    fn take_own(&self, cost: usize) -> bool {
        let n = self.series.fetch_add(1, Ordering::Relaxed);
        let b = self.bytes.fetch_add(cost, Ordering::Relaxed);
        if n >= self.max_series.load(Ordering::Relaxed)
            || b.saturating_add(cost) > self.max_bytes.load(Ordering::Relaxed)
        {
            self.give_back_own(1, cost);
            return false;
        }
        true
    }

    /// New bounds (a config reload); series past them stay until they expire.
    pub fn set_limits(&self, max_series: usize, max_bytes: usize) {
        self.max_series.store(max_series, Ordering::Relaxed);
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    fn give_back(&self, series: usize, bytes: usize) {
        self.give_back_own(series, bytes);
        if let Some(p) = &self.parent {
            p.give_back(series, bytes);
        }
    }

    fn give_back_own(&self, series: usize, bytes: usize) {
        self.series.fetch_sub(series, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Live series and their charged bytes.
    pub fn used(&self) -> (usize, usize) {
        (
            self.series.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// The budget's self-metrics: points refused, series and bytes in use.
    pub fn declare(t: &crate::telemetry::SelfMetrics, b: &Arc<Budget>) {
        let x = b.clone();
        t.counter(
            "geometra_sidecar_series_global_overflow_total",
            "Points recorded in an overflow series because store.max_series or store.max_series_bytes was reached.",
            "",
            move |o| o.observe(x.refused.load(Ordering::Relaxed), &[]),
        );
        let x = b.clone();
        t.gauge(
            "geometra_sidecar_store_series",
            "Live series of all metrics (bounded by store.max_series).",
            "",
            move |o| o.observe(x.used().0 as f64, &[]),
        );
        let x = b.clone();
        t.gauge(
            "geometra_sidecar_store_series_bytes",
            "Estimated exposition bytes of all series (bounded by store.max_series_bytes).",
            "",
            move |o| o.observe(x.used().1 as f64, &[]),
        );
    }
}

pub struct Family {
    pub name: String,
    pub help: String,
    pub unit: String,
    pub kind: Kind,
    /// classic and/or native buckets (histograms)
    pub hist: HistMode,
    pub labels: LabelNames,
    /// series at most (`store.max_series_per_metric`; a reload may change it)
    cap: AtomicUsize,
    inner: Mutex<FamilyInner>,
    /// points that went to the overflow series
    pub overflowed: AtomicU64,
    /// series dropped by expiry
    pub expired: AtomicU64,
    /// points refused because a label value was not valid UTF-8
    pub invalid: AtomicU64,
    budget: Arc<Budget>,
    /// exposition lines per series (for the budget)
    lines: usize,
    /// a histogram's bounds padded with +Inf to a power of two, for a
    /// branchless search
    search: Box<[f64]>,
    /// set (under the family's lock) when a pass-through family with no
    /// series left is removed; later updates go to its successor
    retired: AtomicBool,
}

/// A family locked for a batch of updates.
pub struct Locked<'f> {
    family: &'f Family,
    inner: MutexGuard<'f, FamilyInner>,
    now_s: u64,
}

impl Family {
    pub fn new(
        name: &str,
        help: &str,
        unit: &str,
        kind: Kind,
        labels: LabelNames,
        cap: usize,
    ) -> Self {
        Family {
            name: name.to_string(),
            help: help.to_string(),
            unit: unit.to_string(),
            labels,
            cap: AtomicUsize::new(cap),
            inner: Mutex::new(FamilyInner {
                series: SeriesMap::default(),
                overflow: None,
            }),
            overflowed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            lines: match &kind {
                Kind::Histogram(b) => b.len() + 5,
                Kind::Counter => 2,
                Kind::Gauge => 1,
                Kind::Summary => 8,
            },
            search: match &kind {
                Kind::Histogram(b) => padded(b),
                _ => Box::new([]),
            },
            kind,
            hist: HistMode::default(),
            budget: Arc::new(Budget::unlimited()),
            retired: AtomicBool::new(false),
        }
    }

    /// Charges this family's series to the store's global budget.
    /// Same name, help, unit, kind (buckets included) and labels: a
    /// reloaded rule of this shape keeps the family's series.
    pub fn same_shape(&self, o: &Family) -> bool {
        self.name == o.name
            && self.help == o.help
            && self.unit == o.unit
            && self.kind == o.kind
            && self.hist == o.hist
            && self.labels == o.labels
    }

    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }

    /// A new series cap (a config reload); series past it stay until they expire.
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Classic and/or native buckets for a histogram family. A native
    /// series is charged for its widest buckets (16 bytes each, both sides).
    pub fn with_hist_mode(mut self, mode: HistMode) -> Self {
        if let Kind::Histogram(b) = &self.kind {
            let classic = if mode.classic { b.len() + 1 } else { 0 };
            let native = mode.native.map_or(0, |(_, max)| 2 + max / 8);
            self.lines = classic + 4 + native;
        }
        self.hist = mode;
        self
    }

    pub fn with_budget(mut self, b: Arc<Budget>) -> Self {
        self.budget = b;
        self
    }

    /// What a series with this key costs in the budget.
    fn cost(&self, key_len: usize) -> usize {
        self.lines * (self.name.len() + key_len + 32)
    }

    /// Retires the family if it holds no series; true if it did.
    pub fn retire_if_empty(&self) -> bool {
        let g = self.lock(0);
        let empty = g.inner.series.is_empty() && g.inner.overflow.is_none();
        if empty {
            self.retired.store(true, Ordering::Relaxed);
        }
        empty
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    pub fn lock(&self, now_s: u64) -> Locked<'_> {
        // A poisoned lock only means another thread panicked mid-update; the
        // numbers are still the best we have.
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Locked {
            family: self,
            inner,
            now_s,
        }
    }

    /// Drops series not updated since `cutoff_s`; returns how many.
    pub fn expire(&self, cutoff_s: u64) -> usize {
        let mut g = self.lock(0);
        let before = g.inner.series.len();
        let mut freed = 0;
        g.inner.series.retain(|k, s| {
            let keep = s.updated >= cutoff_s;
            if !keep {
                freed += self.cost(k.len());
            }
            keep
        });
        if g.inner
            .overflow
            .as_ref()
            .is_some_and(|s| s.updated < cutoff_s)
        {
            g.inner.overflow = None;
        }
        let n = before - g.inner.series.len();
        self.budget.give_back(n, freed);
        self.expired.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    pub fn series_count(&self) -> usize {
        let g = self.lock(0);
        g.inner.series.len() + usize::from(g.inner.overflow.is_some())
    }

    /// Runs `f` on the family's content (for encoding).
    pub fn with<R>(&self, f: impl FnOnce(&FamilyInner) -> R) -> R {
        let g = self.lock(0);
        f(&g.inner)
    }

    fn buckets(&self) -> usize {
        match &self.kind {
            Kind::Histogram(b) => b.len(),
            _ => 0,
        }
    }

    fn fresh(&self, now_s: u64) -> Series {
        let classic = self.hist.classic.then(|| self.buckets());
        let value = match self.kind {
            Kind::Histogram(_) => Value::Hist(Box::new(Hist::new(classic, self.hist.native))),
            Kind::Summary => Value::Summary(Box::default()),
            _ => Value::Scalar(0.0),
        };
        Series {
            value,
            updated: now_s,
            created_ms: now_s.saturating_mul(1000),
        }
    }
}

/// The snapshot form of an exemplar.
impl From<Exemplar> for snap::Exemplar {
    fn from(e: Exemplar) -> Self {
        snap::Exemplar {
            trace_id: e.trace_id,
            span_id: e.span_id,
            value: e.value,
            time_ns: e.time,
        }
    }
}

impl Family {
    /// Room in `out` for the series `all`: their label pairs and text (a
    /// key's bytes are its parts, each after a 2-byte length: a little more).
    fn reserve(&self, out: &mut snap::Family, all: &[(&[u8], &Series)]) {
        let bytes: usize = all.iter().map(|(k, _)| k.len()).sum();
        let pairs = match &self.labels {
            LabelNames::Fixed(names) => names.len() * all.len(),
            // as many pairs as the first series has, a guess
            LabelNames::InKey => {
                all.first().map_or(0, |(k, _)| key_parts(k).count() / 2) * all.len()
            }
        };
        let hist = matches!(self.kind, Kind::Histogram(_));
        out.reserve(all.len() + 1, pairs, bytes, hist);
    }

    /// This family in a snapshot, series sorted by their labels; None if it
    /// has no series. Holds the family's lock while it copies.
    pub fn snapshot(&self) -> Option<snap::Family> {
        let kind = match self.kind {
            Kind::Counter => snap::Kind::Counter,
            Kind::Gauge => snap::Kind::Gauge,
            Kind::Histogram(_) => snap::Kind::Histogram,
            Kind::Summary => snap::Kind::Summary,
        };
        let bounds: Arc<[f64]> = match &self.kind {
            Kind::Histogram(b) => b.as_slice().into(),
            _ => Arc::new([]),
        };
        let mut scratch = Scratch {
            bounds,
            own: None,
            exemplars: Vec::new(),
        };
        self.with(|inner| {
            if inner.series.is_empty() && inner.overflow.is_none() {
                return None;
            }
            let mut out = snap::Family::new(self.name.clone(), kind, self.help.clone());
            out.unit = self.unit.clone();
            let mut all: Vec<(&[u8], &Series)> = inner.series.iter().collect();
            self.reserve(&mut out, &all);
            all.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, s) in all {
                let start = out.labels.next();
                match &self.labels {
                    LabelNames::Fixed(names) => {
                        for (n, v) in names.iter().zip(key_parts(k)) {
                            out.labels.push(n, v);
                        }
                    }
                    LabelNames::InKey => {
                        let mut it = key_parts(k);
                        while let (Some(n), Some(v)) = (it.next(), it.next()) {
                            out.labels.push(n, v);
                        }
                    }
                }
                let labels = start..out.labels.next();
                let point = s.value.point(&mut out, &mut scratch);
                out.series.push(snap::Series {
                    labels,
                    point,
                    created_ms: Some(s.created_ms as i64),
                });
            }
            if let Some(s) = &inner.overflow {
                let point = s.value.point(&mut out, &mut scratch);
                out.push(
                    &[("otel_metric_overflow", "true")],
                    point,
                    Some(s.created_ms as i64),
                );
            }
            Some(out)
        })
    }
}

impl Value {
    /// The snapshot point, its numbers in `out`'s arena; `bounds` are the
    /// family's (shared by its series), `own` the last series' own bounds
    /// (pass-through), reused when equal; `ex` scratch for exemplars.
    fn point(&self, out: &mut snap::Family, scratch: &mut Scratch) -> snap::Point {
        match self {
            Value::Scalar(v) => snap::Point::Value(*v),
            Value::Hist(h) => {
                scratch.exemplars.clear();
                if let Some(x) = &h.exemplars {
                    scratch
                        .exemplars
                        .extend(x.iter().map(|e| e.map(Into::into)));
                }
                let bounds = match &h.bounds {
                    Some(b) => shared(&mut scratch.own, b),
                    None => scratch.bounds.clone(),
                };
                out.histogram_point(snap::Histogram {
                    count: h.count,
                    sum: h.sum,
                    // no classic buckets: a native-only series
                    classic: (!h.counts.is_empty()).then_some(snap::Classic {
                        bounds: &bounds,
                        counts: &h.counts,
                        exemplars: &scratch.exemplars,
                    }),
                    native: h.native.as_ref().map(|n| n.to_snapshot()),
                })
            }
            Value::Summary(s) => out.summary_point(snap::Summary {
                count: s.count,
                sum: s.sum,
                quantiles: &s.quantiles,
            }),
        }
    }
}

/// What a family's snapshot reuses from series to series.
struct Scratch {
    /// the family's bounds
    bounds: Arc<[f64]>,
    /// the last pass-through series' own bounds
    own: Option<Arc<[f64]>>,
    exemplars: Vec<Option<snap::Exemplar>>,
}

/// `b` shared: the previous series' bounds when they are equal (the series
/// of a pass-through metric mostly have the same), so a snapshot allocates
/// once per distinct set of bounds rather than once per series.
fn shared(last: &mut Option<Arc<[f64]>>, b: &[f64]) -> Arc<[f64]> {
    match last {
        Some(a) if a[..] == *b => a.clone(),
        _ => last.insert(Arc::from(b)).clone(),
    }
}

/// Ascending bounds padded with +Inf to a power of two (at least one).
fn padded(bounds: &[f64]) -> Box<[f64]> {
    let n = (bounds.len() + 1).next_power_of_two();
    let mut p = vec![f64::INFINITY; n];
    p[..bounds.len()].copy_from_slice(bounds);
    p.into()
}

/// The index of the first bound >= v (Prometheus' `le` is inclusive): how
/// many bounds are < v, by halving the padded bounds without a branch on
/// the data (the padding is never < v; a NaN is below every bound).
#[inline(always)]
fn bucket(padded: &[f64], v: f64) -> usize {
    // up to 15 bounds (the defaults have 14): four fixed steps
    if let Ok(p) = <&[f64; 16]>::try_from(padded) {
        let mut i = usize::from(p[7] < v) * 8;
        i += usize::from(p[(i + 3) & 15] < v) * 4;
        i += usize::from(p[(i + 1) & 15] < v) * 2;
        return i + usize::from(p[i & 15] < v);
    }
    let mut i = 0;
    let mut step = padded.len() / 2;
    while step > 0 {
        i += step * usize::from(padded.get(i + step - 1).is_some_and(|b| *b < v));
        step /= 2;
    }
    i
}

/// Checks that a new key may become a series: label values must be UTF-8.
fn key_is_valid(key: &[u8]) -> bool {
    let mut rest = key;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            return false;
        };
        let len = u16::from_le_bytes(*len) as usize;
        if tail.len() < len || std::str::from_utf8(&tail[..len]).is_err() {
            return false;
        }
        rest = &tail[len..];
    }
    true
}

/// A series for a key the family does not hold yet: a new one if the key
/// is valid and both the cap and the budget allow, else the overflow series
/// (None for a key that is not UTF-8). Out of line: rare after warm-up.
#[cold]
#[inline(never)]
fn create<'a>(
    fam: &Family,
    series: &'a mut SeriesMap,
    overflow: &'a mut Option<Series>,
    hash: u64,
    bucket: usize,
    key: &[u8],
    now: u64,
) -> Option<&'a mut Series> {
    let len = series.len();
    if !key_is_valid(key) {
        fam.invalid.fetch_add(1, Ordering::Relaxed);
        None
    } else if len < fam.cap() && fam.budget.take(fam.cost(key.len())) {
        Some(series.insert(hash, bucket, key, fam.fresh(now)))
    } else {
        fam.overflowed.fetch_add(1, Ordering::Relaxed);
        let s = overflow.get_or_insert_with(|| fam.fresh(now));
        s.updated = now;
        Some(s)
    }
}

impl<'f> Locked<'f> {
    /// The series for `key`, created if the cap allows, else the overflow series.
    #[inline(always)]
    fn series(&mut self, key: &[u8]) -> Option<&mut Series> {
        let now = self.now_s;
        let fam = self.family;
        let FamilyInner { series, overflow } = &mut *self.inner;
        let hash = series.hash(key);
        match series.find(hash, key) {
            Ok(i) => {
                let s = series.at(i)?;
                s.updated = now;
                Some(s)
            }
            Err(bucket) => create(fam, series, overflow, hash, bucket, key, now),
        }
    }

    /// Adds to a counter (or gauge). Returns false when the key was not valid UTF-8.
    #[inline]
    pub fn add(&mut self, key: &[u8], v: f64) -> bool {
        let Some(s) = self.series(key) else {
            return false;
        };
        if let Value::Scalar(x) = &mut s.value {
            *x += v;
        }
        true
    }

    /// Adds to a counter unless the total would stop being finite.
    pub fn add_finite(&mut self, key: &[u8], v: f64) -> bool {
        let Some(s) = self.series(key) else {
            return false;
        };
        match &mut s.value {
            Value::Scalar(x) if (*x + v).is_finite() => {
                *x += v;
                true
            }
            _ => false,
        }
    }

    /// Sets a gauge (or a cumulative counter from pass-through).
    pub fn set(&mut self, key: &[u8], v: f64) -> bool {
        let Some(s) = self.series(key) else {
            return false;
        };
        if let Value::Scalar(x) = &mut s.value {
            *x = v;
        }
        true
    }

    /// Records one observation in a histogram, with an optional exemplar.
    #[inline]
    pub fn observe(&mut self, key: &[u8], v: f64, ex: Option<Exemplar>) -> bool {
        let bounds: &[f64] = match &self.family.kind {
            Kind::Histogram(b) => b,
            _ => return false,
        };
        let idx = bucket(&self.family.search, v);
        let nb = bounds.len();
        let Some(s) = self.series(key) else {
            return false;
        };
        if let Value::Hist(h) = &mut s.value {
            h.count += 1;
            h.sum += v;
            if let Some(n) = &mut h.native {
                n.observe(v);
            }
            let Some(c) = h.counts.get_mut(idx) else {
                return true; // native only
            };
            *c += 1;
            if let Some(e) = ex {
                let ex = h.exemplars.get_or_insert_with(|| vec![None; nb + 1].into());
                if let Some(slot) = ex.get_mut(idx) {
                    *slot = Some(e);
                }
            }
        }
        true
    }

    /// Replaces or merges a whole histogram (pass-through). With `delta`, the
    /// counts are added when the bounds match (a reset otherwise). The
    /// caller has checked the point (bounds, counts, count, sum); false when
    /// a delta would wrap a count past 2^64 or make the sum non-finite
    /// (nothing is changed then).
    pub fn merge_hist(
        &mut self,
        key: &[u8],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
        count: u64,
        delta: bool,
    ) -> bool {
        if counts.len() != bounds.len() + 1 {
            return false;
        }
        let Some(s) = self.series(key) else {
            return false;
        };
        let Value::Hist(h) = &mut s.value else {
            return false;
        };
        let same = h.bounds.as_deref() == Some(bounds) && h.counts.len() == counts.len();
        if delta && same {
            let merged: Option<Vec<u64>> = h
                .counts
                .iter()
                .zip(counts)
                .map(|(a, b)| a.checked_add(*b))
                .collect();
            let total = h.count.checked_add(count);
            match (merged, total) {
                (Some(m), Some(t)) if (h.sum + sum).is_finite() => {
                    h.counts = m.into();
                    h.count = t;
                    h.sum += sum;
                }
                _ => return false,
            }
        } else {
            h.counts = counts.into();
            h.bounds = Some(bounds.into());
            h.sum = sum;
            h.count = count;
        }
        true
    }

    /// Replaces (cumulative) or adds to (delta) a series' native buckets
    /// (pass-through exponential histograms). False when a delta would wrap
    /// a count or make the sum non-finite (nothing changed then).
    pub fn merge_native(
        &mut self,
        key: &[u8],
        n: NativeHist,
        sum: f64,
        count: u64,
        delta: bool,
    ) -> bool {
        let Some(s) = self.series(key) else {
            return false;
        };
        let Value::Hist(h) = &mut s.value else {
            return false;
        };
        match (&mut h.native, delta) {
            (Some(old), true) => {
                let Some(total) = h.count.checked_add(count) else {
                    return false;
                };
                if !(h.sum + sum).is_finite() || !old.merge(&n) {
                    return false;
                }
                h.count = total;
                h.sum += sum;
            }
            _ => {
                h.native = Some(Box::new(n));
                h.count = count;
                h.sum = sum;
            }
        }
        true
    }

    /// Sets a summary series (pass-through; summaries are cumulative).
    pub fn set_summary(&mut self, key: &[u8], v: SummaryValue) -> bool {
        let Some(s) = self.series(key) else {
            return false;
        };
        match &mut s.value {
            Value::Summary(x) => {
                **x = v;
                true
            }
            _ => false,
        }
    }

    pub fn family(&self) -> &'f Family {
        self.family
    }

    pub fn len(&self) -> usize {
        self.inner.series.len()
    }
    pub fn is_empty(&self) -> bool {
        self.inner.series.is_empty()
    }
}

/// Appends one label value to a series key: u16 length, then the bytes.
/// Callers refuse values longer than `store.max_label_value_bytes` (at most
/// `MAX_LABEL_VALUE_BYTES`); a longer one is cut here rather than let the
/// length wrap (a cut inside a character fails the UTF-8 check later).
#[inline]
pub fn push_key_part(key: &mut Vec<u8>, v: &[u8]) {
    let v = &v[..v.len().min(u16::MAX as usize)];
    key.extend_from_slice(&(v.len() as u16).to_le_bytes());
    key.extend_from_slice(v);
}

/// The largest `store.max_label_value_bytes` the config accepts (the key
/// encoding itself holds up to 65,535 bytes per part).
pub const MAX_LABEL_VALUE_BYTES: usize = 16_384;

/// Iterates the parts of a series key.
pub fn key_parts(key: &[u8]) -> impl Iterator<Item = &str> {
    let mut rest = key;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = u16::from_le_bytes(*len) as usize;
        let part = tail.get(..len)?;
        rest = &tail[len..];
        // keys were checked to be UTF-8 when their series was created
        std::str::from_utf8(part).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[&str]) -> Vec<u8> {
        let mut k = Vec::new();
        for p in parts {
            push_key_part(&mut k, p.as_bytes());
        }
        k
    }

    #[test]
    fn a_share_takes_from_its_parent_and_leaves_the_rest() {
        let global = Arc::new(Budget::new(4, 1000));
        let share = Budget::share(global.clone(), 3, 1000);
        assert!(share.take(10) && share.take(10) && share.take(10));
        assert!(!share.take(10), "past the share");
        assert_eq!(share.refused.load(Ordering::Relaxed), 1);
        assert_eq!(global.used(), (3, 30), "the refused one gave its take back");
        // the rest of the global budget is still there for others
        assert!(global.take(10));
        assert!(!global.take(10));
        share.give_back(1, 10);
        assert_eq!(global.used(), (3, 30));
        assert!(global.take(10));
        // the share has room, the global budget does not: refused, counted
        // by the global budget, nothing kept by the share
        assert!(!share.take(10));
        assert_eq!(global.refused.load(Ordering::Relaxed), 2);
        assert_eq!(share.refused.load(Ordering::Relaxed), 1);
        assert_eq!(share.used(), (2, 20));
        // bytes bound the same way
        let by_bytes = Budget::share(Arc::new(Budget::new(100, 1000)), 100, 25);
        assert!(by_bytes.take(20) && !by_bytes.take(10));
    }

    #[test]
    fn cap_sends_new_series_to_overflow_and_counts() {
        let f = Family::new(
            "c",
            "",
            "",
            Kind::Counter,
            LabelNames::Fixed(vec!["a".into()]),
            2,
        );
        let mut g = f.lock(10);
        for v in ["x", "y", "z", "w", "x"] {
            assert!(g.add(&key(&[v]), 1.0));
        }
        assert_eq!(g.len(), 2);
        drop(g);
        assert_eq!(f.overflowed.load(Ordering::Relaxed), 2);
        f.with(|i| {
            assert_eq!(
                i.series.get(&key(&["x"])[..]).map(|s| s.value.clone()),
                Some(Value::Scalar(2.0))
            );
            assert_eq!(
                i.overflow.as_ref().map(|s| s.value.clone()),
                Some(Value::Scalar(2.0))
            );
        });
    }

    #[test]
    fn bucket_search_agrees_with_partition_point() {
        let values = [
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            0.005,
            0.0051,
            0.3,
            1.0,
            10.0,
            11.0,
        ];
        for n in 0..20usize {
            let bounds: Vec<f64> = (0..n).map(|i| 0.005 * (1 << i) as f64).collect();
            let p = padded(&bounds);
            let probes = values.iter().chain(&bounds).copied();
            for v in probes.chain([f64::INFINITY, f64::NAN]) {
                assert_eq!(bucket(&p, v), bounds.partition_point(|b| *b < v), "{n} {v}");
            }
        }
    }

    #[test]
    fn expiry_drops_only_stale_series() {
        let f = Family::new(
            "c",
            "",
            "",
            Kind::Counter,
            LabelNames::Fixed(vec!["a".into()]),
            10,
        );
        f.lock(100).add(&key(&["old"]), 1.0);
        f.lock(200).add(&key(&["new"]), 1.0);
        assert_eq!(f.expire(150), 1);
        assert_eq!(f.series_count(), 1);
        assert_eq!(
            key_parts(&key(&["a", "bc"])).collect::<Vec<_>>(),
            vec!["a", "bc"]
        );
    }

    #[test]
    fn histogram_le_is_inclusive_and_invalid_utf8_refused() {
        let f = Family::new(
            "h",
            "",
            "",
            Kind::Histogram(vec![0.1, 1.0]),
            LabelNames::Fixed(vec![]),
            10,
        );
        let mut g = f.lock(1);
        for v in [0.1, 0.5, 1.0, 3.0] {
            assert!(g.observe(&[], v, None));
        }
        assert!(!g.add(&[1, 0, 0xff], 1.0));
        drop(g);
        f.with(|i| match &i.series.get(&[][..]).map(|s| &s.value) {
            Some(Value::Hist(h)) => {
                assert_eq!(&*h.counts, &[1, 2, 1]);
                assert_eq!(h.count, 4);
            }
            other => panic!("{other:?}"),
        });
    }
}
