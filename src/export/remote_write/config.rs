//! The remote-write exporter's configuration (`remote_write:`): where to
//! push, how often, with which extra labels and credentials.

use crate::base::{ConfigError, Dur, Tls};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWrite {
    /// The receiver's write endpoint, e.g. `http://mimir:8080/api/v1/push`.
    /// Required: here, or by `--remote-write-url` / `GEOMETRA_REMOTE_WRITE_URL`,
    /// which fills it in when the file gives the rest of the section.
    #[serde(default)]
    pub url: String,
    /// How often the store's current values are pushed.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Added to every series that has no label of that name. `job` and
    /// `instance` are filled in when not given here ([`RemoteWrite::labels`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Per request.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password_file: PathBuf,
}

fn default_interval() -> Dur {
    Dur(Duration::from_secs(15))
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

impl RemoteWrite {
    /// A config with defaults for everything but the URL (`--remote-write-url`).
    pub fn with_url(url: &str) -> RemoteWrite {
        RemoteWrite {
            url: url.to_string(),
            interval: default_interval(),
            external_labels: BTreeMap::new(),
            headers: BTreeMap::new(),
            bearer_token_file: None,
            basic_auth: None,
            tls: None,
            timeout: default_timeout(),
        }
    }

    /// What serde cannot check (the key paths start at `remote_write.`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: &str| Err(ConfigError(format!("remote_write.{key}: {msg}")));
        if self.url.is_empty() {
            return bad(
                "url",
                "is required: write the receiver's URL here (or --remote-write-url / GEOMETRA_REMOTE_WRITE_URL)",
            );
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad("url", "must start with http:// or https://");
        }
        if self.interval.0 < Duration::from_secs(1) {
            return bad("interval", "must be at least 1s");
        }
        if self.timeout.0.is_zero() {
            return bad("timeout", "must be longer than 0s");
        }
        for k in self.external_labels.keys() {
            if !is_label_name(k) || k.starts_with("__") {
                return bad(
                    &format!("external_labels.{k}"),
                    "must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
                );
            }
        }
        if self.bearer_token_file.is_some() && self.basic_auth.is_some() {
            return bad(
                "basic_auth",
                "bearer_token_file and basic_auth exclude each other",
            );
        }
        Ok(())
    }
}

/// The `job` every pushed series carries unless `external_labels` names
/// one: what Prometheus gives the sidecar's scraped series in the shipped
/// scrape configs, so the shipped rules and dashboard select pushed and
/// scraped series alike.
pub const DEFAULT_JOB: &str = "geometra-sidecar";

impl RemoteWrite {
    /// The labels every pushed series gets where it lacks them:
    /// `external_labels`, then `job` ([`DEFAULT_JOB`]) and `instance` (this
    /// sidecar: the pod's name, given by the exporter) where those are not given. Without an
    /// `instance`, the replicas of one Deployment, configured alike, would
    /// push the same series and overwrite each other's samples at the
    /// receiver; a scrape gets this label from Prometheus, a push must
    /// carry it.
    pub fn labels(&self, instance: Option<String>) -> BTreeMap<String, String> {
        let mut l = self.external_labels.clone();
        l.entry("job".into()).or_insert_with(|| DEFAULT_JOB.into());
        if let Some(i) = instance.filter(|i| !i.is_empty()) {
            l.entry("instance".into()).or_insert(i);
        }
        l
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
fn is_label_name(k: &str) -> bool {
    let mut b = k.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_and_instance_are_filled_in_unless_given() {
        let mut rw = RemoteWrite::with_url("http://rw/");
        rw.external_labels.insert("cluster".into(), "eu-1".into());
        let l = rw.labels(Some("pod-a".into()));
        let want = [
            ("cluster", "eu-1"),
            ("instance", "pod-a"),
            ("job", DEFAULT_JOB),
        ];
        assert_eq!(l, want.map(|(k, v)| (k.to_string(), v.to_string())).into());
        assert!(!rw.labels(None).contains_key("instance"));
        assert!(!rw.labels(Some(String::new())).contains_key("instance"));
        rw.external_labels.insert("instance".into(), "mine".into());
        rw.external_labels.insert("job".into(), "other".into());
        let l = rw.labels(Some("pod-a".into()));
        assert_eq!(
            (l["instance"].as_str(), l["job"].as_str()),
            ("mine", "other")
        );
    }
}
