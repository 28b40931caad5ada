//! `localhost:PORT` listeners (the defaults) take both loopback addresses,
//! so an SDK whose `localhost` resolves to ::1 reaches the sidecar; an
//! explicit address stays exactly that address. Real exporters (the Python
//! SDK over gRPC and HTTP) to `[::1]` and `localhost`; both sockets of a
//! listener share its connection limit.

use crate::common;

use common::{free_port, get_blocking, python_export_spans, require, Metrics, Sidecar, BIN};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

fn has_ipv6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

const NO_IPV6: &str = "no IPv6 loopback (::1) on this host";

/// The sidecar on `localhost:G` (gRPC), `http` (HTTP) and 127.0.0.1:M.
fn start(config: &str, http: &str) -> Sidecar {
    Sidecar::builder()
        .config(config)
        .grpc_listen(&format!("localhost:{}", free_port()))
        .http_listen(http)
        .start_blocking()
}

/// A GET on the metrics listener: the body when answered 200.
fn get(r: &Sidecar, path: &str) -> Option<String> {
    get_blocking(r.metrics, path)
}

fn readyz(r: &Sidecar) -> Option<String> {
    get(r, "/readyz")
}

fn scrape(r: &Sidecar) -> Metrics {
    Metrics::parse(&get(r, "/metrics").expect("scrape"))
}

fn requests(m: &Metrics, route: &str) -> Option<f64> {
    m.value(
        "http_requests_total",
        &[("endpoint", route), ("status", "200")],
    )
}

#[test]
fn sdks_reach_localhost_listeners_on_both_loopbacks() {
    let h = free_port();
    let r = start("", &format!("localhost:{h}"));
    let ready = readyz(&r).expect("ready");
    let v6 = require(
        has_ipv6(),
        &format!("{NO_IPV6} (only 127.0.0.1 is checked)"),
    );
    let (g, hp) = (r.grpc.port(), r.http.port());
    let grpc = if v6 {
        format!("otlp_grpc=127.0.0.1:{g},[::1]:{g}\n")
    } else {
        format!("otlp_grpc=127.0.0.1:{g}\n")
    };
    assert!(
        ready.starts_with("ready\n") && ready.contains(&grpc),
        "{ready}"
    );
    assert!(
        ready.contains(&format!("metrics={}\n", r.metrics)),
        "{ready}"
    );
    let mut targets = vec![
        ("grpc", format!("http://localhost:{g}"), "/grpc-localhost"),
        ("http", format!("http://localhost:{hp}"), "/http-localhost"),
    ];
    if v6 {
        targets.push(("grpc", format!("http://[::1]:{g}"), "/grpc-v6"));
        targets.push(("http", format!("http://[::1]:{hp}"), "/http-v6"));
        targets.push(("grpc", format!("http://127.0.0.1:{g}"), "/grpc-v4"));
    }
    for (protocol, url, route) in &targets {
        assert!(
            python_export_spans(protocol, url, "none", route, 2),
            "the Python {protocol} exporter to {url} failed"
        );
    }
    let m = scrape(&r);
    for (_, url, route) in &targets {
        assert_eq!(requests(&m, route), Some(2.0), "{url}\n{}", m.text);
    }
}

#[test]
fn an_explicit_address_is_exactly_that_address() {
    if !require(has_ipv6(), NO_IPV6) {
        return;
    }
    let h = free_port();
    let r = start("", &format!("127.0.0.1:{h}"));
    let ready = readyz(&r).expect("ready");
    assert!(
        ready.contains(&format!("otlp_http=127.0.0.1:{h}\n")),
        "{ready}"
    );
    assert!(
        TcpStream::connect(("::1", h)).is_err(),
        "::1 must not be bound"
    );
    assert!(python_export_spans(
        "http",
        &format!("http://127.0.0.1:{h}"),
        "none",
        "/v4",
        1
    ));
}

/// A connection on which one request was answered, or None if it was
/// closed unanswered.
fn served(a: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(a).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(b"GET /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut buf = [0u8; 9];
    s.read_exact(&mut buf).ok()?;
    assert_eq!(&buf, b"HTTP/1.1 ");
    let mut rest = [0u8; 512];
    let _ = s.read(&mut rest);
    Some(s)
}

#[test]
fn both_loopbacks_share_one_connection_limit() {
    if !require(has_ipv6(), NO_IPV6) {
        return;
    }
    let h = free_port();
    let r = start(
        "server:\n  connections:\n    max_connections: 2\n",
        &format!("localhost:{h}"),
    );
    let v4: SocketAddr = ([127, 0, 0, 1], r.http.port()).into();
    let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, r.http.port()).into();
    let held = [
        served(v4).expect("first on 127.0.0.1"),
        served(v6).expect("second on ::1"),
    ];
    for a in [v4, v6] {
        assert!(
            served(a).is_none(),
            "a third connection (to {a}) must be refused"
        );
    }
    let m = scrape(&r);
    assert_eq!(
        m.value(
            "geometra_sidecar_connections_refused_total",
            &[("listener", "otlp_http")]
        ),
        Some(2.0),
        "{}",
        m.text
    );
    drop(held);
}

#[test]
fn a_taken_ipv6_loopback_port_stops_start_up() {
    let taken = std::net::TcpListener::bind("[::1]:0");
    if !require(taken.is_ok(), NO_IPV6) {
        return;
    }
    let taken = taken.expect("bound"); // held until the end: the port stays taken
    let p = taken.local_addr().expect("addr").port();
    let mut s = Sidecar::builder()
        .no_config()
        .rust_log(None)
        .grpc_listen("127.0.0.1:0")
        .http_listen(&format!("localhost:{p}"))
        .metrics_listen("127.0.0.1:0")
        .stderr_to_file()
        .spawn();
    let status = s.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(1));
    let err = s.log_text();
    assert!(
        err.contains(&format!("cannot listen on [::1]:{p} (OTLP/HTTP)")),
        "{err}"
    );
}

/// In a network namespace of its own whose loopback has no IPv6 (unshare
/// needs root; fails without it unless skips are allowed), `localhost:PORT` is 127.0.0.1 alone.
#[test]
fn without_ipv6_localhost_is_127_0_0_1_alone() {
    let ok = Command::new("unshare").args(["-n", "true"]).status();
    if !require(
        ok.is_ok_and(|s| s.success()),
        "cannot make a network namespace (`unshare -n` from util-linux, as root)",
    ) {
        return;
    }
    let script = format!(
        "ip link set lo up && sysctl -qw net.ipv6.conf.lo.disable_ipv6=1 && \
         timeout --preserve-status -s INT 2 {} --otlp-grpc-listen localhost:0 --otlp-http-listen localhost:0 \
         --metrics-listen 127.0.0.1:0",
        BIN
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("no IPv6 loopback: listening on 127.0.0.1 only"),
        "{err}"
    );
    let ready = err
        .lines()
        .find(|l| l.contains("geometra-sidecar ready"))
        .expect(&err);
    assert!(!ready.contains("::1"), "{ready}");
    assert!(
        ready.contains("otlp_grpc=127.0.0.1:") && ready.contains("otlp_http=127.0.0.1:"),
        "{ready}"
    );
}
