//! End-to-end forwarding tests: the real sidecar binary between a real OTLP
//! client and a downstream OTLP receiver run by the test (gRPC via tonic, or
//! HTTP via axum) that fails in the ways a gateway or Loki fails. Every test
//! counts records by a unique `seq` attribute and checks that every record
//! the sidecar acknowledged arrived (duplicates allowed, losses not).

use crate::common;

use axum::http::{HeaderMap, StatusCode};
use common::sink::{has_poison, seqs_of, Downstream, Sink, INVALID, PARTIAL, POISON, UNAVAILABLE};
use common::{free_port, Sidecar, SidecarBuilder};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;

// ---------------------------------------------------------------- sidecar

/// The sidecar on this YAML config, written to `dir/<name>.yaml`, its log
/// (at info) in `dir/<name>.log`, with `extra` arguments.
fn sidecar(dir: &Path, name: &str, config: &str, extra: &[&str]) -> SidecarBuilder {
    Sidecar::builder()
        .dir(dir, name)
        .config(config)
        .args(extra)
        .rust_log(Some("info"))
        .stderr_to_file()
}

/// Starts it and waits for /readyz.
async fn start(dir: &Path, name: &str, config: &str, extra: &[&str]) -> Sidecar {
    sidecar(dir, name, config, extra).start().await
}

/// Starts it without waiting for it to be ready.
fn spawn(dir: &Path, name: &str, config: &str, extra: &[&str]) -> Sidecar {
    sidecar(dir, name, config, extra).spawn()
}

/// What these tests ask of a running sidecar.
trait Forwarder {
    /// `otelcol_exporter_<what>{exporter="otlp/logs"}`.
    async fn metric(&self, what: &str) -> f64;
    async fn client(&self) -> LogsServiceClient<tonic::transport::Channel>;
}

impl Forwarder for Sidecar {
    async fn metric(&self, what: &str) -> f64 {
        let text = match reqwest::get(format!("http://{}/metrics", self.metrics)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => return f64::NAN,
        };
        let prefix = format!("otelcol_exporter_{what}{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix) && l.contains("exporter=\"otlp/logs\""))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
            .next()
            .unwrap_or(f64::NAN)
    }

    async fn client(&self) -> LogsServiceClient<tonic::transport::Channel> {
        LogsServiceClient::connect(self.grpc_url())
            .await
            .expect("connect to the sidecar")
    }
}

// ------------------------------------------------------------- requests

fn record(seq: &str, extra: &[(&str, &str)], body: Option<&str>) -> LogRecord {
    let s = |v: &str| {
        Some(AnyValue {
            value: Some(Value::StringValue(v.to_string())),
        })
    };
    let mut attributes = vec![KeyValue {
        key: "seq".into(),
        value: s(seq),
        ..Default::default()
    }];
    for (k, v) in extra {
        attributes.push(KeyValue {
            key: k.to_string(),
            value: s(v),
            ..Default::default()
        });
    }
    LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000,
        severity_text: "INFO".into(),
        body: body.and_then(s),
        attributes,
        ..Default::default()
    }
}

/// Sends `n` requests of `per` records (seq `<tag>-<i>-<j>`); returns the
/// seqs the sidecar acknowledged and the refusals (status) it answered.
async fn send_batches(
    s: &Sidecar,
    tag: &str,
    n: usize,
    per: usize,
) -> (HashSet<String>, Vec<tonic::Status>) {
    let mut c = s.client().await;
    let mut acked = HashSet::new();
    let mut refused = Vec::new();
    for i in 0..n {
        let seqs: Vec<String> = (0..per).map(|j| format!("{tag}-{i}-{j}")).collect();
        let req = common::log_request(seqs.iter().map(|q| record(q, &[], Some("hi"))).collect());
        match c.export(req).await {
            Ok(_) => acked.extend(seqs),
            Err(st) => refused.push(st),
        }
    }
    (acked, refused)
}

fn base_config(endpoint: &str, extra: &str) -> String {
    format!(
        "forward:\n  logs: {{ endpoint: \"{endpoint}\", timeout: 2s }}\n  retry: {{ initial_interval: 100ms, max_interval: 500ms, max_elapsed: 0s }}\n  batch: {{ max_items: 50, timeout: 50ms }}\n{extra}"
    )
}

/// Emits `n` log records (seq `<tag>-<i>`) through the OpenTelemetry SDK's
/// OTLP/gRPC exporter, one export per record, on a blocking thread (the
/// exporter blocks on its own runtime).
fn sdk_emit(url: String, tag: &'static str, n: usize) -> tokio::task::JoinHandle<()> {
    use opentelemetry::logs::{
        AnyValue as SdkValue, LogRecord as _, Logger as _, LoggerProvider as _,
    };
    use opentelemetry_otlp::WithExportConfig;
    tokio::task::spawn_blocking(move || {
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_endpoint(url)
            .build()
            .expect("log exporter");
        let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
            .with_simple_exporter(exporter)
            .build();
        let logger = provider.logger("geometra.ai");
        for i in 0..n {
            let mut r = logger.create_log_record();
            r.set_body(SdkValue::from(format!("chat message {i}")));
            r.add_attribute("seq", format!("{tag}-{i}"));
            logger.emit(r);
        }
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    })
}

// ---------------------------------------------------------------- tests

/// The real OpenTelemetry SDK exporter sends through the sidecar (started
/// with the common-case command line flag) while the gateway goes down and
/// comes back: every record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_logs_reach_a_grpc_gateway_that_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    let port = free_port();
    let down = Downstream::start(&sink, port).await;
    let cfg = "forward:\n  retry: { initial_interval: 100ms, max_interval: 400ms, max_elapsed: 0s }\n  batch: { timeout: 50ms }\n";
    let s = start(
        dir.path(),
        "sdk",
        cfg,
        &["--forward-logs-to", &format!("http://127.0.0.1:{port}")],
    )
    .await;
    let url = s.grpc_url();
    let emit = |tag: &'static str, n: usize, url: String| sdk_emit(url, tag, n);
    emit("a", 40, url.clone()).await.expect("sdk a");
    let mut want: HashSet<String> = (0..40).map(|i| format!("a-{i}")).collect();
    sink.wait_all(&want, Duration::from_secs(10)).await;

    down.stop().await;
    emit("b", 40, url.clone()).await.expect("sdk b");
    want.extend((0..40).map(|i| format!("b-{i}")));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!sink.has_all(&want), "gateway was down");
    let down = Downstream::start(&sink, port).await;
    sink.wait_all(&want, Duration::from_secs(15)).await;
    let t = Instant::now();
    while s.metric("sent_log_records_total").await < 80.0 {
        assert!(t.elapsed() < Duration::from_secs(5), "sent not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    down.stop().await;
}

/// A slow gateway and a small queue that refuses at once when full
/// (`max_wait: 0s`): the sidecar pushes back with UNAVAILABLE + RetryInfo
/// instead of dropping, counts enqueue_failed, and every acknowledged
/// record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_pushes_back_and_acknowledged_records_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    let (down, s) = slow_gateway_small_queue(dir.path(), "full", "0s", &sink).await;
    let (acked, refused) = send_batches(&s, "f", 40, 5).await;
    assert!(!refused.is_empty(), "a 40-item queue must fill");
    for st in &refused {
        assert_eq!(st.code(), tonic::Code::Unavailable);
        assert_eq!(st.message(), QUEUE_FULL_40);
        assert!(
            !st.details().is_empty(),
            "RetryInfo in grpc-status-details-bin"
        );
    }
    assert!(acked.len() >= 40, "some were taken: {}", acked.len());
    sink.wait_all(&acked, Duration::from_secs(20)).await;
    assert_eq!(
        s.metric("enqueue_failed_log_records_total").await,
        (refused.len() * 5) as f64
    );
    assert_eq!(s.metric("queue_capacity").await, 40.0);
    down.stop().await;
}

/// A gateway taking 300 ms a batch and a sidecar forwarding to it through a
/// 40-item memory queue, one consumer, batches of 10, waiting `max_wait`
/// for room.
async fn slow_gateway_small_queue(
    dir: &Path,
    name: &str,
    max_wait: &str,
    sink: &Sink,
) -> (Downstream, Sidecar) {
    sink.delay_ms.store(300, Ordering::SeqCst);
    let port = free_port();
    let down = Downstream::start(sink, port).await;
    let cfg = base_config(
        &format!("http://127.0.0.1:{port}"),
        &format!("  queue: {{ max_items: 40, consumers: 1, max_wait: {max_wait} }}\n"),
    )
    .replace("max_items: 50", "max_items: 10");
    (down, start(dir, name, &cfg, &[]).await)
}

