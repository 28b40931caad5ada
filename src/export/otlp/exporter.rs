//! The OTLP forwarder's tasks: the [`Forwarder`] the receivers offer
//! requests to, the sender tasks that batch, send and retry, and [`build`],
//! which makes them from the `forward:` config. A config reload hands each
//! sender a new [`Sending`] (client and policy) through a `watch` channel.

use super::client::{self, Client};
use super::config::{Endpoint, Forward as ForwardCfg, Redaction};
use super::piece::{self, Rec};
use super::queue::{self, Queue};
use super::{disk, redact};
use crate::base::{Live, SignalKind};
use crate::export::retry::{Backoff, Failure};
use crate::export::stats::ExporterStats;
use crate::export::{Forward, OfferFuture, Refusal, RoomFuture};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// Batching and retry settings a sender task works with.
#[derive(Clone)]
struct Policy {
    batch_items: u64,
    batch_bytes: u64,
    batch_timeout: Duration,
    initial: Duration,
    max_interval: Duration,
    max_elapsed: Option<Duration>,
}

impl Policy {
    fn new(f: &ForwardCfg) -> Policy {
        let consumers = f.queue.consumers.max(1);
        // with a disk queue, memory holds only the batches in flight: at most
        // `consumers` of them, together within queue.max_bytes
        let batch_bytes = match &f.queue.dir {
            Some(_) => f.batch.max_bytes.min(f.queue.max_bytes / consumers),
            None => f.batch.max_bytes,
        };
        let r = &f.retry;
        Policy {
            batch_items: f.batch.max_items.max(1) as u64,
            batch_bytes: batch_bytes.max(1) as u64,
            batch_timeout: f.batch.timeout.0,
            initial: r
                .initial_interval
                .0
                .clamp(Duration::from_millis(10), Duration::from_secs(3600)),
            // capped so that no arithmetic on them can overflow
            max_interval: r
                .max_interval
                .0
                .max(r.initial_interval.0)
                .min(Duration::from_secs(3600)),
            max_elapsed: (!r.max_elapsed.0.is_zero()).then_some(r.max_elapsed.0),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.initial, self.max_interval)
    }
}

/// What one forwarded signal sends with under one configuration: its
/// client and its batching and retry policy. Built (and checked) before it
/// is put in force, at start-up or on a config reload.
pub struct Sending {
    client: Client,
    pol: Policy,
}

impl Sending {
    /// Fails on what a reload must refuse (an unreadable CA, key or token
    /// file, a bad header...). Reads files: not on an async worker, except
    /// at start-up. Must run within the runtime (a gRPC channel spawns its
    /// worker).
    fn new(ep: &Endpoint, sig: SignalKind, f: &ForwardCfg) -> Result<Self, String> {
        Ok(Sending {
            client: Client::new(ep, sig)?,
            pol: Policy::new(f),
        })
    }
}

/// One forwarded signal: its queue, and the settings its sender task uses.
struct Pipe {
    name: &'static str,
    queue: Arc<Queue>,
    sending: watch::Sender<Arc<Sending>>,
}

/// A checked new `forward:` config for the running forwarder, made by
/// [`Forwarder::prepare`] and put in force by [`Forwarder::apply`].
pub struct Reconfig {
    sending: [Option<Arc<Sending>>; 3],
    max_items: usize,
    max_bytes: usize,
    max_wait: Duration,
}

/// The forwarder the binary runs.
pub struct Forwarder {
    pipes: [Option<Pipe>; 3],
    /// log records' redaction, swapped whole by a config reload
    redactor: Live<Option<redact::Redactor>>,
    /// Set when draining: the instant by which senders give up.
    drain_tx: watch::Sender<Option<Instant>>,
    /// the runtime, entered by a reload (on its own thread) to build clients
    rt: tokio::runtime::Handle,
    /// The queue directory's lock, held while the process lives.
    _lock: Option<std::fs::File>,
}

impl Forwarder {
    /// Each forwarded signal's counters (for `/metrics`).
    pub fn stats(&self) -> Vec<Arc<ExporterStats>> {
        self.pipes
            .iter()
            .flatten()
            .map(|p| p.queue.stats.clone())
            .collect()
    }

