//! Rust types generated at build time (build.rs, prost) from the Prometheus
//! protos we keep in `proto/prometheus/`: the protobuf exposition format
//! (`io.prometheus.client`) and remote write (`prometheus`).

/// Prometheus remote write 1.0 (`prometheus` package): `WriteRequest` and
/// the series it carries.
pub mod remote {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// The Prometheus protobuf exposition (`proto/prometheus/client/metrics.proto`,
/// package `io.prometheus.client`): `MetricFamily` and what it holds.
#[allow(clippy::all, missing_docs)]
pub mod client {
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.client.rs"));
}
