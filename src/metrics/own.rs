//! The sidecar's own metrics as snapshot families, in the OpenTelemetry
//! Collector's names where it has them (`otelcol_*`), else
//! `geometra_sidecar_*` and the Prometheus `process_*` ones. One entry point,
//! [`families`]; the counters themselves live with the components that count
//! them (`ReceiverStats`, `ListenerStats`, `ExporterStats`, `ReloadStats`,
//! the store's families and budget).

use super::snapshot::{Family, Kind};
use super::{Derived, Store, LISTENER_NAMES, SIGNAL_ITEM_NAMES, TIMEOUT_PHASES};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

fn get(n: &AtomicU64) -> f64 {
    n.load(Ordering::Relaxed) as f64
}

/// All of the sidecar's own families, in exposition order. `derived` is the
/// rule set whose families were snapshot; `skipped` the derive stage's
/// (rule, reason, count) drops.
pub fn families(
    store: &Store,
    derived: &Derived,
    skipped: &[(&str, &'static str, u64)],
) -> Vec<Family> {
    let mut out = Vec::with_capacity(48);
    receivers(&mut out, store);
    connections(&mut out, store);
    reloads(&mut out, store);
    exporters(&mut out, store);
    series(&mut out, store, derived);
    skips(&mut out, store, derived, skipped);
    limits(&mut out, store);
    process(&mut out, store);
    out
}

fn receivers(out: &mut Vec<Family>, store: &Store) {
    for (item, i) in SIGNAL_ITEM_NAMES.iter().zip(0..) {
        for (what, help) in [
            ("accepted", "successfully pushed into the pipeline"),
            ("refused", "refused by the sidecar"),
        ] {
            let name = format!("otelcol_receiver_{what}_{item}_total");
            let mut f = Family::new(name, Kind::Counter, format!("Number of {item} {help}."));
            for (transport, st) in [("grpc", &store.grpc), ("http", &store.http)] {
                let v = if what == "accepted" {
                    &st.accepted[i]
                } else {
                    &st.refused[i]
                };
                f.value(&[("receiver", "otlp"), ("transport", transport)], get(v));
            }
            out.push(f);
        }
    }
    let mut f = Family::new(
        "geometra_sidecar_receiver_bad_requests_total",
        Kind::Counter,
        "Requests refused as a whole (malformed, too large) before their items could be counted.",
    );
    for (item, i) in SIGNAL_ITEM_NAMES.iter().zip(0..) {
        for (transport, st) in [("grpc", &store.grpc), ("http", &store.http)] {
            let v = get(&st.bad_requests[i]);
            f.value(&[("transport", transport), ("signal", item)], v);
        }
    }
    out.push(f);
}

/// The listeners' connection counters.
fn connections(out: &mut Vec<Family>, store: &Store) {
    let listeners = LISTENER_NAMES.iter().zip(store.listeners.iter());
    let mut f = Family::new(
        "geometra_sidecar_connections_refused_total",
        Kind::Counter,
        "Connections closed at accept: the listener's connection limit was reached.",
    );
    for (l, st) in listeners.clone() {
        f.value(&[("listener", l)], get(&st.refused));
    }
    out.push(f);
    let mut f = Family::new(
        "geometra_sidecar_connections_timed_out_total",
        Kind::Counter,
        "Connections cut by a timeout: headers, a whole request, or idle.",
    );
    for (l, st) in listeners.clone() {
        for (phase, n) in TIMEOUT_PHASES.iter().zip(st.timed_out.iter()) {
            f.value(&[("listener", l), ("phase", phase)], get(n));
        }
    }
    out.push(f);
    let mut f = Family::new(
        "geometra_sidecar_accept_errors_total",
        Kind::Counter,
        "accept() failures for lack of file descriptors; the listener backs off.",
    );
    for (l, st) in listeners {
        f.value(&[("listener", l)], get(&st.accept_errors));
    }
    out.push(f);
}

/// Config reload outcomes (counted by `crate::reload`).
fn reloads(out: &mut Vec<Family>, store: &Store) {
    let r = &store.reload;
    let mut f = Family::new(
        "geometra_sidecar_config_reloads_total",
        Kind::Counter,
        "Config reloads by result.",
    );
    f.value(&[("result", "success")], get(&r.success));
    f.value(&[("result", "failure")], get(&r.failure));
    out.push(f);
    let mut f = Family::new(
        "geometra_sidecar_config_last_reload_successful",
        Kind::Gauge,
        "1 if the last config reload was put in force (or none was tried), 0 if it was refused.",
    );
    let ok = r.last_ok.load(Ordering::Relaxed);
    f.value(&[], if ok { 1.0 } else { 0.0 });
    out.push(f);
}

/// The exporters' counters (none without exporters).
fn exporters(out: &mut Vec<Family>, store: &Store) {
    let exporters = store
        .exporters
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    if exporters.is_empty() {
        return;
    }
    for (what, help) in [
        ("sent", "successfully sent to destination"),
        ("send_failed", "in failed attempts to send to destination"),
        ("enqueue_failed", "failed to be added to the sending queue"),
    ] {
        for (item, i) in SIGNAL_ITEM_NAMES.iter().zip(0..) {
            let of: Vec<_> = exporters
                .iter()
                .filter(|x| x.signal as usize == i)
                .collect();
            if of.is_empty() {
                continue;
            }
            let name = format!("otelcol_exporter_{what}_{item}_total");
            let mut f = Family::new(name, Kind::Counter, format!("Number of {item} {help}."));
            for x in of {
                let v = match what {
                    "sent" => &x.sent,
                    "send_failed" => &x.send_failed,
                    _ => &x.enqueue_failed,
                };
                f.value(&[("exporter", &x.name)], get(v));
            }
            out.push(f);
        }
    }
    for (name, help) in [
        (
            "otelcol_exporter_queue_size",
            "Current size of the sending queue (items; bytes on disk with an on-disk queue).",
        ),
        (
            "otelcol_exporter_queue_capacity",
            "Fixed capacity of the sending queue (items; bytes with an on-disk queue).",
        ),
    ] {
        let mut f = Family::new(name, Kind::Gauge, help);
        for x in &exporters {
            let v = if name.ends_with("size") {
                &x.queue_size
            } else {
                &x.queue_capacity
            };
            f.value(&[("exporter", &x.name)], get(v));
        }
        out.push(f);
    }
    if let Some(rw) = store.remote_write.get() {
        rw.families(out);
    }
}

/// Live, overflowed and expired series per metric.
fn series(out: &mut Vec<Family>, store: &Store, derived: &Derived) {
    let mut f = Family::new(
        "geometra_sidecar_series",
        Kind::Gauge,
        "Live series per metric.",
    );
    for x in &derived.families {
        f.value(&[("metric", &x.name)], x.series_count() as f64);
    }
    for (name, n) in store.passthrough.series_counts() {
        f.value(&[("metric", &name)], n as f64);
    }
    out.push(f);
    let mut f = Family::new(
        "geometra_sidecar_series_overflow_total",
        Kind::Counter,
        "Points recorded in a metric's overflow series because it reached its series cap.",
    );
    for x in &derived.families {
        f.value(&[("metric", &x.name)], get(&x.overflowed));
    }
    for x in &derived.distinct {
        f.value(&[("metric", &x.name)], get(&x.overflowed));
    }
    for (name, n) in store.passthrough.overflow_counts() {
        f.value(&[("metric", &name)], n as f64);
    }
    out.push(f);
    let mut f = Family::new(
        "geometra_sidecar_series_expired_total",
        Kind::Counter,
        "Series dropped because they were not updated within store.series_ttl.",
    );
    for x in &derived.families {
        f.value(&[("metric", &x.name)], get(&x.expired));
    }
    out.push(f);
}

/// Items the rules skipped, and pass-through points dropped.
fn skips(
    out: &mut Vec<Family>,
    store: &Store,
    derived: &Derived,
    skipped: &[(&str, &'static str, u64)],
) {
    let mut f = Family::new(
        "geometra_sidecar_derive_skipped_total",
        Kind::Counter,
        "Items a rule skipped (missing label, bad value, label too long, invalid UTF-8).",
    );
    // one sample per (rule, reason): the rules' own and the families' UTF-8 refusals
    let mut by: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (rule, reason, n) in skipped {
        *by.entry((rule, reason)).or_default() += n;
    }
    for x in &derived.families {
        let n = x.invalid.load(Ordering::Relaxed);
        if n > 0 {
            *by.entry((&x.name, "invalid_utf8")).or_default() += n;
        }
    }
    for ((rule, reason), n) in by {
        f.value(&[("rule", rule), ("reason", reason)], n as f64);
    }
    out.push(f);
    let mut f = Family::new(
        "geometra_sidecar_passthrough_dropped_points_total",
        Kind::Counter,
        "Pass-through metric points dropped, by reason (see README).",
    );
    for (reason, n) in store.passthrough.dropped() {
        f.value(&[("reason", reason)], n as f64);
    }
    out.push(f);
}

/// Renames by the sanitiser and the global series budget.
fn limits(out: &mut Vec<Family>, store: &Store) {
    let mut f = Family::new(
        "geometra_sidecar_passthrough_renamed_total",
        Kind::Counter,
        "Pass-through metric names (per family) and label keys (per point) renamed beyond '.' to '_'.",
    );
    for (what, n) in store.passthrough.renamed() {
        f.value(&[("what", what)], n as f64);
    }
    out.push(f);
    let mut f = Family::new(
        "geometra_sidecar_series_global_overflow_total",
        Kind::Counter,
        "Points recorded in an overflow series because store.max_series or store.max_series_bytes was reached.",
    );
    f.value(&[], get(&store.budget.refused));
    out.push(f);
    let (series, bytes) = store.budget.used();
    let mut f = Family::new(
        "geometra_sidecar_store_series",
        Kind::Gauge,
        "Live series of all metrics (bounded by store.max_series).",
    );
    f.value(&[], series as f64);
    out.push(f);
    let mut f = Family::new(
        "geometra_sidecar_store_series_bytes",
        Kind::Gauge,
        "Estimated exposition bytes of all series (bounded by store.max_series_bytes).",
    );
    f.value(&[], bytes as f64);
    out.push(f);
}

fn proc_stats() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let rss_pages: f64 = f.get(21)?.parse().ok()?;
    Some((ticks / 100.0, rss_pages * 4096.0))
}

/// Build info and the Prometheus `process_*` metrics.
fn process(out: &mut Vec<Family>, store: &Store) {
    let mut f = Family::new(
        "geometra_sidecar_build_info",
        Kind::Gauge,
        "Build of the sidecar.",
    );
    f.value(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    out.push(f);
    let with_unit = |name: &str, kind, help: &str, unit: &str, v: f64| {
        let mut f = Family::new(name, kind, help);
        f.unit = unit.into();
        f.value(&[], v);
        f
    };
    if let Some((cpu, rss)) = proc_stats() {
        out.push(with_unit(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            "seconds",
            cpu,
        ));
        out.push(with_unit(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            "bytes",
            rss,
        ));
    }
    out.push(with_unit(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
        "seconds",
        store.started_s as f64,
    ));
}
