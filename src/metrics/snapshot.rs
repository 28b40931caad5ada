//! The format-neutral exposition model: what `/metrics` shows and what remote
//! write pushes, built at scrape or push time (never on the hot path) from
//! the store and the components' own metrics. Every encoder and exporter
//! renders a `Snapshot` and nothing else.
//!
//! Everything in a snapshot is already safe to render in every format: names
//! and label keys are valid Prometheus names, values valid UTF-8, histogram
//! counts consistent (that was checked when the series was created or the
//! point ingested). An encoder only escapes and formats.
//!
//! Label pairs of a family live in one arena (`Labels`) rather than a
//! `Vec<(String, String)>` per series: a scrape of 100k series then makes a
//! few allocations per family, not several per series.

use std::ops::Range;
use std::sync::Arc;

/// All families at one instant.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub families: Vec<Family>,
    /// unix milliseconds when the snapshot was taken (remote write's sample time)
    pub timestamp_ms: i64,
}

/// The type of a family, as Prometheus sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// One metric family: a name, its metadata and its series.
#[derive(Debug, Clone)]
pub struct Family {
    /// The full Prometheus name; a counter's ends in `_total`.
    pub name: String,
    pub help: String,
    /// OpenMetrics unit (`seconds`, `bytes`), empty if none; only rendered
    /// where the name ends in it.
    pub unit: String,
    pub kind: Kind,
    pub labels: Labels,
    pub series: Vec<Series>,
}

/// Label pairs of all series of a family, back to back.
#[derive(Debug, Default, Clone)]
pub struct Labels {
    text: String,
    /// (name start, name end, value start, value end) in `text`
    pairs: Vec<[u32; 4]>,
}

impl Labels {
    /// Appends one pair; returns its index (a series' range ends past it).
    pub fn push(&mut self, name: &str, value: &str) -> u32 {
        let a = self.text.len() as u32;
        self.text.push_str(name);
        let b = self.text.len() as u32;
        self.text.push_str(value);
        let c = self.text.len() as u32;
        self.pairs.push([a, b, b, c]);
        (self.pairs.len() - 1) as u32
    }

    /// About what the pairs take in a binary encoding: their text and a few
    /// bytes of framing each (sizes a buffer before encoding).
    pub fn encoded_len(&self) -> usize {
        self.text.len() + 6 * self.pairs.len()
    }

    /// The index the next pushed pair gets (the start of a series' range).
    pub fn next(&self) -> u32 {
        self.pairs.len() as u32
    }

    /// The pairs of one series.
    pub fn of(&self, r: &Range<u32>) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone {
        let pairs = self
            .pairs
            .get(r.start as usize..r.end as usize)
            .unwrap_or(&[]);
        pairs.iter().map(|p| {
            (
                self.text.get(p[0] as usize..p[1] as usize).unwrap_or(""),
                self.text.get(p[2] as usize..p[3] as usize).unwrap_or(""),
            )
        })
    }
}

/// One series: its labels (a range of the family's `Labels`) and its point.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Range<u32>,
    pub point: Point,
    /// unix milliseconds of creation (OpenMetrics `_created`), if known
    pub created_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum Point {
    /// A counter's or a gauge's value.
    Value(f64),
    Histogram(Box<Histogram>),
    Summary(Box<Summary>),
}

/// A histogram: classic buckets, native (exponential) buckets, or both.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub count: u64,
    pub sum: f64,
    pub classic: Option<Classic>,
    pub native: Option<Native>,
}

/// Classic buckets with explicit upper bounds.
#[derive(Debug, Clone)]
pub struct Classic {
    /// Upper bounds, ascending, without +Inf (usually shared by the family).
    pub bounds: Arc<[f64]>,
    /// Per bucket, not cumulative; `bounds.len() + 1` entries, the last is +Inf.
    pub counts: Vec<u64>,
    /// Per bucket, if any were recorded (same length as `counts`).
    pub exemplars: Vec<Option<Exemplar>>,
}

/// A native histogram in Prometheus' exponential schema: bucket `i` of the
/// positive side covers `(base^(i-1), base^i]`, `base = 2^(2^-schema)`.
#[derive(Debug, Clone, Default)]
pub struct Native {
    /// -4 ..= 8
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub positive: Buckets,
    pub negative: Buckets,
}

/// Dense bucket counts starting at index `offset` (OTLP's shape; encoders
/// turn runs of zeros into Prometheus' spans).
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    pub offset: i32,
    /// Per bucket, not cumulative.
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub count: u64,
    pub sum: f64,
    /// (quantile in 0..=1, value), ascending by quantile; values not negative
    /// (OpenMetrics refuses them; NaN and +Inf are fine)
    pub quantiles: Vec<(f64, f64)>,
}

/// An exemplar: the trace and span of one observation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub value: f64,
    /// unix nanoseconds
    pub time_ns: u64,
}

impl Family {
    pub fn new(name: impl Into<String>, kind: Kind, help: impl Into<String>) -> Self {
        Family {
            name: name.into(),
            help: help.into(),
            unit: String::new(),
            kind,
            labels: Labels::default(),
            series: Vec::new(),
        }
    }

    /// Adds a series with these labels.
    pub fn push(&mut self, labels: &[(&str, &str)], point: Point, created_ms: Option<i64>) {
        self.push_iter(labels.iter().copied(), point, created_ms);
    }

    /// Adds a series whose labels come from an iterator (no slice to build).
    pub fn push_iter<'a>(
        &mut self,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
        point: Point,
        created_ms: Option<i64>,
    ) {
        let start = self.labels.next();
        for (k, v) in labels {
            self.labels.push(k, v);
        }
        let labels = start..self.labels.next();
        self.series.push(Series {
            labels,
            point,
            created_ms,
        });
    }

    /// Adds a counter or gauge series.
    pub fn value(&mut self, labels: &[(&str, &str)], v: f64) {
        self.push(labels, Point::Value(v), None);
    }

    /// The label pairs of one of this family's series.
    pub fn labels_of<'a>(
        &'a self,
        s: &Series,
    ) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + Clone {
        self.labels.of(&s.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_each_series_come_back_in_order() {
        let mut f = Family::new("x_total", Kind::Counter, "x");
        f.value(&[("a", "1"), ("b", "")], 1.0);
        f.value(&[], 2.0);
        f.value(&[("c", "ü\"\n")], 3.0);
        let got: Vec<Vec<(&str, &str)>> =
            f.series.iter().map(|s| f.labels_of(s).collect()).collect();
        assert_eq!(
            got,
            vec![vec![("a", "1"), ("b", "")], vec![], vec![("c", "ü\"\n")]]
        );
    }
}
