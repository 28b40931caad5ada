//! The browser listener (`receivers.browser`): the internet-facing OTLP/HTTP
//! endpoint, the one place where the sidecar takes data from people it
//! does not know, built as a trust boundary.
//!
//! - [`config`]: the `receivers.browser` section.
//! - [`auth`]: the optional bearer-token check (HS256 JWTs minted by the
//!   back end), its config section and counters.
//! - [`limit`]: per-client and global rate limits, the client's address
//!   (behind trusted proxies), its config section and counters.

pub mod auth;
pub mod config;
pub mod guard;
pub mod limit;
