//! Pass-through of the app's own OTLP metrics, named and shaped per the
//! OpenTelemetry-to-Prometheus compatibility spec: unit and `_total`
//! suffixes, delta sums and histograms accumulated to cumulative,
//! `target_info` from the resource. Every name, key and value goes through
//! [`super::sanitize`] first; families whose series all expired are
//! removed. This is a cold path (apps push metrics every few seconds), so it
//! decodes with prost.

use super::config;
use super::native::NativeHist;
use super::sanitize::{self, Drop, DROP_REASONS, MAX_LABELS};
use super::snapshot as snap;
use super::store::{
    push_key_part, Budget, Family, FastMap, HistMode, Kind, LabelNames, Locked, SummaryValue,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, ExponentialHistogramDataPoint,
    HistogramDataPoint, NumberDataPoint, SummaryDataPoint,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The pass-through families and every name taken in the exposition.
#[derive(Default)]
struct Registry {
    families: BTreeMap<String, Arc<Family>>,
    /// each name a family writes in either format -> the family ("" for
    /// the sidecar's own and derived metrics, which are never removed)
    taken: HashMap<String, String>,
}

/// The `passthrough.*` switches (a config reload may change them).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Switches {
    enabled: bool,
    scope_labels: bool,
    resource_labels: bool,
}

impl From<&config::PassthroughConfig> for Switches {
    fn from(c: &config::PassthroughConfig) -> Self {
        Switches {
            enabled: c.enabled,
            scope_labels: c.scope_labels,
            resource_labels: c.resource_labels,
        }
    }
}

pub struct Passthrough {
    /// read-locked by a request for the whole of its ingest (one
    /// uncontended lock per request), write-locked by a reload
    switches: RwLock<Switches>,
    /// `store.*` limits (a config reload may change them)
    cap: AtomicUsize,
    max_label: AtomicUsize,
    max_families: AtomicUsize,
    /// `store.native_histogram_max_buckets`, for exponential histograms
    max_native: AtomicUsize,
    /// pass-through's share of the global series budget
    budget: Arc<Budget>,
    reg: Mutex<Registry>,
    /// target_info series: key -> last update
    targets: Mutex<FastMap<Box<[u8]>, u64>>,
    dropped: [AtomicU64; DROP_REASONS.len()],
    /// metric names and label keys renamed beyond `.` to `_`
    renamed: [AtomicU64; 2],
}

fn value_text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(any_value::Value::ArrayValue(a)) => {
            let parts: Vec<String> = a
                .values
                .iter()
                .map(|v| value_text(&Some(v.clone())))
                .collect();
            serde_json::to_string(&parts).unwrap_or_default()
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let m: BTreeMap<String, String> = kv
                .values
                .iter()
                .map(|k| (k.key.clone(), value_text(&k.value)))
                .collect();
            serde_json::to_string(&m).unwrap_or_default()
        }
        Some(any_value::Value::StringValueStrindex(i)) => i.to_string(),
        None => String::new(),
    }
}

/// Encodes (name, value) pairs as a series key; names that sanitise to the
/// same label are joined with `;` as the spec says. Refuses more than
/// `MAX_LABELS` pairs or a part longer than `max_label` bytes.
fn key_of(pairs: &mut Vec<(String, String)>, max_label: usize) -> Result<Vec<u8>, Drop> {
    if pairs.len() > MAX_LABELS {
        return Err(Drop::TooManyLabels);
    }
    pairs.sort();
    let mut merged: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs.drain(..) {
        match merged.last_mut() {
            Some((lk, lv)) if *lk == k => {
                lv.push(';');
                lv.push_str(&v);
            }
            _ => merged.push((k, v)),
        }
    }
    let mut key = Vec::new();
    for (k, v) in &merged {
        if k.len() > max_label || v.len() > max_label {
            return Err(Drop::LabelTooLong);
        }
        push_key_part(&mut key, k.as_bytes());
        push_key_part(&mut key, v.as_bytes());
    }
    Ok(key)
}

/// The first value of resource attribute `k`, as text; None when absent or empty.
fn resource_attr(res: &[KeyValue], k: &str) -> Option<String> {
    res.iter()
        .find(|kv| kv.key == k)
        .map(|kv| value_text(&kv.value))
        .filter(|v| !v.is_empty())
}

