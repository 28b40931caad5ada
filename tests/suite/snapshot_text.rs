//! Property test of the text encoders alone: random snapshots (the shapes a
//! producer may hand them: counters, gauges, classic and native-only
//! histograms, summaries, empty families, label values with any UTF-8,
//! quotes, backslashes and newlines, non-finite values) always encode to
//! output that the strict checker, promtool and prometheus_client accept
//! (tests/common/strict.rs). The seed is printed; `GEOMETRA_FUZZ_SEED`
//! replays one.

use crate::common;

use common::strict;
use geometra_sidecar::metrics::encode::{encode, Format};
use geometra_sidecar::metrics::snapshot::{
    Buckets, Classic, Exemplar, Family, Histogram, Kind, Native, Point, Snapshot, Summary,
};
use geometra_sidecar::proto::client as pb;
use prost::Message;
use std::sync::Arc;

const VALUES: &[&str] = &[
    "",
    "a",
    "\"",
    "\\",
    "\n",
    "}",
    "{x=\"y\"}",
    "ü",
    "😀",
    "\\n",
    "a b",
    "#",
    " # {t=\"1\"} 1",
];

fn value_text(rng: &mut fastrand::Rng) -> String {
    (0..rng.usize(0..4))
        .map(|_| match rng.usize(0..3) {
            0 => VALUES[rng.usize(..VALUES.len())].to_string(),
            // any character but controls (the checker reads lines with str::lines)
            1 => Some(rng.char(..))
                .filter(|c| !c.is_control())
                .unwrap_or('x')
                .to_string(),
            _ => rng.u32(..).to_string(),
        })
        .collect()
}

fn number(rng: &mut fastrand::Rng) -> f64 {
    match rng.usize(0..6) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => rng.f64() * 1e300,
        4 => -(rng.u64(..) as f64),
        _ => rng.u32(..) as f64,
    }
}

fn classic(rng: &mut fastrand::Rng, f: &mut Family) -> Point {
    let mut b = rng.f64() * 10.0 - 5.0;
    let bounds: Vec<f64> = (0..rng.usize(0..6))
        .map(|_| {
            b += rng.f64() + 0.001;
            b
        })
        .collect();
    let counts: Vec<u64> = (0..=bounds.len()).map(|_| rng.u64(0..1000)).collect();
    let exemplars: Vec<Option<Exemplar>> = counts
        .iter()
        .map(|_| {
            rng.bool().then(|| Exemplar {
                trace_id: [rng.u8(..); 16],
                span_id: [rng.u8(..); 8],
                value: rng.f64() * 10.0,
                time_ns: rng.u64(0..2_000_000_000_000_000_000),
            })
        })
        .collect();
    f.histogram_point(Histogram {
        count: counts.iter().sum(),
        sum: rng.f64() * 100.0,
        classic: Some(Classic {
            bounds: &Arc::from(bounds),
            counts: &counts,
            exemplars: &exemplars,
        }),
        native: None,
    })
}

fn point(rng: &mut fastrand::Rng, f: &mut Family) -> Point {
    match f.kind {
        Kind::Counter => Point::Value(rng.f64() * 1e6),
        Kind::Gauge => Point::Value(number(rng)),
        Kind::Histogram if rng.usize(0..4) == 0 => f.histogram_point(Histogram {
            count: rng.u64(0..100),
            sum: rng.f64(),
            classic: None,
            native: Some(Native {
                schema: rng.i32(-4..=8),
                zero_count: 0,
                zero_threshold: 0.0,
                positive: Buckets::default(),
                negative: Buckets::default(),
            }),
        }),
        Kind::Histogram => classic(rng, f),
        Kind::Summary => {
            let mut q: Vec<f64> = (0..rng.usize(0..4)).map(|_| rng.f64()).collect();
            q.sort_by(f64::total_cmp);
            q.dedup();
            // OpenMetrics: quantile values are never negative (the producer's duty)
            let quantiles: Vec<(f64, f64)> =
                q.into_iter().map(|x| (x, number(rng).abs())).collect();
            f.summary_point(Summary {
                count: rng.u64(0..1 << 60),
                sum: rng.f64() * 10.0,
                quantiles: &quantiles,
            })
        }
    }
}

fn family(rng: &mut fastrand::Rng, i: usize) -> Family {
    let kinds = [Kind::Counter, Kind::Gauge, Kind::Histogram, Kind::Summary];
    let kind = kinds[rng.usize(..kinds.len())];
    let base = format!("f{i}_{}", ["x", "req", "seconds", "a_b"][rng.usize(0..4)]);
    let name = if kind == Kind::Counter {
        format!("{base}_total")
    } else {
        base
    };
    let mut f = Family::new(name, kind, value_text(rng));
    if rng.bool() {
        f.unit = "seconds".into();
    }
    let names = ["a", "B_2", "_c", "job", "instance", "route"];
    for s in 0..rng.usize(0..6) {
        let n = rng.usize(0..names.len());
        let vals: Vec<String> = (0..n).map(|_| value_text(rng)).collect();
        let idx = s.to_string();
        let mut labels: Vec<(&str, &str)> = vec![("series", &idx)];
        labels.extend(
            names[..n]
                .iter()
                .copied()
                .zip(vals.iter().map(String::as_str)),
        );
        let p = point(rng, &mut f);
        let created = rng.bool().then(|| rng.i64(0..2_000_000_000_000));
        f.push(&labels, p, created);
    }
    f
}

