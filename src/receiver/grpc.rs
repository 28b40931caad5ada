//! OTLP/gRPC receiver. The request message reaches the pipeline as raw bytes
//! (a full prost decode of every span would cost more than everything else
//! the sidecar does): the unary call is read here rather than by tonic's
//! codec machinery, so the message is taken straight from the HTTP/2 DATA
//! frame that holds it, or assembled once at its exact length, and the
//! common answer comes from a static buffer. Responses are
//! opentelemetry-proto's prost types. The three services are routed by path
//! like tonic's generated servers; tonic still serves HTTP/2 (`main.rs`).

use super::admit::{Held, Limit, Transport};
use super::encoding::{self, DecodeError, Encoding};
use super::listen::GrpcConnInfo;
use super::stats::BadRequest;
use super::{Accepted, Pipeline, Rejection};
use crate::base::SignalKind;
use crate::derive::config::Source;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Code, Status};

/// Which OTLP service a [`OtlpService`] serves.
pub trait Signal: Send + Sync + 'static {
    const NAME: &'static str;
    const PATH: &'static str;
    type Response: Message + Default + Send + 'static;
    fn respond(acc: Accepted) -> Self::Response;
    fn handle(
        p: Arc<Pipeline>,
        body: Bytes,
    ) -> impl std::future::Future<Output = Result<Accepted, Rejection>> + Send;
}

pub struct Traces;
pub struct Logs;
pub struct Metrics;

impl Signal for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    type Response = ExportTraceServiceResponse;
    fn respond(_: Accepted) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: None,
        }
    }
    async fn handle(p: Arc<Pipeline>, body: Bytes) -> Result<Accepted, Rejection> {
        let stats = &p.stats.grpc;
        p.spans_or_logs(SignalKind::Spans, body, stats, Source::App)
            .await
    }
}

impl Signal for Logs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    type Response = ExportLogsServiceResponse;
    fn respond(acc: Accepted) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: (acc.rejected > 0).then_some(ExportLogsPartialSuccess {
                rejected_log_records: acc.rejected as i64,
                error_message: acc.message,
            }),
        }
    }
    async fn handle(p: Arc<Pipeline>, body: Bytes) -> Result<Accepted, Rejection> {
        let stats = &p.stats.grpc;
        p.spans_or_logs(SignalKind::LogRecords, body, stats, Source::App)
            .await
    }
}

impl Signal for Metrics {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    type Response = ExportMetricsServiceResponse;
    fn respond(acc: Accepted) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: (acc.rejected > 0).then_some(ExportMetricsPartialSuccess {
                rejected_data_points: acc.rejected as i64,
                error_message: acc.message,
            }),
        }
    }
    async fn handle(p: Arc<Pipeline>, body: Bytes) -> Result<Accepted, Rejection> {
        let stats = &p.stats.grpc;
        p.metrics(body, stats).await
    }
}

/// The gRPC status for a rejection.
pub fn status_of(r: Rejection) -> Status {
    match r {
        Rejection::Invalid(m) => Status::invalid_argument(m),
        Rejection::Unavailable(refusal) => {
            // google.rpc.RetryInfo in grpc-status-details-bin, as the OTLP spec asks.
            let details = crate::rpc_status::status_with_retry_info(
                Code::Unavailable as i32,
                &refusal.reason,
                refusal.retry_after,
            );
            Status::with_details(Code::Unavailable, refusal.reason, details.into())
        }
    }
}

/// One OTLP gRPC service over raw bytes.
pub struct OtlpService<S: Signal> {
    pipeline: Arc<Pipeline>,
    max_message_bytes: usize,
    _s: PhantomData<S>,
}

impl<S: Signal> Clone for OtlpService<S> {
    fn clone(&self) -> Self {
        OtlpService {
            pipeline: self.pipeline.clone(),
            max_message_bytes: self.max_message_bytes,
            _s: PhantomData,
        }
    }
}

impl<S: Signal> OtlpService<S> {
    pub fn new(pipeline: Arc<Pipeline>, max_message_bytes: usize) -> Self {
        OtlpService {
            pipeline,
            max_message_bytes,
            _s: PhantomData,
        }
    }
}