/// The `job` and `instance` of a resource, per the OpenTelemetry-to-Prometheus
/// compatibility spec: job is `service.namespace/service.name` (or
/// `service.name`; none without it), instance is `service.instance.id`.
/// Without an instance id, so that distinct processes still differ:
/// `host.name:process.pid` when the resource has both (the Node SDK's
/// default detectors), else [`resource_hash`]. An empty resource has
/// neither label.
fn job_and_instance(res: &[KeyValue]) -> (Option<String>, Option<String>) {
    let job = match (
        resource_attr(res, "service.namespace"),
        resource_attr(res, "service.name"),
    ) {
        (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
        (None, Some(n)) => Some(n),
        _ => None,
    };
    if res.is_empty() {
        return (job, None);
    }
    let instance = resource_attr(res, "service.instance.id").or_else(|| {
        match (
            resource_attr(res, "host.name"),
            resource_attr(res, "process.pid"),
        ) {
            (Some(host), Some(pid)) => Some(format!("{host}:{pid}")),
            _ => Some(resource_hash(res)),
        }
    });
    (job, instance)
}

/// A short stable name for a resource: the first 12 hex digits of the
/// SHA-256 of its attributes as text, sorted by key then value, each key and
/// value preceded by its length (8 bytes, little-endian). Stable across
/// restarts and sidecar versions, so a process keeps its series.
fn resource_hash(res: &[KeyValue]) -> String {
    use sha2::{Digest, Sha256};
    let mut pairs: Vec<(&str, String)> = res
        .iter()
        .map(|kv| (kv.key.as_str(), value_text(&kv.value)))
        .collect();
    pairs.sort();
    let mut h = Sha256::new();
    for (k, v) in &pairs {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Totals of one ingest.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub points: u64,
    pub dropped: u64,
}

/// What a metric's points become in the store.
#[derive(Clone, Copy, PartialEq)]
enum Op {
    Set,
    Add,
    /// a delta counter: added, never below zero or past finite
    AddCounter,
}

/// Pass-through's share of `store.max_series` and `store.max_series_bytes`
/// (`store.passthrough_share_percent`, at least one series).
fn share_of(s: &config::StoreConfig) -> (usize, usize) {
    let pct = s.passthrough_share_percent.clamp(1, 100);
    let part = |n: usize| {
        (n / 100)
            .saturating_mul(pct)
            .saturating_add(n % 100 * pct / 100)
    };
    (part(s.max_series).max(1), part(s.max_series_bytes).max(1))
}

impl Passthrough {
    pub fn new(
        cfg: &config::PassthroughConfig,
        store: &config::StoreConfig,
        budget: Arc<Budget>,
    ) -> Self {
        let p = Passthrough {
            switches: RwLock::new(Switches::from(cfg)),
            cap: AtomicUsize::new(store.max_series_per_metric),
            max_label: AtomicUsize::new(store.max_label_value_bytes),
            max_families: AtomicUsize::new(store.max_passthrough_families),
            max_native: AtomicUsize::new(store.native_histogram_max_buckets),
            budget: {
                let (n, b) = share_of(store);
                Arc::new(Budget::share(budget, n, b))
            },
            reg: Mutex::new(Registry::default()),
            targets: Mutex::new(FastMap::default()),
            dropped: Default::default(),
            renamed: Default::default(),
        };
        for (name, kind) in sanitize::OWN_FAMILIES {
            let k = match kind {
                sanitize::OwnKind::Counter => Kind::Counter,
                sanitize::OwnKind::Gauge => Kind::Gauge,
            };
            p.reserve_family(name, &k);
        }
        p
    }

    fn reg(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn switches(&self) -> std::sync::RwLockReadGuard<'_, Switches> {
        self.switches.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether OTLP metrics are exposed (`passthrough.enabled` in force).
    pub fn enabled(&self) -> bool {
        self.switches().enabled
    }

    /// Puts new `passthrough.*` switches in force (a config reload). Any
    /// change removes every pass-through series at once, while no request
    /// is being ingested, so none is exposed under two label sets; they come
    /// back as exports arrive. Returns the number of series removed.
    pub fn set_switches(&self, cfg: &config::PassthroughConfig) -> usize {
        let mut sw = self.switches.write().unwrap_or_else(|p| p.into_inner());
        let new = Switches::from(cfg);
        if *sw == new {
            return 0;
        }
        *sw = new;
        self.expire(u64::MAX)
    }

    /// New `store.*` limits (a config reload), existing families included.
    pub fn set_limits(&self, s: &config::StoreConfig) {
        self.cap.store(s.max_series_per_metric, Ordering::Relaxed);
        self.max_label
            .store(s.max_label_value_bytes, Ordering::Relaxed);
        self.max_families
            .store(s.max_passthrough_families, Ordering::Relaxed);
        self.max_native
            .store(s.native_histogram_max_buckets, Ordering::Relaxed);
        let (n, b) = share_of(s);
        self.budget.set_limits(n, b);
        for f in self.reg().families.values() {
            f.set_cap(s.max_series_per_metric);
        }
    }

    fn max_label(&self) -> usize {
        self.max_label.load(Ordering::Relaxed)
    }

    /// Reserves the names a family of the sidecar's own writes.
    pub fn reserve_family(&self, name: &str, kind: &Kind) {
        let names = sanitize::family_names(
            name,
            *kind == Kind::Counter,
            matches!(kind, Kind::Histogram(_) | Kind::Summary),
        );
        let mut reg = self.reg();
        for n in names {
            reg.taken.insert(n, String::new());
        }
    }

    /// Reserves names taken by derived metrics (see [`Self::reserve_family`]).
    pub fn reserve(&self, names: impl IntoIterator<Item = String>) {
        let mut reg = self.reg();
        for n in names {
            reg.taken.insert(n, String::new());
        }
    }

    fn drop_point(&self, reason: Drop, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> Vec<(&'static str, u64)> {
        DROP_REASONS
            .iter()
            .zip(&self.dropped)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Pass-through's self-metrics: points dropped by reason, names renamed.
    pub fn declare(t: &crate::telemetry::SelfMetrics, store: &Arc<super::Store>) {
        let s = store.clone();
        t.counter(
            "geometra_sidecar_passthrough_dropped_points_total",
            "Pass-through metric points dropped, by reason (see docs/metrics.md).",
            "",
            move |o| {
                for (reason, n) in s.passthrough.dropped() {
                    o.observe(n, &crate::telemetry::kv([("reason", reason)]));
                }
            },
        );
        let s = store.clone();
        t.counter(
            "geometra_sidecar_passthrough_renamed_total",
            "Pass-through metric names (per family) and label keys (per point) renamed beyond '.' to '_'.",
            "",
            move |o| {
                for (what, n) in s.passthrough.renamed() {
                    o.observe(n, &crate::telemetry::kv([("what", what)]));
                }
            },
        );
        Self::declare_share(t, store);
    }

    /// Points sent to overflow series by the share, and the series and
    /// bytes it holds.
    fn declare_share(t: &crate::telemetry::SelfMetrics, store: &Arc<super::Store>) {
        let s = store.clone();
        t.counter(
            "geometra_sidecar_passthrough_share_overflow_total",
            "Pass-through points recorded in an overflow series because pass-through series reached store.passthrough_share_percent of store.max_series or store.max_series_bytes (the rest is kept for derived metrics).",
            "",
            move |o| o.observe(s.passthrough.budget.refused.load(Ordering::Relaxed), &[]),
        );
        let s = store.clone();
        t.gauge(
            "geometra_sidecar_passthrough_series",
            "Live pass-through series (bounded by store.passthrough_share_percent of store.max_series).",
            "",
            move |o| o.observe(s.passthrough.budget.used().0 as f64, &[]),
        );
    }

    /// (what, count) of names renamed beyond `.` to `_`.
    pub fn renamed(&self) -> [(&'static str, u64); 2] {
        [
            ("metric", self.renamed[0].load(Ordering::Relaxed)),
            ("label", self.renamed[1].load(Ordering::Relaxed)),
        ]
    }

    /// The family of this name and kind, created if its names are free.
    fn family(&self, name: &str, kind: &Kind, help: &str, unit: &str) -> Result<Arc<Family>, Drop> {
        if sanitize::OWN_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Err(Drop::NameClash);
        }
        let mut reg = self.reg();
        if let Some(f) = reg.families.get(name) {
            if std::mem::discriminant(&f.kind) != std::mem::discriminant(kind) {
                return Err(Drop::NameClash);
            }
            return Ok(f.clone());
        }
        let names = sanitize::family_names(
            name,
            *kind == Kind::Counter,
            matches!(kind, Kind::Histogram(_) | Kind::Summary),
        );
        if names.iter().any(|n| reg.taken.contains_key(n)) {
            return Err(Drop::NameClash);
        }
        if reg.families.len() >= self.max_families.load(Ordering::Relaxed) {
            return Err(Drop::FamilyLimit);
        }
        let help = sanitize::cut(help, sanitize::MAX_HELP_BYTES);
        let f = Arc::new(
            Family::new(
                name,
                help,
                unit,
                kind.clone(),
                LabelNames::InKey,
                self.cap.load(Ordering::Relaxed),
            )
            .with_hist_mode(self.hist_mode(kind))
            .with_budget(self.budget.clone()),
        );
        for n in names {
            reg.taken.insert(n, name.to_string());
        }
        reg.families.insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// Pass-through histogram series get their buckets from the points:
    /// classic ones from explicit-bounds points, native ones from
    /// exponential points (a family made by the latter has no bounds).
    fn hist_mode(&self, kind: &Kind) -> HistMode {
        match kind {
            Kind::Histogram(b) if b.is_empty() => HistMode {
                classic: false,
                native: Some((
                    super::native::MAX_SCHEMA,
                    self.max_native.load(Ordering::Relaxed),
                )),
            },
            _ => HistMode::default(),
        }
    }

    /// Runs `f` on the family locked, retrying if expiry retired it meanwhile.
    fn with_family(
        &self,
        name: &str,
        kind: &Kind,
        help: &str,
        unit: &str,
        now_s: u64,
        mut f: impl FnMut(&mut Locked<'_>),
    ) -> Result<(), Drop> {
        for _ in 0..3 {
            let fam = self.family(name, kind, help, unit)?;
            let mut l = fam.lock(now_s);
            if !fam.is_retired() {
                f(&mut l);
                return Ok(());
            }
        }
        Err(Drop::BadPoint)
    }

    /// Label pairs from attributes (keys sanitised, renames counted).
    fn attrs_into(&self, attrs: &[KeyValue], out: &mut Vec<(String, String)>) {
        for kv in attrs {
            let (k, renamed) = sanitize::label_name(&kv.key);
            if renamed {
                self.renamed[1].fetch_add(1, Ordering::Relaxed);
            }
            out.push((k, value_text(&kv.value)));
        }
    }

    /// The series key of a point: scope labels plus its attributes.
    fn key(&self, scope: &[(String, String)], attrs: &[KeyValue]) -> Result<Vec<u8>, Drop> {
        if scope.len() + attrs.len() > MAX_LABELS {
            return Err(Drop::TooManyLabels);
        }
        let mut p = scope.to_vec();
        self.attrs_into(attrs, &mut p);
        key_of(&mut p, self.max_label())
    }

    /// Records the resource as a `target_info` series.
    fn target(
        &self,
        res_attrs: &[KeyValue],
        job: &Option<String>,
        instance: &Option<String>,
        now_s: u64,
    ) {
        if res_attrs.len() > MAX_LABELS {
            self.drop_point(Drop::TooManyLabels, 1);
            return;
        }
        let mut t: Vec<(String, String)> = Vec::new();
        let rest = res_attrs.iter().filter(|kv| {
            !matches!(
                kv.key.as_str(),
                "service.name" | "service.namespace" | "service.instance.id"
            )
        });
        for kv in rest {
            self.attrs_into(std::slice::from_ref(kv), &mut t);
        }
        if let Some(j) = job {
            t.push(("job".into(), j.clone()));
        }
        if let Some(i) = instance {
            t.push(("instance".into(), i.clone()));
        }
        match key_of(&mut t, self.max_label()) {
            Ok(key) => {
                let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
                if targets.len() < 64 || targets.contains_key(&key[..]) {
                    targets.insert(key.into(), now_s);
                }
            }
            Err(why) => self.drop_point(why, 1),
        }
    }

    /// Takes one request in. Returns how many points it held and dropped.
    pub fn ingest(&self, req: &ExportMetricsServiceRequest, now_s: u64) -> Ingested {
        let mut st = Ingested::default();
        // one set of switches for the whole request; a reload waits for it
        let sw = self.switches();
        if !sw.enabled {
            return st;
        }
        for rm in &req.resource_metrics {
            let res_attrs: &[KeyValue] = rm
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let (job, instance) = job_and_instance(res_attrs);
            let mut base: Vec<(String, String)> = Vec::new();
            if sw.resource_labels {
                if let Some(j) = &job {
                    base.push(("job".into(), j.clone()));
                }
                if let Some(i) = &instance {
                    base.push(("instance".into(), i.clone()));
                }
            }
            if !res_attrs.is_empty() {
                self.target(res_attrs, &job, &instance, now_s);
            }
            for sm in &rm.scope_metrics {
                let mut scope: Vec<(String, String)> = base.clone();
                if sw.scope_labels {
                    if let Some(s) = &sm.scope {
                        scope.push(("otel_scope_name".into(), s.name.clone()));
                        scope.push(("otel_scope_version".into(), s.version.clone()));
                    }
                }
                for m in &sm.metrics {
                    let (n, d) = self.metric(m, &scope, now_s);
                    st.points += n;
                    st.dropped += d;
                }
            }
        }
        st
    }

    /// The sanitised Prometheus name of a metric, or why it has none.
    fn name_of(
        &self,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
        gauge: bool,
        counter: bool,
    ) -> Result<String, Drop> {
        if m.name.len() > self.max_label() {
            return Err(Drop::NameTooLong);
        }
        let name =
            sanitize::prom_name(&m.name, &m.unit, gauge, counter).ok_or(Drop::InvalidName)?;
        if name.len() > self.max_label() {
            return Err(Drop::NameTooLong);
        }
        Ok(name)
    }

    /// Takes one metric in; returns (points, dropped).
    fn metric(
        &self,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
        scope: &[(String, String)],
        now_s: u64,
    ) -> (u64, u64) {
        let Some(data) = &m.data else {
            return (0, 0);
        };
        let (points, res) = match data {
            metric::Data::Gauge(g) => (
                g.data_points.len(),
                self.numbers(m, &g.data_points, false, false, scope, now_s),
            ),
            metric::Data::Sum(s) => {
                let delta = s.aggregation_temporality == AggregationTemporality::Delta as i32;
                (
                    s.data_points.len(),
                    self.numbers(m, &s.data_points, s.is_monotonic, delta, scope, now_s),
                )
            }
            metric::Data::Histogram(h) => {
                let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
                (
                    h.data_points.len(),
                    self.histograms(m, &h.data_points, delta, scope, now_s),
                )
            }
            metric::Data::ExponentialHistogram(h) => {
                let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
                (
                    h.data_points.len(),
                    self.exp_histograms(m, &h.data_points, delta, scope, now_s),
                )
            }
            metric::Data::Summary(s) => (
                s.data_points.len(),
                self.summaries(m, &s.data_points, scope, now_s),
            ),
        };
        let points = points as u64;
        match res {
            Ok(dropped) => (points, dropped),
            Err(why) => {
                self.drop_point(why, points);
                (points, points)
            }
        }
    }

    /// Gauges and sums. Err: the whole metric was refused; Ok: points dropped.
    fn numbers(
        &self,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
        points: &[NumberDataPoint],
        counter: bool,
        delta: bool,
        scope: &[(String, String)],
        now_s: u64,
    ) -> Result<u64, Drop> {
        let name = self.name_of(m, !counter, counter)?;
        let kind = if counter { Kind::Counter } else { Kind::Gauge };
        let op = match (counter, delta) {
            (true, true) => Op::AddCounter,
            (false, true) => Op::Add,
            _ => Op::Set,
        };
        let unit = sanitize::unit_suffix(&m.unit, !counter);
        let mut dropped = 0;
        self.count_mangled(&m.name, &name);
        self.with_family(&name, &kind, &m.description, &unit, now_s, |l| {
            for p in points {
                let r = self.number(l, p, counter, op, scope);
                if let Err(why) = r {
                    self.drop_point(why, 1);
                    dropped += 1;
                }
            }
        })?;
        Ok(dropped)
    }

    fn number(
        &self,
        l: &mut Locked<'_>,
        p: &NumberDataPoint,
        counter: bool,
        op: Op,
        scope: &[(String, String)],
    ) -> Result<(), Drop> {
        let v = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => return Err(Drop::BadPoint),
        };
        if counter && !sanitize::counter_value_ok(v) {
            return Err(Drop::BadValue);
        }
        let key = self.key(scope, &p.attributes)?;
        let ok = match op {
            Op::Set => l.set(&key, v),
            Op::Add => l.add(&key, v),
            Op::AddCounter => l.add_finite(&key, v),
        };
        if ok {
            Ok(())
        } else {
            Err(Drop::BadValue)
        }
    }

    fn histograms(
        &self,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
        points: &[HistogramDataPoint],
        delta: bool,
        scope: &[(String, String)],
        now_s: u64,
    ) -> Result<u64, Drop> {
        let name = self.name_of(m, false, false)?;
        let mut dropped = 0;
        let mut valid = Vec::with_capacity(points.len());
        for p in points {
            let sum = p.sum.unwrap_or(0.0);
            match sanitize::check_histogram(&p.explicit_bounds, &p.bucket_counts, p.count, sum) {
                Ok(()) => valid.push(p),
                Err(why) => {
                    self.drop_point(why, 1);
                    dropped += 1;
                }
            }
        }
        let Some(first) = valid.first() else {
            return Ok(dropped);
        };
        let kind = Kind::Histogram(first.explicit_bounds.clone());
        let unit = sanitize::unit_suffix(&m.unit, false);
        self.count_mangled(&m.name, &name);
        self.with_family(&name, &kind, &m.description, &unit, now_s, |l| {
            let most = match &l.family().kind {
                Kind::Histogram(b) => b.len(),
                _ => 0,
            };
            for p in &valid {
                let r = self.key(scope, &p.attributes).and_then(|key| {
                    let ok = p.explicit_bounds.len() <= most
                        && l.merge_hist(
                            &key,
                            &p.explicit_bounds,
                            &p.bucket_counts,
                            p.sum.unwrap_or(0.0),
                            p.count,
                            delta,
                        );
                    if ok {
                        Ok(())
                    } else {
                        Err(Drop::InvalidHistogram)
                    }
                });
                if let Err(why) = r {
                    self.drop_point(why, 1);
                    dropped += 1;
                }
            }
        })?;
        Ok(dropped)
    }

    /// Exponential histograms, kept as native histograms. Err: the whole
    /// metric was refused; Ok: points dropped.
    fn exp_histograms(
        &self,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
        points: &[ExponentialHistogramDataPoint],
        delta: bool,
        scope: &[(String, String)],
        now_s: u64,
    ) -> Result<u64, Drop> {
        let name = self.name_of(m, false, false)?;
        let unit = sanitize::unit_suffix(&m.unit, false);
        let max = self.max_native.load(Ordering::Relaxed);
        let mut dropped = 0;
        self.count_mangled(&m.name, &name);
        let kind = Kind::Histogram(Vec::new());
        self.with_family(&name, &kind, &m.description, &unit, now_s, |l| {
            for p in points {
                let r = exp_point(p, max).and_then(|(n, sum)| {
                    let key = self.key(scope, &p.attributes)?;
                    match l.merge_native(&key, n, sum, p.count, delta) {
                        true => Ok(()),
                        false => Err(Drop::InvalidHistogram),
                    }
                });
                if let Err(why) = r {
                    self.drop_point(why, 1);
                    dropped += 1;
                }
            }
        })?;
        Ok(dropped)
    }

    /// Summaries, kept as Prometheus summaries (always cumulative in OTLP).
    fn summaries(
        &self,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
        points: &[SummaryDataPoint],
        scope: &[(String, String)],
        now_s: u64,
    ) -> Result<u64, Drop> {
        let name = self.name_of(m, false, false)?;
        let unit = sanitize::unit_suffix(&m.unit, false);
        let mut dropped = 0;
        self.count_mangled(&m.name, &name);
        self.with_family(&name, &Kind::Summary, &m.description, &unit, now_s, |l| {
            for p in points {
                let q: Vec<(f64, f64)> = p
                    .quantile_values
                    .iter()
                    .map(|q| (q.quantile, q.value))
                    .collect();
                let r = sanitize::check_summary(&q, p.sum).and_then(|quantiles| {
                    let key = self.key(scope, &p.attributes)?;
                    let v = SummaryValue {
                        count: p.count,
                        sum: p.sum,
                        quantiles: quantiles.into(),
                    };
                    match l.set_summary(&key, v) {
                        true => Ok(()),
                        false => Err(Drop::BadValue),
                    }
                });
                if let Err(why) = r {
                    self.drop_point(why, 1);
                    dropped += 1;
                }
            }
        })?;
        Ok(dropped)
    }

    /// Counts a metric name renamed beyond `.` to `_` (once per family).
    fn count_mangled(&self, raw: &str, name: &str) {
        if sanitize::name_was_mangled(raw) && !self.reg().families.contains_key(name) {
            self.renamed[0].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A snapshot of the families (the map's lock is not held while they are used).
    fn all(&self) -> Vec<Arc<Family>> {
        self.reg().families.values().cloned().collect()
    }

    /// Expires series; families left without any are removed (their names
    /// freed for later metrics).
    pub fn expire(&self, cutoff_s: u64) -> usize {
        let fams = self.all();
        let mut n = 0;
        for f in fams {
            n += f.expire(cutoff_s);
        }
        {
            let mut reg = self.reg();
            let mut gone = Vec::new();
            reg.families.retain(|name, f| {
                let empty = f.retire_if_empty();
                if empty {
                    gone.push(name.clone());
                }
                !empty
            });
            if !gone.is_empty() {
                reg.taken.retain(|_, owner| !gone.contains(owner));
            }
        }
        let mut t = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|_, up| *up >= cutoff_s);
        n
    }

    pub fn series_counts(&self) -> Vec<(String, usize)> {
        let fams = self.all();
        fams.iter()
            .map(|f| (f.name.clone(), f.series_count()))
            .collect()
    }

    pub fn overflow_counts(&self) -> Vec<(String, u64)> {
        let fams = self.all();
        fams.iter()
            .map(|f| (f.name.clone(), f.overflowed.load(Ordering::Relaxed)))
            .collect()
    }

    /// The pass-through families (those with series) and `target_info`.
    pub fn snapshot(&self, out: &mut Vec<snap::Family>, _now: u64) {
        for f in self.all() {
            out.extend(f.snapshot());
        }
        let t = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if !t.is_empty() {
            let mut fam = snap::Family::new("target_info", snap::Kind::Gauge, "Target metadata");
            let mut keys: Vec<&Box<[u8]>> = t.keys().collect();
            keys.sort();
            for k in keys {
                let mut it = super::store::key_parts(k);
                let pairs = std::iter::from_fn(|| Some((it.next()?, it.next()?)));
                fam.push_iter(pairs, snap::Point::Value(1.0), None);
            }
            out.push(fam);
        }
    }
}

type ExpBuckets =
    opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;

/// One side of an exponential histogram point: (offset, counts).
fn side(b: &Option<ExpBuckets>) -> (i32, &[u64]) {
    b.as_ref()
        .map_or((0, &[][..]), |b| (b.offset, b.bucket_counts.as_slice()))
}

/// An exponential histogram point checked and converted (buckets, sum).
fn exp_point(p: &ExponentialHistogramDataPoint, max: usize) -> Result<(NativeHist, f64), Drop> {
    let sum = p.sum.unwrap_or(0.0);
    let (pos, neg) = (side(&p.positive), side(&p.negative));
    sanitize::check_exp_histogram(pos.1, neg.1, p.zero_count, p.count, sum)?;
    let n = NativeHist::from_otlp(p.scale, p.zero_threshold, p.zero_count, pos, neg, max)
        .map_err(|_| Drop::InvalidHistogram)?;
    Ok((n, sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Store;

    /// The two sections a store is built from.
    #[derive(Default)]
    struct Config {
        store: config::StoreConfig,
        passthrough: config::PassthroughConfig,
    }
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }
    fn s(k: &str, v: &str) -> KeyValue {
        kv(k, any_value::Value::StringValue(v.into()))
    }
    fn pid(p: i64) -> KeyValue {
        kv("process.pid", any_value::Value::IntValue(p))
    }
    fn labels(res: &[KeyValue]) -> (Option<String>, Option<String>) {
        job_and_instance(res)
    }
    fn some(a: &str, b: &str) -> (Option<String>, Option<String>) {
        (Some(a.into()), Some(b.into()))
    }

    #[test]
    fn job_and_instance_follow_the_spec_then_the_process() {
        let api = s("service.name", "api");
        assert_eq!(
            labels(&[
                api.clone(),
                s("service.instance.id", "w-1"),
                s("host.name", "h"),
                pid(7)
            ]),
            some("api", "w-1")
        );
        assert_eq!(
            labels(&[
                s("service.namespace", "geometra"),
                api.clone(),
                s("service.instance.id", "w-1")
            ]),
            some("geometra/api", "w-1")
        );
        // no instance id (the Node SDK): host and pid, readable
        assert_eq!(
            labels(&[api.clone(), s("host.name", "pod-7f"), pid(42)]),
            some("api", "pod-7f:42")
        );
        // an empty instance id is no instance id
        assert_eq!(
            labels(&[
                api.clone(),
                s("service.instance.id", ""),
                s("host.name", "pod-7f"),
                pid(42)
            ]),
            some("api", "pod-7f:42")
        );
        // a pid without a host name, or neither: a hash of the whole resource
        let (job, a) = labels(&[api.clone(), pid(42)]);
        let (_, b) = labels(&[api.clone(), pid(43)]);
        let (_, c) = labels(&[pid(42), api.clone()]);
        assert_eq!(job.as_deref(), Some("api"));
        assert_ne!(a, b, "distinct processes differ");
        assert_eq!(a, c, "attribute order does not matter");
        let a = a.unwrap_or_default();
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        // no service.name: no job, as before; an empty resource: no labels
        let (job, inst) = labels(&[s("service.namespace", "geometra"), pid(1)]);
        assert_eq!(job, None);
        assert!(inst.is_some());
        assert_eq!(labels(&[]), (None, None));
    }

    #[test]
    fn resource_hash_is_stable_across_versions() {
        // The instance of a process without an id must not change when the
        // sidecar is upgraded (it would start new series): this value is
        // the documented encoding's, computed once with Python's hashlib
        // (sha256 of len-prefixed sorted pairs).
        let res = [s("service.name", "api"), pid(42)];
        assert_eq!(resource_hash(&res), "fa1506b8ed2c");
        // a key/value boundary cannot be moved without changing the hash
        assert_ne!(
            resource_hash(&[s("ab", "c")]),
            resource_hash(&[s("a", "bc")])
        );
    }

    fn resource(attrs: Vec<KeyValue>) -> Option<Resource> {
        Some(Resource {
            attributes: attrs,
            ..Default::default()
        })
    }

    /// One process's export: counter `requests` (cumulative) and gauge `memory.size`.
    fn export(res: Vec<KeyValue>, count: i64, size: f64) -> ExportMetricsServiceRequest {
        use opentelemetry_proto::tonic::metrics::v1::NumberDataPoint as P;
        let pt = |v| P {
            value: Some(v),
            ..Default::default()
        };
        let metrics = vec![
            Metric {
                name: "requests".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![pt(number_data_point::Value::AsInt(count))],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            },
            Metric {
                name: "memory.size".into(),
                unit: "By".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![pt(number_data_point::Value::AsDouble(size))],
                })),
                ..Default::default()
            },
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(res),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// The pass-through sample lines (and target_info) of /metrics, sorted.
    fn lines(store: &Store) -> Vec<String> {
        let text = crate::metrics::encode::render(store, &[], false);
        let mut l: Vec<String> = text
            .lines()
            .filter(|l| {
                l.starts_with("requests_total")
                    || l.starts_with("memory_size_bytes")
                    || l.starts_with("target_info")
            })
            .map(str::to_string)
            .collect();
        l.sort();
        l
    }

    #[test]
    fn processes_of_one_service_keep_their_own_series() {
        let store = Store::new(&Default::default(), &Default::default());
        let w1 = || vec![s("service.name", "api"), s("service.instance.id", "w1")];
        let node = |p| vec![s("service.name", "web"), s("host.name", "pod-a"), pid(p)];
        for round in 1..=3 {
            // uvicorn --workers 2: one busy worker, one idle; two Node workers
            store.passthrough.ingest(&export(w1(), 100 + round, 5e6), 1);
            let w2 = vec![s("service.name", "api"), s("service.instance.id", "w2")];
            store.passthrough.ingest(&export(w2, 3, 1e6), 1);
            store.passthrough.ingest(&export(node(7), round, 1.0), 1);
            store
                .passthrough
                .ingest(&export(node(8), 10 * round, 2.0), 1);
            let r = 100 + round;
            let (n7, n8) = (round, 10 * round);
            let want = [
                r#"memory_size_bytes{instance="pod-a:7",job="web"} 1"#.to_string(),
                r#"memory_size_bytes{instance="pod-a:8",job="web"} 2"#.into(),
                r#"memory_size_bytes{instance="w1",job="api"} 5000000"#.into(),
                r#"memory_size_bytes{instance="w2",job="api"} 1000000"#.into(),
                format!(r#"requests_total{{instance="pod-a:7",job="web"}} {n7}"#),
                format!(r#"requests_total{{instance="pod-a:8",job="web"}} {n8}"#),
                format!(r#"requests_total{{instance="w1",job="api"}} {r}"#),
                r#"requests_total{instance="w2",job="api"} 3"#.into(),
                r#"target_info{host_name="pod-a",instance="pod-a:7",job="web",process_pid="7"} 1"#
                    .into(),
                r#"target_info{host_name="pod-a",instance="pod-a:8",job="web",process_pid="8"} 1"#
                    .into(),
                r#"target_info{instance="w1",job="api"} 1"#.into(),
                r#"target_info{instance="w2",job="api"} 1"#.into(),
            ];
            assert_eq!(lines(&store), want, "round {round}");
        }
    }

    #[test]
    fn without_resource_labels_processes_share_one_series() {
        let mut cfg = Config::default();
        cfg.passthrough.resource_labels = false;
        let store = Store::new(&cfg.store, &cfg.passthrough);
        let w = |id: &str| vec![s("service.name", "api"), s("service.instance.id", id)];
        store.passthrough.ingest(&export(w("w1"), 103, 5.0), 1);
        store.passthrough.ingest(&export(w("w2"), 3, 1.0), 1);
        let l = lines(&store);
        assert!(l.contains(&"requests_total 3".to_string()), "{l:?}");
        assert!(l.contains(&"memory_size_bytes 1".to_string()), "{l:?}");
        // target_info still tells them apart
        assert!(
            l.contains(&r#"target_info{instance="w1",job="api"} 1"#.to_string()),
            "{l:?}"
        );
    }

    #[test]
    fn identical_resources_without_an_id_are_one_series() {
        let store = Store::new(&Default::default(), &Default::default());
        let same = || vec![s("service.name", "api")];
        store.passthrough.ingest(&export(same(), 5, 1.0), 1);
        store.passthrough.ingest(&export(same(), 7, 2.0), 1);
        let inst = resource_hash(&same());
        let l = lines(&store);
        assert!(
            l.contains(&format!(
                r#"requests_total{{instance="{inst}",job="api"}} 7"#
            )),
            "{l:?}"
        );
        assert_eq!(
            l.iter().filter(|x| x.starts_with("requests_total")).count(),
            1
        );
    }
}

#[cfg(test)]
mod native_tests {
    use super::*;
    use crate::metrics::store::Value;
    use crate::metrics::Store;
    use opentelemetry_proto::tonic::metrics::v1::{
        exponential_histogram_data_point::Buckets, summary_data_point::ValueAtQuantile,
        ExponentialHistogram, Metric, ResourceMetrics, ScopeMetrics, Summary,
    };

    fn request(name: &str, data: metric::Data) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: name.into(),
                        unit: "s".into(),
                        data: Some(data),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn exp(delta: bool, pos: Vec<u64>, zero: u64, count: u64) -> metric::Data {
        let t = if delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        };
        metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                scale: 2,
                zero_count: zero,
                count,
                sum: Some(3.5),
                positive: Some(Buckets {
                    offset: -1,
                    bucket_counts: pos,
                }),
                ..Default::default()
            }],
            aggregation_temporality: t as i32,
        })
    }

    /// The single series of the family `name`.
    fn only(store: &Store, name: &str) -> Option<Value> {
        let fam = store
            .passthrough
            .all()
            .into_iter()
            .find(|f| f.name == name)?;
        fam.with(|inner| inner.series.values().next().map(|s| s.value.clone()))
    }

    fn store() -> Store {
        let mut cfg = config::PassthroughConfig::default();
        let st = config::StoreConfig::default();
        cfg.resource_labels = false;
        Store::new(&st, &cfg)
    }

    #[test]
    fn exponential_histograms_become_native_and_deltas_add_up() {
        let st = store();
        st.passthrough
            .ingest(&request("latency", exp(true, vec![1, 0, 2], 1, 4)), 10);
        st.passthrough
            .ingest(&request("latency", exp(true, vec![0, 5], 0, 5)), 11);
        let Some(Value::Hist(h)) = only(&st, "latency_seconds") else {
            panic!("no native histogram series");
        };
        let n = h
            .native
            .as_deref()
            .cloned()
            .unwrap_or_else(|| NativeHist::new(0, 1));
        assert_eq!((h.count, h.sum), (9, 7.0));
        assert!(h.counts.is_empty(), "no classic buckets");
        assert_eq!(n.schema, 2);
        assert_eq!(n.zero_count, 1);
        assert_eq!(n.positive.offset, 0); // OTLP offset -1 is Prometheus key 0
        assert_eq!(n.positive.counts, vec![1, 5, 2]);
    }

    #[test]
    fn bad_exponential_points_and_summaries_are_dropped_by_reason() {
        let st = store();
        // counts that do not add up to `count`
        st.passthrough
            .ingest(&request("latency", exp(false, vec![1, 1], 0, 5)), 10);
        let q = |quantile, value| ValueAtQuantile { quantile, value };
        let summary = |qs: Vec<ValueAtQuantile>| {
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    count: 4,
                    sum: 2.0,
                    quantile_values: qs,
                    ..Default::default()
                }],
            })
        };
        st.passthrough
            .ingest(&request("rpc", summary(vec![q(1.5, 1.0)])), 10);
        let dropped: BTreeMap<_, _> = st.passthrough.dropped().into_iter().collect();
        assert_eq!(dropped.get("invalid_histogram"), Some(&1));
        assert_eq!(dropped.get("bad_value"), Some(&1));
        // a good summary: quantiles sorted, NaN kept (an empty window)
        st.passthrough.ingest(
            &request("rpc", summary(vec![q(0.99, f64::NAN), q(0.5, 0.25)])),
            10,
        );
        let Some(Value::Summary(s)) = only(&st, "rpc_seconds") else {
            panic!("no summary series");
        };
        assert_eq!((s.count, s.sum), (4, 2.0));
        assert_eq!(s.quantiles.first(), Some(&(0.5, 0.25)));
        assert!(s
            .quantiles
            .get(1)
            .is_some_and(|x| x.0 == 0.99 && x.1.is_nan()));
    }
}
