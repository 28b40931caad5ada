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
//! few allocations per family, not several per series. Histograms' and
//! summaries' numbers (buckets, exemplars, quantiles) likewise live in a
//! per-family arena: a series' point is an id there, and the snapshot
//! types a reader gets back (`Histogram`, `Classic`, `Native`, `Summary`)
//! borrow from it. A scrape of 100k histogram series makes no allocation
//! per series.

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
    arena: Arena,
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

/// A series' point. A histogram's or a summary's numbers live in its
/// family's arena (`Family::histogram_point`, read back with
/// `Family::histogram`): a point is an id there, valid in that family only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point {
    /// A counter's or a gauge's value.
    Value(f64),
    Histogram(HistogramId),
    Summary(SummaryId),
}

/// A histogram in its family's arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramId(u32);

/// A summary in its family's arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryId(u32);

/// A histogram: classic buckets, native (exponential) buckets, or both.
/// Borrowed: what `Family::histogram_point` copies into the family and
/// `Family::histogram` gives back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Histogram<'a> {
    pub count: u64,
    pub sum: f64,
    pub classic: Option<Classic<'a>>,
    pub native: Option<Native<'a>>,
}

/// Classic buckets with explicit upper bounds.
#[derive(Debug, Clone, Copy)]
pub struct Classic<'a> {
    /// Upper bounds, ascending, without +Inf (usually shared by the family).
    pub bounds: &'a Arc<[f64]>,
    /// Per bucket, not cumulative; `bounds.len() + 1` entries, the last is +Inf.
    pub counts: &'a [u64],
    /// Per bucket, if any were recorded (same length as `counts`).
    pub exemplars: &'a [Option<Exemplar>],
}

/// A native histogram in Prometheus' exponential schema: bucket `i` of the
/// positive side covers `(base^(i-1), base^i]`, `base = 2^(2^-schema)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Native<'a> {
    /// -4 ..= 8
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub positive: Buckets<'a>,
    pub negative: Buckets<'a>,
}

/// Dense bucket counts starting at index `offset` (OTLP's shape; encoders
/// turn runs of zeros into Prometheus' spans).
#[derive(Debug, Clone, Copy, Default)]
pub struct Buckets<'a> {
    pub offset: i32,
    /// Per bucket, not cumulative.
    pub counts: &'a [u64],
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Summary<'a> {
    pub count: u64,
    pub sum: f64,
    /// (quantile in 0..=1, value), ascending by quantile; values not negative
    /// (OpenMetrics refuses them; NaN and +Inf are fine)
    pub quantiles: &'a [(f64, f64)],
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

/// The histograms and summaries of a family's series, their buckets,
/// exemplars and quantiles back to back: a few growing vectors per family
/// instead of a box and a vector or two per series.
#[derive(Debug, Default, Clone)]
struct Arena {
    histograms: Vec<HistogramAt>,
    summaries: Vec<SummaryAt>,
    /// classic and native bucket counts
    counts: Vec<u64>,
    exemplars: Vec<Option<Exemplar>>,
    quantiles: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
struct HistogramAt {
    count: u64,
    sum: f64,
    classic: Option<ClassicAt>,
    native: Option<NativeAt>,
}

#[derive(Debug, Clone)]
struct ClassicAt {
    bounds: Arc<[f64]>,
    counts: Range<u32>,
    exemplars: Range<u32>,
}

#[derive(Debug, Clone)]
struct NativeAt {
    schema: i32,
    zero_threshold: f64,
    zero_count: u64,
    /// (offset, counts) of each side
    positive: (i32, Range<u32>),
    negative: (i32, Range<u32>),
}

#[derive(Debug, Clone)]
struct SummaryAt {
    count: u64,
    sum: f64,
    quantiles: Range<u32>,
}

/// Appends `items` to `v`; the range they take.
fn append<T: Copy>(v: &mut Vec<T>, items: &[T]) -> Range<u32> {
    let start = v.len() as u32;
    v.extend_from_slice(items);
    start..v.len() as u32
}

/// The items of `r` in `v` (none if out of range).
fn slice<'a, T>(v: &'a [T], r: &Range<u32>) -> &'a [T] {
    v.get(r.start as usize..r.end as usize).unwrap_or(&[])
}

impl Arena {
    fn histogram(&mut self, h: Histogram<'_>) -> HistogramId {
        if self.counts.is_empty() {
            // the first histogram's size for each one room was made for
            let each = h.classic.map_or(0, |c| c.counts.len())
                + h.native
                    .map_or(0, |n| n.positive.counts.len() + n.negative.counts.len());
            self.counts
                .reserve(each * self.histograms.capacity().max(1));
        }
        let classic = h.classic.map(|c| ClassicAt {
            bounds: c.bounds.clone(),
            counts: append(&mut self.counts, c.counts),
            exemplars: append(&mut self.exemplars, c.exemplars),
        });
        let native = h.native.map(|n| NativeAt {
            schema: n.schema,
            zero_threshold: n.zero_threshold,
            zero_count: n.zero_count,
            positive: (
                n.positive.offset,
                append(&mut self.counts, n.positive.counts),
            ),
            negative: (
                n.negative.offset,
                append(&mut self.counts, n.negative.counts),
            ),
        });
        self.histograms.push(HistogramAt {
            count: h.count,
            sum: h.sum,
            classic,
            native,
        });
        HistogramId(self.histograms.len() as u32 - 1)
    }

