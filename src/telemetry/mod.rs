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
//! exposition families (`crate::metrics::own`); the OTLP push runs them
//! through a periodic reader.

pub mod config;
pub mod http;
pub mod otlp;
pub mod process;

use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry::KeyValue;
pub use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    Instrument, InstrumentKind as SdkKind, ManualReader, Pipeline, SdkMeterProvider, Stream,
    Temporality,
};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Attribute sets one instrument may report (the SDK preallocates its map to
/// this size, so it stays small); instruments with a label per metric or
/// rule get the `wide` limit given to [`SelfMetrics::new`].
const NARROW: usize = 64;
/// The `wide` limit of [`SelfMetrics::default`].
const DEFAULT_WIDE: usize = 2048;

/// What an instrument is, for the exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstrumentKind {
    Counter,
    Gauge,
}

/// One declared instrument, in declaration order (the exposition order).
pub struct Declared {
    /// the Prometheus name (a counter's ends in `_total`)
    pub name: String,
    /// the instrument's name (a counter's without `_total`)
    pub otel: String,
    pub kind: InstrumentKind,
    pub help: String,
    /// UCUM (`s`, `By`) or ""
    pub unit: &'static str,
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
    fn temporality(&self, kind: SdkKind) -> Temporality {
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

    fn declare(&self, name: &str, kind: InstrumentKind, help: &str, unit: &'static str) -> String {
        let otel = match kind {
            InstrumentKind::Counter => name.strip_suffix("_total").unwrap_or(name),
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
        let otel = self.declare(name, InstrumentKind::Counter, help, unit);
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
        let otel = self.declare(name, InstrumentKind::Counter, help, unit);
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
        let otel = self.declare(name, InstrumentKind::Gauge, help, unit);
        let g = self
            .meter
            .f64_observable_gauge(otel)
            .with_description(help.to_string())
            .with_unit(unit)
            .with_callback(observe)
            .build();
        self.keep(g);
    }

    /// Runs the callbacks and hands `f` the declared instruments, in
    /// declaration order, with what was collected (scrape time only, never
    /// on the hot path; `crate::metrics::own` turns it into families).
    pub fn read<R>(&self, f: impl FnOnce(&[Declared], &ResourceMetrics) -> R) -> R {
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.reader.collect(&mut rm) {
            tracing::debug!(error = %e, "self-metrics not collected");
        }
        let declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        f(&declared, &rm)
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

/// `KeyValue`s from static pairs (no allocation for static strings).
pub fn kv<const N: usize>(pairs: [(&'static str, &'static str); N]) -> [KeyValue; N] {
    pairs.map(|(k, v)| KeyValue::new(k, v))
}
