//! The HTTP listener Prometheus and Kubernetes talk to: `/metrics`,
//! `/healthz` (alive) and `/readyz` (config loaded, receivers bound, not
//! draining).

use crate::base::{ConfigError, ListenAddr};
use crate::derive::Deriver;
use crate::metrics::encode;
use crate::metrics::snapshot::Snapshot;
use crate::receiver::config::Connections;
use crate::telemetry::SelfMetrics;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod scrape;
pub use scrape::CHUNK;

/// `server:`: where `/metrics` listens, and the connection limits of every
/// listener (the receivers' too).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub listen: ListenAddr,
    /// Limits of every listener's connections (4317, 4318, 9464).
    pub connections: Connections,
}
impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ListenAddr::Exact(SocketAddr::from(([0, 0, 0, 0], 9464))),
            connections: Connections::default(),
        }
    }
}
impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connections.validate("server.connections")
    }
}

/// Readiness, flipped by the binary.
#[derive(Default)]
pub struct Health {
    pub ready: AtomicBool,
    pub draining: AtomicBool,
    /// The bound addresses, one `listener=addr[,addr]` line each, shown
    /// by /readyz once ready.
    pub listening: std::sync::OnceLock<String>,
}

#[derive(Clone)]
struct St {
    pipeline: Arc<crate::receiver::Pipeline>,
    health: Arc<Health>,
    own: Arc<SelfMetrics>,
    scrapes: Arc<scrape::Stats>,
}

/// `own`: the self-metrics, declared by the components (see `main.rs`).
pub fn router(
    pipeline: Arc<crate::receiver::Pipeline>,
    health: Arc<Health>,
    own: Arc<SelfMetrics>,
) -> Router {
    let scrapes = Arc::new(scrape::Stats::default());
    scrape::Stats::declare(&own, &scrapes);
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(St {
            pipeline,
            health,
            own,
            scrapes,
        })
}

async fn readyz(State(st): State<St>) -> Response {
    if st.health.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if st.health.ready.load(Ordering::Relaxed) {
        let addrs = st.health.listening.get().map_or("", String::as_str);
        format!("ready\n{addrs}").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

/// Everything `/metrics` shows, at this instant: the store's families and
/// the sidecar's own. Built at scrape (or push) time only.
pub fn snapshot(d: &Deriver, own: &SelfMetrics) -> Snapshot {
    d.store().snapshot(crate::metrics::own::families(own))
}

/// Renders the exposition for a scrape whole: (content type, body). The
/// server streams it instead ([`render_chunks`]); this is for callers that
/// want the bytes.
pub fn render(d: &Deriver, own: &SelfMetrics, accept: &str) -> (&'static str, Vec<u8>) {
    let f = encode::negotiate(accept);
    (f.content_type(), encode::encode(&snapshot(d, own), f))
}

/// Renders the exposition for a scrape in pieces of about `chunk` bytes,
/// handed to `send` in order until it returns false: what `/metrics` sends.
/// Returns whether the whole body was handed out.
pub fn render_chunks(
    d: &Deriver,
    own: &SelfMetrics,
    f: encode::Format,
    chunk: usize,
    send: &mut dyn FnMut(Vec<u8>) -> bool,
) -> bool {
    encode::encode_chunks(&snapshot(d, own), f, chunk, send)
}

async fn metrics(State(st): State<St>, method: Method, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let f = encode::negotiate(accept);
    // a HEAD (a reachability check) gets the headers without the store
    // being rendered only to be thrown away
    if method == Method::HEAD {
        return (
            [(header::CONTENT_TYPE, f.content_type())],
            axum::body::Body::empty(),
        )
            .into_response();
    }
    let body = scrape::start(st.pipeline.clone(), st.own.clone(), st.scrapes.clone(), f);
    ([(header::CONTENT_TYPE, f.content_type())], body).into_response()
}
