//! The Prometheus protobuf exposition of a snapshot: one length-delimited
//! `io.prometheus.client.MetricFamily` per family (the generated types of
//! `proto/prometheus/client/metrics.proto`). The one format that carries
//! native histograms to a scraper.
//!
//! A histogram with native buckets sets `schema`, `zero_threshold`,
//! `zero_count` and the spans and deltas of both sides; with classic buckets
//! too (`store.histograms: both`) it also carries the cumulative buckets, as
//! client_golang does. A native histogram with nothing in it and a zero
//! threshold of 0 gets one empty positive span, client_golang's marker:
//! without it a scraper would take it for a classic histogram.

use crate::metrics::snapshot::{
    Buckets, Classic, Exemplar, Family, Histogram, Kind, Native, Point, Series, Snapshot, Summary,
};
use crate::proto::client as pb;
use prost::Message;

pub fn encode(s: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    for f in &s.families {
        let mf = family(f);
        // a Vec grows as needed: encoding into it cannot fail
        let _ = mf.encode_length_delimited(&mut out);
    }
    out
}

fn family(f: &Family) -> pb::MetricFamily {
    let kind = match f.kind {
        Kind::Counter => pb::MetricType::Counter,
        Kind::Gauge => pb::MetricType::Gauge,
        Kind::Histogram => pb::MetricType::Histogram,
        Kind::Summary => pb::MetricType::Summary,
    };
    pb::MetricFamily {
        name: Some(f.name.clone()),
        help: Some(f.help.clone()),
        r#type: Some(kind as i32),
        metric: f.series.iter().map(|s| metric(f, s)).collect(),
        unit: unit(f),
    }
}

/// The unit, where the name (without a counter's `_total`) ends in `_unit`
/// (newer Prometheus refuse a family whose unit is not its name's suffix).
fn unit(f: &Family) -> Option<String> {
    let base = match f.kind {
        Kind::Counter => f.name.strip_suffix("_total").unwrap_or(&f.name),
        _ => &f.name,
    };
    let ok = !f.unit.is_empty()
        && base
            .strip_suffix(f.unit.as_str())
            .is_some_and(|b| b.len() > 1 && b.ends_with('_'));
    ok.then(|| f.unit.clone())
}

fn metric(f: &Family, s: &Series) -> pb::Metric {
    let label = f
        .labels_of(s)
        .map(|(k, v)| pb::LabelPair {
            name: Some(k.to_string()),
            value: Some(v.to_string()),
        })
        .collect();
    let created = s.created_ms.map(timestamp_ms);
    let mut m = pb::Metric {
        label,
        ..Default::default()
    };
    match (&s.point, f.kind) {
        (Point::Value(v), Kind::Counter) => {
            m.counter = Some(pb::Counter {
                value: Some(*v),
                exemplar: None,
                created_timestamp: created,
            })
        }
        (Point::Value(v), _) => m.gauge = Some(pb::Gauge { value: Some(*v) }),
        (Point::Histogram(h), _) => m.histogram = Some(histogram(h, created)),
        (Point::Summary(q), _) => m.summary = Some(summary(q, created)),
    }
    m
}

fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn summary(q: &Summary, created: Option<prost_types::Timestamp>) -> pb::Summary {
    pb::Summary {
        sample_count: Some(q.count),
        sample_sum: Some(q.sum),
        quantile: q
            .quantiles
            .iter()
            .map(|(quantile, value)| pb::Quantile {
                quantile: Some(*quantile),
                value: Some(*value),
            })
            .collect(),
        created_timestamp: created,
    }
}

fn histogram(h: &Histogram, created: Option<prost_types::Timestamp>) -> pb::Histogram {
    let mut out = pb::Histogram {
        sample_count: Some(h.count),
        sample_sum: Some(h.sum),
        created_timestamp: created,
        ..Default::default()
    };
    if let Some(c) = &h.classic {
        out.bucket = classic(c);
    }
    if let Some(n) = &h.native {
        native(n, &mut out);
    }
    out
}

