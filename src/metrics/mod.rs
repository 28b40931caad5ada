//! The metric store (derived, distinct-count and pass-through families), the
//! sidecar's own counters, and their Prometheus encoding.

pub mod encode;
pub mod native;
pub mod passthrough;
pub mod sanitize;
pub mod series_map;
pub mod snapshot;
pub mod store;

use crate::telemetry::SelfMetrics;
use opentelemetry::KeyValue;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use store::{Budget, Family};

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// [`Distinct`]'s set: keyed 64-bit hashes (`foldhash::quality` with a
/// random seed) and when each was last seen, in an open-addressing table at
/// most half full. The hashes are used as they are (no second hash), and a
/// hit is usually one probe. 0 marks an empty bucket, so a hash of 0 counts
/// as 1 (two ids merge with odds of 2^-63).
#[derive(Default)]
struct Seen {
    /// (hash, unix seconds); a power of two long, or empty
    buckets: Vec<(u64, u64)>,
    len: usize,
}

impl Seen {
    /// Marks `h` seen at `now`; false when it is new and `cap` is reached.
    #[inline]
    fn insert(&mut self, h: u64, now: u64, cap: usize) -> bool {
        let h = h.max(1);
        if self.buckets.is_empty() {
            self.rebuild(16);
        }
        let mask = self.buckets.len() - 1;
        let mut at = h as usize & mask;
        loop {
            let Some(b) = self.buckets.get_mut(at) else {
                return false;
            };
            if b.0 == h {
                b.1 = now;
                return true;
            }
            if b.0 == 0 {
                if self.len >= cap {
                    return false;
                }
                *b = (h, now);
                self.len += 1;
                if self.len * 2 > self.buckets.len() {
                    self.rebuild(self.buckets.len() * 2);
                }
                return true;
            }
            at = (at + 1) & mask;
        }
    }

    /// Keeps the hashes seen after `cutoff` (the table shrinks with them).
    fn retain_after(&mut self, cutoff: u64) {
        let before = self.len;
        for b in &mut self.buckets {
            if b.0 != 0 && b.1 <= cutoff {
                *b = (0, 0);
                self.len -= 1;
            }
        }
        if self.len != before {
            self.rebuild((self.len * 2 + 1).next_power_of_two().max(16));
        }
    }

    /// Re-places the live hashes (with their times) into `n` buckets.
    fn rebuild(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.buckets, vec![(0, 0); n]);
        let mask = n - 1;
        for (h, t) in old.into_iter().filter(|b| b.0 != 0) {
            let mut at = h as usize & mask;
            while self.buckets[at].0 != 0 {
                at = (at + 1) & mask;
            }
            self.buckets[at] = (h, t);
        }
    }
}

#[cfg(test)]
mod seen_tests {
    use super::Seen;

    #[test]
    fn counts_distinct_hashes_within_cap_and_window() {
        let mut s = Seen::default();
        let id = |h: u64| h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for h in 0..600u64 {
            assert!(s.insert(id(h), h, 600));
        }
        assert_eq!(s.len, 600);
        assert!(
            s.insert(id(0), 2000, 600),
            "a known hash is refreshed at the cap"
        );
        assert!(!s.insert(12345, 2000, 600));
        s.retain_after(499);
        assert_eq!(s.len, 101);
        for h in 500..600u64 {
            assert!(s.insert(id(h), 3000, 101));
        }
        assert_eq!(s.len, 101);
        s.retain_after(2999);
        assert_eq!(s.len, 100);
    }
}

/// A gauge of distinct values (e.g. user ids) seen within a sliding window.
/// Only keyed 64-bit hashes are kept, never the values.
pub struct Distinct {
    pub name: String,
    pub help: String,
    /// `store.active_users_window` and `store.max_active_users` (a reload may change them)
    window_s: AtomicU64,
    cap: AtomicUsize,
    pub hasher: foldhash::quality::RandomState,
    seen: Mutex<Seen>,
    /// values not tracked because the set was full
    pub overflowed: AtomicU64,
}

impl Distinct {
    pub fn new(name: &str, help: &str, window_s: u64, cap: usize) -> Self {
        Distinct {
            name: name.into(),
            help: help.into(),
            window_s: AtomicU64::new(window_s),
            cap: AtomicUsize::new(cap),
            hasher: Default::default(),
            seen: Mutex::new(Seen::default()),
            overflowed: AtomicU64::new(0),
        }
    }

