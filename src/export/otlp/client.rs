//! The OTLP exporters' transports: OTLP/gRPC (tonic, raw request bytes) and
//! OTLP/HTTP (protobuf, gzip), and what the downstream answered: delivered
//! (possibly partially) or a [`Failure`] classified by [`crate::export::retry`].
//! The HTTP client is built by [`crate::export::http`].

use super::config::{Compression, Endpoint, Protocol};
use super::piece::{self, Rec};
use crate::base::SignalKind;
use crate::export::auth::Token;
use crate::export::http::read;
pub use crate::export::retry::Failure;
use crate::export::retry::{classify_grpc, classify_http, HttpRetry};
use bytes::Bytes;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Status};

/// What the downstream said about a delivered request.
#[derive(Debug, Default, PartialEq)]
pub struct Delivered {
    pub rejected: u64,
    pub message: String,
}

/// `Export*ServiceResponse`: all three share this layout (field 1 partial
/// success: rejected count, error message).
#[derive(Clone, PartialEq, Message)]
pub struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<PartialSuccess>,
}
#[derive(Clone, PartialEq, Message)]
pub struct PartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

impl From<ExportResponse> for Delivered {
    fn from(r: ExportResponse) -> Self {
        match r.partial_success {
            Some(p) => Delivered {
                rejected: p.rejected.max(0) as u64,
                message: p.error_message,
            },
            None => Delivered::default(),
        }
    }
}

/// A gRPC channel that can be replaced: a request that got no answer in
/// its timeout may have been sent on a connection that no longer carries
/// anything (a peer gone without a reset: a network path torn down, a host
/// that died; the channel keeps such a connection, and every retry on it
/// would time out too), so the next attempt gets a new one.
pub struct GrpcConn {
    endpoint: tonic::transport::Endpoint,
    channel: std::sync::Mutex<tonic::transport::Channel>,
}

impl GrpcConn {
    fn current(&self) -> tonic::transport::Channel {
        match self.channel.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Drops the channel (its connection closes when no request uses it)
    /// for a new one, connected at the next request.
    fn renew(&self) {
        let fresh = self.endpoint.connect_lazy();
        match self.channel.lock() {
            Ok(mut c) => *c = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
    }
}

pub enum Client {
    Grpc {
        conn: Box<GrpcConn>,
        path: http::uri::PathAndQuery,
        metadata: tonic::metadata::MetadataMap,
        gzip: bool,
        timeout: Duration,
        token: Option<Arc<Token>>,
    },
    Http {
        client: reqwest::Client,
        url: String,
        gzip: bool,
        token: Option<Arc<Token>>,
    },
}

fn signal_path(sig: SignalKind) -> &'static str {
    match sig {
        SignalKind::Spans => "traces",
        SignalKind::LogRecords => "logs",
        SignalKind::MetricPoints => "metrics",
    }
}

/// The transport and URL: the configured protocol, else OTLP/HTTP when the
/// path ends in `/v1/<signal>`, else gRPC. An OTLP/HTTP endpoint without that
/// path gets it appended, as OTLP exporters do.
pub fn resolve(ep: &Endpoint, sig: SignalKind) -> (Protocol, String) {
    let suffix = format!("/v1/{}", signal_path(sig));
    let url = ep.endpoint.trim_end_matches('/');
    let proto = ep.protocol.unwrap_or(if url.ends_with(&suffix) {
        Protocol::Http
    } else {
        Protocol::Grpc
    });
    match proto {
        Protocol::Http if !url.ends_with(&suffix) => (proto, format!("{url}{suffix}")),
        _ => (proto, url.to_string()),
    }
}

impl Client {
    pub fn new(ep: &Endpoint, sig: SignalKind) -> Result<Client, String> {
        let (proto, url) = resolve(ep, sig);
        let where_ = format!("forward.{}", signal_path(sig));
        let token = match &ep.bearer_token_file {
            Some(p) => Some(Arc::new(Token::new(p)?)),
            None => None,
        };
        let gzip = ep.compression == Compression::Gzip;
        let timeout = ep.timeout.0;
        match proto {
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|e| format!("{where_}.endpoint {url:?}: {e}"))?
                    // no per-call `.timeout`: tonic's ends at the response
                    // headers; `send` bounds the whole exchange instead
                    .connect_timeout(timeout.min(Duration::from_secs(5)))
                    .tcp_nodelay(true);
                if url.starts_with("https://") || ep.tls.is_some() {
                    endpoint = endpoint
                        .tls_config(grpc_tls(ep, &where_)?)
                        .map_err(|e| format!("{where_}.tls: {e}"))?;
                }
                let metadata = grpc_metadata(ep, &where_)?;
                Ok(Client::Grpc {
                    conn: Box::new(GrpcConn {
                        channel: std::sync::Mutex::new(endpoint.connect_lazy()),
                        endpoint,
                    }),
                    path: http::uri::PathAndQuery::try_from(grpc_path(sig))
                        .map_err(|e| format!("{where_}: {e}"))?,
                    metadata,
                    gzip,
                    timeout,
                    token,
                })
            }
            Protocol::Http => {
                let client = crate::export::http::client(
                    &where_,
                    ep.tls.as_ref(),
                    timeout,
                    &ep.headers,
                    &[(reqwest::header::CONTENT_TYPE, "application/x-protobuf")],
                )?;
                Ok(Client::Http {
                    client,
                    url,
                    gzip,
                    token,
                })
            }
        }
    }

    /// Whether requests go gzip-compressed.
    pub fn gzip(&self) -> bool {
        match self {
            Client::Grpc { gzip, .. } | Client::Http { gzip, .. } => *gzip,
        }
    }

    /// Sends one request: the records' bodies concatenated.
    pub async fn send(&self, body: &[Rec]) -> Result<Delivered, Failure> {
        match self {
            Client::Grpc {
                conn,
                path,
                metadata,
                gzip,
                timeout,
                token,
            } => {
                let call = grpc_call(conn, path, metadata, token.as_ref(), *gzip, *timeout, body);
                match tokio::time::timeout(*timeout, call).await {
                    Ok(r) => r,
                    Err(_) => {
                        conn.renew();
                        Err(Failure::Retryable {
                            after: None,
                            msg: format!("gRPC: no whole answer within {timeout:?} (the next attempt gets a new connection)"),
                        })
                    }
                }
            }
            Client::Http {
                client,
                url,
                gzip,
                token,
            } => send_http(client, url, *gzip, token.as_ref(), body).await,
        }
    }
}

