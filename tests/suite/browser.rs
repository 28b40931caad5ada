//! The browser listener as an attacker, a proxy and a browser see it: what
//! arrives there never moves the app's metrics (the same request on the
//! in-pod listener does: the control), its resources are stamped as the
//! browser's, each client has its budget, tokens are checked, payloads are
//! bounded, and thousands of client addresses keep memory bounded.

use crate::common;

use common::sidecar::Sidecar;
use common::sink::{resource_attr, service, Sink};
use common::{free_port, traces_request};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, Value::StringValue(v.into()))
}

fn span(kind: SpanKind, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "forged".into(),
        kind: kind as i32,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_500_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

/// What an attacker forges: a 500 of the API, a failed GenAI call with
/// tokens, users; and a `memory_operation` log record.
fn forged_traces() -> Vec<u8> {
    let mut spans = vec![
        span(
            SpanKind::Server,
            vec![
                s("http.request.method", "POST"),
                s("http.route", "/api/chat"),
                kv("http.response.status_code", Value::IntValue(500)),
                s("user.id", "forged-1"),
            ],
        ),
        span(
            SpanKind::Client,
            vec![
                s("gen_ai.operation.name", "chat"),
                s("error.type", "timeout"),
                kv("gen_ai.usage.input_tokens", Value::IntValue(100_000)),
                s("enduser.id", "forged-2"),
            ],
        ),
    ];
    // claims to be the API
    let mut req =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
            traces_request(std::mem::take(&mut spans)).as_slice(),
        )
        .expect("decode");
    req.resource_spans[0].resource = Some(Resource {
        attributes: vec![s("service.name", "geometra-api")],
        ..Default::default()
    });
    req.encode_to_vec()
}