/// What a full 40-item memory queue answers (gRPC and HTTP alike).
const QUEUE_FULL_40: &str =
    "forward queue full (forward.queue.max_items 40 / max_bytes 67108864); retry later";

/// The same slow gateway and small queue as above, with time to wait for
/// room (`max_wait: 1s`, longer than a batch takes): the requests that were
/// refused there wait until a batch is delivered and are all accepted;
/// nothing is refused, and everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_holds_requests_until_a_batch_frees_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    let (down, s) = slow_gateway_small_queue(dir.path(), "wait", "1s", &sink).await;
    let (acked, refused) = send_batches(&s, "w", 40, 5).await;
    let refused: Vec<_> = refused.iter().map(|st| st.message().to_string()).collect();
    assert_eq!(refused, Vec::<String>::new(), "each waited for room");
    assert_eq!(acked, seqs_5("w", 40));
    sink.wait_all(&acked, Duration::from_secs(20)).await;
    assert_eq!(s.metric("enqueue_failed_log_records_total").await, 0.0);
    down.stop().await;
}

/// The seqs [`send_batches`] sends in `n` requests of 5 records.
fn seqs_5(tag: &str, n: usize) -> HashSet<String> {
    (0..n)
        .flat_map(|i| (0..5).map(move |j| format!("{tag}-{i}-{j}")))
        .collect()
}

/// A stuck gateway (it answers UNAVAILABLE to everything): a request that
/// finds the queue full waits `max_wait` and is then refused, over gRPC
/// and HTTP, with the message and the counter of an instant refusal; what
/// was acknowledged arrives once the gateway recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_gateway_refuses_after_max_wait_as_a_full_queue_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    sink.mode.store(UNAVAILABLE, Ordering::SeqCst);
    let port = free_port();
    let down = Downstream::start(&sink, port).await;
    let cfg = base_config(
        &format!("http://127.0.0.1:{port}"),
        "  queue: { max_items: 40, max_wait: 300ms }\n",
    );
    let s = start(dir.path(), "stuck", &cfg, &[]).await;
    let (acked, refused) = send_batches(&s, "s", 8, 5).await;
    assert!(refused.is_empty(), "40 items fit");
    let t = Instant::now();
    let (_, refused) = send_batches(&s, "late", 1, 5).await;
    let waited = t.elapsed();
    let [st] = refused.as_slice() else {
        panic!("the 41st item must be refused: {refused:?}")
    };
    assert_eq!(st.code(), tonic::Code::Unavailable);
    assert_eq!(st.message(), QUEUE_FULL_40);
    assert!(
        waited >= Duration::from_millis(300),
        "refused after {waited:?}"
    );
    assert_eq!(s.metric("enqueue_failed_log_records_total").await, 5.0);

    let json =
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"hi"}}]}]}]}"#;
    let t = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/logs", s.http))
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .expect("http export");
    let waited = t.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let body = r.text().await.expect("http body");
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON status");
    assert_eq!(
        body,
        serde_json::json!({"code": 14, "message": QUEUE_FULL_40})
    );
    assert!(
        waited >= Duration::from_millis(300),
        "refused after {waited:?}"
    );
    assert_eq!(s.metric("enqueue_failed_log_records_total").await, 6.0);

    sink.mode.store(0, Ordering::SeqCst);
    sink.wait_all(&acked, Duration::from_secs(20)).await;
    down.stop().await;
}

/// Loki-style OTLP/HTTP downstream that answers 429 with Retry-After twice:
/// the sidecar waits as told, then delivers everything, gzip-compressed,
/// with the configured headers and the bearer token from its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_downstream_429_retry_after_is_honoured() {
    use axum::body::Bytes as AxBytes;
    use axum::routing::post;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t\n").expect("token");
    /// arrival, X-Scope-OrgID, Authorization, Content-Encoding
    type Hit = (Instant, Option<String>, Option<String>, Option<String>);
    #[derive(Clone, Default)]
    struct St {
        sink: Sink,
        hits: Arc<Mutex<Vec<Hit>>>,
    }
    let st = St::default();
    let handler = |axum::extract::State(st): axum::extract::State<St>,
                   headers: HeaderMap,
                   body: AxBytes| async move {
        let h = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let n = {
            let mut hits = st.hits.lock().expect("lock");
            hits.push((
                Instant::now(),
                h("x-scope-orgid"),
                h("authorization"),
                h("content-encoding"),
            ));
            hits.len()
        };
        if n <= 2 {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1"), ("content-type", "text/plain")],
                Vec::new(),
            );
        }
        let mut raw = Vec::new();
        let ok = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut raw)
            .is_ok();
        match ExportLogsServiceRequest::decode(raw.as_slice()) {
            Ok(req) if ok => {
                st.sink.note(&req);
                (
                    StatusCode::OK,
                    [
                        ("retry-after", "0"),
                        ("content-type", "application/x-protobuf"),
                    ],
                    ExportLogsServiceResponse::default().encode_to_vec(),
                )
            }
            _ => (
                StatusCode::BAD_REQUEST,
                [("retry-after", "0"), ("content-type", "text/plain")],
                b"bad body".to_vec(),
            ),
        }
    };
    let app = axum::Router::new()
        .route("/otlp/v1/logs", post(handler))
        .with_state(st.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let cfg = format!(
        "forward:\n  logs:\n    endpoint: http://127.0.0.1:{port}/otlp/v1/logs\n    headers: {{ X-Scope-OrgID: geometra }}\n    bearer_token_file: {}\n    timeout: 2s\n  retry: {{ initial_interval: 100ms, max_interval: 500ms, max_elapsed: 0s }}\n  batch: {{ max_items: 1000, timeout: 100ms }}\n",
        token.display()
    );
    let s = start(dir.path(), "http429", &cfg, &[]).await;
    let (acked, refused) = send_batches(&s, "h", 10, 3).await;
    assert!(refused.is_empty());
    st.sink.wait_all(&acked, Duration::from_secs(15)).await;
    let hits = st.hits.lock().expect("lock").clone();
    assert!(hits.len() >= 3);
    assert!(
        hits[2].0 - hits[0].0 >= Duration::from_millis(1900),
        "two Retry-After: 1 answers must cost about 2s, took {:?}",
        hits[2].0 - hits[0].0
    );
    for h in &hits {
        assert_eq!(h.1.as_deref(), Some("geometra"));
        assert_eq!(h.2.as_deref(), Some("Bearer s3cr3t"));
        assert_eq!(h.3.as_deref(), Some("gzip"));
    }
    assert_eq!(s.metric("send_failed_log_records_total").await, 0.0);
    server.abort();
}

/// A permanent error is counted and dropped, never retried; a partial
/// success counts its rejected records as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_and_partial_success_are_counted_not_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    sink.mode.store(INVALID, Ordering::SeqCst);
    let port = free_port();
    let down = Downstream::start(&sink, port).await;
    let s = start(
        dir.path(),
        "perm",
        &base_config(&format!("http://127.0.0.1:{port}"), ""),
        &[],
    )
    .await;
    let (acked, _) = send_batches(&s, "p", 3, 5).await;
    assert_eq!(acked.len(), 15);
    let t = Instant::now();
    while s.metric("send_failed_log_records_total").await < 15.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "send_failed not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reqs = sink.requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        sink.requests.load(Ordering::SeqCst),
        reqs,
        "a permanent error must not be retried"
    );
    // three requests: at most 2 × 3 - 1 sends when a batch of all three is
    // split down to single requests, never a retry
    assert!(reqs <= 5, "{reqs} sends");
    assert!(s.log_text().contains("refused a request permanently"));

    sink.mode.store(PARTIAL, Ordering::SeqCst);
    let (acked, _) = send_batches(&s, "q", 1, 5).await;
    sink.wait_all(&acked, Duration::from_secs(10)).await;
    let t = Instant::now();
    while s.metric("send_failed_log_records_total").await < 17.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "partial success not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.metric("sent_log_records_total").await, 3.0);
    down.stop().await;
}

