//! Config reload against the real binary: by SIGHUP, by a ConfigMap-style
//! `..data` symlink swap, a bad config refused with the old one serving,
//! counters continuous across a reload, a removed rule's series gone, and a
//! restart-only key refused by name. Spans come from the OpenTelemetry SDK
//! through the opentelemetry-otlp exporter.

use crate::common;

use common::{Metrics, Sidecar};
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A counter rule on server spans, labelled by the `op` attribute.
fn rule(name: &str) -> String {
    format!(
        "  - name: {name}\n    kind: counter\n    signal: spans\n    match:\n      span_kinds: [server]\n    labels:\n      - name: op\n        from: [op]\n"
    )
}

fn config(rules: &[&str]) -> String {
    let mut s = String::from("rules:\n");
    for r in rules {
        s.push_str(&rule(r));
    }
    s
}

/// Sends `n` server spans with `op=x` through the SDK's OTLP/gRPC exporter.
async fn send_spans(url: String, n: usize) {
    send_op_spans(url, n, "x").await
}

/// Sends `n` server spans with this `op` attribute.
async fn send_op_spans(url: String, n: usize, op: &'static str) {
    tokio::task::spawn_blocking(move || {
        let provider = common::sdk::tracer_provider(&url, Resource::builder().build());
        let tracer = provider.tracer("reload-test");
        for _ in 0..n {
            let mut span = tracer
                .span_builder("GET /x")
                .with_kind(SpanKind::Server)
                .with_attributes(vec![KeyValue::new("op", op)])
                .start(&tracer);
            span.end();
        }
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .expect("span sender");
}

fn count(m: &Metrics, name: &str) -> Option<f64> {
    m.value(name, &[("op", "x")])
}

fn reloads(m: &Metrics, result: &str) -> f64 {
    m.value(
        "geometra_sidecar_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(-1.0)
}

fn last_ok(m: &Metrics) -> Option<f64> {
    m.value("geometra_sidecar_config_last_reload_successful", &[])
}

/// The sidecar on `config`; the paths of its config file and its stderr.
async fn start(config: &str) -> (Sidecar, PathBuf, PathBuf) {
    let s = Sidecar::builder()
        .config(config)
        .stderr_to_file()
        .start()
        .await;
    let cfg = s.config_path().expect("a config file").to_path_buf();
    let log = s.log_path().to_path_buf();
    (s, cfg, log)
}

fn hup(s: &Sidecar) {
    s.signal(libc::SIGHUP);
}

/// Replaces a file atomically (write aside, rename), as editors do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_config() {
    let (mut s, _cfg, _log) = start(&config(&["reload_a_total"])).await;
    let m = s.scrape().await;
    assert_eq!(reloads(&m, "success"), 0.0, "{}", m.text);
    assert_eq!(last_ok(&m), Some(1.0));
    // the file is unchanged, so only the signal can cause this reload
    hup(&s);
    s.wait_for("a reload by SIGHUP", |m| reloads(m, "success") == 1.0)
        .await;
    send_spans(s.grpc_url(), 2).await;
    s.wait_for("spans counted after the reload", |m| {
        count(m, "reload_a_total") == Some(2.0)
    })
    .await;
    let running = s.child.try_wait().map(|st| st.is_none()).unwrap_or(false);
    assert!(running, "SIGHUP must not stop the sidecar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_continue_and_removed_rules_go_away() {
    let (s, cfg, _log) = start(&config(&["reload_a_total", "reload_b_total"])).await;
    send_spans(s.grpc_url(), 3).await;
    s.wait_for("3 spans counted by both rules", |m| {
        count(m, "reload_a_total") == Some(3.0) && count(m, "reload_b_total") == Some(3.0)
    })
    .await;
    // b removed, c added, a unchanged
    replace(&cfg, &config(&["reload_a_total", "reload_c_total"]));
    hup(&s);
    let m = s
        .wait_for("the new rules in force", |m| reloads(m, "success") >= 1.0)
        .await;
    assert_eq!(count(&m, "reload_a_total"), Some(3.0), "{}", m.text);
    assert!(
        !m.text.contains("reload_b_total"),
        "a removed rule's series must go away:\n{}",
        m.text
    );
    send_spans(s.grpc_url(), 2).await;
    let m = s
        .wait_for("2 more spans", |m| count(m, "reload_c_total") == Some(2.0))
        .await;
    assert_eq!(
        count(&m, "reload_a_total"),
        Some(5.0),
        "an unchanged rule's counter continues across a reload:\n{}",
        m.text
    );
    assert_eq!(reloads(&m, "failure"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_reloads_without_a_signal() {
    // the layout kubelet makes for a mounted ConfigMap
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let v1 = d.join("..2026_11_27_10_00_00.000000001");
    std::fs::create_dir(&v1).expect("mkdir");
    std::fs::write(v1.join("config.yaml"), config(&["reload_a_total"])).expect("write");
    std::os::unix::fs::symlink(v1.file_name().expect("name"), d.join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/config.yaml", d.join("config.yaml")).expect("file link");
    let cfg = d.join("config.yaml");
    let log = std::fs::File::create(d.join("stderr")).expect("stderr");
    let s = Sidecar::builder()
        .temp_dir(dir)
        .config_file(&cfg)
        .stderr(Stdio::from(log))
        .start()
        .await;
    send_spans(s.grpc_url(), 1).await;
    s.wait_for("a span counted", |m| {
        count(m, "reload_a_total") == Some(1.0)
    })
    .await;

    // kubelet's swap: a new timestamped dir, a new symlink renamed over ..data
    let d = cfg.parent().expect("dir").to_path_buf();
    let v2 = d.join("..2026_11_27_10_01_00.000000002");
    std::fs::create_dir(&v2).expect("mkdir");
    let new = config(&["reload_a_total", "reload_c_total"]);
    std::fs::write(v2.join("config.yaml"), new).expect("write");
    std::os::unix::fs::symlink(v2.file_name().expect("name"), d.join("..data_tmp")).expect("link");
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(&v1).expect("old version removed");
    let t = Instant::now();
    s.wait_for("the swapped config in force (no signal)", |m| {
        reloads(m, "success") == 1.0
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(10));
    send_spans(s.grpc_url(), 1).await;
    s.wait_for("both rules counting", |m| {
        count(m, "reload_a_total") == Some(2.0) && count(m, "reload_c_total") == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_and_the_old_one_keeps_serving() {
    let (s, cfg, log) = start(&config(&["reload_a_total"])).await;
    send_spans(s.grpc_url(), 1).await;
    s.wait_for("a span counted", |m| {
        count(m, "reload_a_total") == Some(1.0)
    })
    .await;
    // a histogram with descending buckets: parses, fails validation
    let bad = format!(
        "{}  - name: reload_bad_seconds\n    kind: histogram\n    signal: spans\n    buckets: [2, 1]\n",
        config(&["reload_a_total", "reload_c_total"])
    );
    replace(&cfg, &bad);
    let m = s
        .wait_for("the bad config refused", |m| reloads(m, "failure") == 1.0)
        .await;
    assert_eq!(last_ok(&m), Some(0.0), "{}", m.text);
    assert_eq!(reloads(&m, "success"), 0.0);
    assert!(!m.text.contains("reload_c_total"), "nothing of it applies");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("config reload refused") && text.contains("rules[2].buckets"),
        "the failure is logged with the validation error:\n{text}"
    );
    send_spans(s.grpc_url(), 2).await;
    s.wait_for("the old rules still derive", |m| {
        count(m, "reload_a_total") == Some(3.0)
    })
    .await;
    // fixing the file is a successful reload again
    replace(&cfg, &config(&["reload_a_total", "reload_c_total"]));
    let m = s
        .wait_for("the fixed config in force", |m| {
            reloads(m, "success") == 1.0
        })
        .await;
    assert_eq!(last_ok(&m), Some(1.0));
    assert_eq!(count(&m, "reload_a_total"), Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_config_file_is_refused_not_read() {
    let (s, cfg, log) = start(&config(&["reload_a_total"])).await;
    // valid YAML (a comment) past the 4 MiB bound, as a wrong file might be
    let huge = format!(
        "{}# {}\n",
        config(&["reload_a_total", "reload_c_total"]),
        "x".repeat(5 << 20)
    );
    replace(&cfg, &huge);
    let m = s
        .wait_for("the oversized file refused", |m| {
            reloads(m, "failure") == 1.0
        })
        .await;
    assert_eq!(last_ok(&m), Some(0.0), "{}", m.text);
    assert!(!m.text.contains("reload_c_total"), "nothing of it applies");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("larger than 4194304 bytes"),
        "the refusal names the bound:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_only_key_is_refused_by_name() {
    let (s, cfg, log) = start(&config(&["reload_a_total"])).await;
    let changed = format!(
        "receivers:\n  otlp_http:\n    max_body_bytes: 1000\n  max_in_flight_bytes_per_connection: 16777216\nforward:\n  queue:\n    dir: /nonexistent/q\n{}",
        config(&["reload_a_total", "reload_c_total"])
    );
    replace(&cfg, &changed);
    let m = s
        .wait_for("the change refused", |m| reloads(m, "failure") == 1.0)
        .await;
    assert_eq!(last_ok(&m), Some(0.0));
    assert!(!m.text.contains("reload_c_total"), "nothing of it applies");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("receivers.otlp_http.max_body_bytes")
            && text.contains("receivers.max_in_flight_bytes_per_connection")
            && text.contains("forward.queue.dir")
            && text.contains("without a restart"),
        "the refusal names the keys:\n{text}"
    );
    send_spans(s.grpc_url(), 1).await;
    s.wait_for("the old rules still derive", |m| {
        count(m, "reload_a_total") == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_limits_reload_for_existing_series_too() {
    let (s, cfg, _log) = start(&config(&["reload_a_total"])).await;
    send_spans(s.grpc_url(), 1).await;
    s.wait_for("a span counted", |m| {
        count(m, "reload_a_total") == Some(1.0)
    })
    .await;
    let capped = format!(
        "store:\n  max_series_per_metric: 1\n  series_ttl: 1h\n{}",
        config(&["reload_a_total"])
    );
    replace(&cfg, &capped);
    s.wait_for("the new limits in force", |m| reloads(m, "success") == 1.0)
        .await;
    // the family already holds one series: a second label value overflows
    send_op_spans(s.grpc_url(), 2, "y").await;
    let m = s
        .wait_for("the new series capped", |m| {
            m.value(
                "geometra_sidecar_series_overflow_total",
                &[("metric", "reload_a_total")],
            ) == Some(2.0)
        })
        .await;
    assert_eq!(count(&m, "reload_a_total"), Some(1.0), "{}", m.text);
    assert_eq!(
        m.value("reload_a_total", &[("otel_metric_overflow", "true")]),
        Some(2.0),
        "{}",
        m.text
    );
    assert_eq!(m.value("reload_a_total", &[("op", "y")]), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_span_is_lost_or_counted_twice_while_reloading() {
    let (s, cfg, _log) = start(&config(&["reload_a_total"])).await;
    const N: usize = 400;
    let sender = tokio::spawn(send_spans(s.grpc_url(), N));
    // reload over and over while the spans arrive (one span per request):
    // rule c comes and goes, rule a never changes
    let mut flip = false;
    let mut hups = 0;
    while !sender.is_finished() {
        flip = !flip;
        let rules: &[&str] = if flip {
            &["reload_a_total", "reload_c_total"]
        } else {
            &["reload_a_total"]
        };
        replace(&cfg, &config(rules));
        hup(&s);
        hups += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sender.await.expect("sender");
    let m = s
        .wait_for("every span counted once", |m| {
            count(m, "reload_a_total") == Some(N as f64)
        })
        .await;
    assert!(hups > 1 && reloads(&m, "success") >= 1.0, "{}", m.text);
    assert_eq!(reloads(&m, "failure"), 0.0);
    // and it stays there: nothing was counted twice by a late commit
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&s.scrape().await, "reload_a_total"), Some(N as f64));
}

/// A browser's preflight for a POST to `/v1/traces` from `origin`.
async fn preflight(s: &Sidecar, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/v1/traces", s.http),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, x-tenant-id",
        )
        .send()
        .await
        .expect("preflight")
}

fn cors_config(origins: &str, headers: &str, max_age: u32) -> String {
    format!(
        "receivers:\n  otlp_http:\n    cors_allowed_origins: {origins}\n    cors_allowed_headers: {headers}\n    cors_max_age: {max_age}\n{}",
        config(&["reload_a_total"])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_origins_and_headers_reload() {
    let old = cors_config("[\"https://a.example\"]", "[]", 7200);
    let (s, cfg, _log) = start(&old).await;
    let r = preflight(&s, "https://b.example").await;
    assert_eq!(r.status(), 403, "b is not allowed yet");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = preflight(&s, "https://a.example").await;
    assert_eq!(r.status(), 204);
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap_or("");
    assert!(!allowed.contains("x-tenant-id"), "{allowed}");

    let new = cors_config(
        "[\"https://a.example\", \"https://*.b.example\"]",
        "[x-tenant-id]",
        60,
    );
    replace(&cfg, &new);
    s.wait_for("the new CORS policy in force", |m| {
        reloads(m, "success") == 1.0
    })
    .await;
    let r = preflight(&s, "https://app.b.example").await;
    assert_eq!(r.status(), 204, "an origin added by the reload is allowed");
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.b.example");
    assert_eq!(h["access-control-max-age"], "60");
    let allowed = h["access-control-allow-headers"].to_str().unwrap_or("");
    assert!(allowed.contains("x-tenant-id"), "{allowed}");
    // an actual export from the new origin is answered for the browser
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", s.http))
        .header("origin", "https://app.b.example")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("export");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.b.example"
    );
}

fn level_config(level: &str, rules: &[&str]) -> String {
    format!("telemetry:\n  log_level: {level}\n{}", config(rules))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_reloads() {
    // no RUST_LOG: the file's level rules
    let s = Sidecar::builder()
        .config(&level_config("warn", &["reload_a_total"]))
        .stderr_to_file()
        .rust_log(None)
        .start()
        .await;
    let cfg = s.config_path().expect("config").to_path_buf();
    let log = s.log_path().to_path_buf();
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
    // a reload at level warn: neither its info nor its debug line shows
    replace(
        &cfg,
        &level_config("warn", &["reload_a_total", "reload_c_total"]),
    );
    s.wait_for("a reload at warn", |m| reloads(m, "success") == 1.0)
        .await;
    let text = stderr();
    assert!(
        !text.contains("config reloaded") && !text.contains("config keys changed"),
        "{text}"
    );
    replace(&cfg, &level_config("debug", &["reload_a_total"]));
    s.wait_for("the debug level in force", |m| reloads(m, "success") == 2.0)
        .await;
    let text = stderr();
    assert!(
        text.contains("DEBUG") && text.contains("config keys changed"),
        "a debug line after raising the level by reload:\n{text}"
    );
    assert!(text.contains("telemetry.log_level"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_wins_over_a_reloaded_log_level() {
    let (s, cfg, log) = start(&level_config("warn", &["reload_a_total"])).await;
    replace(&cfg, &level_config("debug", &["reload_a_total"]));
    s.wait_for("the reload accepted", |m| reloads(m, "success") == 1.0)
        .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("RUST_LOG is set and overrides it") && !text.contains("DEBUG"),
        "{text}"
    );
}

/// Records `v` on the gauge `reload.pt.level` through the SDK's OTLP/gRPC
/// metric exporter (scope `reload-scope`); returns once it is acknowledged.
async fn send_gauge(url: String, v: u64) {
    use opentelemetry::metrics::MeterProvider as _;
    tokio::task::spawn_blocking(move || {
        let resource = Resource::builder().with_service_name("reload-api").build();
        let provider = common::sdk::meter_provider(&url, resource);
        let gauge = provider
            .meter("reload-scope")
            .u64_gauge("reload.pt.level")
            .build();
        gauge.record(v, &[]);
        provider.force_flush().expect("flush");
        let _ = provider.shutdown();
    })
    .await
    .expect("metric sender");
}

fn pt_config(passthrough: &str) -> String {
    format!("passthrough:\n{passthrough}{}", config(&["reload_a_total"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_switches_reload() {
    let (s, cfg, _log) = start(&pt_config("  scope_labels: false\n")).await;
    let scoped = [("otel_scope_name", "reload-scope")];
    send_gauge(s.grpc_url(), 5).await;
    let m = s
        .wait_for("the gauge passed through", |m| {
            m.value("reload_pt_level", &[("job", "reload-api")]) == Some(5.0)
        })
        .await;
    assert_eq!(m.value("reload_pt_level", &scoped), None, "{}", m.text);

    replace(&cfg, &pt_config("  scope_labels: true\n"));
    let m = s
        .wait_for("scope labels in force", |m| reloads(m, "success") == 1.0)
        .await;
    assert!(
        !m.text.contains("reload_pt_level"),
        "series under the old labels go at once:\n{}",
        m.text
    );
    send_gauge(s.grpc_url(), 6).await;
    let m = s.scrape().await;
    assert_eq!(m.value("reload_pt_level", &scoped), Some(6.0), "{}", m.text);

    replace(&cfg, &pt_config("  enabled: false\n  scope_labels: true\n"));
    let m = s
        .wait_for("pass-through off", |m| reloads(m, "success") == 2.0)
        .await;
    assert!(!m.text.contains("reload_pt_level"), "{}", m.text);
    // acknowledged, but no longer exposed
    send_gauge(s.grpc_url(), 7).await;
    let m = s.scrape().await;
    assert!(!m.text.contains("reload_pt_level"), "{}", m.text);
    assert_eq!(reloads(&m, "failure"), 0.0);
}