impl<S: Signal> NamedService for OtlpService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: Signal, B> tower::Service<http::Request<B>> for OtlpService<S>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let pipeline = self.pipeline.clone();
        let max = self.max_message_bytes;
        if req.uri().path() != S::PATH {
            return Box::pin(
                async move { Ok(Status::unimplemented("no such method").into_http()) },
            );
        }
        let enc = match request_encoding(req.headers()) {
            Ok(enc) => enc,
            Err(e) => {
                pipeline
                    .stats
                    .grpc
                    .bad_request(signal_of::<S>(), BadRequest::Encoding);
                return Box::pin(async move { Ok(advertise(unsupported(&e).into_http())) });
            }
        };
        // the connection's share of the in-flight budget, moved out (tonic
        // cloned it for this request), else the budget alone
        let share = req.extensions_mut().remove::<GrpcConnInfo>();
        Box::pin(async move {
            let held = match share.and_then(|c| c.share) {
                Some(s) => s.hold(),
                None => pipeline.in_flight.hold(),
            };
            let res = match message(req.into_body(), enc, max, held).await {
                // the request's bytes stay taken until it is answered
                Ok((body, _held)) => match S::handle(pipeline, body).await {
                    Ok(acc) => ok_response(S::respond(acc)),
                    Err(r) => status_of(r).into_http(),
                },
                Err(Unread::Bad(why, status)) => {
                    pipeline.stats.grpc.bad_request(signal_of::<S>(), why);
                    status.into_http()
                }
                Err(Unread::Busy(limit)) => {
                    let sig = signal_of::<S>();
                    let refusal = pipeline.in_flight.refuse(Transport::Grpc, sig, limit);
                    status_of(Rejection::Unavailable(refusal)).into_http()
                }
                Err(Unread::Other(status)) => status.into_http(),
            };
            Ok(advertise(res))
        })
    }
}

/// Why a request's message could not be read.
enum Unread {
    /// A bad request, counted: too large, a corrupt compressed message.
    Bad(BadRequest, Status),
    /// `receivers.max_in_flight_bytes`, or the connection's share of it, is
    /// held by other requests: refused, retryable, counted by the budget.
    Busy(Limit),
    /// The stream broke or ended early (not counted, as tonic did not).
    Other(Status),
}

/// The one message of a unary request, decompressed: the 5-byte gRPC
/// prefix, then the message, taken without a copy when it arrives in one
/// DATA frame (the receiver's HTTP/2 max frame size makes that the common
/// case), else assembled once into a buffer of its exact length. Larger
/// than `max` before or after decompression: RESOURCE_EXHAUSTED.
/// The message's bytes are taken into `held` (the connection's share and
/// the budget) as soon as its length prefix is read (before it is
/// buffered), the inflated ones instead after decompression.
async fn message<B>(body: B, enc: Encoding, max: usize, held: Held) -> Result<(Bytes, Held), Unread>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (flag, msg, mut held) = framed(body, max, held).await?;
    match (flag, enc) {
        (0, _) => Ok((msg, held)),
        (1, Encoding::Identity) => Err(Unread::Other(Status::internal(
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
        ))),
        (1, enc) => {
            let out = inflate(enc, &msg, max)?;
            drop(msg);
            held.release();
            held.grow(out.len()).map_err(Unread::Busy)?;
            Ok((out, held))
        }
        (f, _) => Err(Unread::Other(Status::internal(format!(
            "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1)"
        )))),
    }
}

/// A compressed message inflated within `max`.
fn inflate(enc: Encoding, msg: &[u8], max: usize) -> Result<Bytes, Unread> {
    encoding::decode(enc, msg, max).map_err(|e| match e {
        DecodeError::TooLarge => too_large(max),
        // a zstd frame asking for a window beyond what the limit needs
        // is refused before allocation: too large, as tonic said
        DecodeError::Invalid(m) if m.contains("too much memory") => too_large(max),
        DecodeError::Invalid(m) => Unread::Bad(
            BadRequest::Encoding,
            Status::internal(format!("Error decompressing: {m}")),
        ),
    })
}

fn too_large(max: usize) -> Unread {
    Unread::Bad(
        BadRequest::TooLarge,
        Status::resource_exhausted(format!(
            "request larger than receivers.otlp_grpc.max_message_bytes ({max} bytes, after decompression)"
        )),
    )
}

