//! Rust types generated at build time (build.rs, prost) from the Prometheus
//! protos we keep in `proto/prometheus/`: the protobuf exposition format
//! (`io.prometheus.client`) and remote write (`prometheus`).
