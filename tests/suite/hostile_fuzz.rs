//! Property test of the exposition: whatever OTLP a client sends, every
//! `/metrics` format parses. A seeded generator builds hostile metrics,
//! spans and logs (names, keys, values, NaN/Inf/negative numbers, bucket
//! bounds, sizes, clashing names, invalid UTF-8), sends them over gRPC and
//! HTTP to a real sidecar, and after each batch scrapes both formats and
//! checks them strictly (tests/common/strict.rs: the spec checker,
//! promtool and prometheus_client's parsers).
//!
//! The seed is printed; `GEOMETRA_FUZZ_SEED` replays one and
//! `GEOMETRA_FUZZ_ROUNDS` (default 30) sets the number of batches.

use crate::common;

use common::{send_raw, strict, Sidecar, LOGS, METRICS, TRACES};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile, ExponentialHistogram, ExponentialHistogramDataPoint,
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// Bytes that stand for invalid UTF-8: replaced in the encoded request by
/// as many bytes that are not UTF-8, so every length prefix stays right.
const BAD_UTF8: &str = "\u{1}BADUTF8\u{1}";

const NAMES: &[&str] = &[
    "",
    "!!!",
    "___",
    "_",
    ":",
    "0starts_with_digit",
    "http.server.duration",
    "memory.size",
    "process_cpu_seconds",
    "process.cpu.seconds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "target_info",
    "target",
    "otelcol_receiver_accepted_spans",
    "geometra_sidecar_build_info",
    "geometra_sidecar_series",
    "http_requests_total",
    "http_request_duration_seconds",
    "http_request_duration_seconds_bucket",
    "ai_tokens",
    "hs",
    "hs_count",
    "hs_bucket",
    "hs_sum",
    "hs_created",
    "jobs",
    "jobs_total",
    "jobs_created",
    "x_info",
    "ñame.with.ümlauts",
    "name with spaces",
    "__name__",
    "a{b=\"c\"}",
    "line\nbreak",
    BAD_UTF8,
];

const KEYS: &[&str] = &[
    "",
    "le",
    "quantile",
    "__name__",
    "__reserved",
    "_x",
    "job",
    "instance",
    "otel_metric_overflow",
    "otel_scope_name",
    "0digit",
    "a.b",
    "a_b",
    "key_",
    "key_le",
    "ünï",
    "k\"ey",
    "k\ney",
    "k}ey",
    "http.route",
    "http.request.method",
    "gen_ai.operation.name",
    "memory.operation",
    "user.id",
    BAD_UTF8,
];

const UNITS: &[&str] = &[
    "",
    "s",
    "ms",
    "By",
    "1",
    "{req}",
    "By/s",
    "%",
    "weird unit!",
    "}{",
    "_",
    "seconds",
];

struct Gen {
    rng: fastrand::Rng,
}

