//! The whole configuration: each component's section composed into one
//! YAML document, the embedded defaults, the command line's overrides, and
//! the checks that span sections. Every key is optional; an unknown or
//! mistyped key is refused with its path and line, never silently
//! defaulted.
//!
//! Each section's types and validation live with the component that uses
//! it (`receiver/config.rs`, `derive/config.rs`, `metrics/config.rs`,
//! `telemetry/config.rs`, `export/*/config.rs`, `server.rs`); components are
//! built from their own section, never from [`Config`]. Only the binary,
//! the reloader and this folder name [`Config`].

pub mod overrides;
mod yaml;

use crate::base::values::err;
use crate::derive::ai::AiConfig;
use crate::derive::config::{default_rules, validate_rules, DeriveConfig, Rule};
use crate::export::otlp::config::{Forward, Redaction};
use crate::export::remote_write::config::RemoteWrite;
use crate::metrics::config::{PassthroughConfig, StoreConfig};
use crate::receiver::config::Receivers;
use crate::server::ServerConfig;
use crate::telemetry::config::Telemetry;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::base::ConfigError;
pub use overrides::Overrides;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub receivers: Receivers,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub passthrough: PassthroughConfig,
    /// When given, replaces the default rules.
    #[serde(default = "default_rules")]
    pub rules: Vec<Rule>,
    /// Appended to `rules`.
    pub extra_rules: Vec<Rule>,
    /// GenAI conventions version and price table.
    pub ai: AiConfig,
    pub forward: Forward,
    /// Prometheus remote write of the store's metrics; off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_write: Option<RemoteWrite>,
    pub redaction: Redaction,
    pub telemetry: Telemetry,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            receivers: Receivers::default(),
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            passthrough: PassthroughConfig::default(),
            rules: default_rules(),
            extra_rules: Vec::new(),
            ai: AiConfig::default(),
            forward: Forward::default(),
            remote_write: None,
            redaction: Redaction::default(),
            telemetry: Telemetry::default(),
        }
    }
}

impl Config {
    /// Parses and validates YAML text (errors name the key path and the line).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::resolve(text, origin, &Overrides::default())
    }

    /// The config in force: `path`'s file (or the defaults without one)
    /// with the command line's and the environment's overrides, validated.
    pub fn load(path: Option<&Path>, ov: &Overrides) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (
                crate::fsread::read_string(p, crate::fsread::CONFIG_MAX, "config file")
                    .map_err(ConfigError)?,
                p.display().to_string(),
            ),
            None => (String::new(), "defaults".to_string()),
        };
        Config::resolve(&text, &origin, ov)
    }

    /// Parse, apply the overrides, validate. A validation error names the
    /// file's line, or the command line when an override set that key.
    fn resolve(text: &str, origin: &str, ov: &Overrides) -> Result<Config, ConfigError> {
        let mut cfg = Config::parse(text, origin)?;
        ov.apply(&mut cfg);
        cfg.validate().map_err(|e| match ov.sets(&e.0) {
            Some(flag) => ConfigError(format!("command line ({flag}): {e}")),
            None => ConfigError(format!("{origin}: {}", yaml::with_line(text, &e.0))),
        })?;
        Ok(cfg)
    }

    /// The YAML as serde reads it, not yet validated.
    fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        // serde_path_to_error names the full key path even for errors
        // raised inside a value (a bad duration, address or enum).
        serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // the YAML error may start with its own, shorter, path
            let inner = match inner.split_once(": ") {
                Some((p, rest)) if path.starts_with(p) && !p.contains(' ') => rest.to_string(),
                _ => inner,
            };
            match path.as_str() {
                "." => ConfigError(format!("{origin}: {inner}")),
                _ => ConfigError(format!("{origin}: {path}: {inner}")),
            }
        })
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// All rules in effect.
    pub fn all_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().chain(self.extra_rules.iter())
    }

    /// What the deriver is compiled from.
    pub fn derive(&self) -> DeriveConfig<'_> {
        DeriveConfig {
            rules: &self.rules,
            extra_rules: &self.extra_rules,
            store: &self.store,
            ai: &self.ai,
        }
    }

    /// Each section's own checks, then those that span sections. The error
    /// starts with the key path (`a.b[0].c: ...`); loading adds the line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.receivers.validate()?;
        self.store.validate()?;
        self.server.validate()?;
        validate_rules(&self.rules, &self.extra_rules, self.store.histograms)?;
        self.ai.validate()?;
        self.redaction.validate()?;
        self.forward.validate()?;
        if let Some(rw) = &self.remote_write {
            rw.validate()?;
        }
        self.telemetry.validate()?;
        self.validate_telemetry_target()
    }

    /// `telemetry.otlp.endpoint` is not this sidecar's own receiver unless
    /// `allow_self` says so (its own telemetry would be derived and
    /// forwarded, and every export would log, be exported...).
    fn validate_telemetry_target(&self) -> Result<(), ConfigError> {
        let t = &self.telemetry.otlp;
        let Some(ep) = &t.endpoint else {
            return Ok(());
        };
        let own = t
            .authority()
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .is_some_and(|(host, port)| {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                self.receivers.reached_by(host, port)
            });
        if own && !t.allow_self {
            return err(
                "telemetry.otlp.endpoint",
                &format!(
                    "{ep} is this sidecar's own OTLP receiver: its own telemetry would be \
                     derived and forwarded as an app's; send it to a Collector, or set \
                     telemetry.otlp.allow_self: true if that is meant"
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
