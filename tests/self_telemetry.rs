//! The sidecar's own telemetry (`telemetry.otlp`): the release binary sends
//! its spans, logs and self-metrics to a test OTLP sink (`common::sink`:
//! the three OTLP services over gRPC, or OTLP/HTTP), never into its own
//! pipeline; with the sink down it keeps serving without a storm of log
//! lines.

mod common;

use common::sink::{resource_attr, Sink};
use common::{free_port, Sidecar};
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue as OtelKv;
use opentelemetry_sdk::Resource;
use std::time::{Duration, Instant};

/// Starts the sidecar on `config` with the environment below and stderr
/// into a file (returned), log level from the config (no RUST_LOG).
async fn start(config: &str) -> (Sidecar, std::path::PathBuf) {
    std::env::set_var("K8S_POD_NAME", "api-7d9f-xk2p");
    std::env::set_var(
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment.name=test",
    );
    let sc = Sidecar::builder()
        .config(config)
        .rust_log(None)
        .stderr_to_file()
        .start()
        .await;
    let log = sc.log_path().to_path_buf();
    (sc, log)
}

/// Waits for the sidecar's own start-up span and ready log at `own`.
async fn wait_startup(own: &Sink) {
    own.wait("the start-up span", |s| {
        s.span_names()
            .contains(&("geometra-sidecar".into(), "startup".into()))
    })
    .await;
    own.wait("the ready log", |s| {
        s.log_records()
            .iter()
            .any(|(svc, _, body)| svc == "geometra-sidecar" && body == "geometra-sidecar ready")
    })
    .await;
}

