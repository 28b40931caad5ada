//! Prometheus remote write 1.0: every `interval`, the store's current values
//! (a [`Snapshot`](crate::metrics::snapshot::Snapshot), the same data
//! `/metrics` shows) are translated into one `WriteRequest`, compressed with
//! snappy and POSTed to `remote_write.url`.
//!
//! The data is cumulative, so a receiver that is down costs no backlog: only
//! the latest snapshot waits to be sent (a newer one replaces it, and the
//! replaced one's points count as failed), retried with backoff on 5xx and
//! 429 (honouring Retry-After); other 4xx are never retried. Memory stays
//! one request, whatever the outage's length.
//!
//! Files: `config.rs` (the `remote_write:` section), `translate.rs`
//! (snapshot → `WriteRequest`), `client.rs` (one HTTP request),
//! `exporter.rs` (the push loop and its self-metrics).

pub mod client;
pub mod config;
mod exporter;
pub mod translate;

pub use exporter::{start, Control, Setup, SnapshotSource, Stats};
