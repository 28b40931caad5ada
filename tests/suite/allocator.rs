//! Request buffers are reused: under steady load the sidecar's request
//! bodies land on memory it already has, not on pages the kernel must zero
//! and map again for every request (src/allocator.rs).

use crate::common;

#[path = "../../benches/common/requests.rs"]
#[allow(dead_code)]
mod requests;

use bytes::Bytes;
use common::{RawCodec, Sidecar, TRACES};
use tonic::codegen::http::uri::PathAndQuery;

/// Minor page faults of `pid` so far (/proc/PID/stat, field 10).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = stat.rsplit(')').next().expect("stat fields");
    rest.split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .expect("minflt")
}

/// Sends `rounds` rounds of 8 concurrent 512-span requests on one channel.
async fn load(channel: &tonic::transport::Channel, body: &Bytes, rounds: usize) {
    for _ in 0..rounds {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            let body = body.clone();
            set.spawn(async move {
                grpc.ready().await.expect("ready");
                grpc.unary(
                    tonic::Request::new(body),
                    PathAndQuery::from_static(TRACES),
                    RawCodec,
                )
                .await
                .expect("export accepted");
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("request task");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_reuses_request_memory() {
    let sc = Sidecar::start("").await;
    let body = Bytes::from(requests::spans());
    assert!(
        body.len() > 128 << 10,
        "a request above glibc's first mmap threshold"
    );
    let channel = tonic::transport::Endpoint::from_shared(sc.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    load(&channel, &body, 20).await; // warm-up: buffers, tables, series
    let before = minor_faults(sc.pid());
    load(&channel, &body, 25).await;
    let faults = minor_faults(sc.pid()) - before;
    // glibc's defaults gave 9 to 29 faults a request here (1,800-5,800 for
    // these 200); reused memory gives a handful in all
    assert!(
        faults < 200,
        "{faults} minor page faults for 200 requests of {} bytes: request memory is not reused",
        body.len()
    );
}
