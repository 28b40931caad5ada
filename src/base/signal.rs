//! The OTLP signals, named by their items, and a value kept per signal.

/// The signals, by the items they carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalKind {
    Spans = 0,
    LogRecords = 1,
    MetricPoints = 2,
}

/// The item names, in [`SignalKind::ALL`] order (the Collector's metric
/// names use them: `otelcol_receiver_accepted_spans_total`).
pub const SIGNAL_ITEM_NAMES: [&str; 3] = ["spans", "log_records", "metric_points"];

impl SignalKind {
    pub const ALL: [SignalKind; 3] = [
        SignalKind::Spans,
        SignalKind::LogRecords,
        SignalKind::MetricPoints,
    ];

    /// `spans`, `log_records` or `metric_points`.
    pub fn item_name(self) -> &'static str {
        SIGNAL_ITEM_NAMES[self as usize]
    }
}

/// One `T` per signal, indexed by [`SignalKind`] (no positions to match by hand).
#[derive(Debug, Default, Clone)]
pub struct PerSignal<T>(pub [T; 3]);

impl<T> PerSignal<T> {
    /// `(signal, value)` in [`SignalKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (SignalKind, &T)> {
        SignalKind::ALL.into_iter().zip(self.0.iter())
    }
}

impl<T> std::ops::Index<SignalKind> for PerSignal<T> {
    type Output = T;
    fn index(&self, s: SignalKind) -> &T {
        &self.0[s as usize]
    }
}

impl<T> std::ops::IndexMut<SignalKind> for PerSignal<T> {
    fn index_mut(&mut self, s: SignalKind) -> &mut T {
        &mut self.0[s as usize]
    }
}
