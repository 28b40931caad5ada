//! Plain types every layer shares. This folder imports nothing from the
//! crate, so any component can use it without pulling in another one:
//!
//! - [`values`]: what config sections are written in (durations, listen
//!   addresses, TLS files, the OTLP protocol) and the config error type;
//! - [`signal`]: the three OTLP signals and a value per signal;
//! - [`live`]: a value swapped whole on a config reload;
//! - [`now_secs`]: the wall clock in unix seconds.

pub mod live;
pub mod signal;
pub mod values;

pub use live::Live;
pub use signal::{PerSignal, SignalKind, SIGNAL_ITEM_NAMES};
pub use values::{ConfigError, Dur, ListenAddr, Protocol, Tls};

/// Unix seconds now (0 if the clock is before 1970).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