/// Records wait on disk while the gateway is down; the sidecar is killed
/// with SIGKILL and restarted on the same queue directory: all arrive, and
/// the delivered segments are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_records_on_disk_then_restart_delivers_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let qdir = dir.path().join("queue");
    let sink = Sink::default();
    let port = free_port(); // nothing listens yet
    let cfg = base_config(&format!("http://127.0.0.1:{port}"), "");
    let mut s = start(
        dir.path(),
        "k1",
        &cfg,
        &["--queue-dir", qdir.to_str().expect("utf-8")],
    )
    .await;
    let (acked, refused) = send_batches(&s, "k", 30, 4).await;
    assert!(refused.is_empty());
    // with a queue directory the queue size is in bytes on disk
    assert!(s.metric("queue_size").await >= 120.0 * 20.0);
    s.kill();
    let segs = std::fs::read_dir(qdir.join("logs"))
        .expect("queue dir")
        .count();
    assert!(segs >= 1, "records wait on disk");

    let down = Downstream::start(&sink, port).await;
    let s2 = start(
        dir.path(),
        "k2",
        &cfg,
        &["--queue-dir", qdir.to_str().expect("utf-8")],
    )
    .await;
    sink.wait_all(&acked, Duration::from_secs(15)).await;
    let t = Instant::now();
    while s2.metric("queue_size").await != 0.0 {
        assert!(t.elapsed() < Duration::from_secs(10), "queue never emptied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = std::fs::read_dir(qdir.join("logs"))
        .expect("queue dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .filter(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
        .count();
    assert_eq!(left, 0, "delivered segments are deleted");
    down.stop().await;
}

/// SIGTERM with a full queue and a slow gateway drains everything before
/// exiting; SIGTERM with the gateway down exits within drain_timeout and
/// leaves the records on disk for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_full_queue_and_leaves_the_rest_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    sink.delay_ms.store(50, Ordering::SeqCst);
    let port = free_port();
    let down = Downstream::start(&sink, port).await;
    let cfg = base_config(
        &format!("http://127.0.0.1:{port}"),
        // refusing at once (no wait for room), so that the queue fills
        "  queue: { max_items: 200, max_wait: 0s }\n  drain_timeout: 10s\n",
    )
    .replace("max_items: 50", "max_items: 10");
    let mut s = start(dir.path(), "drain", &cfg, &[]).await;
    let (acked, refused) = send_batches(&s, "d", 80, 5).await;
    assert!(!refused.is_empty(), "the queue must have filled");
    let took = s.term(Duration::from_secs(15));
    assert!(
        sink.has_all(&acked),
        "{} acknowledged records not delivered by the drain ({took:?})",
        sink.missing(&acked)
    );
    assert!(s.log_text().contains("forward queue drained"));

    // gateway down: the drain gives up at the deadline, the disk keeps the rest
    sink.delay_ms.store(0, Ordering::SeqCst);
    down.stop().await;
    let qdir = dir.path().join("queue");
    let cfg = base_config(&format!("http://127.0.0.1:{port}"), "  drain_timeout: 1s\n");
    let q = ["--queue-dir", qdir.to_str().expect("utf-8")];
    let mut s = start(dir.path(), "drain2", &cfg, &q).await;
    let (acked, refused) = send_batches(&s, "e", 20, 5).await;
    assert!(refused.is_empty());
    let took = s.term(Duration::from_secs(8));
    assert!(
        took < Duration::from_secs(5),
        "drain_timeout 1s, took {took:?}"
    );
    assert!(s.log_text().contains("stay in the on-disk queue"));
    let down = Downstream::start(&sink, port).await;
    let _s = start(dir.path(), "drain3", &cfg, &q).await;
    sink.wait_all(&acked, Duration::from_secs(15)).await;
    down.stop().await;
}

/// A batch waiting out a long retry backoff when SIGTERM comes is retried
/// within a second once the drain begins: a downstream that comes back
/// during the drain gets the backlog before the sidecar exits (the backoff
/// here, 20 s, would outlast the 10 s drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_cuts_a_retry_backoff_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    let port = free_port();
    let cfg = base_config(
        &format!("http://127.0.0.1:{port}"),
        "  drain_timeout: 10s\n",
    )
    .replace(
        "initial_interval: 100ms, max_interval: 500ms",
        "initial_interval: 20s, max_interval: 20s",
    );
    let mut s = start(dir.path(), "backoff", &cfg, &[]).await;
    let (acked, refused) = send_batches(&s, "b", 4, 5).await;
    assert!(refused.is_empty(), "{refused:?}");
    // the first attempts have failed: the batches now wait out 20 s
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = Instant::now();
    s.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down = Downstream::start(&sink, port).await;
    let st = s.wait_exit(Duration::from_secs(15));
    let took = t.elapsed();
    assert!(st.success(), "{st:?}");
    assert!(
        sink.has_all(&acked),
        "{} acknowledged records not delivered by the drain ({took:?})",
        sink.missing(&acked)
    );
    assert!(took < Duration::from_secs(5), "drained in {took:?}");
    down.stop().await;
}

/// `receivers.keep_accepting_for`: after SIGTERM the sidecar answers not
/// ready at once but keeps accepting for that long (an app stopped together
/// with a regular-container sidecar exports its last records after the
/// signal); what it accepts then is forwarded by the drain before it exits
/// 0. SIGINT ends the wait; a repeated SIGTERM does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_it_keeps_accepting_for_the_configured_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    let port = free_port();
    let down = Downstream::start(&sink, port).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let cfg = base_config(&endpoint, "receivers:\n  keep_accepting_for: 3s\n");
    let mut s = start(dir.path(), "linger", &cfg, &[]).await;
    let t = Instant::now();
    s.signal(libc::SIGTERM);
    while s.readyz_status().await != Some(503) {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "still ready after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (acked, refused) = send_batches(&s, "late", 5, 4).await;
    assert!(refused.is_empty(), "refused after SIGTERM: {refused:?}");
    assert_eq!(acked.len(), 20);
    let st = s.wait_exit(Duration::from_secs(15));
    let took = t.elapsed();
    assert!(st.success(), "{st:?}");
    assert!(
        took >= Duration::from_secs(3),
        "stopped accepting after {took:?}"
    );
    assert!(
        sink.has_all(&acked),
        "{} not delivered",
        sink.missing(&acked)
    );
    let log = s.log_text();
    assert!(
        log.contains("still accepting for receivers.keep_accepting_for"),
        "{log}"
    );

    // a repeated SIGTERM keeps waiting, SIGINT ends the wait
    let cfg = base_config(&endpoint, "receivers:\n  keep_accepting_for: 5m\n");
    let mut s = start(dir.path(), "linger2", &cfg, &[]).await;
    s.signal(libc::SIGTERM);
    let t = Instant::now();
    while s.readyz_status().await != Some(503) {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "still ready after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.readyz_status().await,
        Some(503),
        "stopped on a repeated SIGTERM"
    );
    s.signal(libc::SIGINT);
    let st = s.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    assert!(s.log_text().contains("SIGINT: draining now"));
    down.stop().await;
}

/// A segment with a corrupted record in the middle and a torn tail: the
/// sidecar starts, counts and skips the damage, and delivers the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_queue_file_is_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let qdir = dir.path().join("queue");
    let sink = Sink::default();
    let port = free_port();
    let cfg = base_config(&format!("http://127.0.0.1:{port}"), "");
    let q = ["--queue-dir", qdir.to_str().expect("utf-8")];
    let mut s = start(dir.path(), "c1", &cfg, &q).await;
    let (acked, refused) = send_batches(&s, "c", 10, 1).await;
    assert!(refused.is_empty());
    s.kill();
    let seg = std::fs::read_dir(qdir.join("logs"))
        .expect("queue dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let mut buf = std::fs::read(&seg).expect("read segment");
    // walk the frames (magic, len u32, items u64, crc u32, payload) to the 4th
    let mut pos = 0usize;
    for _ in 0..3 {
        let len = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().expect("len")) as usize;
        pos += 20 + len;
    }
    let corrupted = {
        let len = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().expect("len")) as usize;
        let payload =
            ExportLogsServiceRequest::decode(&buf[pos + 20..pos + 20 + len]).expect("a record");
        buf[pos + 20 + len / 2] ^= 0x5a;
        seqs_of(&payload)
    };
    // and a torn record at the end, as a crash mid-write leaves
    buf.extend_from_slice(b"GSQ1\x40\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    std::fs::File::create(&seg)
        .and_then(|mut f| f.write_all(&buf))
        .expect("rewrite segment");

    let down = Downstream::start(&sink, port).await;
    let s2 = start(dir.path(), "c2", &cfg, &q).await;
    let want: HashSet<String> = acked
        .iter()
        .filter(|a| !corrupted.contains(a))
        .cloned()
        .collect();
    assert_eq!(want.len(), 9);
    sink.wait_all(&want, Duration::from_secs(15)).await;
    assert!(s2.log_text().contains("skipped corrupt or torn records"));
    assert!(s2.metric("send_failed_log_records_total").await >= 1.0);
    down.stop().await;
}

