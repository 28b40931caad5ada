//! OTLP/HTTP receiver: `/v1/traces`, `/v1/logs`, `/v1/metrics` with protobuf
//! or JSON bodies, gzip, deflate or zstd (`encoding.rs`), a body limit that
//! also bounds decompression, and CORS for browsers (`cors.rs`). JSON is a
//! cold path: it is decoded with opentelemetry-proto's serde types and
//! re-encoded to protobuf, so the same pipeline serves both.

use super::admit::{Held, Limit, Transport};
use super::browser::guard::{Guard, Refusal};
use super::config::OtlpHttp;
use super::cors::Cors;
use super::encoding::{self, DecodeError, Encoding, SUPPORTED};
use super::grpc::{Logs, Metrics, Signal, Traces};
use super::listen::Peer;
use super::stats::{BadRequest, ReceiverStats};
use super::{Accepted, Pipeline, Rejection};
use crate::base::{Live, SignalKind};
use crate::derive::config::Source;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::Arc;

#[derive(Clone)]
struct HttpState {
    pipeline: Arc<Pipeline>,
    max_body: usize,
    /// swapped by a config reload; loaded once per request
    cors: Arc<Live<Cors>>,
    /// the browser listener's checks; None on the in-pod listener
    guard: Option<Arc<Guard>>,
    /// the key `max_body` comes from, for the 413 message
    body_key: &'static str,
}

impl HttpState {
    fn stats(&self) -> &ReceiverStats {
        match self.guard {
            Some(_) => &self.pipeline.stats.browser,
            None => &self.pipeline.stats.http,
        }
    }
}

/// The OTLP/HTTP routes; `cors` is the policy in force (a config reload swaps it).
pub fn router(pipeline: Arc<Pipeline>, cfg: &OtlpHttp, cors: Arc<Live<Cors>>) -> Router {
    let st = HttpState {
        pipeline,
        max_body: cfg.max_body_bytes,
        cors,
        guard: None,
        body_key: "receivers.otlp_http.max_body_bytes",
    };
    Router::new()
        .route("/v1/traces", post(traces).options(preflight))
        .route("/v1/logs", post(logs).options(preflight))
        .route("/v1/metrics", post(metrics).options(preflight))
        .with_state(st)
}

/// The browser listener's routes: traces and logs only, each request
/// through `guard` (token, rate limits, payload limits, stamp) and into the
/// browser's rules alone. Metrics are not taken from browsers: a page's
/// metric names would land beside the app's own.
pub fn browser_router(pipeline: Arc<Pipeline>, guard: Arc<Guard>, cors: Arc<Live<Cors>>) -> Router {
    let st = HttpState {
        pipeline,
        max_body: guard.cfg.max_body_bytes,
        cors,
        guard: Some(guard),
        body_key: "receivers.browser.max_body_bytes",
    };
    Router::new()
        .route("/v1/traces", post(traces).options(preflight))
        .route("/v1/logs", post(logs).options(preflight))
        .route("/v1/metrics", post(no_metrics).options(preflight))
        .with_state(st)
}

async fn no_metrics(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    let origin = st.cors.load().allowed_origin(&headers);
    let msg = "the browser listener takes traces and logs only; metrics go to the in-pod listeners";
    with_cors(error(Format::Proto, StatusCode::NOT_FOUND, 12, msg), origin)
}

fn with_cors(r: Response, origin: Option<HeaderValue>) -> Response {
    Cors::decorate(r, origin)
}

async fn preflight(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    st.cors.load().preflight(&headers)
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Proto,
    Json,
}

