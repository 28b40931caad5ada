//! The HTTP listener Prometheus and Kubernetes talk to: `/metrics`,
//! `/healthz` (alive) and `/readyz` (config loaded, receivers bound, not
//! draining).

use crate::derive::Deriver;
use crate::metrics::encode;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
}

pub fn router(pipeline: Arc<crate::receiver::Pipeline>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(St { pipeline, health })
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

/// Renders the exposition for a scrape.
pub fn render(d: &Deriver, accept: &str) -> (&'static str, String) {
    let om = encode::wants_openmetrics(accept);
    let body = encode::render(d.store(), &d.skipped(), om);
    (
        if om {
            encode::OPENMETRICS_CONTENT_TYPE
        } else {
            encode::TEXT_CONTENT_TYPE
        },
        body,
    )
}

async fn metrics(State(st): State<St>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let p = st.pipeline.clone();
    // encoding takes each family's lock briefly; keep it off the async workers' critical path
    match tokio::task::spawn_blocking(move || render(&p.deriver.load(), &accept)).await {
        Ok((ct, body)) => ([(header::CONTENT_TYPE, ct)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering failed: {e}\n"),
        )
            .into_response(),
    }
}

// TEMP until the snapshot helper's version lands: derived counters, gauges
// and histograms only (no pass-through, no self-metrics), enough for the
// remote-write exporter to be wired and tested.
pub fn snapshot(d: &Deriver) -> crate::metrics::snapshot::Snapshot {
    use crate::metrics::snapshot as s;
    use crate::metrics::store::{key_parts, Kind, LabelNames, Value};
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as i64);
    let mut out = s::Snapshot {
        families: Vec::new(),
        timestamp_ms: now_ms,
    };
    let derived = d.store().derived();
    for f in &derived.families {
        let (kind, bounds): (s::Kind, std::sync::Arc<[f64]>) = match &f.kind {
            Kind::Counter => (s::Kind::Counter, std::sync::Arc::from(Vec::new())),
            Kind::Gauge => (s::Kind::Gauge, std::sync::Arc::from(Vec::new())),
            Kind::Histogram(b) => (s::Kind::Histogram, std::sync::Arc::from(b.clone())),
        };
        let mut fam = s::Family::new(f.name.clone(), kind, f.help.clone());
        fam.unit = f.unit.clone();
        f.with(|inner| {
            let series = inner.series.iter().map(|(k, v)| (Some(k), v));
            for (k, v) in series.chain(inner.overflow.iter().map(|v| (None, v))) {
                let pairs: Vec<(&str, &str)> = match (k, &f.labels) {
                    (None, _) => vec![("otel_metric_overflow", "true")],
                    (Some(k), LabelNames::Fixed(n)) => {
                        n.iter().map(String::as_str).zip(key_parts(k)).collect()
                    }
                    (Some(_), LabelNames::InKey) => continue,
                };
                let point = match &v.value {
                    Value::Scalar(x) => s::Point::Value(*x),
                    Value::Hist(h) => s::Point::Histogram(Box::new(s::Histogram {
                        count: h.count,
                        sum: h.sum,
                        classic: Some(s::Classic {
                            bounds: bounds.clone(),
                            counts: h.counts.to_vec(),
                            exemplars: Vec::new(),
                        }),
                        native: None,
                    })),
                };
                fam.push(&pairs, point, Some(v.created_ms as i64));
            }
        });
        out.families.push(fam);
    }
    out
}