fn forged_logs() -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![s("service.name", "geometra-api")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1,
                    body: Some(AnyValue {
                        value: Some(Value::StringValue("memory_operation".into())),
                    }),
                    attributes: vec![s("operation", "store"), s("user_id", "forged-3")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// POSTs protobuf to `url` with extra headers; (status, headers).
async fn post(
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap) {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("post");
    (resp.status().as_u16(), resp.headers().clone())
}

fn browser_cfg(port: u16, extra: &str) -> String {
    format!(
        "receivers:\n  browser:\n    listen: 127.0.0.1:{port}\n    cors_allowed_origins: [\"https://app.geometra.ai\"]\n{extra}"
    )
}

const CONTRACT: [&str; 4] = [
    "http_requests_total",
    "ai_requests_total",
    "memory_operations_total",
    "ai_tokens_total",
];

#[tokio::test]
async fn forged_app_data_on_the_browser_listener_changes_no_contract_metric_the_same_on_otlp_http_does(
) {
    let port = free_port();
    let sc = Sidecar::start(&browser_cfg(port, "")).await;
    let b = format!("http://127.0.0.1:{port}");
    for origin in [
        None,
        Some("https://app.geometra.ai"),
        Some("https://evil.example"),
    ] {
        let h: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        assert_eq!(
            post(&format!("{b}/v1/traces"), forged_traces(), &h).await.0,
            200
        );
        assert_eq!(
            post(&format!("{b}/v1/logs"), forged_logs(), &h).await.0,
            200
        );
    }
    let m = sc
        .wait_for("browser items accepted", |m| {
            m.sum(
                "otelcol_receiver_accepted_spans_total",
                &[("receiver", "browser")],
            ) == 6.0
        })
        .await;
    for name in CONTRACT {
        assert_eq!(m.sum(name, &[]), 0.0, "{name} moved:\n{}", m.text);
    }
    assert_eq!(m.value("active_users", &[]), Some(0.0), "{}", m.text);
    // the control: the same requests on the in-pod listener count
    let h = format!("http://{}", sc.http);
    assert_eq!(
        post(&format!("{h}/v1/traces"), forged_traces(), &[])
            .await
            .0,
        200
    );
    assert_eq!(
        post(&format!("{h}/v1/logs"), forged_logs(), &[]).await.0,
        200
    );
    let m = sc.scrape().await;
    let e = [("endpoint", "/api/chat"), ("status", "500")];
    assert_eq!(m.value("http_requests_total", &e), Some(1.0), "{}", m.text);
    assert_eq!(m.sum("ai_requests_total", &[("status", "error")]), 1.0);
    assert_eq!(m.sum("memory_operations_total", &[]), 1.0);
    assert_eq!(m.value("active_users", &[]), Some(3.0));
    // metrics are not taken from browsers at all
    assert_eq!(post(&format!("{b}/v1/metrics"), vec![], &[]).await.0, 404);
}

#[tokio::test]
async fn browser_resources_are_stamped_and_feed_the_browser_rules() {
    let sink = Sink::default();
    let down = sink.start().await;
    let port = free_port();
    let cfg = browser_cfg(port, &format!("forward:\n  traces:\n    endpoint: http://127.0.0.1:{down}\n  logs:\n    endpoint: http://127.0.0.1:{down}\n  batch:\n    timeout: 50ms\n"));
    let sc = Sidecar::start(&cfg).await;
    let b = format!("http://127.0.0.1:{port}");
    let fetch = span(
        SpanKind::Client,
        vec![
            s("http.method", "GET"),
            s("http.url", "https://app.geometra.ai/api/x?secret=1"),
            kv("http.status_code", Value::IntValue(503)),
        ],
    );
    assert_eq!(
        post(&format!("{b}/v1/traces"), traces_request(vec![fetch]), &[])
            .await
            .0,
        200
    );
    assert_eq!(
        post(&format!("{b}/v1/traces"), forged_traces(), &[])
            .await
            .0,
        200
    );
    assert_eq!(
        post(&format!("{b}/v1/logs"), forged_logs(), &[]).await.0,
        200
    );
    let m = sc
        .wait_for("browser fetch counted", |m| {
            m.sum("browser_fetch_requests_total", &[]) >= 1.0
        })
        .await;
    let l = [("method", "GET"), ("status", "503")];
    assert_eq!(
        m.value("browser_fetch_requests_total", &l),
        Some(1.0),
        "{}",
        m.text
    );
    assert!(
        !m.text.contains("secret=1"),
        "a URL became a label:\n{}",
        m.text
    );
    sink.wait("browser traces and logs forwarded", |s| {
        s.span_names().len() >= 3 && !s.log_records().is_empty()
    })
    .await;
    let traces = sink.traces.lock().expect("lock").clone();
    for rs in traces.iter().flat_map(|r| &r.resource_spans) {
        assert_eq!(service(&rs.resource), "geometra-web");
        assert_eq!(
            resource_attr(&rs.resource, "geometra.source").as_deref(),
            Some("browser")
        );
    }
    for (svc, _, _) in sink.log_records() {
        assert_eq!(svc, "geometra-web", "a browser log posed as {svc}");
    }
}

#[tokio::test]
async fn a_client_past_its_budget_gets_429_while_others_and_the_app_are_served() {
    let port = free_port();
    let limits = "    trusted_proxies: [127.0.0.1/32]\n    rate_limit: {requests_per_second: 1, burst: 3, items_per_second: 1000}\n";
    let sc = Sidecar::start(&browser_cfg(port, limits)).await;
    let b = format!("http://127.0.0.1:{port}/v1/traces");
    let one = || traces_request(vec![span(SpanKind::Internal, vec![])]);
    let a = [("x-forwarded-for", "203.0.113.7")];
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(post(&b, one(), &a).await);
    }
    let refused: Vec<_> = codes.iter().filter(|(c, _)| *c == 429).collect();
    assert!(
        refused.len() >= 2,
        "{:?}",
        codes.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    let retry = refused[0]
        .1
        .get("retry-after")
        .expect("Retry-After on a 429");
    assert!(
        retry
            .to_str()
            .expect("ascii")
            .parse::<u64>()
            .expect("seconds")
            >= 1
    );
    // another client behind the same trusted proxy is served
    assert_eq!(
        post(&b, one(), &[("x-forwarded-for", "198.51.100.9")])
            .await
            .0,
        200
    );
    // the app's own traffic never meets the browser's limits
    for _ in 0..10 {
        assert_eq!(
            post(&format!("http://{}/v1/traces", sc.http), one(), &[])
                .await
                .0,
            200
        );
    }
    let m = sc.scrape().await;
    let r = [("reason", "rate_limited")];
    assert_eq!(
        m.value("geometra_sidecar_browser_refused_requests_total", &r),
        Some(refused.len() as f64)
    );
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let port = free_port();
    let limits = "    rate_limit: {requests_per_second: 1, burst: 2}\n";
    let _sc = Sidecar::start(&browser_cfg(port, limits)).await;
    let b = format!("http://127.0.0.1:{port}/v1/traces");
    let mut codes = Vec::new();
    for i in 0..5 {
        // a new address each time: were it believed, every request would pass
        let xff = format!("192.0.2.{i}");
        let body = traces_request(vec![span(SpanKind::Internal, vec![])]);
        codes.push(post(&b, body, &[("x-forwarded-for", &xff)]).await.0);
    }
    assert!(
        codes.contains(&429),
        "spoofed X-Forwarded-For was believed: {codes:?}"
    );
}

#[tokio::test]
async fn thousands_of_client_addresses_keep_the_table_and_memory_bounded() {
    let port = free_port();
    let limits = "    trusted_proxies: [127.0.0.1/32]\n    rate_limit: {max_clients: 1024, global_items_per_second: 1000000}\n";
    let sc = Sidecar::start(&browser_cfg(port, limits)).await;
    let b = format!("http://127.0.0.1:{port}/v1/traces");
    let client = reqwest::Client::new();
    let body = traces_request(vec![span(SpanKind::Internal, vec![])]);
    let send = |i: u32| {
        let xff = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        client
            .post(&b)
            .header("content-type", "application/x-protobuf")
            .header("x-forwarded-for", xff)
            .body(body.clone())
            .send()
    };
    for i in 0..2_000 {
        assert_eq!(send(i).await.expect("post").status().as_u16(), 200);
    }
    let after_2k = common::rss_kib(sc.pid());
    for i in 2_000..10_000 {
        assert_eq!(send(i).await.expect("post").status().as_u16(), 200);
    }
    let after_10k = common::rss_kib(sc.pid());
    let m = sc.scrape().await;
    let clients = m
        .value("geometra_sidecar_browser_clients", &[])
        .expect("gauge");
    assert!(
        clients <= 1024.0,
        "{clients} clients tracked past max_clients"
    );
    assert!(
        after_10k < after_2k + 4096,
        "RSS grew from {after_2k} to {after_10k} KiB with 8,000 more client addresses"
    );
}

/// An HS256 token for `aud`, expiring `exp_in` seconds from now (negative: past).
fn token(secret: &[u8], aud: &str, exp_in: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let claims = serde_json::json!({"sub": "u1", "aud": aud, "exp": now + exp_in});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret).expect("key"),
    )
    .expect("encode")
}

