//! The bounded queue in front of one exporter: admission, batching, and
//! acknowledgement of delivered records.
//!
//! Without a directory the queue is in memory, bounded by `queue.max_items`
//! and `queue.max_bytes`. With one the disk is the queue ([`DiskLog`]): a
//! record is admitted while `queue.max_disk_bytes` allows, memory holds only
//! the batches in flight, read back from disk on a blocking thread, and a
//! delivered record lets its segment go.
//!
//! A record is one `Export*ServiceRequest` body as received (or as
//! redacted), kept compressed (a [`piece`](super::piece)) when it is large
//! and the endpoint takes gzip. Records are never split or decoded here; a
//! batch is several records whose bodies are sent concatenated, which
//! protobuf reads as one request (the repeated field 1 of the concatenation
//! holds all the resources). `queue.max_bytes` counts the records as kept
//! (compressed or not); batch sizes count uncompressed bytes, which is what
//! a receiver's size limit applies to.

use super::disk::{DiskLog, Loc};
use super::piece::Rec;
use crate::export::stats::ExporterStats;
use crate::export::Refusal;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a refused sender is told to wait.
pub const PUSH_BACK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Entry {
    /// bytes as kept (compressed or not)
    pub len: u32,
    /// bytes once decompressed
    pub raw: u64,
    pub items: u64,
    /// where the record is on disk (disk queue only)
    pub loc: Option<Loc>,
    /// the record (memory queue only, until taken)
    data: Option<Rec>,
}

/// Records taken to be sent together.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    /// each entry's record
    pub recs: Vec<Rec>,
    /// disk queue: the batch's place among those read, for the ledger
    pub read_id: Option<u64>,
}

impl Batch {
    /// Items of the records `from..to`.
    pub fn items(&self, from: usize, to: usize) -> u64 {
        self.entries[from..to].iter().map(|e| e.items).sum()
    }

    /// The records `from..to`, to be sent as one request.
    pub fn part(&self, from: usize, to: usize) -> &[Rec] {
        &self.recs[from..to]
    }
}

#[derive(Default)]
struct Inner {
    /// memory queue only: records waiting
    pending: VecDeque<Entry>,
    pending_items: u64,
    pending_bytes: u64,
    /// memory queue only: items and bytes queued or being sent
    items: u64,
    bytes: u64,
    /// memory queue only: room set aside for requests being received
    /// ([`Queue::wait_for_room`])
    aside_items: u64,
    aside_bytes: u64,
}

pub struct Queue {
    inner: Mutex<Inner>,
    pub notify: Notify,
    /// memory queue limits; a config reload may change them
    max_items: AtomicU64,
    max_bytes: AtomicU64,
    /// memory queue push-back by latency ([`Queue::wait_for_room`]):
    /// `forward.queue.max_wait` in microseconds (0: refuse at once), the
    /// items of the last request counted or queued, and the wake-up when
    /// room frees
    max_wait_us: AtomicU64,
    last_items: AtomicU64,
    room: Notify,
    pub disk: Option<DiskLog>,
    pub stats: Arc<ExporterStats>,
}

impl Queue {
    pub fn new(
        max_items: usize,
        max_bytes: usize,
        disk: Option<DiskLog>,
        stats: Arc<ExporterStats>,
    ) -> Queue {
        let q = Queue {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            max_items: AtomicU64::new(max_items as u64),
            max_bytes: AtomicU64::new(max_bytes as u64),
            max_wait_us: AtomicU64::new(0),
            last_items: AtomicU64::new(1),
            room: Notify::new(),
            disk,
            stats,
        };
        q.gauge();
        q
    }

    /// Sets `otelcol_exporter_queue_size`: items, or with a disk queue the
    /// bytes on disk not yet delivered (its capacity is max_disk_bytes), as
    /// the Collector's queue reports with its bytes sizer.
    fn gauge(&self) {
        let v = match &self.disk {
            Some(d) => d.backlog_bytes(),
            None => self.lock().items,
        };
        self.stats.queue_size.store(v, Ordering::Relaxed);
    }

    /// Puts new memory-queue limits in force (a config reload): a smaller
    /// queue holding more than they allow refuses until it has drained below
    /// them; nothing queued is dropped. A disk queue is bounded by
    /// max_disk_bytes instead.
    pub fn set_limits(&self, max_items: usize, max_bytes: usize) {
        self.max_items.store(max_items as u64, Ordering::Relaxed);
        self.max_bytes.store(max_bytes as u64, Ordering::Relaxed);
        if self.disk.is_none() {
            self.stats
                .queue_capacity
                .store(max_items as u64, Ordering::Relaxed);
        }
        self.room.notify_waiters();
    }

