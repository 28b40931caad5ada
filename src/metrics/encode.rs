//! Prometheus exposition: text format 0.0.4, and OpenMetrics 1.0 (with
//! exemplars on histogram buckets and `_created`) when the scraper asks.

use super::store::{key_parts, Family, Kind, LabelNames, Series, Value};
use super::{Store, LISTENER_NAMES, SIGNAL_ITEM_NAMES, TIMEOUT_PHASES};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an Accept header asks for OpenMetrics.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept
        .split(',')
        .any(|p| p.trim().starts_with("application/openmetrics-text"))
}

pub struct Encoder {
    out: String,
    om: bool,
}

fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn fmt_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// `le` values in the form Prometheus' own clients write them (`1.0`, `0.005`).
fn fmt_le(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}.0", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

impl Encoder {
    pub fn new(om: bool) -> Self {
        Encoder {
            out: String::with_capacity(16 * 1024),
            om,
        }
    }

    pub fn finish(mut self) -> String {
        if self.om {
            self.out.push_str("# EOF\n");
        }
        self.out
    }

    /// `# HELP`, `# TYPE` (and `# UNIT` in OpenMetrics) of a family.
    pub fn header(&mut self, name: &str, typ: &str, help: &str, unit: &str) {
        let base = if self.om && typ == "counter" {
            name.strip_suffix("_total").unwrap_or(name)
        } else {
            name
        };
        let _ = write!(self.out, "# HELP {base} ");
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                // OpenMetrics escapes quotes in HELP too; the text format does not
                '"' if self.om => self.out.push_str("\\\""),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {base} {typ}");
        let unit_ok = base
            .strip_suffix(unit)
            .is_some_and(|b| b.ends_with('_') && b.len() > 1);
        if self.om && !unit.is_empty() && unit_ok {
            let _ = writeln!(self.out, "# UNIT {base} {unit}");
        }
    }

    fn labels(&mut self, pairs: &[(&str, &str)], extra: Option<(&str, &str)>) {
        if pairs.is_empty() && extra.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in pairs.iter().copied().chain(extra) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, suffix: &str, pairs: &[(&str, &str)], v: f64) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        self.labels(pairs, None);
        self.out.push(' ');
        fmt_f64(&mut self.out, v);
        self.out.push('\n');
    }

    fn series(&mut self, fam: &Family, pairs: &[(&str, &str)], s: &Series) {
        match &s.value {
            Value::Scalar(v) => {
                self.sample(&fam.name, "", pairs, *v);
                if self.om && fam.kind == Kind::Counter {
                    let base = fam.name.strip_suffix("_total").unwrap_or(&fam.name);
                    self.sample(base, "_created", pairs, s.created_ms as f64 / 1000.0);
                }
            }
            Value::Hist(h) => {
                let fam_bounds: &[f64] = match &fam.kind {
                    Kind::Histogram(b) => b,
                    _ => &[],
                };
                let bounds = h.bounds.as_deref().unwrap_or(fam_bounds);
                let mut cum = 0u64;
                for (i, c) in h.counts.iter().enumerate() {
                    // ingest refuses counts that wrap; never panic here
                    cum = cum.saturating_add(*c);
                    let mut le = String::new();
                    match bounds.get(i) {
                        Some(b) => fmt_le(&mut le, *b),
                        None => le.push_str("+Inf"),
                    }
                    self.out.push_str(&fam.name);
                    self.out.push_str("_bucket");
                    self.labels(pairs, Some(("le", &le)));
                    self.out.push(' ');
                    let _ = write!(self.out, "{cum}");
                    if self.om {
                        if let Some(Some(e)) = h.exemplars.as_ref().and_then(|x| x.get(i)) {
                            self.out.push_str(" # {trace_id=\"");
                            for b in e.trace_id {
                                let _ = write!(self.out, "{b:02x}");
                            }
                            self.out.push_str("\",span_id=\"");
                            for b in e.span_id {
                                let _ = write!(self.out, "{b:02x}");
                            }
                            self.out.push_str("\"} ");
                            fmt_f64(&mut self.out, e.value);
                            let _ = write!(self.out, " {:.3}", e.time as f64 / 1e9);
                        }
                    }
                    self.out.push('\n');
                }
                // OpenMetrics: no _sum (so no _count) with negative buckets
                if !(self.om && bounds.first().is_some_and(|b| *b < 0.0)) {
                    self.sample(&fam.name, "_sum", pairs, h.sum);
                    // exact, like the buckets (an f64 would round past 2^53)
                    self.out.push_str(&fam.name);
                    self.out.push_str("_count");
                    self.labels(pairs, None);
                    let _ = writeln!(self.out, " {}", h.count);
                }
                if self.om {
                    self.sample(&fam.name, "_created", pairs, s.created_ms as f64 / 1000.0);
                }
            }
        }
    }

    /// A whole family, series sorted by their labels for stable output.
    pub fn family(&mut self, fam: &Family) {
        fam.with(|inner| {
            if inner.series.is_empty() && inner.overflow.is_none() {
                return;
            }
            self.header(&fam.name, fam.kind.type_name(), &fam.help, &fam.unit);
            let mut keys: Vec<&Box<[u8]>> = inner.series.keys().collect();
            keys.sort_unstable();
            let mut pairs: Vec<(&str, &str)> = Vec::new();
            for k in keys {
                pairs.clear();
                match &fam.labels {
                    LabelNames::Fixed(names) => {
                        pairs.extend(names.iter().map(String::as_str).zip(key_parts(k)));
                    }
                    LabelNames::InKey => {
                        let mut it = key_parts(k);
                        while let (Some(n), Some(v)) = (it.next(), it.next()) {
                            pairs.push((n, v));
                        }
                    }
                }
                if let Some(s) = inner.series.get(k) {
                    self.series(fam, &pairs, s);
                }
            }
            if let Some(s) = &inner.overflow {
                self.series(fam, &[("otel_metric_overflow", "true")], s);
            }
        });
    }
}

