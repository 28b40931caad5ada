//! OTLP/gRPC receiver. The request message reaches the pipeline as raw bytes
//! through [`RawCodec`] (a full prost decode of every span would cost more
//! than everything else the sidecar does); responses are opentelemetry-proto's
//! prost types. The three services are routed by path like tonic's generated
//! servers, which always decode.

use super::{Accepted, Pipeline, Rejection};
use crate::metrics::SignalKind;
use bytes::{Buf, Bytes};
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
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};

/// Decodes nothing: hands the message bytes over as they are.
pub struct RawCodec<R>(PhantomData<R>);
impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}
pub struct RawDecoder;
pub struct ProstEncoder<R>(PhantomData<R>);

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl<R: Message> Encoder for ProstEncoder<R> {
    type Item = R;
    type Error = Status;
    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

impl<R: Message + Send + 'static> Codec for RawCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ProstEncoder<R>;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

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
        let stats = &p.store().grpc;
        p.spans_or_logs(SignalKind::Spans, body, stats).await
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
        let stats = &p.store().grpc;
        p.spans_or_logs(SignalKind::LogRecords, body, stats).await
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
        let stats = &p.store().grpc;
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

struct Unary<S: Signal> {
    pipeline: Arc<Pipeline>,
    _s: PhantomData<S>,
}

impl<S: Signal> UnaryService<Bytes> for Unary<S> {
    type Response = S::Response;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<tonic::Response<S::Response>, Status>> + Send>,
    >;
    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let p = self.pipeline.clone();
        Box::pin(async move {
            match S::handle(p, req.into_inner()).await {
                Ok(acc) => Ok(tonic::Response::new(S::respond(acc))),
                Err(r) => Err(status_of(r)),
            }
        })
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let pipeline = self.pipeline.clone();
        let max = self.max_message_bytes;
        if req.uri().path() != S::PATH {
            return Box::pin(
                async move { Ok(Status::unimplemented("no such method").into_http()) },
            );
        }
        if let Some(e) = unsupported_encoding(req.headers()) {
            pipeline.store().grpc.bad_request(signal_of::<S>());
            return Box::pin(async move { Ok(advertise(unsupported(&e).into_http())) });
        }
        Box::pin(async move {
            let mut grpc = Grpc::new(RawCodec::<S::Response>::default())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Deflate)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(max);
            let stats = pipeline.clone();
            let svc = Unary::<S> {
                pipeline,
                _s: PhantomData,
            };
            let res = grpc.unary(svc, req).await;
            Ok(advertise(refused_by_tonic::<S>(res, max, &stats)))
        })
    }
}

/// Answers tonic gave before the message reached the pipeline, counted as
/// bad requests: too large (tonic says OUT_OF_RANGE for the frame length;
/// the OTLP contract, and every other collector, RESOURCE_EXHAUSTED) and a
/// corrupt compressed message (INTERNAL, as the gRPC compression spec asks).
fn refused_by_tonic<S: Signal>(
    res: http::Response<Body>,
    max: usize,
    p: &Pipeline,
) -> http::Response<Body> {
    let h = |k: &str| res.headers().get(k).and_then(|v| v.to_str().ok());
    let code = h("grpc-status").and_then(|v| v.parse::<i32>().ok());
    if code == Some(Code::OutOfRange as i32) || code == Some(Code::ResourceExhausted as i32) {
        p.store().grpc.bad_request(signal_of::<S>());
        return Status::resource_exhausted(format!(
            "request larger than receivers.otlp_grpc.max_message_bytes ({max} bytes, after decompression)"
        ))
        .into_http();
    }
    let corrupt = h("grpc-message").is_some_and(|m| m.starts_with("Error%20decompressing"));
    if code == Some(Code::Internal as i32) && corrupt {
        p.store().grpc.bad_request(signal_of::<S>());
    }
    res
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

/// The request's `grpc-encoding` when it is one the sidecar does not decode.
fn unsupported_encoding(h: &http::HeaderMap) -> Option<String> {
    let v = h.get("grpc-encoding")?;
    let ok = matches!(v.as_bytes(), b"identity" | b"gzip" | b"deflate" | b"zstd");
    (!ok).then(|| String::from_utf8_lossy(v.as_bytes()).into_owned())
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
