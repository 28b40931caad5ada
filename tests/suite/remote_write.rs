//! Remote write end to end: spans sent by the OpenTelemetry SDK through the
//! sidecar reach a real Prometheus (Debian's, started with
//! `--web.enable-remote-write-receiver`) as series equal to `/metrics`, with
//! the external labels; a receiver that restarts gets the pushes again with
//! the sidecar's memory bounded; a small receiver of our own checks the
//! protocol's headers and body and which answers are retried.

use crate::common;

use common::{Metrics, Sidecar};
use geometra_sidecar::proto::remote::WriteRequest;
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use prost::Message;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A Prometheus server accepting remote write, on `port`, storing in `dir`.
struct Prom {
    child: Child,
    port: u16,
}

impl Prom {
    async fn start(port: u16, dir: &std::path::Path) -> Prom {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").expect("prometheus config");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--enable-feature=native-histograms,exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        let p = Prom { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/-/ready")).await {
                if r.status().is_success() {
                    return p;
                }
            }
            assert!(Instant::now() < deadline, "prometheus not ready within 30s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// An instant query: (labels, value) per series.
    async fn query(&self, q: &str) -> Vec<(HashMap<String, String>, f64)> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let Ok(r) = reqwest::Client::new()
            .get(url)
            .query(&[("query", q)])
            .send()
            .await
        else {
            return Vec::new();
        };
        let body = r.bytes().await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let mut out = Vec::new();
        for s in v["data"]["result"].as_array().into_iter().flatten() {
            let labels = s["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let value = s["value"][1].as_str().and_then(|x| x.parse().ok());
            out.push((labels, value.unwrap_or(f64::NAN)));
        }
        out
    }

    /// Polls `q` until it returns one series with `want`, at most 20s.
    async fn wait_value(&self, q: &str, want: f64) -> HashMap<String, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.query(q).await;
            if got.len() == 1 && got[0].1 == want {
                return got[0].0.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{q}: wanted {want}, Prometheus has {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// POSTs a body as the sidecar would; the HTTP status.
    async fn push(&self, req: &WriteRequest) -> u16 {
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .expect("snappy");
        reqwest::Client::new()
            .post(self.write_url())
            .header("content-encoding", "snappy")
            .header("content-type", "application/x-protobuf")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .body(body)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` FastAPI-like server spans on `route`, through the SDK's OTLP exporter.
async fn send_spans(url: String, route: &'static str, n: usize) {
    tokio::task::spawn_blocking(move || {
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("geometra-api")
            .build();
        let provider = common::sdk::tracer_provider(&url, resource);
        let tracer = provider.tracer("remote-write-test");
        let t0 = SystemTime::now() - Duration::from_secs(5);
        for i in 0..n {
            let mut span = tracer
                .span_builder("GET")
                .with_kind(SpanKind::Server)
                .with_start_time(t0)
                .with_attributes(vec![
                    KeyValue::new("http.request.method", "GET"),
                    KeyValue::new("http.route", route),
                    KeyValue::new("http.response.status_code", 200),
                ])
                .start(&tracer);
            span.end_with_timestamp(t0 + Duration::from_millis(20 + 40 * (i as u64 % 10)));
        }
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .expect("span sender");
}

fn config(url: &str, extra: &str) -> String {
    format!(
        "remote_write:\n  url: {url}\n  interval: 1s\n  external_labels:\n    cluster: eu-test\n    replica: a\n{extra}"
    )
}

async fn requests(sc: &Sidecar, route: &str) -> Metrics {
    sc.wait_for("the spans", |m| {
        m.value("http_requests_total", &[("endpoint", route)])
            .is_some()
    })
    .await
}

#[tokio::test]
async fn spans_show_up_in_prometheus_equal_to_the_scrape_with_external_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = Prom::start(common::free_port(), dir.path()).await;
    let sc = Sidecar::start(&config(&prom.write_url(), "")).await;
    send_spans(sc.grpc_url(), "/api/chat", 25).await;
    let m = requests(&sc, "/api/chat").await;
    let want = m
        .value("http_requests_total", &[("endpoint", "/api/chat")])
        .expect("scraped");
    assert_eq!(want, 25.0);
    let labels = prom
        .wait_value("http_requests_total{endpoint=\"/api/chat\"}", want)
        .await;
    assert_eq!(labels.get("cluster").map(String::as_str), Some("eu-test"));
    assert_eq!(labels.get("replica").map(String::as_str), Some("a"));
    assert_eq!(
        labels.get("job").map(String::as_str),
        Some("geometra-sidecar")
    );
    assert!(labels.contains_key("instance"), "{labels:?}");
    assert_eq!(labels.get("method").map(String::as_str), Some("GET"));
    // every bucket of the histogram, and its sum and count, as scraped
    let buckets = m
        .buckets(
            "http_request_duration_seconds",
            &[("endpoint", "/api/chat")],
        )
        .expect("histogram scraped");
    for (le, n) in buckets {
        let le = if le.is_infinite() {
            "+Inf".to_string()
        } else if le.fract() == 0.0 {
            format!("{le:.1}")
        } else {
            le.to_string()
        };
        let q =
            format!("http_request_duration_seconds_bucket{{endpoint=\"/api/chat\",le=\"{le}\"}}");
        prom.wait_value(&q, n).await;
    }
    for suffix in ["_sum", "_count"] {
        let name = format!("http_request_duration_seconds{suffix}");
        let want = m
            .value(&name, &[("endpoint", "/api/chat")])
            .expect("scraped");
        prom.wait_value(&format!("{name}{{endpoint=\"/api/chat\"}}"), want)
            .await;
    }
    let m = sc.scrape().await;
    let sent = m.value(
        "otelcol_exporter_sent_metric_points_total",
        &[("exporter", "prometheusremotewrite")],
    );
    assert!(sent.unwrap_or(0.0) > 0.0, "{}", m.text);
    assert!(
        m.value(
            "otelcol_exporter_prometheusremotewrite_sent_batches_total",
            &[]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        m.value(
            "otelcol_exporter_prometheusremotewrite_translated_time_series_total",
            &[]
        )
        .unwrap_or(0.0)
            >= 18.0
    );
}

/// Two replicas of one Deployment, configured alike (the chart's ConfigMap
/// is one per release), push to one receiver: each series carries its
/// sender's `instance` (the pod's name from `K8S_POD_NAME`, else the host
/// name) and `job="geometra-sidecar"`, so the receiver keeps both replicas'
/// series and a sum over them is the fleet's; an `instance` given in
/// `external_labels` wins.
#[tokio::test]
async fn replicas_configured_alike_push_series_of_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = Prom::start(common::free_port(), dir.path()).await;
    let cfg = format!(
        "remote_write:\n  url: {}\n  interval: 1s\n",
        prom.write_url()
    );
    let a = Sidecar::builder()
        .config(&cfg)
        .env("K8S_POD_NAME", "api-7d9f-a")
        .start()
        .await;
    let b = Sidecar::builder()
        .config(&cfg)
        .env("K8S_POD_NAME", "api-7d9f-b")
        .start()
        .await;
    let c = Sidecar::builder()
        .config(&cfg)
        .env_remove("K8S_POD_NAME")
        .start()
        .await;
    let explicit = format!("{cfg}  external_labels: {{instance: mine, job: other}}\n");
    let d = Sidecar::builder()
        .config(&explicit)
        .env("K8S_POD_NAME", "api-7d9f-d")
        .start()
        .await;
    for (sc, n) in [(&a, 3), (&b, 5), (&c, 7), (&d, 11)] {
        send_spans(sc.grpc_url(), "/api/replicas", n).await;
        requests(sc, "/api/replicas").await;
    }
    let q = |i: &str, j: &str| {
        format!("http_requests_total{{endpoint=\"/api/replicas\",instance=\"{i}\",job=\"{j}\"}}")
    };
    prom.wait_value(&q("api-7d9f-a", "geometra-sidecar"), 3.0)
        .await;
    prom.wait_value(&q("api-7d9f-b", "geometra-sidecar"), 5.0)
        .await;
    prom.wait_value(&q(&hostname(), "geometra-sidecar"), 7.0)
        .await;
    prom.wait_value(&q("mine", "other"), 11.0).await;
    prom.wait_value("sum(http_requests_total{endpoint=\"/api/replicas\"})", 26.0)
        .await;
}

/// The machine's host name, as `hostname(1)` prints it.
fn hostname() -> String {
    let out = Command::new("hostname").output().expect("hostname(1)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn a_receiver_restart_keeps_memory_bounded_and_pushes_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let mut prom = Prom::start(port, dir.path()).await;
    let sc = Sidecar::start(&config(&prom.write_url(), "")).await;
    send_spans(sc.grpc_url(), "/api/a", 10).await;
    requests(&sc, "/api/a").await;
    prom.wait_value("http_requests_total{endpoint=\"/api/a\"}", 10.0)
        .await;

    prom.stop();
    let rss_before = common::rss_kib(sc.pid());
    // traffic continues while the receiver is down: 200 more series a round
    for round in 0..6 {
        let route: &'static str = Box::leak(format!("/api/down/{round}").into_boxed_str());
        send_spans(sc.grpc_url(), route, 20).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    send_spans(sc.grpc_url(), "/api/a", 5).await;
    let m = sc
        .wait_for("failed pushes", |m| {
            m.value(
                "geometra_sidecar_remote_write_failed_requests_total",
                &[("reason", "retryable")],
            )
            .unwrap_or(0.0)
                >= 2.0
        })
        .await;
    // at most one request waits, however long the outage
    let queued = m.value(
        "otelcol_exporter_queue_size",
        &[("exporter", "prometheusremotewrite")],
    );
    assert_eq!(queued, Some(1.0), "{}", m.text);
    assert!(
        m.value(
            "otelcol_exporter_send_failed_metric_points_total",
            &[("exporter", "prometheusremotewrite")]
        )
        .unwrap_or(0.0)
            > 0.0,
        "superseded snapshots are counted as failed"
    );
    let rss_after = common::rss_kib(sc.pid());
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB while the receiver was down"
    );

    let prom = Prom::start(port, dir.path()).await;
    prom.wait_value("http_requests_total{endpoint=\"/api/a\"}", 15.0)
        .await;
    prom.wait_value("http_requests_total{endpoint=\"/api/down/5\"}", 20.0)
        .await;
    let m = sc
        .wait_for("the queue to empty", |m| {
            m.value(
                "otelcol_exporter_queue_size",
                &[("exporter", "prometheusremotewrite")],
            ) == Some(0.0)
        })
        .await;
    assert!(
        m.value(
            "otelcol_exporter_sent_metric_points_total",
            &[("exporter", "prometheusremotewrite")]
        )
        .unwrap_or(0.0)
            > 0.0
    );
}

/// What the small receiver saw of one request.
#[derive(Clone)]
struct Seen {
    at: Instant,
    headers: http::HeaderMap,
    body: Option<WriteRequest>,
}

/// A receiver answering the scripted statuses in turn (then the last one
/// for ever), each with its Retry-After if any; returns its URL and what
/// it saw.
async fn receiver(script: Vec<(u16, Option<&'static str>)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    use axum::response::IntoResponse;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/push",
        axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
            let seen = s2.clone();
            let script = script.clone();
            async move {
                let body = snap::raw::Decoder::new()
                    .decompress_vec(&body)
                    .ok()
                    .and_then(|b| WriteRequest::decode(b.as_slice()).ok());
                let mut g = seen.lock().unwrap_or_else(|p| p.into_inner());
                let (status, after) = script[g.len().min(script.len() - 1)];
                g.push(Seen {
                    at: Instant::now(),
                    headers,
                    body,
                });
                let mut resp = http::StatusCode::from_u16(status)
                    .unwrap_or(http::StatusCode::OK)
                    .into_response();
                if let Some(a) = after {
                    resp.headers_mut()
                        .insert("retry-after", http::HeaderValue::from_static(a));
                }
                resp
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/push", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, seen)
}

fn seen(s: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    s.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[tokio::test]
async fn requests_follow_the_protocol_and_a_400_is_never_retried() {
    let (url, log) = receiver(vec![(400, None)]).await;
    // 2s between pushes: far from the retry backoff (0.25-0.75s at first)
    let sc = Sidecar::start(&config(&url, "").replace("interval: 1s", "interval: 2s")).await;
    send_spans(sc.grpc_url(), "/api/x", 3).await;
    let m = sc
        .wait_for("three refused pushes", |m| {
            m.value(
                "geometra_sidecar_remote_write_failed_requests_total",
                &[("reason", "permanent")],
            )
            .unwrap_or(0.0)
                >= 3.0
        })
        .await;
    let batches = m
        .value(
            "otelcol_exporter_prometheusremotewrite_sent_batches_total",
            &[],
        )
        .unwrap_or(0.0);
    let permanent = m.value(
        "geometra_sidecar_remote_write_failed_requests_total",
        &[("reason", "permanent")],
    );
    let retryable = m.value(
        "geometra_sidecar_remote_write_failed_requests_total",
        &[("reason", "retryable")],
    );
    assert_eq!(retryable, Some(0.0));
    assert_eq!(
        permanent,
        Some(batches),
        "every request refused once, none retried"
    );
    let got = seen(&log);
    assert!(got.len() as f64 >= batches);
    // one request per interval tick (2s), no retries in between
    for w in got.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(1200),
            "a refused request was sent again after {gap:?}"
        );
    }
    let first = &got[0];
    let h = |k: &str| {
        first
            .headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    assert_eq!(h("content-encoding"), "snappy");
    assert_eq!(h("content-type"), "application/x-protobuf");
    assert_eq!(h("x-prometheus-remote-write-version"), "0.1.0");
    let req = got
        .iter()
        .rev()
        .find_map(|s| s.body.clone())
        .expect("a snappy protobuf WriteRequest");
    let ts = req
        .timeseries
        .iter()
        .find(|t| {
            t.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == "http_requests_total")
        })
        .expect("the counter");
    let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "labels sorted by name");
    assert!(names.contains(&"cluster") && names.contains(&"replica"));
    assert_eq!(ts.samples[0].value, 3.0);
}

/// The metrics once a push has been delivered.
async fn delivered_push(sc: &Sidecar) -> Metrics {
    sc.wait_for("a delivered push", |m| {
        m.value(
            "otelcol_exporter_sent_metric_points_total",
            &[("exporter", "prometheusremotewrite")],
        )
        .unwrap_or(0.0)
            > 0.0
    })
    .await
}

/// A receiver that answers 200 to each request `hold` after it came,
/// counting the requests it has begun to hold.
async fn slow_receiver(hold: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let begun: Arc<AtomicUsize> = Arc::default();
    let b2 = begun.clone();
    let app = axum::Router::new().route(
        "/push",
        axum::routing::post(move |_body: bytes::Bytes| {
            let begun = b2.clone();
            async move {
                begun.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                http::StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/push", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, begun)
}

/// `otelcol_exporter_queue_size` counts a snapshot waiting for its retry,
/// not one on the wire: a slow receiver does not read as a full queue (the
/// GeometraSidecarQueueNearlyFull alert divides by a capacity of 1; it
/// fired in the fleet test on a busy machine).
#[tokio::test]
async fn a_push_on_the_wire_is_not_counted_as_queued() {
    let (url, begun) = slow_receiver(Duration::from_secs(3)).await;
    let sc = Sidecar::start(&config(&url, "")).await;
    send_spans(sc.grpc_url(), "/api/slow", 2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while begun.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no push reached the receiver");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the receiver holds that push for 3 s: it is on the wire now
    let m = sc.scrape().await;
    let q = |m: &Metrics| {
        m.value(
            "otelcol_exporter_queue_size",
            &[("exporter", "prometheusremotewrite")],
        )
    };
    assert_eq!(q(&m), Some(0.0), "{}", m.text);
    let m = delivered_push(&sc).await;
    assert_eq!(q(&m), Some(0.0), "{}", m.text);
}

#[tokio::test]
async fn a_503_and_a_429_are_retried_after_their_retry_after() {
    let (url, log) = receiver(vec![(503, Some("3")), (429, Some("2")), (200, None)]).await;
    let sc = Sidecar::start(&config(&url, "")).await;
    send_spans(sc.grpc_url(), "/api/y", 2).await;
    let m = delivered_push(&sc).await;
    assert_eq!(
        m.value(
            "geometra_sidecar_remote_write_failed_requests_total",
            &[("reason", "retryable")]
        ),
        Some(2.0)
    );
    let got = seen(&log);
    assert!(got.len() >= 3);
    // the ticks in between (1s) did not send: the server's hints were waited out
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(2900),
        "{:?}",
        got[1].at - got[0].at
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(1900),
        "{:?}",
        got[2].at - got[1].at
    );
}

/// The translation of native histograms and exemplars, checked by the
/// receiver that defines them: Prometheus stores the histogram with the
/// buckets we meant (Prometheus' bucket index: `k` covers
/// `(2^(k-1), 2^k]` at schema 0) and the exemplar on its bucket.
#[tokio::test]
async fn native_histograms_and_exemplars_are_stored_as_meant() {
    use geometra_sidecar::export::remote_write::translate::Translator;
    use geometra_sidecar::metrics::snapshot as s;
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = Prom::start(common::free_port(), dir.path()).await;
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut f = s::Family::new("rw_latency_seconds", s::Kind::Histogram, "");
    // 4 observations in (0.5, 1], 2 in (2, 4], 1 in the zero bucket
    let native = s::Native {
        schema: 0,
        zero_threshold: 1e-9,
        zero_count: 1,
        positive: s::Buckets {
            offset: 0,
            counts: &[4, 0, 2],
        },
        negative: s::Buckets::default(),
    };
    let ex = s::Exemplar {
        trace_id: [0x11; 16],
        span_id: [0x22; 8],
        value: 0.8,
        time_ns: now_ms as u64 * 1_000_000,
    };
    let classic = s::Classic {
        bounds: &std::sync::Arc::from(vec![1.0]),
        counts: &[5, 2],
        exemplars: &[Some(ex), None],
    };
    let h = s::Histogram {
        count: 7,
        sum: 9.5,
        classic: Some(classic),
        native: Some(native),
    };
    f.push_histogram(&[("op", "chat")], h, None);
    let snap = s::Snapshot {
        families: vec![f],
        timestamp_ms: now_ms,
    };
    let req = Translator::new(&Default::default()).request(&snap);
    assert_eq!(prom.push(&req).await, 204);
    prom.wait_value("histogram_count(rw_latency_seconds)", 7.0)
        .await;
    prom.wait_value("histogram_sum(rw_latency_seconds)", 9.5)
        .await;
    // the upper half of the observations lies in (2, 4]: quantile 0.9 there
    let q = prom
        .query("histogram_quantile(0.9, rw_latency_seconds)")
        .await;
    assert!(q.len() == 1 && q[0].1 > 2.0 && q[0].1 <= 4.0, "{q:?}");
    let q = prom
        .query("histogram_quantile(0.3, rw_latency_seconds)")
        .await;
    assert!(q.len() == 1 && q[0].1 > 0.5 && q[0].1 <= 1.0, "{q:?}");
    prom.wait_value("rw_latency_seconds_bucket{le=\"1.0\"}", 5.0)
        .await;
    // the exemplar, on the le="1.0" bucket
    let url = format!("http://127.0.0.1:{}/api/v1/query_exemplars", prom.port);
    let (start, end) = (
        (now_ms / 1000 - 60).to_string(),
        (now_ms / 1000 + 60).to_string(),
    );
    let r = reqwest::Client::new()
        .get(url)
        .query(&[
            ("query", "rw_latency_seconds_bucket"),
            ("start", &start),
            ("end", &end),
        ])
        .send()
        .await
        .expect("query_exemplars");
    let v: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or_default();
    let data = &v["data"][0];
    assert_eq!(data["seriesLabels"]["le"], "1.0", "{v}");
    let e = &data["exemplars"][0];
    assert_eq!(e["labels"]["trace_id"], "11".repeat(16), "{v}");
    assert_eq!(e["labels"]["span_id"], "22".repeat(8), "{v}");
    assert_eq!(e["value"], "0.8", "{v}");
}

/// Spans through the whole sidecar with `store.histograms: both`: the
/// derived latency histogram arrives as a native histogram next to its
/// classic buckets, and both answer the same count and close quantiles.
#[tokio::test]
async fn derived_native_histograms_arrive_next_to_the_classic_buckets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = Prom::start(common::free_port(), dir.path()).await;
    let sc = Sidecar::start(&config(&prom.write_url(), "store:\n  histograms: both\n")).await;
    // durations 20, 60, ..., 380 ms, 4 spans each
    send_spans(sc.grpc_url(), "/api/native", 40).await;
    requests(&sc, "/api/native").await;
    let sel = "http_request_duration_seconds{endpoint=\"/api/native\"}";
    prom.wait_value(&format!("histogram_count({sel})"), 40.0)
        .await;
    let native = prom.query(&format!("histogram_quantile(0.9, {sel})")).await;
    let classic = prom
        .query(
            "histogram_quantile(0.9, sum by (le) (http_request_duration_seconds_bucket{endpoint=\"/api/native\"}))",
        )
        .await;
    let (n, c) = match (native.first(), classic.first()) {
        (Some(n), Some(c)) => (n.1, c.1),
        _ => panic!("quantiles missing: native {native:?} classic {classic:?}"),
    };
    // the true 0.9 quantile is 340-380 ms; schema 3 buckets are 9 % wide,
    // the default classic ones (.25, .5) far coarser
    assert!((0.3..=0.42).contains(&n), "native p90 {n}");
    assert!((n - c).abs() <= 0.15, "native {n} vs classic {c}");
    prom.wait_value(
        "http_request_duration_seconds_count{endpoint=\"/api/native\"}",
        40.0,
    )
    .await;
}

/// A config reload moves remote write to another receiver with other
/// external labels, without a restart; removing `remote_write` is refused.
#[tokio::test]
async fn a_reload_moves_remote_write_to_a_new_url() {
    let (url_a, seen_a) = receiver(vec![(204, None)]).await;
    let (url_b, seen_b) = receiver(vec![(204, None)]).await;
    let sc = Sidecar::start(&config(&url_a, "")).await;
    let cfg = sc.config_path().expect("config").to_path_buf();
    send_spans(sc.grpc_url(), "/api/chat", 3).await;
    requests(&sc, "/api/chat").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen(&seen_a).is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing pushed to the first receiver"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved = format!(
        "remote_write:\n  url: {url_b}\n  interval: 1s\n  external_labels:\n    cluster: eu-other\n"
    );
    std::fs::write(&cfg, &moved).expect("rewrite config");
    sc.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    let cluster = |s: &Seen| {
        let ts = s.body.as_ref().and_then(|b| b.timeseries.first().cloned());
        ts.and_then(|t| t.labels.into_iter().find(|l| l.name == "cluster"))
            .map(|l| l.value)
    };
    loop {
        if let Some(s) = seen(&seen_b).last() {
            assert_eq!(cluster(s).as_deref(), Some("eu-other"));
            break;
        }
        assert!(Instant::now() < deadline, "nothing pushed after the reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the first receiver hears nothing more once the second one does
    let a_before = seen(&seen_a).len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        seen(&seen_a).len() <= a_before + 1,
        "still pushing to the old URL"
    );
    let m = sc.scrape().await;
    let reloads = m.value(
        "geometra_sidecar_config_reloads_total",
        &[("result", "success")],
    );
    assert_eq!(reloads, Some(1.0), "{}", m.text);
    // removing remote_write needs a restart: refused, pushes go on
    std::fs::write(&cfg, "").expect("rewrite config");
    sc.signal(libc::SIGHUP);
    let m = sc
        .wait_for("the refused reload", |m| {
            m.value(
                "geometra_sidecar_config_reloads_total",
                &[("result", "failure")],
            ) == Some(1.0)
        })
        .await;
    assert_eq!(
        m.value("geometra_sidecar_config_last_reload_successful", &[]),
        Some(0.0)
    );
    let b_before = seen(&seen_b).len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        seen(&seen_b).len() > b_before,
        "pushes stopped after a refused reload"
    );
}
