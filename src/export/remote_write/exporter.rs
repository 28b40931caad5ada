//! The push loop: a timer takes a snapshot (on a blocking thread: it walks
//! the whole store), translates, encodes and compresses it, and sends it;
//! a failed send is retried with backoff while at most one request, the
//! latest, waits. Its self-metrics use the Collector's names for its
//! `prometheusremotewrite` exporter.

use super::client::Client;
use super::config::RemoteWrite;
use super::translate::Translator;
use crate::base::SignalKind;
use crate::export::retry::{Backoff, Failure};
use crate::export::stats::ExporterStats;
use crate::metrics::snapshot::Snapshot;
use bytes::Bytes;
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// The exporter's name in the `exporter` label.
pub const NAME: &str = "prometheusremotewrite";

/// Where snapshots come from (the binary passes the store's).
pub type SnapshotSource = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// Counters of the exporter; `points` (sent, send_failed, queue size) are
/// the Collector's exporter metrics with `exporter="prometheusremotewrite"`.
pub struct Stats {
    pub points: Arc<ExporterStats>,
    /// requests sent, whatever their outcome (the Collector's `sent_batches`)
    pub sent_batches: AtomicU64,
    pub translated_series: AtomicU64,
    /// failed requests that will be retried
    pub failed_retryable: AtomicU64,
    /// failed requests dropped without a retry (4xx other than 429)
    pub failed_permanent: AtomicU64,
}

impl Stats {
    /// The exporter's own self-metrics (beside the `points` counters, which
    /// `ExporterStats` declares with the OTLP forwarder's).
    pub fn declare(self: &Arc<Self>, t: &crate::telemetry::SelfMetrics) {
        for (name, help, f) in [
            (
                "otelcol_exporter_prometheusremotewrite_sent_batches_total",
                "Number of remote write requests sent, whatever their outcome.",
                (|s: &Stats| &s.sent_batches) as fn(&Stats) -> &AtomicU64,
            ),
            (
                "otelcol_exporter_prometheusremotewrite_translated_time_series_total",
                "Number of Prometheus time series translated for remote write.",
                |s: &Stats| &s.translated_series,
            ),
        ] {
            let s = self.clone();
            t.counter(name, help, "", move |o| {
                o.observe(f(&s).load(Ordering::Relaxed), &[])
            });
        }
        let s = self.clone();
        t.counter(
            "geometra_sidecar_remote_write_failed_requests_total",
            "Remote write requests that failed: retryable (5xx, 429, no connection) or permanent (other 4xx, dropped).",
            "",
            move |o| {
                for (reason, n) in [
                    ("retryable", &s.failed_retryable),
                    ("permanent", &s.failed_permanent),
                ] {
                    let v = n.load(Ordering::Relaxed);
                    o.observe(v, &crate::telemetry::kv([("reason", reason)]));
                }
            },
        );
    }
}

/// One compressed request and what it holds.
struct Push {
    body: Bytes,
    points: u64,
}

/// What one configuration of the exporter sends with: built (and checked)
/// before it is put in force, at start-up or on a config reload.
pub struct Setup {
    client: Client,
    translator: Translator,
    interval: Duration,
}

impl Setup {
    /// Fails on what a config reload must refuse (unreadable TLS files, ...).
    pub fn new(cfg: &RemoteWrite) -> Result<Setup, String> {
        Ok(Setup {
            client: Client::new(cfg)?,
            translator: Translator::new(&cfg.labels(this_instance())),
            interval: cfg.interval.0,
        })
    }
}