fn error(format: Format, code: StatusCode, grpc_code: i32, msg: &str) -> Response {
    match format {
        Format::Json => {
            let body = serde_json::json!({"code": grpc_code, "message": msg}).to_string();
            (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Format::Proto => {
            let body = crate::rpc_status::status(grpc_code, msg);
            (
                code,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                body,
            )
                .into_response()
        }
    }
}

/// A request refused whole: why (for the count), and the ready response.
type Refused = (BadRequest, Response);

/// The body with its `Content-Encoding` undone, within the body limit.
#[allow(clippy::result_large_err)]
fn decoded(
    st: &HttpState,
    headers: &HeaderMap,
    body: Bytes,
    format: Format,
) -> Result<Bytes, Refused> {
    let enc = Encoding::parse(headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()))
        .map_err(|e| {
            let r = error(
                format,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                3,
                &format!("unsupported content-encoding {e}: supported are {SUPPORTED}"),
            );
            (BadRequest::Encoding, r)
        })?;
    if enc == Encoding::Identity {
        return Ok(body);
    }
    encoding::decode(enc, &body, st.max_body).map_err(|e| match e {
        DecodeError::TooLarge => (
            BadRequest::TooLarge,
            error(
                format,
                StatusCode::PAYLOAD_TOO_LARGE,
                8,
                &format!(
                    "decompressed body larger than receivers.otlp_http.max_body_bytes ({})",
                    st.max_body
                ),
            ),
        ),
        DecodeError::Invalid(m) => (
            BadRequest::Encoding,
            error(format, StatusCode::BAD_REQUEST, 3, &m),
        ),
    })
}

/// Unpacks the body into protobuf bytes; Err is a ready response (a cold
/// path: its size does not matter).
#[allow(clippy::result_large_err)]
fn body_bytes<J, F>(
    st: &HttpState,
    headers: &HeaderMap,
    body: Bytes,
    to_proto: F,
) -> Result<(Format, Bytes), Refused>
where
    J: serde::de::DeserializeOwned,
    F: FnOnce(J) -> Vec<u8>,
{
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = if ct.starts_with("application/json") {
        Format::Json
    } else if ct.starts_with("application/x-protobuf") || ct.starts_with("application/protobuf") {
        Format::Proto
    } else {
        return Err((
            BadRequest::Encoding,
            error(
                Format::Proto,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                3,
                "content-type must be application/x-protobuf or application/json",
            ),
        ));
    };
    let raw = decoded(st, headers, body, format)?;
    match format {
        Format::Proto => Ok((format, raw)),
        Format::Json => match serde_json::from_slice::<J>(&raw) {
            Ok(j) => Ok((format, Bytes::from(to_proto(j)))),
            Err(e) => Err((
                BadRequest::Malformed,
                error(
                    format,
                    StatusCode::BAD_REQUEST,
                    3,
                    &format!("malformed OTLP JSON: {e}"),
                ),
            )),
        },
    }
}

fn respond<R: Message + serde::Serialize>(format: Format, r: R) -> Response {
    match format {
        Format::Proto => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            r.encode_to_vec(),
        )
            .into_response(),
        Format::Json => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&r).unwrap_or_else(|_| b"{}".to_vec()),
        )
            .into_response(),
    }
}

fn rejection(format: Format, r: Rejection) -> Response {
    match r {
        Rejection::Invalid(m) => error(format, StatusCode::BAD_REQUEST, 3, &m),
        Rejection::Unavailable(refusal) => {
            let mut resp = error(format, StatusCode::SERVICE_UNAVAILABLE, 14, &refusal.reason);
            let secs = refusal.retry_after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

#[allow(clippy::result_large_err)]
async fn run(
    st: HttpState,
    origin: Option<HeaderValue>,
    sig: SignalKind,
    parsed: Result<(Format, Bytes), Refused>,
) -> Result<(Format, Accepted), Response> {
    let (format, body) = match parsed {
        Ok(x) => x,
        Err((why, r)) => {
            st.stats().bad_request(sig, why);
            return Err(with_cors(r, origin));
        }
    };
    let p = &st.pipeline;
    let source = match st.guard {
        Some(_) => Source::Browser,
        None => Source::App,
    };
    let res = match sig {
        SignalKind::MetricPoints => p.metrics(body, st.stats()).await,
        _ => p.spans_or_logs(sig, body, st.stats(), source).await,
    };
    res.map(|a| (format, a))
        .map_err(|r| with_cors(rejection(format, r), origin))
}

/// Why a body was not read whole.
enum Unread {
    /// past `max_body_bytes` (declared or sent)
    TooLarge,
    /// the connection broke off or timed out mid-body
    Broken(String),
    /// `receivers.max_in_flight_bytes` is held by other requests (HTTP/1.1
    /// connections have no share: one request at a time each)
    Busy(Limit),
}

/// The body, read within the body limit and taking its bytes from the
/// in-flight budget (`admit.rs`): a declared Content-Length up front, before
/// anything is buffered, else chunk by chunk. A body that arrives in one
/// chunk is taken as it is; one in several is copied once into a buffer
/// (the walker reads a contiguous message).
async fn read_body(
    st: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Held), Unread> {
    use http_body_util::BodyExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > st.max_body) {
        return Err(Unread::TooLarge);
    }
    let budget = &st.pipeline.in_flight;
    let mut held = budget.take(declared.unwrap_or(0)).map_err(Unread::Busy)?;
    let (mut first, mut rest): (Option<Bytes>, Vec<u8>) = (None, Vec::new());
    let mut body = std::pin::pin!(body);
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Unread::Broken(e.to_string()))?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        total += chunk.len();
        if total > st.max_body {
            return Err(Unread::TooLarge);
        }
        if total > held.bytes() {
            held.grow(total - held.bytes()).map_err(Unread::Busy)?;
        }
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            None => rest.extend_from_slice(&chunk),
            Some(f) => {
                rest.reserve_exact(declared.unwrap_or(total).max(total));
                rest.extend_from_slice(&f);
                rest.extend_from_slice(&chunk);
            }
        }
    }
    let body = first.unwrap_or_else(|| Bytes::from(rest));
    Ok((body, held))
}

