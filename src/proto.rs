//! Rust types generated at build time (build.rs, prost) from the Prometheus
//! protos we keep in `proto/prometheus/`: the protobuf exposition format
//! (`io.prometheus.client`) and remote write (`prometheus`).

/// Prometheus remote write 1.0 (`prometheus` package): `WriteRequest` and
/// the series it carries.
pub mod remote {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}
