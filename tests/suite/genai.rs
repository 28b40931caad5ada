//! The GenAI metrics (issue 23) end to end: spans as the GenAI
//! instrumentations send them, through the OpenTelemetry SDK's OTLP/gRPC
//! exporter, read back from `/metrics`: the semantic-convention histograms
//! under their Prometheus names, token details, time to first chunk, cost
//! from a price table, unpriced models, the model label's cap, and the
//! newer conventions behind `ai.conventions`.

use crate::common;

use crate::contract::{send_spans as send, S};
use common::{Metrics, Sidecar};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use std::path::Path;

/// One GenAI client span (contract.rs's span sender): its attributes and
/// duration.
fn g(millis: u64, attrs: Vec<KeyValue>) -> S {
    crate::contract::s("chat gpt-4o-mini", SpanKind::Client, millis, attrs)
}

fn s(k: &'static str, v: &'static str) -> KeyValue {
    KeyValue::new(k, v)
}
fn i(k: &'static str, v: i64) -> KeyValue {
    KeyValue::new(k, v)
}

/// A streamed chat answer in today's attribute names.
fn chat_current() -> S {
    g(
        1500,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "openai"),
            s("gen_ai.request.model", "gpt-4o-mini"),
            s("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            i("gen_ai.usage.input_tokens", 1000),
            i("gen_ai.usage.output_tokens", 200),
            i("gen_ai.usage.cache_read.input_tokens", 400),
            i("gen_ai.usage.cache_write.input_tokens", 100),
            i("gen_ai.usage.reasoning.output_tokens", 50),
            KeyValue::new("gen_ai.response.time_to_first_chunk", 0.3),
        ],
    )
}

/// The same answer in the older names (gen_ai.system, prompt/completion
/// tokens, cache_creation).
fn chat_legacy() -> S {
    g(
        1500,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.system", "openai"),
            s("gen_ai.request.model", "gpt-4o-mini"),
            s("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            i("gen_ai.usage.prompt_tokens", 1000),
            i("gen_ai.usage.completion_tokens", 200),
            i("gen_ai.usage.cache_read_input_tokens", 400),
            i("gen_ai.usage.cache_creation.input_tokens", 100),
            i("gen_ai.usage.reasoning_tokens", 50),
            KeyValue::new("gen_ai.response.time_to_first_chunk", 0.3),
        ],
    )
}

/// A failed call: no tokens, an error type.
fn chat_failed() -> S {
    let mut f = g(
        20,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "openai"),
            s("gen_ai.request.model", "gpt-4o-mini"),
            s("error.type", "APIConnectionError"),
        ],
    );
    f.error = true;
    f
}

const MODEL: &str = "gpt-4o-mini-2024-07-18";

async fn wait_spans(sc: &Sidecar, n: f64) -> Metrics {
    sc.wait_for(&format!("{n} spans"), |m| {
        m.sum("otelcol_receiver_accepted_spans_total", &[]) >= n
    })
    .await
}

