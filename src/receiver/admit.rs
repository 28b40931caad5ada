//! Admission of request bytes: one budget, shared by the OTLP receivers,
//! bounds the memory that requests being read or worked on hold, and each
//! gRPC connection may hold only its share of it.
//!
//! Without it a client that declares a 4 MiB message on each of 128 HTTP/2
//! streams and stalls makes the receiver hold 512 MiB until the request
//! timeout (`tests/suite/in_flight.rs` measured 147 MiB RSS from one connection
//! of 32 such streams, past the Helm chart's 64 MiB limit: an OOM kill loses
//! what the memory queue had acknowledged). Each request takes its bytes
//! from `receivers.max_in_flight_bytes` when its size is known (a gRPC
//! message's length prefix, an HTTP body's Content-Length, or chunk by
//! chunk) and gives them back when it is answered; one that does not fit is
//! refused at once with a retryable answer (gRPC UNAVAILABLE with
//! RetryInfo, HTTP 503 with Retry-After), as the Collector's
//! memory_limiter does, rather than queued, so a refused client holds
//! nothing. Counted in `geometra_sidecar_receiver_in_flight_refused_total`.
//!
//! First come, first served alone would let one HTTP/2 connection that
//! stalls enough large requests take the whole budget, and every other
//! client (the pod's back end exporting over gRPC) be refused until the
//! request timeout cuts it. So a gRPC request also takes its bytes from its
//! connection's [`Share`], at most `receivers.max_in_flight_bytes_per_connection`
//! (refusals counted with `limit="connection"`). OTLP/HTTP is served over
//! HTTP/1.1, one request at a time per connection: it takes from the budget
//! alone (many such connections are bounded by the budget and
//! `server.connections.max_connections`).

use crate::base::{SignalKind, SIGNAL_ITEM_NAMES};
use crate::export::Refusal;
use crate::telemetry::{kv, SelfMetrics};
use opentelemetry::metrics::AsyncInstrument;
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

/// The limit a refused request did not fit, in `InFlight::refused` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `receivers.max_in_flight_bytes`, all requests together
    Total = 0,
    /// `receivers.max_in_flight_bytes_per_connection`, one connection's
    /// requests, while the budget still had room for others
    Connection = 1,
}
const LIMITS: [&str; 2] = ["total", "connection"];

/// How long a refused client is asked to wait: requests in flight are
/// answered within milliseconds, or cut by the request timeout.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The budget, the per-connection share, and their counters.
pub struct InFlight {
    used: AtomicUsize,
    limit: usize,
    per_connection: usize,
    /// requests refused, per limit, transport and signal
    refused: [[[AtomicU64; 3]; 2]; 2],
    /// unix seconds of the last refusal warning per limit (one per 10 s,
    /// not one per request)
    last_warned_s: [AtomicU64; 2],
}

/// One connection's share of the budget: the bytes its requests hold.
/// Held by the connection and by each of its requests' [`Held`].
pub struct Share {
    used: AtomicUsize,
    budget: Arc<InFlight>,
}

/// Where a [`Held`]'s bytes come from.
enum Owner {
    Budget(Arc<InFlight>),
    Share(Arc<Share>),
}

/// Bytes taken from the budget (and a connection's share); given back
/// when dropped.
pub struct Held {
    owner: Owner,
    bytes: usize,
}

/// Adds `n` to `used` unless that passes `limit`.
fn reserve(used: &AtomicUsize, limit: usize, n: usize) -> bool {
    used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
        u.checked_add(n).filter(|&u| u <= limit)
    })
    .is_ok()
}

impl InFlight {
    /// A budget of `limit` bytes, of which one connection may hold
    /// `per_connection`.
    pub fn new(limit: usize, per_connection: usize) -> Arc<Self> {
        Arc::new(InFlight {
            used: AtomicUsize::new(0),
            limit,
            per_connection,
            refused: Default::default(),
            last_warned_s: Default::default(),
        })
    }

    /// An empty [`Held`] taking from the budget alone.
    pub fn hold(self: &Arc<Self>) -> Held {
        Held {
            owner: Owner::Budget(self.clone()),
            bytes: 0,
        }
    }

    /// `bytes` from the budget alone, or the limit they do not fit.
    pub fn take(self: &Arc<Self>, bytes: usize) -> Result<Held, Limit> {
        let mut held = self.hold();
        held.grow(bytes).map(|()| held)
    }

