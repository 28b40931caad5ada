//! The OpenTelemetry SDK's own providers and OTLP/gRPC exporters, set up as
//! an app would to talk to the sidecar under test. Build them on a blocking
//! thread (the exporters run their own runtime).

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::time::Duration;

/// Spans exported one by one as they end.
pub fn tracer_provider(url: &str, resource: Resource) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(url)
        .build()
        .expect("span exporter");
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(resource)
        .build()
}

/// Log records exported one by one as they are emitted.
pub fn logger_provider(url: &str, resource: Resource) -> SdkLoggerProvider {
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(url)
        .build()
        .expect("log exporter");
    SdkLoggerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(resource)
        .build()
}

/// Metrics pushed only when the test calls `force_flush` (the periodic
/// reader's interval is an hour).
pub fn meter_provider(url: &str, resource: Resource) -> SdkMeterProvider {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(url)
        .build()
        .expect("metric exporter");
    SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .with_resource(resource)
        .build()
}
