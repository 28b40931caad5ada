//! Shared test harness: runs the real sidecar binary on free ports (the
//! one way to start it: [`Sidecar`], [`Sidecar::builder`] in sidecar.rs),
//! scrapes `/metrics` and parses it with a Prometheus text parser; the one
//! skip policy for what a host lacks ([`require`]).
#![allow(dead_code)]

pub mod sdk;
pub mod sidecar;
pub mod sink;
pub mod strict;

#[allow(unused_imports)] // each test uses some
pub use sidecar::{get_blocking, Sidecar, SidecarBuilder, BIN};

use bytes::{Buf, BufMut, Bytes};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set to 1, a test that cannot run on this host (no IPv6 loopback, no
/// `unshare`, no `script`, …) prints "skipped: <reason>" and passes;
/// unset (CI, scripts/test.sh) it fails with the reason.
pub const ALLOW_SKIP: &str = "GEOMETRA_TEST_ALLOW_SKIP";

/// The one skip policy of the Rust tests: `cond` is what the test needs
/// from the host. True when it holds. When it does not, the test fails
/// naming `reason`, unless [`ALLOW_SKIP`] is 1: then this prints
/// "skipped: <reason>" and returns false, and the test returns.
///
/// ```ignore
/// if !common::require(has_ipv6(), "no IPv6 loopback (::1)") {
///     return;
/// }
/// ```
#[must_use]
pub fn require(cond: bool, reason: &str) -> bool {
    if !cond {
        skip_or_fail(reason);
    }
    cond
}

/// Fails the test with `reason`, or (with [`ALLOW_SKIP`]=1) prints
/// "skipped: <reason>" and returns so that the caller can return.
pub fn skip_or_fail(reason: &str) {
    if std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1") {
        eprintln!("skipped: {reason}");
        return;
    }
    panic!("cannot run here: {reason} (set {ALLOW_SKIP}=1 to skip such tests instead)");
}

