//! The browser listener (`receivers.browser`): the internet-facing OTLP/HTTP
//! endpoint, a trust boundary.

pub mod limit;
