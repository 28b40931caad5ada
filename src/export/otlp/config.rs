//! The OTLP forwarder's configuration (`forward:`): where each signal goes,
//! and how it is batched, retried and queued; with its validation.

pub use crate::base::Protocol;
use crate::base::{ConfigError, Dur, Tls};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Forward {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traces: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Endpoint>,
    pub batch: Batch,
    pub retry: Retry,
    pub queue: Queue,
    pub drain_timeout: Dur,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Gzip,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Required: here, or for logs by `--forward-logs-to`, which fills it
    /// in when the file gives the rest of the section.
    #[serde(default)]
    pub endpoint: String,
    /// Inferred from the endpoint when absent: a path ending in `/v1/<signal>` is OTLP/HTTP, else gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_compression")]
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_compression() -> Compression {
    Compression::Gzip
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Batch {
    pub max_items: usize,
    pub max_bytes: usize,
    pub timeout: Dur,
}
impl Default for Batch {
    fn default() -> Self {
        Batch {
            max_items: 512,
            max_bytes: 1 << 20,
            timeout: Dur(Duration::from_millis(200)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Retry {
    pub initial_interval: Dur,
    pub max_interval: Dur,
    pub max_elapsed: Dur,
}
impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial_interval: Dur(Duration::from_millis(500)),
            max_interval: Dur(Duration::from_secs(30)),
            // never give up: a full queue pushes back on the app instead of
            // dropping what was acknowledged (0s = no limit)
            max_elapsed: Dur(Duration::ZERO),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Queue {
    pub max_items: usize,
    pub max_bytes: usize,
    /// On-disk queue directory; null keeps the queue in memory only.
    pub dir: Option<PathBuf>,
    pub max_disk_bytes: u64,
    /// fdatasync the on-disk queue before acknowledging (group commit);
    /// false survives a crash of the process but not of the node.
    pub fsync: bool,
    /// With fsync: how long the writer waits for more requests to share
    /// one fdatasync once it has one to write (group commit); 0s syncs at
    /// once. Adds at most this to a request's acknowledgement.
    pub fsync_delay: Dur,
    /// Batches sent concurrently per signal.
    pub consumers: usize,
    /// Memory queue: how long a request that finds the queue full waits
    /// for room, before it is counted or walked, until it is refused
    /// (push-back by latency); 0s refuses at once.
    pub max_wait: Dur,
}
impl Default for Queue {
    fn default() -> Self {
        Queue {
            max_items: 10_000,
            max_bytes: 64 << 20,
            dir: None,
            // an hour at 1,000 records/s of ~300-byte log records is
            // ~1.1 GB with framing: 2 GiB holds it with room to spare
            max_disk_bytes: 2 << 30,
            fsync: true,
            fsync_delay: Dur(Duration::from_millis(2)),
            consumers: 4,
            max_wait: Dur(Duration::from_millis(100)),
        }
    }
}

impl Default for Forward {
    fn default() -> Self {
        Forward {
            logs: None,
            traces: None,
            metrics: None,
            batch: Batch::default(),
            retry: Retry::default(),
            queue: Queue::default(),
            drain_timeout: Dur(Duration::from_secs(10)),
        }
    }
}

/// The longest `forward.queue.max_wait`: a request that waits longer
/// could as well be refused, told to retry in a second.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// The longest `queue.fsync_delay`.
pub const MAX_FSYNC_DELAY: Duration = Duration::from_millis(100);

impl Forward {
    /// What serde cannot check (the key paths start at `forward.`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: &str| Err(ConfigError(format!("forward.{key}: {msg}")));
        for (name, ep) in [
            ("logs", &self.logs),
            ("traces", &self.traces),
            ("metrics", &self.metrics),
        ] {
            if let Some(ep) = ep {
                if ep.endpoint.is_empty() {
                    let flag = match name {
                        "logs" => " (or --forward-logs-to / GEOMETRA_FORWARD_LOGS_TO)",
                        _ => "",
                    };
                    return bad(
                        &format!("{name}.endpoint"),
                        &format!("is required: write the downstream's URL here{flag}"),
                    );
                }
                if !(ep.endpoint.starts_with("http://") || ep.endpoint.starts_with("https://")) {
                    return bad(
                        &format!("{name}.endpoint"),
                        "must start with http:// or https://",
                    );
                }
            }
        }
        if self.batch.max_items == 0 {
            return bad("batch.max_items", "must be at least 1");
        }
        if self.queue.consumers == 0 {
            return bad("queue.consumers", "must be at least 1");
        }
        if self.queue.fsync_delay.0 > MAX_FSYNC_DELAY {
            return bad(
                "queue.fsync_delay",
                "must be at most 100ms (every acknowledgement waits for it)",
            );
        }
        if self.queue.max_wait.0 > MAX_WAIT {
            return bad(
                "queue.max_wait",
                "must be at most 1s (a request refused is told to retry in 1s)",
            );
        }
        Ok(())
    }
}

impl Endpoint {
    /// An endpoint with the defaults for everything but the URL
    /// (`--forward-logs-to` without a `forward.logs` section).
    pub fn with_url(url: &str) -> Endpoint {
        Endpoint {
            endpoint: url.to_string(),
            protocol: None,
            headers: BTreeMap::new(),
            bearer_token_file: None,
            timeout: default_timeout(),
            compression: default_compression(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RedactAction {
    Drop,
    Hash,
    Truncate,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    pub key: String,
    pub action: RedactAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
}

/// `redaction:`: attributes of forwarded data dropped, hashed or truncated.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Redaction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<RedactRule>,
}

impl Redaction {
    /// Truncation needs a length, hashing a key file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, r) in self.attributes.iter().enumerate() {
            if r.action == RedactAction::Truncate && r.max_length.is_none() {
                return Err(ConfigError::at(
                    &format!("redaction.attributes[{i}].max_length"),
                    "truncate needs max_length",
                ));
            }
        }
        let hashes = self
            .attributes
            .iter()
            .any(|r| r.action == RedactAction::Hash);
        if hashes && self.hash_key_file.is_none() {
            return Err(ConfigError::at(
                "redaction.hash_key_file",
                "the hash action needs a key file",
            ));
        }
        Ok(())
    }
}