/// The compressed flag and the bytes of the first length-prefixed message;
/// the rest of the body (a well-behaved client sends nothing more) is read
/// and dropped.
async fn framed<B>(body: B, max: usize, mut held: Held) -> Result<(u8, Bytes, Held), Unread>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut head = [0u8; 5];
    let mut have = 0usize;
    let mut msg: Option<(u8, usize, Vec<u8>)> = None;
    let mut done: Option<(u8, Bytes)> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Unread::Other(Status::from_error(e.into())))?;
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers
        };
        if done.is_some() {
            continue;
        }
        let mut data = data.copy_to_bytes(data.remaining());
        if let Some((_, len, buf)) = msg.as_mut() {
            let take = (*len - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..take]);
            if buf.len() == *len {
                done = msg.take().map(|(flag, _, b)| (flag, Bytes::from(b)));
            }
            continue;
        }
        let n = (5 - have).min(data.len());
        head[have..have + n].copy_from_slice(&data[..n]);
        have += n;
        data.advance(n);
        if have < 5 {
            continue;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > max {
            return Err(too_large(max));
        }
        held.grow(len).map_err(Unread::Busy)?;
        if data.len() >= len {
            done = Some((head[0], data.split_to(len)));
        } else {
            // the claimed length is taken from the budget already: one
            // allocation of exactly that size, never regrown (a realloc
            // would copy what arrived again); pages the client never fills
            // are never touched, so RSS stays at what was sent
            let mut buf = Vec::with_capacity(len);
            buf.extend_from_slice(&data);
            msg = Some((head[0], len, buf));
        }
    }
    match done {
        Some((flag, m)) => Ok((flag, m, held)),
        None => Err(Unread::Other(Status::internal(if have == 0 {
            "Missing request message."
        } else {
            "Unexpected EOF decoding stream."
        }))),
    }
}

/// The empty OTLP response (no partial success) as a gRPC message: the
/// common answer, sent from a static buffer.
static EMPTY_MESSAGE: [u8; 5] = [0; 5];

/// A 200 carrying `m` and `grpc-status: 0` in the trailers.
fn ok_response<R: Message>(m: R) -> http::Response<Body> {
    let len = m.encoded_len();
    let data = if len == 0 {
        Bytes::from_static(&EMPTY_MESSAGE)
    } else {
        let mut buf = BytesMut::with_capacity(5 + len);
        buf.put_u8(0);
        buf.put_u32(len as u32);
        // cannot fail: the buffer has room for encoded_len bytes
        let _ = m.encode(&mut buf);
        buf.freeze()
    };
    let mut trailers = http::HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let mut res = http::Response::new(Body::new(UnaryBody {
        data: Some(data),
        trailers: Some(trailers),
    }));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    res
}

/// A unary response body: one data frame, then the trailers.
struct UnaryBody {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(d) = this.data.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        Poll::Ready(
            this.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }
    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

fn signal_of<S: Signal>() -> SignalKind {
    match S::PATH {
        Traces::PATH => SignalKind::Spans,
        Logs::PATH => SignalKind::LogRecords,
        _ => SignalKind::MetricPoints,
    }
}

/// The `grpc-encoding`s accepted (identity aside), as advertised in
/// `grpc-accept-encoding`: what the SDKs and the Collector send (grpc-python
/// and grpc-js: gzip and deflate; grpc-java and grpc-go: gzip; the
/// Collector's exporter: gzip and zstd; its `snappy` is not accepted).
pub const GRPC_ENCODINGS: &str = "gzip,deflate,zstd";

/// The request's `grpc-encoding`; Err names one the sidecar does not decode.
fn request_encoding(h: &http::HeaderMap) -> Result<Encoding, String> {
    match h.get("grpc-encoding").map(|v| v.as_bytes()) {
        None | Some(b"identity") => Ok(Encoding::Identity),
        Some(b"gzip") => Ok(Encoding::Gzip),
        Some(b"deflate") => Ok(Encoding::Deflate),
        Some(b"zstd") => Ok(Encoding::Zstd),
        Some(v) => Err(String::from_utf8_lossy(v).into_owned()),
    }
}

/// UNIMPLEMENTED naming the supported encodings, as the gRPC compression
/// spec asks (the header tells a client what to use instead).
fn unsupported(enc: &str) -> Status {
    Status::unimplemented(format!(
        "grpc-encoding {enc:?} is not supported: supported are {GRPC_ENCODINGS},identity"
    ))
}

/// Every answer advertises the encodings the sidecar accepts.
fn advertise(mut res: http::Response<Body>) -> http::Response<Body> {
    res.headers_mut().insert(
        "grpc-accept-encoding",
        http::HeaderValue::from_static(GRPC_ENCODINGS),
    );
    res
}
