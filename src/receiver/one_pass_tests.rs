//! Differential test of the one-pass validation (issue 24): the walk that
//! derives from a spans or logs request also decides whether it is valid
//! OTLP (`walk`: the walker checks the fields it reads, the schema
//! validator the ones it skips). On many thousands of seeded, mutated
//! requests of each signal (a byte changed, inserted or cut; strings that
//! stop being UTF-8; values nested past the depth limit), its verdict must
//! be the whole-request validator's (`validate::request`, itself tested
//! against prost's decoding in its unit tests): accepted, refused as
//! malformed, or refused as invalid.
//!
//! A refused request's reason (malformed or invalid) and message come from
//! the whole-request validator run on the cold path, so the class agrees by
//! construction once both refuse; what this test proves is that the walk
//! accepts exactly what the validator accepts, and that the walk's and the
//! validator's reasons agree where they both give one.
//!
//! The seed is printed; `GEOMETRA_FUZZ_SEED` replays a failure.
//!
//! The generator is `derive::testgen`'s, shared with the validator's tests.

use super::{validate, walk};
use crate::base::SignalKind;
use crate::derive::config::Source;
use crate::derive::testgen::G;
use crate::derive::Deriver;
use crate::receiver::stats::BadRequest;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Verdict {
    Accepted,
    Malformed,
    Invalid,
}

fn oracle(sig: SignalKind, buf: &[u8], depth: u32) -> Verdict {
    match validate::request(sig, buf, depth) {
        Ok(()) => Verdict::Accepted,
        Err(e) if e.malformed => Verdict::Malformed,
        Err(_) => Verdict::Invalid,
    }
}

fn one_pass(d: &Deriver, sig: SignalKind, buf: &[u8], depth: u32) -> Verdict {
    match walk(d, sig, buf, Source::App, depth) {
        Ok(_) => Verdict::Accepted,
        Err((BadRequest::Malformed, _)) => Verdict::Malformed,
        Err(_) => Verdict::Invalid,
    }
}

fn prost_decodes(sig: SignalKind, buf: &[u8]) -> bool {
    match sig {
        SignalKind::Spans => ExportTraceServiceRequest::decode(buf).is_ok(),
        _ => ExportLogsServiceRequest::decode(buf).is_ok(),
    }
}

/// The deriver of an empty config file: the embedded rules and defaults.
fn default_deriver() -> Deriver {
    use crate::metrics::config::{PassthroughConfig, StoreConfig};
    let (rules, store_cfg) = (
        crate::derive::config::default_rules(),
        StoreConfig::default(),
    );
    let ai = crate::derive::ai::AiConfig::default();
    let store = Arc::new(crate::metrics::Store::new(
        &store_cfg,
        &PassthroughConfig::default(),
    ));
    let cfg = crate::derive::config::DeriveConfig {
        rules: &rules,
        extra_rules: &[],
        store: &store_cfg,
        ai: &ai,
    };
    Deriver::new(&cfg, store)
}

#[test]
fn the_walks_verdict_is_the_whole_request_validators() {
    let seed = std::env::var("GEOMETRA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("validation seed {seed} (GEOMETRA_FUZZ_SEED={seed} replays it)");
    let d = default_deriver();
    let mut g = G(fastrand::Rng::with_seed(seed));
    for sig in [SignalKind::Spans, SignalKind::LogRecords] {
        let mut seen = std::collections::HashMap::<Verdict, u32>::new();
        for i in 0..600 {
            let buf = match sig {
                SignalKind::Spans => g.traces(),
                _ => g.logs(),
            };
            // the default depth, and limits the generated values pass
            let depth = [validate::DEFAULT_VALUE_DEPTH, 1, 2, 3][g.n(3)];
            for j in 0..25 {
                let m = if j == 0 { buf.clone() } else { g.mutate(&buf) };
                let want = oracle(sig, &m, depth);
                let got = one_pass(&d, sig, &m, depth);
                assert_eq!(
                    got, want,
                    "seed {seed}, {sig:?} request {i} mutation {j} (depth {depth}): the walk says \
                     {got:?}, the validator {want:?}: {m:02x?}"
                );
                // and independently of the validator: what the walk accepts,
                // prost decodes into the generated types
                if got == Verdict::Accepted {
                    assert!(
                        prost_decodes(sig, &m),
                        "seed {seed}, {sig:?} request {i} mutation {j}: accepted, but prost \
                         refuses it: {m:02x?}"
                    );
                }
                *seen.entry(want).or_default() += 1;
            }
        }
        println!("{sig:?}: {seen:?}");
        // not vacuous: each verdict is reached often
        for v in [Verdict::Accepted, Verdict::Malformed, Verdict::Invalid] {
            let n = seen.get(&v).copied().unwrap_or(0);
            assert!(n > 500, "seed {seed}, {sig:?}: {v:?} only {n} times");
        }
    }
}
