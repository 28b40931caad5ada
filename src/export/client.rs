//! The OTLP exporters' transports: OTLP/gRPC (tonic, raw request bytes) and
//! OTLP/HTTP (protobuf, gzip), and the classification of their outcomes into
//! delivered (possibly partially), retryable and permanent, after the OTLP
//! specification and opentelemetry-rust's retry classification.
//!
//! HTTP client: reqwest (with rustls). It is the most used, well-kept Rust
//! HTTP client, already in the tree as a dev-dependency, and gives custom CAs,
//! client certificates, timeouts and connection pooling without the TLS and
//! pool plumbing that hyper-util's legacy client leaves to the caller.

use crate::config::{Compression, Endpoint, Protocol};
use crate::metrics::SignalKind;
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tonic::{Code, Status};

/// What the downstream said about a delivered request.
#[derive(Debug, Default, PartialEq)]
pub struct Delivered {
    pub rejected: u64,
    pub message: String,
}

#[derive(Debug, PartialEq)]
pub enum Failure {
    /// Try again, after the server's hint when it gave one.
    Retryable {
        after: Option<Duration>,
        msg: String,
    },
    /// Never retried: counted and dropped.
    Permanent(String),
    /// Never retried: the downstream refused the data itself (gRPC
    /// INVALID_ARGUMENT, HTTP 400 or 413), so a batch of several requests is
    /// split to find the one refused.
    Rejected(String),
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

/// `google.rpc.RetryInfo`'s delay, when `details` (a `google.rpc.Status`) has one.
pub fn retry_info(details: &[u8]) -> Option<Duration> {
    crate::rpc_status::retry_delay(details)
}

/// The OTLP/gRPC classification: UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED,
/// ABORTED, OUT_OF_RANGE and DATA_LOSS are retryable; RESOURCE_EXHAUSTED only
/// with RetryInfo (the server says it can recover); everything else is
/// permanent. A transport error (no connection) is retryable.
pub fn classify_grpc(status: &Status) -> Failure {
    let hint = retry_info(status.details());
    let msg = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Failure::Retryable { after: hint, msg },
        Code::ResourceExhausted if hint.is_some() => Failure::Retryable { after: hint, msg },
        Code::InvalidArgument => Failure::Rejected(msg),
        // tonic reports its own transport failures as UNKNOWN with a source
        Code::Unknown if std::error::Error::source(status).is_some() => {
            Failure::Retryable { after: None, msg }
        }
        _ => Failure::Permanent(msg),
    }
}

/// The OTLP/HTTP classification: 429, 502, 503 and 504 are retryable
/// (honouring Retry-After); other non-2xx answers are permanent.
pub fn classify_http(status: u16, retry_after: Option<&str>, body: &str) -> Failure {
    let msg = format!(
        "HTTP {status}: {}",
        body.chars().take(200).collect::<String>()
    );
    match status {
        429 | 502 | 503 | 504 => Failure::Retryable {
            after: retry_after.and_then(parse_retry_after),
            msg,
        },
        400 | 413 => Failure::Rejected(msg),
        _ => Failure::Permanent(msg),
    }
}

/// Retry-After: delay-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let t = httpdate_parse(v)?;
    Some(
        t.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    let p: Vec<&str> = v.split_whitespace().collect();
    if p.len() != 6 || p[5] != "GMT" {
        return None;
    }
    let day: u64 = p[1].parse().ok()?;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == p[2])? as u64 + 1;
    let year: u64 = p[3].parse().ok()?;
    let hms: Vec<u64> = p[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 || year < 1970 {
        return None;
    }
    // days from civil (Howard Hinnant's algorithm)
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A bearer token read from a file, re-read at most once a minute (mounted
/// secrets rotate).
pub struct Token {
    path: PathBuf,
    cached: RwLock<(Instant, String)>,
}

impl Token {
    fn load(path: &PathBuf) -> Result<String, String> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("cannot read bearer_token_file {}: {e}", path.display()))
    }
    fn get(&self) -> String {
        {
            let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
            if c.0.elapsed() < Duration::from_secs(60) {
                return c.1.clone();
            }
        }
        let mut c = self.cached.write().unwrap_or_else(|p| p.into_inner());
        match Token::load(&self.path) {
            Ok(t) => *c = (Instant::now(), t),
            Err(e) => {
                tracing::warn!(error = %e, "keeping the previous bearer token");
                c.0 = Instant::now();
            }
        }
        c.1.clone()
    }
}

