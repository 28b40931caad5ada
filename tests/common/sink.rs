//! A downstream OTLP receiver for tests: the three OTLP/gRPC services, or
//! OTLP/HTTP (protobuf, gzip or not), recording every request; log records
//! are counted by their `seq` attribute, and the logs service can be switched
//! to fail (unavailable, invalid, partial success, poison) or to be slow.

use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;

/// Logs answered UNAVAILABLE.
pub const UNAVAILABLE: u8 = 1;
/// Logs answered INVALID_ARGUMENT.
pub const INVALID: u8 = 2;
/// Logs taken with a partial success (2 rejected).
pub const PARTIAL: u8 = 3;
/// Refuses (INVALID_ARGUMENT) any request holding a record whose body is
/// "POISON", as a collector refuses a batch it cannot take; takes the rest.
pub const POISON: u8 = 4;

/// Everything the sink received, as it arrived.
#[derive(Clone, Default)]
pub struct Sink {
    /// log records by their `seq` attribute: how many times each arrived
    pub seen: Arc<Mutex<HashMap<String, u32>>>,
    pub records: Arc<Mutex<Vec<LogRecord>>>,
    /// logs requests, whatever their answer
    pub requests: Arc<AtomicU64>,
    pub mode: Arc<AtomicU8>,
    pub delay_ms: Arc<AtomicU64>,
    pub traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    pub logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
    pub metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

/// The `seq` attributes of a request's log records.
pub fn seqs_of(req: &ExportLogsServiceRequest) -> Vec<String> {
    req.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .filter_map(|lr| attr(&lr.attributes, "seq").map(str::to_string))
        .collect()
}

pub fn has_poison(req: &ExportLogsServiceRequest) -> bool {
    req.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .any(|lr| {
            matches!(&lr.body, Some(AnyValue { value: Some(Value::StringValue(b)) }) if b == "POISON")
        })
}

/// A string attribute's value.
pub fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    kvs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// A resource's `service.name`.
pub fn service(r: &Option<Resource>) -> String {
    resource_attr(r, "service.name").unwrap_or_default()
}

pub fn resource_attr(r: &Option<Resource>, key: &str) -> Option<String> {
    r.as_ref()
        .and_then(|r| attr(&r.attributes, key))
        .map(String::from)
}

impl Sink {
    pub fn has_all(&self, want: &HashSet<String>) -> bool {
        let seen = self.seen.lock().expect("lock");
        want.iter().all(|s| seen.contains_key(s))
    }

    pub fn missing(&self, want: &HashSet<String>) -> usize {
        let seen = self.seen.lock().expect("lock");
        want.iter().filter(|s| !seen.contains_key(*s)).count()
    }