    /// Waits until queued data is delivered or `deadline` passes; what is
    /// left stays on disk (with a queue directory) or is counted as failed.
    pub async fn drain(&self, deadline: Duration) {
        let until = Instant::now() + deadline.min(Duration::from_secs(24 * 3600));
        let _ = self.drain_tx.send(Some(until));
        for p in self.pipes.iter().flatten() {
            p.queue.notify.notify_waiters();
        }
        let mut said = Instant::now();
        loop {
            let left: u64 = self.pipes.iter().flatten().map(|p| p.queue.size()).sum();
            if left == 0 || Instant::now() >= until {
                break;
            }
            if said.elapsed() >= Duration::from_secs(1) {
                said = Instant::now();
                tracing::info!(items = left, "draining the forward queues");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // let in-flight senders notice the deadline and account for their batch
        tokio::time::sleep(Duration::from_millis(50)).await;
        for p in self.pipes.iter().flatten() {
            let left = p.queue.size();
            if left == 0 {
                tracing::info!(exporter = p.name, "forward queue drained");
            } else if let Some(d) = &p.queue.disk {
                tracing::warn!(
                    exporter = p.name,
                    items = left,
                    disk_bytes = d.used(),
                    "drain timeout: undelivered items stay in the on-disk queue for the next start"
                );
            } else {
                p.queue.stats.send_failed.fetch_add(left, Ordering::Relaxed);
                tracing::error!(
                    exporter = p.name,
                    items = left,
                    "drain timeout: undelivered items dropped (no queue directory)"
                );
            }
            if let Some(d) = &p.queue.disk {
                d.close();
            }
        }
    }
}

impl Forwarder {
    /// Builds what a changed `forward:` config sends with, changing
    /// nothing yet: every client (CA, key and token files read) is made
    /// here, so a bad config is refused with the old one still in force.
    /// Which keys may change is the reloader's business; a signal must
    /// stay forwarded or not.
    pub fn prepare(&self, f: &ForwardCfg) -> Result<Reconfig, String> {
        let _rt = self.rt.enter();
        let mut sending: [Option<Arc<Sending>>; 3] = [None, None, None];
        for (sig, ep) in endpoints(f) {
            match (ep, &self.pipes[sig as usize]) {
                (Some(ep), Some(_)) => {
                    sending[sig as usize] = Some(Arc::new(Sending::new(ep, sig, f)?));
                }
                (None, None) => {}
                _ => {
                    return Err(
                        "a forwarded signal cannot be added or removed without a restart".into(),
                    )
                }
            }
        }
        Ok(Reconfig {
            sending,
            max_items: f.queue.max_items,
            max_bytes: f.queue.max_bytes,
            max_wait: f.queue.max_wait.0,
        })
    }

    /// Puts a prepared config in force. A send under way finishes with the
    /// client it started with (its outcome counted once); every later send,
    /// retries and what is queued (in memory or on disk) included, goes to
    /// the endpoint in force then. A batch waiting for a retry is retried
    /// at once with the new settings.
    pub fn apply(&self, r: Reconfig) {
        for (p, s) in self.pipes.iter().zip(r.sending) {
            if let (Some(p), Some(s)) = (p, s) {
                p.queue.set_limits(r.max_items, r.max_bytes);
                p.queue.set_max_wait(r.max_wait);
                p.sending.send_replace(s);
                tracing::info!(exporter = p.name, "forward settings reloaded");
            }
        }
    }
}

/// The configured endpoint of each signal.
fn endpoints(f: &ForwardCfg) -> [(SignalKind, Option<&Endpoint>); 3] {
    [
        (SignalKind::LogRecords, f.logs.as_ref()),
        (SignalKind::Spans, f.traces.as_ref()),
        (SignalKind::MetricPoints, f.metrics.as_ref()),
    ]
}

impl Forward for Forwarder {
    fn forwards(&self, signal: SignalKind) -> bool {
        self.pipes[signal as usize].is_some()
    }

    fn offer(&self, signal: SignalKind, body: Bytes, items: u64) -> OfferFuture<'_> {
        Box::pin(async move {
            let Some(p) = &self.pipes[signal as usize] else {
                return Ok(());
            };
            let redactor = (signal == SignalKind::LogRecords).then(|| self.redactor.load());
            let body = match redactor.as_deref() {
                Some(Some(r)) => match r.apply_logs(&body) {
                    Ok(Some(b)) => b,
                    Ok(None) => body,
                    Err(e) => {
                        // never forward what could not be redacted
                        p.queue
                            .stats
                            .send_failed
                            .fetch_add(items, Ordering::Relaxed);
                        tracing::error!(error = %e, items, "redaction failed; records not forwarded");
                        return Ok(());
                    }
                },
                _ => body,
            };
            // compressed once, here, when the endpoint takes gzip: the
            // queue then holds, writes and reads back the smaller bytes
            let rec = if p.sending.borrow().client.gzip() {
                piece::compress(body)
            } else {
                Rec::raw(body)
            };
            p.queue.push(rec, items).await
        })
    }

    fn refuse_early(&self, signal: SignalKind, items: u64) -> Option<Refusal> {
        self.pipes[signal as usize]
            .as_ref()?
            .queue
            .refuse_early(items)
    }

    fn refuses_early(&self, signal: SignalKind) -> bool {
        self.pipes[signal as usize]
            .as_ref()
            .is_some_and(|p| p.queue.disk.is_none())
    }

    fn wait_for_room(&self, signal: SignalKind, len: u64) -> RoomFuture<'_> {
        Box::pin(async move {
            let q = &self.pipes[signal as usize].as_ref()?.queue;
            let aside = q.wait_for_room(len).await?;
            Some(Box::new(aside) as Box<dyn Send + Sync>)
        })
    }

