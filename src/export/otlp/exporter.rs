//! The OTLP forwarder's tasks: the [`Forwarder`] the receivers offer
//! requests to, the sender tasks that batch, send and retry, and [`build`],
//! which makes them from the `forward:` config.

use super::client::{self, Client};
use super::queue::{self, Queue};
use super::{disk, redact};
use crate::config::Config;
use crate::export::retry::{Backoff, Failure};
use crate::export::{Forward, OfferFuture, Refusal};
use crate::metrics::{ExporterStats, SignalKind, Store};
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

/// One forwarded signal: its queue and exporter.
struct Pipe {
    name: &'static str,
    queue: Arc<Queue>,
}

/// The forwarder the binary runs.
pub struct Forwarder {
    pipes: [Option<Pipe>; 3],
    /// log records' redaction, swapped whole by a config reload
    redactor: crate::reload::Live<Option<redact::Redactor>>,
    /// Set when draining: the instant by which senders give up.
    drain_tx: watch::Sender<Option<Instant>>,
    /// The queue directory's lock, held while the process lives.
    _lock: Option<std::fs::File>,
}

impl Forwarder {
    /// Waits until queued data is delivered or `deadline` passes; what is
    /// left stays on disk (with a queue directory) or is counted as failed.
    pub async fn drain(&self, deadline: Duration) {
        let until = Instant::now() + deadline.min(Duration::from_secs(24 * 3600));
        let _ = self.drain_tx.send(Some(until));
        for p in self.pipes.iter().flatten() {
            p.queue.notify.notify_waiters();
        }
        loop {
            let left: u64 = self.pipes.iter().flatten().map(|p| p.queue.size()).sum();
            if left == 0 || Instant::now() >= until {
                break;
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
            p.queue.push(body, items).await
        })
    }

