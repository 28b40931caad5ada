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
    /// Puts a new redaction in force for what is offered from now on (a
    /// config reload); what is queued already was redacted by the old one.
    fn set_redaction(&self, _redactor: Option<otlp::redact::Redactor>) {}
}
