//! The browser listener (`receivers.browser`): the one place where the
//! sidecar takes data from people it does not know.
//!
//! - [`auth`]: the optional bearer-token check (HS256 JWTs minted by the
//!   back end), its config section and counters.

pub mod auth;
