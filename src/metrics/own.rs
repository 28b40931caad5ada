//! The sidecar's own metrics as exposition families: what the components
//! declared to [`SelfMetrics`] (their counters), collected through the
//! OpenTelemetry SDK's manual reader at scrape time.

use super::snapshot::{Family, Kind};
use crate::telemetry::{Declared, InstrumentKind, SelfMetrics};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};

/// Every declared family with its current series, in declaration order,
/// series sorted by their labels (a family whose callback observed
/// nothing keeps its header). Runs the callbacks: scrape time only.
pub fn families(own: &SelfMetrics) -> Vec<Family> {
    own.read(|declared, rm| {
        let mut out: Vec<Family> = declared.iter().map(header).collect();
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            let Some(i) = declared.iter().position(|d| d.otel == m.name()) else {
                continue;
            };
            if let Some(f) = out.get_mut(i) {
                fill(f, m.data());
            }
        }
        out
    })
}

/// The family of one declared instrument, without series.
fn header(d: &Declared) -> Family {
    let kind = match d.kind {
        InstrumentKind::Counter => Kind::Counter,
        InstrumentKind::Gauge => Kind::Gauge,
    };
    let mut f = Family::new(d.name.clone(), kind, d.help.clone());
    f.unit = prometheus_unit(d.unit).into();
    f
}

/// OpenMetrics' unit word for a UCUM unit.
fn prometheus_unit(ucum: &str) -> &'static str {
    match ucum {
        "s" => "seconds",
        "By" => "bytes",
        _ => "",
    }
}

/// The collected points of one instrument into its family.
fn fill(f: &mut Family, data: &AggregatedMetrics) {
    let mut rows: Vec<(Vec<(String, String)>, f64)> = Vec::new();
    let labels = |a: &mut dyn Iterator<Item = &KeyValue>| {
        // the SDK's `otel.metric.overflow` becomes a valid Prometheus label
        let mut l = a
            .map(|kv| {
                (
                    kv.key.as_str().replace('.', "_"),
                    kv.value.as_str().into_owned(),
                )
            })
            .collect::<Vec<_>>();
        // the SDK keeps the order of a set's first observation; sorted, a
        // family's series list their labels alike and sort together
        l.sort_unstable();
        l
    };
    match data {
        AggregatedMetrics::U64(MetricData::Sum(s)) => {
            for p in s.data_points() {
                rows.push((labels(&mut p.attributes()), p.value() as f64));
            }
        }
        AggregatedMetrics::F64(MetricData::Sum(s)) => {
            for p in s.data_points() {
                rows.push((labels(&mut p.attributes()), p.value()));
            }
        }
        AggregatedMetrics::F64(MetricData::Gauge(g)) => {
            for p in g.data_points() {
                rows.push((labels(&mut p.attributes()), p.value()));
            }
        }
        AggregatedMetrics::U64(MetricData::Gauge(g)) => {
            for p in g.data_points() {
                rows.push((labels(&mut p.attributes()), p.value() as f64));
            }
        }
        _ => {}
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (l, v) in rows {
        let pairs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        f.value(&pairs, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::kv;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn families_follow_declarations_and_read_the_atomics_at_collection() {
        let t = SelfMetrics::default();
        let n = Arc::new(AtomicU64::new(0));
        let c = n.clone();
        t.counter("x_things_total", "Things.", "", move |o| {
            // labels in either order come out sorted by key
            o.observe(c.load(Ordering::Relaxed), &kv([("b", "2"), ("a", "x")]));
            o.observe(7, &kv([("a", "x"), ("b", "1")]));
        });
        t.gauge("x_empty", "Nothing observed.", "By", |_| {});
        n.store(5, Ordering::Relaxed);
        let f = families(&t);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "x_things_total");
        assert_eq!(f[0].kind, Kind::Counter);
        let got: Vec<(Vec<(&str, &str)>, f64)> = f[0]
            .series
            .iter()
            .map(|s| {
                let v = match s.point {
                    crate::metrics::snapshot::Point::Value(v) => v,
                    _ => f64::NAN,
                };
                (f[0].labels_of(s).collect(), v)
            })
            .collect();
        let want = vec![
            (vec![("a", "x"), ("b", "1")], 7.0),
            (vec![("a", "x"), ("b", "2")], 5.0),
        ];
        assert_eq!(got, want);
        assert_eq!(
            (f[1].name.as_str(), f[1].unit.as_str()),
            ("x_empty", "bytes")
        );
        assert!(f[1].series.is_empty());
        n.store(9, Ordering::Relaxed);
        let f = families(&t);
        assert!(matches!(
            f[0].series[1].point,
            crate::metrics::snapshot::Point::Value(v) if v == 9.0
        ));
    }

    #[test]
    fn attribute_sets_not_observed_any_more_go_away() {
        let t = SelfMetrics::default();
        let on = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let o2 = on.clone();
        t.counter("x_total", "x", "", move |o| {
            if o2.load(Ordering::Relaxed) {
                o.observe(1, &[KeyValue::new("metric", "gone".to_string())]);
            }
            o.observe(1, &[KeyValue::new("metric", "kept".to_string())]);
        });
        assert_eq!(families(&t)[0].series.len(), 2);
        on.store(false, Ordering::Relaxed);
        assert_eq!(families(&t)[0].series.len(), 1);
    }

    #[test]
    fn past_the_wide_limit_series_fold_into_a_valid_overflow_label() {
        let t = SelfMetrics::new(None, 64);
        t.gauge(
            "geometra_sidecar_series",
            "Live series per metric.",
            "",
            |o| {
                for i in 0..100 {
                    o.observe(1.0, &[KeyValue::new("metric", format!("m{i}"))]);
                }
            },
        );
        let f = families(&t);
        // the limit, and one overflow series past it
        assert_eq!(f[0].series.len(), 65);
        let overflow: Vec<Vec<(&str, &str)>> = f[0]
            .series
            .iter()
            .map(|s| f[0].labels_of(s).collect::<Vec<_>>())
            .filter(|l| l.iter().any(|(k, _)| k.starts_with("otel")))
            .collect();
        assert_eq!(overflow, vec![vec![("otel_metric_overflow", "true")]]);
    }
}