/// Renames by the sanitiser and the global series budget.
fn render_limits(e: &mut Encoder, store: &Store) {
    let name = "geometra_sidecar_passthrough_renamed_total";
    e.header(
        name,
        "counter",
        "Pass-through metric names (per family) and label keys (per point) renamed beyond '.' to '_'.",
        "",
    );
    for (what, n) in store.passthrough.renamed() {
        e.sample(name, "", &[("what", what)], n as f64);
    }
    let name = "geometra_sidecar_series_global_overflow_total";
    e.header(
        name,
        "counter",
        "Points recorded in an overflow series because store.max_series or store.max_series_bytes was reached.",
        "",
    );
    e.sample(
        name,
        "",
        &[],
        store.budget.refused.load(Ordering::Relaxed) as f64,
    );
    let (series, bytes) = store.budget.used();
    e.header(
        "geometra_sidecar_store_series",
        "gauge",
        "Live series of all metrics (bounded by store.max_series).",
        "",
    );
    e.sample("geometra_sidecar_store_series", "", &[], series as f64);
    e.header(
        "geometra_sidecar_store_series_bytes",
        "gauge",
        "Estimated exposition bytes of all series (bounded by store.max_series_bytes).",
        "",
    );
    e.sample("geometra_sidecar_store_series_bytes", "", &[], bytes as f64);
}

fn proc_stats() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let rss_pages: f64 = f.get(21)?.parse().ok()?;
    Some((ticks / 100.0, rss_pages * 4096.0))
}

