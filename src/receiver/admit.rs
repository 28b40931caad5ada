//! Admission of request bytes: one budget, shared by the OTLP receivers,
//! bounds the memory that requests being read or worked on hold.
//!
//! Without it a client that declares a 4 MiB message on each of 128 HTTP/2
//! streams and stalls makes the receiver hold 512 MiB until the request
//! timeout (`tests/in_flight.rs` measured 147 MiB RSS from one connection
//! of 32 such streams, past the Helm chart's 64 MiB limit: an OOM kill loses
//! what the memory queue had acknowledged). Each request takes its bytes
//! from `receivers.max_in_flight_bytes` when its size is known (a gRPC
//! message's length prefix, an HTTP body's Content-Length, or chunk by
//! chunk) and gives them back when it is answered; one that does not fit is
//! refused at once with a retryable answer (gRPC UNAVAILABLE with
//! RetryInfo, HTTP 503 with Retry-After), as the Collector's
//! memory_limiter does, rather than queued, so a refused client holds
//! nothing. Counted in `geometra_sidecar_receiver_in_flight_refused_total`.

use crate::export::Refusal;
use crate::metrics::{SignalKind, SIGNAL_ITEM_NAMES};
use crate::telemetry::{kv, SelfMetrics};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The receivers, in `InFlight::refused` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc = 0,
    Http = 1,
}
const TRANSPORTS: [&str; 2] = ["grpc", "http"];

/// How long a refused client is asked to wait: requests in flight are
/// answered within milliseconds, or cut by the request timeout.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The budget and its counters.
pub struct InFlight {
    used: AtomicUsize,
    limit: usize,
    /// requests refused for lack of budget, per transport and signal
    refused: [[AtomicU64; 3]; 2],
    /// unix seconds of the last refusal warning (one per 10 s, not one per request)
    last_warned_s: AtomicU64,
}

/// Bytes taken from the budget; given back when dropped.
pub struct Held {
    owner: Arc<InFlight>,
    bytes: usize,
}

impl InFlight {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(InFlight {
            used: AtomicUsize::new(0),
            limit,
            refused: Default::default(),
            last_warned_s: AtomicU64::new(0),
        })
    }

    /// `bytes` from the budget, or None when they do not fit.
    pub fn take(self: &Arc<Self>, bytes: usize) -> Option<Held> {
        let mut held = Held {
            owner: self.clone(),
            bytes: 0,
        };
        held.grow(bytes).then_some(held)
    }

    fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= self.limit)
            })
            .is_ok()
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Counts a refused request and says why, for the sender.
    pub fn refuse(&self, t: Transport, sig: SignalKind) -> Refusal {
        self.refused[t as usize][sig as usize].fetch_add(1, Ordering::Relaxed);
        let now = crate::metrics::now_secs();
        if now >= self.last_warned_s.load(Ordering::Relaxed) + 10 {
            self.last_warned_s.store(now, Ordering::Relaxed);
            tracing::warn!(
                limit = self.limit,
                in_flight = self.used(),
                "receivers.max_in_flight_bytes reached: refusing requests (retryable) until requests in flight are answered"
            );
        }
        Refusal {
            retry_after: RETRY_AFTER,
            reason: format!(
                "the sidecar is reading or working on receivers.max_in_flight_bytes ({} bytes) of requests; retry later",
                self.limit
            ),
        }
    }

    /// The budget's self-metrics.
    pub fn declare(t: &SelfMetrics, me: &Arc<InFlight>) {
        let m = me.clone();
        t.gauge(
            "geometra_sidecar_receiver_in_flight_bytes",
            "Bytes held by OTLP requests being read or worked on.",
            "By",
            move |o| o.observe(m.used() as f64, &[]),
        );
        let m = me.clone();
        t.gauge(
            "geometra_sidecar_receiver_in_flight_limit_bytes",
            "receivers.max_in_flight_bytes: past it requests are refused, retryable.",
            "By",
            move |o| o.observe(m.limit as f64, &[]),
        );
        let m = me.clone();
        t.counter(
            "geometra_sidecar_receiver_in_flight_refused_total",
            "Requests refused (retryable) because receivers.max_in_flight_bytes was held by other requests.",
            "",
            move |o| {
                for (transport, per) in TRANSPORTS.iter().zip(m.refused.iter()) {
                    for (signal, n) in SIGNAL_ITEM_NAMES.iter().zip(per.iter()) {
                        let at = [("transport", *transport), ("signal", *signal)];
                        o.observe(n.load(Ordering::Relaxed), &kv(at));
                    }
                }
            },
        );
    }
}

impl Held {
    /// `n` more bytes; false (nothing taken) when they do not fit.
    pub fn grow(&mut self, n: usize) -> bool {
        let ok = self.owner.reserve(n);
        if ok {
            self.bytes += n;
        }
        ok
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.owner.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_limit_and_gives_back_on_drop() {
        let b = InFlight::new(100);
        let a = b.take(60).expect("60 of 100");
        assert!(b.take(41).is_none(), "101 of 100");
        let mut c = b.take(40).expect("exactly 100");
        assert_eq!(b.used(), 100);
        assert!(!c.grow(1));
        assert_eq!((b.used(), c.bytes()), (100, 40));
        drop(a);
        assert!(c.grow(60));
        assert_eq!(b.used(), 100);
        drop(c);
        assert_eq!(b.used(), 0);
        assert!(b.take(usize::MAX).is_none(), "no overflow");
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn concurrent_takers_never_exceed_the_limit() {
        let b = InFlight::new(1000);
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (b, peak) = (b.clone(), peak.clone());
                std::thread::spawn(move || {
                    for n in 0..20_000usize {
                        if let Some(h) = b.take(1 + (n * 7 + i) % 300) {
                            peak.fetch_max(b.used(), Ordering::Relaxed);
                            drop(h);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("taker thread");
        }
        assert!(peak.load(Ordering::Relaxed) <= 1000);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn refusals_are_counted_per_transport_and_signal() {
        let b = InFlight::new(1);
        let r = b.refuse(Transport::Http, SignalKind::LogRecords);
        assert_eq!(r.retry_after, RETRY_AFTER);
        assert!(r.reason.contains("max_in_flight_bytes (1 bytes)"));
        assert_eq!(b.refused[1][1].load(Ordering::Relaxed), 1);
        assert_eq!(b.refused[0][1].load(Ordering::Relaxed), 0);
    }
}
