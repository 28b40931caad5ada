//! `localhost:PORT` listeners (the defaults) take both loopback addresses,
//! so an SDK whose `localhost` resolves to ::1 reaches the sidecar; an
//! explicit address stays exactly that address. Real exporters (the Python
//! SDK over gRPC and HTTP) to `[::1]` and `localhost`; both sockets of a
//! listener share its connection limit.

mod common;

use common::{free_port, python_export_spans, Metrics};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn has_ipv6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// The sidecar on `localhost:G` (gRPC), `http` (HTTP) and 127.0.0.1:M.
struct Running {
    child: Child,
    grpc: u16,
    http: u16,
    metrics: SocketAddr,
    _cfg: tempfile::NamedTempFile,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &str, http: &str) -> Running {
    let mut cfg = tempfile::NamedTempFile::new().expect("config");
    cfg.write_all(config.as_bytes()).expect("write");
    let (g, m) = (free_port(), free_port());
    let h: u16 = http
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let child = Command::new(env!("CARGO_BIN_EXE_geometra-sidecar"))
        .arg("--config")
        .arg(cfg.path())
        .args(["--otlp-grpc-listen", &format!("localhost:{g}")])
        .args(["--otlp-http-listen", http])
        .args(["--metrics-listen", &format!("127.0.0.1:{m}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the sidecar");
    let r = Running {
        child,
        grpc: g,
        http: h,
        metrics: ([127, 0, 0, 1], m).into(),
        _cfg: cfg,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(&r).is_none() {
        assert!(Instant::now() < deadline, "not ready within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

/// A GET on the metrics listener: the body when answered 200.
fn get(r: &Running, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(r.metrics).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn readyz(r: &Running) -> Option<String> {
    get(r, "/readyz")
}

fn scrape(r: &Running) -> Metrics {
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
    let v6 = has_ipv6();
    let grpc = if v6 {
        format!("otlp_grpc=127.0.0.1:{g},[::1]:{g}\n", g = r.grpc)
    } else {
        format!("otlp_grpc=127.0.0.1:{}\n", r.grpc)
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
        (
            "grpc",
            format!("http://localhost:{}", r.grpc),
            "/grpc-localhost",
        ),
        (
            "http",
            format!("http://localhost:{}", r.http),
            "/http-localhost",
        ),
    ];
    if v6 {
        targets.push(("grpc", format!("http://[::1]:{}", r.grpc), "/grpc-v6"));
        targets.push(("http", format!("http://[::1]:{}", r.http), "/http-v6"));
        targets.push(("grpc", format!("http://127.0.0.1:{}", r.grpc), "/grpc-v4"));
    } else {
        eprintln!("no IPv6 loopback here: only 127.0.0.1 is checked");
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
    if !has_ipv6() {
        eprintln!("skipped: no IPv6 loopback");
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
    if !has_ipv6() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let h = free_port();
    let r = start(
        "server:\n  connections:\n    max_connections: 2\n",
        &format!("localhost:{h}"),
    );
    let v4: SocketAddr = ([127, 0, 0, 1], r.http).into();
    let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, r.http).into();
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
    let Ok(taken) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    let p = taken.local_addr().expect("addr").port();
    let out = Command::new(env!("CARGO_BIN_EXE_geometra-sidecar"))
        .args(["--otlp-grpc-listen", "127.0.0.1:0"])
        .args(["--otlp-http-listen", &format!("localhost:{p}")])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on [::1]:{p} (OTLP/HTTP)")),
        "{err}"
    );
}

/// In a network namespace of its own whose loopback has no IPv6 (unshare
/// needs root; skipped without it), `localhost:PORT` is 127.0.0.1 alone.
#[test]
fn without_ipv6_localhost_is_127_0_0_1_alone() {
    let ok = Command::new("unshare").args(["-n", "true"]).status();
    if !ok.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot make a network namespace (unshare -n)");
        return;
    }
    let script = format!(
        "ip link set lo up && sysctl -qw net.ipv6.conf.lo.disable_ipv6=1 && \
         timeout --preserve-status -s INT 2 {} --otlp-grpc-listen localhost:0 --otlp-http-listen localhost:0 \
         --metrics-listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_geometra-sidecar")
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
