//! The metric contract of MISSION.md, end to end: telemetry sent by the real
//! OpenTelemetry SDKs through the opentelemetry-otlp exporter, read back from
//! `/metrics` with a Prometheus text parser.

use crate::common;

use common::{Metrics, Sidecar};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::Resource;
use std::time::{Duration, SystemTime};

fn resource() -> Resource {
    Resource::builder()
        .with_service_name("geometra-api")
        .build()
}

/// One span as a test describes it (also genai.rs's).
pub(crate) struct S {
    name: &'static str,
    kind: SpanKind,
    attrs: Vec<KeyValue>,
    millis: u64,
    pub(crate) error: bool,
}

pub(crate) fn s(name: &'static str, kind: SpanKind, millis: u64, attrs: Vec<KeyValue>) -> S {
    S {
        name,
        kind,
        attrs,
        millis,
        error: false,
    }
}

/// Sends spans through the SDK's tracer and the OTLP/gRPC exporter.
pub(crate) async fn send_spans(url: String, spans: Vec<S>) {
    tokio::task::spawn_blocking(move || {
        let provider = common::sdk::tracer_provider(&url, resource());
        let tracer = provider.tracer("contract-test");
        let t0 = SystemTime::now() - Duration::from_secs(30);
        for sp in spans {
            let mut span = tracer
                .span_builder(sp.name)
                .with_kind(sp.kind)
                .with_start_time(t0)
                .with_attributes(sp.attrs)
                .start(&tracer);
            if sp.error {
                span.set_status(Status::error("boom"));
            }
            span.end_with_timestamp(t0 + Duration::from_millis(sp.millis));
        }
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .expect("span sender");
}

/// One log record as a test describes it.
struct L {
    event_name: Option<&'static str>,
    body: Option<&'static str>,
    /// a map body, as Python's logging handler sends `logger.info({...})`
    map_body: Vec<(&'static str, AnyValue)>,
    attrs: Vec<(&'static str, &'static str)>,
    severity: Severity,
}

fn l(
    event_name: Option<&'static str>,
    body: Option<&'static str>,
    attrs: Vec<(&'static str, &'static str)>,
) -> L {
    L {
        event_name,
        body,
        map_body: Vec::new(),
        attrs,
        severity: Severity::Info,
    }
}

/// A record whose body is a map (and nothing else).
fn map_body(pairs: Vec<(&'static str, AnyValue)>) -> L {
    L {
        map_body: pairs,
        ..l(None, None, vec![])
    }
}

/// Sends log records through the SDK's logger and the OTLP/gRPC exporter.
async fn send_logs(url: String, logs: Vec<L>) {
    tokio::task::spawn_blocking(move || {
        let provider = common::sdk::logger_provider(&url, resource());
        let logger = provider.logger("geometra.ai");
        for lg in logs {
            let mut r = logger.create_log_record();
            if let Some(e) = lg.event_name {
                r.set_event_name(e);
            }
            if let Some(b) = lg.body {
                r.set_body(AnyValue::from(b.to_string()));
            }
            if !lg.map_body.is_empty() {
                let m = lg.map_body.into_iter().map(|(k, v)| (k.into(), v));
                r.set_body(AnyValue::Map(Box::new(m.collect())));
            }
            r.set_severity_number(lg.severity);
            for (k, v) in lg.attrs {
                r.add_attribute(k, v.to_string());
            }
            logger.emit(r);
        }
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .expect("log sender");
}

fn kv(k: &'static str, v: &'static str) -> KeyValue {
    KeyValue::new(k, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_spans_with_new_and_old_attribute_names() {
    let sc = Sidecar::start("").await;
    send_spans(
        sc.grpc_url(),
        vec![
            s(
                "GET /api/chat",
                SpanKind::Server,
                30,
                vec![
                    kv("http.request.method", "GET"),
                    kv("http.route", "/api/chat"),
                    KeyValue::new("http.response.status_code", 200),
                ],
            ),
            // the older names the Python instrumentations still send
            s(
                "POST /api/memory/{id}",
                SpanKind::Server,
                1500,
                vec![
                    kv("http.method", "POST"),
                    kv("http.route", "/api/memory/{id}"),
                    KeyValue::new("http.status_code", 503),
                ],
            ),
            // untemplated: never counted under its raw path
            s(
                "GET",
                SpanKind::Server,
                10,
                vec![
                    kv("http.request.method", "GET"),
                    kv("url.path", "/api/users/12345"),
                    KeyValue::new("http.response.status_code", 404),
                ],
            ),
            // a client span is not a served request
            s(
                "GET",
                SpanKind::Client,
                10,
                vec![
                    kv("http.request.method", "GET"),
                    kv("http.route", "/upstream"),
                    KeyValue::new("http.response.status_code", 200),
                ],
            ),
        ],
    )
    .await;
    let m = sc
        .wait_for("4 spans accepted", |m| {
            m.sum(
                "otelcol_receiver_accepted_spans_total",
                &[("transport", "grpc")],
            ) >= 4.0
        })
        .await;
    assert_eq!(
        m.value(
            "http_requests_total",
            &[
                ("method", "GET"),
                ("endpoint", "/api/chat"),
                ("status", "200")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "http_requests_total",
            &[
                ("method", "POST"),
                ("endpoint", "/api/memory/{id}"),
                ("status", "503")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.sum("http_requests_total", &[]),
        2.0,
        "only the two templated server spans count"
    );
    assert!(
        !m.text.contains("/api/users/12345"),
        "a raw path became a label:\n{}",
        m.text
    );
    assert!(!m.text.contains("/upstream"), "a client span was counted");
    // histogram: 30 ms falls in le=0.05 not 0.025; 1.5 s in le=2.5 not 1
    let b = m
        .buckets(
            "http_request_duration_seconds",
            &[("method", "GET"), ("endpoint", "/api/chat")],
        )
        .expect("histogram");
    let at = |le: f64| {
        b.iter()
            .find(|(l, _)| (*l - le).abs() < 1e-9)
            .map(|(_, c)| *c)
    };
    assert_eq!(at(0.025), Some(0.0));
    assert_eq!(at(0.05), Some(1.0));
    assert_eq!(b.len(), 15, "14 bounds and +Inf: {b:?}");
    let b = m
        .buckets("http_request_duration_seconds", &[("method", "POST")])
        .expect("histogram");
    assert_eq!(b.iter().find(|(l, _)| *l == 1.0).map(|x| x.1), Some(0.0));
    assert_eq!(b.iter().find(|(l, _)| *l == 2.5).map(|x| x.1), Some(1.0));
    let sum = m
        .value("http_request_duration_seconds_sum", &[("method", "POST")])
        .expect("sum");
    assert!((sum - 1.5).abs() < 1e-6, "sum {sum}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_spans_count_by_type_and_outcome_with_tokens() {
    let sc = Sidecar::start("").await;
    let mut failed = s(
        "embeddings",
        SpanKind::Client,
        50,
        vec![kv("gen_ai.operation.name", "embeddings")],
    );
    failed.error = true;
    send_spans(
        sc.grpc_url(),
        vec![
            s(
                "chat gpt-4o-mini",
                SpanKind::Client,
                1200,
                vec![
                    kv("gen_ai.operation.name", "chat"),
                    KeyValue::new("gen_ai.usage.input_tokens", 100),
                    KeyValue::new("gen_ai.usage.output_tokens", 40),
                ],
            ),
            s(
                "chat",
                SpanKind::Client,
                90,
                vec![kv("gen_ai.operation.name", "chat"), kv("error.type", "429")],
            ),
            failed,
        ],
    )
    .await;
    let m = sc
        .wait_for("3 spans", |m| {
            m.sum("otelcol_receiver_accepted_spans_total", &[]) >= 3.0
        })
        .await;
    assert_eq!(
        m.value(
            "ai_requests_total",
            &[("type", "chat"), ("status", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "ai_requests_total",
            &[("type", "chat"), ("status", "error")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "ai_requests_total",
            &[("type", "embeddings"), ("status", "error")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("ai_request_duration_seconds_count", &[("type", "chat")]),
        Some(2.0)
    );
    let b = m
        .buckets("ai_request_duration_seconds", &[("type", "chat")])
        .expect("histogram");
    assert_eq!(
        b.iter()
            .find(|(l, _)| (*l - 81.92).abs() < 1e-9)
            .map(|x| x.1),
        Some(2.0),
        "GenAI buckets: {b:?}"
    );
    assert_eq!(
        b.iter()
            .find(|(l, _)| (*l - 0.64).abs() < 1e-9)
            .map(|x| x.1),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "ai_tokens_total",
            &[("type", "chat"), ("token_type", "input")]
        ),
        Some(100.0)
    );
    assert_eq!(
        m.value(
            "ai_tokens_total",
            &[("type", "chat"), ("token_type", "output")]
        ),
        Some(40.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_operations_from_spans_and_from_ailogger_records() {
    let sc = Sidecar::start("").await;
    send_spans(
        sc.grpc_url(),
        vec![s(
            "memory.store",
            SpanKind::Internal,
            5,
            vec![kv("memory.operation", "store")],
        )],
    )
    .await;
    let mut failed = l(
        Some("memory_operation"),
        None,
        vec![("operation", "store"), ("user_id", "u-7")],
    );
    failed.severity = Severity::Error;
    send_logs(
        sc.grpc_url(),
        vec![
            // event name field
            l(Some("memory_operation"), None, vec![("operation", "retrieve"), ("user_id", "u-1")]),
            // the event as a string body (structlog with a plain renderer)
            l(None, Some("memory_operation"), vec![("operation", "search")]),
            // structlog's JSONRenderer: the whole event dict as a JSON body
            l(None, Some(r#"{"event": "memory_operation", "operation": "delete", "user_id": "u-2", "content": "x"}"#), vec![]),
            // not a memory operation
            l(Some("chat_interaction"), None, vec![("operation", "store"), ("user_id", "u-3")]),
            l(None, Some(r#"{"event": "chat_interaction", "operation": "store"}"#), vec![]),
            failed,
        ],
    )
    .await;
    let m = sc
        .wait_for("1 span and 6 log records", |m| {
            m.sum("otelcol_receiver_accepted_spans_total", &[]) >= 1.0
                && m.sum("otelcol_receiver_accepted_log_records_total", &[]) >= 6.0
        })
        .await;
    let op = |o: &str, st: &str| {
        m.value(
            "memory_operations_total",
            &[("operation", o), ("status", st)],
        )
    };
    assert_eq!(op("store", "success"), Some(1.0), "from the span");
    assert_eq!(op("retrieve", "success"), Some(1.0), "from event_name");
    assert_eq!(op("search", "success"), Some(1.0), "from a string body");
    assert_eq!(op("delete", "success"), Some(1.0), "from a JSON body");
    assert_eq!(
        op("store", "error"),
        Some(1.0),
        "an ERROR record is a failed operation"
    );
    assert_eq!(m.sum("memory_operations_total", &[]), 5.0);
}

/// Python's `logger.info({"event": "memory_operation", ...})` through the
/// OpenTelemetry logging handler arrives as a map (kvlist) body: it counts
/// exactly like structlog's JSON string body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_operations_from_map_bodies() {
    let sc = Sidecar::start("").await;
    let s = |v: &str| AnyValue::from(v.to_string());
    let mut failed = map_body(vec![
        ("event", s("memory_operation")),
        ("operation", s("store")),
    ]);
    failed.severity = Severity::Error;
    send_logs(
        sc.grpc_url(),
        vec![
            map_body(vec![
                ("event", s("memory_operation")),
                ("operation", s("archive")),
                ("user_id", s("u1")),
            ]),
            // winston's and structlog's EventRenamer key
            map_body(vec![
                ("message", s("memory_operation")),
                ("operation", s("search")),
                ("status", s("timeout")),
            ]),
            // nested maps are not read; a non-string event names nothing
            map_body(vec![
                ("event", AnyValue::Int(1)),
                ("operation", s("store")),
                (
                    "meta",
                    AnyValue::Map(Box::new([("event".into(), s("memory_operation"))].into())),
                ),
            ]),
            map_body(vec![
                ("event", s("chat_interaction")),
                ("operation", s("store")),
            ]),
            failed,
        ],
    )
    .await;
    let m = sc
        .wait_for("5 log records", |m| {
            m.sum("otelcol_receiver_accepted_log_records_total", &[]) >= 5.0
        })
        .await;
    let text = sc.scrape_text().await;
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("memory_operations_total{"))
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            r#"memory_operations_total{operation="archive",status="success"} 1"#,
            r#"memory_operations_total{operation="search",status="timeout"} 1"#,
            r#"memory_operations_total{operation="store",status="error"} 1"#,
        ]
    );
    assert_eq!(
        m.value("active_users", &[]),
        Some(1.0),
        "user_id from the map body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_users_counts_distinct_ids_and_never_labels_them() {
    let sc = Sidecar::start("").await;
    send_spans(
        sc.grpc_url(),
        vec![
            s(
                "a",
                SpanKind::Server,
                5,
                vec![kv("http.route", "/a"), kv("enduser.id", "alice-4711")],
            ),
            s(
                "b",
                SpanKind::Server,
                5,
                vec![kv("http.route", "/a"), kv("enduser.id", "alice-4711")],
            ),
            s("c", SpanKind::Internal, 5, vec![kv("user.id", "bob-4712")]),
        ],
    )
    .await;
    send_logs(
        sc.grpc_url(),
        vec![
            l(Some("chat_interaction"), None, vec![("user_id", "carol-4713")]),
            l(None, Some(r#"{"event": "memory_operation", "operation": "store", "user_id": "dave-4714"}"#), vec![]),
            l(None, None, vec![("user_id", "bob-4712")]),
        ],
    )
    .await;
    let m = sc
        .wait_for("4 users", |m| m.value("active_users", &[]) == Some(4.0))
        .await;
    for id in ["alice-4711", "bob-4712", "carol-4713", "dave-4714"] {
        assert!(!m.text.contains(id), "user id {id} leaked into /metrics");
    }
    // the fleet sketch (issue 21): each id's register, under the default
    // fleet key, holds at least its rank; m = 2^10
    use geometra_sidecar::metrics::sketch::{register_rank, FleetHash, DEFAULT_KEY};
    let h = FleetHash::new(&DEFAULT_KEY);
    let mut regs = std::collections::BTreeMap::new();
    for id in ["alice-4711", "bob-4712", "carol-4713", "dave-4714"] {
        let (reg, rank) = register_rank(h.hash(id.as_bytes()), 10);
        let r = regs.entry(reg.to_string()).or_insert(0.0f64);
        *r = r.max(f64::from(rank));
    }
    for (reg, rank) in &regs {
        let got = m.value("active_users_sketch", &[("register", reg)]);
        assert_eq!(got, Some(*rank), "register {reg}: {}", m.text);
    }
    let n = m
        .text
        .lines()
        .filter(|l| l.starts_with("active_users_sketch{"))
        .count();
    assert_eq!(n, regs.len(), "{}", m.text);
    assert_eq!(m.value("active_users_sketch_registers", &[]), Some(1024.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_metrics_pass_through_with_prometheus_names() {
    let sc = Sidecar::start("").await;
    let url = sc.grpc_url();
    tokio::task::spawn_blocking(move || {
        let provider = common::sdk::meter_provider(&url, resource());
        let meter = provider.meter("geometra.memory");
        let size = meter
            .u64_gauge("memory.size")
            .with_unit("By")
            .with_description("memory store size")
            .build();
        size.record(123_456, &[]);
        let chats = meter.u64_counter("geometra.chat.messages").build();
        chats.add(3, &[KeyValue::new("model", "gpt-4o-mini")]);
        let lat = meter
            .f64_histogram("geometra.embedding.latency")
            .with_unit("s")
            .build();
        lat.record(0.2, &[]);
        provider.force_flush().expect("flush");
        let _ = provider.shutdown();
    })
    .await
    .expect("metric sender");
    let m = sc
        .wait_for("memory_size_bytes", |m| {
            m.value("memory_size_bytes", &[]).is_some()
        })
        .await;
    assert_eq!(m.value("memory_size_bytes", &[]), Some(123_456.0));
    assert_eq!(
        m.value("geometra_chat_messages_total", &[("model", "gpt-4o-mini")]),
        Some(3.0)
    );
    assert_eq!(
        m.value("geometra_embedding_latency_seconds_count", &[]),
        Some(1.0)
    );
    assert!(m.text.contains("# TYPE memory_size_bytes gauge"));
    assert!(
        m.text.contains("target_info{"),
        "target_info from the resource"
    );
    assert!(m.sum("otelcol_receiver_accepted_metric_points_total", &[]) >= 3.0);
}

/// One app process exporting metrics through the SDK's OTLP exporter: a
/// cumulative counter and a gauge, pushed when the test says so.
#[derive(Clone)]
struct AppProcess {
    provider: SdkMeterProvider,
    chats: opentelemetry::metrics::Counter<u64>,
    size: opentelemetry::metrics::Gauge<u64>,
}

impl AppProcess {
    async fn start(url: String, resource: Vec<KeyValue>) -> AppProcess {
        tokio::task::spawn_blocking(move || {
            let resource = Resource::builder_empty().with_attributes(resource).build();
            let provider = common::sdk::meter_provider(&url, resource);
            let meter = provider.meter("geometra.api");
            let chats = meter.u64_counter("geometra.chat.messages").build();
            let size = meter.u64_gauge("memory.size").with_unit("By").build();
            AppProcess {
                provider,
                chats,
                size,
            }
        })
        .await
        .expect("meter provider")
    }

    /// Adds to the counter, sets the gauge and exports now.
    async fn push(&self, add: u64, size: u64) {
        let p = self.clone();
        tokio::task::spawn_blocking(move || {
            p.chats.add(add, &[]);
            p.size.record(size, &[]);
            p.provider.force_flush().expect("flush");
        })
        .await
        .expect("push");
    }
}

/// `uvicorn --workers 2` (each worker its own service.instance.id) and two
/// Node workers (no instance id, different process.pid) export the same
/// counter and gauge: every process keeps its own series, so the counter
/// never flips between processes' values (no false resets in Prometheus).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_of_one_service_never_overwrite_each_other() {
    let sc = Sidecar::start("").await;
    let api = |id: &'static str| {
        vec![
            KeyValue::new("service.name", "geometra-api"),
            KeyValue::new("service.instance.id", id),
        ]
    };
    let web = |pid: i64| {
        vec![
            KeyValue::new("service.name", "geometra-web"),
            KeyValue::new("host.name", "pod-a"),
            KeyValue::new("process.pid", pid),
        ]
    };
    let procs = [
        AppProcess::start(sc.grpc_url(), api("w1")).await,
        AppProcess::start(sc.grpc_url(), api("w2")).await,
        AppProcess::start(sc.grpc_url(), web(101)).await,
        AppProcess::start(sc.grpc_url(), web(102)).await,
    ];
    let series = [
        ("geometra-api", "w1"),
        ("geometra-api", "w2"),
        ("geometra-web", "pod-a:101"),
        ("geometra-web", "pod-a:102"),
    ];
    // per process: (first add, later adds, gauge)
    let plan: [(u64, u64, u64); 4] = [
        (103, 1, 5_000_000),
        (3, 1, 1_000_000),
        (50, 5, 7),
        (1, 2, 9),
    ];
    // what each process has exported so far: (counter total, gauge)
    let mut sent: [Option<(u64, u64)>; 4] = [None; 4];
    for round in 0..3u64 {
        for (i, p) in procs.iter().enumerate() {
            let add = if round == 0 { plan[i].0 } else { plan[i].1 };
            let total = sent[i].map_or(0, |(t, _)| t) + add;
            sent[i] = Some((total, plan[i].2 + round));
            p.push(add, plan[i].2 + round).await;
            let (job, inst) = series[i];
            let m = sc
                .wait_for("the pushed value", |m| {
                    m.value(
                        "geometra_chat_messages_total",
                        &[("job", job), ("instance", inst)],
                    ) == Some(total as f64)
                })
                .await;
            // every process's series still holds its own last value
            for (j, (job, inst)) in series.iter().enumerate() {
                let l = [("job", *job), ("instance", *inst)];
                let got = (
                    m.value("geometra_chat_messages_total", &l),
                    m.value("memory_size_bytes", &l),
                );
                let want = sent[j].map(|(t, g)| (t as f64, g as f64));
                assert_eq!(
                    got,
                    (want.map(|w| w.0), want.map(|w| w.1)),
                    "round {round}, after process {i}: {job} {inst}"
                );
            }
        }
    }
    let text = sc.scrape_text().await;
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("geometra_chat_messages_total{"))
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            r#"geometra_chat_messages_total{instance="pod-a:101",job="geometra-web"} 60"#,
            r#"geometra_chat_messages_total{instance="pod-a:102",job="geometra-web"} 5"#,
            r#"geometra_chat_messages_total{instance="w1",job="geometra-api"} 105"#,
            r#"geometra_chat_messages_total{instance="w2",job="geometra-api"} 5"#,
        ]
    );
    for p in procs {
        let _ = tokio::task::spawn_blocking(move || p.provider.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_cap_sends_the_rest_to_one_overflow_series() {
    let sc = Sidecar::start("store:\n  max_series_per_metric: 5\n").await;
    let spans = (0..20)
        .map(|i| {
            let route: &'static str = Box::leak(format!("/r/{i}").into_boxed_str());
            s(
                "x",
                SpanKind::Server,
                5,
                vec![
                    kv("http.route", route),
                    kv("http.request.method", "GET"),
                    KeyValue::new("http.response.status_code", 200),
                ],
            )
        })
        .collect();
    send_spans(sc.grpc_url(), spans).await;
    let m = sc
        .wait_for("20 spans", |m| {
            m.sum("otelcol_receiver_accepted_spans_total", &[]) >= 20.0
        })
        .await;
    let sets = m.label_sets("http_requests_total");
    assert_eq!(sets.len(), 6, "5 series and the overflow series: {sets:?}");
    assert_eq!(
        m.value("http_requests_total", &[("otel_metric_overflow", "true")]),
        Some(15.0)
    );
    assert_eq!(
        m.sum("http_requests_total", &[]),
        20.0,
        "nothing lost in the overflow"
    );
    assert_eq!(
        m.value(
            "geometra_sidecar_series_overflow_total",
            &[("metric", "http_requests_total")]
        ),
        Some(15.0)
    );
    assert_eq!(
        m.value(
            "geometra_sidecar_series",
            &[("metric", "http_requests_total")]
        ),
        Some(6.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_rules_add_metrics() {
    let cfg = r#"
extra_rules:
  - name: geometra_feedback_total
    help: Thumbs up and down on answers
    kind: counter
    signal: logs
    match:
      event_name: feedback
    labels:
      - name: rating
        from: [rating]
        default: none
  - name: ai_prompt_tokens
    kind: histogram
    signal: spans
    match:
      attributes_present: [gen_ai.operation.name]
      attributes_equal: {gen_ai.request.model: gpt-4o-mini}
    labels:
      - name: model
        from: [gen_ai.request.model]
    value: attribute
    value_from: [gen_ai.usage.input_tokens]
    buckets: [10, 100, 1000]
"#;
    let sc = Sidecar::start(cfg).await;
    send_logs(
        sc.grpc_url(),
        vec![
            l(Some("feedback"), None, vec![("rating", "up")]),
            l(Some("feedback"), None, vec![]),
        ],
    )
    .await;
    send_spans(
        sc.grpc_url(),
        vec![
            s(
                "chat",
                SpanKind::Client,
                5,
                vec![
                    kv("gen_ai.operation.name", "chat"),
                    kv("gen_ai.request.model", "gpt-4o-mini"),
                    KeyValue::new("gen_ai.usage.input_tokens", 50),
                ],
            ),
            s(
                "chat",
                SpanKind::Client,
                5,
                vec![
                    kv("gen_ai.operation.name", "chat"),
                    kv("gen_ai.request.model", "other"),
                    KeyValue::new("gen_ai.usage.input_tokens", 5),
                ],
            ),
        ],
    )
    .await;
    let m = sc
        .wait_for("logs and spans", |m| {
            m.sum("otelcol_receiver_accepted_log_records_total", &[]) >= 2.0
                && m.sum("otelcol_receiver_accepted_spans_total", &[]) >= 2.0
        })
        .await;
    assert_eq!(
        m.value("geometra_feedback_total", &[("rating", "up")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("geometra_feedback_total", &[("rating", "none")]),
        Some(1.0)
    );
    let b = m
        .buckets("ai_prompt_tokens", &[("model", "gpt-4o-mini")])
        .expect("histogram");
    assert_eq!(
        b.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![0.0, 1.0, 1.0, 1.0]
    );
    assert!(
        m.buckets("ai_prompt_tokens", &[("model", "other")])
            .is_none(),
        "attributes_equal filters"
    );
    // the default rules still run
    assert_eq!(m.sum("ai_requests_total", &[]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_has_exemplars_with_trace_ids() {
    let sc = Sidecar::start("").await;
    send_spans(
        sc.grpc_url(),
        vec![s(
            "GET",
            SpanKind::Server,
            20,
            vec![
                kv("http.request.method", "GET"),
                kv("http.route", "/x"),
                KeyValue::new("http.response.status_code", 200),
            ],
        )],
    )
    .await;
    sc.wait_for("1 span", |m| {
        m.sum("otelcol_receiver_accepted_spans_total", &[]) >= 1.0
    })
    .await;
    let r = reqwest::Client::new()
        .get(format!("http://{}/metrics", sc.metrics))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .expect("scrape");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("application/openmetrics-text"));
    let text = r.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"));
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_request_duration_seconds_bucket") && l.contains("le=\"0.025\"")
        })
        .expect("bucket line");
    let ex = line
        .split(" # ")
        .nth(1)
        .expect("an exemplar on the bucket that got the observation");
    assert!(ex.starts_with("{trace_id=\""), "{line}");
    let tid = &ex[11..43];
    assert!(
        tid.chars().all(|c| c.is_ascii_hexdigit()) && tid != "00000000000000000000000000000000",
        "{line}"
    );
    assert!(
        text.contains("# TYPE http_requests counter"),
        "OpenMetrics counter family names drop _total"
    );
    let _ = Metrics::parse; // the text format is checked by the other tests
}

/// Delta sums and histograms are accumulated to cumulative; gzip-compressed
/// requests are accepted (sent as raw OTLP protobuf to control temporality).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_metrics_accumulate_and_gzip_is_accepted() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };
    use prost::Message;
    let sc = Sidecar::start("").await;
    let delta = AggregationTemporality::Delta as i32;
    let req = |n: i64| {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "geometra.uploads".into(),
                            unit: "{upload}".into(),
                            data: Some(metric::Data::Sum(Sum {
                                data_points: vec![NumberDataPoint {
                                    value: Some(number_data_point::Value::AsInt(n)),
                                    ..Default::default()
                                }],
                                aggregation_temporality: delta,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "geometra.upload.size".into(),
                            unit: "By".into(),
                            data: Some(metric::Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    count: 2,
                                    sum: Some(300.0),
                                    bucket_counts: vec![1, 1, 0],
                                    explicit_bounds: vec![100.0, 1000.0],
                                    ..Default::default()
                                }],
                                aggregation_temporality: delta,
                            })),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    };
    common::send_raw(&sc.grpc_url(), common::METRICS, req(5), true)
        .await
        .expect("gzip request accepted");
    common::send_raw(&sc.grpc_url(), common::METRICS, req(7), false)
        .await
        .expect("accepted");
    let m = sc.scrape().await;
    assert_eq!(
        m.value("geometra_uploads_total", &[]),
        Some(12.0),
        "5 + 7 as a cumulative counter"
    );
    assert_eq!(m.value("geometra_upload_size_bytes_count", &[]), Some(4.0));
    assert_eq!(m.value("geometra_upload_size_bytes_sum", &[]), Some(600.0));
    let b = m
        .buckets("geometra_upload_size_bytes", &[])
        .expect("histogram");
    assert_eq!(
        b.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![2.0, 4.0, 4.0]
    );
}

/// A rule can match on a span event (e.g. recorded exceptions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_match_span_events() {
    let cfg = "extra_rules:\n  - name: geometra_exceptions_total\n    kind: counter\n    signal: spans\n    match: {event_name: exception}\n    labels: [{name: endpoint, from: [http.route], default: none}]\n";
    let sc = Sidecar::start(cfg).await;
    let url = sc.grpc_url();
    tokio::task::spawn_blocking(move || {
        let provider = common::sdk::tracer_provider(&url, Resource::builder().build());
        let tracer = provider.tracer("events");
        let mut span = tracer
            .span_builder("GET /boom")
            .with_kind(SpanKind::Server)
            .with_attributes(vec![kv("http.route", "/boom")])
            .start(&tracer);
        span.add_event("exception", vec![kv("exception.type", "ValueError")]);
        span.end();
        let mut quiet = tracer
            .span_builder("GET /ok")
            .with_kind(SpanKind::Server)
            .with_attributes(vec![kv("http.route", "/ok")])
            .start(&tracer);
        quiet.add_event("cache.miss", vec![]);
        quiet.end();
        provider.force_flush().expect("flush");
        let _ = provider.shutdown();
    })
    .await
    .expect("sender");
    let m = sc
        .wait_for("2 spans", |m| {
            m.sum("otelcol_receiver_accepted_spans_total", &[]) >= 2.0
        })
        .await;
    assert_eq!(
        m.value("geometra_exceptions_total", &[("endpoint", "/boom")]),
        Some(1.0)
    );
    assert_eq!(m.sum("geometra_exceptions_total", &[]), 1.0);
}

/// Series not updated within store.series_ttl disappear (and are counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_series_expire() {
    let sc = Sidecar::start("store:\n  series_ttl: 2s\n").await;
    send_spans(
        sc.grpc_url(),
        vec![s(
            "GET",
            SpanKind::Server,
            5,
            vec![kv("http.route", "/old")],
        )],
    )
    .await;
    let m = sc
        .wait_for("the series", |m| {
            m.value("http_requests_total", &[("endpoint", "/old")])
                .is_some()
        })
        .await;
    assert_eq!(
        m.value(
            "geometra_sidecar_series",
            &[("metric", "http_requests_total")]
        ),
        Some(1.0)
    );
    let m = sc
        .wait_for("expiry", |m| {
            m.value("http_requests_total", &[("endpoint", "/old")])
                .is_none()
        })
        .await;
    assert_eq!(
        m.value(
            "geometra_sidecar_series_expired_total",
            &[("metric", "http_requests_total")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "geometra_sidecar_series",
            &[("metric", "http_requests_total")]
        ),
        Some(0.0)
    );
}

/// Issue 21: the sketch forgets with the exact count's window. Both fall to
/// nothing once the ids age out: `active_users` at the window, the registers
/// at most one slice (window / 10, at least 1 s) later; a scrape then shows
/// no `active_users_sketch` series at all (absent registers are 0) and still
/// `active_users_sketch_registers`, so the fleet rule estimates 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sketch_registers_fall_when_users_age_out() {
    let sc = Sidecar::start("store:\n  active_users_window: 4s\n").await;
    let users = ["erin-1", "frank-2", "grace-3"];
    let spans = users
        .iter()
        .map(|u| s("a", SpanKind::Server, 5, vec![kv("enduser.id", u)]))
        .collect();
    send_spans(sc.grpc_url(), spans).await;
    let sketch_lines = |m: &Metrics| {
        m.text
            .lines()
            .filter(|l| l.starts_with("active_users_sketch{"))
            .count()
    };
    let m = sc
        .wait_for("3 users", |m| m.value("active_users", &[]) == Some(3.0))
        .await;
    assert!(sketch_lines(&m) >= 1, "{}", m.text);
    let m = sc
        .wait_for("users and registers aged out", |m| {
            m.value("active_users", &[]) == Some(0.0) && sketch_lines(m) == 0
        })
        .await;
    assert_eq!(m.value("active_users_sketch_registers", &[]), Some(1024.0));
}
