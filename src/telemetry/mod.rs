//! The sidecar observing itself with OpenTelemetry: its self-metrics on the
//! OpenTelemetry metrics API (this file), and its own traces, logs and
//! metrics pushed over OTLP when `telemetry.otlp.endpoint` is set
//! (`otlp.rs`).
//!
//! Components keep counting in their relaxed atomics, untouched on the hot
//! path; each declares its instruments here at start-up as *observable*
//! counters and gauges whose callbacks read those atomics, in its own module
//! (`ReceiverStats::declare`, `ExporterStats::declare`, ...). A scrape runs
//! the callbacks through a manual reader and turns the collected data into
//! exposition families ([`SelfMetrics::families`]); the OTLP push runs them
//! through a periodic reader.

pub mod http;
pub mod otlp;
pub mod process;

use crate::metrics::snapshot::{Family, Kind};
use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    Instrument, InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Stream, Temporality,
};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Attribute sets one instrument may report (the SDK preallocates its map to
/// this size, so it stays small); instruments with a label per metric or
/// rule get the `wide` limit given to [`SelfMetrics::new`].
const NARROW: usize = 64;
/// The `wide` limit of [`SelfMetrics::default`].
const DEFAULT_WIDE: usize = 2048;

/// One declared instrument, in declaration order (the exposition order).
struct Declared {
    /// the Prometheus name (a counter's ends in `_total`)
    name: String,
    /// the instrument's name (a counter's without `_total`)
    otel: String,
    kind: Kind,
    help: String,
    unit: &'static str,
}

/// The self-metrics: a meter provider whose manual reader serves /metrics
/// and, with `telemetry.otlp.endpoint`, a periodic reader pushing the same
/// instruments over OTLP.
pub struct SelfMetrics {
    provider: SdkMeterProvider,
    meter: Meter,
    reader: Arc<ManualReader>,
    declared: Mutex<Vec<Declared>>,
    /// the instruments' handles, kept for the life of the provider
    keep: Mutex<Vec<Box<dyn std::any::Any + Send + Sync>>>,
}

/// A `MetricReader` shared between the provider and [`SelfMetrics`].
#[derive(Debug, Clone)]
struct Shared(Arc<ManualReader>);

impl MetricReader for Shared {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, t: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(t)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Each instrument's attribute-set limit: `wide` for those labelled per
/// metric or rule ([`WIDE_INSTRUMENTS`]), [`NARROW`] for the rest. Past it
/// the SDK folds attribute sets into one `otel_metric_overflow="true"` series.
fn view(wide: usize) -> impl Fn(&Instrument) -> Option<Stream> + Send + Sync + 'static {
    move |i: &Instrument| {
        let limit = if WIDE_INSTRUMENTS.contains(&i.name()) {
            wide.max(NARROW)
        } else {
            NARROW
        };
        Stream::builder().with_cardinality_limit(limit).build().ok()
    }
}

impl Default for SelfMetrics {
    fn default() -> Self {
        Self::new(None, DEFAULT_WIDE)
    }
}

impl SelfMetrics {
    /// The provider with its /metrics reader and, given one, the OTLP push.
    /// `wide`: how many metrics or rules the per-metric self-metrics may
    /// list (the store's bound on families, at start-up).
    pub fn new(push: Option<&otlp::Pipelines>, wide: usize) -> Self {
        let reader = Arc::new(ManualReader::builder().build());
        let mut b = SdkMeterProvider::builder()
            .with_reader(Shared(reader.clone()))
            .with_view(view(wide));
        if let Some(p) = push {
            b = p.add_metric_reader(b);
        }
        let provider = b.build();
        let meter = provider.meter("geometra-sidecar");
        SelfMetrics {
            provider,
            meter,
            reader,
            declared: Mutex::new(Vec::new()),
            keep: Mutex::new(Vec::new()),
        }
    }

    fn declare(&self, name: &str, kind: Kind, help: &str, unit: &'static str) -> String {
        let otel = match kind {
            Kind::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        }
        .to_string();
        let mut d = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        d.push(Declared {
            name: name.into(),
            otel: otel.clone(),
            kind,
            help: help.into(),
            unit,
        });
        otel
    }

    fn keep(&self, x: impl std::any::Any + Send + Sync) {
        self.keep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(x));
    }

    /// A counter read by `observe` at each collection. `name` is the
    /// Prometheus name, ending in `_total`; `unit` in UCUM (`s`, `By`) or "".
    pub fn counter<F>(&self, name: &str, help: &str, unit: &'static str, observe: F)
    where
        F: Fn(&dyn AsyncInstrument<u64>) + Send + Sync + 'static,
    {
        let otel = self.declare(name, Kind::Counter, help, unit);
        let c = self
            .meter
            .u64_observable_counter(otel)
            .with_description(help.to_string())
            .with_unit(unit)
            .with_callback(observe)
            .build();
        self.keep(c);
    }

    /// A counter of fractional values (CPU seconds).
    pub fn counter_f64<F>(&self, name: &str, help: &str, unit: &'static str, observe: F)
    where
        F: Fn(&dyn AsyncInstrument<f64>) + Send + Sync + 'static,
    {
        let otel = self.declare(name, Kind::Counter, help, unit);
        let c = self
            .meter
            .f64_observable_counter(otel)
            .with_description(help.to_string())
            .with_unit(unit)
            .with_callback(observe)
            .build();
        self.keep(c);
    }

    /// A gauge read by `observe` at each collection.
    pub fn gauge<F>(&self, name: &str, help: &str, unit: &'static str, observe: F)
    where
        F: Fn(&dyn AsyncInstrument<f64>) + Send + Sync + 'static,
    {
        let otel = self.declare(name, Kind::Gauge, help, unit);
        let g = self
            .meter
            .f64_observable_gauge(otel)
            .with_description(help.to_string())
            .with_unit(unit)
            .with_callback(observe)
            .build();
        self.keep(g);
    }

    /// Every declared family with its current series, in declaration order,
    /// series sorted by their labels (a family whose callback observed
    /// nothing keeps its header, as before). Runs the callbacks: scrape time
    /// only, never on the hot path.
    pub fn families(&self) -> Vec<Family> {
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.reader.collect(&mut rm) {
            tracing::debug!(error = %e, "self-metrics not collected");
        }
        let declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Family> = declared
            .iter()
            .map(|d| {
                let mut f = Family::new(d.name.clone(), d.kind, d.help.clone());
                f.unit = prometheus_unit(d.unit).into();
                f
            })
            .collect();
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            let Some(i) = declared.iter().position(|d| d.otel == m.name()) else {
                continue;
            };
            if let Some(f) = out.get_mut(i) {
                fill(f, m.data());
            }
        }
        out
    }

    /// Pushes what is pending over OTLP and stops the readers.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// The instruments labelled per metric or rule.
const WIDE_INSTRUMENTS: [&str; 4] = [
    "geometra_sidecar_series",
    "geometra_sidecar_series_overflow",
    "geometra_sidecar_series_expired",
    "geometra_sidecar_derive_skipped",
];

/// OpenMetrics' unit word for a UCUM unit.
fn prometheus_unit(ucum: &str) -> &'static str {
    match ucum {
        "s" => "seconds",
        "By" => "bytes",
        _ => "",
    }
}

/// The collected points of one instrument into its family.
fn fill(f: &mut Family, data: &AggregatedMetrics) {
    let mut rows: Vec<(Vec<(String, String)>, f64)> = Vec::new();
    let labels = |a: &mut dyn Iterator<Item = &KeyValue>| {
        // the SDK's `otel.metric.overflow` becomes a valid Prometheus label
        let mut l = a
            .map(|kv| {
                (
                    kv.key.as_str().replace('.', "_"),
                    kv.value.as_str().into_owned(),
                )
            })
            .collect::<Vec<_>>();
        // the SDK keeps the order of a set's first observation; sorted, a
        // family's series list their labels alike and sort together
        l.sort_unstable();
        l
    };
    match data {
        AggregatedMetrics::U64(MetricData::Sum(s)) => {
            for p in s.data_points() {
                rows.push((labels(&mut p.attributes()), p.value() as f64));
            }
        }
        AggregatedMetrics::F64(MetricData::Sum(s)) => {
            for p in s.data_points() {
                rows.push((labels(&mut p.attributes()), p.value()));
            }
        }
        AggregatedMetrics::F64(MetricData::Gauge(g)) => {
            for p in g.data_points() {
                rows.push((labels(&mut p.attributes()), p.value()));
            }
        }
        AggregatedMetrics::U64(MetricData::Gauge(g)) => {
            for p in g.data_points() {
                rows.push((labels(&mut p.attributes()), p.value() as f64));
            }
        }
        _ => {}
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (l, v) in rows {
        let pairs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        f.value(&pairs, v);
    }
}

/// `KeyValue`s from static pairs (no allocation for static strings).
pub fn kv<const N: usize>(pairs: [(&'static str, &'static str); N]) -> [KeyValue; N] {
    pairs.map(|(k, v)| KeyValue::new(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn families_follow_declarations_and_read_the_atomics_at_collection() {
        let t = SelfMetrics::default();
        let n = Arc::new(AtomicU64::new(0));
        let c = n.clone();
        t.counter("x_things_total", "Things.", "", move |o| {
            // labels in either order come out sorted by key
            o.observe(c.load(Ordering::Relaxed), &kv([("b", "2"), ("a", "x")]));
            o.observe(7, &kv([("a", "x"), ("b", "1")]));
        });
        t.gauge("x_empty", "Nothing observed.", "By", |_| {});
        n.store(5, Ordering::Relaxed);
        let f = t.families();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "x_things_total");
        assert_eq!(f[0].kind, Kind::Counter);
        let got: Vec<(Vec<(&str, &str)>, f64)> = f[0]
            .series
            .iter()
            .map(|s| {
                let v = match s.point {
                    crate::metrics::snapshot::Point::Value(v) => v,
                    _ => f64::NAN,
                };
                (f[0].labels_of(s).collect(), v)
            })
            .collect();
        let want = vec![
            (vec![("a", "x"), ("b", "1")], 7.0),
            (vec![("a", "x"), ("b", "2")], 5.0),
        ];
        assert_eq!(got, want);
        assert_eq!(
            (f[1].name.as_str(), f[1].unit.as_str()),
            ("x_empty", "bytes")
        );
        assert!(f[1].series.is_empty());
        n.store(9, Ordering::Relaxed);
        let f = t.families();
        assert!(matches!(
            f[0].series[1].point,
            crate::metrics::snapshot::Point::Value(v) if v == 9.0
        ));
    }

    #[test]
    fn attribute_sets_not_observed_any_more_go_away() {
        let t = SelfMetrics::default();
        let on = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let o2 = on.clone();
        t.counter("x_total", "x", "", move |o| {
            if o2.load(Ordering::Relaxed) {
                o.observe(1, &[KeyValue::new("metric", "gone".to_string())]);
            }
            o.observe(1, &[KeyValue::new("metric", "kept".to_string())]);
        });
        assert_eq!(t.families()[0].series.len(), 2);
        on.store(false, Ordering::Relaxed);
        assert_eq!(t.families()[0].series.len(), 1);
    }

    #[test]
    fn past_the_wide_limit_series_fold_into_a_valid_overflow_label() {
        let t = SelfMetrics::new(None, 64);
        t.gauge(
            "geometra_sidecar_series",
            "Live series per metric.",
            "",
            |o| {
                for i in 0..100 {
                    o.observe(1.0, &[KeyValue::new("metric", format!("m{i}"))]);
                }
            },
        );
        let f = t.families();
        // the limit, and one overflow series past it
        assert_eq!(f[0].series.len(), 65);
        let overflow: Vec<Vec<(&str, &str)>> = f[0]
            .series
            .iter()
            .map(|s| f[0].labels_of(s).collect::<Vec<_>>())
            .filter(|l| l.iter().any(|(k, _)| k.starts_with("otel")))
            .collect();
        assert_eq!(overflow, vec![vec![("otel_metric_overflow", "true")]]);
    }
}
