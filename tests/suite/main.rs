//! The integration tests, in one test binary (`cargo test --release --test
//! suite`): one file a module, as they were one binary each. Each binary
//! compiled `common/` again and linked the whole crate and its
//! dependencies again, which was most of a cold test run's time
//! (BENCHMARKS.md, "Issue 24: one test binary"). A test file that needs a
//! process of its own stays a binary of its own beside this one:
//! `tests/self_telemetry.rs` sets environment variables that every sidecar
//! started from its process inherits.
//!
//! One file's tests: `cargo test --release --test suite -- reload::`.

#[path = "../common/mod.rs"]
mod common;

mod allocator;
mod bad_input;
mod browser;
mod cli;
mod connections;
mod contract;
mod cors;
mod encodings;
mod exposition;
mod forward_e2e;
mod genai;
mod grpc_transport;
mod hostile_fuzz;
mod in_flight;
mod limits;
mod loopback;
mod native_prometheus;
mod proto;
mod reload;
mod remote_write;
mod scrape_stream;
mod snapshot_text;
