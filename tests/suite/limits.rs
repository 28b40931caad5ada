//! Bounded under abuse (issue 8, C.10 and C.11): a global series bound
//! across all metrics with RSS measured at it, pass-through's share of it
//! leaving room for the derived metrics, a cap on pass-through families
//! counted as `family_limit`, and families whose series all expired
//! freeing their slot for later metrics.

use crate::common;

use common::{rss_kib, send_raw, strict, Metrics, Sidecar, TRACES};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::time::{Duration, Instant};

fn gauge(name: &str, unit: &str, series: std::ops::Range<usize>, label: &str) -> Metric {
    let points = series
        .map(|i| NumberDataPoint {
            attributes: vec![KeyValue {
                key: "id".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("{label}{i}"))),
                }),
                ..Default::default()
            }],
            value: Some(number_data_point::Value::AsDouble(i as f64)),
            ..Default::default()
        })
        .collect();
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

/// Floods 200 metrics x 1,000 series with labels of `label_bytes`, then
/// checks the global bound held, both formats parse, and RSS stays within
/// the Helm chart's 64 MiB limit after scraping both formats.
async fn flood(label_bytes: usize, config: &str) -> (Sidecar, Metrics, u64) {
    let sc = Sidecar::start(config).await;
    let pad = "x".repeat(label_bytes);
    for m in 0..200 {
        let metrics = vec![gauge(&format!("flood_{m}"), "", 0..1000, &pad)];
        sc.send_metrics(metrics).await;
    }
    let text = sc.scrape_text().await;
    let om = sc.scrape_openmetrics().await;
    if let Err(e) = strict::check(&text, false).and_then(|_| strict::check(&om, true)) {
        panic!("/metrics broken at the cap: {e}");
    }
    let rss = rss_kib(sc.pid());
    println!(
        "global cap, labels of {label_bytes} B: RSS {rss} KiB, scrape {} KiB",
        text.len() / 1024
    );
    let m = Metrics::parse(&text);
    (sc, m, rss)
}

/// The whole budget open to pass-through, so a flood of app metrics
/// reaches the global bound itself.
const ALL_TO_PASSTHROUGH: &str = "store:\n  passthrough_share_percent: 100\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_global_series_bound_holds_and_rss_stays_in_the_helm_limit() {
    // short labels: the series count (50,000) is the bound
    let (_sc, m, rss) = flood(8, ALL_TO_PASSTHROUGH).await;
    let live = m
        .value("geometra_sidecar_store_series", &[])
        .unwrap_or(-1.0);
    assert_eq!(live, 50_000.0);
    let series: usize = m
        .samples
        .iter()
        .filter(|s| s.name.starts_with("flood_"))
        .count();
    assert!(series <= 50_000 + 200, "{series} series exposed");
    assert_eq!(
        m.value("geometra_sidecar_series_global_overflow_total", &[]),
        Some(150_000.0)
    );
    assert!(rss < 64 * 1024, "RSS {rss} KiB at the series bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_global_bytes_bound_holds_with_long_labels() {
    // 1 KiB labels: the estimated bytes (8 MiB) are the bound
    let (_sc, m, rss) = flood(1000, ALL_TO_PASSTHROUGH).await;
    let bytes = m
        .value("geometra_sidecar_store_series_bytes", &[])
        .unwrap_or(-1.0);
    assert!(bytes > 0.0 && bytes <= (8 << 20) as f64, "{bytes}");
    assert!(m.value("geometra_sidecar_store_series", &[]) < Some(50_000.0));
    assert!(m.value("geometra_sidecar_series_global_overflow_total", &[]) > Some(0.0));
    assert!(m.text.len() < 12 << 20, "scrape of {} bytes", m.text.len());
    assert!(rss < 64 * 1024, "RSS {rss} KiB at the bytes bound");
}

/// One request of SERVER spans, one per route.
fn spans_on_routes(routes: std::ops::Range<usize>) -> Vec<u8> {
    let st = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    };
    let spans = routes
        .map(|i| Span {
            kind: 2,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_010_000_000,
            attributes: vec![
                st("http.request.method", "GET".into()),
                st("http.route", format!("/r{i}")),
            ],
            ..Default::default()
        })
        .collect();
    common::traces_request(spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_a_passthrough_flood_leaves_room_for_the_derived_metrics() {
    // an app's metrics with a unique label per point: pass-through may take
    // half the series (the default share), never the derived metrics' room
    let (sc, m, _rss) = flood(8, "").await;
    let share = |m: &Metrics| m.value("geometra_sidecar_passthrough_series", &[]);
    assert_eq!(share(&m), Some(25_000.0), "pass-through held to its share");
    assert_eq!(
        m.value("geometra_sidecar_passthrough_share_overflow_total", &[]),
        Some(175_000.0)
    );
    assert_eq!(
        m.value("geometra_sidecar_series_global_overflow_total", &[]),
        Some(0.0)
    );
    // the back end's requests on 300 routes: each gets its own series
    let r = send_raw(&sc.grpc_url(), TRACES, spans_on_routes(0..300), false).await;
    assert!(r.is_ok(), "{r:?}");
    let m = sc
        .wait_for("the derived series", |m| {
            m.label_sets("http_requests_total").len() >= 300
        })
        .await;
    let sets = m.label_sets("http_requests_total");
    assert_eq!(sets.len(), 300, "no overflow series");
    assert!(sets
        .iter()
        .all(|l| l.get("endpoint").is_some_and(|e| e.starts_with("/r"))));
    assert_eq!(
        m.value("geometra_sidecar_series_global_overflow_total", &[]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_passthrough_family_cap_is_counted_as_family_limit() {
    let sc = Sidecar::start("store:\n  max_passthrough_families: 5\n").await;
    let metrics = (0..8)
        .map(|i| gauge(&format!("fam_{i}"), "", 0..1, ""))
        .collect();
    sc.send_metrics(metrics).await;
    let m = sc.scrape().await;
    assert_eq!(
        m.value(
            "geometra_sidecar_passthrough_dropped_points_total",
            &[("reason", "family_limit")]
        ),
        Some(3.0)
    );
    assert_eq!(
        m.value(
            "geometra_sidecar_passthrough_dropped_points_total",
            &[("reason", "invalid_name")]
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c11_expired_families_free_their_slot() {
    let sc = Sidecar::start("store:\n  series_ttl: 1s\n  max_passthrough_families: 3\n").await;
    let metrics = (0..3)
        .map(|i| gauge(&format!("old_{i}"), "", 0..2, ""))
        .collect();
    sc.send_metrics(metrics).await;
    sc.send_metrics(vec![gauge("memory.size", "By", 0..1, "")])
        .await;
    let m = sc.scrape().await;
    assert_eq!(m.value("memory_size_bytes", &[]), None);
    assert_eq!(
        m.value(
            "geometra_sidecar_passthrough_dropped_points_total",
            &[("reason", "family_limit")]
        ),
        Some(1.0)
    );
    // once the old families' series expired, memory.size gets a slot
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        sc.send_metrics(vec![gauge("memory.size", "By", 0..1, "")])
            .await;
        let m = sc.scrape().await;
        if m.value("memory_size_bytes", &[("id", "0")]) == Some(0.0) {
            assert!(m.label_sets("old_0").is_empty());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "memory.size still refused after the old families expired:\n{}",
            m.text
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
