//! Prometheus exposition: text format 0.0.4, and OpenMetrics 1.0 (with
//! exemplars on histogram buckets and `_created`) when the scraper asks.

use super::snapshot;
use super::store::{key_parts, Family, Kind, LabelNames, Series, Value};
use super::Store;
use std::fmt::Write as _;

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

    /// A snapshot family of counters and gauges (the self-metrics), as the
    /// store's are written; other points are not expected here.
    pub fn snapshot_family(&mut self, f: &snapshot::Family) {
        self.header(&f.name, f.kind.type_name(), &f.help, &f.unit);
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for s in &f.series {
            if let snapshot::Point::Value(v) = s.point {
                pairs.clear();
                pairs.extend(f.labels_of(s));
                self.sample(&f.name, "", &pairs, v);
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

/// Renders everything `/metrics` shows: the store's families, then `own`,
/// the sidecar's self-metrics.
pub fn render(store: &Store, own: &[snapshot::Family], om: bool) -> String {
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

    // The sidecar's own metrics, declared by the components that count them
    // (crate::telemetry::SelfMetrics::families).
    for f in own {
        e.snapshot_family(f);
    }
    e.finish()
}