    fn limits(&self) -> (u64, u64) {
        (
            self.max_items.load(Ordering::Relaxed),
            self.max_bytes.load(Ordering::Relaxed),
        )
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

    /// The refusal [`Queue::push`] would give `items` items now for lack of
    /// room (memory queue: max_items, or max_bytes reached already; the
    /// bytes are not known before redaction). A disk queue decides on
    /// append.
    pub fn refuse_early(&self, items: u64) -> Option<Refusal> {
        if self.disk.is_some() {
            return None;
        }
        self.last_items.store(items, Ordering::Relaxed);
        let (max_items, max_bytes) = self.limits();
        let q = self.lock();
        let full = q.items > 0 && (q.items + items > max_items || q.bytes >= max_bytes);
        drop(q);
        full.then(|| {
            self.refuse(
                items,
                format!(
                    "forward queue full (forward.queue.max_items {max_items} / max_bytes {max_bytes}); retry later"
                ),
            )
        })
    }

    /// Takes a record, or refuses it when the queue is full. With a disk
    /// queue, returns only once the record is written.
    pub async fn push(&self, rec: Rec, items: u64) -> Result<(), Refusal> {
        if let Some(d) = &self.disk {
            if let Err(reason) = d.append(rec, items).await {
                return Err(self.refuse(items, reason));
            }
            self.gauge();
            self.notify.notify_one();
            return Ok(());
        }
        let (len, raw) = (rec.data.len() as u64, rec.raw_len());
        let (max_items, max_bytes) = self.limits();
        {
            let mut q = self.lock();
            let empty = q.items == 0;
            let full = if !empty && q.items + items > max_items {
                Some(format!("{max_items} items, forward.queue.max_items"))
            } else if !empty && q.bytes + len > max_bytes {
                Some(format!("{max_bytes} bytes, forward.queue.max_bytes"))
            } else {
                None
            };
            if let Some(what) = full {
                drop(q);
                return Err(self.refuse(items, format!("forward queue full ({what}); retry later")));
            }
            self.last_items.store(items, Ordering::Relaxed);
            q.items += items;
            q.bytes += len;
            q.pending_items += items;
            q.pending_bytes += raw;
            q.pending.push_back(Entry {
                len: len as u32,
                raw,
                items,
                loc: None,
                data: Some(rec),
            });
            self.stats.queue_size.store(q.items, Ordering::Relaxed);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// (items, uncompressed bytes) waiting to be sent.
    pub fn pending(&self) -> (u64, u64) {
        match &self.disk {
            Some(d) => d.pending(),
            None => {
                let q = self.lock();
                (q.pending_items, q.pending_bytes)
            }
        }
    }

    /// Items queued or being sent.
    pub fn size(&self) -> u64 {
        match &self.disk {
            Some(d) => d.items(),
            None => self.lock().items,
        }
    }

    /// Takes up to `max_items` items / `max_bytes` uncompressed bytes of
    /// records (always at least one record when any waits). A disk queue
    /// reads them back on a blocking thread.
    pub async fn take(self: &Arc<Self>, max_items: u64, max_bytes: u64) -> Batch {
        if self.disk.is_none() {
            return self.take_memory(max_items, max_bytes);
        }
        let q = self.clone();
        let read = tokio::task::spawn_blocking(move || {
            q.disk
                .as_ref()
                .map(|d| d.read_batch(max_items, max_bytes))
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        if read.failed_items > 0 {
            self.stats
                .send_failed
                .fetch_add(read.failed_items, Ordering::Relaxed);
            self.gauge();
        }
        let mut at = 0usize;
        let mut recs = Vec::with_capacity(read.recs.len());
        let mut entries = Vec::with_capacity(read.recs.len());
        for (loc, items) in read.recs {
            let data = read.payload.slice(at..at + loc.len as usize);
            at += loc.len as usize;
            let rec = Rec {
                data,
                piece: loc.piece,
            };
            entries.push(Entry {
                len: loc.len,
                raw: rec.raw_len(),
                items,
                loc: Some(loc),
                data: None,
            });
            recs.push(rec);
        }
        Batch {
            entries,
            recs,
            read_id: read.id,
        }
    }

    fn take_memory(&self, max_items: u64, max_bytes: u64) -> Batch {
        let mut q = self.lock();
        let mut entries: Vec<Entry> = Vec::new();
        let (mut items, mut bytes) = (0u64, 0u64);
        while let Some(e) = q.pending.front() {
            if !entries.is_empty() && (items + e.items > max_items || bytes + e.raw > max_bytes) {
                break;
            }
            items += e.items;
            bytes += e.raw;
            if let Some(e) = q.pending.pop_front() {
                entries.push(e);
            }
        }
        q.pending_items -= items;
        q.pending_bytes -= bytes;
        drop(q);
        let recs = entries
            .iter_mut()
            .map(|e| e.data.take().unwrap_or_else(|| Rec::raw(Bytes::new())))
            .collect();
        Batch {
            entries,
            recs,
            read_id: None,
        }
    }

    /// The batch is delivered, or given up on: frees its space and lets its
    /// disk segments go.
    pub fn done(&self, batch: Batch) {
        match &self.disk {
            Some(d) => {
                for e in &batch.entries {
                    if let Some(loc) = e.loc {
                        d.ack(loc, e.items);
                    }
                }
                if let Some(id) = batch.read_id {
                    d.batch_done(id);
                }
                self.gauge();
            }
            None => {
                let mut q = self.lock();
                for e in &batch.entries {
                    q.items -= e.items;
                    q.bytes -= e.len as u64;
                }
                self.stats.queue_size.store(q.items, Ordering::Relaxed);
                drop(q);
                self.room.notify_waiters();
            }
        }
    }

    /// The batch was not delivered (shutdown): it stays counted, so the
    /// drain reports it as left on disk (or lost, without a directory), and
    /// its segments are kept for the next start.
    pub fn abandon(&self, batch: Batch) {
        drop(batch);
    }
}

/// Room set aside in a memory queue for a request being received
/// ([`Queue::wait_for_room`]), given back when dropped.
pub struct SetAside {
    q: Arc<Queue>,
    items: u64,
    bytes: u64,
}

impl Drop for SetAside {
    fn drop(&mut self) {
        let mut q = self.q.lock();
        q.aside_items -= self.items;
        q.aside_bytes -= self.bytes;
        drop(q);
        self.q.room.notify_waiters();
    }
}

impl Queue {
    /// Puts a new `forward.queue.max_wait` in force (start-up, a config
    /// reload); requests waiting already keep their deadline.
    pub fn set_max_wait(&self, wait: Duration) {
        let us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.max_wait_us.store(us, Ordering::Relaxed);
        self.room.notify_waiters();
    }

    /// Push-back by latency, before a request of `len` bytes is counted or
    /// walked: when the memory queue (with the room set aside for requests
    /// being received) has no room for it, taken to hold as many items as
    /// the last request counted or queued, waits up to `max_wait` for room (woken
    /// when a batch is done, room set aside is given back, or the limits
    /// change; no polling, no lock held across the wait). Room found is set
    /// aside until the [`SetAside`] is dropped, so the requests woken do
    /// not outnumber the room. None: a disk queue (it decides on append),
    /// `max_wait` 0, or no room in time; [`Queue::refuse_early`] decides.
    pub async fn wait_for_room(self: &Arc<Self>, len: u64) -> Option<SetAside> {
        let wait = Duration::from_micros(self.max_wait_us.load(Ordering::Relaxed));
        if self.disk.is_some() || wait.is_zero() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // registered before looking, so room freed meanwhile wakes it
            room.as_mut().enable();
            if let Some(a) = self.set_aside(len) {
                return Some(a);
            }
            tokio::time::timeout_at(deadline, room).await.ok()?;
        }
    }

    /// Sets room aside for a request of `len` bytes if the queue has it.
    fn set_aside(self: &Arc<Self>, len: u64) -> Option<SetAside> {
        let (max_items, max_bytes) = self.limits();
        let items = self.last_items.load(Ordering::Relaxed).max(1);
        let mut q = self.lock();
        let (n, b) = (q.items + q.aside_items, q.bytes + q.aside_bytes);
        if n > 0 && (n + items > max_items || b + len > max_bytes) {
            return None;
        }
        q.aside_items += items;
        q.aside_bytes += len;
        drop(q);
        Some(SetAside {
            q: self.clone(),
            items,
            bytes: len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::SignalKind;

    fn raw(b: &'static [u8]) -> Rec {
        Rec::raw(Bytes::from_static(b))
    }

    #[test]
    fn max_bytes_counts_records_as_kept_and_batches_count_them_uncompressed() {
        block_on(async {
            let big = || {
                let v: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
                super::super::piece::compress(Bytes::from(v))
            };
            let one = big();
            assert!(one.piece && one.data.len() < 10_000);
            // three compressed 100 kB records fit in 40 kB of queue
            let q = Arc::new(Queue::new(100, 40_000, None, stats()));
            for _ in 0..3 {
                q.push(big(), 1).await.expect("fits compressed");
            }
            assert_eq!(q.pending(), (3, 300_000), "pending counts uncompressed");
            // a batch of 250 kB (uncompressed) takes two of them
            let b = q.take(100, 250_000).await;
            assert_eq!(b.entries.len(), 2);
            assert_eq!(b.recs, [one.clone(), one]);
            assert_eq!(b.entries[0].raw, 100_000);
        });
    }

    fn stats() -> Arc<ExporterStats> {
        Arc::new(ExporterStats::new("otlp/logs", SignalKind::LogRecords, 10))
    }

    /// Runs a test's future on a current-thread runtime.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt")
            .block_on(f)
    }

    #[test]
    fn full_queue_refuses_and_counts() {
        block_on(async {
            let s = stats();
            let q = Arc::new(Queue::new(10, 1 << 20, None, s.clone()));
            q.push(Rec::raw(Bytes::from_static(b"a")), 6)
                .await
                .expect("fits");
            let r = q.push(Rec::raw(Bytes::from_static(b"b")), 6).await;
            assert!(r.is_err());
            assert_eq!(s.enqueue_failed.load(Ordering::Relaxed), 6);
            assert_eq!(s.queue_size.load(Ordering::Relaxed), 6);
            let b = q.take(100, 100).await;
            assert_eq!(b.entries.len(), 1);
            // in flight still counts against the cap
            assert!(q.push(Rec::raw(Bytes::from_static(b"c")), 6).await.is_err());
            q.done(b);
            assert_eq!(q.size(), 0);
            q.push(Rec::raw(Bytes::from_static(b"c")), 6)
                .await
                .expect("space again");
        });
    }

    #[test]
    fn refuses_early_exactly_when_push_would() {
        block_on(async {
            let s = stats();
            let q = Arc::new(Queue::new(10, 1 << 20, None, s.clone()));
            assert!(
                q.refuse_early(60).is_none(),
                "an empty queue takes anything"
            );
            q.push(Rec::raw(Bytes::from_static(b"a")), 6)
                .await
                .expect("fits");
            assert!(q.refuse_early(4).is_none(), "room for 4 more");
            assert!(q.refuse_early(5).is_some(), "no room for 5");
            assert_eq!(s.enqueue_failed.load(Ordering::Relaxed), 5);
            assert!(q.push(Rec::raw(Bytes::from_static(b"b")), 5).await.is_err());
        });
    }

    #[test]
    fn batches_concatenate_whole_records() {
        block_on(async {
            let q = Arc::new(Queue::new(100, 1 << 20, None, stats()));
            for p in [&b"ab"[..], b"cd", b"ef"] {
                q.push(Rec::raw(Bytes::copy_from_slice(p)), 2)
                    .await
                    .expect("push");
            }
            let b = q.take(4, 1 << 20).await;
            assert_eq!(b.entries.len(), 2);
            assert_eq!(b.recs, [raw(b"ab"), raw(b"cd")]);
            assert_eq!(b.part(1, 2), [raw(b"cd")]);
            assert_eq!(b.items(0, 2), 4);
            let rest = q.take(4, 1 << 20).await;
            assert_eq!(rest.recs, [raw(b"ef")]);
        });
    }

    #[test]
    fn reloaded_limits_apply_to_the_next_push_and_drop_nothing() {
        block_on(async {
            let s = stats();
            let q = Arc::new(Queue::new(10, 1 << 20, None, s.clone()));
            q.push(Rec::raw(Bytes::from_static(b"a")), 6)
                .await
                .expect("fits");
            q.set_limits(4, 1 << 20);
            assert_eq!(s.queue_capacity.load(Ordering::Relaxed), 4);
            assert!(q.push(Rec::raw(Bytes::from_static(b"b")), 1).await.is_err());
            assert_eq!(q.size(), 6, "what was queued stays");
            let b = q.take(100, 100).await;
            assert_eq!(b.items(0, b.entries.len()), 6);
            q.done(b);
            q.set_limits(20, 1 << 20);
            q.push(Rec::raw(Bytes::from_static(b"c")), 15)
                .await
                .expect("room again");
        });
    }

    /// Runs a test's future on a current-thread runtime with a timer.
    fn block_on_timed<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("rt")
            .block_on(f)
    }

    const FULL: &str =
        "forward queue full (forward.queue.max_items 10 / max_bytes 1048576); retry later";

    #[test]
    fn a_request_waiting_for_room_wakes_when_a_batch_is_done() {
        block_on_timed(async {
            let q = Arc::new(Queue::new(10, 1 << 20, None, stats()));
            q.set_max_wait(Duration::from_secs(60));
            assert!(q.refuse_early(6).is_none());
            q.push(Rec::raw(Bytes::from_static(b"a")), 6)
                .await
                .expect("fits");
            let b = q.take(100, 100).await;
            let waiter = tokio::spawn({
                let q = q.clone();
                async move { q.wait_for_room(1).await.map(|a| (a.items, a.bytes)) }
            });
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            assert!(!waiter.is_finished(), "no room for 6 more in 10");
            q.done(b);
            let got = waiter.await.expect("join");
            assert_eq!(got, Some((6, 1)), "woken with room set aside");
            assert_eq!(q.stats.enqueue_failed.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn a_wait_in_vain_ends_at_max_wait_and_is_refused_as_before() {
        block_on_timed(async {
            let s = stats();
            let q = Arc::new(Queue::new(10, 1 << 20, None, s.clone()));
            q.set_max_wait(Duration::from_millis(30));
            assert!(q.refuse_early(6).is_none(), "an empty queue takes anything");
            q.push(Rec::raw(Bytes::from_static(b"a")), 6)
                .await
                .expect("fits");
            let t = tokio::time::Instant::now();
            assert!(q.wait_for_room(1).await.is_none(), "no room for 6 more");
            assert!(t.elapsed() >= Duration::from_millis(30), "it waited");
            let r = q.refuse_early(6).expect("still full");
            assert_eq!(r.reason, FULL);
            assert_eq!(r.retry_after, PUSH_BACK);
            assert_eq!(s.enqueue_failed.load(Ordering::Relaxed), 6);
        });
    }

    #[test]
    fn room_set_aside_is_not_given_twice_and_comes_back_when_dropped() {
        block_on_timed(async {
            let q = Arc::new(Queue::new(10, 1 << 20, None, stats()));
            q.set_max_wait(Duration::from_millis(20));
            assert!(q.refuse_early(6).is_none());
            let first = q.wait_for_room(100).await.expect("an empty queue has room");
            assert!(q.wait_for_room(100).await.is_none(), "6 + 6 > 10");
            drop(first);
            assert!(q.wait_for_room(100).await.is_some(), "given back");
        });
    }

    #[test]
    fn room_is_estimated_by_the_last_request_queued() {
        block_on_timed(async {
            let q = Arc::new(Queue::new(10, 1 << 20, None, stats()));
            q.set_max_wait(Duration::from_millis(20));
            // queued without an early count (its room was set aside)
            q.push(Rec::raw(Bytes::from_static(b"a")), 6)
                .await
                .expect("fits");
            assert!(q.wait_for_room(1).await.is_none(), "6 + 6 > 10");
            q.push(Rec::raw(Bytes::from_static(b"b")), 1)
                .await
                .expect("fits");
            assert!(q.wait_for_room(1).await.is_some(), "6 + 1 + 1 <= 10");
        });
    }

    #[test]
    fn max_wait_zero_does_not_wait() {
        block_on_timed(async {
            let q = Arc::new(Queue::new(10, 1 << 20, None, stats()));
            q.push(Rec::raw(Bytes::from_static(b"a")), 6)
                .await
                .expect("fits");
            assert!(q.refuse_early(6).is_some());
            q.set_max_wait(Duration::from_secs(60));
            q.set_max_wait(Duration::ZERO);
            // refused at once: a 60 s wait would outlast the 10 s timeout
            let at_once = tokio::time::timeout(Duration::from_secs(10), q.wait_for_room(1));
            assert!(at_once.await.expect("not waiting").is_none());
        });
    }
}
