//! The receivers' own counters: items accepted and refused, requests
//! refused whole by reason (per transport), and each listener's connection
//! counters. Counted here, declared to [`SelfMetrics`] for `/metrics`.

use crate::base::{PerSignal, SignalKind};
use crate::telemetry::{kv, SelfMetrics};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a request was refused whole, in `ReceiverStats::bad_requests` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// an unsupported content type or encoding, or a body that does not
    /// decompress
    Encoding = 0,
    /// over the message or body limit, before or after decompression
    TooLarge = 1,
    /// protobuf or JSON that does not parse as the OTLP message
    Malformed = 2,
    /// parses, but breaks what OTLP requires (invalid UTF-8, id lengths...)
    Invalid = 3,
}
/// The `reason` label of each [`BadRequest`].
pub const BAD_REQUEST_REASONS: [&str; 4] = ["encoding", "too_large", "malformed", "invalid"];

/// Receiver-side counters of one transport.
#[derive(Default)]
pub struct ReceiverStats {
    pub accepted: PerSignal<AtomicU64>,
    pub refused: PerSignal<AtomicU64>,
    /// requests refused before their items could be counted, per signal and
    /// [`BadRequest`] reason
    pub bad_requests: PerSignal<[AtomicU64; 4]>,
}

impl ReceiverStats {
    pub fn accept(&self, s: SignalKind, n: u64) {
        self.accepted[s].fetch_add(n, Ordering::Relaxed);
    }
    pub fn refuse(&self, s: SignalKind, n: u64) {
        self.refused[s].fetch_add(n, Ordering::Relaxed);
    }
    pub fn bad_request(&self, s: SignalKind, why: BadRequest) {
        self.bad_requests[s][why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Every receiver's counters: the in-pod OTLP listeners (`receiver="otlp"`,
/// `transport="grpc"` and `"http"`) and the browser listener
/// (`receiver="browser"`, `transport="http"`), whose series are shown only
/// when it is on.
#[derive(Default)]
pub struct Transports {
    pub grpc: ReceiverStats,
    pub http: ReceiverStats,
    pub browser: ReceiverStats,
    /// the browser listener is on: its series are declared
    pub browser_on: bool,
}

impl Transports {
    fn each(&self) -> impl Iterator<Item = ((&'static str, &'static str), &ReceiverStats)> {
        let browser = self
            .browser_on
            .then_some((("browser", "http"), &self.browser));
        [
            (("otlp", "grpc"), &self.grpc),
            (("otlp", "http"), &self.http),
        ]
        .into_iter()
        .chain(browser)
    }

    /// The receivers' self-metrics, in the Collector's names.
    pub fn declare(t: &SelfMetrics, stats: &Arc<Transports>) {
        for sig in SignalKind::ALL {
            let item = sig.item_name();
            for (what, help) in [
                ("accepted", "successfully pushed into the pipeline"),
                ("refused", "refused by the sidecar"),
            ] {
                let s = stats.clone();
                let name = format!("otelcol_receiver_{what}_{item}_total");
                let help = format!("Number of {item} {help}.");
                t.counter(&name, &help, "", move |o| {
                    for ((receiver, transport), st) in s.each() {
                        let v = match what {
                            "accepted" => &st.accepted[sig],
                            _ => &st.refused[sig],
                        };
                        let at = [("receiver", receiver), ("transport", transport)];
                        o.observe(v.load(Ordering::Relaxed), &kv(at));
                    }
                });
            }
        }
        let s = stats.clone();
        t.counter(
            "geometra_sidecar_receiver_bad_requests_total",
            "Requests refused as a whole before their items could be counted, by reason: encoding, too_large, malformed, invalid.",
            "",
            move |o| {
                for sig in SignalKind::ALL {
                    for ((receiver, transport), st) in s.each() {
                        for (reason, n) in BAD_REQUEST_REASONS.iter().zip(&st.bad_requests[sig]) {
                            let at = [("receiver", receiver), ("transport", transport), ("signal", sig.item_name()), ("reason", *reason)];
                            o.observe(n.load(Ordering::Relaxed), &kv(at));
                        }
                    }
                }
            },
        );
    }
}

/// The phases a connection can time out in, in `ListenerStats::timed_out` order.
pub const TIMEOUT_PHASES: [&str; 3] = ["header", "request", "idle"];

/// Connection counters of one listener, counted by `listen.rs`.
#[derive(Default)]
pub struct ListenerStats {
    /// the `listener` label: `otlp_grpc`, `otlp_http`, `metrics`
    pub name: &'static str,
    /// connections closed at accept because the connection limit was reached
    pub refused: AtomicU64,
    /// connections cut by a timeout, by phase (see [`TIMEOUT_PHASES`])
    pub timed_out: [AtomicU64; 3],
    /// accept() failures for lack of file descriptors or memory
    pub accept_errors: AtomicU64,
    /// unix seconds of the last accept-failure warning (the log is rate-limited)
    pub last_warned_s: AtomicU64,
}

impl ListenerStats {
    pub fn new(name: &'static str) -> Arc<ListenerStats> {
        Arc::new(ListenerStats {
            name,
            ..Default::default()
        })
    }

    /// The listeners' connection counters, one series per listener given.
    pub fn declare(t: &SelfMetrics, listeners: &[Arc<ListenerStats>]) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let per_listener = |name: &str, help: &str, f: fn(&ListenerStats) -> &AtomicU64| {
            let all = listeners.to_vec();
            t.counter(name, help, "", move |o| {
                for st in &all {
                    o.observe(load(f(st)), &kv([("listener", st.name)]));
                }
            });
        };
        per_listener(
            "geometra_sidecar_connections_refused_total",
            "Connections closed at accept: the listener's connection limit was reached.",
            |s| &s.refused,
        );
        let all = listeners.to_vec();
        t.counter(
            "geometra_sidecar_connections_timed_out_total",
            "Connections cut by a timeout: headers, a whole request, or idle.",
            "",
            move |o| {
                for st in &all {
                    for (phase, n) in TIMEOUT_PHASES.iter().zip(st.timed_out.iter()) {
                        o.observe(load(n), &kv([("listener", st.name), ("phase", phase)]));
                    }
                }
            },
        );
        per_listener(
            "geometra_sidecar_accept_errors_total",
            "accept() failures for lack of file descriptors; the listener backs off.",
            |s| &s.accept_errors,
        );
    }
}
