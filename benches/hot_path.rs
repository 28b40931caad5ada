//! The hot path in isolation: walking and deriving a 512-span request (and a
//! 512-record log request) against the default rules, beside a full prost
//! decode of the same bytes for scale. `cargo bench --bench hot_path`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use geometra_sidecar::config::Config;
use geometra_sidecar::derive::Deriver;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use requests::{logs, map_body_logs, spans, N};
use std::hint::black_box;

#[path = "common/requests.rs"]
#[allow(dead_code)]
mod requests;

fn bench(c: &mut Criterion) {
    let d = deriver(&Config::default());
    let traces = spans();
    let logs = logs();
    let map_logs = map_body_logs();
    let mut g = c.benchmark_group("traces_512");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("walk_and_derive_default_rules", |b| {
        b.iter(|| d.traces(black_box(&traces)).map(|o| o.items))
    });
    g.bench_function("walk_only_default_keys", |b| {
        let mut keys = geometra_sidecar::derive::wire::KeyTable::default();
        for k in [
            "http.request.method",
            "http.method",
            "http.route",
            "http.response.status_code",
            "http.status_code",
            "gen_ai.operation.name",
            "error.type",
            "memory.operation",
            "enduser.id",
            "user.id",
            "user_id",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
        ] {
            keys.slot(k);
        }
        b.iter(|| {
            let mut slots = Vec::new();
            let mut n = 0u64;
            geometra_sidecar::derive::wire::walk_traces(
                black_box(&traces),
                &keys,
                &[],
                geometra_sidecar::receiver::validate::DEFAULT_VALUE_DEPTH,
                &mut slots,
                |i, _| n += i.end - i.start,
            )
            .map(|_| n)
        })
    });
    g.bench_function("prost_decode_only", |b| {
        b.iter(|| {
            ExportTraceServiceRequest::decode(black_box(&traces[..]))
                .map(|r| r.resource_spans.len())
        })
    });
    g.finish();
    let mut g = c.benchmark_group("logs_512");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("walk_and_derive_default_rules", |b| {
        b.iter(|| d.logs(black_box(&logs)).map(|o| o.items))
    });
    g.bench_function("prost_decode_only", |b| {
        b.iter(|| {
            ExportLogsServiceRequest::decode(black_box(&logs[..])).map(|r| r.resource_logs.len())
        })
    });
    g.bench_function("map_body_walk_and_derive_default_rules", |b| {
        b.iter(|| d.logs(black_box(&map_logs)).map(|o| o.items))
    });
    g.finish();
    // the whole /metrics body: the store's families and the self-metrics,
    // collected through the OpenTelemetry SDK's manual reader
    let own = self_metrics(&d);
    let mut g = c.benchmark_group("scrape");
    g.bench_function("render_text", |b| {
        b.iter(|| {
            geometra_sidecar::metrics::encode::render(
                d.store(),
                &geometra_sidecar::metrics::own::families(&own),
                false,
            )
            .len()
        })
    });
    g.bench_function("self_metrics_families", |b| {
        b.iter(|| geometra_sidecar::metrics::own::families(&own).len())
    });
    g.finish();
}

/// The self-metrics /metrics shows, declared as the binary declares them
/// (without exporters: the bench has none).
fn self_metrics(d: &Deriver) -> geometra_sidecar::telemetry::SelfMetrics {
    use geometra_sidecar::metrics::{self, passthrough::Passthrough};
    use geometra_sidecar::receiver::stats::{ListenerStats, Transports};
    use std::sync::Arc;
    let t = geometra_sidecar::telemetry::SelfMetrics::default();
    let store = d.store();
    Transports::declare(&t, &Arc::default());
    let listeners = ["otlp_grpc", "otlp_http", "metrics"].map(ListenerStats::new);
    ListenerStats::declare(&t, &listeners);
    Arc::new(geometra_sidecar::reload::ReloadStats::default()).declare(&t);
    metrics::Store::declare(&t, store);
    let rules = Arc::new(deriver(&Config::default()));
    Deriver::declare_skipped(&t, move || rules.clone());
    Passthrough::declare(&t, store);
    geometra_sidecar::telemetry::process::declare(&t, geometra_sidecar::base::now_secs());
    t
}

/// The deriver the binary builds from a config, with its store.
fn deriver(cfg: &Config) -> Deriver {
    let store = std::sync::Arc::new(geometra_sidecar::metrics::Store::new(
        &cfg.store,
        &cfg.passthrough,
    ));
    Deriver::new(&cfg.derive(), store)
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