/// Redaction: `message` dropped, `user_id` hashed with the key, `content`
/// truncated, in attributes and in a JSON string body; other records pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_applies_before_forwarding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("hash.key");
    std::fs::write(&key, "k3y").expect("key");
    let sink = Sink::default();
    let port = free_port();
    let down = Downstream::start(&sink, port).await;
    let cfg = base_config(
        &format!("http://127.0.0.1:{port}"),
        &format!(
            "redaction:\n  hash_key_file: {}\n  attributes:\n    - {{ key: message, action: drop }}\n    - {{ key: user_id, action: hash }}\n    - {{ key: content, action: truncate, max_length: 5 }}\n",
            key.display()
        ),
    );
    let s = start(dir.path(), "redact", &cfg, &[]).await;
    let mut c = s.client().await;
    c.export(common::log_request(vec![
        record(
            "r-1",
            &[
                ("message", "my password is hunter2"),
                ("user_id", "u-42"),
                ("content", "remember this forever"),
            ],
            Some(r#"{"event":"chat","response":"ok","message":"secret body"}"#),
        ),
        record("r-2", &[("other", "kept")], Some("plain")),
    ]))
    .await
    .expect("accepted");
    let want: HashSet<String> = ["r-1".to_string(), "r-2".to_string()].into();
    sink.wait_all(&want, Duration::from_secs(10)).await;
    let recs = sink.records.lock().expect("lock").clone();
    let attr = |r: &LogRecord, k: &str| {
        r.attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| match &kv.value {
                Some(AnyValue {
                    value: Some(Value::StringValue(v)),
                }) => Some(v.clone()),
                _ => None,
            })
    };
    let r1 = recs
        .iter()
        .find(|r| attr(r, "seq").as_deref() == Some("r-1"))
        .expect("r-1");
    assert_eq!(attr(r1, "message"), None);
    let h = attr(r1, "user_id").expect("hashed user_id");
    assert_eq!(h.len(), 32);
    assert_ne!(h, "u-42");
    assert_eq!(attr(r1, "content").as_deref(), Some("remem"));
    let Some(AnyValue {
        value: Some(Value::StringValue(body)),
    }) = &r1.body
    else {
        panic!("string body");
    };
    assert!(!body.contains("secret body"), "{body}");
    assert!(body.contains("\"response\":\"ok\""), "{body}");
    let r2 = recs
        .iter()
        .find(|r| attr(r, "seq").as_deref() == Some("r-2"))
        .expect("r-2");
    assert_eq!(attr(r2, "other").as_deref(), Some("kept"));
    down.stop().await;
}