/// An OTLP attribute holding a string.
pub fn str_attr(k: &str, v: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// An OTLP logs request holding `records` under one resource and scope.
pub fn log_request(
    records: Vec<opentelemetry_proto::tonic::logs::v1::LogRecord>,
) -> opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Resident set size of a process, in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// A port free now: with `GEOMETRA_TEST_PORTS=LO-HI` set, the next free
/// one of that range (for machines where test runs must keep to a range of
/// their own); else the next free one below the kernel's ephemeral range.
/// Never an ephemeral port: one handed out by `bind(0)` and released could
/// be taken as the source port of the test's own next connection before
/// the sidecar binds it (a sidecar that exits at start, "not ready").
pub fn free_port() -> u16 {
    if let Some((lo, hi)) = std::env::var("GEOMETRA_TEST_PORTS")
        .ok()
        .and_then(|r| {
            let (a, b) = r.split_once('-')?;
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        })
        .filter(|(lo, hi)| lo < hi)
    {
        return port_in(lo, hi);
    }
    match below_ephemeral() {
        Some(hi) => port_in(20_000, hi),
        None => TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port"),
    }
}

/// The port below the kernel's ephemeral range (Linux), if there is room
/// for a test range under it.
fn below_ephemeral() -> Option<u16> {
    let r = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let lo: u16 = r.split_whitespace().next()?.parse().ok()?;
    (lo > 21_000).then_some(lo - 1)
}

/// The next port of `lo..=hi` that binds, taken in turn from an offset of
/// this process's own (so that test binaries run one after another do not
/// reuse each other's ports at once).
fn port_in(lo: u16, hi: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(hi - lo) + 1;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = lo + (NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {lo}-{hi}")
}

impl Sidecar {
    /// `/readyz`'s status, or None when nothing answers.
    pub async fn readyz_status(&self) -> Option<u16> {
        let r = reqwest::get(format!("http://{}/readyz", self.metrics)).await;
        r.ok().map(|r| r.status().as_u16())
    }

    pub async fn scrape_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape body")
    }

    /// `/metrics` as OpenMetrics (what Prometheus asks for first).
    pub async fn scrape_openmetrics(&self) -> String {
        reqwest::Client::new()
            .get(format!("http://{}/metrics", self.metrics))
            .header("accept", "application/openmetrics-text; version=1.0.0")
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape body")
    }

    /// Sends OTLP metrics over gRPC in one request; it must be accepted.
    pub async fn send_metrics(
        &self,
        metrics: Vec<opentelemetry_proto::tonic::metrics::v1::Metric>,
    ) {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
        use prost::Message;
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        send_raw(&self.grpc_url(), METRICS, req.encode_to_vec(), false)
            .await
            .expect("the metrics request is accepted");
    }

    pub async fn scrape(&self) -> Metrics {
        Metrics::parse(&self.scrape_text().await)
    }

    /// Scrapes until `f` holds (the SDKs export asynchronously), at most 10s.
    /// A scrape the listener refuses (a test holding every connection slot
    /// while its closes reach the server) is tried again.
    pub async fn wait_for(&self, what: &str, f: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::from("(no scrape answered)");
        loop {
            if let Some(m) = self.try_scrape().await {
                if f(&m) {
                    return m;
                }
                last = m.text;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last scrape:\n{last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_scrape(&self) -> Option<Metrics> {
        let r = reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .ok()?;
        Some(Metrics::parse(&r.text().await.ok()?))
    }
}

/// One sample of a parsed scrape.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// A scrape parsed by the Prometheus project's Python client parser
/// (`prometheus_client.parser`, run from tests/common/parse_metrics.py).
/// The crates.io text parsers either mis-read `}` inside label values (a
/// FastAPI route like `/api/memory/{id}`) or refuse families whose series
/// carry different label names, which the text format allows.
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

pub fn python() -> String {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    if std::path::Path::new(venv).exists() {
        venv.to_string()
    } else {
        "python3".to_string()
    }
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/parse_metrics.py");
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 with prometheus_client (scripts/test.sh installs it)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write exposition");
        let out = child.wait_with_output().expect("parser output");
        assert!(
            out.status.success(),
            "the Prometheus parser refused the exposition: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<(String, HashMap<String, String>, Option<f64>)> =
            serde_json::from_slice(&out.stdout).expect("parser JSON");
        Metrics {
            samples: rows
                .into_iter()
                .map(|(name, labels, value)| Sample {
                    name,
                    labels,
                    value: value.unwrap_or(f64::NAN),
                })
                .collect(),
            text: text.to_string(),
        }
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the first sample with these labels (others may exist).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).next().map(|s| s.value)
    }

    /// Sum over all samples matching these labels.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Histogram buckets (le, cumulative count) of the first series matching.
    pub fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Option<Vec<(f64, f64)>> {
        let bucket = format!("{name}_bucket");
        let first = self.matching(&bucket, labels).next()?;
        let mut key = first.labels.clone();
        key.remove("le");
        let mut out: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == bucket && {
                    let mut l = s.labels.clone();
                    l.remove("le");
                    l == key
                }
            })
            .map(|s| {
                let le = s.labels.get("le").map(String::as_str).unwrap_or("");
                (
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::NAN)
                    },
                    s.value,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(out)
    }

    /// All label sets of a metric.
    pub fn label_sets(&self, name: &str) -> Vec<HashMap<String, String>> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.labels.clone())
            .collect()
    }
}

/// A gRPC codec that sends raw bytes and ignores the response body, to send
/// exactly the bytes a test wants (malformed ones included).
#[derive(Clone, Default)]
pub struct RawCodec;
pub struct RawEnc;
pub struct RawDec;
impl tonic::codec::Encoder for RawEnc {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}
impl tonic::codec::Decoder for RawDec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}
impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}

pub const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
pub const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
pub const METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Sends raw bytes to an OTLP gRPC method; `gzip` compresses the message.
pub async fn send_raw(
    url: &str,
    path: &'static str,
    body: Vec<u8>,
    gzip: bool,
) -> Result<Bytes, tonic::Status> {
    let enc = gzip.then_some(tonic::codec::CompressionEncoding::Gzip);
    send_raw_with(url, path, body, enc).await
}

/// Sends raw bytes to an OTLP gRPC method, compressed with `enc` by tonic.
pub async fn send_raw_with(
    url: &str,
    path: &'static str,
    body: Vec<u8>,
    enc: Option<tonic::codec::CompressionEncoding>,
) -> Result<Bytes, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    if let Some(enc) = enc {
        grpc = grpc.send_compressed(enc);
    }
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(Bytes::from(body)),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

/// Exports `count` SERVER spans of `route` with the Python SDK's own OTLP
/// exporter (`protocol` http or grpc, `compression` none, gzip or deflate)
/// to `endpoint` (a base URL); true when the exporter reports success.
pub fn python_export_spans(
    protocol: &str,
    endpoint: &str,
    compression: &str,
    route: &str,
    count: u32,
) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/export_spans.py");
    let out = Command::new(python())
        .arg(script)
        .args([protocol, endpoint, compression, route, &count.to_string()])
        .output()
        .expect("python3 with the OpenTelemetry SDK (scripts/test.sh installs it)");
    if !out.status.success() {
        eprintln!(
            "python export to {endpoint} ({protocol}, {compression}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// An OTLP traces request of `spans` under one resource and one scope,
/// encoded.
pub fn traces_request(spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}
