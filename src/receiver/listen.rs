//! Accept loops for the sidecar's listeners, bounded against slow or
//! hostile clients: a header-read timeout (slowloris), a whole-request
//! timeout that also bounds reading the body (a Content-Length never sent,
//! a trickled chunked body), an idle timeout for silent connections, and a
//! connection limit past which new connections are closed at once. When
//! accept() fails for lack of file descriptors the loop backs off instead
//! of spinning. Used for OTLP/HTTP (4318) and /metrics (9464) by
//! [`serve_http`], and for OTLP/gRPC (4317) by [`incoming`]. A listener is
//! one socket, or two for `localhost:PORT` (127.0.0.1 and ::1) sharing its
//! connection limit and counters ([`bind`]).

use super::admit::{InFlight, Share};
use super::config::Connections;
use super::stats::ListenerStats;
use crate::base::ListenAddr;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

// indices into `ListenerStats::timed_out` (`stats::TIMEOUT_PHASES`)
const HEADER: usize = 0;
const REQUEST: usize = 1;
const IDLE: usize = 2;

/// Connection limits (`server.connections`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request line and headers must arrive within this.
    pub header_read: Duration,
    /// A whole request, body included, must be read and answered within this.
    pub request: Duration,
    /// A connection with no bytes in either direction for this long is closed.
    pub idle: Duration,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
}

impl From<&Connections> for Limits {
    fn from(c: &Connections) -> Self {
        Limits {
            header_read: c.header_read_timeout.0,
            request: c.request_timeout.0,
            idle: c.idle_timeout.0,
            max_connections: c.max_connections,
        }
    }
}

/// How long accept() pauses after running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The sockets of one listener.
pub struct Sockets {
    socks: Vec<TcpListener>,
    /// Where the next accept starts looking, so that no socket starves.
    next: AtomicUsize,
}

impl Sockets {
    fn new(socks: Vec<TcpListener>) -> Sockets {
        Sockets {
            socks,
            next: AtomicUsize::new(0),
        }
    }

    /// The addresses bound (the real port when 0 was asked for).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.socks
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound addresses, comma-separated (the ready line, /readyz).
    pub fn describe(&self) -> String {
        let a: Vec<String> = self.addrs().iter().map(|a| a.to_string()).collect();
        a.join(",")
    }

