//! Requests that never finish cannot take the sidecar's memory: bytes held by
//! OTLP requests being read or worked on are bounded by
//! `receivers.max_in_flight_bytes`, past which a request is refused with a
//! retryable answer (gRPC UNAVAILABLE with RetryInfo, HTTP 503 with
//! Retry-After), counted, while the memory stays under the Helm chart's limit;
//! and one gRPC connection cannot take all of it from the other clients: it
//! holds at most `receivers.max_in_flight_bytes_per_connection`.

use crate::common;

use bytes::Bytes;
use common::{rss_kib, send_raw, Sidecar, TRACES};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const LOGS_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

const IN_FLIGHT: &str = "geometra_sidecar_receiver_in_flight_bytes";
const REFUSED: &str = "geometra_sidecar_receiver_in_flight_refused_total";
const MIB: usize = 1 << 20;
const TOTAL: (&str, &str) = ("limit", "total");
const CONN: (&str, &str) = ("limit", "connection");

/// RSS bound while stalled requests hold the whole budget: the default
/// 32 MiB budget, the sidecar's own ~8 MiB, one HTTP/2 connection window
/// (4 MiB) and slack, under the Helm chart's 64 MiB limit. Before the
/// budget, the same load took 147 MiB (gRPC).
const RSS_BOUND_KIB: u64 = 52 * 1024;

/// An HTTP/2 connection to the gRPC listener that opens `streams` unary
/// calls, each declaring a message of `claim` bytes and sending `send` of
/// them, then stalls (never ends the stream). Returns the gRPC status of
/// the streams answered within `wait` (the others are held) and the
/// connection's task: aborting it closes the connection.
async fn stall_grpc(
    sc: &Sidecar,
    streams: usize,
    claim: usize,
    send: usize,
    wait: Duration,
) -> (Vec<String>, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(sc.grpc)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let (mut held, mut answers) = (Vec::new(), Vec::new());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        // the connection, and the streams' send halves, live as long as this task
        let bodies = rx.recv().await;
        let _ = conn.await;
        drop(bodies);
    });
    let mut bodies = Vec::new();
    for _ in 0..streams {
        let mut c = client.clone().ready().await.expect("stream slot");
        let req = http::Request::post(format!("http://{}{LOGS_PATH}", sc.grpc))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (resp, mut body) = c.send_request(req, false).expect("send request");
        let mut msg = vec![0u8; 5 + send];
        msg[1..5].copy_from_slice(&(claim as u32).to_be_bytes());
        body.send_data(Bytes::from(msg), false).expect("send data");
        held.push(resp);
        bodies.push(body);
    }
    let _ = tx.send(bodies);
    let until = tokio::time::Instant::now() + wait;
    for resp in held {
        if let Ok(Ok(r)) = tokio::time::timeout_at(until, resp).await {
            let status = r.headers().get("grpc-status").and_then(|v| v.to_str().ok());
            answers.push(status.unwrap_or("no grpc-status").to_string());
        }
    }
    (answers, task)
}

/// Waits until the budget is given back whole, then checks a normal request
/// is served.
async fn budget_comes_back(sc: &Sidecar) {
    sc.wait_for("in-flight bytes back to 0", |m| {
        m.value(IN_FLIGHT, &[]) == Some(0.0)
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/logs", sc.http))
        .header("content-type", "application/json")
        .body("{\"resourceLogs\": []}")
        .send()
        .await
        .expect("OTLP/HTTP answers");
    assert_eq!(r.status(), 200);
}

/// One connection may hold the whole budget.
const SHARE_IS_BUDGET: &str = "receivers:\n  max_in_flight_bytes_per_connection: 33554432\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_grpc_messages_are_bounded_by_the_in_flight_budget() {
    let sc = Sidecar::start(SHARE_IS_BUDGET).await;
    // 32 streams each declaring 4 MiB - 1 KiB and sending 3 MiB of it: 96 MiB
    // if every stream were held; the 32 MiB budget holds 8 of them
    let claim = 4 * MIB - 1024;
    let wait = Duration::from_secs(8);
    let (answers, conn) = stall_grpc(&sc, 32, claim, 3 * MIB, wait).await;
    // UNAVAILABLE (14): retryable, with RetryInfo
    assert_eq!(answers, vec!["14".to_string(); 24], "answered streams");
    let m = sc.scrape().await;
    let labels = [("transport", "grpc"), ("signal", "log_records")];
    assert_eq!(m.value(REFUSED, &[labels[0], labels[1], TOTAL]), Some(24.0));
    assert_eq!(m.value(REFUSED, &[labels[0], labels[1], CONN]), Some(0.0));
    assert_eq!(m.value(IN_FLIGHT, &[]), Some((8 * claim) as f64));
    let rss = rss_kib(sc.pid());
    assert!(rss < RSS_BOUND_KIB, "RSS {rss} KiB with stalled streams");
    conn.abort();
    budget_comes_back(&sc).await;
}

/// An OTLP/HTTP request declaring `claim` bytes that sends `send` of them
/// and stalls; the status line, if the sidecar answered within `wait`.
fn stall_http(
    addr: SocketAddr,
    claim: usize,
    send: usize,
    wait: Duration,
) -> (TcpStream, Option<String>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {claim}\r\n\r\n"
    );
    // a refused request is answered and may be closed while this writes
    let _ = s
        .write_all(head.as_bytes())
        .and_then(|_| s.write_all(&vec![0u8; send]));
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut got = [0u8; 512];
    let answer = match s.read(&mut got) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&got[..n]).into_owned()),
        _ => None,
    };
    (s, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http_bodies_are_bounded_by_the_in_flight_budget() {
    let sc = Sidecar::start("").await;
    let addr = sc.http;
    // 12 connections declaring 4 MiB bodies and sending 3 MiB: the 32 MiB
    // budget holds 8; the others are answered 503 with Retry-After at once
    let stalled = tokio::task::spawn_blocking(move || {
        (0..12)
            .map(|_| stall_http(addr, 4 * MIB, 3 * MIB, Duration::from_secs(2)))
            .collect::<Vec<_>>()
    })
    .await
    .expect("stalling clients");
    let answers: Vec<&str> = stalled.iter().filter_map(|(_, a)| a.as_deref()).collect();
    assert_eq!(answers.len(), 4, "answered: {answers:?}");
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 503"), "{a}");
        let a = a.to_ascii_lowercase();
        assert!(a.contains("retry-after: 1\r\n"), "{a}");
        // the body was not read: the client must not reuse the connection
        assert!(a.contains("connection: close\r\n"), "{a}");
    }
    let m = sc.scrape().await;
    let labels = [("transport", "http"), ("signal", "log_records"), TOTAL];
    assert_eq!(m.value(REFUSED, &labels), Some(4.0));
    // HTTP/1.1 connections have no share (one request at a time each)
    let conn = [("transport", "http"), CONN];
    assert_eq!(m.value(REFUSED, &conn), None);
    assert_eq!(m.value(IN_FLIGHT, &[]), Some((32 * MIB) as f64));
    let rss = rss_kib(sc.pid());
    assert!(rss < RSS_BOUND_KIB, "RSS {rss} KiB with stalled bodies");
    drop(stalled);
    budget_comes_back(&sc).await;
}

