//! The hot path in isolation: walking and deriving a 512-span request (and a
//! 512-record log request) against the default rules, beside a full prost
//! decode of the same bytes for scale. `cargo bench --bench hot_path`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use geometra_sidecar::config::Config;
use geometra_sidecar::derive::Deriver;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::hint::black_box;

const N: usize = 512;

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}
fn i(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            s("service.name", "geometra-api"),
            s("service.version", "1.4.2"),
            s("k8s.pod.name", "geometra-api-7d9f8c6b5-x2x9q"),
        ],
        ..Default::default()
    })
}

/// 70% HTTP server spans, 15% GenAI, 10% memory, 5% other, as in the shared load generator.
fn spans() -> Vec<u8> {
    let spans = (0..N)
        .map(|n| {
            let user = format!("user-{}", n % 97);
            let mut sp = Span {
                trace_id: vec![n as u8; 16],
                span_id: vec![n as u8; 8],
                start_time_unix_nano: 1_764_000_000_000_000_000,
                end_time_unix_nano: 1_764_000_000_000_000_000 + (n as u64 % 400) * 1_000_000,
                ..Default::default()
            };
            match n % 20 {
                0..=13 => {
                    let route = format!("/api/v1/resource{}/{{id}}", n % 12);
                    sp.name = format!("GET {route}");
                    sp.kind = 2;
                    sp.attributes = vec![
                        s(
                            "http.request.method",
                            ["GET", "POST", "PUT", "DELETE"][n % 4],
                        ),
                        s("http.route", &route),
                        s("url.path", &route.replace("{id}", &n.to_string())),
                        s("url.scheme", "http"),
                        i(
                            "http.response.status_code",
                            [200, 200, 201, 404, 500][n % 5],
                        ),
                        s("server.address", "geometra-api"),
                        i("server.port", 8000),
                        s("client.address", "10.0.3.17"),
                        s(
                            "user_agent.original",
                            "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
                        ),
                        s("enduser.id", &user),
                    ];
                }
                14..=16 => {
                    sp.kind = 3;
                    sp.name = "chat gpt-4o-mini".into();
                    sp.attributes = vec![
                        s(
                            "gen_ai.operation.name",
                            if n % 4 == 0 { "embeddings" } else { "chat" },
                        ),
                        s("gen_ai.provider.name", "openai"),
                        s("gen_ai.request.model", "gpt-4o-mini"),
                        i("gen_ai.usage.input_tokens", 1200),
                        i("gen_ai.usage.output_tokens", 300),
                        s("enduser.id", &user),
                    ];
                }
                17 | 18 => {
                    sp.kind = 1;
                    sp.name = "memory.store".into();
                    sp.attributes = vec![
                        s("memory.operation", "store"),
                        i("memory.content.size", 1000),
                        s("enduser.id", &user),
                    ];
                }
                _ => {
                    sp.kind = 3;
                    sp.name = "SELECT geometra.memories".into();
                    sp.attributes = vec![
                        s("db.system.name", "postgresql"),
                        s("db.operation.name", "SELECT"),
                    ];
                }
            }
            sp
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn logs() -> Vec<u8> {
    let records = (0..N)
        .map(|n| {
            let mut r = LogRecord {
                time_unix_nano: 1,
                severity_number: 9,
                severity_text: "INFO".into(),
                ..Default::default()
            };
            let user = format!("user-{}", n % 97);
            if n % 2 == 0 {
                r.event_name = "chat_interaction".into();
                r.attributes = vec![
                    s("user_id", &user),
                    s("message", "How do I compute the area of a triangle?"),
                    s("response", "Heron's formula."),
                ];
            } else {
                r.event_name = "memory_operation".into();
                r.attributes = vec![
                    s("user_id", &user),
                    s(
                        "operation",
                        ["store", "retrieve", "search", "delete"][n % 4],
                    ),
                    s("content", "x"),
                ];
            }
            r
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// The same records as [`logs`], but the way Python's logging handler sends
/// `logger.info({"event": ..., ...})`: the fields in a map (kvlist) body.
fn map_body_logs() -> Vec<u8> {
    let mut req = ExportLogsServiceRequest::decode(&logs()[..]).unwrap_or_default();
    for rl in &mut req.resource_logs {
        for sl in &mut rl.scope_logs {
            for r in &mut sl.log_records {
                let mut values = vec![s("event", &std::mem::take(&mut r.event_name))];
                values.append(&mut r.attributes);
                r.body = Some(AnyValue {
                    value: Some(any_value::Value::KvlistValue(
                        opentelemetry_proto::tonic::common::v1::KeyValueList { values },
                    )),
                });
            }
        }
    }
    req.encode_to_vec()
}

fn bench(c: &mut Criterion) {
    let d = Deriver::new(&Config::default());
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
            geometra_sidecar::metrics::encode::render(d.store(), &own.families(), false).len()
        })
    });
    g.bench_function("self_metrics_families", |b| b.iter(|| own.families().len()));
    g.finish();
}

/// The self-metrics /metrics shows, declared as the binary declares them
/// (without exporters: the bench has none).
fn self_metrics(d: &Deriver) -> geometra_sidecar::telemetry::SelfMetrics {
    use geometra_sidecar::metrics::{self, passthrough::Passthrough, ListenerStats, ReceiverStats};
    let t = geometra_sidecar::telemetry::SelfMetrics::default();
    let store = d.store();
    ReceiverStats::declare(&t, store);
    ListenerStats::declare(&t, store);
    geometra_sidecar::reload::ReloadStats::declare(&t, store);
    metrics::Store::declare(&t, store);
    let rules = std::sync::Arc::new(Deriver::new(&Config::default()));
    Deriver::declare_skipped(&t, move || rules.clone());
    Passthrough::declare(&t, store);
    geometra_sidecar::telemetry::process::declare(&t, store.started_s);
    t
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
