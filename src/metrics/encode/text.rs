//! Text exposition 0.0.4 and OpenMetrics 1.0 of a snapshot: exemplars on
//! histogram buckets, `_created`, `# UNIT` and `# EOF` in OpenMetrics only.
//!
//! What the text formats cannot carry: a native (exponential) histogram has
//! no text form, so a histogram with only `native` buckets renders as
//! client_golang's text encoder does: a lone `+Inf` bucket (its count; both
//! formats require that bucket), `_sum` and `_count` (and `_created` in
//! OpenMetrics). With `classic` buckets too, the classic buckets are
//! written. Summaries are quantile lines plus `_sum` and `_count`.
//!
//! Written in as few pieces as a line allows (the same bytes as
//! `text_reference.rs`, tested): a series' `{labels}` is rendered once, and
//! for a histogram its bucket lines' common start (`name_bucket{labels,le="`)
//! too; a family's `le` values are rendered once per distinct set of bounds,
//! each with the `"} ` that follows it. A bucket line is then three copies
//! and an integer.

use crate::metrics::snapshot::{
    Classic, Exemplar, Family, Histogram, Kind, Point, Series, Snapshot,
};
use std::fmt::Write as _;
use std::sync::Arc;

pub fn encode(s: &Snapshot, om: bool) -> String {
    let mut whole = String::new();
    chunks(s, om, usize::MAX, &mut |c| {
        whole = c;
        true
    });
    whole
}

/// Renders a snapshot and hands the text to `send` in pieces: a piece ends
/// at the end of the first series (or family header) that takes it to
/// `chunk` bytes or more, the last piece at the end. Stops as soon as `send`
/// returns false, returning false. The pieces together are [`encode`]'s text.
pub fn chunks(s: &Snapshot, om: bool, chunk: usize, send: &mut dyn FnMut(String) -> bool) -> bool {
    let mut w = Writer {
        out: String::with_capacity(piece_capacity(chunk)),
        om,
        chunk,
        send,
        labels: String::new(),
        bucket: String::new(),
        les: String::new(),
        le_ends: Vec::new(),
        le_of: None,
        quantile: String::new(),
    };
    for f in &s.families {
        if !w.family(f) {
            return false;
        }
    }
    if om {
        w.out.push_str("# EOF\n");
    }
    (w.send)(w.out)
}

/// A piece's buffer: room for `chunk` bytes and the series that crosses it.
fn piece_capacity(chunk: usize) -> usize {
    if chunk == usize::MAX {
        16 * 1024
    } else {
        chunk + chunk / 4
    }
}

/// The `le` of the +Inf bucket and what follows it on the line.
const INF_LE: &str = "+Inf\"} ";

/// The text of a scrape, and what it reuses from line to line.
struct Writer<'a> {
    /// the current piece
    out: String,
    om: bool,
    /// a piece's size: handed to `send` once it reaches this
    chunk: usize,
    send: &'a mut dyn FnMut(String) -> bool,
    /// the current series' label pairs, escaped, in braces (empty without
    /// labels): rendered once per series, copied onto each of its lines
    labels: String,
    /// the start of the current histogram series' bucket lines, up to the
    /// `le` value: `name_bucket{labels,le="`
    bucket: String,
    /// the `le` values of `le_of`'s bounds, each followed by `"} `, back to
    /// back, and where each ends
    les: String,
    le_ends: Vec<usize>,
    /// the bounds `les` holds (a family's series mostly share theirs)
    le_of: Option<Arc<[f64]>>,
    /// a summary line's `quantile` value
    quantile: String,
}

fn escape_into(out: &mut String, v: &str) {
    if memchr::memchr3(b'\\', b'"', b'\n', v.as_bytes()).is_none() {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

fn fmt_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        push_int(out, v as i64);
    } else {
        let m = (v * 1000.0).round();
        if m.abs() < MS_EXACT as f64 && m / 1000.0 == v {
            fmt_ms(out, m as i64);
        } else {
            let _ = write!(out, "{v}");
        }
    }
}

/// Below this many thousandths (10^10 in units), doubles are less than
/// 0.0005 apart.
const MS_EXACT: i64 = 10_000_000_000_000;

