//! What the browser listener's guard costs (BENCHMARKS.md, "Issue 20"):
//!
//! 1. the rate limiter's check and the token check alone, in CPU time per
//!    call and calls per CPU-second (this thread's CPU clock);
//! 2. the limiter's memory with a million distinct client addresses (RSS
//!    of this process before and after);
//! 3. the sidecar end to end: small OTLP/HTTP trace requests to its browser
//!    listener with the guard's limits only, and with a token on every
//!    request, against the same requests on the in-pod OTLP/HTTP listener;
//!    the sidecar's CPU time (utime + stime) per request.
//!
//! `cargo bench --bench browser_guard` (`GUARD_REQUESTS=N`, default 20000,
//! for part 3). Run as a test it does a few of each: a check that the
//! measurement runs, not a measurement.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{free_port, rss_kib, traces_request, Sidecar};
use geometra_sidecar::base::Dur;
use geometra_sidecar::receiver::browser::auth::{Auth, AuthStats, Verifier};
use geometra_sidecar::receiver::browser::limit::{Limiter, RateLimit};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A process's CPU time (utime + stime) from /proc.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 of stat (the first after the `)` is field 3): utime, stime
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    // SAFETY: sysconf has no preconditions
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

fn per_call(name: &str, n: u64, mut f: impl FnMut(u64)) {
    let t0 = thread_cpu();
    for i in 0..n {
        f(i);
    }
    let cpu = thread_cpu() - t0;
    let ns = cpu.as_nanos() as f64 / n as f64;
    println!(
        "| {name} | {n} | {ns:.0} ns | {:.2} M/CPU-s |",
        1e3 / ns.max(1e-9)
    );
}

fn addr(i: u64) -> IpAddr {
    IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])
}

fn token(secret: &[u8]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({"sub": "u1", "aud": "geometra-sidecar", "exp": now + 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret).expect("key"),
    )
    .expect("encode")
}

const SECRET: &[u8] = b"a-benchmark-secret-of-at-least-32-bytes";

fn micro(full: bool) {
    let n = if full { 2_000_000 } else { 1_000 };
    println!("| check | calls | CPU per call | calls per CPU-second |\n|---|---:|---:|---:|");
    let lim = Limiter::new(&RateLimit {
        requests_per_second: 1e9,
        burst: 1_000_000_000,
        items_per_second: 1e12,
        global_items_per_second: 1e15,
        ..RateLimit::default()
    });
    let now = Instant::now();
    per_call("rate limiter, 1,000 clients", n, |i| {
        let _ = lim.check(addr(i % 1000), 10, now);
    });
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("secret");
    std::fs::write(&file, SECRET).expect("write");
    let auth = Auth {
        jwt_hs256_secret_file: Some(file),
        audience: Some("geometra-sidecar".into()),
        clock_skew: Dur(Duration::from_secs(30)),
        ..Auth::default()
    };
    let v = Verifier::new(&auth, Arc::new(AuthStats::default()), now_unix()).expect("verifier");
    let header = format!("Bearer {}", token(SECRET));
    per_call("token (HS256 JWT)", n / 10, |_| {
        let _ = v.check(Some(header.as_bytes()));
    });
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn million_clients(full: bool) {
    let n: u64 = if full { 1_000_000 } else { 10_000 };
    let before = rss_kib(std::process::id());
    let lim = Limiter::new(&RateLimit::default());
    let now = Instant::now();
    for i in 0..n {
        let _ = lim.check(addr(i), 1, now);
    }
    let after = rss_kib(std::process::id());
    println!(
        "\n{n} distinct client addresses: {} clients tracked (max_clients {}), table {} KiB, RSS {before} -> {after} KiB (+{} KiB)",
        lim.clients(),
        lim.capacity(),
        lim.table_bytes() / 1024,
        after.saturating_sub(before)
    );
}

async fn send_all(url: &str, n: u64, auth: Option<&str>) -> Duration {
    let client = reqwest::Client::new();
    let body = traces_request(vec![opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "GET /".into(),
        kind: 3,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Default::default()
    }]);
    let t0 = Instant::now();
    for _ in 0..n {
        let mut r = client
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone());
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let resp = r.send().await.expect("post");
        assert_eq!(resp.status().as_u16(), 200);
    }
    t0.elapsed()
}

async fn end_to_end(full: bool) {
    let n: u64 = std::env::var("GUARD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 20_000 } else { 50 });
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("secret");
    std::fs::write(&file, SECRET).expect("write");
    let header = format!("Bearer {}", token(SECRET));
    println!("\n| listener | requests | sidecar CPU per request | requests per CPU-second |\n|---|---:|---:|---:|");
    let limits = "    rate_limit: {requests_per_second: 1000000, burst: 1000000, items_per_second: 1000000}\n";
    let auth = format!(
        "    auth:\n      jwt_hs256_secret_file: {}\n      audience: geometra-sidecar\n",
        file.display()
    );
    for (name, extra, bearer) in [
        ("otlp_http (in-pod, no guard)", String::new(), None),
        ("browser: limits", String::new(), None),
        ("browser: limits + token", auth, Some(header.as_str())),
    ] {
        let port = free_port();
        let cfg = format!("receivers:\n  browser:\n    listen: 127.0.0.1:{port}\n{limits}{extra}");
        let sc = Sidecar::start(&cfg).await;
        let url = match name.starts_with("otlp_http") {
            true => format!("http://{}/v1/traces", sc.http),
            false => format!("http://127.0.0.1:{port}/v1/traces"),
        };
        send_all(&url, n / 10, bearer).await; // warm-up
        let c0 = process_cpu(sc.pid());
        send_all(&url, n, bearer).await;
        let cpu = process_cpu(sc.pid()) - c0;
        let us = cpu.as_secs_f64() * 1e6 / n as f64;
        println!(
            "| {name} | {n} | {us:.1} µs | {:.0} |",
            n as f64 / cpu.as_secs_f64().max(1e-9)
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    micro(full);
    million_clients(full);
    end_to_end(full).await;
}
