//! A seeded generator of valid OTLP requests that reach every field the
//! walker reads or skips (keys the default rules read among others), and of
//! mutations of them: shared by the validator's tests (against prost) and
//! the one-pass test (the walk against the validator, `receiver`'s tests).
//! Seeded, so a failure replays.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

/// An encoded logs request holding `records` under one resource and scope
/// (the fixed requests of the derive and validator tests).
pub(crate) fn log_request(records: Vec<LogRecord>) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A seeded generator of valid requests that reach every field the walker
/// reads or skips (keys the default rules read among others).
pub(crate) struct G(pub(crate) fastrand::Rng);

impl G {
    pub(crate) fn n(&mut self, max: usize) -> usize {
        self.0.usize(0..=max)
    }
    pub(crate) fn s(&mut self) -> String {
        const PARTS: &[&str] = &["a", "/api", "é", "日本", "\u{1F600}", " ", "\0", "GET"];
        (0..self.n(4))
            .map(|_| PARTS[self.n(PARTS.len() - 1)])
            .collect()
    }
    pub(crate) fn key(&mut self) -> String {
        const KEYS: &[&str] = &[
            "http.route",
            "http.request.method",
            "http.response.status_code",
            "service.name",
            "gen_ai.operation.name",
            "event",
            "message",
        ];
        match self.0.bool() {
            true => KEYS[self.n(KEYS.len() - 1)].into(),
            false => self.s(),
        }
    }
    pub(crate) fn b(&mut self) -> Vec<u8> {
        (0..self.n(16)).map(|_| self.0.u8(..)).collect()
    }
    pub(crate) fn any(&mut self, depth: u32) -> AnyValue {
        let pick = if depth == 0 { self.n(4) } else { self.n(6) };
        let v = match pick {
            0 => Value::StringValue(self.s()),
            1 => Value::IntValue(self.0.i64(..)),
            2 => Value::DoubleValue(f64::from_bits(self.0.u64(..))),
            3 => Value::BoolValue(self.0.bool()),
            4 => Value::BytesValue(self.b()),
            5 => Value::ArrayValue(ArrayValue {
                values: (0..self.n(3)).map(|_| self.any(depth - 1)).collect(),
            }),
            _ => Value::KvlistValue(KeyValueList {
                values: self.attrs(depth - 1),
            }),
        };
        AnyValue { value: Some(v) }
    }
    pub(crate) fn attrs(&mut self, depth: u32) -> Vec<KeyValue> {
        (0..self.n(4))
            .map(|_| KeyValue {
                key: self.key(),
                value: Some(self.any(depth)),
                ..Default::default()
            })
            .collect()
    }
    pub(crate) fn resource(&mut self) -> Option<Resource> {
        Some(Resource {
            attributes: self.attrs(2),
            dropped_attributes_count: self.0.u32(..),
            ..Default::default()
        })
    }
    pub(crate) fn scope(&mut self) -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: self.s(),
            version: self.s(),
            attributes: self.attrs(1),
            dropped_attributes_count: 0,
        })
    }
    pub(crate) fn span(&mut self) -> Span {
        Span {
            trace_id: self.b(),
            span_id: self.b(),
            trace_state: self.s(),
            parent_span_id: self.b(),
            flags: self.0.u32(..),
            name: self.s(),
            kind: self.0.i32(0..6),
            start_time_unix_nano: self.0.u64(..),
            end_time_unix_nano: self.0.u64(..),
            attributes: self.attrs(3),
            dropped_attributes_count: self.0.u32(..3),
            events: (0..self.n(2))
                .map(|_| span::Event {
                    time_unix_nano: 1,
                    name: ["exception", "x"][self.n(1)].into(),
                    attributes: self.attrs(2),
                    dropped_attributes_count: 1,
                })
                .collect(),
            links: (0..self.n(2))
                .map(|_| span::Link {
                    trace_id: self.b(),
                    span_id: self.b(),
                    trace_state: self.s(),
                    attributes: self.attrs(2),
                    dropped_attributes_count: 2,
                    flags: 1,
                })
                .collect(),
            status: Some(Status {
                message: self.s(),
                code: self.0.i32(0..3),
            }),
            ..Default::default()
        }
    }
    pub(crate) fn traces(&mut self) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: (0..1 + self.n(1))
                .map(|_| ResourceSpans {
                    resource: self.resource(),
                    scope_spans: vec![ScopeSpans {
                        scope: self.scope(),
                        spans: (0..1 + self.n(3)).map(|_| self.span()).collect(),
                        schema_url: self.s(),
                    }],
                    schema_url: self.s(),
                })
                .collect(),
        }
        .encode_to_vec()
    }
    pub(crate) fn record(&mut self) -> LogRecord {
        LogRecord {
            time_unix_nano: self.0.u64(..),
            observed_time_unix_nano: self.0.u64(..),
            severity_number: self.0.i32(0..25),
            severity_text: self.s(),
            body: Some(self.any(4)),
            attributes: self.attrs(3),
            flags: self.0.u32(..),
            trace_id: self.b(),
            span_id: self.b(),
            event_name: self.s(),
            ..Default::default()
        }
    }
    pub(crate) fn logs(&mut self) -> Vec<u8> {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: self.resource(),
                scope_logs: vec![ScopeLogs {
                    scope: self.scope(),
                    log_records: (0..1 + self.n(3)).map(|_| self.record()).collect(),
                    schema_url: self.s(),
                }],
                schema_url: self.s(),
            }],
        }
        .encode_to_vec()
    }
    /// `buf` with one to three mutations: a byte changed, inserted or cut.
    pub(crate) fn mutate(&mut self, buf: &[u8]) -> Vec<u8> {
        let mut m = buf.to_vec();
        for _ in 0..1 + self.n(2) {
            if m.is_empty() {
                break;
            }
            let at = self.0.usize(..m.len());
            match self.0.u8(0..8) {
                0..=4 => m[at] = self.0.u8(..),
                5 => m.insert(at, self.0.u8(..)),
                6 => m[at] |= 0x80,
                _ => m.truncate(at),
            }
        }
        m
    }
    pub(crate) fn exemplars(&mut self) -> Vec<Exemplar> {
        (0..self.n(2))
            .map(|_| Exemplar {
                filtered_attributes: self.attrs(2),
                time_unix_nano: 3,
                span_id: self.b(),
                trace_id: self.b(),
                value: Some(if self.0.bool() {
                    opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsInt(-1)
                } else {
                    opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(0.5)
                }),
            })
            .collect()
    }
    fn number(&mut self) -> NumberDataPoint {
        NumberDataPoint {
            attributes: self.attrs(2),
            start_time_unix_nano: 1,
            time_unix_nano: 2,
            exemplars: self.exemplars(),
            flags: 1,
            value: Some(number_data_point::Value::AsInt(self.0.i64(..))),
        }
    }
    pub(crate) fn data(&mut self) -> Data {
        let number = |g: &mut G| g.number();
        match self.n(4) {
            0 => Data::Gauge(Gauge {
                data_points: (0..self.n(2)).map(|_| number(self)).collect(),
            }),
            1 => Data::Sum(Sum {
                data_points: (0..self.n(2)).map(|_| number(self)).collect(),
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
            2 => Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: self.attrs(2),
                    count: 3,
                    sum: Some(1.5),
                    bucket_counts: (0..self.n(4)).map(|_| self.0.u64(..)).collect(),
                    explicit_bounds: (0..self.n(3)).map(|i| i as f64).collect(),
                    exemplars: self.exemplars(),
                    min: Some(0.0),
                    max: Some(9.0),
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            }),
            3 => Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: self.attrs(2),
                    scale: self.0.i32(-10..10),
                    positive: Some(Buckets {
                        offset: self.0.i32(..),
                        bucket_counts: (0..self.n(4)).map(|_| self.0.u64(..)).collect(),
                    }),
                    negative: Some(Buckets::default()),
                    exemplars: self.exemplars(),
                    zero_threshold: 0.1,
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            }),
            _ => Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: self.attrs(2),
                    count: 1,
                    sum: 2.0,
                    quantile_values: vec![ValueAtQuantile {
                        quantile: 0.5,
                        value: 1.0,
                    }],
                    ..Default::default()
                }],
            }),
        }
    }
    pub(crate) fn metrics(&mut self) -> Vec<u8> {
        let metrics = (0..self.n(3))
            .map(|_| Metric {
                name: self.s(),
                description: self.s(),
                unit: self.s(),
                metadata: self.attrs(1),
                data: Some(self.data()),
            })
            .collect();
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: self.resource(),
                scope_metrics: vec![ScopeMetrics {
                    scope: self.scope(),
                    metrics,
                    schema_url: self.s(),
                }],
                schema_url: self.s(),
            }],
        }
        .encode_to_vec()
    }
}
