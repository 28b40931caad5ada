//! The callgrind per-item driver (`benches/per_span.sh`): runs the deriver
//! (walk, every default rule, apply to the store) on the hot-path bench's
//! 512-item request a given number of times, so that the difference of two
//! runs' instruction counts divided by the items is the cost of one item,
//! start-up excluded. The walk validates the request as it goes (issue 24);
//! with `validate` the request is first validated whole in a separate pass
//! as well (`receiver::validate::request`, what the receivers ran before
//! issue 24), so the difference of the two figures is that pass's cost.
//!
//! `per_span SIGNAL ITERATIONS [validate] [CONFIG]`, SIGNAL one of traces,
//! logs, map_logs; CONFIG a config file (e.g. other `rules:`), else the
//! defaults.

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
    let rest: Vec<String> = args.collect();
    let validate = rest.iter().any(|a| a == "validate");
    let cfg = match rest.iter().find(|a| *a != "validate") {
        None => Config::default(),
        Some(p) => {
            Config::load(Some(std::path::Path::new(p)), &Default::default()).unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2);
            })
        }
    };
    let store = std::sync::Arc::new(geometra_sidecar::metrics::Store::new(
        &cfg.store,
        &cfg.passthrough,
    ));
    let d = Deriver::new(&cfg.derive(), store);
    use geometra_sidecar::base::SignalKind;
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
    let sig = if logs {
        SignalKind::LogRecords
    } else {
        SignalKind::Spans
    };
    let depth = geometra_sidecar::receiver::validate::DEFAULT_VALUE_DEPTH;
    for _ in 0..iterations {
        if validate {
            if let Err(e) =
                geometra_sidecar::receiver::validate::request(sig, black_box(&buf), depth)
            {
                eprintln!("the bench request is not valid OTLP: {e}");
                std::process::exit(1);
            }
        }
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