/// `m / 1000` as `{}` writes the double `m as f64 / 1000.0`, without the
/// float formatting where that is exact: below [`MS_EXACT`] the quotient is
/// the double nearest the decimal `s.mmm`, and that decimal without its
/// trailing zeros is the shortest that reads back as the same double (what
/// `{}` writes): any other decimal with at most three places is 0.001 or
/// more away, past half the distance to the next double.
fn fmt_ms(out: &mut String, m: i64) {
    let abs = m.unsigned_abs();
    if abs >= MS_EXACT as u64 {
        let _ = write!(out, "{}", m as f64 / 1000.0);
        return;
    }
    if m < 0 {
        out.push('-');
    }
    push_int(out, abs / 1000);
    let mut frac = abs % 1000;
    if frac == 0 {
        return;
    }
    let mut digits = 3;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    out.push('.');
    let b = itoa::Buffer::new().format(frac).len();
    for _ in b..digits {
        out.push('0');
    }
    push_int(out, frac);
}

/// A creation time in milliseconds as seconds: `fmt_f64(ms as f64 / 1000.0)`.
fn fmt_created(out: &mut String, ms: i64) {
    if ms.unsigned_abs() < MS_EXACT as u64 {
        fmt_ms(out, ms);
    } else {
        fmt_f64(out, ms as f64 / 1000.0);
    }
}

/// `le` values in the form Prometheus' own clients write them (`1.0`, `0.005`).
fn fmt_le(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        push_int(out, v as i64);
        out.push_str(".0");
    } else {
        let _ = write!(out, "{v}");
    }
}