    pub fn insert(&self, hashes: &[u64], now_s: u64) {
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let cap = self.cap.load(Ordering::Relaxed);
        for h in hashes {
            if !m.insert(*h, now_s, cap) {
                self.overflowed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A new window and cap (a config reload).
    pub fn set_limits(&self, window_s: u64, cap: usize) {
        self.window_s.store(window_s, Ordering::Relaxed);
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Distinct values seen within the window (older ones are forgotten).
    pub fn count(&self, now_s: u64) -> usize {
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let cutoff = now_s.saturating_sub(self.window_s.load(Ordering::Relaxed));
        m.retain_after(cutoff);
        m.len
    }
}

/// Receiver-side counters of one transport.
#[derive(Default)]
pub struct ReceiverStats {
    pub accepted: [AtomicU64; 3],
    pub refused: [AtomicU64; 3],
    /// requests refused before their items could be counted, per signal and
    /// [`BadRequest`] reason
    pub bad_requests: [[AtomicU64; 4]; 3],
}

/// Connection counters of one listener, counted by `receiver/listen.rs`.
#[derive(Default)]
pub struct ListenerStats {
    /// connections closed at accept because the connection limit was reached
    pub refused: AtomicU64,
    /// connections cut by a timeout, by phase (see [`TIMEOUT_PHASES`])
    pub timed_out: [AtomicU64; 3],
    /// accept() failures for lack of file descriptors or memory
    pub accept_errors: AtomicU64,
    /// unix seconds of the last accept-failure warning (the log is rate-limited)
    pub last_warned_s: AtomicU64,
}

/// The phases a connection can time out in, in `ListenerStats::timed_out` order.
pub const TIMEOUT_PHASES: [&str; 3] = ["header", "request", "idle"];
/// The listeners, in `Store::listeners` order.
pub const LISTENER_NAMES: [&str; 3] = ["otlp_grpc", "otlp_http", "metrics"];

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

/// The signals, in the order of the arrays above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalKind {
    Spans = 0,
    LogRecords = 1,
    MetricPoints = 2,
}
pub const SIGNAL_ITEM_NAMES: [&str; 3] = ["spans", "log_records", "metric_points"];

impl ReceiverStats {
    pub fn accept(&self, s: SignalKind, n: u64) {
        self.accepted[s as usize].fetch_add(n, Ordering::Relaxed);
    }
    pub fn refuse(&self, s: SignalKind, n: u64) {
        self.refused[s as usize].fetch_add(n, Ordering::Relaxed);
    }
    pub fn bad_request(&self, s: SignalKind, why: BadRequest) {
        self.bad_requests[s as usize][why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// An exporter's counters, in the OpenTelemetry Collector's names.
pub struct ExporterStats {
    /// e.g. `otlp/logs`
    pub name: String,
    pub signal: SignalKind,
    pub sent: AtomicU64,
    pub send_failed: AtomicU64,
    pub enqueue_failed: AtomicU64,
    pub queue_size: AtomicU64,
    pub queue_capacity: AtomicU64,
}

impl ExporterStats {
    pub fn new(name: &str, signal: SignalKind, capacity: u64) -> Self {
        ExporterStats {
            name: name.into(),
            signal,
            sent: AtomicU64::new(0),
            send_failed: AtomicU64::new(0),
            enqueue_failed: AtomicU64::new(0),
            queue_size: AtomicU64::new(0),
            queue_capacity: AtomicU64::new(capacity),
        }
    }
}

/// The derived families and distinct-count gauges of the rules in force;
/// a config reload replaces the whole set (reusing unchanged families).
#[derive(Default)]
pub struct Derived {
    pub families: Vec<Arc<Family>>,
    pub distinct: Vec<Arc<Distinct>>,
}

/// Everything `/metrics` shows.
pub struct Store {
    /// `store.*` limits; atomics so that a config reload can change them
    cap: AtomicUsize,
    ttl_s: AtomicU64,
    /// what the rules derive; read by scrapes and expiry, replaced on reload
    /// (the hot path writes through the deriver's own copy)
    derived: Mutex<Arc<Derived>>,
    window_s: AtomicU64,
    max_distinct: AtomicUsize,
    pub passthrough: passthrough::Passthrough,
    /// the global series bound, shared by every family
    pub budget: Arc<Budget>,
    pub grpc: ReceiverStats,
    pub http: ReceiverStats,
    /// per listener, in [`LISTENER_NAMES`] order
    pub listeners: [Arc<ListenerStats>; 3],
    pub exporters: Mutex<Vec<Arc<ExporterStats>>>,
    pub started_s: u64,
    /// config reload outcomes (counted by `crate::reload`)
    pub reload: Arc<crate::reload::ReloadStats>,
}

impl Store {
    pub fn new(cfg: &crate::config::Config) -> Self {
        let budget = Arc::new(Budget::new(
            cfg.store.max_series,
            cfg.store.max_series_bytes,
        ));
        Store {
            cap: AtomicUsize::new(cfg.store.max_series_per_metric),
            ttl_s: AtomicU64::new(cfg.store.series_ttl.0.as_secs().max(1)),
            derived: Mutex::new(Arc::new(Derived::default())),
            window_s: AtomicU64::new(cfg.store.active_users_window.0.as_secs().max(1)),
            max_distinct: AtomicUsize::new(cfg.store.max_active_users),
            passthrough: passthrough::Passthrough::new(
                &cfg.passthrough,
                &cfg.store,
                budget.clone(),
            ),
            budget,
            grpc: ReceiverStats::default(),
            http: ReceiverStats::default(),
            listeners: Default::default(),
            exporters: Mutex::new(Vec::new()),
            started_s: now_secs(),
            reload: Arc::new(crate::reload::ReloadStats::default()),
        }
    }

    /// The derived families and gauges in force.
    pub fn derived(&self) -> Arc<Derived> {
        self.derived
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a rule set's families and gauges in force (start-up, reload).
    pub fn set_derived(&self, d: Arc<Derived>) {
        *self.derived.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }

    /// A new distinct-count gauge with the store's window and cap.
    pub fn new_distinct(&self, name: &str, help: &str) -> Distinct {
        Distinct::new(
            name,
            help,
            self.window_s.load(Ordering::Relaxed),
            self.max_distinct.load(Ordering::Relaxed),
        )
    }

    /// `store.max_series_per_metric`, for a new family.
    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }

    /// `store.series_ttl` in seconds.
    pub fn ttl_s(&self) -> u64 {
        self.ttl_s.load(Ordering::Relaxed)
    }

    /// Puts new `store.*` limits in force (a config reload): for new series
    /// and families, and for those that exist; what exceeds a lowered bound
    /// stays until it expires.
    pub fn set_limits(&self, s: &crate::config::Store) {
        let window = s.active_users_window.0.as_secs().max(1);
        self.cap.store(s.max_series_per_metric, Ordering::Relaxed);
        self.ttl_s
            .store(s.series_ttl.0.as_secs().max(1), Ordering::Relaxed);
        self.window_s.store(window, Ordering::Relaxed);
        self.max_distinct
            .store(s.max_active_users, Ordering::Relaxed);
        self.budget.set_limits(s.max_series, s.max_series_bytes);
        self.passthrough.set_limits(s);
        let d = self.derived();
        for f in &d.families {
            f.set_cap(s.max_series_per_metric);
        }
        for x in &d.distinct {
            x.set_limits(window, s.max_active_users);
        }
    }

    pub fn add_exporter(&self, e: Arc<ExporterStats>) {
        self.exporters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    /// Drops series not updated within the TTL; returns how many.
    pub fn expire(&self, now_s: u64) -> usize {
        let cutoff = now_s.saturating_sub(self.ttl_s());
        let mut n = 0;
        for f in &self.derived().families {
            n += f.expire(cutoff);
        }
        n + self.passthrough.expire(cutoff)
    }
}

/// Static attribute pairs (no allocation).
fn kv<const N: usize>(pairs: [(&'static str, &'static str); N]) -> [KeyValue; N] {
    crate::telemetry::kv(pairs)
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl ReceiverStats {
    /// The receivers' self-metrics, in the Collector's names.
    pub fn declare(t: &SelfMetrics, store: &Arc<Store>) {
        for (item, i) in SIGNAL_ITEM_NAMES.iter().zip(0..) {
            for (what, help) in [
                ("accepted", "successfully pushed into the pipeline"),
                ("refused", "refused by the sidecar"),
            ] {
                let s = store.clone();
                let name = format!("otelcol_receiver_{what}_{item}_total");
                let help = format!("Number of {item} {help}.");
                t.counter(&name, &help, "", move |o| {
                    for (transport, st) in [("grpc", &s.grpc), ("http", &s.http)] {
                        let v = if what == "accepted" {
                            &st.accepted[i]
                        } else {
                            &st.refused[i]
                        };
                        o.observe(
                            load(v),
                            &kv([("receiver", "otlp"), ("transport", transport)]),
                        );
                    }
                });
            }
        }
        let s = store.clone();
        t.counter(
            "geometra_sidecar_receiver_bad_requests_total",
            "Requests refused as a whole before their items could be counted, by reason: encoding, too_large, malformed, invalid.",
            "",
            move |o| {
                for (item, i) in SIGNAL_ITEM_NAMES.iter().zip(0..) {
                    for (transport, st) in [("grpc", &s.grpc), ("http", &s.http)] {
                        for (reason, r) in BAD_REQUEST_REASONS.iter().zip(0..) {
                            let v = load(&st.bad_requests[i][r]);
                            let at = [("transport", transport), ("signal", *item), ("reason", *reason)];
                            o.observe(v, &kv(at));
                        }
                    }
                }
            },
        );
    }
}

impl ListenerStats {
    /// The listeners' connection counters.
    pub fn declare(t: &SelfMetrics, store: &Arc<Store>) {
        let per_listener = |name: &str, help: &str, f: fn(&ListenerStats) -> &AtomicU64| {
            let s = store.clone();
            t.counter(name, help, "", move |o| {
                for (l, st) in LISTENER_NAMES.iter().zip(s.listeners.iter()) {
                    o.observe(load(f(st)), &kv([("listener", l)]));
                }
            });
        };
        per_listener(
            "geometra_sidecar_connections_refused_total",
            "Connections closed at accept: the listener's connection limit was reached.",
            |s| &s.refused,
        );
        let s = store.clone();
        t.counter(
            "geometra_sidecar_connections_timed_out_total",
            "Connections cut by a timeout: headers, a whole request, or idle.",
            "",
            move |o| {
                for (l, st) in LISTENER_NAMES.iter().zip(s.listeners.iter()) {
                    for (phase, n) in TIMEOUT_PHASES.iter().zip(st.timed_out.iter()) {
                        o.observe(load(n), &kv([("listener", l), ("phase", phase)]));
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

impl ExporterStats {
    /// The exporters' self-metrics in the Collector's names, for the
    /// signals that have an exporter (call after they are built).
    pub fn declare(t: &SelfMetrics, store: &Arc<Store>) {
        let exporters = store
            .exporters
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        if exporters.is_empty() {
            return;
        }
        type Field = fn(&ExporterStats) -> &AtomicU64;
        let counters: [(&str, &str, Field); 3] = [
            ("sent", "successfully sent to destination", |x| &x.sent),
            (
                "send_failed",
                "in failed attempts to send to destination",
                |x| &x.send_failed,
            ),
            (
                "enqueue_failed",
                "failed to be added to the sending queue",
                |x| &x.enqueue_failed,
            ),
        ];
        for (what, help, field) in counters {
            for (item, i) in SIGNAL_ITEM_NAMES.iter().zip(0..) {
                let of: Vec<Arc<ExporterStats>> = exporters
                    .iter()
                    .filter(|x| x.signal as usize == i)
                    .cloned()
                    .collect();
                if of.is_empty() {
                    continue;
                }
                let name = format!("otelcol_exporter_{what}_{item}_total");
                let help = format!("Number of {item} {help}.");
                t.counter(&name, &help, "", move |o| {
                    for x in &of {
                        o.observe(load(field(x)), &[KeyValue::new("exporter", x.name.clone())]);
                    }
                });
            }
        }
        let gauges: [(&str, &str, Field); 2] = [
            (
                "otelcol_exporter_queue_size",
                "Current size of the sending queue (items; bytes on disk with an on-disk queue).",
                |x| &x.queue_size,
            ),
            (
                "otelcol_exporter_queue_capacity",
                "Capacity of the sending queue (items; bytes with an on-disk queue); a config reload may change it.",
                |x| &x.queue_capacity,
            ),
        ];
        for (name, help, field) in gauges {
            let all = exporters.clone();
            t.gauge(name, help, "", move |o| {
                for x in &all {
                    let v = load(field(x)) as f64;
                    o.observe(v, &[KeyValue::new("exporter", x.name.clone())]);
                }
            });
        }
    }
}

impl Store {
    /// The store's own metrics: series per metric, overflow and expiry,
    /// and the global series budget.
    pub fn declare(t: &SelfMetrics, store: &Arc<Store>) {
        let metric = |name: &str| [KeyValue::new("metric", name.to_string())];
        let s = store.clone();
        t.gauge(
            "geometra_sidecar_series",
            "Live series per metric.",
            "",
            move |o| {
                for f in &s.derived().families {
                    o.observe(f.series_count() as f64, &metric(&f.name));
                }
                for (name, n) in s.passthrough.series_counts() {
                    o.observe(n as f64, &metric(&name));
                }
            },
        );
        let s = store.clone();
        t.counter(
            "geometra_sidecar_series_overflow_total",
            "Points recorded in a metric's overflow series because it reached its series cap.",
            "",
            move |o| {
                let d = s.derived();
                for f in &d.families {
                    o.observe(load(&f.overflowed), &metric(&f.name));
                }
                for x in &d.distinct {
                    o.observe(load(&x.overflowed), &metric(&x.name));
                }
                for (name, n) in s.passthrough.overflow_counts() {
                    o.observe(n, &metric(&name));
                }
            },
        );
        let s = store.clone();
        t.counter(
            "geometra_sidecar_series_expired_total",
            "Series dropped because they were not updated within store.series_ttl.",
            "",
            move |o| {
                for f in &s.derived().families {
                    o.observe(load(&f.expired), &metric(&f.name));
                }
            },
        );
        Budget::declare(t, &store.budget);
    }
}