    /// Waits until every seq in `want` arrived.
    pub async fn wait_all(&self, want: &HashSet<String>, within: Duration) {
        let t = Instant::now();
        while !self.has_all(want) {
            assert!(
                t.elapsed() < within,
                "{} of {} acknowledged records never arrived",
                self.missing(want),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (10s at most) until `f` holds.
    pub async fn wait(&self, what: &str, f: impl Fn(&Sink) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f(self) {
            assert!(Instant::now() < deadline, "the sink never got {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Records an accepted logs request.
    pub fn note(&self, req: &ExportLogsServiceRequest) {
        let mut seen = self.seen.lock().expect("lock");
        for s in seqs_of(req) {
            *seen.entry(s).or_default() += 1;
        }
        let mut recs = self.records.lock().expect("lock");
        for rl in &req.resource_logs {
            for sl in &rl.scope_logs {
                recs.extend(sl.log_records.iter().cloned());
            }
        }
        self.logs.lock().expect("lock").push(req.clone());
    }

    /// The logs service's answer in the current mode (the request recorded
    /// when it is taken).
    async fn take_logs(
        &self,
        req: ExportLogsServiceRequest,
    ) -> Result<ExportLogsServiceResponse, tonic::Status> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let d = self.delay_ms.load(Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        match self.mode.load(Ordering::SeqCst) {
            UNAVAILABLE => Err(tonic::Status::unavailable("down for maintenance")),
            INVALID => Err(tonic::Status::invalid_argument("schema says no")),
            POISON if has_poison(&req) => {
                Err(tonic::Status::invalid_argument("record body POISON"))
            }
            PARTIAL => {
                self.note(&req);
                Ok(ExportLogsServiceResponse {
                    partial_success: Some(ExportLogsPartialSuccess {
                        rejected_log_records: 2,
                        error_message: "two records too old".into(),
                    }),
                })
            }
            _ => {
                self.note(&req);
                Ok(ExportLogsServiceResponse::default())
            }
        }
    }

    /// (service.name, span name) of every span.
    pub fn span_names(&self) -> Vec<(String, String)> {
        let t = self.traces.lock().expect("lock");
        t.iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| {
                let svc = service(&rs.resource);
                rs.scope_spans
                    .iter()
                    .flat_map(|s| &s.spans)
                    .map(move |s| (svc.clone(), s.name.clone()))
            })
            .collect()
    }

    /// (service.name, scope name, body) of every log record.
    pub fn log_records(&self) -> Vec<(String, String, String)> {
        let l = self.logs.lock().expect("lock");
        let mut out = Vec::new();
        for rl in l.iter().flat_map(|r| &r.resource_logs) {
            for sl in &rl.scope_logs {
                let scope = sl.scope.as_ref().map(|s| s.name.clone());
                for r in &sl.log_records {
                    let body = match r.body.as_ref().and_then(|b| b.value.as_ref()) {
                        Some(Value::StringValue(s)) => s.clone(),
                        _ => String::new(),
                    };
                    let scope = scope.clone().unwrap_or_default();
                    out.push((service(&rl.resource), scope, body));
                }
            }
        }
        out
    }

    /// The latest value of a sum with these attributes, and the resource's
    /// service.name of the request that carried it.
    pub fn sum(&self, name: &str, attrs: &[(&str, &str)]) -> Option<(String, f64)> {
        let m = self.metrics.lock().expect("lock");
        let mut last = None;
        for rm in m.iter().flat_map(|r| &r.resource_metrics) {
            for x in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                let (true, Some(metric::Data::Sum(s))) = (x.name == name, &x.data) else {
                    continue;
                };
                for p in &s.data_points {
                    if attrs
                        .iter()
                        .all(|(k, v)| attr(&p.attributes, k) == Some(*v))
                    {
                        let v = match p.value {
                            Some(number_data_point::Value::AsInt(i)) => i as f64,
                            Some(number_data_point::Value::AsDouble(d)) => d,
                            None => f64::NAN,
                        };
                        last = Some((service(&rm.resource), v));
                    }
                }
            }
        }
        last
    }

    /// Serves the three OTLP/gRPC services on a free port for the rest of
    /// the test; returns the port.
    pub async fn start(&self) -> u16 {
        let port = super::free_port();
        std::mem::forget(Downstream::start(self, port).await);
        port
    }

    /// Serves OTLP/HTTP (`/v1/traces`, `/v1/logs`, `/v1/metrics`) on a free
    /// port for the rest of the test; returns the port.
    pub async fn start_http(&self) -> u16 {
        let port = super::free_port();
        std::mem::forget(Downstream::start_http(self, port).await);
        port
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().expect("lock").push(req.into_inner());
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.take_logs(req.into_inner())
            .await
            .map(tonic::Response::new)
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().expect("lock").push(req.into_inner());
        Ok(tonic::Response::new(Default::default()))
    }
}

/// A running downstream; `stop` (or the end of the test) takes it down.
pub struct Downstream {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Binds `port`, retrying for 10 s (a restarted downstream rebinds it).
async fn bind(port: u16) -> tokio::net::TcpListener {
    let t = Instant::now();
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(10), "rebind {port}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Downstream {
    /// OTLP/gRPC (gzip accepted and sent) on `port`.
    pub async fn start(sink: &Sink, port: u16) -> Downstream {
        let l = bind(port).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let gz = CompressionEncoding::Gzip;
        let logs = LogsServiceServer::new(sink.clone())
            .accept_compressed(gz)
            .send_compressed(gz);
        let traces = TraceServiceServer::new(sink.clone()).accept_compressed(gz);
        let metrics = MetricsServiceServer::new(sink.clone()).accept_compressed(gz);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(logs)
                .add_service(traces)
                .add_service(metrics)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(l),
                    async {
                        let _ = rx.await;
                    },
                )
                .await;
        });
        Downstream {
            stop: Some(tx),
            task,
        }
    }

    /// OTLP/HTTP with protobuf bodies (gzip or not) on `port`.
    pub async fn start_http(sink: &Sink, port: u16) -> Downstream {
        use axum::routing::post;
        let l = bind(port).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .route("/v1/traces", post(http_traces))
            .route("/v1/logs", post(http_logs))
            .route("/v1/metrics", post(http_metrics))
            .with_state(sink.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Downstream {
            stop: Some(tx),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
    }
}

type HttpAnswer = (StatusCode, [(&'static str, &'static str); 1], Vec<u8>);

/// An OTLP/HTTP protobuf body, inflated when gzip-encoded.
fn http_decode<M: Message + Default>(headers: &HeaderMap, body: &[u8]) -> Result<M, String> {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let mut raw = Vec::new();
    let bytes = if gzip {
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut raw)
            .map_err(|e| format!("gzip: {e}"))?;
        &raw[..]
    } else {
        body
    };
    M::decode(bytes).map_err(|e| format!("protobuf: {e}"))
}

fn http_answer<R: Message>(r: Result<R, (StatusCode, String)>) -> HttpAnswer {
    match r {
        Ok(resp) => (
            StatusCode::OK,
            [("content-type", "application/x-protobuf")],
            resp.encode_to_vec(),
        ),
        Err((code, msg)) => (code, [("content-type", "text/plain")], msg.into_bytes()),
    }
}

type St = axum::extract::State<Sink>;

async fn http_traces(st: St, headers: HeaderMap, body: axum::body::Bytes) -> HttpAnswer {
    let bad = |m| (StatusCode::BAD_REQUEST, m);
    http_answer(http_decode(&headers, &body).map_err(bad).map(|req| {
        st.0.traces.lock().expect("lock").push(req);
        ExportTraceServiceResponse::default()
    }))
}

async fn http_metrics(st: St, headers: HeaderMap, body: axum::body::Bytes) -> HttpAnswer {
    let bad = |m| (StatusCode::BAD_REQUEST, m);
    http_answer(http_decode(&headers, &body).map_err(bad).map(|req| {
        st.0.metrics.lock().expect("lock").push(req);
        ExportMetricsServiceResponse::default()
    }))
}

async fn http_logs(st: St, headers: HeaderMap, body: axum::body::Bytes) -> HttpAnswer {
    let req = match http_decode(&headers, &body) {
        Ok(r) => r,
        Err(m) => {
            return http_answer::<ExportLogsServiceResponse>(Err((StatusCode::BAD_REQUEST, m)))
        }
    };
    let res = st.0.take_logs(req).await.map_err(|s| {
        let code = match s.code() {
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        (code, s.message().to_string())
    });
    http_answer(res)
}