    /// A new connection's share, empty.
    pub fn share(self: &Arc<Self>) -> Arc<Share> {
        Arc::new(Share {
            used: AtomicUsize::new(0),
            budget: self.clone(),
        })
    }

    fn reserve(&self, n: usize) -> Result<(), Limit> {
        reserve(&self.used, self.limit, n)
            .then_some(())
            .ok_or(Limit::Total)
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Counts a refused request and says why, for the sender.
    pub fn refuse(&self, t: Transport, sig: SignalKind, limit: Limit) -> Refusal {
        self.refused[limit as usize][t as usize][sig as usize].fetch_add(1, Ordering::Relaxed);
        let (key, bytes, whose) = match limit {
            Limit::Total => (
                "receivers.max_in_flight_bytes",
                self.limit,
                "the sidecar is",
            ),
            Limit::Connection => (
                "receivers.max_in_flight_bytes_per_connection",
                self.per_connection,
                "this connection's requests are",
            ),
        };
        let now = crate::base::now_secs();
        let last = &self.last_warned_s[limit as usize];
        if now >= last.load(Ordering::Relaxed) + 10 {
            last.store(now, Ordering::Relaxed);
            tracing::warn!(
                limit = bytes,
                in_flight = self.used(),
                "{key} reached: refusing requests (retryable) until requests in flight are answered"
            );
        }
        Refusal {
            retry_after: RETRY_AFTER,
            reason: format!(
                "{whose} reading or working on {key} ({bytes} bytes) of requests; retry later"
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
        t.gauge(
            "geometra_sidecar_receiver_in_flight_connection_limit_bytes",
            "receivers.max_in_flight_bytes_per_connection: past it a gRPC connection's requests are refused, retryable.",
            "By",
            move |o| o.observe(m.per_connection as f64, &[]),
        );
        let m = me.clone();
        t.counter(
            "geometra_sidecar_receiver_in_flight_refused_total",
            "Requests refused (retryable) because receivers.max_in_flight_bytes (limit=total) or the connection's receivers.max_in_flight_bytes_per_connection (limit=connection) was held by other requests.",
            "",
            move |o| m.observe_refused(o),
        );
    }

    /// The refusal counters; `limit="connection"` for gRPC only, the one
    /// transport with shares.
    fn observe_refused(&self, o: &dyn AsyncInstrument<u64>) {
        for (l, per_limit) in LIMITS.iter().zip(self.refused.iter()) {
            for (t, per) in TRANSPORTS.iter().zip(per_limit.iter()) {
                if *l == "connection" && *t != "grpc" {
                    continue;
                }
                for (signal, n) in SIGNAL_ITEM_NAMES.iter().zip(per.iter()) {
                    let at = [("transport", *t), ("signal", *signal), ("limit", *l)];
                    o.observe(n.load(Ordering::Relaxed), &kv(at));
                }
            }
        }
    }
}

impl Share {
    /// An empty [`Held`] taking from this share and the budget.
    pub fn hold(self: Arc<Self>) -> Held {
        Held {
            owner: Owner::Share(self),
            bytes: 0,
        }
    }

    /// `n` from the share, then from the budget (given back to the share
    /// when the budget has no room). Refused by the share while the budget
    /// had no room either, it is the budget that refuses: `connection`
    /// means the others could still have been served.
    fn reserve(&self, n: usize) -> Result<(), Limit> {
        if !reserve(&self.used, self.budget.per_connection, n) {
            let b = &self.budget;
            let fits = b.used().checked_add(n).is_some_and(|u| u <= b.limit);
            return Err(if fits {
                Limit::Connection
            } else {
                Limit::Total
            });
        }
        self.budget.reserve(n).inspect_err(|_| {
            self.used.fetch_sub(n, Ordering::AcqRel);
        })
    }

    /// Bytes this connection's requests hold now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Held {
    /// `n` more bytes; the limit they do not fit (nothing taken) otherwise.
    pub fn grow(&mut self, n: usize) -> Result<(), Limit> {
        match &self.owner {
            Owner::Budget(b) => b.reserve(n),
            Owner::Share(s) => s.reserve(n),
        }?;
        self.bytes += n;
        Ok(())
    }

    /// Gives back every byte held; the owner stays, to grow again.
    pub fn release(&mut self) {
        let n = std::mem::take(&mut self.bytes);
        if n == 0 {
            return;
        }
        let budget = match &self.owner {
            Owner::Budget(b) => b,
            Owner::Share(s) => {
                s.used.fetch_sub(n, Ordering::AcqRel);
                &s.budget
            }
        };
        budget.used.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_limit_and_gives_back_on_drop() {
        let b = InFlight::new(100, 100);
        let a = b.take(60).expect("60 of 100");
        assert_eq!(b.take(41).err(), Some(Limit::Total), "101 of 100");
        let mut c = b.take(40).expect("exactly 100");
        assert_eq!(b.used(), 100);
        assert_eq!(c.grow(1), Err(Limit::Total));
        assert_eq!((b.used(), c.bytes()), (100, 40));
        drop(a);
        assert!(c.grow(60).is_ok());
        assert_eq!(b.used(), 100);
        drop(c);
        assert_eq!(b.used(), 0);
        assert!(b.take(usize::MAX).is_err(), "no overflow");
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_connection_holds_at_most_its_share_and_others_still_fit() {
        let b = InFlight::new(100, 40);
        let (one, two) = (b.share(), b.share());
        let mut a = one.clone().hold();
        assert!(a.grow(30).is_ok());
        let mut a2 = one.clone().hold();
        assert_eq!(a2.grow(11), Err(Limit::Connection), "41 of its 40");
        assert_eq!((one.used(), b.used(), a2.bytes()), (30, 30, 0));
        assert!(a2.grow(10).is_ok(), "exactly its 40");
        // the other connection still has the rest of the budget
        let mut c = two.clone().hold();
        assert!(c.grow(30).is_ok());
        let d = b.take(30).expect("the budget alone");
        assert_eq!(b.used(), 100);
        // within its share but past the budget: the share is given back
        let mut e = two.clone().hold();
        assert_eq!(e.grow(1), Err(Limit::Total));
        assert_eq!((two.used(), b.used(), e.bytes()), (30, 100, 0));
        // past its share and past the budget: the budget refuses
        let mut f = one.clone().hold();
        assert_eq!(f.grow(1), Err(Limit::Total));
        drop((a, d));
        assert_eq!((one.used(), b.used()), (10, 40));
        c.release();
        assert_eq!((two.used(), c.bytes()), (0, 0));
        assert!(c.grow(40).is_ok(), "a released Held grows again");
        drop((a2, c, e, f));
        assert_eq!((one.used(), two.used(), b.used()), (0, 0, 0));
        assert!(one.hold().grow(usize::MAX).is_err(), "no overflow");
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn concurrent_takers_never_exceed_the_limit_or_a_share() {
        let b = InFlight::new(1000, 400);
        let peak = Arc::new(AtomicUsize::new(0));
        let share = b.share();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (b, peak, share) = (b.clone(), peak.clone(), share.clone());
                std::thread::spawn(move || {
                    for n in 0..20_000usize {
                        let bytes = 1 + (n * 7 + i) % 300;
                        // two threads share one connection, two take alone
                        let h = match i % 2 {
                            0 => b.take(bytes).ok(),
                            _ => {
                                let mut h = share.clone().hold();
                                h.grow(bytes).ok().map(|()| h)
                            }
                        };
                        if h.is_some() {
                            peak.fetch_max(b.used(), Ordering::Relaxed);
                            assert!(share.used() <= 400, "share {}", share.used());
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("taker thread");
        }
        assert!(peak.load(Ordering::Relaxed) <= 1000);
        assert_eq!((b.used(), share.used()), (0, 0));
    }

    #[test]
    fn refusals_are_counted_per_limit_transport_and_signal() {
        let b = InFlight::new(1, 1);
        let r = b.refuse(Transport::Http, SignalKind::LogRecords, Limit::Total);
        assert_eq!(r.retry_after, RETRY_AFTER);
        assert!(r.reason.contains("max_in_flight_bytes (1 bytes)"));
        let r = b.refuse(Transport::Grpc, SignalKind::Spans, Limit::Connection);
        assert_eq!(r.retry_after, RETRY_AFTER);
        assert!(r.reason.contains("this connection's"), "{}", r.reason);
        assert!(r
            .reason
            .contains("max_in_flight_bytes_per_connection (1 bytes)"));
        assert_eq!(b.refused[0][1][1].load(Ordering::Relaxed), 1);
        assert_eq!(b.refused[0][0][1].load(Ordering::Relaxed), 0);
        assert_eq!(b.refused[1][0][0].load(Ordering::Relaxed), 1);
        assert_eq!(b.refused[0][0][0].load(Ordering::Relaxed), 0);
    }
}
