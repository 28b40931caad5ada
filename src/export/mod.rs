//! Sending telemetry downstream: the seam between the receivers and the
//! exporters. A receiver acknowledges data to the app only once the forwarder
//! has taken it (and will deliver it).

use crate::metrics::SignalKind;
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
}

/// The forwarder the binary runs. Placeholder until the exporters land:
/// forwarding is not configured yet, so nothing is built.
pub struct Forwarder;

impl Forwarder {
    /// Waits until queued data is delivered or `deadline` passes.
    pub async fn drain(&self, _deadline: Duration) {}
}

impl Forward for Forwarder {
    fn forwards(&self, _signal: SignalKind) -> bool {
        false
    }
    fn offer(&self, _signal: SignalKind, _body: Bytes, _items: u64) -> OfferFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// Builds the forwarder from the config (None when nothing is forwarded).
pub async fn build(
    cfg: &crate::config::Config,
    _store: &std::sync::Arc<crate::metrics::Store>,
) -> Result<Option<std::sync::Arc<Forwarder>>, String> {
    if cfg.forward.logs.is_some() || cfg.forward.traces.is_some() || cfg.forward.metrics.is_some() {
        return Err("forwarding is configured but this build has no exporters yet".into());
    }
    Ok(None)
}