pub enum Client {
    Grpc {
        channel: tonic::transport::Channel,
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

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

impl Client {
    pub fn new(ep: &Endpoint, sig: SignalKind) -> Result<Client, String> {
        let (proto, url) = resolve(ep, sig);
        let where_ = format!("forward.{}", signal_path(sig));
        let token = match &ep.bearer_token_file {
            Some(p) => Some(Arc::new(Token {
                path: p.clone(),
                cached: RwLock::new((Instant::now(), Token::load(p)?)),
            })),
            None => None,
        };
        let gzip = ep.compression == Compression::Gzip;
        let timeout = ep.timeout.0;
        match proto {
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|e| format!("{where_}.endpoint {url:?}: {e}"))?
                    .connect_timeout(timeout.min(Duration::from_secs(5)))
                    .timeout(timeout)
                    .tcp_nodelay(true);
                if url.starts_with("https://") || ep.tls.is_some() {
                    let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
                    if let Some(t) = &ep.tls {
                        if let Some(ca) = &t.ca_file {
                            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(
                                read(ca, "tls.ca_file")?,
                            ));
                        }
                        match (&t.cert_file, &t.key_file) {
                            (Some(c), Some(k)) => {
                                tls = tls.identity(tonic::transport::Identity::from_pem(
                                    read(c, "tls.cert_file")?,
                                    read(k, "tls.key_file")?,
                                ))
                            }
                            (None, None) => {}
                            _ => {
                                return Err(format!(
                                    "{where_}.tls: cert_file and key_file go together"
                                ))
                            }
                        }
                    }
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| format!("{where_}.tls: {e}"))?;
                }
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &ep.headers {
                    let key =
                        tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                            .map_err(|e| format!("{where_}.headers: {k:?}: {e}"))?;
                    let val = v
                        .parse()
                        .map_err(|e| format!("{where_}.headers.{k}: {e}"))?;
                    metadata.insert(key, val);
                }
                let path = format!(
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
                );
                Ok(Client::Grpc {
                    channel: endpoint.connect_lazy(),
                    path: http::uri::PathAndQuery::try_from(path)
                        .map_err(|e| format!("{where_}: {e}"))?,
                    metadata,
                    gzip,
                    timeout,
                    token,
                })
            }
            Protocol::Http => {
                let mut b = reqwest::Client::builder()
                    .use_rustls_tls()
                    .timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(5)))
                    .pool_idle_timeout(Duration::from_secs(60));
                if let Some(t) = &ep.tls {
                    if let Some(ca) = &t.ca_file {
                        for c in reqwest::Certificate::from_pem_bundle(&read(ca, "tls.ca_file")?)
                            .map_err(|e| format!("{where_}.tls.ca_file: {e}"))?
                        {
                            b = b.add_root_certificate(c);
                        }
                    }
                    match (&t.cert_file, &t.key_file) {
                        (Some(c), Some(k)) => {
                            let mut pem = read(c, "tls.cert_file")?;
                            pem.push(b'\n');
                            pem.extend_from_slice(&read(k, "tls.key_file")?);
                            b = b.identity(
                                reqwest::Identity::from_pem(&pem)
                                    .map_err(|e| format!("{where_}.tls: {e}"))?,
                            );
                        }
                        (None, None) => {}
                        _ => {
                            return Err(format!("{where_}.tls: cert_file and key_file go together"))
                        }
                    }
                }
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &ep.headers {
                    let key = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| format!("{where_}.headers: {k:?}: {e}"))?;
                    let val = reqwest::header::HeaderValue::from_str(v)
                        .map_err(|e| format!("{where_}.headers.{k}: {e}"))?;
                    headers.insert(key, val);
                }
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    reqwest::header::HeaderValue::from_static("application/x-protobuf"),
                );
                b = b.default_headers(headers);
                Ok(Client::Http {
                    client: b.build().map_err(|e| format!("{where_}: {e}"))?,
                    url,
                    gzip,
                    token,
                })
            }
        }
    }

    /// Sends one request body.
    pub async fn send(&self, body: Bytes) -> Result<Delivered, Failure> {
        match self {
            Client::Grpc {
                channel,
                path,
                metadata,
                gzip,
                timeout,
                token,
            } => {
                let mut channel = channel.clone();
                std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx))
                    .await
                    .map_err(|e| Failure::Retryable {
                        after: None,
                        msg: format!("gRPC connection: {e}"),
                    })?;
                let req = grpc_request(path, metadata, token.as_deref(), *gzip, *timeout, &body)?;
                let resp = tower::Service::call(&mut channel, req).await.map_err(|e| {
                    Failure::Retryable {
                        after: None,
                        msg: format!("gRPC transport: {e}"),
                    }
                })?;
                grpc_response(resp).await
            }
            Client::Http {
                client,
                url,
                gzip,
                token,
            } => {
                let mut req = client.post(url.as_str());
                if *gzip {
                    req = req
                        .header(reqwest::header::CONTENT_ENCODING, "gzip")
                        .body(gzip_fast(&body));
                } else {
                    req = req.body(body);
                }
                if let Some(t) = token {
                    req = req.bearer_auth(t.get());
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
                let bytes = resp.bytes().await.unwrap_or_default();
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
                ))
            }
        }
    }
}