#[tokio::test]
async fn tokens_are_checked_and_a_rotated_secret_is_honoured() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("secret");
    let (old, new) = (
        b"an-old-secret-of-at-least-32-bytes!!".as_slice(),
        b"the-new-secret-of-at-least-32-bytes!".as_slice(),
    );
    std::fs::write(&file, old).expect("write");
    let port = free_port();
    let auth = format!(
        "    auth:\n      jwt_hs256_secret_file: {}\n      audience: geometra-sidecar\n      clock_skew: 0s\n      rotation_overlap: 1h\n",
        file.display()
    );
    let sc = Sidecar::start(&browser_cfg(port, &auth)).await;
    let b = format!("http://127.0.0.1:{port}/v1/traces");
    let body = || traces_request(vec![span(SpanKind::Internal, vec![])]);
    let bearer = |t: String| format!("Bearer {t}");
    let ok = bearer(token(old, "geometra-sidecar", 300));
    assert_eq!(post(&b, body(), &[("authorization", &ok)]).await.0, 200);
    let (code, h) = post(&b, body(), &[]).await;
    assert_eq!(code, 401);
    assert!(h.contains_key("www-authenticate"));
    for bad in [
        bearer(token(old, "geometra-sidecar", -60)),
        bearer(token(
            b"a-wrong-secret-of-at-least-32-bytes!",
            "geometra-sidecar",
            300,
        )),
        bearer(token(old, "someone-else", 300)),
        "Bearer not.a.jwt".to_string(),
    ] {
        assert_eq!(
            post(&b, body(), &[("authorization", &bad)]).await.0,
            401,
            "{bad}"
        );
    }
    // rotation: the new secret is taken up, the old one stays valid for the overlap
    let tmp = dir.path().join("secret.new");
    std::fs::write(&tmp, new).expect("write");
    std::fs::rename(&tmp, &file).expect("swap");
    let fresh = bearer(token(new, "geometra-sidecar", 300));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while post(&b, body(), &[("authorization", &fresh)]).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated secret was never honoured"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        post(&b, body(), &[("authorization", &ok)]).await.0,
        200,
        "the previous secret within the overlap"
    );
    let m = sc.scrape().await;
    let u = |r: &str| {
        m.value(
            "geometra_sidecar_browser_unauthorized_total",
            &[("reason", r)],
        )
    };
    assert_eq!(u("missing"), Some(1.0), "{}", m.text);
    assert_eq!(u("expired"), Some(1.0));
    // (and the fresh token, while the new secret was not yet seen)
    assert!(u("bad_signature") >= Some(1.0));
    assert_eq!(u("wrong_audience"), Some(1.0));
    assert_eq!(u("malformed"), Some(1.0));
    // nothing of a refused request was derived
    assert_eq!(
        m.sum(
            "otelcol_receiver_accepted_spans_total",
            &[("receiver", "browser")]
        ),
        2.0 + 1.0
    );
}

