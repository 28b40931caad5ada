//! Native histograms through real Prometheus (Debian's 2.42): one started
//! with `--enable-feature=native-histograms` (it asks for the protobuf
//! exposition) and one without (it asks for OpenMetrics / text) scrape the
//! same sidecar (`store.histograms: both`) after real OTLP spans from the
//! Rust SDK, and an exponential histogram from the Rust SDK's
//! Base2ExponentialHistogram aggregation passed through.

use crate::common;

use common::{free_port, Sidecar};
use geometra_sidecar::proto::client as pb;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{Aggregation, Instrument, SdkMeterProvider, Stream};
use opentelemetry_sdk::Resource;
use prost::Message;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const SPANS: u64 = 200;
const EXPO: u64 = 100;

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: std::net::SocketAddr, native: bool) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("prometheus.yml");
        let yml = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: sidecar\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(&cfg, yml).expect("write prometheus.yml");
        let port = free_port();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if native {
            cmd.arg("--enable-feature=native-histograms");
        }
        let child = cmd
            .spawn()
            .expect("start prometheus (apt-get install prometheus)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The single value of an instant query, if it has one yet.
    async fn value(&self, q: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let r = reqwest::Client::new()
            .get(url)
            .query(&[("query", q)])
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
        let res = v["data"]["result"].as_array()?;
        if res.len() != 1 {
            return None;
        }
        res[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `q` has a value satisfying `ok`; returns it.
    async fn wait(&self, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.value(q).await;
            if let Some(v) = last.filter(|v| ok(*v)) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{q}: no acceptable value within 40s (last {last:?})");
    }
}

fn resource() -> Resource {
    Resource::builder().with_service_name("native-test").build()
}

/// Server spans of 5, 10, ... 1000 ms: the true 0.9 quantile is 900 ms,
/// and the classic buckets (0.75, 1] interpolate to it exactly.
async fn send_spans(url: String) {
    tokio::task::spawn_blocking(move || {
        let provider = common::sdk::tracer_provider(&url, resource());
        let tracer = provider.tracer("native-test");
        let t0 = SystemTime::now() - Duration::from_secs(30);
        for i in 1..=SPANS {
            let mut span = tracer
                .span_builder("GET /items")
                .with_kind(SpanKind::Server)
                .with_start_time(t0)
                .with_attributes(vec![
                    KeyValue::new("http.route", "/items"),
                    KeyValue::new("http.request.method", "GET"),
                ])
                .start(&tracer);
            span.end_with_timestamp(t0 + Duration::from_millis(5 * i));
        }
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .expect("span sender");
}

/// A histogram of 1 ..= 100 (true 0.5 quantile: 50) recorded with the SDK's
/// exponential aggregation and pushed over OTLP/gRPC.
async fn send_exponential(url: String) {
    tokio::task::spawn_blocking(move || {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(&url)
            .build()
            .expect("metric exporter");
        let view = |i: &Instrument| {
            (i.name() == "expo_latency").then(|| {
                Stream::builder()
                    .with_aggregation(Aggregation::Base2ExponentialHistogram {
                        max_size: 160,
                        max_scale: 20,
                        record_min_max: true,
                    })
                    .build()
                    .ok()
            })?
        };
        let provider = SdkMeterProvider::builder()
            .with_periodic_exporter(exporter)
            .with_resource(resource())
            .with_view(view)
            .build();
        let h = provider
            .meter("native-test")
            .f64_histogram("expo_latency")
            .build();
        for v in 1..=EXPO {
            h.record(v as f64, &[]);
        }
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .expect("metric sender");
}

/// `/metrics` asked for protobuf answers with its media type, and the body
/// decodes (prost, the generated types) to the derived histogram with both
/// its classic buckets and its native spans.
async fn protobuf_scrape_has_both_bucket_kinds(sc: &Sidecar) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/metrics", sc.metrics))
        .header("accept", PROTOBUF_ACCEPT)
        .send()
        .await
        .expect("scrape");
    let ct = r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(
        ct,
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
    let body = r.bytes().await.expect("body");
    let mut b = &body[..];
    let mut found = None;
    while !b.is_empty() {
        let f = pb::MetricFamily::decode_length_delimited(&mut b).expect("decodes");
        if f.name() == "http_request_duration_seconds" {
            found = Some(f);
        }
    }
    let f = found.expect("the derived histogram family");
    assert_eq!(f.r#type(), pb::MetricType::Histogram);
    let h = f.metric[0].histogram.as_ref().expect("histogram");
    assert_eq!(h.sample_count(), SPANS);
    assert_eq!(h.bucket.len(), 14, "classic bounds (+Inf is sample_count)");
    assert!(!h.positive_span.is_empty(), "native spans");
    let covered: u32 = h.positive_span.iter().map(|s| s.length()).sum();
    assert_eq!(covered as usize, h.positive_delta.len());
    let total: i64 = h
        .positive_delta
        .iter()
        .scan(0i64, |v, d| {
            *v += d;
            Some(*v)
        })
        .sum();
    assert_eq!(
        total as u64 + h.zero_count(),
        SPANS,
        "native buckets hold every span"
    );
}

const PROTOBUF_ACCEPT: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                               encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8";

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_reads_native_histograms_from_the_protobuf_exposition() {
    let sc = Sidecar::start("store:\n  histograms: both\n").await;
    send_spans(sc.grpc_url()).await;
    send_exponential(sc.grpc_url()).await;
    protobuf_scrape_has_both_bucket_kinds(&sc).await;
    let native = Prometheus::start(sc.metrics, true);
    let plain = Prometheus::start(sc.metrics, false);

    // the derived histogram, native side: count, and a quantile close to truth
    let h = "http_request_duration_seconds";
    let n = native
        .wait(&format!("histogram_count({h})"), |v| v > 0.0)
        .await;
    assert_eq!(n, SPANS as f64, "native histogram_count");
    let qn = native
        .wait(&format!("histogram_quantile(0.9, {h})"), f64::is_finite)
        .await;
    // classic side, from the plain Prometheus (text; 2.42 with the feature
    // flag keeps only the native buckets of a histogram that has both)
    let qc = plain
        .wait(
            &format!("histogram_quantile(0.9, {h}_bucket)"),
            f64::is_finite,
        )
        .await;
    let buckets = plain.wait(&format!("count({h}_bucket)"), |v| v > 0.0).await;
    assert_eq!(buckets, 15.0, "14 classic bounds and +Inf");
    assert_eq!(
        plain.wait(&format!("{h}_count"), |v| v > 0.0).await,
        SPANS as f64
    );
    assert!(close(qn, 0.9, 0.06), "native p90 {qn} vs true 0.9");
    assert!(close(qn, qc, 0.08), "native p90 {qn} vs classic {qc}");

    // the SDK's exponential histogram arrives as a native histogram
    let e = "expo_latency";
    let n = native
        .wait(&format!("histogram_count({e})"), |v| v > 0.0)
        .await;
    assert_eq!(n, EXPO as f64, "exponential histogram_count");
    let s = native
        .wait(&format!("histogram_sum({e})"), |v| v > 0.0)
        .await;
    assert_eq!(s, (1..=EXPO).sum::<u64>() as f64);
    let q = native
        .wait(&format!("histogram_quantile(0.5, {e})"), f64::is_finite)
        .await;
    assert!(close(q, 50.0, 0.06), "exponential p50 {q} vs true 50");
    // the plain Prometheus still scrapes everything else as before
    assert_eq!(plain.wait("up", |v| v > 0.0).await, 1.0);
    assert_eq!(native.wait("up", |v| v > 0.0).await, 1.0);
}

/// A value that text formats escape (quote, backslash, newline) and
/// non-ASCII: on the protobuf wire it travels as it is.
const ODD: &str = "a \"q\" \\ b\nc ü";

/// Pass-through metrics of every type the exposition carries: a counter
/// and a gauge labelled with [`ODD`], a summary, a classic histogram.
fn every_type() -> Vec<opentelemetry_proto::tonic::metrics::v1::Metric> {
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, number_data_point::Value, summary_data_point::ValueAtQuantile,
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
        Summary, SummaryDataPoint,
    };
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let num = |v: f64| NumberDataPoint {
        attributes: vec![crate::common::str_attr("path", ODD)],
        value: Some(Value::AsDouble(v)),
        start_time_unix_nano: t - 1_000_000_000,
        time_unix_nano: t,
        ..Default::default()
    };
    let metric = |name: &str, data: Data| Metric {
        name: name.into(),
        description: format!("{name}: {ODD}"),
        data: Some(data),
        ..Default::default()
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let quantiles =
        [(0.5, 2.0), (0.99, 9.5)].map(|(quantile, value)| ValueAtQuantile { quantile, value });
    vec![
        metric(
            "pb.items",
            Data::Sum(Sum {
                data_points: vec![num(7.0)],
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
        ),
        metric(
            "pb.level",
            Data::Gauge(Gauge {
                data_points: vec![num(-2.5)],
            }),
        ),
        metric(
            "pb.rpc",
            Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    count: 12,
                    sum: 30.0,
                    quantile_values: quantiles.to_vec(),
                    start_time_unix_nano: t - 1_000_000_000,
                    time_unix_nano: t,
                    ..Default::default()
                }],
            }),
        ),
        metric(
            "pb.latency",
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    count: 6,
                    sum: Some(4.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![0.5, 1.0],
                    start_time_unix_nano: t - 1_000_000_000,
                    time_unix_nano: t,
                    ..Default::default()
                }],
                aggregation_temporality: cumulative,
            }),
        ),
    ]
}

/// The Prometheus that asks for the protobuf exposition reads every type
/// the wire writer emits with the values and label values sent.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_reads_every_type_from_the_protobuf_exposition() {
    let sc = Sidecar::start("").await;
    sc.send_metrics(every_type()).await;
    let p = Prometheus::start(sc.metrics, true);
    let path = r#"path="a \"q\" \\ b\nc ü""#;
    let exact = |want: f64| move |v: f64| v == want;
    p.wait(&format!("pb_items_total{{{path}}}"), exact(7.0))
        .await;
    p.wait(&format!("pb_level{{{path}}}"), exact(-2.5)).await;
    p.wait(r#"pb_rpc{quantile="0.99"}"#, exact(9.5)).await;
    p.wait(r#"pb_rpc{quantile="0.5"}"#, exact(2.0)).await;
    p.wait("pb_rpc_count", exact(12.0)).await;
    p.wait("pb_rpc_sum", exact(30.0)).await;
    p.wait("pb_latency_count", exact(6.0)).await;
    p.wait("pb_latency_sum", exact(4.5)).await;
    // cumulative buckets 1, 3 and +Inf 6
    p.wait("count(pb_latency_bucket)", exact(3.0)).await;
    p.wait("sum(pb_latency_bucket)", exact(10.0)).await;
    p.wait("max(pb_latency_bucket)", exact(6.0)).await;
    // the help text, which text formats escape, arrives as sent
    let url = format!("http://127.0.0.1:{}/api/v1/metadata?metric=pb_rpc", p.port);
    let meta = reqwest::get(url)
        .await
        .expect("metadata")
        .text()
        .await
        .expect("body");
    assert!(meta.contains(r#""type":"summary""#), "{meta}");
    assert!(meta.contains(r#"pb.rpc: a \"q\" \\ b\nc ü"#), "{meta}");
}

/// Both Prometheus (protobuf, and OpenMetrics) read a streamed body of many
/// pieces whole: 10k series (5.8 MB of text, 1.3 MB of protobuf), every
/// series of every family, the last ones included.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_reads_a_streamed_body_of_many_pieces_whole() {
    let series = 10_000;
    let per = (series / 10) as f64;
    let sc = crate::scrape_stream::large_sidecar(series).await;
    for native in [true, false] {
        let p = Prometheus::start(sc.metrics, native);
        let exact = |want: f64| move |v: f64| v == want;
        p.wait(r#"up{job="sidecar"}"#, exact(1.0)).await;
        for m in 0..5 {
            p.wait(&format!("count(big_metric_{m}_total)"), exact(per))
                .await;
        }
        for m in 5..10 {
            p.wait(&format!("count(big_metric_{m}_bucket)"), exact(11.0 * per))
                .await;
            p.wait(&format!("sum(big_metric_{m}_count)"), exact(11.0 * per))
                .await;
        }
    }
}