/// A gRPC unary request framed by hand (5-byte prefix, message compressed
/// here): tonic compresses at gzip level 6 and cannot be told otherwise, and
/// compression was most of the forwarder's CPU.
fn grpc_request(
    path: &http::uri::PathAndQuery,
    metadata: &tonic::metadata::MetadataMap,
    token: Option<&Token>,
    gzip: bool,
    timeout: Duration,
    body: &[u8],
) -> Result<http::Request<tonic::body::Body>, Failure> {
    let compressed;
    let msg: &[u8] = if gzip {
        compressed = gzip_fast(body);
        &compressed
    } else {
        body
    };
    let mut frame = BytesMut::with_capacity(5 + msg.len());
    frame.put_u8(gzip as u8);
    frame.put_u32(msg.len() as u32);
    frame.put_slice(msg);
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
        .body(tonic::body::Body::new(http_body_util::Full::new(
            frame.freeze(),
        )))
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
    if let Some(t) = token {
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {}", t.get())) {
            headers.insert(http::header::AUTHORIZATION, v);
        }
    }
    Ok(req)
}

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
    let collected = body.collect().await.map_err(|e| Failure::Retryable {
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
    let data = collected.to_bytes();
    let Some(len) = data
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return Ok(Delivered::default());
    };
    let Some(msg) = data.get(5..5 + len as usize) else {
        return Ok(Delivered::default());
    };
    let decoded = if data[0] == 1 {
        let mut out = Vec::new();
        let mut d = std::io::Read::take(flate2::read::GzDecoder::new(msg), 1 << 20);
        match std::io::Read::read_to_end(&mut d, &mut out) {
            Ok(_) => ExportResponse::decode(out.as_slice()),
            Err(_) => return Ok(Delivered::default()),
        }
    } else {
        ExportResponse::decode(msg)
    };
    Ok(decoded.map(Delivered::from).unwrap_or_default())
}

/// gzip at level 1: most of the size win for a fraction of the CPU of level 6.
fn gzip_fast(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(b.len() / 3 + 64),
        flate2::Compression::fast(),
    );
    // writing into a Vec cannot fail
    let _ = e.write_all(b);
    e.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

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
    fn grpc_classification_follows_the_spec() {
        for c in [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert!(matches!(
                classify_grpc(&Status::new(c, "x")),
                Failure::Retryable { .. }
            ));
        }
        assert!(matches!(
            classify_grpc(&Status::new(Code::InvalidArgument, "x")),
            Failure::Rejected(_)
        ));
        for c in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Unimplemented,
            Code::Internal,
            Code::ResourceExhausted,
        ] {
            assert!(
                matches!(classify_grpc(&Status::new(c, "x")), Failure::Permanent(_)),
                "{c:?}"
            );
        }
    }

    #[test]
    fn resource_exhausted_with_retry_info_is_retried_after_its_delay() {
        // google.rpc.Status { details: [Any { RetryInfo { 3s } }] }, built by hand
        #[derive(Clone, PartialEq, Message)]
        struct D {
            #[prost(int64, tag = "1")]
            s: i64,
        }
        #[derive(Clone, PartialEq, Message)]
        struct Ri {
            #[prost(message, optional, tag = "1")]
            d: Option<D>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct Any {
            #[prost(string, tag = "1")]
            t: String,
            #[prost(bytes = "vec", tag = "2")]
            v: Vec<u8>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct St {
            #[prost(int32, tag = "1")]
            code: i32,
            #[prost(message, repeated, tag = "3")]
            details: Vec<Any>,
        }
        let details = St {
            code: 8,
            details: vec![Any {
                t: "type.googleapis.com/google.rpc.RetryInfo".into(),
                v: Ri {
                    d: Some(D { s: 3 }),
                }
                .encode_to_vec(),
            }],
        }
        .encode_to_vec();
        let s = Status::with_details(Code::ResourceExhausted, "slow down", details.into());
        assert_eq!(
            classify_grpc(&s),
            Failure::Retryable {
                after: Some(Duration::from_secs(3)),
                msg: "gRPC ResourceExhausted: slow down".into()
            }
        );
    }

    #[test]
    fn http_classification_and_retry_after() {
        assert_eq!(
            classify_http(429, Some("7"), ""),
            Failure::Retryable {
                after: Some(Duration::from_secs(7)),
                msg: "HTTP 429: ".into()
            }
        );
        for s in [502, 503, 504] {
            assert!(matches!(
                classify_http(s, None, ""),
                Failure::Retryable { after: None, .. }
            ));
        }
        for s in [401, 403, 404, 500] {
            assert!(matches!(classify_http(s, None, ""), Failure::Permanent(_)));
        }
        for s in [400, 413] {
            assert!(matches!(classify_http(s, None, ""), Failure::Rejected(_)));
        }
        let past = classify_http(503, Some("Sun, 06 Nov 1994 08:49:37 GMT"), "");
        assert!(matches!(past, Failure::Retryable { after: Some(d), .. } if d.is_zero()));
        assert_eq!(
            httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(std::time::UNIX_EPOCH + Duration::from_secs(784111777))
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
