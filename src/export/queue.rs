//! The bounded queue in front of one exporter: admission (items, bytes and,
//! with a directory, disk bytes), batching, and acknowledgement of delivered
//! records (which deletes their on-disk segments).
//!
//! A record is one `Export*ServiceRequest` body exactly as received (or as
//! redacted). Records are never split or decoded here; a batch is several
//! records whose bodies are concatenated, which protobuf reads as one request
//! (the repeated field 1 of the concatenation holds all the resources).

use super::disk::{DiskLog, Loc, Recovered};
use super::Refusal;
use crate::metrics::ExporterStats;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a refused sender is told to wait.
pub const PUSH_BACK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Entry {
    /// The payload, when held in memory (with a disk queue it may only be on disk).
    pub data: Option<Bytes>,
    pub len: u32,
    pub items: u64,
    pub loc: Option<Loc>,
}

#[derive(Default)]
struct Inner {
    pending: VecDeque<Entry>,
    pending_items: u64,
    pending_bytes: u64,
    /// items and bytes queued or being sent
    items: u64,
    bytes: u64,
    /// payload bytes held in memory
    mem: u64,
}

pub struct Queue {
    inner: Mutex<Inner>,
    pub notify: Notify,
    max_items: u64,
    max_bytes: u64,
    pub disk: Option<DiskLog>,
    pub stats: Arc<ExporterStats>,
}