/// One gRPC exchange: the channel's readiness, the request, the response's
/// headers, body and trailers. [`Client::send`] bounds the whole of it by the
/// timeout: tonic's own timeout ends at the response headers, and a
/// downstream that sends them and then stalls the body would hold the
/// attempt (and the connection) for ever.
async fn grpc_call(
    conn: &GrpcConn,
    path: &http::uri::PathAndQuery,
    metadata: &tonic::metadata::MetadataMap,
    token: Option<&Arc<Token>>,
    gzip: bool,
    timeout: Duration,
    body: &[Rec],
) -> Result<Delivered, Failure> {
    let mut channel = conn.current();
    std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx))
        .await
        .map_err(|e| Failure::Retryable {
            after: None,
            msg: format!("gRPC connection: {e}"),
        })?;
    let bearer = match token {
        Some(t) => Some(t.current().await),
        None => None,
    };
    let req = grpc_request(path, metadata, bearer.as_deref(), gzip, timeout, body)?;
    let resp = tower::Service::call(&mut channel, req)
        .await
        .map_err(|e| Failure::Retryable {
            after: None,
            msg: format!("gRPC transport: {e}"),
        })?;
    grpc_response(resp).await
}

/// The gRPC client's TLS: webpki roots, plus the configured CA and client
/// certificate.
fn grpc_tls(ep: &Endpoint, where_: &str) -> Result<tonic::transport::ClientTlsConfig, String> {
    let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
    let Some(t) = &ep.tls else {
        return Ok(tls);
    };
    if let Some(ca) = &t.ca_file {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(
            ca,
            "tls.ca_file",
        )?));
    }
    match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(c, "tls.cert_file")?,
                read(k, "tls.key_file")?,
            ))
        }
        (None, None) => {}
        _ => return Err(format!("{where_}.tls: cert_file and key_file go together")),
    }
    Ok(tls)
}

