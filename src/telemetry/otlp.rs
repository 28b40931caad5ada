//! The sidecar's own traces, logs and metrics pushed over OTLP when
//! `telemetry.otlp.endpoint` is set: `tracing` spans through
//! `tracing-opentelemetry`, `tracing` events through
//! `opentelemetry-appender-tracing`, self-metrics through a periodic reader.
//! Nothing of this exists (no SDK, no thread, no allocation) when the
//! endpoint is unset.
//!
//! No feedback loop: the SDK's own diagnostics and the transport crates the
//! exporters use (targets in [`NOT_EXPORTED`]) reach stderr only, never these
//! pipelines, so a failing export is logged once per batch, not exported and
//! failed again. Config validation refuses an endpoint that is the sidecar's
//! own receiver unless `telemetry.otlp.allow_self` is set.

use super::config::TelemetryOtlp;
use crate::base::Protocol;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{MeterProviderBuilder, PeriodicReader};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::sync::Mutex;
use tracing_subscriber::Layer;

/// Targets whose events never go to the OTLP pipelines (they would be
/// emitted while exporting): the SDK's own and the exporters' transports.
pub const NOT_EXPORTED: &[&str] = &[
    "opentelemetry",
    "h2",
    "tonic",
    "hyper",
    "hyper_util",
    "reqwest",
    "tower",
    "rustls",
];

/// Whether events of `target` may be exported over OTLP.
pub fn exported(target: &str) -> bool {
    !NOT_EXPORTED.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '_', '-']))
    })
}

/// The started OTLP pipelines.
pub struct Pipelines {
    tracer: SdkTracerProvider,
    logger: SdkLoggerProvider,
    /// taken by the meter provider of the self-metrics
    metrics: Mutex<Option<PeriodicReader<opentelemetry_otlp::MetricExporter>>>,
    resource: Resource,
}

/// The resource: `service.name=geometra-sidecar`, its version, the pod's
/// attributes from the environment (`OTEL_RESOURCE_ATTRIBUTES` and the
/// downward-API variables the Helm chart sets), then `telemetry.otlp.resource`.
pub fn resource(cfg: &TelemetryOtlp) -> Resource {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut attrs = Vec::new();
    for (var, key) in [
        ("K8S_POD_NAME", "k8s.pod.name"),
        ("K8S_POD_UID", "k8s.pod.uid"),
        ("K8S_NAMESPACE_NAME", "k8s.namespace.name"),
        ("K8S_NODE_NAME", "k8s.node.name"),
        ("K8S_CONTAINER_NAME", "k8s.container.name"),
    ] {
        if let Some(v) = env(var) {
            attrs.push(KeyValue::new(key, v));
        }
    }
    if let Some(id) = env("K8S_POD_NAME").or_else(|| env("HOSTNAME")) {
        attrs.push(KeyValue::new("service.instance.id", id));
    }
    if let Some(h) = env("HOSTNAME") {
        attrs.push(KeyValue::new("host.name", h));
    }
    // Resource::builder() reads OTEL_RESOURCE_ATTRIBUTES; what follows overrides it
    Resource::builder()
        .with_attributes(attrs)
        .with_service_name("geometra-sidecar")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(
            cfg.resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build()
}

fn metadata(cfg: &TelemetryOtlp) -> Result<tonic::metadata::MetadataMap, String> {
    let mut m = tonic::metadata::MetadataMap::new();
    for (k, v) in &cfg.headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|e| format!("telemetry.otlp.headers: {k:?}: {e}"))?;
        let val = v
            .parse()
            .map_err(|e| format!("telemetry.otlp.headers: value of {k:?}: {e}"))?;
        m.insert(key, val);
    }
    Ok(m)
}

/// The tonic (gRPC) or HTTP/protobuf exporter of one signal.
macro_rules! exporter {
    ($ty:ty, $cfg:expr, $ep:expr, $path:literal) => {{
        let cfg: &TelemetryOtlp = $cfg;
        match cfg.protocol {
            Protocol::Grpc => <$ty>::builder()
                .with_tonic()
                .with_endpoint($ep)
                .with_timeout(cfg.timeout.0)
                .with_metadata(metadata(cfg)?)
                .build(),
            Protocol::Http => <$ty>::builder()
                .with_http()
                .with_endpoint(format!("{}{}", $ep.trim_end_matches('/'), $path))
                .with_timeout(cfg.timeout.0)
                .with_http_client(super::http::Client::new(cfg.timeout.0)?)
                .with_headers(cfg.headers.clone().into_iter().collect())
                .build(),
        }
        .map_err(|e| format!("telemetry.otlp: {e}"))?
    }};
}

impl Pipelines {
    /// Starts the exporters and providers; `None` when the endpoint is
    /// unset. Call within the Tokio runtime (the gRPC channel lives on it).
    pub fn start(cfg: &TelemetryOtlp) -> Result<Option<Pipelines>, String> {
        let Some(ep) = cfg.endpoint.as_deref() else {
            return Ok(None);
        };
        let resource = resource(cfg);
        let spans = exporter!(opentelemetry_otlp::SpanExporter, cfg, ep, "/v1/traces");
        let logs = exporter!(opentelemetry_otlp::LogExporter, cfg, ep, "/v1/logs");
        let metrics = exporter!(opentelemetry_otlp::MetricExporter, cfg, ep, "/v1/metrics");
        let tracer = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let logger = SdkLoggerProvider::builder()
            .with_batch_exporter(logs)
            .with_resource(resource.clone())
            .build();
        let reader = PeriodicReader::builder(metrics)
            .with_interval(cfg.interval.0)
            .build();
        Ok(Some(Pipelines {
            tracer,
            logger,
            metrics: Mutex::new(Some(reader)),
            resource,
        }))
    }

    /// The `tracing` layers feeding spans and events to the pipelines,
    /// without the targets in [`NOT_EXPORTED`].
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync
    where
        S: tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let tracer = self.tracer.tracer("geometra-sidecar");
        let spans = tracing_opentelemetry::layer().with_tracer(tracer);
        let logs =
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&self.logger);
        spans
            .and_then(logs)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                exported(m.target())
            }))
    }

    /// Adds the periodic OTLP reader (once) to the self-metrics' provider.
    pub fn add_metric_reader(&self, b: MeterProviderBuilder) -> MeterProviderBuilder {
        let r = self
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match r {
            Some(r) => b.with_reader(r).with_resource(self.resource.clone()),
            None => b,
        }
    }

    /// Flushes what is pending (within the exporters' timeout) and stops.
    /// Blocking: call off the async workers.
    pub fn shutdown(&self) {
        let _ = self.tracer.shutdown();
        let _ = self.logger.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_and_transports_are_not_exported_the_sidecar_is() {
        for t in [
            "opentelemetry_sdk",
            "opentelemetry-otlp",
            "opentelemetry",
            "h2::codec",
            "tonic::transport",
            "hyper_util::client",
            "reqwest::connect",
        ] {
            assert!(!exported(t), "{t}");
        }
        for t in [
            "geometra_sidecar::reload",
            "geometra_sidecar",
            "hyperloop",
            "tonicity",
        ] {
            assert!(exported(t), "{t}");
        }
    }
}
