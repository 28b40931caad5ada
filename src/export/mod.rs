//! Sending telemetry downstream: one folder per exporter, and what they
//! share. A newcomer adding an exporter copies a folder.
//!
//! - [`otlp`]: the OTLP forwarder (logs, traces, metrics as received, over
//!   OTLP/gRPC or OTLP/HTTP, with a memory or disk queue). Receivers hand it
//!   requests through the [`Forward`] seam below.
//! - [`remote_write`]: the store's metrics pushed to a Prometheus remote-write
//!   receiver (Mimir, Thanos Receive, Cortex, VictoriaMetrics, Prometheus).
//! - [`retry`]: backoff with jitter, the classification of outcomes into
//!   retryable or not, and the server's Retry-After / RetryInfo hints.
//!
//! Each exporter folder holds `config.rs` (its section of the YAML, with its
//! validation), `exporter.rs` (the tasks that send) and its client.

pub mod auth;
pub mod http;
pub mod otlp;
pub mod remote_write;
pub mod retry;
pub mod stats;

use crate::base::SignalKind;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Why the forwarder would not take a request now; the sender is told to
/// retry (gRPC UNAVAILABLE with RetryInfo, HTTP 503 with Retry-After).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub retry_after: Duration,
    pub reason: String,
}

pub type OfferFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;

/// Room a forwarder set aside for a request that is being received
/// ([`Forward::wait_for_room`]), given back when dropped: once the request
/// is offered (its records then fill the queue instead) or refused.
pub type Room = Option<Box<dyn Send + Sync>>;
pub type RoomFuture<'a> = Pin<Box<dyn Future<Output = Room> + Send + 'a>>;

/// Takes encoded `Export*ServiceRequest` bodies for delivery downstream.
pub trait Forward: Send + Sync {
    /// Whether this signal is forwarded at all.
    fn forwards(&self, signal: SignalKind) -> bool;
    /// `body` holds `items` items. Ok means the data is queued and will be
    /// delivered (at least once); the receiver then acknowledges it.
    fn offer(&self, signal: SignalKind, body: Bytes, items: u64) -> OfferFuture<'_>;
    /// A refusal (counted) when the queue has no room for `items` items
    /// now: the receiver asks before walking a request, so push-back costs
    /// no walk. None means "offer it" (the offer may still refuse).
    fn refuse_early(&self, _signal: SignalKind, _items: u64) -> Option<Refusal> {
        None
    }
    /// Whether [`Forward::refuse_early`] can ever refuse this signal's
    /// requests (a memory queue can; a disk queue decides on append): when
    /// it cannot, the receiver does not count a request's items early.
    fn refuses_early(&self, _signal: SignalKind) -> bool {
        false
    }
    /// Push-back by latency, before the receiver counts or walks a request
    /// of `len` bytes: when the queue has no room for it, waits a bounded
    /// time for room (the forwarder's `max_wait`) and sets room aside for
    /// it, so a sender that would retry at once is not received only to be
    /// refused. Ready at once by default, and when there is room. With room
    /// set aside the receiver skips [`Forward::refuse_early`] (the offer
    /// checks exactly); without (None) it goes on as before.
    fn wait_for_room(&self, _signal: SignalKind, _len: u64) -> RoomFuture<'_> {
        Box::pin(std::future::ready(None))
    }
    /// Puts a new redaction in force for what is offered from now on (a
    /// config reload); what is queued already was redacted by the old one.
    fn set_redaction(&self, _redactor: Option<otlp::redact::Redactor>) {}
}
