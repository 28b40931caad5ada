//! The outage measurement of BENCHMARKS.md ("Outage"): with default
//! settings and a queue directory, the gateway is down while OUTAGE_RECORDS
//! (default 3,600,000: an hour at 1,000/s) ~300-byte log records arrive as
//! fast as 4 gRPC clients send them, 100 per request; then it comes back.
//! Prints the sidecar's RSS as the backlog grows and drains, as a Markdown
//! table.
//!
//! `cargo bench --bench outage_rss` (`OUTAGE_RECORDS=200000` for a scaled
//! run). Run as a test (`cargo test --benches`, without cargo bench's
//! `--bench` flag) it sends 20,000 records unless OUTAGE_RECORDS says
//! otherwise: a check that the measurement still runs, not a measurement.
//!
//! The sidecar is started by the tests' harness (tests/common).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{free_port, rss_kib, Sidecar};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;

/// Accepts everything and counts the log records.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

#[tonic::async_trait]
impl LogsService for Counter {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let n: usize = req
            .get_ref()
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::SeqCst);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn string(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(v.to_string())),
    })
}

/// A log record with attributes `seq` and `http.route`.
fn record(seq: &str, body: &str) -> LogRecord {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: string(v),
        ..Default::default()
    };
    LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000,
        severity_text: "INFO".into(),
        body: string(body),
        attributes: vec![kv("seq", seq), kv("http.route", "/api/chat")],
        ..Default::default()
    }
}

/// `otelcol_exporter_queue_size{exporter="otlp/logs"}` (NaN unanswered).
async fn queue_size(s: &Sidecar) -> f64 {
    let text = match reqwest::get(format!("http://{}/metrics", s.metrics)).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return f64::NAN,
    };
    text.lines()
        .filter(|l| {
            l.starts_with("otelcol_exporter_queue_size{") && l.contains("exporter=\"otlp/logs\"")
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
        .next()
        .unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let total: usize = std::env::var("OUTAGE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 3_600_000 } else { 20_000 });
    let (per, clients) = (100usize, 4usize);
    let dir = tempfile::tempdir().expect("tempdir");
    let qdir = dir.path().join("queue");
    let port = free_port();
    let cfg = format!("forward:\n  logs: {{ endpoint: \"http://127.0.0.1:{port}\" }}\n");
    let s = Arc::new(
        Sidecar::builder()
            .dir(dir.path(), "outage")
            .config(&cfg)
            .args(["--queue-dir", qdir.to_str().expect("utf-8")])
            .rust_log(Some("info"))
            .stderr_to_file()
            .start()
            .await,
    );
    let pid = s.pid();
    println!("| phase | records | disk queue bytes | sidecar RSS MiB |");
    println!("|---|---|---|---|");
    let row = |phase: &str, n: u64, disk: f64| {
        println!(
            "| {phase} | {n} | {disk:.0} | {:.1} |",
            rss_kib(pid) as f64 / 1024.0
        )
    };
    row("start", 0, 0.0);
    let body = "chat request served; model gpt-4o, 812 tokens ".repeat(4);
    let sent = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (s, sent, body) = (s.clone(), sent.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut cl = LogsServiceClient::connect(s.grpc_url())
                .await
                .expect("connect to the sidecar");
            for i in (c..total / per).step_by(clients) {
                let recs = (0..per)
                    .map(|j| record(&format!("o-{i}-{j}"), &body))
                    .collect();
                if let Err(st) = cl.export(common::log_request(recs)).await {
                    panic!("refused during the outage: {st:?}");
                }
                sent.fetch_add(per as u64, Ordering::Relaxed);
            }
        }));
    }
    let mut next = total as u64 / 10;
    while tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = sent.load(Ordering::Relaxed);
        if n >= next {
            row("outage", n, queue_size(&s).await);
            next += total as u64 / 10;
        }
    }
    for t in tasks {
        t.await.expect("client");
    }
    let took = t.elapsed();
    row("outage end", total as u64, queue_size(&s).await);
    println!("sent {total} records in {took:?}");
    let counter = Counter::default();
    let svc = LogsServiceServer::new(counter.clone()).accept_compressed(CompressionEncoding::Gzip);
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
            .await;
    });
    let t = Instant::now();
    let mut next = total as u64 / 4;
    while counter.0.load(Ordering::SeqCst) < total as u64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = counter.0.load(Ordering::SeqCst);
        if n >= next {
            row("delivering", n, queue_size(&s).await);
            next += total as u64 / 4;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "no drain within 30 min"
        );
    }
    println!("delivered {total} records in {:?}", t.elapsed());
    let t = Instant::now();
    loop {
        let v = queue_size(&s).await;
        if v == 0.0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "queue_size is {v}, want 0:\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    row("drained", total as u64, 0.0);
}