/// A small OTLP traces request of `n` server spans.
fn spans(n: usize) -> Vec<u8> {
    use opentelemetry_proto::tonic::trace::v1::Span;
    let span = Span {
        kind: 2,
        name: "GET /x".into(),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_010_000_000,
        ..Default::default()
    };
    common::traces_request(vec![span; n])
}

const ACCEPTED_SPANS: &str = "otelcol_receiver_accepted_spans_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stalling_connection_holds_only_its_share_and_others_are_served() {
    let sc = Sidecar::start("").await;
    // 32 streams declaring the largest message (4 MiB) and sending 3 MiB of
    // it: first come, first served, they would hold the whole 32 MiB budget
    // (8 streams) and every other client would be refused; the connection's
    // 8 MiB share holds 2 and refuses the rest
    let (answers, conn) = stall_grpc(&sc, 32, 4 * MIB, 3 * MIB, Duration::from_secs(8)).await;
    assert_eq!(answers, vec!["14".to_string(); 30], "answered streams");
    let m = sc.scrape().await;
    let grpc = [("transport", "grpc"), ("signal", "log_records")];
    assert_eq!(m.value(REFUSED, &[grpc[0], grpc[1], CONN]), Some(30.0));
    assert_eq!(m.value(REFUSED, &[grpc[0], grpc[1], TOTAL]), Some(0.0));
    assert_eq!(m.value(IN_FLIGHT, &[]), Some((8 * MIB) as f64));
    // another client, on its own connection, is served meanwhile
    let before = m.sum(ACCEPTED_SPANS, &[("transport", "grpc")]);
    let r = send_raw(&sc.grpc_url(), TRACES, spans(3), false).await;
    assert!(r.is_ok(), "a second client refused: {r:?}");
    let m = sc.scrape().await;
    assert_eq!(
        m.sum(ACCEPTED_SPANS, &[("transport", "grpc")]),
        before + 3.0
    );
    assert_eq!(
        m.sum(REFUSED, &[TOTAL]),
        0.0,
        "nothing refused past the budget"
    );
    // and so is OTLP/HTTP; once the connection closes its share comes back
    conn.abort();
    budget_comes_back(&sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_http_listener_does_not_multiplex() {
    // OTLP/HTTP has no per-connection share because a connection carries one
    // request at a time: HTTP/1.1 only. Were HTTP/2 enabled on it, one
    // connection could stall many requests and would need a share too.
    let sc = Sidecar::start("").await;
    let tcp = tokio::net::TcpStream::connect(sc.http)
        .await
        .expect("connect");
    let answered = async {
        let (client, conn) = h2::client::handshake(tcp).await.ok()?;
        tokio::spawn(conn);
        let mut c = client.ready().await.ok()?;
        let req = http::Request::post(format!("http://{}/v1/logs", sc.http))
            .header("content-type", "application/json")
            .body(())
            .ok()?;
        let (resp, _) = c.send_request(req, true).ok()?;
        resp.await.ok()
    };
    let got = tokio::time::timeout(Duration::from_secs(5), answered).await;
    assert!(
        matches!(got, Ok(None)),
        "an HTTP/2 request was answered: {got:?}"
    );
}
