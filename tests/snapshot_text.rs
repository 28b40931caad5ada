//! Property test of the text encoders alone: random snapshots (the shapes a
//! producer may hand them: counters, gauges, classic and native-only
//! histograms, summaries, empty families, label values with any UTF-8,
//! quotes, backslashes and newlines, non-finite values) always encode to
//! output that the strict checker, promtool and prometheus_client accept
//! (tests/common/strict.rs). The seed is printed; `GEOMETRA_FUZZ_SEED`
//! replays one.

mod common;

use common::strict;
use geometra_sidecar::metrics::encode::{encode, Format};
use geometra_sidecar::metrics::snapshot::{
    Buckets, Classic, Exemplar, Family, Histogram, Kind, Native, Point, Snapshot, Summary,
};
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

fn classic(rng: &mut fastrand::Rng) -> Histogram {
    let mut b = rng.f64() * 10.0 - 5.0;
    let bounds: Vec<f64> = (0..rng.usize(0..6))
        .map(|_| {
            b += rng.f64() + 0.001;
            b
        })
        .collect();
    let counts: Vec<u64> = (0..=bounds.len()).map(|_| rng.u64(0..1000)).collect();
    let exemplars = counts
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
    Histogram {
        count: counts.iter().sum(),
        sum: rng.f64() * 100.0,
        classic: Some(Classic {
            bounds: Arc::from(bounds),
            counts,
            exemplars,
        }),
        native: None,
    }
}

fn point(rng: &mut fastrand::Rng, kind: Kind) -> Point {
    match kind {
        Kind::Counter => Point::Value(rng.f64() * 1e6),
        Kind::Gauge => Point::Value(number(rng)),
        Kind::Histogram if rng.usize(0..4) == 0 => Point::Histogram(Box::new(Histogram {
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
        })),
        Kind::Histogram => Point::Histogram(Box::new(classic(rng))),
        Kind::Summary => {
            let mut q: Vec<f64> = (0..rng.usize(0..4)).map(|_| rng.f64()).collect();
            q.sort_by(f64::total_cmp);
            q.dedup();
            Point::Summary(Box::new(Summary {
                count: rng.u64(0..1 << 60),
                sum: rng.f64() * 10.0,
                // OpenMetrics: quantile values are never negative (the producer's duty)
                quantiles: q.into_iter().map(|x| (x, number(rng).abs())).collect(),
            }))
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
        let p = point(rng, kind);
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
