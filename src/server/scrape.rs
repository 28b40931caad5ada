//! A scrape's body, streamed: the exposition is rendered on a blocking
//! thread in pieces of [`CHUNK`] bytes, handed to the connection through a
//! channel of [`QUEUE`] pieces, and sent with chunked transfer encoding.
//!
//! Why (BENCHMARKS.md, "Issue 24: the scrape streamed"): a 100k-series text
//! body is 58 MB. Rendered whole, it was one block above glibc's mmap
//! threshold (4 MiB in the sidecar, `allocator.rs`), so each scrape had the
//! kernel map and zero fresh pages for it, about half of a text scrape's
//! CPU, and held it until the scraper had read it all. Pieces below the
//! threshold come from the heap and reuse the pages the previous pieces
//! freed; what a scrape holds at once is the snapshot plus a few pieces,
//! however slowly the scraper reads.
//!
//! The rendering stops when the scraper goes away (the connection drops the
//! body, so the channel closes) or takes no piece for [`STALL`]; the body
//! then ends in an error, so hyper closes the connection without the last
//! chunk and a scraper never takes a cut body for a whole one.

use crate::metrics::encode::Format;
use crate::receiver::Pipeline;
use crate::telemetry::SelfMetrics;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// A piece's size: below the mmap threshold, so its pages are reused.
pub const CHUNK: usize = 256 * 1024;

/// Pieces rendered ahead of the connection.
const QUEUE: usize = 4;

/// The rendering gives up when the connection has taken no piece for this
/// long (the listeners' default idle timeout).
const STALL: Duration = Duration::from_secs(60);

/// The scrapes' self-metrics.
#[derive(Default)]
pub struct Stats {
    in_flight: AtomicU64,
    abandoned: AtomicU64,
    bytes: AtomicU64,
}

impl Stats {
    pub fn declare(t: &SelfMetrics, s: &Arc<Stats>) {
        let x = s.clone();
        t.gauge(
            "geometra_sidecar_scrapes_in_flight",
            "Scrape bodies being rendered and sent now (this one included).",
            "",
            move |o| o.observe(x.in_flight.load(Ordering::Relaxed) as f64, &[]),
        );
        let x = s.clone();
        t.counter(
            "geometra_sidecar_scrapes_abandoned_total",
            "Scrapes whose rendering stopped before the body's end: the scraper went away or read nothing for 60 s.",
            "",
            move |o| o.observe(x.abandoned.load(Ordering::Relaxed), &[]),
        );
        let x = s.clone();
        t.counter(
            "geometra_sidecar_scrape_bytes_total",
            "Scrape body bytes handed to the connections.",
            "",
            move |o| o.observe(x.bytes.load(Ordering::Relaxed), &[]),
        );
    }
}

/// Counts a rendering in flight until dropped (also if it panics).
struct InFlight(Arc<Stats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts rendering a scrape in `f` on a blocking thread; the body that
/// carries it. Call on the runtime.
pub fn start(
    pipeline: Arc<Pipeline>,
    own: Arc<SelfMetrics>,
    stats: Arc<Stats>,
    f: Format,
) -> axum::body::Body {
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let done = Arc::new(AtomicBool::new(false));
    let body = Streamed {
        rx,
        done: done.clone(),
    };
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let guard = InFlight(stats);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let stats = &guard.0;
        let mut send = |piece: Vec<u8>| {
            let n = piece.len() as u64;
            if n == 0 {
                return true;
            }
            // counted before the scraper can see it: a scrape that follows
            // this one's end shows all of its bytes
            stats.bytes.fetch_add(n, Ordering::Relaxed);
            let sent = rt.block_on(tokio::time::timeout(STALL, tx.send(Bytes::from(piece))));
            let ok = matches!(sent, Ok(Ok(())));
            if !ok {
                stats.bytes.fetch_sub(n, Ordering::Relaxed);
            }
            ok
        };
        if super::render_chunks(&pipeline.deriver.load(), &own, f, CHUNK, &mut send) {
            done.store(true, Ordering::Release);
        } else {
            stats.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    });
    axum::body::Body::new(body)
}

/// The receiving end: the pieces, then the end if the rendering finished,
/// an error if it stopped short.
struct Streamed {
    rx: mpsc::Receiver<Bytes>,
    done: Arc<AtomicBool>,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            Poll::Ready(None) if self.done.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(std::io::Error::other(
                "the scrape's rendering stopped before the end",
            )))),
        }
    }
}
