//! geometra-sidecar: an OpenTelemetry sidecar that receives OTLP, derives
//! Geometra's request, AI and memory metrics, exposes them to Prometheus and
//! forwards logs downstream.
//!
//! The data path reads from the module names: [`receiver`] takes OTLP in,
//! [`derive`] turns it into metric updates, [`metrics`] stores and encodes
//! them, [`export`] sends data downstream.

pub mod allocator;
pub mod base;
pub mod config;
pub mod derive;
pub mod export;
pub mod fsread;
pub mod metrics;
pub mod proto;
pub mod receiver;
pub mod reload;
pub mod rpc_status;
pub mod server;
pub mod telemetry;
