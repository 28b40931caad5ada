//! Config reload without a restart: SIGHUP, or a change of the `--config`
//! file (a Kubernetes ConfigMap's atomic `..data` symlink swap included),
//! re-reads the config; a valid one whose only changes are reloadable is
//! put in force by swapping the deriver, anything else is refused and the
//! old config keeps serving. Outcomes are counted for `/metrics`.

use crate::base::Live;
use crate::config::Config;
use crate::receiver::cors::Cors;
use crate::receiver::Pipeline;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// How often the config file is read and compared. Polling rather than
/// inotify: a mounted ConfigMap changes by replacing the `..data` symlink in
/// the directory, so a watch on the file's inode never fires and a watch on
/// the directory must re-resolve symlinks; editors and `kubectl cp` replace
/// files in yet other ways. Reading a small file every 2 s and comparing its
/// content catches every one of them with no new dependency, well within the
/// 10 s promised.
pub const POLL: Duration = Duration::from_secs(2);

/// Keys (dotted paths: a whole section or one key of it) that reload; every
/// other difference is refused as restart-only, named by its key path (the
/// listeners, and the forward queue's on-disk state and sender tasks:
/// `forward.queue.dir`, `max_disk_bytes`, `fsync`, `fsync_delay`, `consumers`, and
/// `forward.drain_timeout`). `remote_write` and each `forward.<signal>`
/// reload while they stay configured; adding or removing one needs a
/// restart ([`added_or_removed`]).
const RELOADABLE: &[&str] = &[
    "remote_write",
    "forward.logs",
    "forward.traces",
    "forward.metrics",
    "forward.batch",
    "forward.retry",
    "forward.queue.max_items",
    "forward.queue.max_bytes",
    "forward.queue.max_wait",
    "rules",
    "extra_rules",
    "ai",
    "store",
    "redaction",
    "receivers.otlp_http.cors_allowed_origins",
    "receivers.otlp_http.cors_allowed_headers",
    "receivers.otlp_http.cors_max_age",
    "telemetry.log_level",
    "passthrough",
];

/// Reload outcomes, shown on `/metrics`.
pub struct ReloadStats {
    pub success: AtomicU64,
    pub failure: AtomicU64,
    pub last_ok: AtomicBool,
}

impl Default for ReloadStats {
    fn default() -> Self {
        ReloadStats {
            success: AtomicU64::new(0),
            failure: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
        }
    }
}

impl ReloadStats {
    /// Reload outcomes (counted by [`Reloader::reload`]).
    pub fn declare(self: &Arc<Self>, t: &crate::telemetry::SelfMetrics) {
        let s = self.clone();
        t.counter(
            "geometra_sidecar_config_reloads_total",
            "Config reloads by result.",
            "",
            move |o| {
                for (result, n) in [("success", &s.success), ("failure", &s.failure)] {
                    let v = n.load(Ordering::Relaxed);
                    o.observe(v, &crate::telemetry::kv([("result", result)]));
                }
            },
        );
        let s = self.clone();
        t.gauge(
            "geometra_sidecar_config_last_reload_successful",
            "1 if the last config reload was put in force (or none was tried), 0 if it was refused.",
            "",
            move |o| o.observe(if s.last_ok.load(Ordering::Relaxed) { 1.0 } else { 0.0 }, &[]),
        );
    }
}

/// The keys (dotted paths) whose values differ between two configs, apart
/// from the reloadable ones.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let strip = |c: &Config| {
        let mut v = serde_yaml_ng::to_value(c).unwrap_or(serde_yaml_ng::Value::Null);
        for k in RELOADABLE {
            remove_path(&mut v, k);
        }
        v
    };
    let mut out = Vec::new();
    diff("", &strip(old), &strip(new), &mut out);
    out
}

