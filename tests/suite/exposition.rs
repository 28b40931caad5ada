//! No request can break `/metrics`: one regression test per case of issue 8
//! part A. Each sends the hostile OTLP input to a real sidecar, then checks
//! both exposition formats with the strict checker, promtool and
//! prometheus_client (tests/common/strict.rs), and that the refusal was
//! counted with an honest reason.

use crate::common;

use common::{send_raw, strict, Metrics, Sidecar, TRACES};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, Sum,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn st(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn point(v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn sum(name: &str, monotonic: bool, delta: bool, points: Vec<NumberDataPoint>) -> Metric {
    let t = if delta {
        AggregationTemporality::Delta
    } else {
        AggregationTemporality::Cumulative
    };
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: t as i32,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

fn hist_point(bounds: Vec<f64>, counts: Vec<u64>, count: u64, s: f64) -> HistogramDataPoint {
    HistogramDataPoint {
        explicit_bounds: bounds,
        bucket_counts: counts,
        count,
        sum: Some(s),
        ..Default::default()
    }
}

fn hist(name: &str, delta: bool, points: Vec<HistogramDataPoint>) -> Metric {
    let t = if delta {
        AggregationTemporality::Delta
    } else {
        AggregationTemporality::Cumulative
    };
    Metric {
        name: name.into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: t as i32,
        })),
        ..Default::default()
    }
}

/// Both formats pass every check; returns the parsed text format.
async fn both_formats_parse(sc: &Sidecar) -> Metrics {
    let text = sc.scrape_text().await;
    let om = sc.scrape_openmetrics().await;
    if let Err(e) = strict::check_all(&text, &om) {
        panic!("/metrics is broken: {e}");
    }
    Metrics::parse(&text)
}

fn dropped(m: &Metrics, reason: &str) -> f64 {
    m.sum(
        "geometra_sidecar_passthrough_dropped_points_total",
        &[("reason", reason)],
    )
}

