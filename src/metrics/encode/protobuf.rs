//! The Prometheus protobuf exposition of a snapshot: one length-delimited
//! `io.prometheus.client.MetricFamily` per family
//! (`proto/prometheus/client/metrics.proto`), written straight from the
//! snapshot onto the wire, with the field numbers of [`super::fields`]. The
//! one format that carries native histograms to a scraper.
//!
//! The bytes are the ones prost writes for the same message (fields in
//! number order, proto2 optional fields always present, repeated scalars not
//! packed, the proto3 `Timestamp` without its zero fields): tested against
//! the previous prost-based encoder (`prost_reference.rs`). A sub-message is
//! written in place after a one-byte length; the rare body of 128 bytes or
//! more moves right to make room for its longer length. No allocation per
//! series: one output buffer, sized up front, and two scratch vectors for
//! native buckets, reused.
//!
//! A histogram with native buckets sets `schema`, `zero_threshold`,
//! `zero_count` and the spans and deltas of both sides; with classic buckets
//! too (`store.histograms: both`) it also carries the cumulative buckets, as
//! client_golang does. A native histogram with nothing in it and a zero
//! threshold of 0 gets one empty positive span, client_golang's marker:
//! without it a scraper would take it for a classic histogram.

use super::fields::{self as n, key, FIXED64, LEN, VARINT};
use crate::metrics::snapshot::{
    Buckets, Classic, Exemplar, Family, Histogram, Kind, Native, Point, Series, Snapshot, Summary,
};

pub fn encode(s: &Snapshot) -> Vec<u8> {
    let mut whole = Vec::new();
    chunks(s, usize::MAX, &mut |c| {
        whole = c;
        true
    });
    whole
}

/// Renders a snapshot and hands the bytes to `send` in pieces: a piece ends
/// at the end of the first family that takes it to `chunk` bytes or more (a
/// family's length goes before it, so a family is never split), the last
/// piece at the end. Stops as soon as `send` returns false, returning false.
/// The pieces together are [`encode`]'s bytes.
pub fn chunks(s: &Snapshot, chunk: usize, send: &mut dyn FnMut(Vec<u8>) -> bool) -> bool {
    let whole = chunk == usize::MAX;
    let mut w = Writer {
        out: Vec::with_capacity(if whole { estimate(s) } else { 0 }),
        spans: Vec::new(),
        deltas: Vec::new(),
    };
    for f in &s.families {
        if w.out.len() >= chunk && !send(std::mem::take(&mut w.out)) {
            return false;
        }
        if !whole {
            w.out.reserve(estimate_family(f));
        }
        w.delimited(|w| w.family(f));
    }
    send(w.out)
}

/// About the size of the encoding (a little more for classic histograms),
/// so that the buffer is not grown and copied a dozen times on a big scrape.
fn estimate(s: &Snapshot) -> usize {
    s.families.iter().map(estimate_family).sum()
}

/// [`estimate`] of one family.
fn estimate_family(f: &Family) -> usize {
    let point = |p: &Point| match p {
        Point::Value(_) => 12,
        Point::Histogram(h) => {
            let h = f.histogram(*h);
            let classic = h.classic.as_ref().map_or(0, |c| c.counts.len() * 14);
            let native = h.native.as_ref().map_or(0, |n| {
                30 + 3 * (n.positive.counts.len() + n.negative.counts.len())
            });
            24 + classic + native
        }
        Point::Summary(q) => 24 + 20 * f.summary(*q).quantiles.len(),
    };
    let series: usize = f.series.iter().map(|s| 16 + point(&s.point)).sum();
    16 + f.name.len() + f.help.len() + f.labels.encoded_len() + series
}

fn kind_value(k: Kind) -> u64 {
    match k {
        Kind::Counter => n::TYPE_COUNTER,
        Kind::Gauge => n::TYPE_GAUGE,
        Kind::Histogram => n::TYPE_HISTOGRAM,
        Kind::Summary => n::TYPE_SUMMARY,
    }
}

