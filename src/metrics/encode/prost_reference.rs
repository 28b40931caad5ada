//! The previous protobuf encoder, kept for tests only: it fills prost's
//! generated `io.prometheus.client` types from a snapshot and encodes them.
//! The wire writer (`protobuf.rs`) must produce the same bytes.

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
        (Point::Histogram(h), _) => m.histogram = Some(histogram(&f.histogram(*h), created)),
        (Point::Summary(q), _) => m.summary = Some(summary(&f.summary(*q), created)),
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
        .zip(c.counts)
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