/// Cumulative buckets; the +Inf one is left out (it is `sample_count`), as
/// client_golang does.
fn classic(c: &Classic) -> Vec<pb::Bucket> {
    let mut cum = 0u64;
    c.bounds
        .iter()
        .zip(&c.counts)
        .enumerate()
        .map(|(i, (b, n))| {
            cum = cum.saturating_add(*n);
            pb::Bucket {
                cumulative_count: Some(cum),
                cumulative_count_float: None,
                upper_bound: Some(*b),
                exemplar: c.exemplars.get(i).copied().flatten().map(exemplar),
            }
        })
        .collect()
}

fn exemplar(e: Exemplar) -> pb::Exemplar {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    pb::Exemplar {
        label: vec![
            pb::LabelPair {
                name: Some("trace_id".into()),
                value: Some(hex(&e.trace_id)),
            },
            pb::LabelPair {
                name: Some("span_id".into()),
                value: Some(hex(&e.span_id)),
            },
        ],
        value: Some(e.value),
        timestamp: Some(prost_types::Timestamp {
            seconds: (e.time_ns / 1_000_000_000) as i64,
            nanos: (e.time_ns % 1_000_000_000) as i32,
        }),
    }
}

fn native(n: &Native, out: &mut pb::Histogram) {
    out.schema = Some(n.schema);
    out.zero_threshold = Some(n.zero_threshold);
    out.zero_count = Some(n.zero_count);
    (out.positive_span, out.positive_delta) = spans(&n.positive);
    (out.negative_span, out.negative_delta) = spans(&n.negative);
    if out.positive_span.is_empty() && out.negative_span.is_empty() && n.zero_threshold == 0.0 {
        out.positive_span.push(pb::BucketSpan {
            offset: Some(0),
            length: Some(0),
        });
    }
}

/// Dense counts to Prometheus' spans (runs of populated buckets; a gap of
/// one or two empty buckets stays inside the span, as client_golang keeps
/// it, since an empty span costs more than two zero deltas) and deltas (each
/// populated bucket's count minus the previous one's).
pub fn spans(b: &Buckets) -> (Vec<pb::BucketSpan>, Vec<i64>) {
    let mut spans: Vec<pb::BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
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
                last.length = Some(last.length.unwrap_or(0) + (k - nx) as u32 + 1);
            }
            _ => spans.push(pb::BucketSpan {
                offset: Some(next.map_or(k, |nx| k - nx) as i32),
                length: Some(1),
            }),
        }
        let v = *c as i64;
        deltas.push(v.wrapping_sub(prev));
        prev = v;
        next = Some(k + 1);
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::snapshot::Summary;
    use std::sync::Arc;

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
            counts: vec![0, 2, 0, 0, 5, 0, 0, 0, 1, 1],
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
            quantiles: vec![(0.5, 0.1), (0.99, 2.0)],
        };
        q.push(&[], Point::Summary(Box::new(sum)), Some(-1));
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

    fn both_hist(native: Option<Native>, classic: bool) -> Point {
        let ex = Exemplar {
            trace_id: [0xab; 16],
            span_id: [1; 8],
            value: 0.5,
            time_ns: 1_700_000_000_123_000_000,
        };
        Point::Histogram(Box::new(Histogram {
            count: 6,
            sum: 2.5,
            classic: classic.then(|| Classic {
                bounds: Arc::from(&[1.0, 2.5][..]),
                counts: vec![1, 2, 3],
                exemplars: vec![None, Some(ex), None],
            }),
            native,
        }))
    }

    #[test]
    fn both_histograms_carry_cumulative_buckets_exemplars_and_native_buckets() {
        let n = Native {
            schema: 3,
            zero_threshold: 1e-3,
            zero_count: 1,
            positive: Buckets {
                offset: -2,
                counts: vec![1, 0, 2],
            },
            negative: Buckets {
                offset: 4,
                counts: vec![2],
            },
        };
        let mut f = Family::new("h", Kind::Histogram, "H");
        f.push(&[], both_hist(Some(n), true), Some(1000));
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
        f.push(&[], both_hist(Some(Native::default()), false), None);
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
        f.push(&[], both_hist(None, true), None);
        let got = decode(&encode(&snap(vec![f])));
        let h = got[0].metric[0].histogram.as_ref().expect("histogram");
        assert!(h.schema.is_none() && h.zero_threshold.is_none());
        assert!(h.positive_span.is_empty() && h.negative_span.is_empty());
    }
}