/// Who this sidecar is, as the `instance` label of what it pushes: the
/// pod's name (`K8S_POD_NAME`, which the chart sets from the downward API),
/// else the host's name (a pod's host name is its name; outside Kubernetes,
/// the machine's). `None` only if neither can be had.
fn this_instance() -> Option<String> {
    if let Some(pod) = std::env::var("K8S_POD_NAME").ok().filter(|p| !p.is_empty()) {
        return Some(pod);
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf, which
    // lives across the call; no file or network I/O (uname(2)).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = buf.split(|&b| b == 0).next().unwrap_or_default();
    (rc == 0 && !name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
}

/// Puts a new [`Setup`] in force in the running exporter (a config reload):
/// the next push uses it; a request waiting for a retry is dropped (the
/// next snapshot supersedes it: cumulative data).
pub type Control = tokio::sync::watch::Sender<Arc<Setup>>;

/// Checks the config, builds the client and starts the push loop.
pub fn start(cfg: &RemoteWrite, source: SnapshotSource) -> Result<(Arc<Stats>, Control), String> {
    let setup = Arc::new(Setup::new(cfg)?);
    let points = Arc::new(ExporterStats::new(NAME, SignalKind::MetricPoints, 1));
    let stats = Arc::new(Stats {
        points,
        sent_batches: AtomicU64::new(0),
        translated_series: AtomicU64::new(0),
        failed_retryable: AtomicU64::new(0),
        failed_permanent: AtomicU64::new(0),
    });
    let (control, rx) = tokio::sync::watch::channel(setup);
    tokio::spawn(run(rx, source, stats.clone()));
    tracing::info!(url = %cfg.url, interval = ?cfg.interval.0, "remote write started");
    Ok((stats, control))
}

/// Snapshot → request → protobuf → snappy, off the async workers.
async fn build(source: &SnapshotSource, setup: &Arc<Setup>, stats: &Stats) -> Option<Push> {
    let (source, setup) = (source.clone(), setup.clone());
    let res = tokio::task::spawn_blocking(move || {
        let req = setup.translator.request(&source());
        let points: usize = req
            .timeseries
            .iter()
            .map(|t| t.samples.len() + t.histograms.len())
            .sum();
        let series = req.timeseries.len() as u64;
        let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec());
        body.map(|b| {
            (
                Push {
                    body: b.into(),
                    points: points as u64,
                },
                series,
            )
        })
    })
    .await;
    match res {
        // nothing to say yet (no series in the store)
        Ok(Ok((_, 0))) => None,
        Ok(Ok((push, series))) => {
            stats.translated_series.fetch_add(series, Ordering::Relaxed);
            Some(push)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "remote write: snappy compression failed");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "remote write: building the snapshot failed");
            None
        }
    }
}

fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(interval);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

async fn run(
    mut setups: tokio::sync::watch::Receiver<Arc<Setup>>,
    source: SnapshotSource,
    stats: Arc<Stats>,
) {
    let mut setup = setups.borrow_and_update().clone();
    let mut ticker = ticker(setup.interval);
    // 500ms doubling to 5s: the bounds of Prometheus' own remote write (30ms
    // to 5s), starting slower as one request carries the whole store
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut pending: Option<Push> = None;
    // set while a failed request waits for its retry
    let mut retry_at: Option<Instant> = None;
    loop {
        let wake = retry_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            changed = setups.changed() => {
                if changed.is_err() {
                    return; // the sidecar is shutting down
                }
                setup = setups.borrow_and_update().clone();
                ticker = self::ticker(setup.interval);
                if let Some(old) = pending.take() {
                    stats.points.send_failed.fetch_add(old.points, Ordering::Relaxed);
                }
                stats.points.queue_size.store(0, Ordering::Relaxed);
                (retry_at, _) = (None, backoff.reset());
                tracing::info!(interval = ?setup.interval, "remote write reconfigured");
                continue;
            }
            _ = ticker.tick() => {
                let Some(push) = build(&source, &setup, &stats).await else { continue };
                if let Some(old) = pending.replace(push) {
                    // cumulative data: the newer snapshot supersedes it
                    stats.points.send_failed.fetch_add(old.points, Ordering::Relaxed);
                }
                // queue_size stays 1 while a retry waits, the new snapshot in
                // its place; a snapshot on its first attempt is on the wire,
                // not queued (a slow receiver is no full queue)
                if retry_at.is_some() {
                    continue;
                }
            }
            _ = tokio::time::sleep_until(wake), if retry_at.is_some() => {}
        }
        retry_at = attempt(&setup.client, &mut pending, &mut backoff, &stats).await;
    }
}

/// Sends the pending request; the instant of its retry when it should be
/// retried, else None (sent or dropped).
async fn attempt(
    client: &Client,
    pending: &mut Option<Push>,
    backoff: &mut Backoff,
    stats: &Stats,
) -> Option<Instant> {
    let push = pending.as_ref()?;
    stats.sent_batches.fetch_add(1, Ordering::Relaxed);
    let (points, res) = (push.points, client.send(push.body.clone()).await);
    let p = &stats.points;
    match res {
        Ok(()) => p.sent.fetch_add(points, Ordering::Relaxed),
        Err(Failure::Retryable { after, msg }) => {
            stats.failed_retryable.fetch_add(1, Ordering::Relaxed);
            p.queue_size.store(1, Ordering::Relaxed);
            let wait = backoff.next(after);
            tracing::warn!(error = %msg, retry_in_ms = wait.as_millis() as u64, "remote write failed; retrying (only the latest snapshot is kept)");
            return Some(Instant::now() + wait);
        }
        Err(Failure::Permanent(msg) | Failure::Rejected(msg)) => {
            stats.failed_permanent.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %msg, points, "remote write refused; request dropped, not retried");
            p.send_failed.fetch_add(points, Ordering::Relaxed)
        }
    };
    *pending = None;
    p.queue_size.store(0, Ordering::Relaxed);
    backoff.reset();
    None
}