/// The histogram's count and sum for these labels.
fn count_sum(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> (f64, f64) {
    (
        m.sum(&format!("{name}_count"), labels),
        m.sum(&format!("{name}_sum"), labels),
    )
}

fn assert_token_details(m: &Metrics, n: f64) {
    for (tt, v) in [
        ("input", 1000.0),
        ("output", 200.0),
        ("cache_read_input", 400.0),
        ("cache_write_input", 100.0),
        ("reasoning_output", 50.0),
    ] {
        assert_eq!(
            m.value(
                "ai_model_tokens_total",
                &[("type", "chat"), ("model", MODEL), ("token_type", tt)]
            ),
            Some(n * v),
            "{tt}: {}",
            m.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convention_metrics_from_current_and_legacy_attribute_names() {
    let sc = Sidecar::start("").await;
    send(
        sc.grpc_url(),
        vec![chat_current(), chat_legacy(), chat_failed()],
    )
    .await;
    let m = wait_spans(&sc, 3.0).await;
    let ok = [
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "openai"),
        ("gen_ai_request_model", "gpt-4o-mini"),
        ("gen_ai_response_model", MODEL),
        ("error_type", ""),
    ];
    let d = "gen_ai_client_operation_duration_seconds";
    assert_eq!(count_sum(&m, d, &ok), (2.0, 3.0), "{}", m.text);
    let failed = [
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_response_model", ""),
        ("error_type", "APIConnectionError"),
    ];
    assert_eq!(count_sum(&m, d, &failed), (1.0, 0.02));
    let b = m.buckets(d, &ok).expect("duration buckets");
    let les: Vec<f64> = b.iter().map(|x| x.0).collect();
    assert_eq!(les[0], 0.01, "the conventions' buckets: {les:?}");
    assert_eq!(les[les.len() - 2], 81.92);
    let u = "gen_ai_client_token_usage";
    let input = [
        ("gen_ai_token_type", "input"),
        ("gen_ai_response_model", MODEL),
    ];
    let output = [
        ("gen_ai_token_type", "output"),
        ("gen_ai_provider_name", "openai"),
    ];
    assert_eq!(count_sum(&m, u, &input), (2.0, 2000.0));
    assert_eq!(count_sum(&m, u, &output), (2.0, 400.0));
    let b = m.buckets(u, &input).expect("token buckets");
    assert_eq!(b.iter().find(|x| x.0 == 1024.0).map(|x| x.1), Some(2.0));
    assert_eq!(b.iter().find(|x| x.0 == 256.0).map(|x| x.1), Some(0.0));
    assert_eq!(
        b.last().map(|x| x.0),
        Some(f64::INFINITY),
        "powers of 4 up to 67108864"
    );
    assert_eq!(b[b.len() - 2].0, 67108864.0);
    let t = "gen_ai_client_operation_time_to_first_chunk_seconds";
    assert_eq!(count_sum(&m, t, &ok), (2.0, 0.6));
    assert_token_details(&m, 2.0);
    // the seed's metrics are as they were
    assert_eq!(
        m.value(
            "ai_tokens_total",
            &[("type", "chat"), ("token_type", "input")]
        ),
        Some(2000.0)
    );
    assert_eq!(
        m.value(
            "ai_requests_total",
            &[("type", "chat"), ("status", "error")]
        ),
        Some(1.0)
    );
    // the newer names are off by default
    assert!(!m.text.contains("gen_ai_client_inference_usage"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_conventions_give_usage_counters_instead_of_the_histogram() {
    let sc = Sidecar::start("ai:\n  conventions: latest_experimental\n").await;
    send(sc.grpc_url(), vec![chat_current(), chat_legacy()]).await;
    let m = wait_spans(&sc, 2.0).await;
    for (name, v) in [
        ("input_tokens", 2000.0),
        ("output_tokens", 400.0),
        ("cache_read_input_tokens", 800.0),
        ("cache_write_input_tokens", 200.0),
        ("reasoning_output_tokens", 100.0),
    ] {
        let full = format!("gen_ai_client_inference_usage_{name}_total");
        assert_eq!(
            m.value(
                &full,
                &[
                    ("gen_ai_provider_name", "openai"),
                    ("gen_ai_response_model", MODEL)
                ]
            ),
            Some(v),
            "{full}: {}",
            m.text
        );
    }
    assert!(!m.text.contains("gen_ai_client_token_usage"), "{}", m.text);
    assert!(m
        .text
        .contains("gen_ai_client_operation_duration_seconds_count"));
}

fn price_file(dir: &Path, text: &str) -> String {
    let p = dir.join("prices.yaml");
    std::fs::write(&p, text).expect("write prices");
    p.display().to_string()
}

const PRICES: &str = "\
- {match: gpt-4o-mini*, input: 0.15, output: 0.60, cache_read_input: 0.075, cache_write_input: 0.30}
- {match: gpt-4o*, input: 2.50, output: 10.00}
";

fn cost(m: &Metrics, model: &str) -> Option<f64> {
    m.value("ai_cost_usd_total", &[("type", "chat"), ("model", model)])
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_from_the_price_table_the_apps_own_cost_and_unpriced_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prices = price_file(dir.path(), PRICES);
    let sc = Sidecar::start(&format!("ai:\n  prices_file: {prices}\n")).await;
    let reported = g(
        10,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.response.model", "gpt-4o-2024-08-06"),
            i("gen_ai.usage.input_tokens", 1_000_000),
            i("gen_ai.usage.output_tokens", 0),
            KeyValue::new("gen_ai.usage.cost", 0.125),
        ],
    );
    let unpriced = g(
        10,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", "llama-3-70b"),
            i("gen_ai.usage.input_tokens", 70),
            i("gen_ai.usage.output_tokens", 30),
        ],
    );
    send(
        sc.grpc_url(),
        vec![
            chat_current(),
            chat_legacy(),
            chat_failed(),
            reported,
            unpriced,
        ],
    )
    .await;
    let m = wait_spans(&sc, 5.0).await;
    // 500 plain input at 0.15, 400 cache reads at 0.075, 100 cache writes
    // at 0.30, 200 output at 0.60 (USD per million), twice
    let one = (500.0 * 0.15 + 400.0 * 0.075 + 100.0 * 0.30 + 200.0 * 0.60) / 1e6;
    assert!(close(cost(&m, MODEL), 2.0 * one), "{}", m.text);
    // the app's own figure, not 1M input tokens at 2.50
    assert!(close(cost(&m, "gpt-4o-2024-08-06"), 0.125), "{}", m.text);
    assert_eq!(cost(&m, "llama-3-70b"), None);
    assert_eq!(
        m.value(
            "geometra_sidecar_ai_unpriced_tokens_total",
            &[("model", "llama-3-70b")]
        ),
        Some(100.0),
        "{}",
        m.text
    );
    // the failed call had no tokens: no cost series, nothing unpriced
    assert_eq!(cost(&m, "gpt-4o-mini"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_price_table_applies_after_a_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prices = price_file(dir.path(), PRICES);
    let sc = Sidecar::start(&format!("ai:\n  prices_file: {prices}\n")).await;
    send(sc.grpc_url(), vec![chat_current()]).await;
    let m = wait_spans(&sc, 1.0).await;
    let one = (500.0 * 0.15 + 400.0 * 0.075 + 100.0 * 0.30 + 200.0 * 0.60) / 1e6;
    assert!(close(cost(&m, MODEL), one), "{}", m.text);
    price_file(dir.path(), "- {match: '*', input: 1, output: 2}\n");
    sc.signal(libc::SIGHUP);
    sc.wait_for("a reload", |m| {
        m.value(
            "geometra_sidecar_config_reloads_total",
            &[("result", "success")],
        ) == Some(1.0)
    })
    .await;
    send(sc.grpc_url(), vec![chat_current()]).await;
    let m = wait_spans(&sc, 2.0).await;
    let two = (1000.0 * 1.0 + 200.0 * 2.0) / 1e6;
    assert!(close(cost(&m, MODEL), one + two), "{}", m.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_model_name_per_request_cannot_grow_the_series() {
    let sc = Sidecar::start("").await;
    let spans = (0..130)
        .map(|n| {
            g(
                10,
                vec![
                    s("gen_ai.operation.name", "chat"),
                    KeyValue::new("gen_ai.response.model", format!("model-{n}")),
                    i("gen_ai.usage.input_tokens", 1),
                ],
            )
        })
        .collect();
    send(sc.grpc_url(), spans).await;
    let m = wait_spans(&sc, 130.0).await;
    let models = m
        .label_sets("ai_model_tokens_total")
        .into_iter()
        .filter_map(|l| l.get("model").cloned())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(models.len(), 101, "100 models and _OTHER: {models:?}");
    assert!(models.contains("_OTHER"));
    assert_eq!(
        m.value(
            "ai_model_tokens_total",
            &[("model", "_OTHER"), ("token_type", "input")]
        ),
        Some(30.0)
    );
    let resp = m
        .label_sets("gen_ai_client_operation_duration_seconds_count")
        .len();
    assert_eq!(resp, 101, "{}", m.text);
}
