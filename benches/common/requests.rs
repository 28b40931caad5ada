//! The bench requests shared by `benches/hot_path.rs` and the callgrind
//! per-span driver (`examples/per_span.rs`): one 512-span request like the
//! shared loadgen's and a 512-record log request, as OTLP protobuf bytes.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

pub const N: usize = 512;

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
pub fn spans() -> Vec<u8> {
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

pub fn logs() -> Vec<u8> {
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
pub fn map_body_logs() -> Vec<u8> {
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