#[tokio::test]
async fn payloads_past_the_browser_limits_are_refused_whole_and_counted() {
    let port = free_port();
    let limits = "    max_items_per_request: 3\n    max_attributes_per_item: 4\n    max_attribute_value_bytes: 64\n";
    let sc = Sidecar::start(&browser_cfg(port, limits)).await;
    let b = format!("http://127.0.0.1:{port}/v1/traces");
    let many = traces_request((0..4).map(|_| span(SpanKind::Internal, vec![])).collect());
    let wide = traces_request(vec![span(
        SpanKind::Internal,
        (0..5).map(|i| s(&format!("k{i}"), "v")).collect(),
    )]);
    let long = traces_request(vec![span(
        SpanKind::Internal,
        vec![s("k", &"x".repeat(100))],
    )]);
    for (body, reason) in [
        (many, "too_many_items"),
        (wide, "too_many_attributes"),
        (long, "value_too_long"),
    ] {
        assert_eq!(post(&b, body, &[]).await.0, 413, "{reason}");
        let m = sc.scrape().await;
        let r = [("reason", reason)];
        assert_eq!(
            m.value("geometra_sidecar_browser_refused_requests_total", &r),
            Some(1.0),
            "{}",
            m.text
        );
    }
    let m = sc.scrape().await;
    assert_eq!(
        m.sum(
            "otelcol_receiver_accepted_spans_total",
            &[("receiver", "browser")]
        ),
        0.0
    );
}

#[tokio::test]
async fn cors_on_the_in_pod_http_listener_beyond_loopback_is_warned_about() {
    let cors =
        "receivers:\n  otlp_http:\n    cors_allowed_origins: [\"https://app.geometra.ai\"]\n";
    let warning = "receivers.otlp_http has CORS origins and listens beyond loopback";
    for (listen, warned) in [
        (format!("0.0.0.0:{}", free_port()), true),
        (format!("127.0.0.1:{}", free_port()), false),
    ] {
        let sc = Sidecar::builder()
            .config(cors)
            .http_listen(&listen)
            .stderr_to_file()
            .start()
            .await;
        let log = sc.log_text();
        assert_eq!(log.contains(warning), warned, "{listen}:\n{log}");
    }
}