    fn set_redaction(&self, redactor: Option<redact::Redactor>) {
        self.redactor.store(redactor);
    }
}

enum Outcome {
    Done,
    /// shutting down: the batch stays on disk
    Abandoned,
}

/// How sending one payload ended.
enum Sent {
    Delivered(client::Delivered),
    /// refused permanently; `split` when splitting can isolate the cause
    Refused {
        msg: String,
        split: bool,
    },
    /// retries ran out (forward.retry.max_elapsed)
    Exhausted(String),
    /// the drain deadline passed
    Abandoned,
}

/// Sends one batch. A batch of several records refused as invalid data is
/// split in halves until each refused record is alone, so one sender's bad
/// request costs only that request: the rest is delivered.
async fn deliver(
    name: &'static str,
    mut setups: watch::Receiver<Arc<Sending>>,
    q: &Queue,
    batch: &queue::Batch,
    mut drain: watch::Receiver<Option<Instant>>,
) -> Outcome {
    let stats = &q.stats;
    let mut todo = vec![(0, batch.entries.len())];
    while let Some((from, to)) = todo.pop() {
        let items = batch.items(from, to);
        let payload = batch.part(from, to);
        match send_retrying(name, &mut setups, payload, &mut drain).await {
            Sent::Delivered(d) => {
                let rejected = d.rejected.min(items);
                stats.sent.fetch_add(items - rejected, Ordering::Relaxed);
                if rejected > 0 || !d.message.is_empty() {
                    stats.send_failed.fetch_add(rejected, Ordering::Relaxed);
                    tracing::warn!(exporter = name, rejected, message = %d.message, "downstream partially accepted a batch");
                }
            }
            Sent::Refused { msg, split: true } if to - from > 1 => {
                let mid = from + (to - from) / 2;
                tracing::info!(exporter = name, requests = to - from, error = %msg, "downstream refused a batch permanently; splitting it to isolate the refused request");
                todo.push((mid, to));
                todo.push((from, mid));
            }
            Sent::Refused { msg, .. } => {
                stats.send_failed.fetch_add(items, Ordering::Relaxed);
                tracing::error!(exporter = name, items, requests = to - from, error = %msg, "downstream refused a request permanently; dropped");
            }
            Sent::Exhausted(msg) => {
                stats.send_failed.fetch_add(items, Ordering::Relaxed);
                tracing::error!(exporter = name, items, error = %msg, "retries exhausted (forward.retry.max_elapsed); batch dropped");
            }
            Sent::Abandoned => return Outcome::Abandoned,
        }
    }
    Outcome::Done
}