/// The unit, where the name (without a counter's `_total`) ends in `_unit`
/// (newer Prometheus refuse a family whose unit is not its name's suffix).
fn unit(f: &Family) -> Option<&str> {
    let base = match f.kind {
        Kind::Counter => f.name.strip_suffix("_total").unwrap_or(&f.name),
        _ => &f.name,
    };
    let ok = !f.unit.is_empty()
        && base
            .strip_suffix(f.unit.as_str())
            .is_some_and(|b| b.len() > 1 && b.ends_with('_'));
    ok.then_some(f.unit.as_str())
}

fn zigzag32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn put_varint(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut() {
        *b = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
        v >>= 7;
    }
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

struct Writer {
    out: Vec<u8>,
    /// scratch for one side of a native histogram: spans (offset, length)
    spans: Vec<(i32, u32)>,
    /// and its deltas
    deltas: Vec<i64>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn uint(&mut self, field: u8, v: u64) {
        self.out.push(key(field, VARINT));
        self.varint(v);
    }

    fn double(&mut self, field: u8, v: f64) {
        self.out.push(key(field, FIXED64));
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, field: u8, b: &[u8]) {
        self.out.push(key(field, LEN));
        self.varint(b.len() as u64);
        self.out.extend_from_slice(b);
    }

    /// A length and the message `body` writes: the body goes after a
    /// one-byte length, and moves right if it turns out 128 bytes or longer.
    fn delimited(&mut self, body: impl FnOnce(&mut Self)) {
        let at = self.out.len();
        self.out.push(0);
        body(self);
        let len = self.out.len() - at - 1;
        let width = varint_len(len as u64);
        if width > 1 {
            self.out.resize(self.out.len() + width - 1, 0);
            self.out.copy_within(at + 1..at + 1 + len, at + width);
        }
        put_varint(&mut self.out[at..at + width], len as u64);
    }

    /// A sub-message field.
    fn nested(&mut self, field: u8, body: impl FnOnce(&mut Self)) {
        self.out.push(key(field, LEN));
        self.delimited(body);
    }

    fn family(&mut self, f: &Family) {
        self.bytes(n::FAMILY_NAME, f.name.as_bytes());
        self.bytes(n::FAMILY_HELP, f.help.as_bytes());
        self.uint(n::FAMILY_TYPE, kind_value(f.kind));
        for s in &f.series {
            self.nested(n::FAMILY_METRIC, |w| w.metric(f, s));
        }
        if let Some(u) = unit(f) {
            self.bytes(n::FAMILY_UNIT, u.as_bytes());
        }
    }

    fn metric(&mut self, f: &Family, s: &Series) {
        for (k, v) in f.labels_of(s) {
            self.nested(n::METRIC_LABEL, |w| {
                w.bytes(n::LABEL_PAIR_NAME, k.as_bytes());
                w.bytes(n::LABEL_PAIR_VALUE, v.as_bytes());
            });
        }
        let created = s.created_ms;
        match (&s.point, f.kind) {
            (Point::Value(v), Kind::Counter) => self.nested(n::METRIC_COUNTER, |w| {
                w.double(n::COUNTER_VALUE, *v);
                w.created(n::COUNTER_CREATED, created);
            }),
            (Point::Value(v), _) => self.nested(n::METRIC_GAUGE, |w| w.double(n::GAUGE_VALUE, *v)),
            (Point::Histogram(h), _) => {
                let h = f.histogram(*h);
                self.nested(n::METRIC_HISTOGRAM, |w| w.histogram(&h, created))
            }
            (Point::Summary(q), _) => {
                let q = f.summary(*q);
                self.nested(n::METRIC_SUMMARY, |w| w.summary(&q, created))
            }
        }
    }

    /// A `google.protobuf.Timestamp` (proto3: zero fields left out).
    fn timestamp(&mut self, field: u8, seconds: i64, nanos: i32) {
        self.nested(field, |w| {
            if seconds != 0 {
                w.uint(n::TIMESTAMP_SECONDS, seconds as u64);
            }
            if nanos != 0 {
                w.uint(n::TIMESTAMP_NANOS, i64::from(nanos) as u64);
            }
        });
    }

    fn created(&mut self, field: u8, ms: Option<i64>) {
        if let Some(ms) = ms {
            let nanos = (ms.rem_euclid(1000) * 1_000_000) as i32;
            self.timestamp(field, ms.div_euclid(1000), nanos);
        }
    }

    fn summary(&mut self, q: &Summary, created: Option<i64>) {
        self.uint(n::SUMMARY_SAMPLE_COUNT, q.count);
        self.double(n::SUMMARY_SAMPLE_SUM, q.sum);
        for (quantile, value) in q.quantiles {
            self.nested(n::SUMMARY_QUANTILE, |w| {
                w.double(n::QUANTILE_QUANTILE, *quantile);
                w.double(n::QUANTILE_VALUE, *value);
            });
        }
        self.created(n::SUMMARY_CREATED, created);
    }

    fn histogram(&mut self, h: &Histogram, created: Option<i64>) {
        self.uint(n::HISTOGRAM_SAMPLE_COUNT, h.count);
        self.double(n::HISTOGRAM_SAMPLE_SUM, h.sum);
        if let Some(c) = &h.classic {
            self.classic(c);
        }
        if let Some(nat) = &h.native {
            self.native(nat);
        }
        self.created(n::HISTOGRAM_CREATED, created);
    }

    /// Cumulative buckets; the +Inf one is left out (it is `sample_count`),
    /// as client_golang does.
    fn classic(&mut self, c: &Classic) {
        let mut cum = 0u64;
        for (i, (bound, count)) in c.bounds.iter().zip(c.counts).enumerate() {
            cum = cum.saturating_add(*count);
            let ex = c.exemplars.get(i).copied().flatten();
            self.nested(n::HISTOGRAM_BUCKET, |w| {
                w.uint(n::BUCKET_CUMULATIVE_COUNT, cum);
                w.double(n::BUCKET_UPPER_BOUND, *bound);
                if let Some(e) = ex {
                    w.nested(n::BUCKET_EXEMPLAR, |w| w.exemplar(&e));
                }
            });
        }
    }

    fn exemplar(&mut self, e: &Exemplar) {
        self.hex_label("trace_id", &e.trace_id);
        self.hex_label("span_id", &e.span_id);
        self.double(n::EXEMPLAR_VALUE, e.value);
        let (s, ns) = (e.time_ns / 1_000_000_000, e.time_ns % 1_000_000_000);
        self.timestamp(n::EXEMPLAR_TIMESTAMP, s as i64, ns as i32);
    }

    /// A label pair whose value is `id` in lowercase hex.
    fn hex_label(&mut self, name: &str, id: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.nested(n::EXEMPLAR_LABEL, |w| {
            w.bytes(n::LABEL_PAIR_NAME, name.as_bytes());
            w.out.push(key(n::LABEL_PAIR_VALUE, LEN));
            w.varint(2 * id.len() as u64);
            for b in id {
                w.out.push(HEX[usize::from(b >> 4)]);
                w.out.push(HEX[usize::from(b & 0xf)]);
            }
        });
    }

    fn native(&mut self, nat: &Native) {
        self.uint(n::HISTOGRAM_SCHEMA, zigzag32(nat.schema));
        self.double(n::HISTOGRAM_ZERO_THRESHOLD, nat.zero_threshold);
        self.uint(n::HISTOGRAM_ZERO_COUNT, nat.zero_count);
        let neg = self.side(
            &nat.negative,
            n::HISTOGRAM_NEGATIVE_SPAN,
            n::HISTOGRAM_NEGATIVE_DELTA,
        );
        let pos = self.side(
            &nat.positive,
            n::HISTOGRAM_POSITIVE_SPAN,
            n::HISTOGRAM_POSITIVE_DELTA,
        );
        if !neg && !pos && nat.zero_threshold == 0.0 {
            self.span(n::HISTOGRAM_POSITIVE_SPAN, 0, 0);
        }
    }

    /// The spans and deltas of one side; whether it has any span.
    fn side(&mut self, b: &Buckets, span_field: u8, delta_field: u8) -> bool {
        let (mut spans, mut deltas) = (
            std::mem::take(&mut self.spans),
            std::mem::take(&mut self.deltas),
        );
        spans_into(b, &mut spans, &mut deltas);
        for &(offset, length) in &spans {
            self.span(span_field, offset, length);
        }
        for &d in &deltas {
            self.uint(delta_field, zigzag64(d));
        }
        let any = !spans.is_empty();
        (self.spans, self.deltas) = (spans, deltas);
        any
    }

    fn span(&mut self, field: u8, offset: i32, length: u32) {
        self.nested(field, |w| {
            w.uint(n::BUCKET_SPAN_OFFSET, zigzag32(offset));
            w.uint(n::BUCKET_SPAN_LENGTH, u64::from(length));
        });
    }
}

/// Dense counts to Prometheus' spans (runs of populated buckets; a gap of
/// one or two empty buckets stays inside the span, as client_golang keeps
/// it, since an empty span costs more than two zero deltas) and deltas (each
/// populated bucket's count minus the previous one's). Fills `spans`
/// (offset, length) and `deltas`, emptied first.
pub fn spans_into(b: &Buckets, spans: &mut Vec<(i32, u32)>, deltas: &mut Vec<i64>) {
    spans.clear();
    deltas.clear();
    let mut prev = 0i64;
    // index of the bucket after the last one written, if any
    let mut next: Option<i64> = None;
    for (i, c) in b.counts.iter().enumerate() {
        if *c == 0 {
            continue;
        }
        let k = i64::from(b.offset) + i as i64;
        match (next, spans.last_mut()) {
            (Some(nx), Some(last)) if k - nx <= 2 => {
                for _ in nx..k {
                    deltas.push(-prev);
                    prev = 0;
                }
                last.1 += (k - nx) as u32 + 1;
            }
            _ => spans.push((next.map_or(k, |nx| k - nx) as i32, 1)),
        }
        let v = *c as i64;
        deltas.push(v.wrapping_sub(prev));
        prev = v;
        next = Some(k + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::encode::{prost_reference, random::family};
    use crate::proto::client as pb;
    use prost::Message;
    use std::sync::Arc;

    /// The spans and deltas of one side, as prost types.
    fn spans(b: &Buckets) -> (Vec<pb::BucketSpan>, Vec<i64>) {
        let (mut s, mut d) = (Vec::new(), Vec::new());
        spans_into(b, &mut s, &mut d);
        let s = s
            .into_iter()
            .map(|(o, l)| pb::BucketSpan {
                offset: Some(o),
                length: Some(l),
            })
            .collect();
        (s, d)
    }

    fn decode(mut b: &[u8]) -> Vec<pb::MetricFamily> {
        let mut out = Vec::new();
        while !b.is_empty() {
            out.push(pb::MetricFamily::decode_length_delimited(&mut b).expect("decodes"));
        }
        out
    }

    fn snap(families: Vec<Family>) -> Snapshot {
        Snapshot {
            families,
            timestamp_ms: 0,
        }
    }

    /// Counts back from spans and deltas: (bucket index, count) of each.
    fn expand(spans: &[pb::BucketSpan], deltas: &[i64]) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let (mut k, mut d, mut v) = (0i64, deltas.iter(), 0i64);
        for (i, s) in spans.iter().enumerate() {
            let off = i64::from(s.offset.unwrap_or(0));
            k = if i == 0 { off } else { k + off };
            for _ in 0..s.length.unwrap_or(0) {
                v += d.next().copied().unwrap_or(0);
                out.push((k, v));
                k += 1;
            }
        }
        out
    }

    #[test]
    fn spans_keep_small_gaps_and_split_at_big_ones() {
        let b = Buckets {
            offset: -3,
            counts: &[0, 2, 0, 0, 5, 0, 0, 0, 1, 1],
        };
        let (s, d) = spans(&b);
        let got: Vec<(i32, u32)> = s
            .iter()
            .map(|x| (x.offset.unwrap_or(0), x.length.unwrap_or(0)))
            .collect();
        assert_eq!(got, vec![(-2, 4), (3, 2)]);
        assert_eq!(d, vec![2, -2, 0, 5, -4, 0]);
        let back: Vec<(i64, i64)> = expand(&s, &d).into_iter().filter(|x| x.1 > 0).collect();
        assert_eq!(back, vec![(-2, 2), (1, 5), (5, 1), (6, 1)]);
        assert_eq!(spans(&Buckets::default()), (vec![], vec![]));
    }

    #[test]
    fn counters_gauges_and_summaries_decode_as_written() {
        let mut c = Family::new("x_seconds_total", Kind::Counter, "help \"q\"\n");
        c.unit = "seconds".into();
        c.push(&[("a", "ü\n")], Point::Value(3.5), Some(1_500));
        let mut g = Family::new("g", Kind::Gauge, "G");
        g.unit = "bytes".into(); // not the name's suffix: left out
        g.value(&[], f64::NAN);
        let mut q = Family::new("rpc", Kind::Summary, "S");
        let sum = Summary {
            count: 9_007_199_254_740_993,
            sum: 1.5,
            quantiles: &[(0.5, 0.1), (0.99, 2.0)],
        };
        q.push_summary(&[], sum, Some(-1));
        let got = decode(&encode(&snap(vec![c, g, q])));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].name(), "x_seconds_total");
        assert_eq!(got[0].help(), "help \"q\"\n");
        assert_eq!(got[0].unit(), "seconds");
        assert_eq!(got[0].r#type(), pb::MetricType::Counter);
        let m = &got[0].metric[0];
        assert_eq!((m.label[0].name(), m.label[0].value()), ("a", "ü\n"));
        let ctr = m.counter.as_ref().expect("counter");
        assert_eq!(ctr.value(), 3.5);
        let ct = ctr.created_timestamp.expect("created");
        assert_eq!((ct.seconds, ct.nanos), (1, 500_000_000));
        assert_eq!(got[1].unit, None);
        assert!(got[1].metric[0]
            .gauge
            .as_ref()
            .expect("gauge")
            .value()
            .is_nan());
        let s = got[2].metric[0].summary.as_ref().expect("summary");
        assert_eq!(s.sample_count(), 9_007_199_254_740_993);
        assert_eq!(s.quantile[1].quantile(), 0.99);
        let ct = s.created_timestamp.expect("created");
        assert_eq!((ct.seconds, ct.nanos), (-1, 999_000_000));
    }

    fn both_hist(f: &mut Family, native: Option<Native>, classic: bool) -> Point {
        let ex = Exemplar {
            trace_id: [0xab; 16],
            span_id: [1; 8],
            value: 0.5,
            time_ns: 1_700_000_000_123_000_000,
        };
        let bounds = Arc::from(&[1.0, 2.5][..]);
        f.histogram_point(Histogram {
            count: 6,
            sum: 2.5,
            classic: classic.then_some(Classic {
                bounds: &bounds,
                counts: &[1, 2, 3],
                exemplars: &[None, Some(ex), None],
            }),
            native,
        })
    }

    #[test]
    fn both_histograms_carry_cumulative_buckets_exemplars_and_native_buckets() {
        let n = Native {
            schema: 3,
            zero_threshold: 1e-3,
            zero_count: 1,
            positive: Buckets {
                offset: -2,
                counts: &[1, 0, 2],
            },
            negative: Buckets {
                offset: 4,
                counts: &[2],
            },
        };
        let mut f = Family::new("h", Kind::Histogram, "H");
        let p = both_hist(&mut f, Some(n), true);
        f.push(&[], p, Some(1000));
        let got = decode(&encode(&snap(vec![f])));
        let h = got[0].metric[0].histogram.as_ref().expect("histogram");
        assert_eq!((h.sample_count(), h.sample_sum()), (6, 2.5));
        let b: Vec<(f64, u64)> = h
            .bucket
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        assert_eq!(b, vec![(1.0, 1), (2.5, 3)]);
        let e = h.bucket[1].exemplar.as_ref().expect("exemplar");
        assert_eq!(e.label[0].value(), "ab".repeat(16));
        assert_eq!(e.label[1].value(), "01".repeat(8));
        assert_eq!(e.timestamp.expect("ts").nanos, 123_000_000);
        assert_eq!(
            (h.schema(), h.zero_threshold(), h.zero_count()),
            (3, 1e-3, 1)
        );
        assert_eq!(
            expand(&h.positive_span, &h.positive_delta),
            vec![(-2, 1), (-1, 0), (0, 2)]
        );
        assert_eq!(expand(&h.negative_span, &h.negative_delta), vec![(4, 2)]);
        assert_eq!(h.created_timestamp.expect("created").seconds, 1);
    }

    #[test]
    fn an_empty_native_histogram_is_marked_by_an_empty_span() {
        let mut f = Family::new("h", Kind::Histogram, "H");
        let p = both_hist(&mut f, Some(Native::default()), false);
        f.push(&[], p, None);
        let got = decode(&encode(&snap(vec![f])));
        let h = got[0].metric[0].histogram.as_ref().expect("histogram");
        assert!(h.bucket.is_empty());
        assert_eq!(h.positive_span.len(), 1);
        assert_eq!(
            (h.positive_span[0].offset(), h.positive_span[0].length()),
            (0, 0)
        );
        // a classic-only histogram has no native field at all
        let mut f = Family::new("h", Kind::Histogram, "H");
        let p = both_hist(&mut f, None, true);
        f.push(&[], p, None);
        let got = decode(&encode(&snap(vec![f])));
        let h = got[0].metric[0].histogram.as_ref().expect("histogram");
        assert!(h.schema.is_none() && h.zero_threshold.is_none());
        assert!(h.positive_span.is_empty() && h.negative_span.is_empty());
    }

    /// Decodes length-delimited families and encodes each again with prost:
    /// the canonical bytes of what was decoded (NaN compares equal).
    fn canonical(b: &[u8]) -> Vec<u8> {
        decode(b)
            .iter()
            .flat_map(|m| m.encode_length_delimited_to_vec())
            .collect()
    }

    /// The wire writer gives the very bytes of the prost-based encoder, over
    /// families of every type, empty ones, labels and help that need
    /// escaping in text, native, classic and both histograms, exemplars,
    /// created timestamps before 1970, NaN, infinities and -0.
    #[test]
    fn the_bytes_are_the_prost_encoders() {
        let mut rng = fastrand::Rng::with_seed(24);
        let mut native = 0;
        for round in 0..300 {
            let fams: Vec<Family> = (0..rng.usize(0..9)).map(|i| family(&mut rng, i)).collect();
            native += fams
                .iter()
                .flat_map(|f| f.series.iter().map(move |s| (f, s)))
                .filter(|(f, s)| matches!(s.point, Point::Histogram(h) if f.histogram(h).native.is_some()))
                .count();
            let s = snap(fams);
            let (new, old) = (encode(&s), prost_reference::encode(&s));
            assert_eq!(canonical(&new), canonical(&old), "round {round}: decoded");
            assert!(new == old, "round {round}: bytes differ");
        }
        assert!(native > 100, "{native} native histograms");
    }

    /// Large messages: a family past 2 MiB and a metric past 16 KiB need
    /// lengths of three and more bytes, written in place.
    #[test]
    fn long_messages_get_their_lengths_in_place() {
        let mut f = Family::new("big", Kind::Histogram, "h".repeat(300));
        let long = "v".repeat(20_000);
        let bounds = Arc::from((0..1000).map(f64::from).collect::<Vec<_>>());
        for i in 0..120 {
            let c = Classic {
                bounds: &bounds,
                counts: &[i; 1001],
                exemplars: &[],
            };
            let h = Histogram {
                count: 1,
                sum: 1.0,
                classic: Some(c),
                native: None,
            };
            f.push_histogram(&[("k", &long)], h, None);
        }
        let s = snap(vec![f, Family::new("empty", Kind::Gauge, "")]);
        let new = encode(&s);
        assert!(new.len() > 2 << 20, "{}", new.len());
        assert!(new == prost_reference::encode(&s));
        assert_eq!(decode(&new)[0].metric.len(), 120);
    }
}