/// Renders everything `/metrics` shows. `skipped` are the derive stage's
/// (rule, reason, count) drops.
pub fn render(store: &Store, skipped: &[(&str, &'static str, u64)], om: bool) -> String {
    let mut e = Encoder::new(om);
    let now = super::now_secs();
    let derived = store.derived();
    for f in &derived.families {
        e.family(f);
    }
    for d in &derived.distinct {
        e.header(&d.name, "gauge", &d.help, "");
        e.sample(&d.name, "", &[], d.count(now) as f64);
    }
    store.passthrough.render(&mut e, now);

    // The sidecar's own metrics.
    for (item, i) in SIGNAL_ITEM_NAMES.iter().zip(0..) {
        for (what, help) in [
            ("accepted", "successfully pushed into the pipeline"),
            ("refused", "refused by the sidecar"),
        ] {
            let name = format!("otelcol_receiver_{what}_{item}_total");
            e.header(&name, "counter", &format!("Number of {item} {help}."), "");
            for (transport, st) in [("grpc", &store.grpc), ("http", &store.http)] {
                let v = if what == "accepted" {
                    &st.accepted[i]
                } else {
                    &st.refused[i]
                };
                e.sample(
                    &name,
                    "",
                    &[("receiver", "otlp"), ("transport", transport)],
                    v.load(Ordering::Relaxed) as f64,
                );
            }
        }
    }
    e.header(
        "geometra_sidecar_receiver_bad_requests_total",
        "counter",
        "Requests refused as a whole (malformed, too large) before their items could be counted.",
        "",
    );
    for (item, i) in SIGNAL_ITEM_NAMES.iter().zip(0..) {
        for (transport, st) in [("grpc", &store.grpc), ("http", &store.http)] {
            e.sample(
                "geometra_sidecar_receiver_bad_requests_total",
                "",
                &[("transport", transport), ("signal", item)],
                st.bad_requests[i].load(Ordering::Relaxed) as f64,
            );
        }
    }
    connections(&mut e, store);
    store.reload.render(&mut e);
    let exporters = store
        .exporters
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    if !exporters.is_empty() {
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
                e.header(&name, "counter", &format!("Number of {item} {help}."), "");
                for x in of {
                    let v = match what {
                        "sent" => &x.sent,
                        "send_failed" => &x.send_failed,
                        _ => &x.enqueue_failed,
                    };
                    e.sample(
                        &name,
                        "",
                        &[("exporter", &x.name)],
                        v.load(Ordering::Relaxed) as f64,
                    );
                }
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
            e.header(name, "gauge", help, "");
            for x in &exporters {
                let v = if name.ends_with("size") {
                    &x.queue_size
                } else {
                    &x.queue_capacity
                };
                e.sample(
                    name,
                    "",
                    &[("exporter", &x.name)],
                    v.load(Ordering::Relaxed) as f64,
                );
            }
        }
    }
    if let Some(rw) = store.remote_write.get() {
        rw.render(&mut e);
    }
    e.header(
        "geometra_sidecar_series",
        "gauge",
        "Live series per metric.",
        "",
    );
    for f in &derived.families {
        e.sample(
            "geometra_sidecar_series",
            "",
            &[("metric", &f.name)],
            f.series_count() as f64,
        );
    }
    for (name, n) in store.passthrough.series_counts() {
        e.sample(
            "geometra_sidecar_series",
            "",
            &[("metric", &name)],
            n as f64,
        );
    }
    e.header(
        "geometra_sidecar_series_overflow_total",
        "counter",
        "Points recorded in a metric's overflow series because it reached its series cap.",
        "",
    );
    for f in &derived.families {
        e.sample(
            "geometra_sidecar_series_overflow_total",
            "",
            &[("metric", &f.name)],
            f.overflowed.load(Ordering::Relaxed) as f64,
        );
    }
    for d in &derived.distinct {
        e.sample(
            "geometra_sidecar_series_overflow_total",
            "",
            &[("metric", &d.name)],
            d.overflowed.load(Ordering::Relaxed) as f64,
        );
    }
    for (name, n) in store.passthrough.overflow_counts() {
        e.sample(
            "geometra_sidecar_series_overflow_total",
            "",
            &[("metric", &name)],
            n as f64,
        );
    }
    e.header(
        "geometra_sidecar_series_expired_total",
        "counter",
        "Series dropped because they were not updated within store.series_ttl.",
        "",
    );
    for f in &derived.families {
        e.sample(
            "geometra_sidecar_series_expired_total",
            "",
            &[("metric", &f.name)],
            f.expired.load(Ordering::Relaxed) as f64,
        );
    }
    e.header(
        "geometra_sidecar_derive_skipped_total",
        "counter",
        "Items a rule skipped (missing label, bad value, label too long, invalid UTF-8).",
        "",
    );
    // one sample per (rule, reason): the rules' own and the families' UTF-8 refusals
    let mut skips: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for (rule, reason, n) in skipped {
        *skips.entry((rule, reason)).or_default() += n;
    }
    for f in &derived.families {
        let n = f.invalid.load(Ordering::Relaxed);
        if n > 0 {
            *skips.entry((&f.name, "invalid_utf8")).or_default() += n;
        }
    }
    for ((rule, reason), n) in skips {
        e.sample(
            "geometra_sidecar_derive_skipped_total",
            "",
            &[("rule", rule), ("reason", reason)],
            n as f64,
        );
    }
    let dropped = store.passthrough.dropped();
    e.header(
        "geometra_sidecar_passthrough_dropped_points_total",
        "counter",
        "Pass-through metric points dropped, by reason (see README).",
        "",
    );
    for (reason, n) in dropped {
        e.sample(
            "geometra_sidecar_passthrough_dropped_points_total",
            "",
            &[("reason", reason)],
            n as f64,
        );
    }
    render_limits(&mut e, store);
    e.header(
        "geometra_sidecar_build_info",
        "gauge",
        "Build of the sidecar.",
        "",
    );
    e.sample(
        "geometra_sidecar_build_info",
        "",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    if let Some((cpu, rss)) = proc_stats() {
        e.header(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            "seconds",
        );
        e.sample("process_cpu_seconds_total", "", &[], cpu);
        e.header(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            "bytes",
        );
        e.sample("process_resident_memory_bytes", "", &[], rss);
    }
    e.header(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        "seconds",
    );
    e.sample(
        "process_start_time_seconds",
        "",
        &[],
        store.started_s as f64,
    );
    e.finish()
}

/// The listeners' connection counters.
fn connections(e: &mut Encoder, store: &Store) {
    let listeners = LISTENER_NAMES.iter().zip(store.listeners.iter());
    let name = "geometra_sidecar_connections_refused_total";
    e.header(
        name,
        "counter",
        "Connections closed at accept: the listener's connection limit was reached.",
        "",
    );
    for (l, st) in listeners.clone() {
        e.sample(
            name,
            "",
            &[("listener", l)],
            st.refused.load(Ordering::Relaxed) as f64,
        );
    }
    let name = "geometra_sidecar_connections_timed_out_total";
    e.header(
        name,
        "counter",
        "Connections cut by a timeout: headers, a whole request, or idle.",
        "",
    );
    for (l, st) in listeners.clone() {
        for (phase, n) in TIMEOUT_PHASES.iter().zip(st.timed_out.iter()) {
            let v = n.load(Ordering::Relaxed) as f64;
            e.sample(name, "", &[("listener", l), ("phase", phase)], v);
        }
    }
    let name = "geometra_sidecar_accept_errors_total";
    e.header(
        name,
        "counter",
        "accept() failures for lack of file descriptors; the listener backs off.",
        "",
    );
    for (l, st) in listeners {
        e.sample(
            name,
            "",
            &[("listener", l)],
            st.accept_errors.load(Ordering::Relaxed) as f64,
        );
    }
}