/// Traces and metrics are forwarded too when they have an endpoint, each
/// through its own exporter and counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_and_metrics_are_forwarded_when_configured() {
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[derive(Clone, Default)]
    struct Both {
        spans: Arc<Mutex<HashSet<String>>>,
        points: Arc<AtomicU64>,
    }
    #[tonic::async_trait]
    impl TraceService for Both {
        async fn export(
            &self,
            req: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut seen = self.spans.lock().expect("lock");
            for rs in &req.get_ref().resource_spans {
                for ss in &rs.scope_spans {
                    seen.extend(ss.spans.iter().map(|s| s.name.clone()));
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }
    #[tonic::async_trait]
    impl MetricsService for Both {
        async fn export(
            &self,
            req: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            let n: usize = req
                .get_ref()
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| match &m.data {
                    Some(metric::Data::Gauge(g)) => g.data_points.len(),
                    _ => 0,
                })
                .sum();
            self.points.fetch_add(n as u64, Ordering::SeqCst);
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        }
    }
    let both = Both::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = tokio::spawn({
        let b = both.clone();
        async move {
            let _ = tonic::transport::Server::builder()
                .add_service(
                    TraceServiceServer::new(b.clone()).accept_compressed(CompressionEncoding::Gzip),
                )
                .add_service(
                    MetricsServiceServer::new(b).accept_compressed(CompressionEncoding::Gzip),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await;
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "forward:\n  traces: {{ endpoint: \"http://127.0.0.1:{port}\" }}\n  metrics: {{ endpoint: \"http://127.0.0.1:{port}\", compression: none }}\n  batch: {{ timeout: 50ms }}\n"
    );
    let s = start(dir.path(), "tm", &cfg, &[]).await;
    let url = s.grpc_url();
    let spans: Vec<Span> = (0..20u8)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: vec![i + 1; 8],
            name: format!("span-{i}"),
            kind: 1,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_100_000_000,
            ..Default::default()
        })
        .collect();
    TraceServiceClient::connect(url.clone())
        .await
        .expect("connect")
        .export(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .expect("spans accepted");
    let gauge = |v: i64| Metric {
        name: "memory.size".into(),
        unit: "By".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: 1_700_000_000_000_000_000,
                value: Some(number_data_point::Value::AsInt(v)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    MetricsServiceClient::connect(url)
        .await
        .expect("connect")
        .export(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![gauge(1), gauge(2), gauge(3)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .expect("points accepted");
    let t = Instant::now();
    while both.spans.lock().expect("lock").len() < 20 || both.points.load(Ordering::SeqCst) < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "traces or metrics not forwarded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = reqwest::get(format!("http://{}/metrics", s.metrics))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert!(
        !text.contains("exporter=\"otlp/logs\""),
        "logs not configured"
    );
    let t = Instant::now();
    loop {
        let text = reqwest::get(format!("http://{}/metrics", s.metrics))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        if text.contains("otelcol_exporter_sent_spans_total{exporter=\"otlp/traces\"} 20")
            && text
                .contains("otelcol_exporter_sent_metric_points_total{exporter=\"otlp/metrics\"} 3")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "exporter counters:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.abort();
}

/// OTLP/gRPC over TLS with a private CA and a client certificate (mutual
/// TLS): the sidecar's `tls.ca_file`, `cert_file` and `key_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_mutual_tls_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let leaf = |name: &str| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (srv_cert, srv_key) = leaf("127.0.0.1");
    let (cli_cert, cli_key) = leaf("geometra-sidecar");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str, body: &str| {
        let f = dir.path().join(n);
        std::fs::write(&f, body).expect("write pem");
        f.display().to_string()
    };
    let (ca_file, cert_file, key_file) = (
        p("ca.pem", &ca.pem()),
        p("client.pem", &cli_cert),
        p("client.key", &cli_key),
    );

    let sink = Sink::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(&srv_cert, &srv_key))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca.pem()));
    let server = tokio::spawn({
        let svc = LogsServiceServer::new(sink.clone()).accept_compressed(CompressionEncoding::Gzip);
        async move {
            let _ = tonic::transport::Server::builder()
                .tls_config(tls)
                .expect("server tls")
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await;
        }
    });
    let cfg = format!(
        "forward:\n  logs:\n    endpoint: https://127.0.0.1:{port}\n    tls: {{ ca_file: {ca_file}, cert_file: {cert_file}, key_file: {key_file} }}\n  batch: {{ timeout: 50ms }}\n  retry: {{ initial_interval: 100ms, max_interval: 300ms }}\n"
    );
    let s = start(dir.path(), "tls", &cfg, &[]).await;
    let (acked, refused) = send_batches(&s, "tls", 5, 4).await;
    assert!(refused.is_empty());
    sink.wait_all(&acked, Duration::from_secs(10)).await;
    assert_eq!(s.metric("send_failed_log_records_total").await, 0.0);
    server.abort();
}

/// The on-disk queue's size cap: past `max_disk_bytes` the app is pushed
/// back (UNAVAILABLE, counted as enqueue_failed); what was taken arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_queue_pushes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let qdir = dir.path().join("queue");
    let sink = Sink::default();
    let port = free_port(); // down at first
    let cfg = base_config(
        &format!("http://127.0.0.1:{port}"),
        "  queue: { max_disk_bytes: 8000 }\n",
    );
    let q = ["--queue-dir", qdir.to_str().expect("utf-8")];
    let s = start(dir.path(), "cap", &cfg, &q).await;
    let (acked, refused) = send_batches(&s, "cap", 60, 5).await;
    assert!(!refused.is_empty(), "8 kB of disk must fill");
    assert!(refused
        .iter()
        .all(|st| st.code() == tonic::Code::Unavailable
            && st.message().contains("on-disk queue full")));
    assert_eq!(
        s.metric("enqueue_failed_log_records_total").await,
        (refused.len() * 5) as f64
    );
    let down = Downstream::start(&sink, port).await;
    sink.wait_all(&acked, Duration::from_secs(15)).await;
    down.stop().await;
}

// ------------------------------------------------------ issue 8: durability

/// Sends `n` requests of `per` records through the sidecar; the requests
/// whose index is in `poison` carry one record with the body "POISON".
/// Returns the seqs of the acknowledged clean requests and the number of
/// acknowledged records in poisoned ones.
async fn send_with_poison(
    s: &Sidecar,
    tag: &str,
    n: usize,
    per: usize,
    poison: &[usize],
) -> (HashSet<String>, usize) {
    let mut c = s.client().await;
    let (mut good, mut bad) = (HashSet::new(), 0);
    for i in 0..n {
        let seqs: Vec<String> = (0..per).map(|j| format!("{tag}-{i}-{j}")).collect();
        let dirty = poison.contains(&i);
        let recs = seqs
            .iter()
            .enumerate()
            .map(|(j, q)| record(q, &[], Some(if dirty && j == 1 { "POISON" } else { "hi" })))
            .collect();
        c.export(common::log_request(recs))
            .await
            .expect("acknowledged");
        if dirty {
            bad += per;
        } else {
            good.extend(seqs);
        }
    }
    (good, bad)
}

/// Waits until `otelcol_exporter_<what>` reaches `want` (at most 20s).
async fn wait_metric(s: &Sidecar, what: &str, want: f64) {
    let t = Instant::now();
    loop {
        let v = s.metric(what).await;
        if v == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what} is {v}, want {want}:\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// B.4: batches of several requests, some holding a record the gateway
/// refuses as permanent (INVALID_ARGUMENT): the sidecar splits each refused
/// batch until the refused request is alone, so only the poisoned requests'
/// records are dropped (and counted); every other acknowledged record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_request_costs_only_its_own_records_grpc() {
    poisoned_grpc(false).await;
}

/// B.4 with the batches read back from the on-disk queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_request_costs_only_its_own_records_disk_queue() {
    poisoned_grpc(true).await;
}

async fn poisoned_grpc(disk: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    // down first, so the queued requests are taken in batches of ten
    sink.mode.store(UNAVAILABLE, Ordering::SeqCst);
    let port = free_port();
    let down = Downstream::start(&sink, port).await;
    let cfg = base_config(&format!("http://127.0.0.1:{port}"), "");
    let qdir = dir.path().join("queue");
    let q = ["--queue-dir", qdir.to_str().expect("utf-8")];
    let extra: &[&str] = if disk { &q } else { &[] };
    let s = start(dir.path(), "poison", &cfg, extra).await;
    let (good, bad) = send_with_poison(&s, "pz", 40, 5, &[3, 17, 18, 33]).await;
    sink.mode.store(POISON, Ordering::SeqCst);
    sink.wait_all(&good, Duration::from_secs(20)).await;
    wait_metric(&s, "send_failed_log_records_total", bad as f64).await;
    wait_metric(&s, "sent_log_records_total", good.len() as f64).await;
    assert!(s.log_text().contains("refused a request permanently"));
    down.stop().await;
}

/// B.4 over OTLP/HTTP: a gateway that answers 400 to a batch it cannot take
/// (it decodes the body with prost, as a collector does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_request_costs_only_its_own_records_http() {
    use axum::body::Bytes as AxBytes;
    use axum::routing::post;
    #[derive(Clone, Default)]
    struct St {
        sink: Sink,
        up: Arc<std::sync::atomic::AtomicBool>,
    }
    let st = St::default();
    let handler = |axum::extract::State(st): axum::extract::State<St>, body: AxBytes| async move {
        if !st.up.load(Ordering::SeqCst) {
            return (StatusCode::SERVICE_UNAVAILABLE, Vec::new());
        }
        let mut raw = Vec::new();
        let gz = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut raw);
        match ExportLogsServiceRequest::decode(raw.as_slice()) {
            Ok(req) if gz.is_ok() && !has_poison(&req) => {
                st.sink.note(&req);
                (StatusCode::OK, Vec::new())
            }
            _ => (StatusCode::BAD_REQUEST, b"refused".to_vec()),
        }
    };
    let app = axum::Router::new()
        .route("/v1/logs", post(handler))
        .with_state(st.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = base_config(&format!("http://127.0.0.1:{port}/v1/logs"), "");
    let s = start(dir.path(), "poison-http", &cfg, &[]).await;
    let (good, bad) = send_with_poison(&s, "ph", 40, 5, &[0, 9, 10, 39]).await;
    st.up.store(true, Ordering::SeqCst);
    st.sink.wait_all(&good, Duration::from_secs(20)).await;
    wait_metric(&s, "send_failed_log_records_total", bad as f64).await;
    wait_metric(&s, "sent_log_records_total", good.len() as f64).await;
    server.abort();
}

/// B.6: a second sidecar on the same queue directory exits non-zero naming
/// the directory and the process holding it; the first keeps delivering
/// everything it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sidecar_on_the_same_queue_dir_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let qdir = dir.path().join("queue");
    let sink = Sink::default();
    let port = free_port(); // down at first
    let cfg = base_config(&format!("http://127.0.0.1:{port}"), "");
    let q = ["--queue-dir", qdir.to_str().expect("utf-8")];
    let s1 = start(dir.path(), "first", &cfg, &q).await;
    let (mut acked, refused) = send_batches(&s1, "a", 20, 5).await;
    assert!(refused.is_empty());
    let mut s2 = spawn(dir.path(), "second", &cfg, &q);
    let st = s2.wait_exit(Duration::from_secs(15));
    assert!(!st.success(), "the second sidecar must fail");
    let log = s2.log_text();
    assert!(log.contains(qdir.to_str().expect("utf-8")), "{log}");
    assert!(log.contains(&format!("pid {}", s1.child.id())), "{log}");
    let (more, refused) = send_batches(&s1, "b", 20, 5).await;
    assert!(refused.is_empty());
    acked.extend(more);
    let down = Downstream::start(&sink, port).await;
    sink.wait_all(&acked, Duration::from_secs(20)).await;
    down.stop().await;
}

/// A change to the machine for one test (root only, as CI runs): `setup`
/// must succeed, `undo` runs on drop (panics included), so the temporary
/// directory can go.
struct Undo(Vec<String>);
impl Undo {
    fn run(setup: &[&str], undo: &[&str]) -> Undo {
        let ok = Command::new(setup[0])
            .args(&setup[1..])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{} (root needed)", setup.join(" "));
        Undo(undo.iter().map(|a| a.to_string()).collect())
    }

    /// Makes `p` immutable (chattr +i stops root too, on ext4).
    fn immutable(p: &Path) -> Undo {
        let p = p.to_str().expect("utf-8 path");
        Undo::run(&["chattr", "+i", p], &["chattr", "-i", p])
    }

    /// Mounts a tmpfs of `size` on `p`.
    fn tmpfs(p: &Path, size: &str) -> Undo {
        std::fs::create_dir_all(p).expect("mkdir");
        let (p, opt) = (p.to_str().expect("utf-8 path"), format!("size={size}"));
        Undo::run(
            &["mount", "-t", "tmpfs", "-o", &opt, "tmpfs", p],
            &["umount", "-l", p],
        )
    }
}
impl Drop for Undo {
    fn drop(&mut self) {
        let _ = Command::new(&self.0[0]).args(&self.0[1..]).status();
    }
}

