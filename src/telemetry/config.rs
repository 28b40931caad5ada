//! The sidecar's own telemetry configuration (`telemetry:`): its log level
//! and format, and where its own traces, logs and metrics go over OTLP.

use crate::base::values::err;
use crate::base::{ConfigError, Dur, Protocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Telemetry {
    pub log_level: String,
    pub log_format: LogFormat,
    /// The sidecar's own traces, logs and metrics over OTLP (off unless
    /// `endpoint` is set), like the Collector's `service.telemetry`.
    #[serde(skip_serializing_if = "TelemetryOtlp::is_off")]
    pub otlp: TelemetryOtlp,
}
impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            log_level: "info".into(),
            log_format: LogFormat::Text,
            otlp: TelemetryOtlp::default(),
        }
    }
}

/// `telemetry.otlp`: where the sidecar sends its own telemetry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryOtlp {
    /// `http://host:4317` (gRPC) or `http://host:4318` (OTLP/HTTP, with
    /// `protocol: http`; `/v1/<signal>` is appended); unset: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How often self-metrics are pushed.
    pub interval: Dur,
    pub timeout: Dur,
    /// Resource attributes added to (and overriding) those from the
    /// environment (`OTEL_RESOURCE_ATTRIBUTES`, `K8S_POD_NAME`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resource: BTreeMap<String, String>,
    /// Allow an endpoint that is this sidecar's own OTLP receiver (its own
    /// telemetry is then derived and forwarded like any app's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_self: bool,
}
impl Default for TelemetryOtlp {
    fn default() -> Self {
        TelemetryOtlp {
            endpoint: None,
            protocol: Protocol::Grpc,
            headers: BTreeMap::new(),
            interval: Dur(Duration::from_secs(60)),
            timeout: Dur(Duration::from_secs(10)),
            resource: BTreeMap::new(),
            allow_self: false,
        }
    }
}
impl TelemetryOtlp {
    pub fn is_off(&self) -> bool {
        *self == TelemetryOtlp::default()
    }
}

impl Telemetry {
    /// The level, and `otlp`'s URL and intervals. Whether the endpoint is
    /// this sidecar's own receiver needs the receivers' section: checked
    /// where the sections meet (the config composition).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.otlp;
        let Some(ep) = &t.endpoint else {
            return validate_log_level(&self.log_level);
        };
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            return err(
                "telemetry.otlp.endpoint",
                "must start with http:// or https://",
            );
        }
        if t.interval.0 < Duration::from_secs(1) {
            return err("telemetry.otlp.interval", "must be at least 1s");
        }
        if t.timeout.0.is_zero() {
            return err("telemetry.otlp.timeout", "must be more than 0");
        }
        validate_log_level(&self.log_level)
    }
}

impl TelemetryOtlp {
    /// `host:port` of the endpoint URL (empty when unset).
    pub fn authority(&self) -> &str {
        let ep = self.endpoint.as_deref().unwrap_or("");
        let rest = ep
            .strip_prefix("http://")
            .or_else(|| ep.strip_prefix("https://"))
            .unwrap_or(ep);
        rest.split('/').next().unwrap_or("")
    }
}

/// The levels `telemetry.log_level` takes, alone or as `target=level`.
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

fn validate_log_level(s: &str) -> Result<(), ConfigError> {
    let ok = |lvl: &str| LOG_LEVELS.contains(&lvl.trim().to_ascii_lowercase().as_str());
    let bad = s.split(',').find(|d| match d.split_once('=') {
        Some((target, lvl)) => target.trim().is_empty() || !ok(lvl),
        None => !ok(d),
    });
    match bad {
        Some(d) => err(
            "telemetry.log_level",
            &format!(
                "{d:?} is not a level: write one of {} or target=level, comma-separated",
                LOG_LEVELS.join(", ")
            ),
        ),
        None => Ok(()),
    }
}