impl Writer<'_> {
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

    /// Renders a series' label pairs into `self.labels`.
    fn set_labels(&mut self, f: &Family, s: &Series) {
        self.labels.clear();
        for (k, v) in f.labels_of(s) {
            self.labels
                .push(if self.labels.is_empty() { '{' } else { ',' });
            self.labels.push_str(k);
            self.labels.push_str("=\"");
            escape_into(&mut self.labels, v);
            self.labels.push('"');
        }
        if !self.labels.is_empty() {
            self.labels.push('}');
        }
    }

    /// Opens the current series' labels for one more pair (`{labels,` or
    /// `{`) on `out`.
    fn open_labels(out: &mut String, labels: &str) {
        match labels.strip_suffix('}') {
            Some(l) => {
                out.push_str(l);
                out.push(',');
            }
            None => out.push('{'),
        }
    }

    /// `name suffix{labels} value`
    fn sample(&mut self, name: &str, suffix: &str, v: f64) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        self.out.push_str(&self.labels);
        self.out.push(' ');
        fmt_f64(&mut self.out, v);
        self.out.push('\n');
    }

    /// `name suffix{labels} n`, exact (an f64 would round past 2^53)
    fn count(&mut self, name: &str, suffix: &str, n: u64) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        self.out.push_str(&self.labels);
        self.out.push(' ');
        push_int(&mut self.out, n);
        self.out.push('\n');
    }

    fn created(&mut self, f: &Family, s: &Series) {
        if let (true, Some(ms)) = (self.om, s.created_ms) {
            self.out.push_str(self.base(f));
            self.out.push_str("_created");
            self.out.push_str(&self.labels);
            self.out.push(' ');
            fmt_created(&mut self.out, ms);
            self.out.push('\n');
        }
    }

    /// Hands the current piece to `send` once it holds `chunk` bytes;
    /// false once `send` said stop.
    fn flush(&mut self) -> bool {
        if self.out.len() < self.chunk {
            return true;
        }
        let next = String::with_capacity(piece_capacity(self.chunk));
        (self.send)(std::mem::replace(&mut self.out, next))
    }

    /// A family's header and series; false once `send` said stop.
    fn family(&mut self, f: &Family) -> bool {
        self.header(f);
        for s in &f.series {
            if !self.flush() {
                return false;
            }
            self.set_labels(f, s);
            match &s.point {
                Point::Value(v) => {
                    self.sample(&f.name, "", *v);
                    if f.kind == Kind::Counter {
                        self.created(f, s);
                    }
                }
                Point::Histogram(h) => self.histogram(f, s, &f.histogram(*h)),
                Point::Summary(q) => {
                    let q = f.summary(*q);
                    let mut qs = std::mem::take(&mut self.quantile);
                    for (quantile, v) in q.quantiles {
                        // written as the Prometheus clients do: 1 in text, 1.0 in OpenMetrics
                        qs.clear();
                        if self.om {
                            fmt_le(&mut qs, *quantile);
                        } else {
                            fmt_f64(&mut qs, *quantile);
                        }
                        self.out.push_str(&f.name);
                        Self::open_labels(&mut self.out, &self.labels);
                        self.out.push_str("quantile=\"");
                        escape_into(&mut self.out, &qs);
                        self.out.push_str("\"} ");
                        fmt_f64(&mut self.out, *v);
                        self.out.push('\n');
                    }
                    self.quantile = qs;
                    self.sample(&f.name, "_sum", q.sum);
                    self.count(&f.name, "_count", q.count);
                    // no summary `_created` yet: the strict checker in tests/ knows
                    // it only for counters and histograms (OpenMetrics allows it)
                }
            }
        }
        true
    }

    fn histogram(&mut self, f: &Family, s: &Series, h: &Histogram) {
        self.bucket.clear();
        self.bucket.push_str(&f.name);
        self.bucket.push_str("_bucket");
        Self::open_labels(&mut self.bucket, &self.labels);
        self.bucket.push_str("le=\"");
        let mut negative = false;
        match &h.classic {
            Some(c) => {
                negative = c.bounds.first().is_some_and(|b| *b < 0.0);
                self.buckets(c);
            }
            None => {
                self.out.push_str(&self.bucket);
                self.out.push_str(INF_LE);
                push_int(&mut self.out, h.count);
                self.out.push('\n');
            }
        }
        // OpenMetrics: no _sum (so no _count) with negative buckets; a
        // native-only histogram (only its +Inf bucket shown here) with a
        // negative sum had negative observations: the same case
        if !(self.om && (negative || h.sum < 0.0)) {
            self.sample(&f.name, "_sum", h.sum);
            self.count(&f.name, "_count", h.count);
        }
        self.created(f, s);
    }

    /// Renders the `le` values of `bounds`, unless they are the ones held.
    fn set_les(&mut self, bounds: &Arc<[f64]>) {
        let held = self
            .le_of
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(b, bounds) || b[..] == bounds[..]);
        if held {
            return;
        }
        self.les.clear();
        self.le_ends.clear();
        for b in bounds.iter() {
            // a number: nothing in it to escape
            fmt_le(&mut self.les, *b);
            self.les.push_str("\"} ");
            self.le_ends.push(self.les.len());
        }
        self.le_of = Some(bounds.clone());
    }

    /// The bucket lines of the current series (`self.bucket` holds their start).
    fn buckets(&mut self, c: &Classic) {
        self.set_les(c.bounds);
        let (mut cum, mut start) = (0u64, 0);
        for (i, n) in c.counts.iter().enumerate() {
            // ingest refuses counts that wrap; never panic here
            cum = cum.saturating_add(*n);
            let le = match self.le_ends.get(i) {
                Some(&end) => self.les.get(std::mem::replace(&mut start, end)..end),
                None => Some(INF_LE),
            };
            self.out.push_str(&self.bucket);
            self.out.push_str(le.unwrap_or("\"} "));
            push_int(&mut self.out, cum);
            if self.om {
                if let Some(Some(e)) = c.exemplars.get(i) {
                    self.exemplar(e);
                }
            }
            self.out.push('\n');
        }
    }

    fn exemplar(&mut self, e: &Exemplar) {
        self.out.push_str(" # {trace_id=\"");
        hex_into(&mut self.out, &e.trace_id);
        self.out.push_str("\",span_id=\"");
        hex_into(&mut self.out, &e.span_id);
        self.out.push_str("\"} ");
        fmt_f64(&mut self.out, e.value);
        let _ = write!(self.out, " {:.3}", e.time_ns as f64 / 1e9);
    }
}

