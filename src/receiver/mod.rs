//! OTLP receivers (gRPC and HTTP) and the pipeline they share: validate and
//! derive, offer to the forwarder, then acknowledge.

pub mod admit;
pub mod browser;
pub mod config;
pub mod cors;
pub mod encoding;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod stats;
pub mod validate;

use crate::base::{Live, SignalKind};
use crate::derive::config::Source;
use crate::derive::Deriver;
use crate::export::{Forward, Refusal};
use crate::metrics::Store;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use stats::{BadRequest, ReceiverStats};
use std::sync::Arc;

/// What became of a request.
#[derive(Debug)]
pub enum Rejection {
    /// Malformed: the sender must not retry (INVALID_ARGUMENT / HTTP 400).
    Invalid(String),
    /// Push back: retry later (UNAVAILABLE + RetryInfo / HTTP 503 + Retry-After).
    Unavailable(Refusal),
}

/// Accepted, possibly partially: `rejected` items were dropped with `message`.
#[derive(Debug, Default, PartialEq)]
pub struct Accepted {
    pub items: u64,
    pub rejected: u64,
    pub message: String,
}

pub struct Pipeline {
    /// the rules in force, swapped whole by a config reload
    pub deriver: Live<Deriver>,
    pub store: Arc<Store>,
    pub forward: Option<Arc<dyn Forward>>,
    /// `receivers.max_value_depth`: the deepest AnyValue nesting accepted
    /// in a forwarded request.
    pub max_value_depth: u32,
    /// `receivers.max_in_flight_bytes`: what requests being read or worked
    /// on may hold, taken by the receivers (`admit.rs`)
    pub in_flight: Arc<admit::InFlight>,
    /// what the receivers accepted and refused, per transport
    pub stats: Arc<stats::Transports>,
}

impl Pipeline {
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn forwards(&self, sig: SignalKind) -> bool {
        self.forward.as_ref().is_some_and(|f| f.forwards(sig))
    }

    /// A forwarded request goes downstream as received, so it must be valid
    /// OTLP as a whole (see [`validate`]) before it is acknowledged; a
    /// request that is only derived from needs only what the walker checks
    /// (validating it whole too, as the OTLP specification asks, costs 2 100
    /// instructions a span in a separate pass, +89 %: BENCHMARKS.md, issue
    /// 24; it waits for validation folded into the walk).
    fn validate_forwarded(
        &self,
        sig: SignalKind,
        body: &[u8],
    ) -> Result<(), (BadRequest, Rejection)> {
        if self.forwards(sig) {
            validate::request(sig, body, self.max_value_depth).map_err(|e| {
                let why = match e.malformed {
                    true => BadRequest::Malformed,
                    false => BadRequest::Invalid,
                };
                (why, Rejection::Invalid(e.to_string()))
            })?;
        }
        Ok(())
    }

    /// Push-back before any work: when the forwarder's queue has no room
    /// for the request's items, it is refused (counted) without validating
    /// or walking it. A request that cannot be counted goes on to the walk,
    /// which says what is wrong with it.
    fn refused_early(
        &self,
        sig: SignalKind,
        body: &[u8],
        stats: &ReceiverStats,
    ) -> Option<Rejection> {
        let f = self.forward.as_ref().filter(|f| f.forwards(sig))?;
        let items = match sig {
            SignalKind::MetricPoints => crate::derive::wire::count_metric_points(body),
            _ => crate::derive::wire::count_items(body),
        }
        .ok()
        .filter(|&n| n > 0)?;
        let refusal = f.refuse_early(sig, items)?;
        stats.refuse(sig, items);
        Some(Rejection::Unavailable(refusal))
    }

    async fn offer(&self, sig: SignalKind, body: Bytes, items: u64) -> Result<(), Refusal> {
        match &self.forward {
            Some(f) if f.forwards(sig) && items > 0 => f.offer(sig, body, items).await,
            _ => Ok(()),
        }
    }

    /// Spans and log records: walk (validates and prepares the derived
    /// updates), offer to the forwarder, and apply the updates only when the
    /// request is accepted, so a retried request is not counted twice.
    pub async fn spans_or_logs(
        &self,
        sig: SignalKind,
        body: Bytes,
        stats: &ReceiverStats,
        source: Source,
    ) -> Result<Accepted, Rejection> {
        if let Some(r) = self.refused_early(sig, &body, stats) {
            return Err(r);
        }
        if let Err((why, r)) = self.validate_forwarded(sig, &body) {
            stats.bad_request(sig, why);
            return Err(r);
        }
        // one rule set for the whole request: a reload meanwhile neither
        // loses its updates nor counts them twice
        let deriver = self.deriver.load();
        let prepared = match sig {
            SignalKind::Spans => deriver.prepare_traces_from(&body, source),
            _ => deriver.prepare_logs_from(&body, source),
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                stats.bad_request(sig, BadRequest::Malformed);
                return Err(Rejection::Invalid(e.to_string()));
            }
        };
        let items = prepared.items;
        if let Err(r) = self.offer(sig, body, items).await {
            stats.refuse(sig, items);
            return Err(Rejection::Unavailable(r));
        }
        deriver.commit(prepared);
        stats.accept(sig, items);
        Ok(Accepted {
            items,
            ..Default::default()
        })
    }

    /// Metric points: counted by the walker, decoded for pass-through.
    pub async fn metrics(&self, body: Bytes, stats: &ReceiverStats) -> Result<Accepted, Rejection> {
        let sig = SignalKind::MetricPoints;
        if let Some(r) = self.refused_early(sig, &body, stats) {
            return Err(r);
        }
        if let Err((why, r)) = self.validate_forwarded(sig, &body) {
            stats.bad_request(sig, why);
            return Err(r);
        }
        let points = match crate::derive::wire::count_metric_points(&body) {
            Ok(n) => n,
            Err(e) => {
                stats.bad_request(sig, BadRequest::Malformed);
                return Err(Rejection::Invalid(e.to_string()));
            }
        };
        // `passthrough.enabled` may change on a reload: read once here, and
        // ingest skips the request if it was turned off meanwhile
        let req = if self.store().passthrough.enabled() {
            match ExportMetricsServiceRequest::decode(body.as_ref()) {
                Ok(r) => Some(r),
                Err(e) => {
                    stats.bad_request(sig, BadRequest::Malformed);
                    return Err(Rejection::Invalid(format!("malformed OTLP protobuf: {e}")));
                }
            }
        } else {
            None
        };
        if let Err(r) = self.offer(sig, body, points).await {
            stats.refuse(sig, points);
            return Err(Rejection::Unavailable(r));
        }
        let mut acc = Accepted {
            items: points,
            ..Default::default()
        };
        if let Some(req) = req {
            let got = self
                .store()
                .passthrough
                .ingest(&req, crate::base::now_secs());
            if got.dropped > 0 {
                acc.rejected = got.dropped;
                acc.message = format!(
                    "{} data points were not exposed (unsupported type such as exponential histogram or summary, a name \
                     taken by a derived metric, or a malformed point)",
                    got.dropped
                );
            }
        }
        stats.accept(sig, points - acc.rejected.min(points));
        stats.refuse(sig, acc.rejected.min(points));
        Ok(acc)
    }
}
