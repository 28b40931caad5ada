//! `/metrics` streams its body (chunked transfer, pieces rendered on a
//! blocking thread): a scrape of 100k series over a real socket is, family
//! for family, the bytes the library's whole-body encoders write for the
//! same store (byte-identical to the reference encoders: unit tests in
//! src/metrics/encode); a scraper that stops reading holds a bounded part of
//! the body, and one that goes away ends the rendering (the sidecar's own
//! `scrapes_in_flight` and `scrapes_abandoned_total`). Real Prometheus
//! scraping a streamed body of many pieces: `native_prometheus.rs`.

use crate::common;

use common::{send_raw, Sidecar, METRICS};
use geometra_sidecar::metrics::encode::{encode, Format};
use geometra_sidecar::proto::client as pb;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use prost::Message;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Series of the large store: 10 metrics (5 counters, 5 histograms of 10
/// bounds), a tenth each.
pub const SERIES: usize = 100_000;

pub fn store_config(series: usize) -> String {
    format!(
        "store:\n  max_series: {}\n  max_series_bytes: {}\n  max_series_per_metric: {}\n",
        series * 2,
        1usize << 30,
        series / 10
    )
}

/// Metric `m` of the large store (0-4 counters, 5-9 histograms), `per`
/// series, in one request.
pub fn request(m: usize, per: usize) -> ExportMetricsServiceRequest {
    let attrs = |i: usize| {
        vec![
            common::str_attr("route", &format!("/api/v1/items/{i}")),
            common::str_attr("method", "GET"),
        ]
    };
    let start = 1_764_000_000_000_000_000;
    let data = if m < 5 {
        metric::Data::Sum(Sum {
            data_points: (0..per)
                .map(|i| NumberDataPoint {
                    attributes: attrs(i),
                    value: Some(number_data_point::Value::AsInt((i * 7) as i64)),
                    start_time_unix_nano: start,
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })
    } else {
        let bounds = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        metric::Data::Histogram(Histogram {
            data_points: (0..per)
                .map(|i| HistogramDataPoint {
                    attributes: attrs(i),
                    count: 11,
                    sum: Some(i as f64 * 0.5),
                    bucket_counts: vec![1; 11],
                    explicit_bounds: bounds.clone(),
                    start_time_unix_nano: start,
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: format!("big.metric.{m}"),
                    description: "A large store's metric.".into(),
                    data: Some(data),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A sidecar holding the large store of `series` series.
pub async fn large_sidecar(series: usize) -> Sidecar {
    let sc = Sidecar::start(&store_config(series)).await;
    for m in 0..10 {
        let body = request(m, series / 10).encode_to_vec();
        send_raw(&sc.grpc_url(), METRICS, body, false)
            .await
            .expect("the metrics request is accepted");
    }
    sc
}

/// The same store built in this process, rendered whole in `f`; metric
/// `m` ingested at `seen[m]` (seconds: the sidecar's `_created` of it).
fn reference(series: usize, f: Format, seen: &[u64]) -> Vec<u8> {
    let mut cfg = geometra_sidecar::config::Config::default();
    cfg.store.max_series = series * 2;
    cfg.store.max_series_bytes = 1 << 30;
    cfg.store.max_series_per_metric = series / 10;
    let store = geometra_sidecar::metrics::Store::new(&cfg.store, &cfg.passthrough);
    for (m, at) in seen.iter().enumerate() {
        let got = store.passthrough.ingest(&request(m, series / 10), *at);
        assert_eq!(
            (got.points, got.dropped),
            ((series / 10) as u64, 0),
            "metric {m}"
        );
    }
    encode(&store.snapshot(Vec::new()), f)
}

/// The text families named `big_*` (the sidecar adds its own).
fn big_text(body: &[u8]) -> String {
    let text = std::str::from_utf8(body).expect("the text exposition is UTF-8");
    let mut keep = false;
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            keep = rest.starts_with("big_");
        } else if line == "# EOF\n" {
            keep = false;
        }
        if keep {
            out.push_str(line);
        }
    }
    out
}

/// When the sidecar first saw each metric: its first `_created` in an
/// OpenMetrics body (whole seconds: the store keeps seconds).
fn seen(om: &str) -> Vec<u64> {
    (0..10)
        .map(|m| {
            let name = format!("big_metric_{m}_created{{");
            let line = om.lines().find(|l| l.starts_with(&name));
            let v = line.and_then(|l| l.rsplit_once(' ')).map(|(_, v)| v);
            v.and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in the OpenMetrics body"))
        })
        .collect()
}

/// The delimited protobuf families named `big_*`, their lengths included.
fn big_protobuf(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let whole = body;
        let len = prost::encoding::decode_varint(&mut body).expect("a length") as usize;
        let (msg, rest) = body.split_at(len);
        let f = pb::MetricFamily::decode(msg).expect("a MetricFamily");
        if f.name.as_deref().unwrap_or("").starts_with("big_") {
            out.extend_from_slice(&whole[..whole.len() - rest.len()]);
        }
        body = rest;
    }
    out
}

const ACCEPT: [(Format, &str); 3] = [
    (Format::Text, "text/plain; version=0.0.4"),
    (Format::OpenMetrics, "application/openmetrics-text; version=1.0.0"),
    (
        Format::Protobuf,
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
    ),
];

/// A scrape in `f`, checked to arrive chunked: its body.
async fn chunked_scrape(sc: &Sidecar, f: Format, accept: &str) -> Vec<u8> {
    let r = reqwest::Client::new()
        .get(format!("http://{}/metrics", sc.metrics))
        .header("accept", accept)
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    let chunked = r.headers().get("transfer-encoding").map(|v| v.as_bytes());
    assert_eq!(chunked, Some(&b"chunked"[..]), "{f:?}");
    assert!(r.headers().get("content-length").is_none(), "{f:?}");
    assert_eq!(r.headers()["content-type"], f.content_type());
    r.bytes().await.expect("the whole body").to_vec()
}

/// A scrape of 100k series in each format arrives chunked and is the
/// library's whole-body rendering of the same store, byte for byte (the
/// times the sidecar first saw each metric, its `_created`, taken from an
/// OpenMetrics scrape first).
#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_scrape_of_100k_series_is_the_whole_body_in_every_format() {
    let sc = large_sidecar(SERIES).await;
    let (om, accept) = ACCEPT[1];
    let first = chunked_scrape(&sc, om, accept).await;
    let seen_at = seen(std::str::from_utf8(&first).expect("UTF-8"));
    for (f, accept) in ACCEPT {
        let body = chunked_scrape(&sc, f, accept).await;
        let want = reference(SERIES, f, &seen_at);
        assert!(want.len() > 10 << 20, "{f:?}: {} bytes", want.len());
        if f == Format::Protobuf {
            assert!(big_protobuf(&body) == want, "{f:?}: the bytes differ");
            continue;
        }
        let eof = body.ends_with(b"# EOF\n");
        assert_eq!(eof, f == Format::OpenMetrics, "{f:?}");
        let (got, want) = (big_text(&body), big_text(&want));
        if got != want {
            let at = got
                .bytes()
                .zip(want.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            let end = |t: &str| t.len().min(at + 300);
            panic!(
                "{f:?}: the text differs at byte {at}:\n{}\n---\n{}",
                &got[at.saturating_sub(300)..end(&got)],
                &want[at.saturating_sub(300)..end(&want)]
            );
        }
    }
}

/// The value of an unlabelled sample of a text body.
fn sample(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {name} in the scrape"));
    line[name.len() + 1..].parse().expect("a number")
}

/// A text scrape: (its body's length, scrapes in flight, abandoned, body
/// bytes handed out before it).
async fn own(sc: &Sidecar) -> (u64, f64, f64, f64) {
    let body = reqwest::get(format!("http://{}/metrics", sc.metrics))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body");
    (
        body.len() as u64,
        sample(&body, "geometra_sidecar_scrapes_in_flight"),
        sample(&body, "geometra_sidecar_scrapes_abandoned_total"),
        sample(&body, "geometra_sidecar_scrape_bytes_total"),
    )
}

/// A scraper that stops reading after 64 KiB holds at most a few MiB of a
/// 50 MB body in the sidecar (pieces queued, the sockets' buffers): the
/// body bytes the sidecar has handed out for it stay under 12 MiB while it
/// stalls. When it goes away mid-body, the rendering stops: the scrape is
/// counted abandoned and only the scrape asking is in flight.
#[tokio::test(flavor = "multi_thread")]
async fn a_scraper_that_stalls_or_goes_away_does_not_keep_the_rendering() {
    let sc = large_sidecar(SERIES).await;
    let (len, in_flight, abandoned, before) = own(&sc).await;
    assert!(len > 40 << 20, "{len} bytes");
    assert_eq!((in_flight, abandoned), (1.0, 0.0));
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let mut conn = sock.connect(sc.metrics).await.expect("connect");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: sidecar\r\n\r\n")
        .await
        .expect("request");
    let mut got = vec![0u8; 64 * 1024];
    conn.read_exact(&mut got).await.expect("the first 64 KiB");
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // the stalled scrape's bytes: what was handed out minus the scrapes read whole
    let mut read_whole = len;
    for _ in 0..5 {
        let (len, in_flight, _, bytes) = own(&sc).await;
        let stalled = bytes - before - read_whole as f64;
        assert!(
            stalled < (12 << 20) as f64,
            "{stalled} bytes of a stalled scrape"
        );
        assert_eq!(in_flight, 2.0, "this scrape and the stalled one");
        read_whole += len;
    }
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, in_flight, abandoned, _) = own(&sc).await;
        if (in_flight, abandoned) == (1.0, 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "30 s after the scraper left: {in_flight} in flight, {abandoned} abandoned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A HEAD of /metrics (a reachability check) answers the scrape's headers
/// without rendering the store: no body bytes handed out, nothing counted
/// abandoned.
#[tokio::test(flavor = "multi_thread")]
async fn a_head_of_metrics_renders_nothing() {
    let sc = large_sidecar(100).await;
    let (len, _, _, before) = own(&sc).await;
    let client = reqwest::Client::new();
    for accept in ["text/plain", "application/openmetrics-text; version=1.0.0"] {
        let resp = client
            .head(format!("http://{}/metrics", sc.metrics))
            .header("accept", accept)
            .send()
            .await
            .expect("HEAD /metrics");
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().expect("ASCII");
        assert_eq!(ct.split(';').next(), accept.split(';').next(), "{ct}");
    }
    let (_, in_flight, abandoned, after) = own(&sc).await;
    assert_eq!((in_flight, abandoned), (1.0, 0.0));
    assert_eq!(
        after - before,
        len as f64,
        "bytes handed out: the first GET's only"
    );
}
