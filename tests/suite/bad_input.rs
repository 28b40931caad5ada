//! Bad input never crashes, hangs or grows the sidecar: each case gets a clear
//! error to the sender or a counted drop, and the sidecar keeps serving.

use crate::common;

use common::{rss_kib, send_raw, Sidecar, LOGS, METRICS, TRACES};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::io::Write;
use tonic::Code;

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}
fn st(k: &str, v: &str) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn traces(spans: Vec<Span>) -> Vec<u8> {
    common::traces_request(spans)
}

fn server_span(route: &str, status: i64) -> Span {
    Span {
        kind: 2,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_010_000_000,
        attributes: vec![
            st("http.request.method", "GET"),
            st("http.route", route),
            kv(
                "http.response.status_code",
                any_value::Value::IntValue(status),
            ),
        ],
        ..Default::default()
    }
}

async fn still_serving(sc: &Sidecar) {
    let before = sc
        .scrape()
        .await
        .sum("otelcol_receiver_accepted_spans_total", &[]);
    let r = send_raw(
        &sc.grpc_url(),
        TRACES,
        traces(vec![server_span("/alive", 200)]),
        false,
    )
    .await;
    assert!(r.is_ok(), "the sidecar stopped serving: {r:?}");
    let m = sc.scrape().await;
    assert_eq!(
        m.sum("otelcol_receiver_accepted_spans_total", &[]),
        before + 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument_and_counted() {
    let sc = Sidecar::start("").await;
    let mut good = traces(vec![server_span("/a", 200), server_span("/b", 200)]);
    // a length prefix that runs past the end
    good.truncate(good.len() - 7);
    for (path, body) in [
        (TRACES, good.clone()),
        (LOGS, vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]),
        (METRICS, vec![0x0b, 0x00]), // wire type 3 (groups) is not OTLP
        (TRACES, vec![0xff; 16]),
    ] {
        let err = send_raw(&sc.grpc_url(), path, body, false)
            .await
            .expect_err("malformed must be refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
        assert!(
            err.message().contains("malformed"),
            "a clear message: {}",
            err.message()
        );
    }
    let m = sc.scrape().await;
    assert_eq!(
        m.sum(
            "geometra_sidecar_receiver_bad_requests_total",
            &[("transport", "grpc"), ("reason", "malformed")]
        ),
        4.0,
        "{}",
        m.text
    );
    // the truncated request changed nothing: no partial counts from its first span
    assert_eq!(m.value("http_requests_total", &[("endpoint", "/a")]), None);
    still_serving(&sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_compression_bombs_are_resource_exhausted() {
    let sc = Sidecar::start("receivers:\n  otlp_grpc:\n    max_message_bytes: 65536\n").await;
    let big: Vec<Span> = (0..2000)
        .map(|i| server_span(&format!("/route/{i}/padding-padding-padding"), 200))
        .collect();
    let body = traces(big);
    assert!(body.len() > 65536);
    let err = send_raw(&sc.grpc_url(), TRACES, body, false)
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("max_message_bytes"),
        "{}",
        err.message()
    );

    // 50 MiB of zeros compresses to ~50 KiB: under the limit on the wire,
    // far over it once inflated
    let mut zeros = Vec::new();
    {
        let mut enc = flate2::write::GzEncoder::new(&mut zeros, flate2::Compression::best());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..50 {
            enc.write_all(&chunk).expect("gzip");
        }
        enc.finish().expect("gzip");
    }
    assert!(zeros.len() < 65536, "bomb is {} bytes", zeros.len());
    // send the pre-compressed bytes as a compressed gRPC message
    let err = send_gzip_frame(&sc, zeros).await;
    assert_eq!(err, Some(Code::ResourceExhausted));
    let rss = rss_kib(sc.pid());
    assert!(
        rss < 64 * 1024,
        "inflating a bomb must not grow memory: RSS {rss} KiB"
    );
    let m = sc.scrape().await;
    let bad = |reason| {
        m.sum(
            "geometra_sidecar_receiver_bad_requests_total",
            &[
                ("transport", "grpc"),
                ("signal", "spans"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(bad("too_large"), 2.0, "the large request and the bomb");
    assert_eq!(bad("malformed") + bad("encoding") + bad("invalid"), 0.0);
    still_serving(&sc).await;
}

/// Posts one gRPC frame with the compressed flag set and `payload` as is.
async fn send_gzip_frame(sc: &Sidecar, payload: Vec<u8>) -> Option<Code> {
    let mut frame = vec![1u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    // gRPC needs HTTP/2: use a tonic channel with a raw http request
    let channel = tonic::transport::Endpoint::from_shared(sc.grpc_url())
        .ok()?
        .connect()
        .await
        .ok()?;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("{}{}", sc.grpc_url(), TRACES))
        .header("content-type", "application/grpc")
        .header("grpc-encoding", "gzip")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(frame),
        )))
        .ok()?;
    use tower::ServiceExt;
    let resp = channel.oneshot(req).await.ok()?;
    let (parts, body) = resp.into_parts();
    let trailers = http_body_util::BodyExt::collect(body)
        .await
        .ok()?
        .trailers()
        .cloned();
    let status = parts
        .headers
        .get("grpc-status")
        .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_values_wrong_types_and_missing_fields_are_skipped() {
    // (a string field holding invalid UTF-8 refuses the whole request:
    // derive_only_requests_must_be_valid_otlp)
    let sc = Sidecar::start("").await;
    let mut bad_utf8 = server_span("x", 200);
    bad_utf8.attributes[1] = kv("http.route", any_value::Value::BytesValue(vec![]));
    let mut no_end = server_span("/no-end", 200);
    no_end.end_time_unix_nano = 0;
    let tokens_as_text = Span {
        kind: 3,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_100_000_000,
        attributes: vec![
            st("gen_ai.operation.name", "chat"),
            st("gen_ai.usage.input_tokens", "lots"),
        ],
        ..Default::default()
    };
    let status_as_double = Span {
        kind: 2,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: vec![
            st("http.route", "/double"),
            kv(
                "http.response.status_code",
                any_value::Value::DoubleValue(404.0),
            ),
        ],
        ..Default::default()
    };
    let body = traces(vec![bad_utf8, no_end, tokens_as_text, status_as_double]);
    send_raw(&sc.grpc_url(), TRACES, body, false)
        .await
        .expect("accepted: bad values are skipped, not the request");
    let m = sc.scrape().await;
    assert_eq!(m.sum("otelcol_receiver_accepted_spans_total", &[]), 4.0);
    // bytes-typed route: not a label value, so the span is not an HTTP
    // request (no series, and no skip: a span without a route is not one)
    assert_eq!(m.value("http_requests_total", &[("endpoint", "x")]), None);
    assert!(!m.text.contains("invalid_utf8"), "{}", m.text);
    // a span without an end: counted, but no duration
    assert_eq!(
        m.value("http_requests_total", &[("endpoint", "/no-end")]),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "geometra_sidecar_derive_skipped_total",
            &[
                ("rule", "http_request_duration_seconds"),
                ("reason", "bad_value")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "geometra_sidecar_derive_skipped_total",
            &[("rule", "ai_tokens_total"), ("reason", "bad_value")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("ai_requests_total", &[("type", "chat")]),
        Some(1.0),
        "the AI request itself still counts"
    );
    assert_eq!(
        m.value(
            "http_requests_total",
            &[("endpoint", "/double"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert!(!m.text.contains('\u{fffd}'));
    still_serving(&sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_attribute_counts_and_label_floods_stay_bounded() {
    let sc = Sidecar::start("store:\n  max_series_per_metric: 100\n").await;
    // one span with 100k attributes
    let mut span = server_span("/many", 200);
    for i in 0..100_000 {
        span.attributes.push(st(&format!("k{i}"), "v"));
    }
    send_raw(&sc.grpc_url(), TRACES, traces(vec![span]), false)
        .await
        .expect("accepted");
    // a flood of distinct routes and methods (user input in labels)
    for batch in 0..20 {
        let spans = (0..1000)
            .map(|i| {
                let mut s = server_span(&format!("/flood/{batch}/{i}"), 200);
                s.attributes[0] = st("http.request.method", &format!("M{i}"));
                s
            })
            .collect();
        send_raw(&sc.grpc_url(), TRACES, traces(spans), false)
            .await
            .expect("accepted");
    }
    let m = sc.scrape().await;
    assert_eq!(
        m.value("http_requests_total", &[("endpoint", "/many")]),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "geometra_sidecar_series",
            &[("metric", "http_requests_total")]
        ),
        Some(101.0)
    );
    assert_eq!(
        m.value("http_requests_total", &[("otel_metric_overflow", "true")]),
        Some(19_901.0)
    );
    assert!(m.label_sets("http_requests_total").len() <= 101);
    let rss = rss_kib(sc.pid());
    assert!(rss < 64 * 1024, "RSS {rss} KiB");
    still_serving(&sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_log_bodies_are_handled() {
    let sc = Sidecar::start("").await;
    let rec = |body: &str| LogRecord {
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    rec("{not json"),
                    rec(r#"{"event": "memory_operation", "operation": ["a", "list"]}"#),
                    rec(
                        r#"{"event": "memory_operation", "operation": "store", "nested": {"deep": [1, {"x": null}]}}"#,
                    ),
                    rec(&format!(
                        "{{\"event\": \"memory_operation\", \"operation\": \"{}\"}}",
                        "x".repeat(5000)
                    )),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    send_raw(&sc.grpc_url(), LOGS, req.encode_to_vec(), false)
        .await
        .expect("accepted");
    let m = sc.scrape().await;
    assert_eq!(
        m.sum("otelcol_receiver_accepted_log_records_total", &[]),
        4.0
    );
    assert_eq!(
        m.value("memory_operations_total", &[("operation", "store")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("memory_operations_total", &[("operation", "unknown")]),
        Some(1.0),
        "a list is not a label value"
    );
    assert_eq!(
        m.value(
            "geometra_sidecar_derive_skipped_total",
            &[
                ("rule", "memory_operations_total"),
                ("reason", "label_too_long")
            ]
        ),
        Some(1.0)
    );
    still_serving(&sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_refuses_bad_bodies_clearly() {
    let sc = Sidecar::start("receivers:\n  otlp_http:\n    max_body_bytes: 65536\n    cors_allowed_origins: [\"https://app.geometra.ai\"]\n").await;
    let c = reqwest::Client::new();
    let url = format!("http://{}/v1/traces", sc.http);
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"resourceSpans\": [")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("malformed OTLP JSON"));
    let r = c
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(vec![0xffu8; 10])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let r = c
        .post(&url)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 415);
    // gzip bomb
    let mut bomb = Vec::new();
    {
        let mut enc = flate2::write::GzEncoder::new(&mut bomb, flate2::Compression::best());
        enc.write_all(&vec![0u8; 8 << 20]).expect("gzip");
        enc.finish().expect("gzip");
    }
    let r = c
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 413);
    let r = c
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(vec![0u8; 70_000])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 413);
    // CORS: allowed origin gets its header, others are refused at preflight
    let r = c
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.geometra.ai")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.geometra.ai"
    );
    let r = c
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert_eq!(r.status(), 403);
    // and a good JSON body from a browser works
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET","kind":2,"startTimeUnixNano":"1000000000","endTimeUnixNano":"1020000000","attributes":[{"key":"http.route","value":{"stringValue":"/json"}},{"key":"http.request.method","value":{"stringValue":"GET"}},{"key":"http.response.status_code","value":{"intValue":"200"}}]}]}]}]}"#;
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .header("origin", "https://app.geometra.ai")
        .body(json)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let m = sc.scrape().await;
    assert_eq!(
        m.value(
            "http_requests_total",
            &[("endpoint", "/json"), ("status", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "otelcol_receiver_accepted_spans_total",
            &[("transport", "http")]
        ),
        Some(1.0)
    );
    assert!(
        m.sum(
            "geometra_sidecar_receiver_bad_requests_total",
            &[("transport", "http")]
        ) >= 5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_and_exits_zero() {
    let mut sc = Sidecar::start("").await;
    send_raw(
        &sc.grpc_url(),
        TRACES,
        traces(vec![server_span("/x", 200)]),
        false,
    )
    .await
    .expect("accepted");
    sc.signal(libc::SIGTERM);
    let status = sc.wait_exit(std::time::Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}

/// A logs request with one record holding `record` (hand-encoded bytes,
/// each envelope shorter than 128 bytes).
fn in_log_request(record: &[u8]) -> Vec<u8> {
    fn wrap(f: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![f << 3 | 2, body.len() as u8];
        out.extend_from_slice(body);
        out
    }
    wrap(1, &wrap(2, &wrap(2, record)))
}

fn log_request(records: Vec<LogRecord>) -> Vec<u8> {
    common::log_request(records).encode_to_vec()
}

/// A log record with an attribute value nested `levels` kvlists deep.
fn deep_log(levels: usize) -> LogRecord {
    let mut v = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".into())),
    };
    for _ in 1..levels {
        v = AnyValue {
            value: Some(any_value::Value::KvlistValue(
                opentelemetry_proto::tonic::common::v1::KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        value: Some(v),
                        ..Default::default()
                    }],
                },
            )),
        };
    }
    LogRecord {
        attributes: vec![KeyValue {
            key: "deep".into(),
            value: Some(v),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The requests a forwarded signal must refuse before acknowledging them.
fn invalid_log_requests() -> Vec<(&'static str, Vec<u8>)> {
    let corrupt = |rec: LogRecord, needle: &[u8]| {
        let mut b = log_request(vec![rec]);
        let at = b
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("needle");
        b[at] = 0xff;
        b
    };
    vec![
        (
            "invalid UTF-8 in an attribute key",
            corrupt(
                LogRecord {
                    attributes: vec![st("user-k\u{e9}y", "v")],
                    ..Default::default()
                },
                "\u{e9}".as_bytes(),
            ),
        ),
        (
            "invalid UTF-8 in an attribute value",
            corrupt(
                LogRecord {
                    attributes: vec![st("k", "caf\u{e9}")],
                    ..Default::default()
                },
                "\u{e9}".as_bytes(),
            ),
        ),
        (
            // InstrumentationScope.attributes holds a KeyValue whose key
            // length runs past it: no rule ever reads the scope's attributes
            "a truncated nested message in an unread field",
            {
                let scope = [0x1a, 0x03, 0x0a, 0x09, b'k'];
                let mut scope_logs = vec![0x0a, scope.len() as u8];
                scope_logs.extend_from_slice(&scope);
                scope_logs.extend_from_slice(&[0x12, 0x00]);
                let mut rl = vec![0x12, scope_logs.len() as u8];
                rl.extend_from_slice(&scope_logs);
                let mut req = vec![0x0a, rl.len() as u8];
                req.extend_from_slice(&rl);
                req
            },
        ),
        (
            "severity_number with a wrong wire type",
            in_log_request(&[0x15, 1, 0, 0, 0]),
        ),
        (
            "an AnyValue nested 150 deep",
            log_request(vec![deep_log(150)]),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_requests_must_be_valid_otlp_before_they_are_acknowledged() {
    // a downstream that is never reached: accepted records wait in the queue
    must_be_valid_otlp("forward:\n  logs: { endpoint: \"http://127.0.0.1:9\" }\n").await;
}

/// Each of [`invalid_log_requests`] is refused over gRPC (INVALID_ARGUMENT)
/// and HTTP (400) and counted; a valid request beside them is accepted.
async fn must_be_valid_otlp(config: &str) {
    let sc = Sidecar::start(config).await;
    let c = reqwest::Client::new();
    let url = format!("http://{}/v1/logs", sc.http);
    let cases = invalid_log_requests();
    for (what, body) in &cases {
        let r = send_raw(&sc.grpc_url(), LOGS, body.clone(), false).await;
        let code = r.as_ref().err().map(|s| s.code());
        assert_eq!(code, Some(Code::InvalidArgument), "gRPC, {what}: {r:?}");
        if *what == "invalid UTF-8 in an attribute value" {
            assert_eq!(
                r.err().map(|s| s.message().to_string()).as_deref(),
                Some("invalid OTLP protobuf in AnyValue.string_value: invalid UTF-8 in a string field")
            );
        }
        let r = c
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400, "HTTP, {what}");
    }
    // a valid request beside them, nested as deep as the limit allows
    let good = log_request(vec![
        LogRecord {
            attributes: vec![st("k", "caf\u{e9}")],
            ..Default::default()
        },
        deep_log(24),
    ]);
    send_raw(&sc.grpc_url(), LOGS, good.clone(), false)
        .await
        .expect("a valid request is accepted");
    let r = c
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(good)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let m = sc.scrape().await;
    assert_eq!(
        m.sum("otelcol_receiver_accepted_log_records_total", &[]),
        4.0
    );
    assert_eq!(
        m.sum(
            "geometra_sidecar_receiver_bad_requests_total",
            &[("signal", "log_records")]
        ),
        2.0 * cases.len() as f64
    );
    // the truncated message is not protobuf; the others break OTLP's schema
    let why = |reason| {
        m.sum(
            "geometra_sidecar_receiver_bad_requests_total",
            &[("signal", "log_records"), ("reason", reason)],
        )
    };
    assert_eq!(why("malformed"), 2.0, "{}", m.text);
    assert_eq!(why("invalid"), 2.0 * (cases.len() - 1) as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_only_log_requests_must_be_valid_otlp() {
    // nothing forwarded: the walk that derives refuses them the same way
    must_be_valid_otlp("").await;
}

/// `body` with the first byte of `needle` (a non-ASCII character) made
/// 0xff: the structure stays valid, the string is no longer UTF-8.
fn corrupt_at(mut body: Vec<u8>, needle: &str) -> Vec<u8> {
    let at = body
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("needle");
    body[at] = 0xff;
    body
}

/// On a sidecar that forwards nothing, a span request that is not valid
/// OTLP is refused whole over gRPC (INVALID_ARGUMENT) and HTTP (400),
/// counted as a bad request, and moves no derived metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_only_requests_must_be_valid_otlp() {
    let sc = Sidecar::start("").await;
    let ok = traces(vec![server_span("/ok", 200)]);
    send_raw(&sc.grpc_url(), TRACES, ok.clone(), false)
        .await
        .expect("a valid request is accepted");
    let mut named = server_span("/ok", 200);
    named.name = "caf\u{e9}".into();
    let mut attr = server_span("/ok", 200);
    attr.attributes.push(st("user_agent.original", "caf\u{e9}"));
    let cases = [
        (
            "malformed OTLP protobuf in ExportTraceServiceRequest: length-delimited field runs \
             past its message",
            ok[..ok.len() - 1].to_vec(),
        ),
        (
            "invalid OTLP protobuf in Span.name: invalid UTF-8 in a string field",
            corrupt_at(traces(vec![named]), "\u{e9}"),
        ),
        (
            "invalid OTLP protobuf in AnyValue.string_value: invalid UTF-8 in a string field",
            corrupt_at(traces(vec![attr]), "\u{e9}"),
        ),
    ];
    let c = reqwest::Client::new();
    for (message, body) in &cases {
        let r = send_raw(&sc.grpc_url(), TRACES, body.clone(), false).await;
        let e = r.expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{message}");
        assert_eq!(e.message(), *message);
        let r = c
            .post(format!("http://{}/v1/traces", sc.http))
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400, "HTTP, {message}");
        let text = r.bytes().await.expect("body");
        let shown = String::from_utf8_lossy(&text);
        assert!(shown.contains(message), "HTTP, {message}: {shown}");
    }
    let m = sc.scrape().await;
    assert_eq!(
        m.value("http_requests_total", &[("endpoint", "/ok")]),
        Some(1.0),
        "no derived metric moved: {}",
        m.text
    );
    assert_eq!(m.sum("otelcol_receiver_accepted_spans_total", &[]), 1.0);
    let why = |reason| {
        m.sum(
            "geometra_sidecar_receiver_bad_requests_total",
            &[("signal", "spans"), ("reason", reason)],
        )
    };
    assert_eq!(why("malformed"), 2.0, "{}", m.text);
    assert_eq!(why("invalid"), 4.0, "{}", m.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_value_depth_limit_is_configurable() {
    let sc = Sidecar::start(
        "receivers:\n  max_value_depth: 3\nforward:\n  logs: { endpoint: \"http://127.0.0.1:9\" }\n",
    )
    .await;
    let ok = send_raw(&sc.grpc_url(), LOGS, log_request(vec![deep_log(3)]), false).await;
    assert!(ok.is_ok(), "{ok:?}");
    let r = send_raw(&sc.grpc_url(), LOGS, log_request(vec![deep_log(4)]), false).await;
    let e = r.expect_err("deeper than the limit");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("max_value_depth"), "{}", e.message());
}