#[test]
fn random_snapshots_always_encode_to_parseable_text_and_openmetrics() {
    let seed = std::env::var("GEOMETRA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("snapshot_text seed {seed} (GEOMETRA_FUZZ_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..20 {
        let families = (0..rng.usize(0..12)).map(|i| family(&mut rng, i)).collect();
        let s = Snapshot {
            families,
            timestamp_ms: 0,
        };
        let text = String::from_utf8(encode(&s, Format::Text)).expect("utf-8");
        let om = String::from_utf8(encode(&s, Format::OpenMetrics)).expect("utf-8");
        if let Err(e) = strict::check_all(&text, &om) {
            panic!("seed {seed}, round {round}: {e}\n--- text\n{text}\n--- openmetrics\n{om}");
        }
    }
}

/// Counts back from Prometheus spans and deltas: (bucket index, count) of
/// every bucket the spans cover.
fn expand(spans: &[pb::BucketSpan], deltas: &[i64]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let (mut k, mut v) = (0i64, 0i64);
    let mut d = deltas.iter();
    for (i, s) in spans.iter().enumerate() {
        k = if i == 0 { 0 } else { k } + i64::from(s.offset());
        for _ in 0..s.length() {
            v += d.next().copied().expect("a delta per covered bucket");
            out.push((k, v));
            k += 1;
        }
    }
    assert!(d.next().is_none(), "more deltas than buckets");
    out
}

/// The populated buckets of a dense side.
fn populated(b: &Buckets) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for (i, c) in b.counts.iter().enumerate() {
        if *c > 0 {
            out.push((i64::from(b.offset) + i as i64, *c as i64));
        }
    }
    out
}

fn check_histogram(h: &Histogram, got: &pb::Histogram) {
    assert_eq!(got.sample_count(), h.count);
    assert!(got.sample_sum() == h.sum || (got.sample_sum().is_nan() && h.sum.is_nan()));
    if let Some(c) = &h.classic {
        assert_eq!(got.bucket.len(), c.bounds.len(), "no +Inf bucket");
        let mut cum = 0u64;
        for (i, b) in got.bucket.iter().enumerate() {
            cum += c.counts[i];
            assert_eq!(b.cumulative_count(), cum, "cumulative");
            assert_eq!(b.upper_bound(), c.bounds[i]);
            assert_eq!(
                b.exemplar.is_some(),
                c.exemplars.get(i).is_some_and(Option::is_some)
            );
        }
    } else {
        assert!(got.bucket.is_empty());
    }
    match &h.native {
        Some(n) => {
            assert_eq!(got.schema(), n.schema);
            assert_eq!(got.zero_count(), n.zero_count);
            for (spans, deltas, side) in [
                (&got.positive_span, &got.positive_delta, &n.positive),
                (&got.negative_span, &got.negative_delta, &n.negative),
            ] {
                let covered: usize = spans.iter().map(|s| s.length() as usize).sum();
                assert_eq!(covered, deltas.len(), "spans cover the deltas");
                let back: Vec<(i64, i64)> = expand(spans, deltas)
                    .into_iter()
                    .filter(|x| x.1 != 0)
                    .collect();
                assert_eq!(back, populated(side), "deltas reconstruct the counts");
            }
            let marked = !got.positive_span.is_empty()
                || !got.negative_span.is_empty()
                || got.zero_threshold() > 0.0
                || got.zero_count() > 0;
            assert!(marked, "a native histogram must look native");
        }
        None => assert!(got.schema.is_none() && got.positive_span.is_empty()),
    }
}

#[test]
fn random_snapshots_always_encode_to_decodable_protobuf() {
    let seed = std::env::var("GEOMETRA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("snapshot_protobuf seed {seed} (GEOMETRA_FUZZ_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..200 {
        let families: Vec<Family> = (0..rng.usize(0..12)).map(|i| family(&mut rng, i)).collect();
        let s = Snapshot {
            families,
            timestamp_ms: 0,
        };
        let body = encode(&s, Format::Protobuf);
        let mut b = &body[..];
        for f in &s.families {
            let got = pb::MetricFamily::decode_length_delimited(&mut b).expect("decodes");
            assert_eq!(got.name(), f.name, "seed {seed}");
            assert_eq!(got.help(), f.help);
            assert_eq!(got.metric.len(), f.series.len());
            for (m, sr) in got.metric.iter().zip(&f.series) {
                let labels: Vec<(&str, &str)> =
                    m.label.iter().map(|l| (l.name(), l.value())).collect();
                assert_eq!(labels, f.labels_of(sr).collect::<Vec<_>>());
                match &sr.point {
                    Point::Histogram(h) => {
                        check_histogram(&f.histogram(*h), m.histogram.as_ref().expect("histogram"))
                    }
                    Point::Summary(q) => {
                        let q = f.summary(*q);
                        let got = m.summary.as_ref().expect("summary");
                        assert_eq!(got.sample_count(), q.count);
                        assert_eq!(got.quantile.len(), q.quantiles.len());
                    }
                    Point::Value(_) => assert!(m.counter.is_some() || m.gauge.is_some()),
                }
            }
        }
        assert!(b.is_empty(), "seed {seed}: trailing bytes");
    }
}
