//! Differential test of the one-pass validation (issue 24): the walk that
//! derives from a spans or logs request also decides whether it is valid
//! OTLP (`receiver::walk`: the walker checks the fields it reads, the schema
//! validator the ones it skips). On many thousands of seeded, mutated
//! requests of each signal (a byte changed, inserted or cut; strings that
//! stop being UTF-8; values nested past the depth limit), its verdict must
//! be the whole-request validator's (`receiver::validate::request`, itself
//! tested against prost's decoding in its unit tests): accepted, refused as
//! malformed, or refused as invalid.
//!
//! A refused request's reason (malformed or invalid) and message come from
//! the whole-request validator run on the cold path, so the class agrees by
//! construction once both refuse; what this test proves is that the walk
//! accepts exactly what the validator accepts, and that the walk's and the
//! validator's reasons agree where they both give one.
//!
//! The seed is printed; `GEOMETRA_FUZZ_SEED` replays a failure.

use geometra_sidecar::base::SignalKind;
use geometra_sidecar::config::Config;
use geometra_sidecar::derive::config::Source;
use geometra_sidecar::derive::Deriver;
use geometra_sidecar::receiver::stats::BadRequest;
use geometra_sidecar::receiver::{validate, walk};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use std::sync::Arc;

/// A seeded generator of valid requests that reach every field the walker
/// reads or skips (keys the default rules read among others).
struct G(fastrand::Rng);

impl G {
    fn n(&mut self, max: usize) -> usize {
        self.0.usize(0..=max)
    }
    fn s(&mut self) -> String {
        const PARTS: &[&str] = &["a", "/api", "é", "日本", "\u{1F600}", " ", "\0", "GET"];
        (0..self.n(4))
            .map(|_| PARTS[self.n(PARTS.len() - 1)])
            .collect()
    }
    fn key(&mut self) -> String {
        const KEYS: &[&str] = &[
            "http.route",
            "http.request.method",
            "http.response.status_code",
            "service.name",
            "gen_ai.operation.name",
            "event",
            "message",
        ];
        match self.0.bool() {
            true => KEYS[self.n(KEYS.len() - 1)].into(),
            false => self.s(),
        }
    }
    fn b(&mut self) -> Vec<u8> {
        (0..self.n(16)).map(|_| self.0.u8(..)).collect()
    }
    fn any(&mut self, depth: u32) -> AnyValue {
        let pick = if depth == 0 { self.n(4) } else { self.n(6) };
        let v = match pick {
            0 => Value::StringValue(self.s()),
            1 => Value::IntValue(self.0.i64(..)),
            2 => Value::DoubleValue(f64::from_bits(self.0.u64(..))),
            3 => Value::BoolValue(self.0.bool()),
            4 => Value::BytesValue(self.b()),
            5 => Value::ArrayValue(ArrayValue {
                values: (0..self.n(3)).map(|_| self.any(depth - 1)).collect(),
            }),
            _ => Value::KvlistValue(KeyValueList {
                values: self.attrs(depth - 1),
            }),
        };
        AnyValue { value: Some(v) }
    }
    fn attrs(&mut self, depth: u32) -> Vec<KeyValue> {
        (0..self.n(4))
            .map(|_| KeyValue {
                key: self.key(),
                value: Some(self.any(depth)),
                ..Default::default()
            })
            .collect()
    }
    fn resource(&mut self) -> Option<Resource> {
        Some(Resource {
            attributes: self.attrs(2),
            dropped_attributes_count: self.0.u32(..),
            ..Default::default()
        })
    }
    fn scope(&mut self) -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: self.s(),
            version: self.s(),
            attributes: self.attrs(1),
            dropped_attributes_count: 0,
        })
    }
    fn span(&mut self) -> Span {
        Span {
            trace_id: self.b(),
            span_id: self.b(),
            trace_state: self.s(),
            parent_span_id: self.b(),
            flags: self.0.u32(..),
            name: self.s(),
            kind: self.0.i32(0..6),
            start_time_unix_nano: self.0.u64(..),
            end_time_unix_nano: self.0.u64(..),
            attributes: self.attrs(3),
            dropped_attributes_count: self.0.u32(..3),
            events: (0..self.n(2))
                .map(|_| span::Event {
                    time_unix_nano: 1,
                    name: ["exception", "x"][self.n(1)].into(),
                    attributes: self.attrs(2),
                    dropped_attributes_count: 1,
                })
                .collect(),
            links: (0..self.n(2))
                .map(|_| span::Link {
                    trace_id: self.b(),
                    span_id: self.b(),
                    trace_state: self.s(),
                    attributes: self.attrs(2),
                    dropped_attributes_count: 2,
                    flags: 1,
                })
                .collect(),
            status: Some(Status {
                message: self.s(),
                code: self.0.i32(0..3),
            }),
            ..Default::default()
        }
    }
    fn traces(&mut self) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: (0..1 + self.n(1))
                .map(|_| ResourceSpans {
                    resource: self.resource(),
                    scope_spans: vec![ScopeSpans {
                        scope: self.scope(),
                        spans: (0..1 + self.n(3)).map(|_| self.span()).collect(),
                        schema_url: self.s(),
                    }],
                    schema_url: self.s(),
                })
                .collect(),
        }
        .encode_to_vec()
    }
    fn record(&mut self) -> LogRecord {
        LogRecord {
            time_unix_nano: self.0.u64(..),
            observed_time_unix_nano: self.0.u64(..),
            severity_number: self.0.i32(0..25),
            severity_text: self.s(),
            body: Some(self.any(4)),
            attributes: self.attrs(3),
            flags: self.0.u32(..),
            trace_id: self.b(),
            span_id: self.b(),
            event_name: self.s(),
            ..Default::default()
        }
    }
    fn logs(&mut self) -> Vec<u8> {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: self.resource(),
                scope_logs: vec![ScopeLogs {
                    scope: self.scope(),
                    log_records: (0..1 + self.n(3)).map(|_| self.record()).collect(),
                    schema_url: self.s(),
                }],
                schema_url: self.s(),
            }],
        }
        .encode_to_vec()
    }
    /// `buf` with one to three mutations: a byte changed, inserted or cut.
    fn mutate(&mut self, buf: &[u8]) -> Vec<u8> {
        let mut m = buf.to_vec();
        for _ in 0..1 + self.n(2) {
            if m.is_empty() {
                break;
            }
            let at = self.0.usize(..m.len());
            match self.0.u8(0..8) {
                0..=4 => m[at] = self.0.u8(..),
                5 => m.insert(at, self.0.u8(..)),
                6 => m[at] |= 0x80,
                _ => m.truncate(at),
            }
        }
        m
    }
}

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

#[test]
fn the_walks_verdict_is_the_whole_request_validators() {
    let seed = std::env::var("GEOMETRA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("validation seed {seed} (GEOMETRA_FUZZ_SEED={seed} replays it)");
    let cfg = Config::default();
    let store = Arc::new(geometra_sidecar::metrics::Store::new(
        &cfg.store,
        &cfg.passthrough,
    ));
    let d = Deriver::new(&cfg.derive(), store);
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
