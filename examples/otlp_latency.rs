//! Latency under load (`benches/latency.sh`): sends the hot-path bench's
//! 512-item OTLP/gRPC request on N concurrent streams as fast as the sidecar
//! answers (or a fixed number of requests), and reports the time from
//! sending each request to its response as percentiles; with `--scrape` a
//! second task fetches /metrics back to back (or every `--scrape-every-ms`)
//! meanwhile, and its own times are reported too.
//!
//! `otlp_latency [--endpoint URL] [--signal traces|logs] [--concurrency N]
//!  [--seconds S | --requests N] [--scrape URL [--scrape-every-ms MS]]`

use bytes::{Buf, BufMut, Bytes};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

#[path = "../benches/common/requests.rs"]
#[allow(dead_code)]
mod requests;

struct Args {
    endpoint: String,
    signal: String,
    concurrency: usize,
    seconds: f64,
    requests: u64,
    scrape: Option<String>,
    scrape_every: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        endpoint: "http://127.0.0.1:4317".into(),
        signal: "traces".into(),
        concurrency: 8,
        seconds: 10.0,
        requests: 0,
        scrape: None,
        scrape_every: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{k} {v}: {e}"));
        match k.as_str() {
            "--endpoint" => a.endpoint = v,
            "--signal" => a.signal = v,
            "--concurrency" => a.concurrency = num(&v)? as usize,
            "--seconds" => a.seconds = num(&v)?,
            "--requests" => a.requests = num(&v)? as u64,
            "--scrape" => a.scrape = Some(v),
            "--scrape-every-ms" => a.scrape_every = Duration::from_secs_f64(num(&v)? / 1000.0),
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    Ok(a)
}

#[derive(Clone, Default)]
struct RawCodec;
struct RawEnc;
struct RawDec;
impl Encoder for RawEnc {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}
impl Decoder for RawDec {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}

/// p50, p90, p99, p99.9 and max of `v` (microseconds), sorted in place.
fn percentiles(v: &mut [u64]) -> String {
    if v.is_empty() {
        return "n=0".into();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] as f64 / 1000.0;
    format!(
        "n={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
        v.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}

/// Fetches `url` until `stop`, every `every` (back to back when zero).
async fn scraper(url: String, every: Duration, stop: Arc<AtomicBool>) -> Vec<u64> {
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let ok = match client.get(&url).send().await {
            Ok(r) => r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            times.push(t.elapsed().as_micros() as u64);
        }
        tokio::time::sleep(every.saturating_sub(t.elapsed())).await;
    }
    times
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), String> {
    let a = args()?;
    let (payload, path) = match a.signal.as_str() {
        "logs" => (
            requests::logs(),
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        ),
        _ => (
            requests::spans(),
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ),
    };
    let payload = Bytes::from(payload);
    let channel = tonic::transport::Endpoint::from_shared(a.endpoint.clone())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connecting to {}: {e}", a.endpoint))?;
    let stop = Arc::new(AtomicBool::new(false));
    let scrape = a
        .scrape
        .clone()
        .map(|u| tokio::spawn(scraper(u, a.scrape_every, stop.clone())));
    let claimed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let times = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        let (payload, claimed, errors, times) = (
            payload.clone(),
            claimed.clone(),
            errors.clone(),
            times.clone(),
        );
        let fixed = a.requests;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let more = if fixed > 0 {
                    claimed.fetch_add(1, Ordering::Relaxed) < fixed
                } else {
                    Instant::now() < deadline
                };
                if !more {
                    break;
                }
                if grpc.ready().await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let t = Instant::now();
                let req = tonic::Request::new(payload.clone());
                let p = tonic::codegen::http::uri::PathAndQuery::from_static(path);
                match grpc.unary(req, p, RawCodec).await {
                    Ok(_) => mine.push(t.elapsed().as_micros() as u64),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Ok(mut all) = times.lock() {
                all.extend(mine);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = times.lock().map(|v| v.clone()).unwrap_or_default();
    let items = all.len() as u64 * requests::N as u64;
    println!(
        "signal={} requests={} errors={} items_per_s={:.0} export {}",
        a.signal,
        all.len(),
        errors.load(Ordering::Relaxed),
        items as f64 / wall,
        percentiles(&mut all)
    );
    if let Some(s) = scrape {
        let mut st = s.await.unwrap_or_default();
        println!("scrape {}", percentiles(&mut st));
    }
    Ok(())
}
