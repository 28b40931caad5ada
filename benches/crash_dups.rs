//! Records sent twice after a crash (BENCHMARKS.md, "Duplicates after
//! kill -9"): the real binary with a queue directory forwards to a live sink
//! that counts every log record by its `seq` attribute, while 4 gRPC clients
//! send 100-record requests as fast as it acknowledges them; every
//! CRASH_SECONDS (default 2) the sidecar is killed with SIGKILL and started
//! again on the same directory, CRASH_KILLS times (default 15). Record
//! bodies are CRASH_BODY_REPEAT (default 5) times 47 bytes: 20 makes
//! requests of ~100 KB, which the sidecar queues compressed. Then it
//! runs until the sink has every acknowledged record, and the lost and
//! duplicate records are counted per kill.
//!
//! Two rounds, each on a fresh directory: with the delivered-position
//! ledger as the sidecar keeps it, and with the ledger file removed before
//! each restart (the behaviour before it existed: every record of every
//! segment left is sent again).
//!
//! `cargo bench --bench crash_dups`. Run as a test (`cargo test`: the
//! bench target has `test = true`) it kills 3 times, 1 s apart, and fails on a lost record, or when a
//! restart with the ledger resends more than the batches that can be in
//! flight (queue.consumers x batch.max_items records a kill).
//!
//! The sidecar is started by the tests' harness (tests/common).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{free_port, Sidecar};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;

/// Default queue.consumers and batch.max_items: what can be in flight.
const IN_FLIGHT_RECORDS: u64 = 4 * 512;

/// How many times each `seq` arrived.
#[derive(Clone, Default)]
struct Counts(Arc<Mutex<HashMap<i64, u32>>>);

impl Counts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[tonic::async_trait]
impl LogsService for Counts {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let mut seen = self.lock();
        for lr in req
            .get_ref()
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
        {
            let seq = lr.attributes.iter().find(|kv| kv.key == "seq");
            if let Some(Value::IntValue(n)) = seq.and_then(|kv| kv.value.as_ref()?.value.as_ref()) {
                *seen.entry(*n).or_default() += 1;
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// A ~300-byte log record with an integer `seq` attribute.
fn record(seq: i64, body: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(body.to_string())),
        }),
        attributes: vec![KeyValue {
            key: "seq".into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(seq)),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

struct Round {
    acked: u64,
    lost: u64,
    duplicates: u64,
    kills: u32,
}

async fn start(dir: &Path, name: &str, cfg: &str, qdir: &Path) -> Sidecar {
    Sidecar::builder()
        .dir(dir, name)
        .config(cfg)
        .args(["--queue-dir", qdir.to_str().unwrap_or_default()])
        .rust_log(Some("info"))
        .stderr_to_file()
        .start()
        .await
}

/// Load from 4 clients until `stop`; the seqs acknowledged go to `acked`.
fn load(
    url: String,
    client: i64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
) -> tokio::task::JoinHandle<()> {
    let repeat = std::env::var("CRASH_BODY_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    tokio::spawn(async move {
        let body = "chat request served; model gpt-4o, 812 tokens ".repeat(repeat);
        let Ok(mut c) = LogsServiceClient::connect(url).await else {
            return;
        };
        let mut i = 0i64;
        while !stop.load(Ordering::Relaxed) {
            // seq: client, request, record; unique across the run
            let first = (client << 40) | (i << 8);
            let seqs: Vec<i64> = (0..100).map(|j| first + j).collect();
            let req = common::log_request(seqs.iter().map(|&q| record(q, &body)).collect());
            i += 1;
            match c.export(req).await {
                Ok(_) => acked.lock().unwrap_or_else(|p| p.into_inner()).extend(seqs),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
}

async fn round(kills: u32, every: Duration, keep_ledger: bool, base: i64) -> Round {
    let dir = tempfile::tempdir().expect("tempdir");
    let qdir = dir.path().join("queue");
    let counts = Counts::default();
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the sink");
    let svc = LogsServiceServer::new(counts.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(64 << 20);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let cfg = format!("forward:\n  logs: {{ endpoint: \"http://127.0.0.1:{port}\" }}\n");
    let acked = Arc::new(Mutex::new(Vec::new()));
    for k in 0..kills {
        let mut s = start(dir.path(), &format!("run{k}"), &cfg, &qdir).await;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..4)
            .map(|c| {
                load(
                    s.grpc_url(),
                    base + i64::from(k) * 4 + c,
                    stop.clone(),
                    acked.clone(),
                )
            })
            .collect();
        tokio::time::sleep(every).await;
        s.kill();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        if !keep_ledger {
            let _ = std::fs::remove_file(qdir.join("logs").join("delivered"));
        }
    }
    let _s = start(dir.path(), "last", &cfg, &qdir).await;
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
    let t = Instant::now();
    let lost = loop {
        let lost = {
            let seen = counts.lock();
            acked.iter().filter(|q| !seen.contains_key(q)).count() as u64
        };
        if lost == 0 || t.elapsed() > Duration::from_secs(120) {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // let the last copies arrive
    tokio::time::sleep(Duration::from_millis(500)).await;
    let duplicates = counts
        .lock()
        .values()
        .map(|&n| u64::from(n.saturating_sub(1)))
        .sum();
    Round {
        acked: acked.len() as u64,
        lost,
        duplicates,
        kills,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let var = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let kills = var("CRASH_KILLS", if bench { 15.0 } else { 3.0 }) as u32;
    let every = Duration::from_secs_f64(var("CRASH_SECONDS", if bench { 2.0 } else { 1.0 }));
    println!("| ledger | kills | acknowledged | lost | duplicates | duplicates per kill |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut with = None;
    for (keep, name, base) in [
        (true, "kept", 0),
        (false, "removed before each restart", 1 << 20),
    ] {
        let r = round(kills, every, keep, base).await;
        println!(
            "| {name} | {} | {} | {} | {} | {:.0} |",
            r.kills,
            r.acked,
            r.lost,
            r.duplicates,
            r.duplicates as f64 / f64::from(r.kills.max(1))
        );
        assert_eq!(r.lost, 0, "acknowledged records lost ({name})");
        if keep {
            with = Some(r);
        }
    }
    if let Some(r) = with {
        assert!(
            r.duplicates <= u64::from(r.kills) * IN_FLIGHT_RECORDS,
            "{} duplicates after {} kills: more than the batches in flight",
            r.duplicates,
            r.kills
        );
    }
}
