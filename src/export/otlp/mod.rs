//! The OTLP forwarder: what the receivers hand over (see [`super::Forward`])
//! sent on to an OTLP endpoint per signal. A receiver acknowledges data to
//! the app only once the forwarder has taken it (and will deliver it).
//!
//! Per forwarded signal: `offer` redacts (logs, when configured), then puts
//! the request body, as received (compressed once when large, see [`piece`]),
//! into a bounded [`queue::Queue`] (and, with a
//! queue directory, writes it to the [`disk`] log first); a full queue refuses
//! it, so the receiver pushes back on the app with UNAVAILABLE + RetryInfo.
//! Sender tasks take batches of whole records (count, bytes, time), send the
//! concatenated bodies over OTLP/gRPC or OTLP/HTTP ([`client`]), and retry
//! retryable failures with exponential backoff and jitter ([`super::retry`]). A batch the
//! downstream refuses as invalid data is split in halves until the refused
//! request is alone, so only that request is dropped (and counted).
//!
//! Delivery is **at least once**: a record is removed from the queue (and its
//! disk segment deleted) only after the downstream accepted it, or refused it
//! permanently, or retries ran out (`forward.retry.max_elapsed`; 0 retries
//! for ever). A crash between delivery and deletion sends records again;
//! a memory-only queue loses what it holds at a crash or at the end of the
//! drain (counted as send_failed).
//!
//! A config reload changes the endpoints and their settings in place
//! ([`Forwarder::prepare`], [`Forwarder::apply`]): what is queued goes to the
//! endpoint in force when it is sent.

pub mod client;
pub mod config;
pub mod disk;
mod exporter;
pub mod ledger;
pub mod piece;
pub mod queue;
pub mod redact;

pub use exporter::{build, Forwarder, Reconfig};