impl Queue {
    pub fn new(
        max_items: usize,
        max_bytes: usize,
        disk: Option<(DiskLog, Vec<Recovered>)>,
        stats: Arc<ExporterStats>,
    ) -> Queue {
        let mut inner = Inner::default();
        let disk = disk.map(|(log, recovered)| {
            for r in recovered {
                inner.pending_items += r.items;
                inner.pending_bytes += r.loc.len as u64;
                inner.items += r.items;
                inner.bytes += r.loc.len as u64;
                inner.pending.push_back(Entry {
                    data: None,
                    len: r.loc.len,
                    items: r.items,
                    loc: Some(r.loc),
                });
            }
            log
        });
        stats.queue_size.store(inner.items, Ordering::Relaxed);
        Queue {
            inner: Mutex::new(inner),
            notify: Notify::new(),
            max_items: max_items as u64,
            max_bytes: max_bytes as u64,
            disk,
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse(&self, items: u64, reason: String) -> Refusal {
        self.stats
            .enqueue_failed
            .fetch_add(items, Ordering::Relaxed);
        Refusal {
            retry_after: PUSH_BACK,
            reason,
        }
    }

    /// Takes a record, or refuses it when the queue is full. With a disk
    /// queue, returns only once the record is written.
    pub async fn push(&self, body: Bytes, items: u64) -> Result<(), Refusal> {
        let len = body.len() as u64;
        let keep_in_memory;
        {
            let mut q = self.lock();
            let empty = q.items == 0;
            if !empty && q.items + items > self.max_items {
                drop(q);
                return Err(self.refuse(
                    items,
                    format!(
                        "forward queue full ({} items, forward.queue.max_items); retry later",
                        self.max_items
                    ),
                ));
            }
            keep_in_memory = q.mem + len <= self.max_bytes || empty;
            if self.disk.is_none() && !keep_in_memory {
                drop(q);
                return Err(self.refuse(
                    items,
                    format!(
                        "forward queue full ({} bytes, forward.queue.max_bytes); retry later",
                        self.max_bytes
                    ),
                ));
            }
            // reserve now so concurrent pushes see the space as taken
            q.items += items;
            q.bytes += len;
            if keep_in_memory {
                q.mem += len;
            }
        }
        let loc = match &self.disk {
            Some(d) => match d.append(body.clone(), items).await {
                Ok(loc) => Some(loc),
                Err(reason) => {
                    let mut q = self.lock();
                    q.items -= items;
                    q.bytes -= len;
                    if keep_in_memory {
                        q.mem -= len;
                    }
                    drop(q);
                    return Err(self.refuse(items, reason));
                }
            },
            None => None,
        };
        {
            let mut q = self.lock();
            q.pending_items += items;
            q.pending_bytes += len;
            q.pending.push_back(Entry {
                data: keep_in_memory.then_some(body),
                len: len as u32,
                items,
                loc,
            });
            self.stats.queue_size.store(q.items, Ordering::Relaxed);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// (items, bytes) waiting to be sent.
    pub fn pending(&self) -> (u64, u64) {
        let q = self.lock();
        (q.pending_items, q.pending_bytes)
    }

    /// Items queued or being sent.
    pub fn size(&self) -> u64 {
        self.lock().items
    }

    /// Takes up to `max_items` items / `max_bytes` bytes of records (always at
    /// least one record when any waits).
    pub fn take(&self, max_items: u64, max_bytes: u64) -> Vec<Entry> {
        let mut q = self.lock();
        let mut out = Vec::new();
        let (mut items, mut bytes) = (0u64, 0u64);
        while let Some(e) = q.pending.front() {
            if !out.is_empty() && (items + e.items > max_items || bytes + e.len as u64 > max_bytes)
            {
                break;
            }
            items += e.items;
            bytes += e.len as u64;
            if let Some(e) = q.pending.pop_front() {
                out.push(e);
            }
        }
        q.pending_items -= items;
        q.pending_bytes -= bytes;
        out
    }

    /// The batch's payload: the records' bodies concatenated.
    pub fn payload(&self, batch: &[Entry]) -> std::io::Result<Bytes> {
        if let [one] = batch {
            if let Some(d) = &one.data {
                return Ok(d.clone());
            }
        }
        let total: usize = batch.iter().map(|e| e.len as usize).sum();
        let mut buf = BytesMut::with_capacity(total);
        for e in batch {
            match (&e.data, e.loc, &self.disk) {
                (Some(d), _, _) => buf.extend_from_slice(d),
                (None, Some(loc), Some(disk)) => buf.extend_from_slice(&disk.read(loc)?),
                _ => return Err(std::io::Error::other("queued record without payload")),
            }
        }
        Ok(buf.freeze())
    }

    /// The batch is delivered, or given up on: frees its space and lets its
    /// disk segments go.
    pub fn done(&self, batch: Vec<Entry>) {
        let mut q = self.lock();
        for e in &batch {
            q.items -= e.items;
            q.bytes -= e.len as u64;
            if e.data.is_some() {
                q.mem -= e.len as u64;
            }
        }
        self.stats.queue_size.store(q.items, Ordering::Relaxed);
        drop(q);
        if let Some(d) = &self.disk {
            for e in &batch {
                if let Some(loc) = e.loc {
                    d.ack(loc);
                }
            }
        }
    }

    /// The batch was not delivered (shutdown): it stays counted, so the
    /// drain reports it as left on disk (or lost, without a directory), and
    /// its segments are kept for the next start.
    pub fn abandon(&self, batch: Vec<Entry>) {
        drop(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SignalKind;

    fn stats() -> Arc<ExporterStats> {
        Arc::new(ExporterStats::new("otlp/logs", SignalKind::LogRecords, 10))
    }

    #[test]
    fn full_queue_refuses_and_counts() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(async {
            let s = stats();
            let q = Queue::new(10, 1 << 20, None, s.clone());
            q.push(Bytes::from_static(b"a"), 6).await.expect("fits");
            let r = q.push(Bytes::from_static(b"b"), 6).await;
            assert!(r.is_err());
            assert_eq!(s.enqueue_failed.load(Ordering::Relaxed), 6);
            assert_eq!(s.queue_size.load(Ordering::Relaxed), 6);
            let b = q.take(100, 100);
            assert_eq!(b.len(), 1);
            // in flight still counts against the cap
            assert!(q.push(Bytes::from_static(b"c"), 6).await.is_err());
            q.done(b);
            assert_eq!(q.size(), 0);
            q.push(Bytes::from_static(b"c"), 6)
                .await
                .expect("space again");
        });
    }

    #[test]
    fn batches_concatenate_whole_records() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(async {
            let q = Queue::new(100, 1 << 20, None, stats());
            for p in [&b"ab"[..], b"cd", b"ef"] {
                q.push(Bytes::copy_from_slice(p), 2).await.expect("push");
            }
            let b = q.take(4, 1 << 20);
            assert_eq!(b.len(), 2);
            assert_eq!(q.payload(&b).expect("payload").as_ref(), b"abcd");
            let rest = q.take(4, 1 << 20);
            assert_eq!(q.payload(&rest).expect("payload").as_ref(), b"ef");
        });
    }
}