    async fn accept_any(&self) -> io::Result<TcpStream> {
        std::future::poll_fn(|cx| {
            let n = self.socks.len();
            let start = self.next.load(Ordering::Relaxed);
            for i in 0..n {
                let k = (start + i) % n;
                if let Poll::Ready(r) = self.socks[k].poll_accept(cx) {
                    self.next.store((k + 1) % n, Ordering::Relaxed);
                    return Poll::Ready(r.map(|(s, _)| s));
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Binds a listener: `IP:PORT` exactly, or for `localhost:PORT` 127.0.0.1
/// and then ::1 on the same port. A host without IPv6 (::1 not available,
/// or no IPv6 at all) keeps 127.0.0.1 alone, logged at info; any other
/// failure (the port taken) stops start-up.
pub async fn bind(addr: ListenAddr, what: &str) -> Result<Sockets, String> {
    let one = |a: SocketAddr| async move {
        TcpListener::bind(a)
            .await
            .map_err(|e| format!("cannot listen on {a} ({what}): {e}"))
    };
    let port = match addr {
        ListenAddr::Exact(a) => return Ok(Sockets::new(vec![one(a).await?])),
        ListenAddr::Localhost(p) => p,
    };
    // with port 0 the kernel chooses 127.0.0.1's port, which ::1 may not
    // have free: choose again, a few times
    let mut tries = if port == 0 { 5 } else { 1 };
    loop {
        let v4 = one(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        let got = v4.local_addr().map(|a| a.port()).unwrap_or(port);
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, got));
        tries -= 1;
        match TcpListener::bind(v6).await {
            Ok(l) => return Ok(Sockets::new(vec![v4, l])),
            Err(e) if no_ipv6(&e) => {
                tracing::info!(listener = what, error = %e, "no IPv6 loopback: listening on 127.0.0.1 only");
                return Ok(Sockets::new(vec![v4]));
            }
            Err(e) if tries == 0 || e.kind() != io::ErrorKind::AddrInUse => {
                return Err(format!("cannot listen on {v6} ({what}): {e}"));
            }
            Err(_) => continue,
        }
    }
}

/// EADDRNOTAVAIL (::1 not configured) or EAFNOSUPPORT (no IPv6 in the
/// kernel), Linux numbers.
fn no_ipv6(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(99 | 97))
}

/// Accepts the next connection on any of the listener's sockets; on
/// EMFILE/ENFILE/ENOBUFS/ENOMEM sleeps [`ACCEPT_BACKOFF`] first (the error
/// repeats until a descriptor frees up, so retrying at once would spin a
/// core). Other errors concern one connection only (ECONNABORTED): the loop
/// goes on.
pub async fn accept(l: &Sockets, stats: &ListenerStats, what: &str) -> TcpStream {
    loop {
        match l.accept_any().await {
            Ok(s) => return s,
            Err(e) => {
                if out_of_resources(&e) {
                    warn_out_of_fds(stats, what, &e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
            }
        }
    }
}

/// Counts an accept() failure for lack of descriptors; one warning per 10 s,
/// not one per back-off.
fn warn_out_of_fds(stats: &ListenerStats, what: &str, e: &io::Error) {
    let n = stats.accept_errors.fetch_add(1, Ordering::Relaxed) + 1;
    let now = crate::base::now_secs();
    let last = stats.last_warned_s.load(Ordering::Relaxed);
    if now >= last + 10 {
        stats.last_warned_s.store(now, Ordering::Relaxed);
        tracing::warn!(listener = what, error = %e, accept_errors = n,
            "accept failed: out of file descriptors, backing off");
    }
}

fn out_of_resources(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 (Linux)
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// A connection that fails its reads once nothing moved for `idle`, and
/// holds its slot of the connection limit until dropped. A gRPC connection
/// also carries its share of the in-flight budget (`admit.rs`), handed to
/// each of its requests through [`GrpcConnInfo`].
pub struct Guarded<T> {
    inner: T,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
    stats: Arc<ListenerStats>,
    share: Option<Arc<Share>>,
}

impl<T> Guarded<T> {
    fn new(
        inner: T,
        idle: Duration,
        permit: OwnedSemaphorePermit,
        stats: Arc<ListenerStats>,
    ) -> Self {
        Guarded {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _permit: permit,
            stats,
            share: None,
        }
    }
    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.stats.timed_out[IDLE].fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What tonic puts into each request's extensions (cloned per request):
/// the peer's addresses and the connection's share of the in-flight budget,
/// which `grpc.rs` takes out.
#[derive(Clone)]
pub struct GrpcConnInfo {
    pub tcp: tonic::transport::server::TcpConnectInfo,
    pub share: Option<Arc<Share>>,
}

impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = GrpcConnInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        GrpcConnInfo {
            tcp: self.inner.connect_info(),
            share: self.share.clone(),
        }
    }
}

/// Takes a slot of the connection limit, or None when all are taken (the
/// caller drops the connection: refused at once, the loop goes on).
fn admit(
    slots: &Arc<Semaphore>,
    stats: &ListenerStats,
    what: &str,
) -> Option<OwnedSemaphorePermit> {
    let p = slots.clone().try_acquire_owned().ok();
    if p.is_none() {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            listener = what,
            "connection limit reached: connection closed"
        );
    }
    p
}

/// The incoming connections of the OTLP/gRPC listener, for tonic's
/// `serve_with_incoming_shutdown`: accepted with backoff, limited, guarded
/// by the idle timeout (HTTP/2 keep-alive pings keep a live client busy),
/// each with its own share of `budget`.
pub fn incoming(
    l: Sockets,
    limits: Limits,
    stats: Arc<ListenerStats>,
    budget: Arc<InFlight>,
) -> impl tokio_stream::Stream<Item = Result<Guarded<TcpStream>, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        loop {
            let s = accept(&l, &stats, "otlp_grpc").await;
            let Some(permit) = admit(&slots, &stats, "otlp_grpc") else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let mut io = Guarded::new(s, limits.idle, permit, stats.clone());
            io.share = Some(budget.share());
            if tx.send(Ok(io)).await.is_err() {
                return; // the server stopped
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves `app` on `l` over HTTP/1.1 within `limits` until `stop` turns
/// true; then stops accepting, lets in-flight requests finish and returns
/// when every connection is closed.
pub async fn serve_http(
    l: Sockets,
    app: Router,
    limits: Limits,
    stats: Arc<ListenerStats>,
    mut stop: watch::Receiver<bool>,
) {
    let what = stats.name;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let s = tokio::select! {
            s = accept(&l, &stats, what) => s,
            _ = stopped(&mut stop) => break,
        };
        let Some(permit) = admit(&slots, &stats, what) else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let io = Guarded::new(s, limits.idle, permit, stats.clone());
        tokio::spawn(connection(io, app.clone(), limits, stop.clone()));
    }
    drop(l);
    // every connection holds a slot until it closes
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The peer address of an HTTP/1.1 request's connection (a request
/// extension; None if the socket could not say).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub Option<std::net::SocketAddr>);

async fn connection(
    io: Guarded<TcpStream>,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let stats = io.stats.clone();
    let svc_stats = stats.clone();
    // the peer, for handlers that need to know who is asking (the browser
    // listener's rate limits)
    let peer = Peer(io.inner.peer_addr().ok());
    let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        let (app, stats) = (app.clone(), svc_stats.clone());
        req.extensions_mut().insert(peer);
        async move { Ok::<_, std::convert::Infallible>(within(limits.request, app, req, &stats).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                if e.is_timeout() {
                    stats.timed_out[HEADER].fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(error = %e, "connection closed");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Runs one request through `app`, answering 408 and closing the
/// connection when it (body read included) takes longer than `limit`.
async fn within(
    limit: Duration,
    mut app: Router,
    req: http::Request<Incoming>,
    stats: &ListenerStats,
) -> axum::response::Response {
    use tower::Service;
    match tokio::time::timeout(limit, app.call(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(never)) => match never {},
        Err(_) => {
            stats.timed_out[REQUEST].fetch_add(1, Ordering::Relaxed);
            let mut r = axum::response::IntoResponse::into_response((
                http::StatusCode::REQUEST_TIMEOUT,
                "request not received and answered in time\n",
            ));
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            r
        }
    }
}