/// The answer to a body that was not read whole, counted.
fn unread(st: &HttpState, origin: Option<HeaderValue>, sig: SignalKind, e: Unread) -> Response {
    let http = st.stats();
    let r = match e {
        Unread::TooLarge => {
            http.bad_request(sig, BadRequest::TooLarge);
            if let Some(g) = &st.guard {
                g.stats.count(Refusal::TooLarge);
            }
            let msg = format!(
                "request body larger than {} ({} bytes)",
                st.body_key, st.max_body
            );
            error(Format::Proto, StatusCode::PAYLOAD_TOO_LARGE, 8, &msg)
        }
        Unread::Broken(e) => {
            http.bad_request(sig, BadRequest::Malformed);
            let msg = format!("the request body broke off: {e}");
            error(Format::Proto, StatusCode::BAD_REQUEST, 3, &msg)
        }
        Unread::Busy(limit) => {
            let refusal = st.pipeline.in_flight.refuse(Transport::Http, sig, limit);
            rejection(Format::Proto, Rejection::Unavailable(refusal))
        }
    };
    // the rest of the body is never read: the connection cannot carry
    // another request, and a client must not reuse it (RFC 9112 9.6)
    let mut r = with_cors(r, origin);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// One OTLP/HTTP export: read the body, unpack it to protobuf, run the
/// pipeline, answer in the request's format.
async fn export<J, S>(
    st: HttpState,
    peer: Option<Peer>,
    headers: HeaderMap,
    body: Body,
    sig: SignalKind,
) -> Response
where
    J: serde::de::DeserializeOwned + Message,
    S: Signal,
    S::Response: serde::Serialize,
{
    // the CORS policy is read once per request
    let origin = st.cors.load().allowed_origin(&headers);
    if let Some(g) = &st.guard {
        if let Err(u) = g.authorize(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
            return with_cors(unauthorized(u), origin);
        }
    }
    // the body's bytes stay taken until it is answered
    let (body, mut held) = match read_body(&st, &headers, body).await {
        Ok(b) => b,
        Err(e) => return unread(&st, origin, sig, e),
    };
    let raw = body.as_ptr();
    let parsed = body_bytes(&st, &headers, body, |j: J| j.encode_to_vec());
    // an inflated or re-encoded (JSON) body is new memory: taken too
    if let Ok((_, b)) = &parsed {
        if b.as_ptr() != raw {
            if let Err(limit) = held.grow(b.len()) {
                return unread(&st, origin, sig, Unread::Busy(limit));
            }
        }
    }
    let parsed = match (&st.guard, parsed) {
        (Some(g), Ok((format, b))) => match guarded(g, (&peer, &headers), sig, format, &b) {
            Ok(b) => Ok((format, b)),
            Err(r) => return with_cors(r, origin),
        },
        (_, parsed) => parsed,
    };
    match run(st, origin.clone(), sig, parsed).await {
        Ok((f, a)) => with_cors(respond(f, S::respond(a)), origin),
        Err(r) => r,
    }
}

type Peered = Option<axum::Extension<Peer>>;

async fn traces(
    State(st): State<HttpState>,
    p: Peered,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let p = p.map(|e| e.0);
    export::<ExportTraceServiceRequest, Traces>(st, p, headers, body, SignalKind::Spans).await
}

async fn logs(State(st): State<HttpState>, p: Peered, headers: HeaderMap, body: Body) -> Response {
    let p = p.map(|e| e.0);
    export::<ExportLogsServiceRequest, Logs>(st, p, headers, body, SignalKind::LogRecords).await
}

async fn metrics(
    State(st): State<HttpState>,
    p: Peered,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (p, sig) = (p.map(|e| e.0), SignalKind::MetricPoints);
    export::<ExportMetricsServiceRequest, Metrics>(st, p, headers, body, sig).await
}

/// 401 with the reason and `WWW-Authenticate` (the count is the verifier's).
fn unauthorized(u: super::browser::auth::Unauthorized) -> Response {
    let msg = format!("unauthorized: {u}");
    let mut r = error(Format::Proto, StatusCode::UNAUTHORIZED, 16, &msg);
    if let Ok(v) = HeaderValue::from_str(u.www_authenticate()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// A browser request's payload checked and stamped (`guard.rs`), then its
/// client's and the global rate limits taken for its items: the body the
/// pipeline takes, or the answer (413, 400, 429 with `Retry-After`).
#[allow(clippy::result_large_err)]
fn guarded(
    g: &Guard,
    (peer, headers): (&Option<Peer>, &HeaderMap),
    sig: SignalKind,
    format: Format,
    body: &[u8],
) -> Result<Bytes, Response> {
    let (body, items) = g.inspect(sig, body).map_err(|o| {
        let code = match o.why {
            Refusal::Malformed => StatusCode::BAD_REQUEST,
            _ => StatusCode::PAYLOAD_TOO_LARGE,
        };
        error(format, code, 3, &o.message)
    })?;
    let peer_ip = peer
        .and_then(|p| p.0)
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let client = g.client(peer_ip, headers);
    g.admit(client, items).map_err(|r| {
        let msg = format!("rate limited ({}): retry later", r.reason.label());
        let mut resp = error(format, StatusCode::TOO_MANY_REQUESTS, 8, &msg);
        if let Ok(v) = HeaderValue::from_str(&r.retry_after.as_secs().max(1).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    })?;
    Ok(body)
}
