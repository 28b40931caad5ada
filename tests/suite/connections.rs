//! Slow, silent and too many connections on the HTTP listeners (4318 and
//! 9464) are cut or refused while normal requests are served meanwhile.

use crate::common;

use common::Sidecar;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const LIMITS: &str = "server:\n  connections:\n    header_read_timeout: 1s\n    request_timeout: 2s\n    idle_timeout: 3s\n";
const TIMED_OUT: &str = "geometra_sidecar_connections_timed_out_total";

/// Waits until the listener's connection counter `name` (with `extra`
/// labels) reaches `min`: every cut or refusal is counted.
async fn counted(sc: &Sidecar, name: &str, listener: &str, extra: &[(&str, &str)], min: f64) {
    let mut labels = vec![("listener", listener)];
    labels.extend_from_slice(extra);
    sc.wait_for(&format!("{name}{labels:?} >= {min}"), |m| {
        m.sum(name, &labels) >= min
    })
    .await;
}

/// Reads until the server closes the connection (EOF or reset) and returns
/// what it sent; panics if it is still open after `deadline` (generous: a
/// bound on "never", not a speed bar).
fn read_until_closed(s: &mut TcpStream, deadline: Duration) -> String {
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    loop {
        match s.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&got).into(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return String::from_utf8_lossy(&got).into(),
        }
        assert!(
            Instant::now() < end,
            "connection still open after {deadline:?}"
        );
    }
}

/// A normal request on each HTTP listener is answered.
async fn normal_requests_served(sc: &Sidecar) {
    let c = reqwest::Client::new();
    let r = c
        .post(format!("http://{}/v1/traces", sc.http))
        .header("content-type", "application/json")
        .body("{\"resourceSpans\": []}")
        .send()
        .await
        .expect("OTLP/HTTP answers");
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("http://{}/metrics", sc.metrics))
        .send()
        .await
        .expect("/metrics answers");
    assert_eq!(r.status(), 200);
}

fn connect(a: SocketAddr) -> TcpStream {
    TcpStream::connect(a).expect("connect")
}

/// Sends `head`, then trickles `drip` every 200 ms on a thread until the
/// server closes; returns what the server answered.
fn trickle(
    a: SocketAddr,
    head: &'static [u8],
    drip: &'static [u8],
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = connect(a);
        s.write_all(head).expect("head");
        let mut w = s.try_clone().expect("clone");
        std::thread::spawn(move || {
            for _ in 0..300 {
                std::thread::sleep(Duration::from_millis(200));
                if w.write_all(drip).is_err() {
                    return;
                }
            }
        });
        read_until_closed(&mut s, Duration::from_secs(30))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_while_normal_requests_are_served() {
    let sc = Sidecar::start(LIMITS).await;
    let loris: Vec<_> = [sc.http, sc.metrics]
        .into_iter()
        .map(|a| trickle(a, b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n", b"X-A: b\r\n"))
        .collect();
    normal_requests_served(&sc).await;
    for t in loris {
        t.join().expect("slowloris client");
    }
    normal_requests_served(&sc).await;
    for l in ["otlp_http", "metrics"] {
        counted(&sc, TIMED_OUT, l, &[("phase", "header")], 1.0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_trickled_bodies_are_cut_while_normal_requests_are_served() {
    let sc = Sidecar::start(LIMITS).await;
    let stalled = trickle(
        sc.http,
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 4194304\r\n\r\n0123456789",
        b"",
    );
    let chunked = trickle(
        sc.http,
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\ncontent-type: application/x-protobuf\r\ntransfer-encoding: chunked\r\n\r\n",
        b"1\r\n\n\r\n",
    );
    normal_requests_served(&sc).await;
    for t in [stalled, chunked] {
        let answer = t.join().expect("client");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    normal_requests_served(&sc).await;
    // both cut, by the request timeout (408) or, if silent longer, the idle one
    counted(&sc, TIMED_OUT, "otlp_http", &[], 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let sc = Sidecar::start(LIMITS).await;
    for a in [sc.http, sc.metrics] {
        let mut s = connect(a);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let answer = read_until_closed(&mut s, Duration::from_secs(30));
        assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    }
    // a connection that never sends anything
    let mut s = connect(sc.metrics);
    assert_eq!(read_until_closed(&mut s, Duration::from_secs(30)), "");
    // hyper's header-read timer also runs while a keep-alive connection
    // waits for its next request, so these are cut as "header" or "idle"
    counted(&sc, TIMED_OUT, "otlp_http", &[], 1.0).await;
    counted(&sc, TIMED_OUT, "metrics", &[], 2.0).await;
}

/// A connection on which one request was answered, or None if the server
/// closed it.
fn served(a: SocketAddr) -> Option<TcpStream> {
    let mut s = connect(a);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    assert_eq!(&buf, b"HTTP/1.1 200");
    let mut rest = [0u8; 256];
    let _ = s.read(&mut rest);
    Some(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_and_slots_come_back() {
    let sc = Sidecar::start("server:\n  connections:\n    max_connections: 3\n").await;
    // hold every slot (the readiness probes' connections may still be
    // closing: retry until three connections are being served)
    let mut held: Vec<TcpStream> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while held.len() < 3 {
        if let Some(s) = served(sc.metrics) {
            held.push(s);
        }
        assert!(Instant::now() < deadline, "could not hold 3 connections");
    }
    let mut extra = connect(sc.metrics);
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        read_until_closed(&mut extra, Duration::from_secs(30)),
        "",
        "the fourth connection is closed unanswered"
    );
    held.pop();
    let refused = "geometra_sidecar_connections_refused_total";
    // the slot comes back once the server sees the close
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{}/healthz", sc.metrics)).await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    counted(&sc, refused, "metrics", &[], 1.0).await;
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loops_back_off() {
    let sc = Sidecar::start("").await;
    let pid = sc.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .expect("fd list");
    // the soft limit only: raising it back needs no privilege
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("the hard limit")
        .to_string();
    let limit = format!("--nofile={}:{hard}", open + 4);
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &limit])
        .status()
        .expect("prlimit (util-linux)");
    assert!(st.success());
    // more connections than descriptors left, on every listener
    let mut conns = Vec::new();
    for a in [sc.grpc, sc.http, sc.metrics] {
        for _ in 0..10 {
            if let Ok(s) = TcpStream::connect(a) {
                conns.push(s);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    // a spinning accept loop burns ~200 ticks (2 s at 100 Hz) per loop; a
    // backing-off one a few
    assert!(
        used < 100,
        "{used} ticks of CPU in 2 s while out of descriptors"
    );
    drop(conns);
    let raise = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={hard}:{hard}"),
        ])
        .status()
        .expect("prlimit");
    assert!(raise.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{}/healthz", sc.metrics)).await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving after descriptors came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors = "geometra_sidecar_accept_errors_total";
    sc.wait_for("accept errors counted", |m| m.sum(errors, &[]) >= 1.0)
        .await;
}