/// The configured headers as gRPC metadata (keys lowercased).
fn grpc_metadata(ep: &Endpoint, where_: &str) -> Result<tonic::metadata::MetadataMap, String> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (k, v) in &ep.headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|e| format!("{where_}.headers: {k:?}: {e}"))?;
        let val = v
            .parse()
            .map_err(|e| format!("{where_}.headers.{k}: {e}"))?;
        metadata.insert(key, val);
    }
    Ok(metadata)
}

/// The OTLP/gRPC method path of a signal's `Export`.
fn grpc_path(sig: SignalKind) -> String {
    format!(
        "/opentelemetry.proto.collector.{s}.v1.{S}Service/Export",
        s = match sig {
            SignalKind::Spans => "trace",
            _ => signal_path(sig),
        },
        S = match sig {
            SignalKind::Spans => "Trace",
            SignalKind::LogRecords => "Logs",
            SignalKind::MetricPoints => "Metrics",
        }
    )
}

/// Sends one request body over OTLP/HTTP.
async fn send_http(
    client: &reqwest::Client,
    url: &str,
    gzip: bool,
    token: Option<&Arc<Token>>,
    body: &[Rec],
) -> Result<Delivered, Failure> {
    let mut req = client.post(url);
    if gzip {
        req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
    }
    req = req.body(encode(body, gzip, Vec::new())?);
    if let Some(t) = token {
        req = req.bearer_auth(t.current().await);
    }
    let resp = req.send().await.map_err(|e| Failure::Retryable {
        after: None,
        msg: format!("HTTP request: {e}"),
    })?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_proto = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    let bytes = body_prefix(resp, MAX_RESPONSE).await;
    if (200..300).contains(&status) {
        if is_proto {
            return Ok(ExportResponse::decode(bytes.as_ref())
                .map(Delivered::from)
                .unwrap_or_default());
        }
        return Ok(Delivered::default());
    }
    Err(classify_http(
        status,
        retry_after.as_deref(),
        &String::from_utf8_lossy(&bytes),
        HttpRetry::Otlp,
    ))
}

/// The first `limit` bytes of a response body: an export response is a few
/// bytes, an error page not much more; the rest is not read into memory.
/// A body that fails partway gives what came before.
async fn body_prefix(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(limit - out.len())]),
            _ => break,
        }
    }
    out
}

/// The records' bodies concatenated, appended to `out`: one gzip member
/// (pieces as they are, see [`piece`]) or uncompressed (pieces inflated).
fn encode(body: &[Rec], gzip: bool, out: Vec<u8>) -> Result<Vec<u8>, Failure> {
    let res = if gzip {
        piece::gzip(body, out)
    } else {
        piece::plain(body, out)
    };
    res.map_err(|e| Failure::Permanent(format!("cannot encode a queued request: {e}")))
}

/// A gRPC unary request framed by hand (5-byte prefix, message compressed
/// here): tonic compresses at gzip level 6 and cannot be told otherwise, and
/// compression was most of the forwarder's CPU.
fn grpc_request(
    path: &http::uri::PathAndQuery,
    metadata: &tonic::metadata::MetadataMap,
    bearer: Option<&str>,
    gzip: bool,
    timeout: Duration,
    body: &[Rec],
) -> Result<http::Request<tonic::body::Body>, Failure> {
    // the 5-byte prefix, then the message straight after it
    let mut f = encode(body, gzip, vec![gzip as u8, 0, 0, 0, 0])?;
    let len = (f.len() - 5) as u32;
    f[1..5].copy_from_slice(&len.to_be_bytes());
    let frame = Bytes::from(f);
    let mut b = http::Request::builder()
        .method(http::Method::POST)
        .uri(path.as_str())
        .version(http::Version::HTTP_2)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header("grpc-accept-encoding", "gzip")
        .header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)));
    if gzip {
        b = b.header("grpc-encoding", "gzip");
    }
    let mut req = b
        .body(tonic::body::Body::new(http_body_util::Full::new(frame)))
        .map_err(|e| Failure::Permanent(format!("building the gRPC request: {e}")))?;
    let headers = req.headers_mut();
    for kv in metadata.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_str().as_bytes()),
                http::HeaderValue::from_bytes(v.as_encoded_bytes()),
            ) {
                headers.insert(k, v);
            }
        }
    }
    if let Some(t) = bearer {
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {t}")) {
            headers.insert(http::header::AUTHORIZATION, v);
        }
    }
    Ok(req)
}