/// B.7: a queue directory nothing can be written to (made immutable with
/// chattr, which stops root too) makes the sidecar refuse to start with a
/// message naming it, whether it is the signal's directory or the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_queue_dir_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = base_config(&format!("http://127.0.0.1:{}", free_port()), "");
    for (i, which) in ["logs", ""].into_iter().enumerate() {
        let qdir = dir.path().join(format!("queue{i}"));
        std::fs::create_dir_all(qdir.join("logs")).expect("mkdir");
        let target = qdir.join(which);
        let _guard = Undo::immutable(&target);
        let q = ["--queue-dir", qdir.to_str().expect("utf-8")];
        let mut s = spawn(dir.path(), &format!("ro{i}"), &cfg, &q);
        let st = s.wait_exit(Duration::from_secs(15));
        assert!(!st.success());
        let log = s.log_text();
        assert!(log.contains("not writable"), "{log}");
        assert!(log.contains(qdir.to_str().expect("utf-8")), "{log}");
    }
}

/// B.8: with a queue directory the disk is the queue: 50,000 records (fifty
/// times `queue.max_items`) are acknowledged while the gateway is down, and
/// all of them arrive once it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_queue_holds_a_backlog_far_beyond_max_items() {
    let dir = tempfile::tempdir().expect("tempdir");
    let qdir = dir.path().join("queue");
    let sink = Sink::default();
    let port = free_port(); // down
    let cfg = base_config(
        &format!("http://127.0.0.1:{port}"),
        "  queue: { max_items: 1000, max_bytes: 65536, fsync: false }\n",
    )
    .replace("max_items: 50,", "max_items: 500,");
    let q = ["--queue-dir", qdir.to_str().expect("utf-8")];
    let s = start(dir.path(), "backlog", &cfg, &q).await;
    let (acked, refused) = send_batches(&s, "bl", 1000, 50).await;
    assert!(
        refused.is_empty(),
        "{} requests refused: {:?}",
        refused.len(),
        refused.first()
    );
    assert_eq!(acked.len(), 50_000);
    // bytes on disk: at least the 20-byte frame header of each request
    assert!(s.metric("queue_size").await > 1000.0 * 20.0);
    assert!(s.metric("queue_size").await <= s.metric("queue_capacity").await);
    let down = Downstream::start(&sink, port).await;
    sink.wait_all(&acked, Duration::from_secs(120)).await;
    wait_metric(&s, "queue_size", 0.0).await;
    down.stop().await;
}

/// A really full filesystem (ENOSPC, not the configured cap): the queue
/// directory sits on a 512 KiB tmpfs while the downstream is down. What
/// does not fit is pushed back (UNAVAILABLE) and never acknowledged; the
/// sidecar keeps serving; once the downstream is back every acknowledged
/// record arrives and the freed space takes new requests again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_pushes_back_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let qdir = dir.path().join("queue");
    let _fs = Undo::tmpfs(&qdir, "512k");
    let sink = Sink::default();
    let port = free_port(); // down at first
    let cfg = base_config(&format!("http://127.0.0.1:{port}"), "");
    let q = ["--queue-dir", qdir.to_str().expect("utf-8")];
    let s = start(dir.path(), "enospc", &cfg, &q).await;
    let (acked, refused) = send_batches(&s, "enospc", 4000, 5).await;
    assert!(!acked.is_empty(), "some requests fit");
    assert!(
        !refused.is_empty(),
        "512 KiB of filesystem must fill: {} records acknowledged, queue {} bytes",
        acked.len(),
        s.metric("queue_size").await
    );
    assert!(
        refused
            .iter()
            .all(|st| st.code() == tonic::Code::Unavailable),
        "{:?}",
        refused.first()
    );
    assert_eq!(
        s.metric("enqueue_failed_log_records_total").await,
        (refused.len() * 5) as f64
    );
    let down = Downstream::start(&sink, port).await;
    sink.wait_all(&acked, Duration::from_secs(20)).await;
    // delivered segments are deleted: the space takes new requests again
    let deadline = Instant::now() + Duration::from_secs(20);
    let later = loop {
        let (ok, no) = send_batches(&s, "after", 1, 5).await;
        if !ok.is_empty() {
            break ok;
        }
        assert!(
            Instant::now() < deadline,
            "the freed space never took a request: {:?}",
            no.first().map(|st| st.message().to_string())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    sink.wait_all(&later, Duration::from_secs(20)).await;
    down.stop().await;
}

/// Redaction reloads: a config change (noticed without a signal) puts the
/// new rules in force for records offered from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_reloads_with_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    let port = free_port();
    let down = Downstream::start(&sink, port).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let redact =
        |key: &str| format!("redaction:\n  attributes:\n    - {{ key: {key}, action: drop }}\n");
    let s = start(
        dir.path(),
        "rr",
        &base_config(&endpoint, &redact("user_id")),
        &[],
    )
    .await;
    let mut c = s.client().await;
    let attrs = [("user_id", "u-42"), ("message", "hello")];
    c.export(common::log_request(vec![record("r-1", &attrs, None)]))
        .await
        .expect("accepted");
    sink.wait_all(&HashSet::from(["r-1".to_string()]), Duration::from_secs(10))
        .await;
    let new = base_config(&endpoint, &redact("message"));
    std::fs::write(dir.path().join("rr.yaml.tmp"), new).expect("write");
    std::fs::rename(dir.path().join("rr.yaml.tmp"), dir.path().join("rr.yaml")).expect("swap");
    let t = Instant::now();
    while !s.log_text().contains("config reloaded") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no reload:\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.export(common::log_request(vec![record("r-2", &attrs, None)]))
        .await
        .expect("accepted");
    sink.wait_all(
        &HashSet::from(["r-1".to_string(), "r-2".to_string()]),
        Duration::from_secs(10),
    )
    .await;
    let recs = sink.records.lock().expect("lock").clone();
    let keys = |seq: &str| -> Vec<String> {
        let r = recs
            .iter()
            .find(|r| {
                r.attributes.iter().any(|kv| {
                    kv.key == "seq"
                        && kv.value
                            == Some(AnyValue {
                                value: Some(Value::StringValue(seq.into())),
                            })
                })
            })
            .expect("record");
        r.attributes
            .iter()
            .map(|kv| kv.key.clone())
            .filter(|k| k != "seq")
            .collect()
    };
    assert_eq!(keys("r-1"), ["message"], "the first config dropped user_id");
    assert_eq!(
        keys("r-2"),
        ["user_id"],
        "the reloaded one drops message instead"
    );
    down.stop().await;
}

// ------------------------------------------------- forward settings reload

/// SIGHUP to the sidecar.
fn hup(s: &Sidecar) {
    s.signal(libc::SIGHUP);
}

/// Replaces the config file the way a ConfigMap update does (a new file
/// renamed over the old one).
fn swap_config(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!("{name}.yaml.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(format!("{name}.yaml"))).expect("swap");
}

/// The sum of every sample of `name` on /metrics (NaN when absent).
async fn scrape_sum(s: &Sidecar, name: &str) -> f64 {
    let text = match reqwest::get(format!("http://{}/metrics", s.metrics)).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return f64::NAN,
    };
    let v: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
        .collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum()
    }
}