/// The u16 length prefix of a series key part: bytes that, with a label
/// value of exactly 65,536 bytes, read as more label pairs after the wrap.
fn wrapping_value() -> String {
    let part = |out: &mut String, s: &str| {
        let n = s.len();
        out.push(char::from((n & 0xff) as u8));
        out.push(char::from((n >> 8) as u8));
        out.push_str(s);
    };
    let mut v = String::new();
    part(&mut v, "a=\"b\"} 1\nup{job=\"geometra-api\"} 0\nx{b");
    part(&mut v, "");
    let mut i = 0;
    loop {
        let left = 65_536 - v.len();
        if left < 32_000 {
            // the last pair fills exactly; both length bytes stay ASCII
            let name_len = (1..=100)
                .find(|nl| {
                    let n = left - 4 - nl;
                    (n & 0xff) < 0x80 && (n >> 8) < 0x80
                })
                .expect("a fitting split");
            part(&mut v, &"f".repeat(name_len));
            part(&mut v, &"z".repeat(left - 4 - name_len));
            break;
        }
        part(&mut v, &format!("f{i}"));
        part(&mut v, &"z".repeat(20_000));
        i += 1;
    }
    assert_eq!(v.len(), 65_536);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_label_value_past_64k_cannot_inject_lines() {
    let sc = Sidecar::start("").await;
    sc.send_metrics(vec![gauge(
        "injected",
        vec![point(1.0, vec![st("key", &wrapping_value())])],
    )])
    .await;
    // a derived label past the bound too (an http.route of 70 KB)
    let span = Span {
        kind: 2,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_010_000_000,
        attributes: vec![
            st("http.request.method", "GET"),
            st("http.route", &"r".repeat(70_000)),
        ],
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    send_raw(&sc.grpc_url(), TRACES, req.encode_to_vec(), false)
        .await
        .expect("accepted");
    let text = sc.scrape_text().await;
    assert!(
        !text.lines().any(|l| l.starts_with("up{")),
        "a label value injected a sample line:\n{}",
        text.lines()
            .filter(|l| l.starts_with("up{"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let m = both_formats_parse(&sc).await;
    assert_eq!(dropped(&m, "label_too_long"), 1.0);
    assert_eq!(
        m.value(
            "geometra_sidecar_derive_skipped_total",
            &[
                ("rule", "http_requests_total"),
                ("reason", "label_too_long")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_empty_and_symbol_only_metric_names_are_refused() {
    let sc = Sidecar::start("").await;
    for name in ["", "!!!", "___"] {
        sc.send_metrics(vec![gauge(name, vec![point(1.0, vec![])])])
            .await;
    }
    let m = both_formats_parse(&sc).await;
    assert_eq!(dropped(&m, "invalid_name"), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_empty_reserved_and_le_label_keys_are_renamed() {
    let sc = Sidecar::start("").await;
    sc.send_metrics(vec![
        gauge(
            "g_empty_key",
            vec![point(1.0, vec![st("", "x"), st("__name__", "evil")])],
        ),
        hist(
            "h_le",
            false,
            vec![HistogramDataPoint {
                attributes: vec![st("le", "0.5"), st("quantile", "q")],
                ..hist_point(vec![1.0], vec![1, 1], 2, 1.5)
            }],
        ),
    ])
    .await;
    let m = both_formats_parse(&sc).await;
    assert_eq!(
        m.value("g_empty_key", &[("key_", "x"), ("key__name__", "evil")]),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(m.value("h_le_count", &[("key_le", "0.5")]), Some(2.0));
    assert!(
        m.sum(
            "geometra_sidecar_passthrough_renamed_total",
            &[("what", "label")]
        ) >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_a_point_with_100k_attributes_is_bounded() {
    let sc = Sidecar::start("").await;
    let attrs = (0..100_000).map(|i| st(&format!("k{i}"), "v")).collect();
    sc.send_metrics(vec![gauge("wide", vec![point(1.0, attrs)])])
        .await;
    let m = both_formats_parse(&sc).await;
    assert_eq!(dropped(&m, "too_many_labels"), 1.0);
    assert!(!m.text.contains("\nwide"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_names_of_the_sidecars_own_metrics_are_refused() {
    let sc = Sidecar::start("").await;
    sc.send_metrics(vec![
        sum("process.cpu.seconds", true, false, vec![point(1.0, vec![])]),
        sum("process_cpu_seconds", true, false, vec![point(1.0, vec![])]),
        gauge("target_info", vec![point(1.0, vec![])]),
        sum(
            "otelcol_receiver_accepted_spans",
            true,
            false,
            vec![point(5.0, vec![])],
        ),
        gauge("geometra_sidecar_build_info", vec![point(1.0, vec![])]),
        gauge("http_requests_total", vec![point(1.0, vec![])]),
        gauge(
            "http_request_duration_seconds_count",
            vec![point(1.0, vec![])],
        ),
    ])
    .await;
    let m = both_formats_parse(&sc).await;
    assert_eq!(dropped(&m, "name_clash"), 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_histogram_beside_its_suffixed_names_is_refused() {
    let sc = Sidecar::start("").await;
    sc.send_metrics(vec![
        hist("hs", false, vec![hist_point(vec![1.0], vec![1, 1], 2, 1.0)]),
        gauge("hs_count", vec![point(1.0, vec![])]),
        gauge("hs_bucket", vec![point(1.0, vec![])]),
        gauge("hs_sum", vec![point(1.0, vec![])]),
    ])
    .await;
    // and the other order: the suffixed gauge first
    sc.send_metrics(vec![
        gauge("h2_bucket", vec![point(1.0, vec![])]),
        hist("h2", false, vec![hist_point(vec![1.0], vec![1, 1], 2, 1.0)]),
    ])
    .await;
    let m = both_formats_parse(&sc).await;
    assert_eq!(dropped(&m, "name_clash"), 4.0);
    assert_eq!(m.value("hs_count", &[]), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_openmetrics_suffix_clashes_are_refused() {
    let sc = Sidecar::start("").await;
    sc.send_metrics(vec![
        // a counter `jobs` is `jobs_total` (family `jobs` in OpenMetrics)
        sum("jobs", true, false, vec![point(1.0, vec![])]),
        gauge("jobs", vec![point(1.0, vec![])]),
        gauge("jobs_created", vec![point(1.0, vec![])]),
        gauge("jobs_total", vec![point(1.0, vec![])]),
    ])
    .await;
    let m = both_formats_parse(&sc).await;
    assert_eq!(dropped(&m, "name_clash"), 3.0);
    assert_eq!(m.value("jobs_total", &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_values_the_format_forbids_are_refused() {
    let sc = Sidecar::start("").await;
    sc.send_metrics(vec![
        sum(
            "c_bad",
            true,
            false,
            vec![
                point(f64::NAN, vec![st("v", "nan")]),
                point(-1.0, vec![st("v", "neg")]),
                point(f64::NEG_INFINITY, vec![st("v", "ninf")]),
                point(3.0, vec![st("v", "ok")]),
            ],
        ),
        // a gauge may be anything
        gauge(
            "g_any",
            vec![point(f64::NAN, vec![]), point(-2.0, vec![st("a", "b")])],
        ),
    ])
    .await;
    // a delta sum of -5 after +3: a counter never goes down
    sc.send_metrics(vec![sum("d_total", true, true, vec![point(3.0, vec![])])])
        .await;
    sc.send_metrics(vec![sum("d_total", true, true, vec![point(-5.0, vec![])])])
        .await;
    let m = both_formats_parse(&sc).await;
    assert_eq!(dropped(&m, "bad_value"), 4.0);
    assert_eq!(m.value("c_bad_total", &[("v", "ok")]), Some(3.0));
    assert_eq!(m.value("d_total", &[]), Some(3.0));
    assert_eq!(m.value("g_any", &[("a", "b")]), Some(-2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_negative_token_counts_never_lower_a_derived_counter() {
    let sc = Sidecar::start("").await;
    let span = |tokens: i64| Span {
        kind: 3,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_010_000_000,
        attributes: vec![
            st("gen_ai.operation.name", "chat"),
            KeyValue {
                key: "gen_ai.usage.input_tokens".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(tokens)),
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span(10), span(-1_000)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    send_raw(&sc.grpc_url(), TRACES, req.encode_to_vec(), false)
        .await
        .expect("accepted");
    let m = both_formats_parse(&sc).await;
    assert_eq!(
        m.value("ai_tokens_total", &[("token_type", "input")]),
        Some(10.0)
    );
    assert_eq!(
        m.value(
            "geometra_sidecar_derive_skipped_total",
            &[("rule", "ai_tokens_total"), ("reason", "bad_value")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_inconsistent_histograms_are_refused() {
    let sc = Sidecar::start("").await;
    let big = u64::MAX / 2 + 1;
    sc.send_metrics(vec![
        // count is not the sum of the buckets
        hist(
            "h_count",
            false,
            vec![hist_point(vec![1.0], vec![1, 1], 5, 1.0)],
        ),
        // non-finite bounds
        hist(
            "h_inf",
            false,
            vec![hist_point(vec![f64::INFINITY], vec![1, 1], 2, 1.0)],
        ),
        hist(
            "h_nan",
            false,
            vec![hist_point(vec![f64::NAN], vec![1, 1], 2, 1.0)],
        ),
        hist(
            "h_ninf",
            false,
            vec![hist_point(
                vec![f64::NEG_INFINITY, 1.0],
                vec![0, 1, 1],
                2,
                1.0,
            )],
        ),
        // unsorted bounds
        hist(
            "h_order",
            false,
            vec![hist_point(vec![2.0, 1.0], vec![1, 1, 1], 3, 1.0)],
        ),
        // buckets summing past 2^64 in one point
        hist(
            "h_wrap",
            false,
            vec![hist_point(vec![1.0], vec![big, big], 0, 1.0)],
        ),
        // a NaN sum
        hist(
            "h_nansum",
            false,
            vec![hist_point(vec![1.0], vec![1, 1], 2, f64::NAN)],
        ),
    ])
    .await;
    // a delta histogram whose accumulated buckets would wrap past 2^64
    for _ in 0..2 {
        sc.send_metrics(vec![hist(
            "h_dwrap",
            true,
            vec![hist_point(vec![1.0], vec![big, 0], big, 1.0)],
        )])
        .await;
    }
    // negative bounds are fine (OpenMetrics then has no _sum)
    sc.send_metrics(vec![hist(
        "h_neg",
        false,
        vec![hist_point(vec![-1.0, 1.0], vec![1, 1, 1], 3, -0.5)],
    )])
    .await;
    let m = both_formats_parse(&sc).await;
    assert_eq!(dropped(&m, "invalid_histogram"), 8.0, "{}", m.text);
    assert_eq!(
        m.buckets("h_dwrap", &[]),
        Some(vec![(1.0, big as f64), (f64::INFINITY, big as f64)])
    );
    assert_eq!(m.value("h_neg_count", &[]), Some(3.0));
}