impl Gen {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.usize(..from.len())]
    }

    fn junk(&mut self, max: usize) -> String {
        const CH: &[char] = &[
            'a', 'Z', '0', '_', '.', ':', '"', '\\', '\n', '\r', '\t', '{', '}', ',', '=', ' ',
            '#', 'é', '\u{0}', '\u{7f}', '\u{feff}', '😀',
        ];
        let n = self.rng.usize(..=max);
        (0..n).map(|_| CH[self.rng.usize(..CH.len())]).collect()
    }

    fn name(&mut self) -> String {
        if self.rng.u8(..4) == 0 {
            self.junk(12)
        } else {
            self.pick(NAMES).to_string()
        }
    }

    fn key(&mut self) -> String {
        if self.rng.u8(..4) == 0 {
            self.junk(8)
        } else {
            self.pick(KEYS).to_string()
        }
    }

    fn text(&mut self) -> String {
        match self.rng.u8(..12) {
            0 => "v".repeat(65_536),
            1 => "w".repeat(self.rng.usize(1000..70_000)),
            2 => BAD_UTF8.to_string(),
            3 => "/api/memory/{id}".to_string(),
            _ => self.junk(16),
        }
    }

    fn number(&mut self) -> f64 {
        match self.rng.u8(..10) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => -5.0,
            4 => 1e308,
            5 => -0.0,
            6 => f64::MIN_POSITIVE,
            _ => (self.rng.f64() - 0.3) * 1000.0,
        }
    }

    fn value(&mut self) -> AnyValue {
        let v = match self.rng.u8(..8) {
            0 => any_value::Value::IntValue(self.rng.i64(..)),
            1 => any_value::Value::DoubleValue(self.number()),
            2 => any_value::Value::BoolValue(self.rng.bool()),
            3 => any_value::Value::BytesValue(vec![0xff, 0, 0x80]),
            4 => any_value::Value::ArrayValue(Default::default()),
            _ => any_value::Value::StringValue(self.text()),
        };
        AnyValue { value: Some(v) }
    }

    fn attrs(&mut self) -> Vec<KeyValue> {
        let n = match self.rng.u8(..20) {
            0 => 300,
            _ => self.rng.usize(..5),
        };
        (0..n)
            .map(|_| KeyValue {
                key: self.key(),
                value: Some(self.value()),
                ..Default::default()
            })
            .collect()
    }

    fn number_point(&mut self) -> NumberDataPoint {
        let value = if self.rng.bool() {
            number_data_point::Value::AsDouble(self.number())
        } else {
            number_data_point::Value::AsInt(self.rng.i64(-10..1000))
        };
        NumberDataPoint {
            attributes: self.attrs(),
            value: Some(value),
            ..Default::default()
        }
    }

    fn bounds(&mut self) -> Vec<f64> {
        match self.rng.u8(..8) {
            0 => vec![f64::NAN],
            1 => vec![f64::INFINITY],
            2 => vec![f64::NEG_INFINITY, 0.0],
            3 => vec![2.0, 1.0],
            4 => vec![1.0, 1.0],
            5 => vec![-1.0, 0.5],
            _ => vec![0.1, 1.0, 10.0],
        }
    }

    fn hist_point(&mut self) -> HistogramDataPoint {
        let bounds = self.bounds();
        let n = match self.rng.u8(..6) {
            0 => self.rng.usize(..4),
            _ => bounds.len() + 1,
        };
        let counts: Vec<u64> = (0..n)
            .map(|_| match self.rng.u8(..8) {
                0 => u64::MAX,
                1 => u64::MAX / 2 + 1,
                _ => self.rng.u64(..100),
            })
            .collect();
        let count = if self.rng.u8(..4) == 0 {
            self.rng.u64(..)
        } else {
            counts.iter().fold(0u64, |a, b| a.wrapping_add(*b))
        };
        HistogramDataPoint {
            attributes: self.attrs(),
            explicit_bounds: bounds,
            bucket_counts: counts,
            count,
            sum: Some(self.number()),
            ..Default::default()
        }
    }

    /// Bucket counts: mostly small, sometimes huge or wide.
    fn counts(&mut self) -> Vec<u64> {
        let n = match self.rng.u8(..10) {
            0 => self.rng.usize(..20_000),
            1 => 0,
            _ => self.rng.usize(1..12),
        };
        (0..n)
            .map(|_| match self.rng.u8(..12) {
                0 => u64::MAX,
                1 => u64::MAX / 2 + 1,
                _ => self.rng.u64(..50),
            })
            .collect()
    }

    fn exp_point(&mut self) -> ExponentialHistogramDataPoint {
        let side = |g: &mut Self| {
            let offset = match g.rng.u8(..8) {
                0 => i32::MAX,
                1 => i32::MIN,
                _ => g.rng.i32(-300..300),
            };
            Buckets {
                offset,
                bucket_counts: g.counts(),
            }
        };
        let (pos, neg) = (side(self), side(self));
        let zero_count = self.rng.u64(..10);
        let count = if self.rng.u8(..4) == 0 {
            self.rng.u64(..)
        } else {
            pos.bucket_counts
                .iter()
                .chain(&neg.bucket_counts)
                .fold(zero_count, |a, b| a.wrapping_add(*b))
        };
        ExponentialHistogramDataPoint {
            attributes: self.attrs(),
            scale: self.rng.i32(-10..25),
            zero_count,
            count,
            sum: Some(self.number()),
            zero_threshold: if self.rng.bool() { 0.0 } else { self.number() },
            positive: Some(pos),
            negative: Some(neg),
            ..Default::default()
        }
    }

    fn summary_point(&mut self) -> SummaryDataPoint {
        let n = self.rng.usize(..6);
        SummaryDataPoint {
            attributes: self.attrs(),
            count: self.rng.u64(..),
            sum: self.number(),
            quantile_values: (0..n)
                .map(|_| ValueAtQuantile {
                    quantile: if self.rng.bool() {
                        self.rng.f64()
                    } else {
                        self.number()
                    },
                    value: self.number(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn metric(&mut self) -> Metric {
        let n = self.rng.usize(1..4);
        let temporality = self.rng.i32(0..3);
        let data = match self.rng.u8(..12) {
            0..=2 => metric::Data::Gauge(Gauge {
                data_points: (0..n).map(|_| self.number_point()).collect(),
            }),
            3..=5 => metric::Data::Sum(Sum {
                data_points: (0..n).map(|_| self.number_point()).collect(),
                aggregation_temporality: temporality,
                is_monotonic: self.rng.bool(),
            }),
            6..=8 => metric::Data::Histogram(Histogram {
                data_points: (0..n).map(|_| self.hist_point()).collect(),
                aggregation_temporality: temporality,
            }),
            9 | 10 => metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: (0..n).map(|_| self.exp_point()).collect(),
                aggregation_temporality: temporality,
            }),
            _ => metric::Data::Summary(Summary {
                data_points: (0..n).map(|_| self.summary_point()).collect(),
            }),
        };
        Metric {
            name: self.name(),
            description: self.junk(20),
            unit: self.pick(UNITS).to_string(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn resource(&mut self) -> Option<Resource> {
        let mut attributes = self.attrs();
        // the keys job and instance come from (instance: else host and pid)
        for key in [
            "service.name",
            "service.instance.id",
            "host.name",
            "process.pid",
        ] {
            if self.rng.bool() {
                attributes.push(KeyValue {
                    key: key.into(),
                    value: Some(self.value()),
                    ..Default::default()
                });
            }
        }
        Some(Resource {
            attributes,
            ..Default::default()
        })
    }

    fn metrics(&mut self) -> Vec<u8> {
        let scope = InstrumentationScope {
            name: self.junk(10),
            version: self.text(),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: self.resource(),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope),
                    metrics: (0..self.rng.usize(1..8)).map(|_| self.metric()).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn span(&mut self) -> Span {
        let mut attributes = self.attrs();
        for k in [
            "http.route",
            "http.request.method",
            "http.response.status_code",
            "gen_ai.operation.name",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "memory.operation",
            "user.id",
        ] {
            if self.rng.bool() {
                attributes.push(KeyValue {
                    key: k.into(),
                    value: Some(self.value()),
                    ..Default::default()
                });
            }
        }
        let start = self.rng.u64(..2_000_000_000);
        Span {
            trace_id: vec![7; 16],
            span_id: vec![9; 8],
            kind: self.rng.i32(0..7),
            start_time_unix_nano: start,
            end_time_unix_nano: start.wrapping_add(self.rng.u64(..5_000_000_000)),
            attributes,
            ..Default::default()
        }
    }

    fn spans(&mut self) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: self.resource(),
                scope_spans: vec![ScopeSpans {
                    spans: (0..self.rng.usize(1..20)).map(|_| self.span()).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn logs(&mut self) -> Vec<u8> {
        let rec = |g: &mut Gen| {
            let body = match g.rng.u8(..3) {
                0 => format!(
                    "{{\"event\": \"memory_operation\", \"operation\": {:?}, \"status\": {:?}}}",
                    g.text(),
                    g.junk(6)
                ),
                1 => g.text(),
                _ => "{\"event\": \"memory_operation\", \"operation\": [1]}".into(),
            };
            LogRecord {
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(body)),
                }),
                attributes: g.attrs(),
                severity_number: g.rng.i32(0..25),
                ..Default::default()
            }
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: self.resource(),
                scope_logs: vec![ScopeLogs {
                    log_records: (0..self.rng.usize(1..10)).map(|_| rec(self)).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }
}

/// Replaces every `BAD_UTF8` placeholder by bytes that are not UTF-8.
fn poison(mut buf: Vec<u8>) -> Vec<u8> {
    let pat = BAD_UTF8.as_bytes();
    let mut i = 0;
    while i + pat.len() <= buf.len() {
        if &buf[i..i + pat.len()] == pat {
            for b in &mut buf[i..i + pat.len()] {
                *b = 0xff;
            }
            i += pat.len();
        } else {
            i += 1;
        }
    }
    buf
}

async fn send_http(sc: &Sidecar, path: &str, body: Vec<u8>) {
    let _ = reqwest::Client::new()
        .post(format!("http://{}{path}", sc.http))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("the OTLP/HTTP receiver answers");
}

/// What an HTTP client can send in a header at all (visible ASCII, spaces).
fn header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}

/// The browser listener, with junk a stranger may add: a forged client
/// address, a token that is not one, an origin.
async fn send_browser(g: &mut Gen, port: u16, path: &str, body: Vec<u8>) {
    let mut r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/x-protobuf");
    if g.rng.bool() {
        let xff = format!("{}, 10.0.0.{}", g.junk(40), g.rng.u8(..));
        r = r.header("x-forwarded-for", header_safe(&xff));
    }
    if g.rng.bool() {
        r = r.header(
            "authorization",
            header_safe(&format!("Bearer {}", g.name())),
        );
    }
    if g.rng.bool() {
        r = r.header("origin", "https://app.geometra.ai");
    }
    // a body past the listener's limit is refused before it is read, and
    // the client may then fail writing the rest (broken pipe): the scrape
    // after each round is what proves the sidecar alive
    let _ = r.body(body).send().await;
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_otlp_never_breaks_either_exposition_format() {
    let seed = env_u64("GEOMETRA_FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..));
    let rounds = env_u64("GEOMETRA_FUZZ_ROUNDS").unwrap_or(30);
    println!("hostile_fuzz seed {seed} (GEOMETRA_FUZZ_SEED={seed} replays it), {rounds} rounds");
    let mut g = Gen {
        rng: fastrand::Rng::with_seed(seed),
    };
    let browser = common::free_port();
    let cfg = format!(
        "store:\n  max_series_per_metric: 50\n  histograms: both\nreceivers:\n  browser:\n    listen: 127.0.0.1:{browser}\n    cors_allowed_origins: [\"https://app.geometra.ai\"]\n    trusted_proxies: [127.0.0.1]\n    max_body_bytes: 4194304\n"
    );
    let sc = Sidecar::start(&cfg).await;
    for round in 0..rounds {
        for _ in 0..3 {
            let (grpc_path, http_path, body) = match g.rng.u8(..3) {
                0 => (METRICS, "/v1/metrics", g.metrics()),
                1 => (TRACES, "/v1/traces", g.spans()),
                _ => (LOGS, "/v1/logs", g.logs()),
            };
            let body = poison(body);
            match g.rng.u8(..3) {
                // refusals (invalid UTF-8) are fine; a dead sidecar is not
                0 => drop(send_raw(&sc.grpc_url(), grpc_path, body, false).await),
                1 => send_http(&sc, http_path, body).await,
                _ => send_browser(&mut g, browser, http_path, body).await,
            }
        }
        let text = sc.scrape_text().await;
        let om = sc.scrape_openmetrics().await;
        if let Err(e) = strict::check_all(&text, &om) {
            panic!("seed {seed}, round {round}: /metrics is broken: {e}");
        }
    }
}