/// The exporters (`remote_write`, `forward.<signal>`) configured in one
/// config and not in the other: they reload only while they stay
/// configured, so these need a restart.
pub fn added_or_removed(old: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (&old.forward, &new.forward);
    [
        (
            "remote_write",
            old.remote_write.is_some(),
            new.remote_write.is_some(),
        ),
        ("forward.logs", a.logs.is_some(), b.logs.is_some()),
        ("forward.traces", a.traces.is_some(), b.traces.is_some()),
        ("forward.metrics", a.metrics.is_some(), b.metrics.is_some()),
    ]
    .into_iter()
    .filter(|(_, x, y)| x != y)
    .map(|(k, _, _)| k.to_string())
    .collect()
}

/// Removes the key at a dotted path (`a.b.c`), if there is one.
fn remove_path(v: &mut serde_yaml_ng::Value, path: &str) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let serde_yaml_ng::Value::Mapping(m) = v else {
        return;
    };
    match rest {
        None => {
            m.remove(head);
        }
        Some(rest) => {
            if let Some(sub) = m.get_mut(head) {
                remove_path(sub, rest);
            }
        }
    }
}

fn diff(path: &str, a: &serde_yaml_ng::Value, b: &serde_yaml_ng::Value, out: &mut Vec<String>) {
    use serde_yaml_ng::Value::Mapping;
    match (a, b) {
        (Mapping(ma), Mapping(mb)) => {
            let keys = ma.keys().chain(mb.keys().filter(|k| !ma.contains_key(*k)));
            for k in keys {
                let name = k.as_str().map(str::to_string).unwrap_or_default();
                let sub = if path.is_empty() {
                    name
                } else {
                    format!("{path}.{name}")
                };
                let none = serde_yaml_ng::Value::Null;
                diff(
                    &sub,
                    ma.get(k).unwrap_or(&none),
                    mb.get(k).unwrap_or(&none),
                    out,
                );
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// Reads the config the way start-up does (file plus command-line overrides,
/// validated).
pub type Loader = Box<dyn Fn() -> Result<Config, String> + Send>;

/// Puts a `telemetry.log_level` in force in the sidecar's own logging.
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// Owns the config in force and puts new ones in force.
pub struct Reloader {
    load: Loader,
    current: Config,
    pipeline: Arc<Pipeline>,
    /// reload outcomes, for `/metrics`
    stats: Arc<ReloadStats>,
    /// the OTLP/HTTP receiver's CORS policy (none when it is off)
    cors: Option<Arc<Live<Cors>>>,
    /// `None` when `RUST_LOG` set the log filter (it wins over the file)
    set_log_level: Option<SetLogLevel>,
    /// the remote write exporter's settings (none when it is off)
    remote_write: Option<crate::export::remote_write::Control>,
    /// the OTLP forwarder (none when nothing is forwarded)
    forward: Option<Arc<crate::export::otlp::Forwarder>>,
}

impl Reloader {
    pub fn new(load: Loader, current: Config, pipeline: Arc<Pipeline>) -> Self {
        Reloader {
            load,
            current,
            pipeline,
            stats: Arc::default(),
            cors: None,
            set_log_level: None,
            remote_write: None,
            forward: None,
        }
    }

    /// The reload outcomes this reloader counts (declared for `/metrics`).
    pub fn stats(&self) -> Arc<ReloadStats> {
        self.stats.clone()
    }

    /// Reloads the OTLP forwarder's endpoints and settings too.
    pub fn with_forward(mut self, f: Option<Arc<crate::export::otlp::Forwarder>>) -> Self {
        self.forward = f;
        self
    }

    /// Reloads `telemetry.log_level` too (`None`: `RUST_LOG` rules).
    pub fn with_log_level(mut self, set: Option<SetLogLevel>) -> Self {
        self.set_log_level = set;
        self
    }

    /// Reloads the remote write exporter's settings too.
    pub fn with_remote_write(mut self, c: Option<crate::export::remote_write::Control>) -> Self {
        self.remote_write = c;
        self
    }

    /// Reloads the OTLP/HTTP receiver's CORS policy too.
    pub fn with_cors(mut self, cors: Arc<Live<Cors>>) -> Self {
        self.cors = Some(cors);
        self
    }

    /// Re-reads and applies the config; counts and logs the outcome.
    pub fn reload(&mut self, why: &str) -> Result<(), String> {
        let _span = tracing::info_span!("config_reload", trigger = why).entered();
        let stats = self.stats.clone();
        let r = self.try_reload();
        match &r {
            Ok(rules) => {
                stats.success.fetch_add(1, Ordering::Relaxed);
                stats.last_ok.store(true, Ordering::Relaxed);
                tracing::info!(trigger = why, rules, "config reloaded");
            }
            Err(e) => {
                stats.failure.fetch_add(1, Ordering::Relaxed);
                stats.last_ok.store(false, Ordering::Relaxed);
                tracing::error!(trigger = why, error = %e, "config reload refused; the previous config stays in force");
            }
        }
        r.map(|_| ())
    }

    fn try_reload(&mut self) -> Result<usize, String> {
        let new = (self.load)()?;
        let mut fixed = restart_only_changes(&self.current, &new);
        fixed.extend(added_or_removed(&self.current, &new));
        if !fixed.is_empty() {
            return Err(format!(
                "{} cannot change without a restart (restart the pod to apply it); nothing of this config was applied",
                fixed.join(", ")
            ));
        }
        // everything that can fail first (the hash key file is re-read, so
        // SIGHUP also rotates the key), then nothing fails
        let redactor = crate::export::otlp::redact::Redactor::new(&new.redaction)?;
        let remote_write = self.remote_write_setup(&new)?;
        let forward = self.forward_setup(&new)?;
        self.set_log_level(&new)?;
        // limits before the rules, so that families the new rules add get them too
        self.pipeline.store().set_limits(&new.store);
        let next = self.pipeline.deriver.load().reload(&new.derive());
        self.pipeline.deriver.store(next);
        if let Some(f) = &self.pipeline.forward {
            f.set_redaction(redactor);
        }
        let cleared = self
            .pipeline
            .store()
            .passthrough
            .set_switches(&new.passthrough);
        if cleared > 0 {
            tracing::info!(
                series = cleared,
                "passthrough.* changed: pass-through series removed, they return as exports arrive"
            );
        }
        if let Some(c) = &self.cors {
            c.store(Cors::new(&new.receivers.otlp_http));
        }
        if let (Some(setup), Some(control)) = (remote_write, &self.remote_write) {
            control.send_replace(Arc::new(setup));
        }
        if let (Some(r), Some(f)) = (forward, &self.forward) {
            f.apply(r);
        }
        let rules = new.all_rules().count();
        let changed = changed_keys(&self.current, &new);
        tracing::debug!(keys = %changed.join(", "), "config keys changed");
        self.current = new;
        Ok(rules)
    }
}

impl Reloader {
    /// A changed `remote_write` built and checked (None: unchanged). It may
    /// change while configured; adding or removing it needs a restart.
    fn remote_write_setup(
        &self,
        new: &Config,
    ) -> Result<Option<crate::export::remote_write::Setup>, String> {
        match (&self.current.remote_write, &new.remote_write, &self.remote_write) {
            (old, new, _) if old == new => Ok(None),
            (Some(_), Some(rw), Some(_)) => crate::export::remote_write::Setup::new(rw).map(Some),
            _ => Err("remote_write cannot be added or removed without a restart (restart the pod to apply it); nothing of this config was applied".into()),
        }
    }

    /// A changed `forward:` built and checked, new clients and all (None:
    /// unchanged, or nothing forwarded). Which keys may change was checked
    /// before.
    fn forward_setup(&self, new: &Config) -> Result<Option<crate::export::otlp::Reconfig>, String> {
        if self.current.forward == new.forward {
            return Ok(None);
        }
        match &self.forward {
            Some(f) => f.prepare(&new.forward).map(Some),
            None => Ok(None),
        }
    }

    /// The last fallible step of a reload: a changed level is parsed and put
    /// in force (with `RUST_LOG` set it stays, and a warning says why).
    fn set_log_level(&self, new: &Config) -> Result<(), String> {
        let level = &new.telemetry.log_level;
        if *level == self.current.telemetry.log_level {
            return Ok(());
        }
        match &self.set_log_level {
            Some(set) => set(level),
            None => {
                tracing::warn!(
                    log_level = %level,
                    "telemetry.log_level changed but RUST_LOG is set and overrides it; the log level stays"
                );
                Ok(())
            }
        }
    }
}

/// Every key (dotted path) whose value differs between two configs.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let v = |c: &Config| serde_yaml_ng::to_value(c).unwrap_or(serde_yaml_ng::Value::Null);
    let mut out = Vec::new();
    diff("", &v(old), &v(new), &mut out);
    out
}

/// The config file to watch, and its bytes as they were read before the
/// config in force was loaded. The poll compares with these, not with its
/// own first read: a change made between startup and the reload thread's
/// first turn (a slow thread on a busy node) is then still seen.
pub struct Watched {
    path: Option<PathBuf>,
    seen: Option<Vec<u8>>,
}

impl Watched {
    /// Reads `path` now; call it before loading the config, so that a
    /// change racing the load shows as a difference (one reload too many,
    /// never one too few).
    pub fn read_now(path: Option<PathBuf>) -> Self {
        let seen = read_watched(&path);
        Watched { path, seen }
    }

    /// Reads the file again: true if its bytes differ from the last ones
    /// seen. An unreadable file (e.g. mid-swap) is no change: the next poll
    /// tries again.
    fn changed(&mut self) -> bool {
        let Some(now) = read_watched(&self.path) else {
            return false;
        };
        if self.seen.as_ref() == Some(&now) {
            return false;
        }
        self.seen = Some(now);
        true
    }
}

/// The watched file's bytes; a file past the bound still shows as changed,
/// the reload then refuses it with the bound named.
fn read_watched(p: &Option<PathBuf>) -> Option<Vec<u8>> {
    p.as_ref()
        .and_then(|p| crate::fsread::head(p, crate::fsread::CONFIG_MAX + 1))
}

/// Starts reloading on SIGHUP and on a change of the watched file (polled
/// every [`POLL`] on a thread of its own, so file reads never block an
/// async worker). Must be called within the runtime.
pub fn spawn(watched: Watched, mut reloader: Reloader) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<()>();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup =
            signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
    }
    #[cfg(not(unix))]
    std::mem::forget(tx);
    std::thread::Builder::new()
        .name("config-reload".into())
        .spawn(move || {
            let mut watched = watched;
            loop {
                match rx.recv_timeout(POLL) {
                    Ok(()) => {
                        watched.changed();
                        let _ = reloader.reload("SIGHUP");
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if watched.changed() {
                            let _ = reloader.reload("file changed");
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the config reload thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_before_the_first_poll_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("config.yaml");
        std::fs::write(&p, "rules: []\n").expect("write");
        let mut w = Watched::read_now(Some(p.clone()));
        // the file changes before the reload thread ever ran
        std::fs::write(&p, "rules: [x]\n").expect("write");
        assert!(w.changed(), "compared with the bytes read at startup");
        assert!(!w.changed(), "seen once");
        std::fs::remove_file(&p).expect("remove");
        assert!(!w.changed(), "a missing file (mid-swap) is no change");
        std::fs::write(&p, "rules: [x]\n").expect("write");
        assert!(!w.changed(), "back with the same bytes: nothing to do");
        assert!(!Watched::read_now(None).changed(), "no --config");
    }

    #[test]
    fn rule_changes_reload_and_listen_changes_are_named() {
        let old = Config::default();
        let mut new = old.clone();
        new.rules.pop();
        new.store.series_ttl.0 *= 2;
        new.receivers.otlp_http.cors_allowed_origins = vec!["https://a.example".into()];
        new.receivers.otlp_http.cors_max_age += 1;
        assert!(restart_only_changes(&old, &new).is_empty());
        new.receivers.otlp_grpc.listen = "127.0.0.1:1"
            .parse()
            .unwrap_or(old.receivers.otlp_grpc.listen);
        new.receivers.max_in_flight_bytes_per_connection = Some(16 << 20);
        new.forward.queue.dir = Some("/tmp/q".into());
        assert_eq!(
            restart_only_changes(&old, &new),
            vec![
                "receivers.otlp_grpc.listen",
                "receivers.max_in_flight_bytes_per_connection",
                "forward.queue.dir"
            ]
        );
    }

    #[test]
    fn remote_write_reloads_only_while_configured() {
        let mut old = Config::default();
        let mut new = old.clone();
        new.remote_write = Some(crate::export::remote_write::config::RemoteWrite::with_url(
            "http://a/push",
        ));
        // its keys are not restart-only (adding or removing is refused by the reloader)
        assert!(restart_only_changes(&old, &new).is_empty());
        old.remote_write = new.remote_write.clone();
        if let Some(rw) = &mut new.remote_write {
            rw.interval.0 *= 2;
        }
        assert!(restart_only_changes(&old, &new).is_empty());
    }

    fn endpoint() -> crate::export::otlp::config::Endpoint {
        crate::export::otlp::config::Endpoint {
            endpoint: "http://a:4317".into(),
            protocol: None,
            headers: Default::default(),
            bearer_token_file: None,
            timeout: crate::base::Dur(Duration::from_secs(1)),
            compression: crate::export::otlp::config::Compression::Gzip,
            tls: None,
        }
    }

    #[test]
    fn forward_endpoints_reload_and_its_disk_state_is_named() {
        use crate::base::Tls;
        let mut old = Config::default();
        old.forward.logs = Some(endpoint());
        let mut new = old.clone();
        if let Some(ep) = &mut new.forward.logs {
            ep.endpoint = "https://b:4318/v1/logs".into();
            ep.headers.insert("x-tenant".into(), "t".into());
            ep.bearer_token_file = Some("/run/token".into());
            ep.tls = Some(Tls {
                ca_file: Some("/run/ca.pem".into()),
                ..Tls::default()
            });
            ep.timeout.0 *= 2;
            ep.compression = crate::export::otlp::config::Compression::None;
        }
        new.forward.batch.max_items += 1;
        new.forward.retry.max_interval.0 *= 2;
        new.forward.queue.max_items += 1;
        new.forward.queue.max_bytes += 1;
        new.forward.queue.max_wait.0 *= 2;
        assert!(restart_only_changes(&old, &new).is_empty());
        assert!(added_or_removed(&old, &new).is_empty());
        new.forward.queue.dir = Some("/q".into());
        new.forward.queue.max_disk_bytes += 1;
        new.forward.queue.fsync = !new.forward.queue.fsync;
        new.forward.queue.consumers += 1;
        new.forward.drain_timeout.0 *= 2;
        let mut named = restart_only_changes(&old, &new);
        named.sort();
        assert_eq!(
            named,
            vec![
                "forward.drain_timeout",
                "forward.queue.consumers",
                "forward.queue.dir",
                "forward.queue.fsync",
                "forward.queue.max_disk_bytes",
            ]
        );
    }

    #[test]
    fn adding_or_removing_a_forwarded_signal_is_named() {
        let mut old = Config::default();
        let new = old.clone();
        assert!(added_or_removed(&old, &new).is_empty());
        let ep = endpoint();
        old.forward.logs = Some(ep.clone());
        old.forward.traces = Some(ep);
        old.remote_write = Some(crate::export::remote_write::config::RemoteWrite::with_url(
            "http://a/push",
        ));
        let mut new = old.clone();
        new.forward.logs = None;
        assert_eq!(added_or_removed(&old, &new), vec!["forward.logs"]);
        assert_eq!(added_or_removed(&new, &old), vec!["forward.logs"]);
        new.remote_write = None;
        assert_eq!(
            added_or_removed(&old, &new),
            vec!["remote_write", "forward.logs"]
        );
    }
}