/// Waits (10 s at most) until the sidecar's log holds `what` `n` times.
async fn wait_log(s: &Sidecar, what: &str, n: usize) {
    let t = Instant::now();
    while s.log_text().matches(what).count() < n {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what:?} not logged {n} times:\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every acknowledged seq arrived exactly once across the sinks.
fn exactly_once(sinks: &[&Sink], acked: &HashSet<String>) {
    let mut count: HashMap<String, u32> = HashMap::new();
    for s in sinks {
        for (seq, n) in s.seen.lock().expect("lock").iter() {
            *count.entry(seq.clone()).or_default() += n;
        }
    }
    let lost: Vec<_> = acked.iter().filter(|s| !count.contains_key(*s)).collect();
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    let unknown: Vec<_> = count.keys().filter(|s| !acked.contains(*s)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(twice.is_empty(), "arrived more than once: {twice:?}");
    assert!(unknown.is_empty(), "never sent: {unknown:?}");
}

fn seqs(tag: &str, n: usize) -> HashSet<String> {
    (0..n).map(|i| format!("{tag}-{i}")).collect()
}

/// Forwarding moves to a new gRPC sink on SIGHUP, records queued (in memory
/// or on disk) for the first sink while it is down go to the new one, and a
/// file swap then moves it to an OTLP/HTTP sink: every record the SDK had
/// acknowledged arrives exactly once across the three.
async fn forwarding_follows_the_reloaded_endpoint(disk: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (Sink::default(), Sink::default(), Sink::default());
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let down_a = Downstream::start(&a, pa).await;
    let down_b = Downstream::start(&b, pb).await;
    let down_c = Downstream::start_http(&c, pc).await;
    let qdir = dir.path().join("queue");
    let extra: Vec<&str> = match disk {
        true => vec!["--queue-dir", qdir.to_str().expect("utf-8")],
        false => vec![],
    };
    let cfg = |ep: &str| base_config(ep, "");
    let s = start(
        dir.path(),
        "mv",
        &cfg(&format!("http://127.0.0.1:{pa}")),
        &extra,
    )
    .await;
    let url = s.grpc_url();
    sdk_emit(url.clone(), "a", 30).await.expect("sdk a");
    a.wait_all(&seqs("a", 30), Duration::from_secs(10)).await;

    // the first sink goes down: what is acknowledged now waits in the queue
    down_a.stop().await;
    sdk_emit(url.clone(), "b", 30).await.expect("sdk b");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.missing(&seqs("b", 30)), 30, "nothing was sent to b yet");
    hup_to(&s, dir.path(), &cfg(&format!("http://127.0.0.1:{pb}"))).await;
    b.wait_all(&seqs("b", 30), Duration::from_secs(10)).await;
    sdk_emit(url.clone(), "c", 30).await.expect("sdk c");
    b.wait_all(&seqs("c", 30), Duration::from_secs(10)).await;

    // a ConfigMap-style swap, no signal: OTLP/HTTP from now on
    swap_config(
        dir.path(),
        "mv",
        &cfg(&format!("http://127.0.0.1:{pc}/v1/logs")),
    );
    wait_log(&s, "config reloaded", 2).await;
    sdk_emit(url.clone(), "d", 30).await.expect("sdk d");
    c.wait_all(&seqs("d", 30), Duration::from_secs(10)).await;

    let mut acked = HashSet::new();
    for t in ["a", "b", "c", "d"] {
        acked.extend(seqs(t, 30));
    }
    // every emitted record was acknowledged by the sidecar
    assert_eq!(
        scrape_sum(&s, "otelcol_receiver_accepted_log_records_total").await,
        120.0
    );
    assert_eq!(
        scrape_sum(&s, "otelcol_receiver_refused_log_records_total").await,
        0.0
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    exactly_once(&[&a, &b, &c], &acked);
    assert_eq!(s.metric("sent_log_records_total").await, 120.0);
    assert_eq!(s.metric("send_failed_log_records_total").await, 0.0);
    assert_eq!(
        scrape_sum(&s, "geometra_sidecar_config_last_reload_successful").await,
        1.0
    );
    down_b.stop().await;
    down_c.stop().await;
}

/// Writes `text` as the config and sends SIGHUP; waits for the reload.
async fn hup_to(s: &Sidecar, dir: &Path, text: &str) {
    let before = s.log_text().matches("config reloaded").count();
    swap_config(dir, "mv", text);
    hup(s);
    wait_log(s, "config reloaded", before + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_follows_the_reloaded_endpoint_memory_queue() {
    forwarding_follows_the_reloaded_endpoint(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_follows_the_reloaded_endpoint_disk_queue() {
    forwarding_follows_the_reloaded_endpoint(true).await;
}

/// A forward config that cannot be put in force (an unreadable CA file) is
/// refused, counted, and forwarding goes on to the old sink; so is a
/// changed `forward.queue.dir` or a newly forwarded signal, named by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_forward_config_is_refused_and_the_old_sink_keeps_receiving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Sink::default(), Sink::default());
    let (pa, pb) = (free_port(), free_port());
    let down_a = Downstream::start(&a, pa).await;
    let down_b = Downstream::start(&b, pb).await;
    let (ea, eb) = (
        format!("http://127.0.0.1:{pa}"),
        format!("http://127.0.0.1:{pb}"),
    );
    let s = start(dir.path(), "mv", &base_config(&ea, ""), &[]).await;
    let url = s.grpc_url();
    let missing_ca = dir.path().join("no-such-ca.pem");
    let bad = [
        (
            format!(
                "forward:\n  logs: {{ endpoint: \"{eb}\", tls: {{ ca_file: \"{}\" }} }}\n",
                missing_ca.display()
            ),
            "tls.ca_file",
        ),
        (
            base_config(
                &eb,
                &format!(
                    "  queue: {{ dir: \"{}\" }}\n",
                    dir.path().join("q").display()
                ),
            ),
            "forward.queue.dir",
        ),
        (
            base_config(&eb, "").replace(
                "forward:\n",
                &format!("forward:\n  traces: {{ endpoint: \"{eb}\" }}\n"),
            ),
            "forward.traces",
        ),
    ];
    for (i, (text, key)) in bad.iter().enumerate() {
        swap_config(dir.path(), "mv", text);
        hup(&s);
        wait_log(&s, "config reload refused", i + 1).await;
        let log = s.log_text();
        let last = log
            .lines()
            .rev()
            .find(|l| l.contains("config reload refused"));
        assert!(
            last.is_some_and(|l| l.contains(key)),
            "{key} not named:\n{log}"
        );
        let m = scrape_sum(&s, "geometra_sidecar_config_last_reload_successful").await;
        assert_eq!(m, 0.0);
        let tag: &'static str = ["x", "y", "z"][i];
        sdk_emit(url.clone(), tag, 20).await.expect("sdk");
        a.wait_all(&seqs(tag, 20), Duration::from_secs(10)).await;
    }
    let failures = scrape_sum(
        &s,
        "geometra_sidecar_config_reloads_total{result=\"failure\"}",
    )
    .await;
    assert!(failures >= 3.0, "{failures}");
    assert!(
        b.seen.lock().expect("lock").is_empty(),
        "the refused sink got records"
    );
    down_a.stop().await;
    down_b.stop().await;
}

/// A send on the wire when the reload comes finishes against the old sink
/// and is counted once; nothing of it is sent again to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_under_way_at_the_reload_finishes_at_the_old_sink_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Sink::default(), Sink::default());
    let (pa, pb) = (free_port(), free_port());
    let down_a = Downstream::start(&a, pa).await;
    let down_b = Downstream::start(&b, pb).await;
    a.delay_ms.store(1500, Ordering::SeqCst);
    let cfg = |p: u16| base_config(&format!("http://127.0.0.1:{p}"), "");
    let s = start(dir.path(), "mv", &cfg(pa), &[]).await;
    let url = s.grpc_url();
    sdk_emit(url.clone(), "s", 40).await.expect("sdk s");
    let t = Instant::now();
    while a.requests.load(Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "nothing sent to a");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hup_to(&s, dir.path(), &cfg(pb)).await;
    sdk_emit(url.clone(), "t", 20).await.expect("sdk t");
    let mut acked = seqs("s", 40);
    acked.extend(seqs("t", 20));
    let t = Instant::now();
    while a.seen.lock().expect("lock").len() + b.seen.lock().expect("lock").len() < 60 {
        assert!(t.elapsed() < Duration::from_secs(10), "records missing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        a.missing(&seqs("s", 40)) < 40,
        "the send under way reached a"
    );
    assert_eq!(b.missing(&seqs("t", 20)), 0, "later records went to b");
    exactly_once(&[&a, &b], &acked);
    assert_eq!(s.metric("sent_log_records_total").await, 60.0);
    down_a.stop().await;
    down_b.stop().await;
}

/// Sends `n` requests of 100 records with 700-byte bodies (about 75 KB a
/// request: large enough to be compressed when offered); the seqs the
/// sidecar acknowledged. Every request must be taken.
async fn send_large(s: &Sidecar, tag: &str, n: usize) -> HashSet<String> {
    let mut c = s.client().await;
    let mut acked = HashSet::new();
    for i in 0..n {
        let seqs: Vec<String> = (0..100).map(|j| format!("{tag}-{i}-{j}")).collect();
        let recs = seqs.iter().map(|q| {
            let body = format!("{q} checkout: order placed, basket of {} ", q.len()).repeat(20);
            record(q, &[("user.id", q)], Some(&body))
        });
        let req = common::log_request(recs.collect());
        assert!(req.encoded_len() > 64 << 10, "{}", req.encoded_len());
        c.export(req).await.expect("taken");
        acked.extend(seqs);
    }
    acked
}

/// Large requests are compressed when offered, so the queue holds them
/// compressed (`GSQ2` records on disk); a reload to an endpoint without
/// compression (OTLP/HTTP) sends what was queued for a gzip endpoint
/// inflated, and one back to gzip sends what was queued raw compressed:
/// every acknowledged record arrives exactly once, decoded by the sinks.
async fn large_requests_arrive_whole_across_compression_reloads(disk: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (Sink::default(), Sink::default(), Sink::default());
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let down_a = Downstream::start(&a, pa).await;
    let down_b = Downstream::start_http(&b, pb).await;
    let qdir = dir.path().join("queue");
    let extra: Vec<&str> = match disk {
        true => vec!["--queue-dir", qdir.to_str().expect("utf-8")],
        false => vec![],
    };
    let cfg = |ep: &str, compression: &str| {
        format!(
            "forward:\n  logs: {{ endpoint: \"{ep}\", timeout: 2s, compression: {compression} }}\n  retry: {{ initial_interval: 100ms, max_interval: 300ms, max_elapsed: 0s }}\n  batch: {{ max_items: 5000, timeout: 50ms }}\n"
        )
    };
    let url_a = format!("http://127.0.0.1:{pa}");
    let s = start(dir.path(), "mv", &cfg(&url_a, "gzip"), &extra).await;
    let mut acked = send_large(&s, "a", 6).await;
    a.wait_all(&acked, Duration::from_secs(10)).await;

    // queued compressed while the gzip endpoint is down
    down_a.stop().await;
    let queued = send_large(&s, "b", 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if disk {
        let segs: Vec<Vec<u8>> = std::fs::read_dir(qdir.join("logs"))
            .expect("ls")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .map(|e| std::fs::read(e.path()).expect("read"))
            .collect();
        let on_disk: usize = segs.iter().map(Vec::len).sum();
        let pieces: usize = segs
            .iter()
            .map(|s| s.windows(4).filter(|w| w == b"GSQ2").count())
            .sum();
        assert!(pieces >= 6, "{pieces} compressed records on disk");
        assert!(on_disk < 6 * (64 << 10) / 3, "{on_disk} bytes on disk");
    }
    let url_b = format!("http://127.0.0.1:{pb}/v1/logs");
    hup_to(&s, dir.path(), &cfg(&url_b, "none")).await;
    b.wait_all(&queued, Duration::from_secs(10)).await;
    acked.extend(queued);

    // queued raw for the uncompressed endpoint, sent gzip after a reload
    down_b.stop().await;
    let queued = send_large(&s, "c", 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let down_c = Downstream::start(&c, pc).await;
    hup_to(
        &s,
        dir.path(),
        &cfg(&format!("http://127.0.0.1:{pc}"), "gzip"),
    )
    .await;
    c.wait_all(&queued, Duration::from_secs(10)).await;
    acked.extend(queued);

    tokio::time::sleep(Duration::from_millis(300)).await;
    exactly_once(&[&a, &b, &c], &acked);
    assert_eq!(s.metric("sent_log_records_total").await, 1800.0);
    assert_eq!(s.metric("send_failed_log_records_total").await, 0.0);
    down_c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_arrive_whole_across_compression_reloads_memory_queue() {
    large_requests_arrive_whole_across_compression_reloads(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_arrive_whole_across_compression_reloads_disk_queue() {
    large_requests_arrive_whole_across_compression_reloads(true).await;
}

/// In front of a real gateway: the first connection goes to `wedge` (a
/// downstream that keeps the connection open and stops serving it), every
/// later one is passed through to `to`.
async fn first_connection_wedged<F>(
    port: u16,
    to: u16,
    wedge: fn(tokio::net::TcpStream) -> F,
) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the front");
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut s, _)) = l.accept().await {
            if std::mem::replace(&mut first, false) {
                tokio::spawn(wedge(s));
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
                }
            });
        }
    })
}

/// Reads everything and never answers.
async fn read_only(mut s: tokio::net::TcpStream) {
    let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
}

/// A request left unanswered until its timeout is sent again on a new
/// connection, not on the one that did not answer: every record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stops_answering_is_replaced_after_a_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    let (front, back) = (free_port(), free_port());
    let down = Downstream::start(&sink, back).await;
    let proxy = first_connection_wedged(front, back, read_only).await;
    let s = start(
        dir.path(),
        "wedged",
        &base_config(&format!("http://127.0.0.1:{front}"), ""),
        &[],
    )
    .await;
    let (acked, refused) = send_batches(&s, "w", 3, 10).await;
    assert!(refused.is_empty(), "{refused:?}");
    sink.wait_all(&acked, Duration::from_secs(15)).await;
    proxy.abort();
    down.stop().await;
}

/// Serves HTTP/2 on `s`, answering each request with headers only.
async fn headers_only(s: tokio::net::TcpStream) {
    let Ok(mut conn) = h2::server::handshake(s).await else {
        return;
    };
    let mut held = Vec::new();
    while let Some(Ok((_req, mut respond))) = conn.accept().await {
        let head = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .expect("a response head");
        if let Ok(body) = respond.send_response(head, false) {
            held.push(body);
        }
    }
}

/// A request answered with headers and then a body that never comes is
/// given up at the forward timeout and sent again on a new connection:
/// every record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_whose_body_stalls_is_given_up_at_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::default();
    let (front, back) = (free_port(), free_port());
    let down = Downstream::start(&sink, back).await;
    let proxy = first_connection_wedged(front, back, headers_only).await;
    let s = start(
        dir.path(),
        "stalled-body",
        &base_config(&format!("http://127.0.0.1:{front}"), ""),
        &[],
    )
    .await;
    let (acked, refused) = send_batches(&s, "b", 3, 10).await;
    assert!(refused.is_empty(), "{refused:?}");
    sink.wait_all(&acked, Duration::from_secs(15)).await;
    proxy.abort();
    down.stop().await;
}

/// Peak resident set size of a process, in KiB.
fn hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// Serves HTTP/2 on `s`, answering each request with a 64 MiB body (as
/// fast as the client takes it) and an OK status, counting the requests.
async fn huge_answers(s: tokio::net::TcpStream, seen: Arc<AtomicU64>) {
    let Ok(mut conn) = h2::server::handshake(s).await else {
        return;
    };
    while let Some(Ok((_req, mut respond))) = conn.accept().await {
        seen.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let head = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .body(())
                .expect("a response head");
            let Ok(mut body) = respond.send_response(head, false) else {
                return;
            };
            let chunk = bytes::Bytes::from(vec![0u8; 256 << 10]);
            for _ in 0..256 {
                body.reserve_capacity(chunk.len());
                while body.capacity() < chunk.len() {
                    match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                        Some(Ok(_)) => {}
                        _ => return, // the client reset the stream
                    }
                }
                if body.send_data(chunk.clone(), false).is_err() {
                    return;
                }
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let _ = body.send_trailers(trailers);
        });
    }
}

/// A downstream that answers every export with a 64 MiB body: the sidecar
/// reads 4 MiB of it at most (gRPC's default receive limit), takes it for
/// no answer and retries; its peak memory does not grow by the bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_response_body_is_not_read_into_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the downstream");
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = seen.clone();
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(huge_answers(s, seen2.clone()));
        }
    });
    let s = start(
        dir.path(),
        "huge-answer",
        &base_config(&format!("http://127.0.0.1:{port}"), ""),
        &[],
    )
    .await;
    let before = hwm_kib(s.pid());
    let (_, refused) = send_batches(&s, "h", 1, 10).await;
    assert!(refused.is_empty(), "{refused:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the sidecar did not retry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = hwm_kib(s.pid()).saturating_sub(before);
    assert!(
        grown < 24 << 10,
        "peak RSS grew by {grown} KiB over 64 MiB answers"
    );
    assert_eq!(s.metric("sent_log_records_total").await, 0.0);
    server.abort();
}
