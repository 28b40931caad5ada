//! The metric store's configuration (`store:` limits and histogram
//! formats, `passthrough:` switches), with its validation.

use crate::base::values::err;
use crate::base::{ConfigError, Dur};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub max_series_per_metric: usize,
    pub series_ttl: Dur,
    pub active_users_window: Dur,
    pub max_active_users: usize,
    /// Longest label value (derived and pass-through alike); a longer one
    /// drops the item, counted as `label_too_long`.
    #[serde(deserialize_with = "label_value_bytes")]
    pub max_label_value_bytes: usize,
    /// Most series across all metrics (past it, new series go to their
    /// metric's overflow series).
    #[serde(deserialize_with = "at_least_one")]
    pub max_series: usize,
    /// Most estimated exposition bytes of all series together (lines times
    /// name, labels and value), the same overflow past it.
    #[serde(deserialize_with = "at_least_one")]
    pub max_series_bytes: usize,
    /// Most pass-through metric families (past it, `family_limit`).
    #[serde(deserialize_with = "at_least_one")]
    pub max_passthrough_families: usize,
    /// The share (1-100 %) of `max_series` and `max_series_bytes` that
    /// pass-through series may take; the rest stays free for the derived
    /// metrics, so an application's metrics can never push the dashboards'
    /// series into overflow.
    pub passthrough_share_percent: usize,
    /// Buckets of derived histograms: `classic` (the rule's `buckets`, what
    /// the text formats and the seed's `_bucket` queries read), `native`
    /// (Prometheus' exponential buckets) or `both`; a rule may override it.
    pub histograms: HistogramFormat,
    /// Starting resolution of native histograms (-4 ..= 8; 3 is
    /// client_golang's bucket factor 1.1).
    pub native_histogram_schema: i32,
    /// Most buckets per side of a native histogram; past it the resolution
    /// is halved (neighbouring buckets merged), as client_golang does.
    #[serde(deserialize_with = "at_least_one")]
    pub native_histogram_max_buckets: usize,
    /// Precision p of the distinct-count sketches (2^p registers, 4 ..= 16).
    pub distinct_sketch_precision: u8,
    /// A file holding the sketches' 128-bit fleet key as 32 hex digits;
    /// without it the documented default key (every pod must use the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_key_file: Option<PathBuf>,
}

/// Which buckets a derived histogram keeps (`store.histograms`, a rule's `histograms`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HistogramFormat {
    #[default]
    Classic,
    Native,
    Both,
}

impl HistogramFormat {
    pub fn classic(self) -> bool {
        self != HistogramFormat::Native
    }
    pub fn native(self) -> bool {
        self != HistogramFormat::Classic
    }
}
impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_series_per_metric: 2000,
            series_ttl: Dur(Duration::from_secs(600)),
            active_users_window: Dur(Duration::from_secs(300)),
            max_active_users: 100_000,
            max_label_value_bytes: 2048,
            max_series: 50_000,
            max_series_bytes: 8 << 20,
            max_passthrough_families: 1000,
            passthrough_share_percent: 50,
            histograms: HistogramFormat::Classic,
            native_histogram_schema: super::native::DEFAULT_SCHEMA,
            native_histogram_max_buckets: super::native::DEFAULT_MAX_BUCKETS,
            distinct_sketch_precision: super::sketch::DEFAULT_PRECISION,
            distinct_key_file: None,
        }
    }
}

/// `store.max_label_value_bytes`: 1 to what the series key encoding holds
/// (refused at parse time, so the error names the key and the line).
fn label_value_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let max = super::store::MAX_LABEL_VALUE_BYTES;
    let v = usize::deserialize(d)?;
    if v == 0 || v > max {
        return Err(serde::de::Error::custom(format!(
            "must be between 1 and {max}, not {v}"
        )));
    }
    Ok(v)
}

fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(v)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PassthroughConfig {
    pub enabled: bool,
    /// Adds `otel_scope_name` and `otel_scope_version` labels (compatibility spec).
    pub scope_labels: bool,
    /// Adds `job` and `instance` from the resource to every series (on by
    /// default: without them, processes of one service overwrite each
    /// other's series).
    pub resource_labels: bool,
}
impl Default for PassthroughConfig {
    fn default() -> Self {
        PassthroughConfig {
            enabled: true,
            scope_labels: false,
            resource_labels: true,
        }
    }
}

impl StoreConfig {
    /// Checks what serde cannot (bounds that need no other section).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_series_per_metric == 0 {
            return err("store.max_series_per_metric", "must be at least 1");
        }
        if self.max_active_users == 0 {
            return err("store.max_active_users", "must be at least 1");
        }
        if !(1..=100).contains(&self.passthrough_share_percent) {
            return err(
                "store.passthrough_share_percent",
                "must be between 1 and 100",
            );
        }
        if self.series_ttl.0.is_zero() {
            return err("store.series_ttl", "must be longer than 0s");
        }
        if self.active_users_window.0.is_zero() {
            return err("store.active_users_window", "must be longer than 0s");
        }
        let (lo, hi) = (super::sketch::MIN_PRECISION, super::sketch::MAX_PRECISION);
        if !(lo..=hi).contains(&self.distinct_sketch_precision) {
            return err(
                "store.distinct_sketch_precision",
                &format!("must be between {lo} and {hi}"),
            );
        }
        self.sketch_key()?;
        let (lo, hi) = (super::native::MIN_SCHEMA, super::native::MAX_SCHEMA);
        if !(lo..=hi).contains(&self.native_histogram_schema) {
            return err(
                "store.native_histogram_schema",
                &format!("must be between {lo} and {hi}"),
            );
        }
        Ok(())
    }
}

impl StoreConfig {
    /// The fleet key: `distinct_key_file`'s 32 hex digits, or the default.
    pub fn sketch_key(&self) -> Result<[u8; 16], ConfigError> {
        let Some(p) = &self.distinct_key_file else {
            return Ok(super::sketch::DEFAULT_KEY);
        };
        let key = "store.distinct_key_file";
        let text = crate::fsread::read_string(p, crate::fsread::SECRET_MAX, "fleet key file")
            .map_err(|e| ConfigError::at(key, &e))?;
        super::sketch::parse_key(&text)
            .map_err(|e| ConfigError::at(key, &format!("{}: {e}", p.display())))
    }
}
