//! Scrape cost: building and encoding `/metrics` (text 0.0.4, OpenMetrics and
//! the protobuf exposition) for 10k and 100k pass-through series (half counters, half 10-bucket
//! histograms), with the allocations of one scrape counted by a counting
//! global allocator. `cargo bench --bench scrape`.
//!
//! A scrape is what `/metrics` does: the snapshot, then the whole body
//! rendered in the server's pieces (`server::CHUNK`), each dropped once
//! rendered as the connection drops it once written (`server::render_chunks`),
//! with the C allocator tuned as the binary tunes it (`allocator::tune`).
//!
//! `GEOMETRA_SCRAPE_ONCE=text|openmetrics|protobuf` instead renders one
//! 100k-series scrape in that format and exits: for an instruction count
//! that the machine's load does not change, e.g.
//! `valgrind --tool=callgrind --toggle-collect='*server::render*' BENCH`
//! (the bench binary that `cargo bench --bench scrape --no-run` names).

use criterion::{criterion_group, Criterion, Throughput};
use geometra_sidecar::config::Config;
use geometra_sidecar::derive::Deriver;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts allocations (the only extra cost is one relaxed add per call).
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// 10 metrics (5 counters, 5 histograms) of `n / 10` series each.
fn request(n: usize) -> ExportMetricsServiceRequest {
    let per = n / 10;
    let attrs = |i: usize| {
        vec![
            s("route", &format!("/api/v1/items/{i}")),
            s("method", "GET"),
        ]
    };
    let mut metrics = Vec::new();
    for m in 0..5 {
        let data_points = (0..per)
            .map(|i| NumberDataPoint {
                attributes: attrs(i),
                value: Some(number_data_point::Value::AsInt((i * 7) as i64)),
                start_time_unix_nano: 1_764_000_000_000_000_000,
                ..Default::default()
            })
            .collect();
        metrics.push(Metric {
            name: format!("bench.requests.{m}"),
            description: "Requests.".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
    }
    let bounds = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
    for m in 0..5 {
        let data_points = (0..per)
            .map(|i| HistogramDataPoint {
                attributes: attrs(i),
                count: 11,
                sum: Some(i as f64 * 0.5),
                bucket_counts: vec![1; 11],
                explicit_bounds: bounds.clone(),
                ..Default::default()
            })
            .collect();
        metrics.push(Metric {
            name: format!("bench.duration.{m}"),
            description: "Durations.".into(),
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn deriver(n: usize) -> Deriver {
    let mut cfg = Config::default();
    cfg.store.max_series = 10 * n;
    cfg.store.max_series_bytes = usize::MAX / 2;
    cfg.store.max_series_per_metric = n;
    let d = deriver_of(&cfg);
    let now = geometra_sidecar::base::now_secs();
    let got = d.store().passthrough.ingest(&request(n), now);
    let _ = got;
    d
}

/// The formats and the Accept header that asks for each.
const FORMATS: [(&str, &str); 3] = [
    ("text", "text/plain"),
    ("openmetrics", "application/openmetrics-text; version=1.0.0"),
    (
        "protobuf",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
    ),
];

/// One 100k-series scrape in `fmt` (see the module comment), or
/// `GEOMETRA_SCRAPE_REPEAT` of them: then the CPU time (user and system) and
/// the minor page faults a scrape, from `/proc/self/stat`.
fn once(fmt: &str) {
    let Some((_, accept)) = FORMATS.iter().find(|(f, _)| *f == fmt) else {
        eprintln!("GEOMETRA_SCRAPE_ONCE: one of text, openmetrics, protobuf");
        std::process::exit(2);
    };
    let repeat: u32 = std::env::var("GEOMETRA_SCRAPE_REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
        .max(1);
    let d = deriver(100_000);
    let own = geometra_sidecar::telemetry::SelfMetrics::default();
    let (before, stat, t) = (
        ALLOCS.load(Ordering::Relaxed),
        stat(),
        std::time::Instant::now(),
    );
    let mut len = 0;
    for _ in 0..repeat {
        len = scrape(&d, &own, accept);
    }
    let (wall, after) = (t.elapsed() / repeat, stat_now(&stat, repeat));
    let allocs = (ALLOCS.load(Ordering::Relaxed) - before) / u64::from(repeat);
    eprintln!(
        "scrape_100k/{fmt}: {len} bytes, {allocs} allocations; a scrape: wall {wall:?}, {after}"
    );
}

/// (minor faults, user ticks, system ticks) of this process.
fn stat() -> [u64; 3] {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the command's closing parenthesis, from field 3 on
    let rest = s.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i - 3).copied().unwrap_or(0);
    [at(10), at(14), at(15)]
}

/// What changed since `then`, a scrape (ticks are 10 ms).
fn stat_now(then: &[u64; 3], repeat: u32) -> String {
    let now = stat();
    let per = |i: usize| (now[i] - then[i]) as f64 / f64::from(repeat);
    format!(
        "user {:.1} ms, system {:.1} ms, {:.0} minor faults",
        per(1) * 10.0,
        per(2) * 10.0,
        per(0)
    )
}

/// One scrape as the server renders it: the body's length.
fn scrape(d: &Deriver, own: &geometra_sidecar::telemetry::SelfMetrics, accept: &str) -> usize {
    let f = geometra_sidecar::metrics::encode::negotiate(accept);
    let mut len = 0;
    geometra_sidecar::server::render_chunks(d, own, f, geometra_sidecar::server::CHUNK, &mut |p| {
        len += p.len();
        true
    });
    len
}

fn bench(c: &mut Criterion) {
    for n in [10_000usize, 100_000] {
        let d = deriver(n);
        // the self-metrics are a few dozen families beside n series: left out
        let own = geometra_sidecar::telemetry::SelfMetrics::default();
        let mut g = c.benchmark_group(format!("scrape_{}k", n / 1000));
        g.throughput(Throughput::Elements(n as u64));
        for (fmt, accept) in FORMATS {
            let before = ALLOCS.load(Ordering::Relaxed);
            let len = scrape(&d, &own, accept);
            let allocs = ALLOCS.load(Ordering::Relaxed) - before;
            eprintln!(
                "scrape_{}k/{fmt}: {len} bytes, {allocs} allocations",
                n / 1000
            );
            g.bench_function(fmt, |b| b.iter(|| scrape(&d, &own, accept)));
        }
        g.finish();
    }
}

/// The deriver the binary builds from a config, with its store.
fn deriver_of(cfg: &Config) -> Deriver {
    let store = std::sync::Arc::new(geometra_sidecar::metrics::Store::new(
        &cfg.store,
        &cfg.passthrough,
    ));
    Deriver::new(&cfg.derive(), store)
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
fn main() {
    geometra_sidecar::allocator::tune();
    if let Ok(fmt) = std::env::var("GEOMETRA_SCRAPE_ONCE") {
        once(&fmt);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
