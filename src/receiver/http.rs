//! OTLP/HTTP receiver: `/v1/traces`, `/v1/logs`, `/v1/metrics` with protobuf
//! or JSON bodies, gzip, deflate or zstd (`encoding.rs`), a body limit that
//! also bounds decompression, and CORS for browsers (`cors.rs`). JSON is a
//! cold path: it is decoded with opentelemetry-proto's serde types and
//! re-encoded to protobuf, so the same pipeline serves both.

use super::admit::{Held, Limit, Transport};
use super::config::OtlpHttp;
use super::cors::Cors;
use super::encoding::{self, DecodeError, Encoding, SUPPORTED};
use super::grpc::{Logs, Metrics, Signal, Traces};
use super::stats::BadRequest;
use super::{Accepted, Pipeline, Rejection};
use crate::base::{Live, SignalKind};
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
}

/// The OTLP/HTTP routes; `cors` is the policy in force (see `crate::reload`).
pub fn router(pipeline: Arc<Pipeline>, cfg: &OtlpHttp, cors: Arc<Live<Cors>>) -> Router {
    let max_body = cfg.max_body_bytes;
    let st = HttpState {
        pipeline,
        max_body,
        cors,
    };
    Router::new()
        .route("/v1/traces", post(traces).options(preflight))
        .route("/v1/logs", post(logs).options(preflight))
        .route("/v1/metrics", post(metrics).options(preflight))
        .with_state(st)
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
            st.pipeline.stats.http.bad_request(sig, why);
            return Err(with_cors(r, origin));
        }
    };
    let p = &st.pipeline;
    let res = match sig {
        SignalKind::MetricPoints => p.metrics(body, &p.stats.http).await,
        _ => p.spans_or_logs(sig, body, &p.stats.http).await,
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
    let http = &st.pipeline.stats.http;
    let r = match e {
        Unread::TooLarge => {
            http.bad_request(sig, BadRequest::TooLarge);
            let msg = format!(
                "request body larger than receivers.otlp_http.max_body_bytes ({} bytes)",
                st.max_body
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
async fn export<J, S>(st: HttpState, headers: HeaderMap, body: Body, sig: SignalKind) -> Response
where
    J: serde::de::DeserializeOwned + Message,
    S: Signal,
    S::Response: serde::Serialize,
{
    // the CORS policy is read once per request
    let origin = st.cors.load().allowed_origin(&headers);
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
    match run(st, origin.clone(), sig, parsed).await {
        Ok((f, a)) => with_cors(respond(f, S::respond(a)), origin),
        Err(r) => r,
    }
}

async fn traces(State(st): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    export::<ExportTraceServiceRequest, Traces>(st, headers, body, SignalKind::Spans).await
}

async fn logs(State(st): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    export::<ExportLogsServiceRequest, Logs>(st, headers, body, SignalKind::LogRecords).await
}

async fn metrics(State(st): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    export::<ExportMetricsServiceRequest, Metrics>(st, headers, body, SignalKind::MetricPoints)
        .await
}
