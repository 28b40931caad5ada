//! Random snapshots for the encoders' tests: families of every kind, some
//! empty, units that are the name's suffix and some not, label values and
//! help with what text formats escape, non-ASCII and long runs, native,
//! classic and both histograms, exemplars, created timestamps before 1970,
//! NaN, infinities, -0 and counts past 2^53.

use crate::metrics::snapshot::{
    Buckets, Classic, Exemplar, Family, Histogram, Kind, Native, Point, Summary,
};
use std::sync::Arc;

/// A label value or help text: plain, empty, or with what text formats
/// escape (quotes, backslashes, newlines), non-ASCII and long runs.
fn text(rng: &mut fastrand::Rng) -> String {
    match rng.usize(0..6) {
        0 => String::new(),
        1 => "a\\b\"c\nd ü 日本".into(),
        2 => "x".repeat(rng.usize(100..300)),
        3 => (0..rng.usize(1..20)).map(|_| rng.char(..)).collect(),
        _ => format!("v{}", rng.u32(..)),
    }
}

fn float(rng: &mut fastrand::Rng) -> f64 {
    let special = [
        0.0,
        -0.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e300,
        5e-324,
    ];
    match rng.usize(0..4) {
        0 => special[rng.usize(..special.len())],
        1 => rng.u32(..) as f64,
        _ => (rng.f64() - 0.3) * 10f64.powi(rng.i32(-5..12)),
    }
}

fn count(rng: &mut fastrand::Rng) -> u64 {
    match rng.usize(0..4) {
        0 => 0,
        1 => u64::MAX >> rng.u32(0..64),
        _ => rng.u64(..1000),
    }
}

fn exemplar(rng: &mut fastrand::Rng) -> Option<Exemplar> {
    rng.bool().then(|| Exemplar {
        trace_id: std::array::from_fn(|_| rng.u8(..)),
        span_id: std::array::from_fn(|_| rng.u8(..)),
        value: float(rng),
        time_ns: if rng.bool() { 0 } else { rng.u64(..) },
    })
}

/// Dense counts of one native side, from `offset`.
#[derive(Default)]
struct Side {
    offset: i32,
    counts: Vec<u64>,
}

impl Side {
    fn view(&self) -> Buckets<'_> {
        Buckets {
            offset: self.offset,
            counts: &self.counts,
        }
    }
}

fn side(rng: &mut fastrand::Rng) -> Side {
    let counts = (0..rng.usize(0..40))
        .map(|_| if rng.usize(0..3) == 0 { 0 } else { count(rng) })
        .collect();
    Side {
        offset: rng.i32(-200..200),
        counts,
    }
}

fn bounds(rng: &mut fastrand::Rng) -> Arc<[f64]> {
    let mut b: Vec<f64> = (0..rng.usize(0..30)).map(|_| float(rng)).collect();
    b.sort_by(f64::total_cmp);
    Arc::from(b)
}

/// Classic buckets, owned until they are copied into a family.
struct OwnedClassic {
    bounds: Arc<[f64]>,
    counts: Vec<u64>,
    exemplars: Vec<Option<Exemplar>>,
}

/// Native buckets, owned until they are copied into a family.
struct OwnedNative {
    schema: i32,
    zero_threshold: f64,
    zero_count: u64,
    positive: Side,
    negative: Side,
}

/// Classic buckets, on the family's bounds (`shared`) half the time.
fn classic(rng: &mut fastrand::Rng, shared: &Arc<[f64]>) -> OwnedClassic {
    let bounds = if rng.bool() {
        shared.clone()
    } else {
        bounds(rng)
    };
    let n = bounds.len();
    let counts = (0..=n).map(|_| count(rng)).collect();
    let exemplars = if rng.bool() {
        (0..=n).map(|_| exemplar(rng)).collect()
    } else {
        Vec::new()
    };
    OwnedClassic {
        bounds,
        counts,
        exemplars,
    }
}

fn native(rng: &mut fastrand::Rng) -> OwnedNative {
    OwnedNative {
        schema: rng.i32(-4..=8),
        zero_threshold: if rng.bool() { 0.0 } else { float(rng) },
        zero_count: count(rng),
        positive: side(rng),
        negative: if rng.bool() {
            Side::default()
        } else {
            side(rng)
        },
    }
}

fn histogram(rng: &mut fastrand::Rng, f: &mut Family, shared: &Arc<[f64]>) -> Point {
    let (count, sum) = (count(rng), float(rng));
    let classic = (rng.usize(0..3) > 0).then(|| classic(rng, shared));
    let native = rng.bool().then(|| native(rng));
    f.histogram_point(Histogram {
        count,
        sum,
        classic: classic.as_ref().map(|c| Classic {
            bounds: &c.bounds,
            counts: &c.counts,
            exemplars: &c.exemplars,
        }),
        native: native.as_ref().map(|n| Native {
            schema: n.schema,
            zero_threshold: n.zero_threshold,
            zero_count: n.zero_count,
            positive: n.positive.view(),
            negative: n.negative.view(),
        }),
    })
}

fn point(rng: &mut fastrand::Rng, f: &mut Family, shared: &Arc<[f64]>) -> Point {
    match f.kind {
        Kind::Counter | Kind::Gauge => Point::Value(float(rng)),
        Kind::Histogram => histogram(rng, f, shared),
        Kind::Summary => {
            let (count, sum) = (count(rng), float(rng));
            let quantiles: Vec<(f64, f64)> = (0..rng.usize(0..6))
                .map(|_| (rng.f64(), float(rng)))
                .collect();
            f.summary_point(Summary {
                count,
                sum,
                quantiles: &quantiles,
            })
        }
    }
}

/// A family of every kind in turn; some empty, some with units that
/// are the name's suffix and some not.
pub fn family(rng: &mut fastrand::Rng, i: usize) -> Family {
    let kinds = [Kind::Counter, Kind::Gauge, Kind::Histogram, Kind::Summary];
    let kind = kinds[i % 4];
    let name = match (kind, rng.usize(0..3)) {
        (Kind::Counter, 0) => format!("f{i}_seconds_total"),
        (_, 0) => format!("f{i}_seconds"),
        _ => format!("f{i}"),
    };
    let mut f = Family::new(name, kind, text(rng));
    f.unit = ["", "seconds", "bytes"][rng.usize(0..3)].into();
    let shared = bounds(rng);
    for _ in 0..rng.usize(0..12) {
        let labels: Vec<(String, String)> = (0..rng.usize(0..5))
            .map(|j| (format!("l{j}"), text(rng)))
            .collect();
        let created = [None, Some(0), Some(-1), Some(rng.i64(..))][rng.usize(0..4)];
        let p = point(rng, &mut f, &shared);
        f.push_iter(
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            p,
            created,
        );
    }
    f
}
