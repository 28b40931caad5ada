//! A [`Snapshot`] as a remote-write 1.0 `WriteRequest`: the series a scrape
//! of `/metrics` would give Prometheus, one sample each at the snapshot's
//! time.
//!
//! - counters and gauges: one series (`__name__` = the family's name);
//! - classic histograms: `_bucket` series with a cumulative count per `le`
//!   (written as `/metrics` writes it: `0.005`, `1.0`, `+Inf`), `_sum` and
//!   `_count`; a bucket's exemplar rides on its `_bucket` series;
//! - native histograms: one series under the family's name carrying a
//!   `Histogram` (integer counts, spans and deltas); with both kinds, both
//!   are sent, as Prometheus stores a scrape of both;
//! - summaries: a series per `quantile`, `_sum` and `_count`.
//!
//! Labels are sorted by name (the protocol asks for it) and labels with an
//! empty value are left out (in Prometheus an empty label is no label).
//! External labels are added to every series that has no label of that
//! name: the series' own label wins, as in Prometheus' own remote write
//! (`external_labels` there never override a series' labels).

use crate::metrics::snapshot::{
    Buckets, Exemplar, Family, Histogram, Kind, Native, Point, Series, Snapshot,
};
use crate::proto::remote::{
    histogram, metric_metadata::MetricType, BucketSpan, Exemplar as PbExemplar,
    Histogram as PbHistogram, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};

/// Builds requests; keeps the external labels, sorted.
pub struct Translator {
    external: Vec<(String, String)>,
}

impl Translator {
    pub fn new(external: &std::collections::BTreeMap<String, String>) -> Self {
        Translator {
            external: external
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The request for a whole snapshot.
    pub fn request(&self, snap: &Snapshot) -> WriteRequest {
        let mut req = WriteRequest::default();
        for f in &snap.families {
            req.metadata.push(metadata(f));
            for s in &f.series {
                self.series(&mut req.timeseries, f, s, snap.timestamp_ms);
            }
        }
        req
    }

    /// Sorted labels: `__name__`, the series', an extra one (`le`,
    /// `quantile`), then the external labels the series lacks.
    fn labels(
        &self,
        name: String,
        f: &Family,
        s: &Series,
        extra: Option<(&str, String)>,
    ) -> Vec<Label> {
        let mut out = Vec::with_capacity(f.labels_of(s).len() + 2 + self.external.len());
        out.push(Label {
            name: "__name__".into(),
            value: name,
        });
        for (k, v) in f.labels_of(s).filter(|(_, v)| !v.is_empty()) {
            out.push(Label {
                name: k.into(),
                value: v.into(),
            });
        }
        if let Some((k, v)) = extra {
            out.push(Label {
                name: k.into(),
                value: v,
            });
        }
        for (k, v) in &self.external {
            if !out.iter().any(|l| &l.name == k) {
                out.push(Label {
                    name: k.clone(),
                    value: v.clone(),
                });
            }
        }
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn series(&self, out: &mut Vec<TimeSeries>, f: &Family, s: &Series, ts: i64) {
        let sample = |labels: Vec<Label>, value: f64| TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: ts,
            }],
            ..Default::default()
        };
        match &s.point {
            Point::Value(v) => out.push(sample(self.labels(f.name.clone(), f, s, None), *v)),
            Point::Histogram(h) => self.histogram(out, f, s, &f.histogram(*h), ts),
            Point::Summary(q) => {
                let q = f.summary(*q);
                for (quantile, v) in q.quantiles {
                    let l = self.labels(
                        f.name.clone(),
                        f,
                        s,
                        Some(("quantile", fmt_bound(*quantile))),
                    );
                    out.push(sample(l, *v));
                }
                out.push(sample(
                    self.labels(format!("{}_sum", f.name), f, s, None),
                    q.sum,
                ));
                out.push(sample(
                    self.labels(format!("{}_count", f.name), f, s, None),
                    q.count as f64,
                ));
            }
        }
    }

