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
#[cfg(test)]
mod one_pass_tests;
pub mod stats;
/// The OTLP schema validator, shared with the walker (`derive/validate.rs`).
pub use crate::derive::validate;

use crate::base::{Live, SignalKind};
use crate::derive::config::Source;
use crate::derive::Deriver;
use crate::export::{Forward, Refusal, Room};
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
    /// `receivers.max_value_depth`: the deepest AnyValue nesting accepted.
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

    /// Push-back before any work. First by latency: while the forwarder's
    /// queue has no room, the request waits for it, a bounded time
    /// ([`Forward::wait_for_room`]; the room found is set aside until the
    /// returned [`Room`] is dropped, after the offer), and the request goes
    /// on to the walk uncounted: the offer checks its items exactly. When no
    /// room was set aside (none found in time, a disk queue, or no wait
    /// configured) and the queue has no room for the request's items, it
    /// is refused (counted) without validating or walking it; a queue that
    /// cannot refuse early (a disk queue) is not asked, and the request is
    /// not counted. A request that cannot be counted goes on to the walk,
    /// which says what is wrong with it.
    async fn refused_early(
        &self,
        sig: SignalKind,
        body: &[u8],
        stats: &ReceiverStats,
    ) -> Result<Room, Rejection> {
        let Some(f) = self.forward.as_ref().filter(|f| f.forwards(sig)) else {
            return Ok(None);
        };
        let room = f.wait_for_room(sig, body.len() as u64).await;
        if room.is_some() || !f.refuses_early(sig) {
            // the early count is the body's first touch, cache misses and
            // all (BENCHMARKS.md, issue 24): not paid twice when room is
            // set aside, nor at all when the queue cannot refuse early (a
            // disk queue decides on append)
            return Ok(room);
        }
        let items = match sig {
            SignalKind::MetricPoints => crate::derive::wire::count_metric_points(body),
            _ => crate::derive::wire::count_items(body),
        };
        let Some(items) = items.ok().filter(|&n| n > 0) else {
            return Ok(room);
        };
        match f.refuse_early(sig, items) {
            Some(refusal) => {
                stats.refuse(sig, items);
                Err(Rejection::Unavailable(refusal))
            }
            None => Ok(room),
        }
    }

    async fn offer(&self, sig: SignalKind, body: Bytes, items: u64) -> Result<(), Refusal> {
        match &self.forward {
            Some(f) if f.forwards(sig) && items > 0 => f.offer(sig, body, items).await,
            _ => Ok(()),
        }
    }

    /// Spans and log records: walk (validates the request whole, forwarded
    /// or not, and prepares the derived updates: [`walk`]), offer to the
    /// forwarder, and apply the updates only when the request is accepted,
    /// so a retried request is not counted twice and a refused one moves
    /// no metric.
    pub async fn spans_or_logs(
        &self,
        sig: SignalKind,
        body: Bytes,
        stats: &ReceiverStats,
        source: Source,
    ) -> Result<Accepted, Rejection> {
        // held until the offer is done: the room set aside for this request
        let _room = self.refused_early(sig, &body, stats).await?;
        // one rule set for the whole request: a reload meanwhile neither
        // loses its updates nor counts them twice
        let deriver = self.deriver.load();
        let prepared = match walk(&deriver, sig, &body, source, self.max_value_depth) {
            Ok(p) => p,
            Err((why, message)) => {
                stats.bad_request(sig, why);
                return Err(Rejection::Invalid(message));
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

    /// Metric points: validated whole ([`validate::request`]: a separate
    /// pass, as nothing is derived from them), counted, decoded for
    /// pass-through.
    pub async fn metrics(&self, body: Bytes, stats: &ReceiverStats) -> Result<Accepted, Rejection> {
        let sig = SignalKind::MetricPoints;
        // held until the offer is done: the room set aside for this request
        let _room = self.refused_early(sig, &body, stats).await?;
        // no walker reads metrics: validated whole, forwarded or not
        if let Err(e) = validate::request(sig, &body, self.max_value_depth) {
            stats.bad_request(sig, bad_request(&e));
            return Err(Rejection::Invalid(e.to_string()));
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

/// Walks a spans or logs request with `deriver`'s rules of `source`: the
/// one pass that checks the request is valid OTLP (AnyValues nested at most
/// `max_depth` levels) and prepares its derived updates. A refused request
/// is explained by [`validate::request`] (run only then, on the cold path):
/// whether it is malformed or breaks the schema, and the message and field
/// where it failed.
pub fn walk(
    deriver: &Deriver,
    sig: SignalKind,
    body: &[u8],
    source: Source,
    max_depth: u32,
) -> Result<crate::derive::Prepared, (BadRequest, String)> {
    let walked = match sig {
        SignalKind::Spans => deriver.prepare_traces_from(body, source, max_depth),
        _ => deriver.prepare_logs_from(body, source, max_depth),
    };
    walked.map_err(|e| match validate::request(sig, body, max_depth) {
        Err(why) => (bad_request(&why), why.to_string()),
        // the walker refused what the schema allows: a bug the
        // differential test (one_pass_tests.rs) is there to catch
        Ok(()) => (BadRequest::Malformed, e.to_string()),
    })
}

/// The drop reason a validation error is counted under.
fn bad_request(e: &validate::Invalid) -> BadRequest {
    match e.malformed {
        true => BadRequest::Malformed,
        false => BadRequest::Invalid,
    }
}
