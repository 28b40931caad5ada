//! Compressed requests: what the real exporters send (the Python SDK's
//! OTLP/HTTP exporter with deflate and gzip, its gRPC exporter with gzip and
//! deflate, zstd as the Collector sends it), compression bombs of every
//! coding (refused at the limit with bounded memory), and unknown codings
//! (refused naming the supported ones).

use crate::common;

use common::{python_export_spans, rss_kib, send_raw_with, Sidecar, TRACES};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::io::Write;
use tonic::codec::CompressionEncoding;
use tonic::Code;

fn st(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// One request of SERVER spans of `route`, status 200.
fn traces(route: &str, n: usize) -> Vec<u8> {
    let span = Span {
        kind: 2,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_010_000_000,
        attributes: vec![
            st("http.request.method", "GET"),
            st("http.route", route),
            st("http.response.status_code", "200"),
        ],
        ..Default::default()
    };
    common::traces_request(vec![span; n])
}

type Compress = fn(&[u8]) -> Vec<u8>;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}
fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}
fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}
fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

/// `mib` MiB of zeros, compressed by `enc` a MiB at a time (never held whole).
fn bomb<W: Write>(mut enc: W, mib: usize) -> W {
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        enc.write_all(&chunk).expect("compress");
    }
    enc
}

async fn post(sc: &Sidecar, encoding: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", sc.http))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn requests(m: &common::Metrics, route: &str) -> Option<f64> {
    m.value(
        "http_requests_total",
        &[("endpoint", route), ("status", "200")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_exporter_with_deflate_and_gzip_is_accepted() {
    let sc = Sidecar::start("").await;
    let base = format!("http://{}", sc.http);
    for (comp, route) in [
        ("deflate", "/deflate"),
        ("gzip", "/gzip"),
        ("none", "/plain"),
    ] {
        assert!(
            python_export_spans("http", &base, comp, route, 3),
            "the Python OTLP/HTTP exporter with {comp} failed"
        );
    }
    let m = sc.scrape().await;
    for route in ["/deflate", "/gzip", "/plain"] {
        assert_eq!(requests(&m, route), Some(3.0), "{route}\n{}", m.text);
    }
    assert_eq!(
        m.value(
            "otelcol_receiver_accepted_spans_total",
            &[("transport", "http")]
        ),
        Some(9.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_coding_decodes_on_otlp_http() {
    let sc = Sidecar::start("").await;
    let cases: [(&str, &str, Compress); 6] = [
        ("zstd", "/zstd", zstd),
        ("deflate", "/zlib", zlib),
        ("deflate", "/raw-deflate", raw_deflate),
        ("GZIP", "/gzip-upper", gzip),
        ("x-gzip", "/x-gzip", gzip),
        ("identity", "/identity", |b| b.to_vec()),
    ];
    for (enc, route, f) in cases {
        let (status, body) = post(&sc, enc, f(&traces(route, 2))).await;
        assert_eq!(status, 200, "{enc} {route}: {body}");
    }
    let m = sc.scrape().await;
    for (_, route, _) in cases {
        assert_eq!(requests(&m, route), Some(2.0), "{route}\n{}", m.text);
    }
    // a zstd stream of several frames (what a streaming writer may emit)
    let mut two = zstd(&traces("/frames", 1));
    two.extend(zstd(&traces("/frames", 1)));
    let (status, body) = post(&sc, "zstd", two).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(requests(&sc.scrape().await, "/frames"), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_broken_codings_are_refused_clearly() {
    let sc = Sidecar::start("").await;
    let (status, body) = post(&sc, "br", traces("/br", 1)).await;
    assert_eq!(status, 415);
    assert!(
        body.contains("\"br\"") && body.contains("gzip, deflate, zstd, identity"),
        "{body}"
    );
    let (status, _) = post(&sc, "gzip, zstd", traces("/stacked", 1)).await;
    assert_eq!(status, 415);
    for enc in ["gzip", "deflate", "zstd"] {
        let (status, body) = post(&sc, enc, b"not compressed at all".to_vec()).await;
        assert_eq!(status, 400, "{enc}: {body}");
        assert!(body.contains(&format!("invalid {enc} body")), "{body}");
    }
    let m = sc.scrape().await;
    assert_eq!(
        m.value(
            "geometra_sidecar_receiver_bad_requests_total",
            &[
                ("transport", "http"),
                ("signal", "spans"),
                ("reason", "encoding")
            ]
        ),
        Some(5.0),
        "{}",
        m.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_bombs_stop_at_the_limit_with_bounded_memory() {
    let sc = Sidecar::start("receivers:\n  otlp_http:\n    max_body_bytes: 1048576\n").await;
    // 256 MiB of zeros each: a few hundred KiB on the wire (under the 1 MiB
    // body limit), 256 times the limit once inflated
    let bombs: Vec<(&str, Vec<u8>)> = vec![
        (
            "gzip",
            bomb(
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best()),
                256,
            )
            .finish()
            .expect("gzip"),
        ),
        (
            "deflate",
            bomb(
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best()),
                256,
            )
            .finish()
            .expect("zlib"),
        ),
        (
            "deflate",
            bomb(
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best()),
                256,
            )
            .finish()
            .expect("deflate"),
        ),
        (
            "zstd",
            bomb(zstd::Encoder::new(Vec::new(), 3).expect("zstd"), 1024)
                .finish()
                .expect("zstd"),
        ),
    ];
    for (enc, b) in &bombs {
        assert!(b.len() < 1 << 20, "{enc} bomb is {} bytes", b.len());
    }
    // eight of each at once
    let mut tasks = Vec::new();
    for _ in 0..8 {
        for (enc, b) in bombs.clone() {
            let http = sc.http;
            tasks.push(tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .post(format!("http://{http}/v1/logs"))
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", enc)
                    .body(b)
                    .send()
                    .await
                    .expect("post");
                (enc, r.status().as_u16(), r.text().await.unwrap_or_default())
            }));
        }
    }
    for t in tasks {
        let (enc, status, body) = t.await.expect("task");
        assert_eq!(status, 413, "{enc}: {body}");
        assert!(body.contains("max_body_bytes"), "{enc}: {body}");
    }
    let rss = rss_kib(sc.pid());
    assert!(
        rss < 64 * 1024,
        "32 bombs of 256 MiB or more: RSS {rss} KiB"
    );
    let m = sc.scrape().await;
    assert_eq!(
        m.value(
            "geometra_sidecar_receiver_bad_requests_total",
            &[
                ("transport", "http"),
                ("signal", "log_records"),
                ("reason", "too_large")
            ]
        ),
        Some(32.0)
    );
    // a zstd frame that asks for a 128 MiB window is refused before any
    // window is allocated
    let mut e = zstd::Encoder::new(Vec::new(), 3).expect("zstd");
    e.window_log(27).expect("window");
    e.include_contentsize(false).expect("no size");
    let big = bomb(e, 64).finish().expect("zstd");
    let (status, body) = post(&sc, "zstd", big).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid zstd body"), "{body}");
    // and it still serves
    let (status, body) = post(&sc, "zstd", zstd(&traces("/after", 1))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpc_exporter_with_gzip_and_deflate_is_accepted() {
    let sc = Sidecar::start("").await;
    for (comp, route) in [("gzip", "/grpc-gzip"), ("deflate", "/grpc-deflate")] {
        assert!(
            python_export_spans("grpc", &sc.grpc_url(), comp, route, 2),
            "the Python OTLP/gRPC exporter with {comp} failed"
        );
    }
    // zstd, as the Collector's exporter sends it
    send_raw_with(
        &sc.grpc_url(),
        TRACES,
        traces("/grpc-zstd", 2),
        Some(CompressionEncoding::Zstd),
    )
    .await
    .expect("zstd accepted");
    let m = sc.scrape().await;
    for route in ["/grpc-gzip", "/grpc-deflate", "/grpc-zstd"] {
        assert_eq!(requests(&m, route), Some(2.0), "{route}\n{}", m.text);
    }
}

/// What a gRPC answer said: status, message and `grpc-accept-encoding`.
struct Answer {
    code: Option<Code>,
    message: String,
    accept_encoding: String,
}

/// Posts one gRPC frame of `payload` as is, flagged compressed with
/// `encoding` when given.
async fn send_frame(sc: &Sidecar, encoding: Option<&str>, payload: Vec<u8>) -> Answer {
    let mut frame = vec![u8::from(encoding.is_some())];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let channel = tonic::transport::Endpoint::from_shared(sc.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("{}{}", sc.grpc_url(), TRACES))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = encoding {
        req = req.header("grpc-encoding", e);
    }
    let req = req
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(frame),
        )))
        .expect("request");
    use tower::ServiceExt;
    let resp = channel.oneshot(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let trailers = http_body_util::BodyExt::collect(body)
        .await
        .expect("body")
        .trailers()
        .cloned()
        .unwrap_or_default();
    let get = |k: &str| {
        parts
            .headers
            .get(k)
            .or_else(|| trailers.get(k))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Answer {
        code: get("grpc-status")
            .and_then(|s| s.parse::<i32>().ok())
            .map(Code::from_i32),
        message: get("grpc-message").unwrap_or_default(),
        accept_encoding: get("grpc-accept-encoding").unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_advertises_its_encodings_and_refuses_others() {
    let sc = Sidecar::start("").await;
    let ok = send_frame(&sc, None, traces("/plain", 1)).await;
    assert_eq!(ok.code, Some(Code::Ok));
    assert_eq!(ok.accept_encoding, "gzip,deflate,zstd");
    let a = send_frame(&sc, Some("snappy"), traces("/snappy", 1)).await;
    assert_eq!(a.code, Some(Code::Unimplemented), "{}", a.message);
    assert!(a.message.contains("snappy"), "{}", a.message);
    assert!(a.message.contains("gzip,deflate,zstd"), "{}", a.message);
    assert_eq!(a.accept_encoding, "gzip,deflate,zstd");
    // a corrupt compressed message: INTERNAL, as the gRPC compression spec asks
    let a = send_frame(&sc, Some("zstd"), b"\x28\xb5\x2f\xfd not zstd".to_vec()).await;
    assert_eq!(a.code, Some(Code::Internal), "{}", a.message);
    assert!(a.message.contains("decompressing"), "{}", a.message);
    let m = sc.scrape().await;
    assert_eq!(
        m.value(
            "geometra_sidecar_receiver_bad_requests_total",
            &[
                ("transport", "grpc"),
                ("signal", "spans"),
                ("reason", "encoding")
            ]
        ),
        Some(2.0),
        "an unsupported and a corrupt encoding"
    );
    assert_eq!(requests(&m, "/snappy"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bombs_are_resource_exhausted_with_bounded_memory() {
    let sc = Sidecar::start("").await;
    let zstd_bomb = bomb(zstd::Encoder::new(Vec::new(), 3).expect("zstd"), 1024)
        .finish()
        .expect("zstd");
    // the largest window libzstd decodes by default, and no content size:
    // a decoder that trusted the header would reserve 128 MiB
    let mut e = zstd::Encoder::new(Vec::new(), 3).expect("zstd");
    e.window_log(27).expect("window");
    e.include_contentsize(false).expect("no size");
    let wide_bomb = bomb(e, 512).finish().expect("zstd");
    let deflate_bomb = bomb(
        flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best()),
        256,
    )
    .finish()
    .expect("zlib");
    for _ in 0..4 {
        for (enc, b) in [
            ("zstd", &zstd_bomb),
            ("zstd", &wide_bomb),
            ("deflate", &deflate_bomb),
        ] {
            let a = send_frame(&sc, Some(enc), b.clone()).await;
            assert_eq!(
                a.code,
                Some(Code::ResourceExhausted),
                "{enc}: {}",
                a.message
            );
        }
    }
    let rss = rss_kib(sc.pid());
    assert!(rss < 64 * 1024, "gRPC bombs: RSS {rss} KiB");
    send_raw_with(
        &sc.grpc_url(),
        TRACES,
        traces("/after", 1),
        Some(CompressionEncoding::Zstd),
    )
    .await
    .expect("still serving");
}