    fn histogram(&self, out: &mut Vec<TimeSeries>, f: &Family, s: &Series, h: &Histogram, ts: i64) {
        if let Some(n) = &h.native {
            out.push(TimeSeries {
                labels: self.labels(f.name.clone(), f, s, None),
                histograms: vec![native(h, n, ts)],
                ..Default::default()
            });
        }
        // a native-only histogram still gets _sum and _count, as Prometheus
        // gives no float series for it otherwise
        if let Some(c) = &h.classic {
            let mut cum = 0u64;
            for (i, n) in c.counts.iter().enumerate() {
                cum = cum.saturating_add(*n);
                let le = c
                    .bounds
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| fmt_bound(*b));
                let labels = self.labels(format!("{}_bucket", f.name), f, s, Some(("le", le)));
                let exemplars = match c.exemplars.get(i) {
                    Some(Some(e)) => vec![exemplar(e)],
                    _ => Vec::new(),
                };
                out.push(TimeSeries {
                    labels,
                    samples: vec![Sample {
                        value: cum as f64,
                        timestamp: ts,
                    }],
                    exemplars,
                    ..Default::default()
                });
            }
        }
        for (suffix, v) in [("_sum", h.sum), ("_count", h.count as f64)] {
            out.push(TimeSeries {
                labels: self.labels(format!("{}{suffix}", f.name), f, s, None),
                samples: vec![Sample {
                    value: v,
                    timestamp: ts,
                }],
                ..Default::default()
            });
        }
    }
}

fn metadata(f: &Family) -> MetricMetadata {
    let t = match f.kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Histogram => MetricType::Histogram,
        Kind::Summary => MetricType::Summary,
    };
    MetricMetadata {
        r#type: t as i32,
        // the family's name as the text format's # TYPE line gives it
        metric_family_name: f.name.clone(),
        help: f.help.clone(),
        unit: f.unit.clone(),
    }
}

/// A bound as `/metrics` writes it: `1.0` for integers, else shortest form.
fn fmt_bound(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}.0", v as i64)
    } else {
        format!("{v}")
    }
}

fn exemplar(e: &Exemplar) -> PbExemplar {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    PbExemplar {
        labels: vec![
            Label {
                name: "span_id".into(),
                value: hex(&e.span_id),
            },
            Label {
                name: "trace_id".into(),
                value: hex(&e.trace_id),
            },
        ],
        value: e.value,
        timestamp: (e.time_ns / 1_000_000) as i64,
    }
}

fn native(h: &Histogram, n: &Native, ts: i64) -> PbHistogram {
    let (positive_spans, positive_deltas) = spans(&n.positive);
    let (negative_spans, negative_deltas) = spans(&n.negative);
    PbHistogram {
        count: Some(histogram::Count::CountInt(h.count)),
        sum: h.sum,
        schema: n.schema,
        zero_threshold: n.zero_threshold,
        zero_count: Some(histogram::ZeroCount::ZeroCountInt(n.zero_count)),
        negative_spans,
        negative_deltas,
        positive_spans,
        positive_deltas,
        // cumulative data from a process that may restart: let the receiver tell
        reset_hint: histogram::ResetHint::Unknown as i32,
        timestamp: ts,
        ..Default::default()
    }
}