/// Sends one payload until it is delivered, refused permanently, out of
/// retries, or the drain deadline passes. Each attempt uses the settings in
/// force when it starts.
async fn send_retrying(
    name: &'static str,
    setups: &mut watch::Receiver<Arc<Sending>>,
    payload: &[Rec],
    drain: &mut watch::Receiver<Option<Instant>>,
) -> Sent {
    let start = Instant::now();
    let mut s = setups.borrow_and_update().clone();
    let mut backoff = s.pol.backoff();
    loop {
        let Some(res) = attempt(&s.client, payload, drain).await else {
            return Sent::Abandoned;
        };
        let (after, msg) = match res {
            Ok(d) => return Sent::Delivered(d),
            Err(Failure::Permanent(msg)) => return Sent::Refused { msg, split: false },
            Err(Failure::Rejected(msg)) => return Sent::Refused { msg, split: true },
            Err(Failure::Retryable { after, msg }) => (after, msg),
        };
        let wait = backoff.next(after);
        if let Some(max) = s.pol.max_elapsed {
            if start.elapsed() + wait > max {
                return Sent::Exhausted(msg);
            }
        }
        tracing::debug!(exporter = name, error = %msg, wait_ms = wait.as_millis() as u64, "retrying a batch");
        match wait_for(Instant::now() + wait, drain, setups).await {
            Wake::Due => {}
            Wake::Drained => return Sent::Abandoned,
            Wake::Reconfigured => {
                tracing::debug!(
                    exporter = name,
                    "forward settings reloaded: retrying the batch now"
                )
            }
        }
        let now = setups.borrow_and_update().clone();
        if !Arc::ptr_eq(&now, &s) {
            (s, backoff) = (now.clone(), now.pol.backoff());
        }
    }
}

/// One send, cut short by the drain deadline (None).
async fn attempt(
    client: &Client,
    payload: &[Rec],
    drain: &watch::Receiver<Option<Instant>>,
) -> Option<Result<client::Delivered, Failure>> {
    let deadline = *drain.borrow();
    match deadline {
        Some(d) => tokio::time::timeout_at(d, client.send(payload)).await.ok(),
        None => Some(client.send(payload).await),
    }
}

/// Why [`wait_for`] returned.
enum Wake {
    Due,
    /// the drain deadline came first
    Drained,
    /// new settings were put in force meanwhile
    Reconfigured,
}

/// The longest a retry waits once the drain has begun: a backoff that has
/// grown to `max_interval` (30 s by default) would otherwise outlast the
/// drain, and a downstream that comes back meanwhile would not get the
/// backlog before the sidecar exits.
const DRAIN_RETRY_WAIT: Duration = Duration::from_secs(1);

/// Sleeps until `wake`, unless the drain deadline comes first or a reload
/// puts new settings in force. Once the drain has begun, `wake` is at most
/// [`DRAIN_RETRY_WAIT`] away.
async fn wait_for(
    mut wake: Instant,
    drain: &mut watch::Receiver<Option<Instant>>,
    setups: &mut watch::Receiver<Arc<Sending>>,
) -> Wake {
    let (mut drain_open, mut setups_open) = (true, true);
    loop {
        let now = Instant::now();
        let deadline = *drain.borrow_and_update();
        if deadline.is_some() {
            wake = wake.min(now + DRAIN_RETRY_WAIT);
        }
        if deadline.is_some_and(|d| d <= wake && now >= d) {
            return Wake::Drained;
        }
        if now >= wake {
            return Wake::Due;
        }
        let until = deadline.map_or(wake, |d| d.min(wake));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            r = drain.changed(), if drain_open => drain_open = r.is_ok(),
            r = setups.changed(), if setups_open => match r {
                Ok(()) => return Wake::Reconfigured,
                Err(_) => setups_open = false,
            },
        }
    }
}