/// `id` in lowercase hex.
fn hex_into(out: &mut String, id: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in id {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::snapshot::{Buckets, Native, Summary};
    use std::sync::Arc;

    fn both(fams: Vec<Family>) -> (String, String) {
        let s = Snapshot {
            families: fams,
            timestamp_ms: 0,
        };
        (encode(&s, false), encode(&s, true))
    }

    #[test]
    fn nothing_is_an_empty_text_and_a_lone_eof() {
        assert_eq!(both(vec![]), (String::new(), "# EOF\n".to_string()));
    }

    #[test]
    fn an_empty_family_is_its_header_alone() {
        let mut f = Family::new("d_seconds", Kind::Gauge, "H");
        f.unit = "seconds".into();
        let (t, o) = both(vec![f]);
        assert_eq!(t, "# HELP d_seconds H\n# TYPE d_seconds gauge\n");
        assert_eq!(
            o,
            "# HELP d_seconds H\n# TYPE d_seconds gauge\n# UNIT d_seconds seconds\n# EOF\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped_per_format() {
        let mut f = Family::new("x_total", Kind::Counter, "a \"q\" \\ b\nc");
        f.push(
            &[("a", "q\"b\\s\nn"), ("e", "")],
            Point::Value(3.0),
            Some(1500),
        );
        f.value(&[], 0.25);
        let (t, o) = both(vec![f]);
        assert_eq!(
            t,
            "# HELP x_total a \"q\" \\\\ b\\nc\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"b\\\\s\\nn\",e=\"\"} 3\nx_total 0.25\n"
        );
        assert_eq!(
            o,
            "# HELP x a \\\"q\\\" \\\\ b\\nc\n# TYPE x counter\n\
             x_total{a=\"q\\\"b\\\\s\\nn\",e=\"\"} 3\nx_created{a=\"q\\\"b\\\\s\\nn\",e=\"\"} 1.5\n\
             x_total 0.25\n# EOF\n"
        );
    }

    #[test]
    fn summaries_are_quantiles_sum_and_count() {
        let mut f = Family::new("rpc", Kind::Summary, "S");
        let q = Summary {
            count: 9_007_199_254_740_993,
            sum: 1.5,
            quantiles: &[(0.5, 0.1), (0.99, f64::NAN), (1.0, f64::INFINITY)],
        };
        f.push_summary(&[("m", "get")], q, Some(2000));
        let (t, o) = both(vec![f]);
        let lines = "rpc{m=\"get\",quantile=\"0.5\"} 0.1\nrpc{m=\"get\",quantile=\"0.99\"} NaN\n\
                     rpc{m=\"get\",quantile=\"1\"} +Inf\nrpc_sum{m=\"get\"} 1.5\n\
                     rpc_count{m=\"get\"} 9007199254740993\n";
        assert_eq!(t, format!("# HELP rpc S\n# TYPE rpc summary\n{lines}"));
        let om_lines = lines.replace("\"1\"", "\"1.0\"");
        assert_eq!(
            o,
            format!("# HELP rpc S\n# TYPE rpc summary\n{om_lines}# EOF\n")
        );
    }

    fn hist(f: &mut Family, bounds: &[f64], counts: &[u64], native: bool) -> Point {
        let n = counts.iter().sum();
        let exemplars = [
            None,
            Some(Exemplar {
                trace_id: [0xab; 16],
                span_id: [1; 8],
                value: 0.5,
                time_ns: 1_700_000_000_123_000_000,
            }),
        ];
        let bounds = Arc::from(bounds);
        f.histogram_point(Histogram {
            count: n,
            sum: 2.5,
            classic: (!native).then_some(Classic {
                bounds: &bounds,
                counts,
                exemplars: &exemplars,
            }),
            native: native.then(|| Native {
                schema: 3,
                zero_threshold: 0.0,
                zero_count: 1,
                positive: Buckets {
                    offset: -2,
                    counts: &[1, 0, 2],
                },
                negative: Buckets::default(),
            }),
        })
    }

    #[test]
    fn classic_buckets_are_cumulative_with_exemplars_in_openmetrics() {
        let mut f = Family::new("h", Kind::Histogram, "H");
        let p = hist(&mut f, &[1.0, 2.5], &[1, 2, 3], false);
        f.push(&[], p, Some(1000));
        let (t, o) = both(vec![f]);
        let b = "h_bucket{le=\"1.0\"} 1\nh_bucket{le=\"2.5\"} 3";
        let rest = "\nh_bucket{le=\"+Inf\"} 6\nh_sum 2.5\nh_count 6\n";
        assert_eq!(t, format!("# HELP h H\n# TYPE h histogram\n{b}{rest}"));
        let ex = " # {trace_id=\"abababababababababababababababab\",span_id=\"0101010101010101\"} 0.5 1700000000.123";
        assert_eq!(
            o,
            format!("# HELP h H\n# TYPE h histogram\n{b}{ex}{rest}h_created 1\n# EOF\n")
        );
    }

    #[test]
    fn negative_buckets_drop_sum_and_count_in_openmetrics_only() {
        let mut f = Family::new("h", Kind::Histogram, "H");
        let p = hist(&mut f, &[-1.0], &[1, 1], false);
        f.push(&[], p, None);
        let (t, o) = both(vec![f]);
        assert!(t.contains("h_sum 2.5\nh_count 2\n"), "{t}");
        assert!(!o.contains("h_sum") && !o.contains("h_count"), "{o}");
        assert!(o.contains("h_bucket{le=\"-1.0\"} 1\n"), "{o}");
    }

    #[test]
    fn a_native_only_histogram_is_a_lone_inf_bucket_sum_and_count_in_text() {
        let mut f = Family::new("h", Kind::Histogram, "H");
        let p = hist(&mut f, &[], &[1, 0, 2], true);
        f.push(&[("a", "b")], p, None);
        let (t, _) = both(vec![f]);
        assert_eq!(
            t,
            "# HELP h H\n# TYPE h histogram\nh_bucket{a=\"b\",le=\"+Inf\"} 3\n\
             h_sum{a=\"b\"} 2.5\nh_count{a=\"b\"} 3\n"
        );
    }

    /// The writer gives the very bytes of the previous text encoder, in
    /// both formats, over random snapshots (every kind, empty families,
    /// labels and help that need escaping, NaN and infinities).
    #[test]
    fn the_text_is_the_previous_encoders() {
        let mut rng = fastrand::Rng::with_seed(24);
        for round in 0..300 {
            let families = (0..rng.usize(0..9))
                .map(|i| crate::metrics::encode::random::family(&mut rng, i))
                .collect();
            let s = Snapshot {
                families,
                timestamp_ms: 0,
            };
            for om in [false, true] {
                let (new, old) = (encode(&s, om), super::super::text_reference::encode(&s, om));
                assert!(new == old, "round {round}, om {om}:\n{new}\n---\n{old}");
            }
        }
    }

    /// `_created` without float formatting writes what the float formatting
    /// writes: at the edges, around the cut-over, and for random instants.
    #[test]
    fn created_seconds_are_the_float_formatting_of_ms_over_1000_and_values_display() {
        let mut rng = fastrand::Rng::with_seed(13);
        let edges = [
            0,
            1,
            -1,
            10,
            100,
            999,
            1000,
            1001,
            1500,
            -1500,
            1_764_000_000_120,
        ];
        let cut = 10_000_000_000_000i64;
        let near = [cut - 1, cut, cut + 1, -cut + 1, -cut, i64::MAX, i64::MIN];
        let random = (0..100_000).map(|_| match rng.usize(0..3) {
            0 => rng.i64(-cut..cut),
            1 => rng.i64(1_000_000_000_000..2_000_000_000_000),
            _ => rng.i64(..),
        });
        for ms in edges.into_iter().chain(near).chain(random) {
            let (mut fast, mut float) = (String::new(), String::new());
            fmt_created(&mut fast, ms);
            fmt_f64(&mut float, ms as f64 / 1000.0);
            assert_eq!(fast, float, "{ms}");
            let v = ms as f64 / 1000.0;
            if v.fract() != 0.0 {
                // fmt_f64's own short cut against the float formatting
                assert_eq!(float, format!("{v}"), "{ms}");
            }
        }
        let odd = [
            0.1 + 0.2,
            1e-7,
            0.0005,
            0.0015,
            1e10 - 0.001,
            9_999_999_999.999,
        ];
        let random = (0..100_000).map(|_| (rng.f64() - 0.5) * 10f64.powi(rng.i32(-4..12)));
        for v in odd.into_iter().chain(random) {
            let mut fast = String::new();
            fmt_f64(&mut fast, v);
            let want = if v.fract() == 0.0 {
                format!("{}", v as i64)
            } else {
                format!("{v}")
            };
            assert_eq!(fast, want, "{v:e}");
        }
    }
}
