//! Exposition encoders: each renders a [`Snapshot`] and nothing else, chosen
//! by the scraper's Accept header. `text.rs` writes text 0.0.4 and
//! OpenMetrics 1.0; the Prometheus protobuf exposition will be `protobuf.rs`
//! (issue 10, next phase) beside it, with its media type added to
//! [`Format`] and [`negotiate`].

mod text;

use super::snapshot::Snapshot;

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4 (the default).
    Text,
    /// OpenMetrics 1.0 text (exemplars, `_created`, `# UNIT`, `# EOF`).
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Whether an Accept header asks for OpenMetrics.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept
        .split(',')
        .any(|p| p.trim().starts_with("application/openmetrics-text"))
}

/// The format a scraper's Accept header asks for.
pub fn negotiate(accept: &str) -> Format {
    if wants_openmetrics(accept) {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Renders a snapshot in a format.
pub fn encode(s: &Snapshot, f: Format) -> String {
    match f {
        Format::Text => text::encode(s, false),
        Format::OpenMetrics => text::encode(s, true),
    }
}

/// Collects a store's snapshot and renders it (text or OpenMetrics): a
/// shorthand for tests that hold a store rather than a deriver.
pub fn render(store: &super::Store, own: &[super::snapshot::Family], om: bool) -> String {
    let f = if om {
        Format::OpenMetrics
    } else {
        Format::Text
    };
    encode(&crate::server::collect(store, own.to_vec()), f)
}