/// Sends `n` server spans through the OpenTelemetry SDK's OTLP exporter.
async fn send_spans(url: String, n: usize) {
    tokio::task::spawn_blocking(move || {
        let resource = Resource::builder().with_service_name("api").build();
        let provider = common::sdk::tracer_provider(&url, resource);
        let tracer = provider.tracer("self-telemetry-test");
        for _ in 0..n {
            let mut span = tracer
                .span_builder("GET /x")
                .with_kind(SpanKind::Server)
                .with_attributes(vec![OtelKv::new("http.route", "/x")])
                .start(&tracer);
            span.end();
        }
        provider.force_flush().expect("flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .expect("span sender");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_spans_logs_and_metrics_reach_the_endpoint_and_nothing_loops_back() {
    let own = Sink::default();
    let own_port = own.start().await;
    let fwd = Sink::default();
    let fwd_port = fwd.start().await;
    let (sc, _log) = start(&format!(
        "telemetry:\n  otlp:\n    endpoint: http://127.0.0.1:{own_port}\n    interval: 1s\n    resource: {{ team: obs }}\n\
         forward:\n  logs: {{ endpoint: \"http://127.0.0.1:{fwd_port}\" }}\n  traces: {{ endpoint: \"http://127.0.0.1:{fwd_port}\" }}\n  batch: {{ timeout: 50ms }}\n"
    ))
    .await;
    send_spans(sc.grpc_url(), 3).await;

    // its start-up span and ready log, with its resource
    wait_startup(&own).await;
    {
        let t = own.traces.lock().expect("lock");
        let r = &t[0].resource_spans[0].resource;
        assert_eq!(
            resource_attr(r, "k8s.pod.name").as_deref(),
            Some("api-7d9f-xk2p")
        );
        assert_eq!(
            resource_attr(r, "service.instance.id").as_deref(),
            Some("api-7d9f-xk2p")
        );
        assert_eq!(
            resource_attr(r, "deployment.environment.name").as_deref(),
            Some("test")
        );
        assert_eq!(resource_attr(r, "team").as_deref(), Some("obs"));
        assert_eq!(
            resource_attr(r, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
    // its self-metrics: the 3 spans the SDK sent, pushed with its resource
    own.wait("accepted spans = 3", |s| {
        s.sum(
            "otelcol_receiver_accepted_spans",
            &[("receiver", "otlp"), ("transport", "grpc")],
        )
        .is_some_and(|(svc, v)| svc == "geometra-sidecar" && v == 3.0)
    })
    .await;

    // nothing of its own telemetry came back in: 3 spans accepted, no log
    // record, the derived metrics count only the app's spans...
    let m = sc.scrape().await;
    assert_eq!(m.sum("otelcol_receiver_accepted_spans_total", &[]), 3.0);
    assert_eq!(
        m.sum("otelcol_receiver_accepted_log_records_total", &[]),
        0.0
    );
    assert_eq!(
        m.sum("otelcol_receiver_accepted_metric_points_total", &[]),
        0.0
    );
    // ...and the forward sink got the app's spans only, no own logs
    fwd.wait("the app's 3 spans forwarded", |s| s.span_names().len() >= 3)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fwd_spans = fwd.span_names();
    assert!(
        fwd_spans.iter().all(|(svc, _)| svc == "api"),
        "{fwd_spans:?}"
    );
    assert!(fwd.log_records().is_empty(), "{:?}", fwd.log_records());
    // the exporter's own transports and the SDK never export themselves
    let scopes: Vec<String> = own.log_records().into_iter().map(|(_, s, _)| s).collect();
    assert!(
        scopes
            .iter()
            .all(|s| !["opentelemetry", "h2", "tonic", "hyper", "tower"]
                .iter()
                .any(|p| s.starts_with(p))),
        "{scopes:?}"
    );
}

/// `telemetry.otlp.protocol: http`: the same spans, logs and self-metrics
/// arrive over OTLP/HTTP (protobuf, `/v1/<signal>` appended to the endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_telemetry_over_otlp_http() {
    let own = Sink::default();
    let port = own.start_http().await;
    let (sc, _log) = start(&format!(
        "telemetry:\n  otlp:\n    endpoint: http://127.0.0.1:{port}\n    protocol: http\n    interval: 1s\n"
    ))
    .await;
    send_spans(sc.grpc_url(), 2).await;
    wait_startup(&own).await;
    own.wait("accepted spans = 2 over HTTP", |s| {
        s.sum(
            "otelcol_receiver_accepted_spans",
            &[("receiver", "otlp"), ("transport", "grpc")],
        )
        .is_some_and(|(svc, v)| svc == "geometra-sidecar" && v == 2.0)
    })
    .await;
    let t = own.traces.lock().expect("lock");
    let r = &t[0].resource_spans[0].resource;
    assert_eq!(
        resource_attr(r, "k8s.pod.name").as_deref(),
        Some("api-7d9f-xk2p")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_the_sidecar_serves_and_logs_no_storm() {
    let dead = free_port();
    let (sc, log) = start(&format!(
        "telemetry:\n  otlp:\n    endpoint: http://127.0.0.1:{dead}\n    interval: 1s\n    timeout: 1s\n"
    ))
    .await;
    let run = Duration::from_secs(6);
    let started = Instant::now();
    while started.elapsed() < run {
        send_spans(sc.grpc_url(), 5).await;
        let m = sc.scrape().await;
        assert!(m.sum("otelcol_receiver_accepted_spans_total", &[]) > 0.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = std::fs::read_to_string(&log).expect("stderr");
    let lines = text.lines().count();
    // metrics fail once a second, spans and logs once per batch (5s): a
    // handful of lines, not one per span, request or retry
    assert!(
        lines <= 30,
        "{lines} stderr lines in {}s:\n{text}",
        run.as_secs()
    );
    assert!(
        text.contains("geometra-sidecar ready"),
        "the sidecar's own log still reaches stderr:\n{text}"
    );
}

#[test]
fn an_endpoint_at_its_own_receiver_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.yaml");
    let check = |yaml: &str| {
        std::fs::write(&cfg, yaml).expect("write");
        std::process::Command::new(env!("CARGO_BIN_EXE_geometra-sidecar"))
            .args(["--config", cfg.to_str().expect("utf-8"), "check-config"])
            .env_remove("GEOMETRA_OTLP_GRPC_LISTEN")
            .output()
            .expect("run")
    };
    for ep in [
        "http://localhost:4317",
        "http://127.0.0.1:4318",
        "http://[::1]:4317",
    ] {
        let out = check(&format!("telemetry:\n  otlp:\n    endpoint: {ep}\n"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{ep} accepted");
        assert!(
            err.contains("telemetry.otlp.endpoint") && err.contains("own OTLP receiver"),
            "{err}"
        );
    }
    let out =
        check("telemetry:\n  otlp:\n    endpoint: http://localhost:4317\n    allow_self: true\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check("telemetry:\n  otlp:\n    endpoint: http://otel-collector:4317\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