    fn read_histogram(&self, id: HistogramId) -> Histogram<'_> {
        let Some(h) = self.histograms.get(id.0 as usize) else {
            return Histogram::default();
        };
        let buckets = |(offset, r): &(i32, Range<u32>)| Buckets {
            offset: *offset,
            counts: slice(&self.counts, r),
        };
        Histogram {
            count: h.count,
            sum: h.sum,
            classic: h.classic.as_ref().map(|c| Classic {
                bounds: &c.bounds,
                counts: slice(&self.counts, &c.counts),
                exemplars: slice(&self.exemplars, &c.exemplars),
            }),
            native: h.native.as_ref().map(|n| Native {
                schema: n.schema,
                zero_threshold: n.zero_threshold,
                zero_count: n.zero_count,
                positive: buckets(&n.positive),
                negative: buckets(&n.negative),
            }),
        }
    }
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
            arena: Arena::default(),
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

    /// Makes room for `series` more series with `label_pairs` label pairs
    /// of `label_bytes` bytes between them, all histograms if `histograms`
    /// (a family's snapshot grows its vectors once, not a dozen times).
    pub fn reserve(
        &mut self,
        series: usize,
        label_pairs: usize,
        label_bytes: usize,
        histograms: bool,
    ) {
        self.series.reserve(series);
        self.labels.pairs.reserve(label_pairs);
        self.labels.text.reserve(label_bytes);
        if histograms {
            self.arena.histograms.reserve(series);
        }
    }

    /// A histogram's point: its numbers copied into this family's arena.
    pub fn histogram_point(&mut self, h: Histogram<'_>) -> Point {
        Point::Histogram(self.arena.histogram(h))
    }

    /// A summary's point: its numbers copied into this family's arena.
    pub fn summary_point(&mut self, q: Summary<'_>) -> Point {
        let quantiles = append(&mut self.arena.quantiles, q.quantiles);
        self.arena.summaries.push(SummaryAt {
            count: q.count,
            sum: q.sum,
            quantiles,
        });
        Point::Summary(SummaryId(self.arena.summaries.len() as u32 - 1))
    }

    /// Adds a histogram series.
    pub fn push_histogram(
        &mut self,
        labels: &[(&str, &str)],
        h: Histogram<'_>,
        created_ms: Option<i64>,
    ) {
        let p = self.histogram_point(h);
        self.push(labels, p, created_ms);
    }

    /// Adds a summary series.
    pub fn push_summary(
        &mut self,
        labels: &[(&str, &str)],
        q: Summary<'_>,
        created_ms: Option<i64>,
    ) {
        let p = self.summary_point(q);
        self.push(labels, p, created_ms);
    }

    /// A histogram of this family (an id from another family reads as an
    /// empty histogram or another series' one).
    pub fn histogram(&self, id: HistogramId) -> Histogram<'_> {
        self.arena.read_histogram(id)
    }

    /// A summary of this family (an id from another family reads as an
    /// empty summary or another series' one).
    pub fn summary(&self, id: SummaryId) -> Summary<'_> {
        match self.arena.summaries.get(id.0 as usize) {
            Some(q) => Summary {
                count: q.count,
                sum: q.sum,
                quantiles: slice(&self.arena.quantiles, &q.quantiles),
            },
            None => Summary::default(),
        }
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

    #[test]
    fn histograms_and_summaries_come_back_from_the_arena() {
        let mut f = Family::new("h", Kind::Histogram, "");
        let bounds: Arc<[f64]> = Arc::from(&[1.0, 2.0][..]);
        let ex = Exemplar {
            value: 1.5,
            ..Exemplar::default()
        };
        let both = Histogram {
            count: 6,
            sum: 4.0,
            classic: Some(Classic {
                bounds: &bounds,
                counts: &[1, 2, 3],
                exemplars: &[None, Some(ex), None],
            }),
            native: Some(Native {
                schema: 2,
                zero_threshold: 0.5,
                zero_count: 1,
                positive: Buckets {
                    offset: -3,
                    counts: &[4, 0, 5],
                },
                negative: Buckets {
                    offset: 7,
                    counts: &[6],
                },
            }),
        };
        f.push_histogram(&[("a", "1")], both, Some(5));
        f.push_histogram(&[], Histogram::default(), None);
        f.push_summary(
            &[],
            Summary {
                count: 2,
                sum: 1.0,
                quantiles: &[(0.5, 0.25), (1.0, 0.75)],
            },
            None,
        );
        let points: Vec<Point> = f.series.iter().map(|s| s.point).collect();
        let [Point::Histogram(a), Point::Histogram(b), Point::Summary(q)] = points[..] else {
            panic!("{points:?}");
        };
        let a = f.histogram(a);
        let c = a.classic.expect("classic");
        assert!(Arc::ptr_eq(c.bounds, &bounds));
        assert_eq!((a.count, a.sum, c.counts), (6, 4.0, &[1, 2, 3][..]));
        assert_eq!(c.exemplars, &[None, Some(ex), None]);
        let n = a.native.expect("native");
        assert_eq!((n.schema, n.zero_threshold, n.zero_count), (2, 0.5, 1));
        assert_eq!((n.positive.offset, n.positive.counts), (-3, &[4, 0, 5][..]));
        assert_eq!((n.negative.offset, n.negative.counts), (7, &[6][..]));
        let b = f.histogram(b);
        assert!(b.classic.is_none() && b.native.is_none());
        let q = f.summary(q);
        assert_eq!((q.count, q.sum), (2, 1.0));
        assert_eq!(q.quantiles, &[(0.5, 0.25), (1.0, 0.75)]);
        // an id of another family reads as empty, never out of bounds
        let other = Family::new("g", Kind::Histogram, "");
        assert_eq!(other.histogram(HistogramId(0)).count, 0);
        assert!(other.summary(SummaryId(0)).quantiles.is_empty());
    }
}
