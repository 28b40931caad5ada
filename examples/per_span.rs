//! The callgrind per-item driver (`benches/per_span.sh`): runs the deriver
//! (walk, every default rule, apply to the store) on the hot-path bench's
//! 512-item request a given number of times, so that the difference of two
//! runs' instruction counts divided by the items is the cost of one item,
//! start-up excluded.
//!
//! `per_span SIGNAL ITERATIONS [CONFIG]`, SIGNAL one of traces, logs,
//! map_logs; CONFIG a config file (e.g. other `rules:`), else the defaults.

use geometra_sidecar::config::Config;
use geometra_sidecar::derive::Deriver;
use std::hint::black_box;

#[path = "../benches/common/requests.rs"]
mod requests;

fn main() {
    let mut args = std::env::args().skip(1);
    let signal = args.next().unwrap_or_else(|| "traces".into());
    let iterations: u64 = match args.next().map(|a| a.parse()) {
        None => 100,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("usage: per_span traces|logs|map_logs ITERATIONS ({e})");
            std::process::exit(2);
        }
    };
    let cfg = match args.next() {
        None => Config::default(),
        Some(p) => Config::load(Some(std::path::Path::new(&p)), &Default::default())
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2);
            }),
    };
    let store = std::sync::Arc::new(geometra_sidecar::metrics::Store::new(
        &cfg.store,
        &cfg.passthrough,
    ));
    let d = Deriver::new(&cfg.derive(), store);
    let (buf, logs) = match signal.as_str() {
        "traces" => (requests::spans(), false),
        "logs" => (requests::logs(), true),
        "map_logs" => (requests::map_body_logs(), true),
        other => {
            eprintln!("unknown signal {other:?}: traces, logs or map_logs");
            std::process::exit(2);
        }
    };
    let mut items = 0u64;
    for _ in 0..iterations {
        let out = if logs {
            d.logs(black_box(&buf))
        } else {
            d.traces(black_box(&buf))
        };
        match out {
            Ok(o) => items += o.items,
            Err(e) => {
                eprintln!("the bench request did not walk: {e}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "signal={signal} iterations={iterations} items={items} per_request={}",
        requests::N
    );
}