/// Dense counts (bucket `offset + i`, Prometheus' index: bucket `k` covers
/// `(base^(k-1), base^k]`) as spans over the non-empty buckets and the
/// deltas between consecutive non-empty buckets' counts.
pub fn spans(b: &Buckets) -> (Vec<BucketSpan>, Vec<i64>) {
    let (mut spans, mut deltas): (Vec<BucketSpan>, Vec<i64>) = (Vec::new(), Vec::new());
    let mut prev_count = 0i64;
    // index one past the end of the last span (where the next gap starts)
    let mut end: Option<i64> = None;
    for (i, c) in b.counts.iter().enumerate() {
        if *c == 0 {
            continue;
        }
        let idx = b.offset as i64 + i as i64;
        match spans.last_mut() {
            Some(last) if end == Some(idx) => last.length += 1,
            _ => spans.push(BucketSpan {
                offset: (idx - end.unwrap_or(0)) as i32,
                length: 1,
            }),
        }
        end = Some(idx + 1);
        let c = (*c).min(i64::MAX as u64) as i64;
        deltas.push(c.wrapping_sub(prev_count));
        prev_count = c;
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::snapshot::{Classic, Summary};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn names(ts: &TimeSeries) -> Vec<(&str, &str)> {
        ts.labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect()
    }

    fn snap(families: Vec<Family>) -> Snapshot {
        Snapshot {
            families,
            timestamp_ms: 1_700_000_000_000,
        }
    }

    fn ext(pairs: &[(&str, &str)]) -> Translator {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Translator::new(&m)
    }

    #[test]
    fn counters_and_gauges_are_one_sorted_series_each() {
        let mut c = Family::new("req_total", Kind::Counter, "requests");
        c.value(&[("route", "/a"), ("Code", "200"), ("empty", "")], 5.0);
        let mut g = Family::new("up", Kind::Gauge, "");
        g.value(&[], 1.0);
        let req = ext(&[]).request(&snap(vec![c, g]));
        assert_eq!(req.timeseries.len(), 2);
        // byte order: upper case sorts before `__name__`; the empty label is gone
        assert_eq!(
            names(&req.timeseries[0]),
            vec![("Code", "200"), ("__name__", "req_total"), ("route", "/a")]
        );
        assert_eq!(
            req.timeseries[0].samples,
            vec![Sample {
                value: 5.0,
                timestamp: 1_700_000_000_000
            }]
        );
        assert_eq!(names(&req.timeseries[1]), vec![("__name__", "up")]);
        assert_eq!(req.metadata.len(), 2);
        assert_eq!(req.metadata[0].r#type, MetricType::Counter as i32);
        assert_eq!(req.metadata[0].help, "requests");
    }

    #[test]
    fn external_labels_are_added_but_a_series_label_wins() {
        let mut g = Family::new("up", Kind::Gauge, "");
        g.value(&[("cluster", "own")], 1.0);
        g.value(&[], 1.0);
        let req = ext(&[("cluster", "eu-1"), ("replica", "a")]).request(&snap(vec![g]));
        assert_eq!(
            names(&req.timeseries[0]),
            vec![("__name__", "up"), ("cluster", "own"), ("replica", "a")]
        );
        assert_eq!(
            names(&req.timeseries[1]),
            vec![("__name__", "up"), ("cluster", "eu-1"), ("replica", "a")]
        );
    }

    #[test]
    fn classic_histograms_are_cumulative_buckets_sum_and_count_with_exemplars() {
        let mut f = Family::new("lat_seconds", Kind::Histogram, "");
        let ex = Exemplar {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            value: 0.7,
            time_ns: 1_700_000_000_123_456_789,
        };
        let h = Histogram {
            count: 6,
            sum: 3.5,
            classic: Some(Classic {
                bounds: &Arc::from(vec![0.005, 1.0]),
                counts: &[1, 3, 2],
                exemplars: &[None, Some(ex), None],
            }),
            native: None,
        };
        f.push_histogram(&[("op", "x")], h, None);
        let req = ext(&[]).request(&snap(vec![f]));
        let got: Vec<(Vec<(&str, &str)>, f64)> = req
            .timeseries
            .iter()
            .map(|t| (names(t), t.samples[0].value))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    vec![
                        ("__name__", "lat_seconds_bucket"),
                        ("le", "0.005"),
                        ("op", "x")
                    ],
                    1.0
                ),
                (
                    vec![
                        ("__name__", "lat_seconds_bucket"),
                        ("le", "1.0"),
                        ("op", "x")
                    ],
                    4.0
                ),
                (
                    vec![
                        ("__name__", "lat_seconds_bucket"),
                        ("le", "+Inf"),
                        ("op", "x")
                    ],
                    6.0
                ),
                (vec![("__name__", "lat_seconds_sum"), ("op", "x")], 3.5),
                (vec![("__name__", "lat_seconds_count"), ("op", "x")], 6.0),
            ]
        );
        let e = &req.timeseries[1].exemplars;
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].value, 0.7);
        assert_eq!(e[0].timestamp, 1_700_000_000_123);
        assert_eq!(e[0].labels[1].value, "ab".repeat(16));
        assert_eq!(e[0].labels[0].value, "01".repeat(8));
        assert!(req.timeseries[0].exemplars.is_empty());
    }

    #[test]
    fn native_buckets_become_spans_and_deltas() {
        // indexes -2 -1 0 1 2 3 4 5: counts 3 0 0 5 5 0 0 1 ... trailing zero
        let b = Buckets {
            offset: -2,
            counts: &[3, 0, 0, 5, 5, 0, 0, 1, 0],
        };
        let (s, d) = spans(&b);
        assert_eq!(
            s,
            vec![
                BucketSpan {
                    offset: -2,
                    length: 1
                },
                BucketSpan {
                    offset: 2,
                    length: 2
                },
                BucketSpan {
                    offset: 2,
                    length: 1
                },
            ]
        );
        assert_eq!(d, vec![3, 2, 0, -4]);
        assert_eq!(spans(&Buckets::default()), (vec![], vec![]));
        assert_eq!(
            spans(&Buckets {
                offset: 7,
                counts: &[0, 0]
            }),
            (vec![], vec![])
        );
    }

    #[test]
    fn native_histograms_carry_schema_zero_bucket_and_both_sides() {
        let mut f = Family::new("lat_seconds", Kind::Histogram, "");
        let h = Histogram {
            count: 10,
            sum: -1.5,
            classic: None,
            native: Some(Native {
                schema: 3,
                zero_threshold: 1e-9,
                zero_count: 2,
                positive: Buckets {
                    offset: 4,
                    counts: &[1, 2],
                },
                negative: Buckets {
                    offset: 0,
                    counts: &[5],
                },
            }),
        };
        f.push_histogram(&[], h, None);
        let req = ext(&[("env", "t")]).request(&snap(vec![f]));
        // the native series, then _sum and _count
        assert_eq!(req.timeseries.len(), 3);
        let t = &req.timeseries[0];
        assert_eq!(names(t), vec![("__name__", "lat_seconds"), ("env", "t")]);
        assert!(t.samples.is_empty());
        let h = &t.histograms[0];
        assert_eq!(h.count, Some(histogram::Count::CountInt(10)));
        assert_eq!(h.zero_count, Some(histogram::ZeroCount::ZeroCountInt(2)));
        assert_eq!((h.schema, h.zero_threshold, h.sum), (3, 1e-9, -1.5));
        assert_eq!(
            h.positive_spans,
            vec![BucketSpan {
                offset: 4,
                length: 2
            }]
        );
        assert_eq!(h.positive_deltas, vec![1, 1]);
        assert_eq!(
            h.negative_spans,
            vec![BucketSpan {
                offset: 0,
                length: 1
            }]
        );
        assert_eq!(h.negative_deltas, vec![5]);
        assert_eq!(h.timestamp, 1_700_000_000_000);
        assert_eq!(
            names(&req.timeseries[2])[0],
            ("__name__", "lat_seconds_count")
        );
    }

    #[test]
    fn summaries_are_quantile_series_sum_and_count() {
        let mut f = Family::new("rpc_seconds", Kind::Summary, "");
        let q = Summary {
            count: 4,
            sum: 2.0,
            quantiles: &[(0.5, 0.4), (1.0, 0.9)],
        };
        f.push_summary(&[], q, None);
        let req = ext(&[]).request(&snap(vec![f]));
        let got: Vec<(Vec<(&str, &str)>, f64)> = req
            .timeseries
            .iter()
            .map(|t| (names(t), t.samples[0].value))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![("__name__", "rpc_seconds"), ("quantile", "0.5")], 0.4),
                (vec![("__name__", "rpc_seconds"), ("quantile", "1.0")], 0.9),
                (vec![("__name__", "rpc_seconds_sum")], 2.0),
                (vec![("__name__", "rpc_seconds_count")], 4.0),
            ]
        );
    }
}