/// Takes batches off the queue and sends them, `consumers` at a time, with
/// the batching policy in force when a batch starts.
async fn run_sender(
    name: &'static str,
    setups: watch::Receiver<Arc<Sending>>,
    q: Arc<Queue>,
    consumers: usize,
    drain: watch::Receiver<Option<Instant>>,
) {
    let sem = Arc::new(Semaphore::new(consumers.max(1)));
    loop {
        // wait for a first record
        loop {
            let notified = q.notify.notified();
            if q.pending().0 > 0 || q.pending().1 > 0 {
                break;
            }
            notified.await;
        }
        // then for a full batch, the batch timeout, or a drain
        let pol = setups.borrow().pol.clone();
        let until = Instant::now() + pol.batch_timeout;
        loop {
            let notified = q.notify.notified();
            let (items, bytes) = q.pending();
            if items >= pol.batch_items || bytes >= pol.batch_bytes || drain.borrow().is_some() {
                break;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        let Ok(permit) = sem.clone().acquire_owned().await else {
            return;
        };
        let batch = q.take(pol.batch_items, pol.batch_bytes).await;
        if batch.entries.is_empty() {
            // nothing readable yet (a disk write not yet visible): do not spin
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let (setups2, q2, drain2) = (setups.clone(), q.clone(), drain.clone());
        tokio::spawn(async move {
            match deliver(name, setups2, &q2, &batch, drain2).await {
                Outcome::Done => q2.done(batch),
                Outcome::Abandoned => q2.abandon(batch),
            }
            drop(permit);
        });
    }
}

/// Builds the forwarder from its sections, `forward:` and `redaction:`
/// (None when nothing is forwarded).
pub async fn build(
    f: &ForwardCfg,
    redaction: &Redaction,
) -> Result<Option<Arc<Forwarder>>, String> {
    if f.logs.is_none() && f.traces.is_none() && f.metrics.is_none() {
        return Ok(None);
    }
    // the queue directory is this process's alone, for as long as it runs
    let lock = match &f.queue.dir {
        Some(dir) => Some(lock_queue_dir(dir)?),
        None => None,
    };
    let redactor = redact::Redactor::new(redaction)?;
    let (drain_tx, _) = watch::channel(None);
    let mut pipes: [Option<Pipe>; 3] = [None, None, None];
    for (sig, ep, name, sub) in [
        (SignalKind::LogRecords, &f.logs, "otlp/logs", "logs"),
        (SignalKind::Spans, &f.traces, "otlp/traces", "traces"),
        (
            SignalKind::MetricPoints,
            &f.metrics,
            "otlp/metrics",
            "metrics",
        ),
    ] {
        let Some(ep) = ep else { continue };
        pipes[sig as usize] = Some(pipe(f, ep, (sig, name, sub), &drain_tx).await?);
    }
    Ok(Some(Arc::new(Forwarder {
        pipes,
        redactor: Live::new(redactor),
        drain_tx,
        rt: tokio::runtime::Handle::current(),
        _lock: lock,
    })))
}

/// One signal's queue (on disk under `<dir>/<sub>` with a queue directory)
/// and its sender tasks.
async fn pipe(
    f: &ForwardCfg,
    ep: &Endpoint,
    (sig, name, sub): (SignalKind, &'static str, &str),
    drain_tx: &watch::Sender<Option<Instant>>,
) -> Result<Pipe, String> {
    let sending = Arc::new(Sending::new(ep, sig, f)?);
    // queue capacity in the queue's unit: items, or bytes on disk
    let capacity = match &f.queue.dir {
        Some(_) => f.queue.max_disk_bytes,
        None => f.queue.max_items as u64,
    };
    let stats = Arc::new(ExporterStats::new(name, sig, capacity));
    let disk = match &f.queue.dir {
        Some(dir) => Some(open_disk(f, &dir.join(sub), name, &stats).await?),
        None => None,
    };
    let q = Arc::new(Queue::new(
        f.queue.max_items,
        f.queue.max_bytes,
        disk,
        stats,
    ));
    q.set_max_wait(f.queue.max_wait.0);
    let (sending, setups) = watch::channel(sending);
    let consumers = f.queue.consumers.max(1);
    tokio::spawn(run_sender(
        name,
        setups,
        q.clone(),
        consumers,
        drain_tx.subscribe(),
    ));
    Ok(Pipe {
        name,
        queue: q,
        sending,
    })
}

/// Opens a signal's on-disk queue at `d`; what its start-up scan found
/// corrupt is counted as failed and logged.
async fn open_disk(
    f: &ForwardCfg,
    d: &std::path::Path,
    name: &str,
    stats: &ExporterStats,
) -> Result<disk::DiskLog, String> {
    let fsync = f.queue.fsync.then_some(f.queue.fsync_delay.0);
    let (max, at) = (f.queue.max_disk_bytes, d.to_path_buf());
    // the start-up scan reads every segment: off the async workers
    let (log, scan) = tokio::task::spawn_blocking(move || disk::DiskLog::open(&at, max, fsync))
        .await
        .map_err(|e| format!("opening the queue directory: {e}"))??;
    if scan.corrupt_regions > 0 {
        stats
            .send_failed
            .fetch_add(scan.corrupt_items, Ordering::Relaxed);
        tracing::warn!(
            exporter = name,
            dir = %d.display(),
            corrupt_regions = scan.corrupt_regions,
            corrupt_bytes = scan.corrupt_bytes,
            corrupt_items = scan.corrupt_items,
            "on-disk queue: skipped corrupt or torn records (counted as send_failed)"
        );
    }
    if scan.records > 0 || scan.delivered > 0 {
        tracing::info!(
            exporter = name,
            records = scan.records,
            items = scan.items,
            delivered_before = scan.delivered,
            "on-disk queue: resuming delivery (records the ledger says were delivered are not sent again)"
        );
    }
    Ok(log)
}

/// Takes an exclusive advisory lock (flock) on `<dir>/lock`, held until the
/// process exits, and writes this process's id into it. A second sidecar
/// on the same directory would deliver and delete the first one's records.
fn lock_queue_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create queue directory {}: {e}", dir.display()))?;
    let path = dir.join("lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| {
            format!(
                "queue directory {} is not writable (cannot open {}: {e})",
                dir.display(),
                path.display()
            )
        })?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = (&f).take(64).read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(format!(
                "queue directory {} is in use by another sidecar ({}); give each sidecar its own --queue-dir",
                dir.display(),
                if holder.is_empty() { "unknown pid" } else { holder }
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", path.display()))
        }
    }
    let res = f
        .set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| writeln!(f, "pid {}", std::process::id()));
    res.map_err(|e| {
        format!(
            "queue directory {} is not writable (cannot write {}: {e})",
            dir.display(),
            path.display()
        )
    })?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::{build, ForwardCfg, Redaction};
    use crate::base::SignalKind;
    use crate::export::Forward;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
    use prost::Message;

    #[test]
    fn concatenated_requests_are_one_request() {
        let one = |n: usize| ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs::default(); n],
        };
        let mut buf = one(2).encode_to_vec();
        buf.extend_from_slice(&one(3).encode_to_vec());
        let got = ExportLogsServiceRequest::decode(buf.as_slice()).expect("decodes");
        assert_eq!(got.resource_logs.len(), 5);
    }

    /// Only a memory queue can refuse a request before its walk, so only
    /// then does the receiver count a request's items early.
    #[tokio::test]
    async fn only_a_memory_queue_refuses_early() {
        let dir = tempfile::tempdir().expect("tempdir");
        for disk in [false, true] {
            let mut f: ForwardCfg =
                serde_yaml_ng::from_str("logs: { endpoint: \"http://127.0.0.1:9\" }")
                    .expect("yaml");
            f.queue.dir = disk.then(|| dir.path().to_path_buf());
            let fw = build(&f, &Redaction::default())
                .await
                .expect("builds")
                .expect("forwards logs");
            assert_eq!(
                fw.refuses_early(SignalKind::LogRecords),
                !disk,
                "disk {disk}"
            );
            assert!(
                !fw.refuses_early(SignalKind::Spans),
                "traces are not forwarded"
            );
            fw.drain(std::time::Duration::ZERO).await;
        }
    }
}