/// The largest response body read (gRPC's default receive limit).
const MAX_RESPONSE: usize = 4 << 20;

/// Reads a gRPC unary response: status from the headers (trailers-only) or
/// the trailers, the message (maybe gzip-compressed) from the body.
async fn grpc_response(resp: http::Response<tonic::body::Body>) -> Result<Delivered, Failure> {
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let mut status_ok = false;
    if let Some(st) = Status::from_header_map(&parts.headers) {
        if st.code() != Code::Ok {
            return Err(classify_grpc(&st));
        }
        status_ok = true;
    }
    if !parts.status.is_success() {
        // the gRPC spec's HTTP-to-gRPC mapping: 429/502/503/504 → UNAVAILABLE
        let code = match parts.status.as_u16() {
            429 | 502 | 503 | 504 => Code::Unavailable,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            _ => Code::Unknown,
        };
        return Err(classify_grpc(&Status::new(
            code,
            format!("HTTP {} from a gRPC endpoint", parts.status),
        )));
    }
    // an export response is a few bytes; a body past gRPC's default receive
    // limit is no answer (and is not kept in memory)
    let collected = http_body_util::Limited::new(body, MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| Failure::Retryable {
            after: None,
            msg: format!("gRPC response: {e}"),
        })?;
    if let Some(st) = collected.trailers().and_then(Status::from_header_map) {
        if st.code() != Code::Ok {
            return Err(classify_grpc(&st));
        }
        status_ok = true;
    }
    if !status_ok {
        // a gRPC response must end with a status; without one (a proxy's
        // page, say) nothing says the data arrived: the gRPC spec's UNKNOWN
        return Err(classify_grpc(&Status::unknown(
            "response without grpc-status (not a gRPC server?)",
        )));
    }
    Ok(grpc_message(&collected.to_bytes()))
}

/// The partial success in a gRPC response body (a 5-byte prefix, then the
/// message, gzip-compressed if the flag is 1); nothing if it cannot be read.
fn grpc_message(data: &[u8]) -> Delivered {
    let Some(len) = data
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return Delivered::default();
    };
    let Some(msg) = data.get(5..5 + len as usize) else {
        return Delivered::default();
    };
    let decoded = if data[0] == 1 {
        let mut out = Vec::new();
        let mut d = std::io::Read::take(flate2::read::GzDecoder::new(msg), 1 << 20);
        match std::io::Read::read_to_end(&mut d, &mut out) {
            Ok(_) => ExportResponse::decode(out.as_slice()),
            Err(_) => return Delivered::default(),
        }
    } else {
        ExportResponse::decode(msg)
    };
    decoded.map(Delivered::from).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::Dur;

    fn ep(url: &str) -> Endpoint {
        Endpoint {
            endpoint: url.into(),
            protocol: None,
            headers: Default::default(),
            bearer_token_file: None,
            timeout: Dur(Duration::from_secs(1)),
            compression: Compression::Gzip,
            tls: None,
        }
    }

    #[test]
    fn scheme_and_path_pick_the_transport() {
        let l = SignalKind::LogRecords;
        assert_eq!(
            resolve(&ep("http://gw:4317"), l),
            (Protocol::Grpc, "http://gw:4317".into())
        );
        assert_eq!(
            resolve(&ep("http://loki:3100/otlp/v1/logs"), l),
            (Protocol::Http, "http://loki:3100/otlp/v1/logs".into())
        );
        let mut e = ep("https://gw:4318/");
        e.protocol = Some(Protocol::Http);
        assert_eq!(
            resolve(&e, SignalKind::Spans),
            (Protocol::Http, "https://gw:4318/v1/traces".into())
        );
    }

    #[test]
    fn partial_success_decodes_from_every_signal_response() {
        use opentelemetry_proto::tonic::collector::logs::v1::*;
        let r = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 4,
                error_message: "bad".into(),
            }),
        };
        let d: Delivered = ExportResponse::decode(r.encode_to_vec().as_slice())
            .expect("decodes")
            .into();
        assert_eq!(
            d,
            Delivered {
                rejected: 4,
                message: "bad".into()
            }
        );
    }
}