    fn refuse_early(&self, signal: SignalKind, items: u64) -> Option<Refusal> {
        self.pipes[signal as usize]
            .as_ref()?
            .queue
            .refuse_early(items)
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
    client: &Client,
    q: &Queue,
    batch: &queue::Batch,
    pol: &Policy,
    mut drain: watch::Receiver<Option<Instant>>,
) -> Outcome {
    let stats = &q.stats;
    let mut todo = vec![(0, batch.entries.len())];
    while let Some((from, to)) = todo.pop() {
        let items = batch.items(from, to);
        let payload = if (from, to) == (0, batch.entries.len()) {
            batch.payload.clone()
        } else {
            batch.part(from, to)
        };
        match send_retrying(name, client, payload, pol, &mut drain).await {
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
/// retries, or the drain deadline passes.
async fn send_retrying(
    name: &'static str,
    client: &Client,
    payload: Bytes,
    pol: &Policy,
    drain: &mut watch::Receiver<Option<Instant>>,
) -> Sent {
    let start = Instant::now();
    let mut backoff = Backoff::new(pol.initial, pol.max_interval);
    loop {
        let deadline = *drain.borrow();
        let res = match deadline {
            Some(d) => match tokio::time::timeout_at(d, client.send(payload.clone())).await {
                Ok(r) => r,
                Err(_) => return Sent::Abandoned,
            },
            None => client.send(payload.clone()).await,
        };
        let (after, msg) = match res {
            Ok(d) => return Sent::Delivered(d),
            Err(Failure::Permanent(msg)) => return Sent::Refused { msg, split: false },
            Err(Failure::Rejected(msg)) => return Sent::Refused { msg, split: true },
            Err(Failure::Retryable { after, msg }) => (after, msg),
        };
        let wait = backoff.next(after);
        if let Some(max) = pol.max_elapsed {
            if start.elapsed() + wait > max {
                return Sent::Exhausted(msg);
            }
        }
        tracing::debug!(exporter = name, error = %msg, wait_ms = wait.as_millis() as u64, "retrying a batch");
        if !wait_or_drain(Instant::now() + wait, drain).await {
            return Sent::Abandoned;
        }
    }
}

/// Sleeps until `wake`; false when the drain deadline comes first.
async fn wait_or_drain(wake: Instant, drain: &mut watch::Receiver<Option<Instant>>) -> bool {
    loop {
        let d = *drain.borrow_and_update();
        match d {
            Some(d) if d <= wake => {
                tokio::time::sleep_until(d).await;
                if Instant::now() >= d {
                    return false;
                }
            }
            _ => {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => return true,
                    r = drain.changed() => if r.is_err() { tokio::time::sleep_until(wake).await; return true; },
                }
            }
        }
        if Instant::now() >= wake {
            return true;
        }
    }
}

/// Takes batches off the queue and sends them, `consumers` at a time.
async fn run_sender(
    name: &'static str,
    client: Arc<Client>,
    q: Arc<Queue>,
    pol: Policy,
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
        let (client, q2, pol2, drain2) = (client.clone(), q.clone(), pol.clone(), drain.clone());
        tokio::spawn(async move {
            match deliver(name, &client, &q2, &batch, &pol2, drain2).await {
                Outcome::Done => q2.done(batch),
                Outcome::Abandoned => q2.abandon(batch),
            }
            drop(permit);
        });
    }
}

/// Builds the forwarder from the config (None when nothing is forwarded).
pub async fn build(cfg: &Config, store: &Arc<Store>) -> Result<Option<Arc<Forwarder>>, String> {
    let f = &cfg.forward;
    if f.logs.is_none() && f.traces.is_none() && f.metrics.is_none() {
        return Ok(None);
    }
    // the queue directory is this process's alone, for as long as it runs
    let lock = match &f.queue.dir {
        Some(dir) => Some(lock_queue_dir(dir)?),
        None => None,
    };
    let consumers = f.queue.consumers.max(1);
    // with a disk queue, memory holds only the batches in flight: at most
    // `consumers` of them, together within queue.max_bytes
    let batch_bytes = match &f.queue.dir {
        Some(_) => f.batch.max_bytes.min(f.queue.max_bytes / consumers),
        None => f.batch.max_bytes,
    };
    let pol = Policy {
        batch_items: f.batch.max_items.max(1) as u64,
        batch_bytes: batch_bytes.max(1) as u64,
        batch_timeout: f.batch.timeout.0,
        initial: f
            .retry
            .initial_interval
            .0
            .clamp(Duration::from_millis(10), Duration::from_secs(3600)),
        // capped so that no arithmetic on them can overflow
        max_interval: f
            .retry
            .max_interval
            .0
            .max(f.retry.initial_interval.0)
            .min(Duration::from_secs(3600)),
        max_elapsed: (!f.retry.max_elapsed.0.is_zero()).then_some(f.retry.max_elapsed.0),
    };
    let redactor = redact::Redactor::new(&cfg.redaction)?;
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
        let client = Arc::new(Client::new(ep, sig)?);
        // queue capacity in the queue's unit: items, or bytes on disk
        let capacity = match &f.queue.dir {
            Some(_) => f.queue.max_disk_bytes,
            None => f.queue.max_items as u64,
        };
        let stats = Arc::new(ExporterStats::new(name, sig, capacity));
        let disk = match &f.queue.dir {
            Some(dir) => {
                let d = dir.join(sub);
                let (max, fsync, at) = (f.queue.max_disk_bytes, f.queue.fsync, d.clone());
                // the start-up scan reads every segment: off the async workers
                let (log, scan) =
                    tokio::task::spawn_blocking(move || disk::DiskLog::open(&at, max, fsync))
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
                if scan.records > 0 {
                    tracing::info!(
                        exporter = name,
                        records = scan.records,
                        items = scan.items,
                        "on-disk queue: resuming delivery"
                    );
                }
                Some(log)
            }
            None => None,
        };
        store.add_exporter(stats.clone());
        let q = Arc::new(Queue::new(
            f.queue.max_items,
            f.queue.max_bytes,
            disk,
            stats,
        ));
        tokio::spawn(run_sender(
            name,
            client,
            q.clone(),
            pol.clone(),
            consumers,
            drain_tx.subscribe(),
        ));
        pipes[sig as usize] = Some(Pipe { name, queue: q });
    }
    Ok(Some(Arc::new(Forwarder {
        pipes,
        redactor: crate::reload::Live::new(redactor),
        drain_tx,
        _lock: lock,
    })))
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
}
