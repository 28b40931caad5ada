//! What the command line and the `GEOMETRA_*` variables set.
//!
//! One rule of precedence, per key: a flag wins over its variable (clap
//! reads the variable only when the flag is absent), which wins over the
//! config file, which wins over the embedded default. An override sets the
//! one key it names: inside a section the file gives partly (a
//! `remote_write:` with only `interval`, a `forward.logs:` with only
//! `timeout`) it fills in that key and keeps the file's others.

use super::Config;
use crate::base::ListenAddr;
use crate::export::otlp::config::Endpoint;
use crate::export::remote_write::config::RemoteWrite;
use crate::telemetry::config::LogFormat;
use std::path::PathBuf;

/// Each field: the value of one flag or variable, `None` when neither is given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--otlp-grpc-listen` / `GEOMETRA_OTLP_GRPC_LISTEN`: `receivers.otlp_grpc.listen`
    pub otlp_grpc_listen: Option<ListenAddr>,
    /// `--otlp-http-listen` / `GEOMETRA_OTLP_HTTP_LISTEN`: `receivers.otlp_http.listen` (`Some(None)`: off)
    pub otlp_http_listen: Option<Option<ListenAddr>>,
    /// `--metrics-listen` / `GEOMETRA_METRICS_LISTEN`: `server.listen`
    pub metrics_listen: Option<ListenAddr>,
    /// `--forward-logs-to` / `GEOMETRA_FORWARD_LOGS_TO`: `forward.logs.endpoint`
    pub forward_logs_to: Option<String>,
    /// `--remote-write-url` / `GEOMETRA_REMOTE_WRITE_URL`: `remote_write.url`
    pub remote_write_url: Option<String>,
    /// `--queue-dir` / `GEOMETRA_QUEUE_DIR`: `forward.queue.dir`
    pub queue_dir: Option<PathBuf>,
    /// `--log-format` / `GEOMETRA_LOG_FORMAT`: `telemetry.log_format`
    pub log_format: Option<LogFormat>,
}

/// (key path, flag, variable) of every override, in [`Overrides`] order.
pub const KEYS: [(&str, &str, &str); 7] = [
    (
        "receivers.otlp_grpc.listen",
        "--otlp-grpc-listen",
        "GEOMETRA_OTLP_GRPC_LISTEN",
    ),
    (
        "receivers.otlp_http.listen",
        "--otlp-http-listen",
        "GEOMETRA_OTLP_HTTP_LISTEN",
    ),
    (
        "server.listen",
        "--metrics-listen",
        "GEOMETRA_METRICS_LISTEN",
    ),
    (
        "forward.logs.endpoint",
        "--forward-logs-to",
        "GEOMETRA_FORWARD_LOGS_TO",
    ),
    (
        "remote_write.url",
        "--remote-write-url",
        "GEOMETRA_REMOTE_WRITE_URL",
    ),
    ("forward.queue.dir", "--queue-dir", "GEOMETRA_QUEUE_DIR"),
    (
        "telemetry.log_format",
        "--log-format",
        "GEOMETRA_LOG_FORMAT",
    ),
];

impl Overrides {
    /// Sets each given key in `cfg`, creating its section when the file has none.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(a) = self.otlp_grpc_listen {
            cfg.receivers.otlp_grpc.listen = a;
        }
        if let Some(a) = self.otlp_http_listen {
            cfg.receivers.otlp_http.listen = a;
        }
        if let Some(a) = self.metrics_listen {
            cfg.server.listen = a;
        }
        if let Some(f) = self.log_format {
            cfg.telemetry.log_format = f;
        }
        if let Some(url) = &self.forward_logs_to {
            match &mut cfg.forward.logs {
                Some(ep) => ep.endpoint = url.clone(),
                None => cfg.forward.logs = Some(Endpoint::with_url(url)),
            }
        }
        if let Some(url) = &self.remote_write_url {
            match &mut cfg.remote_write {
                Some(rw) => rw.url = url.clone(),
                None => cfg.remote_write = Some(RemoteWrite::with_url(url)),
            }
        }
        if let Some(d) = &self.queue_dir {
            cfg.forward.queue.dir = Some(d.clone());
        }
    }

    /// `--flag / VARIABLE` when a validation error (`key.path: message`)
    /// is about a key one of these overrides set.
    pub fn sets(&self, error: &str) -> Option<String> {
        let given = [
            self.otlp_grpc_listen.is_some(),
            self.otlp_http_listen.is_some(),
            self.metrics_listen.is_some(),
            self.forward_logs_to.is_some(),
            self.remote_write_url.is_some(),
            self.queue_dir.is_some(),
            self.log_format.is_some(),
        ];
        let path = error.split_once(": ").map_or(error, |(p, _)| p);
        KEYS.iter()
            .zip(given)
            .find(|((key, _, _), on)| *on && path == *key)
            .map(|((_, flag, var), _)| format!("{flag} / {var}"))
    }
}
