//! The previous text encoder, kept for tests only: the text writer
//! (`text.rs`) must produce the same bytes in both formats.

use crate::metrics::snapshot::{
    Classic, Exemplar, Family, Histogram, Kind, Point, Series, Snapshot,
};
use std::fmt::Write as _;

pub fn encode(s: &Snapshot, om: bool) -> String {
    let mut w = Writer {
        out: String::with_capacity(16 * 1024),
        om,
        le: String::new(),
    };
    for f in &s.families {
        w.family(f);
    }
    if om {
        w.out.push_str("# EOF\n");
    }
    w.out
}

struct Writer {
    out: String,
    om: bool,
    /// scratch for a bucket's `le` value
    le: String,
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

impl Writer {
    /// `# HELP`, `# TYPE` (and `# UNIT` in OpenMetrics) of a family.
    fn header(&mut self, f: &Family) {
        let base = self.base(f);
        let _ = write!(self.out, "# HELP {base} ");
        for c in f.help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                // OpenMetrics escapes quotes in HELP too; the text format does not
                '"' if self.om => self.out.push_str("\\\""),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {base} {}", f.kind.type_name());
        let unit = f.unit.as_str();
        let unit_ok = base
            .strip_suffix(unit)
            .is_some_and(|b| b.ends_with('_') && b.len() > 1);
        if self.om && !unit.is_empty() && unit_ok {
            let _ = writeln!(self.out, "# UNIT {base} {unit}");
        }
    }

    /// The metric name without a counter's `_total` (OpenMetrics' family name).
    fn base<'f>(&self, f: &'f Family) -> &'f str {
        if self.om && f.kind == Kind::Counter {
            f.name.strip_suffix("_total").unwrap_or(&f.name)
        } else {
            &f.name
        }
    }

    fn labels<'a>(
        &mut self,
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
        extra: Option<(&'a str, &'a str)>,
    ) {
        let mut first = true;
        for (k, v) in pairs.chain(extra) {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(&mut self.out, v);
            self.out.push('"');
        }
        if !first {
            self.out.push('}');
        }
    }

    /// `name suffix{labels} value`
    fn sample(&mut self, name: &str, suffix: &str, f: &Family, s: &Series, v: f64) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        self.labels(f.labels_of(s), None);
        self.out.push(' ');
        fmt_f64(&mut self.out, v);
        self.out.push('\n');
    }

    /// `name suffix{labels} n`, exact (an f64 would round past 2^53)
    fn count(&mut self, suffix: &str, f: &Family, s: &Series, n: u64) {
        self.out.push_str(&f.name);
        self.out.push_str(suffix);
        self.labels(f.labels_of(s), None);
        let _ = writeln!(self.out, " {n}");
    }

    fn created(&mut self, f: &Family, s: &Series) {
        if let (true, Some(ms)) = (self.om, s.created_ms) {
            let base = self.base(f);
            self.sample(base, "_created", f, s, ms as f64 / 1000.0);
        }
    }

    fn family(&mut self, f: &Family) {
        self.header(f);
        for s in &f.series {
            match &s.point {
                Point::Value(v) => {
                    self.sample(&f.name, "", f, s, *v);
                    if f.kind == Kind::Counter {
                        self.created(f, s);
                    }
                }
                Point::Histogram(h) => self.histogram(f, s, &f.histogram(*h)),
                Point::Summary(q) => {
                    let q = f.summary(*q);
                    for (quantile, v) in q.quantiles {
                        // written as the Prometheus clients do: 1 in text, 1.0 in OpenMetrics
                        let mut qs = String::new();
                        if self.om {
                            fmt_le(&mut qs, *quantile);
                        } else {
                            fmt_f64(&mut qs, *quantile);
                        }
                        self.out.push_str(&f.name);
                        self.labels(f.labels_of(s), Some(("quantile", &qs)));
                        self.out.push(' ');
                        fmt_f64(&mut self.out, *v);
                        self.out.push('\n');
                    }
                    self.sample(&f.name, "_sum", f, s, q.sum);
                    self.count("_count", f, s, q.count);
                    // no summary `_created` yet: the strict checker in tests/ knows
                    // it only for counters and histograms (OpenMetrics allows it)
                }
            }
        }
    }

    fn histogram(&mut self, f: &Family, s: &Series, h: &Histogram) {
        let mut negative = false;
        match &h.classic {
            Some(c) => {
                negative = c.bounds.first().is_some_and(|b| *b < 0.0);
                self.buckets(f, s, c);
            }
            None => {
                self.out.push_str(&f.name);
                self.out.push_str("_bucket");
                self.labels(f.labels_of(s), Some(("le", "+Inf")));
                let _ = writeln!(self.out, " {}", h.count);
            }
        }
        // OpenMetrics: no _sum (so no _count) with negative buckets; a
        // native-only histogram (only its +Inf bucket shown here) with a
        // negative sum had negative observations: the same case
        if !(self.om && (negative || h.sum < 0.0)) {
            self.sample(&f.name, "_sum", f, s, h.sum);
            self.count("_count", f, s, h.count);
        }
        self.created(f, s);
    }

    fn buckets(&mut self, f: &Family, s: &Series, c: &Classic) {
        let mut le = std::mem::take(&mut self.le);
        let mut cum = 0u64;
        for (i, n) in c.counts.iter().enumerate() {
            // ingest refuses counts that wrap; never panic here
            cum = cum.saturating_add(*n);
            le.clear();
            match c.bounds.get(i) {
                Some(b) => fmt_le(&mut le, *b),
                None => le.push_str("+Inf"),
            }
            self.out.push_str(&f.name);
            self.out.push_str("_bucket");
            self.labels(f.labels_of(s), Some(("le", &le)));
            let _ = write!(self.out, " {cum}");
            if self.om {
                if let Some(Some(e)) = c.exemplars.get(i) {
                    self.exemplar(e);
                }
            }
            self.out.push('\n');
        }
        self.le = le;
    }

    fn exemplar(&mut self, e: &Exemplar) {
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
        let _ = write!(self.out, " {:.3}", e.time_ns as f64 / 1e9);
    }
}
