//! The field numbers of the Prometheus protobuf exposition
//! (`io.prometheus.client`) that the wire writer ([`super::protobuf`])
//! emits: one constant per field, named after its message and field in
//! `proto/prometheus/client/metrics.proto`. [`ALL`] lists them with their
//! wire types; `tests/suite/proto.rs` checks every entry against that file and the
//! file against the official client_model definitions, so a wrong number
//! cannot hide in the writer.

/// Wire types (protobuf encoding spec).
pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;

pub const LABEL_PAIR_NAME: u8 = 1;
pub const LABEL_PAIR_VALUE: u8 = 2;

pub const GAUGE_VALUE: u8 = 1;

pub const COUNTER_VALUE: u8 = 1;
pub const COUNTER_CREATED: u8 = 3;

pub const QUANTILE_QUANTILE: u8 = 1;
pub const QUANTILE_VALUE: u8 = 2;

pub const SUMMARY_SAMPLE_COUNT: u8 = 1;
pub const SUMMARY_SAMPLE_SUM: u8 = 2;
pub const SUMMARY_QUANTILE: u8 = 3;
pub const SUMMARY_CREATED: u8 = 4;

pub const HISTOGRAM_SAMPLE_COUNT: u8 = 1;
pub const HISTOGRAM_SAMPLE_SUM: u8 = 2;
pub const HISTOGRAM_BUCKET: u8 = 3;
pub const HISTOGRAM_SCHEMA: u8 = 5;
pub const HISTOGRAM_ZERO_THRESHOLD: u8 = 6;
pub const HISTOGRAM_ZERO_COUNT: u8 = 7;
pub const HISTOGRAM_NEGATIVE_SPAN: u8 = 9;
pub const HISTOGRAM_NEGATIVE_DELTA: u8 = 10;
pub const HISTOGRAM_POSITIVE_SPAN: u8 = 12;
pub const HISTOGRAM_POSITIVE_DELTA: u8 = 13;
pub const HISTOGRAM_CREATED: u8 = 15;

pub const BUCKET_CUMULATIVE_COUNT: u8 = 1;
pub const BUCKET_UPPER_BOUND: u8 = 2;
pub const BUCKET_EXEMPLAR: u8 = 3;

pub const BUCKET_SPAN_OFFSET: u8 = 1;
pub const BUCKET_SPAN_LENGTH: u8 = 2;

pub const EXEMPLAR_LABEL: u8 = 1;
pub const EXEMPLAR_VALUE: u8 = 2;
pub const EXEMPLAR_TIMESTAMP: u8 = 3;

pub const METRIC_LABEL: u8 = 1;
pub const METRIC_GAUGE: u8 = 2;
pub const METRIC_COUNTER: u8 = 3;
pub const METRIC_SUMMARY: u8 = 4;
pub const METRIC_HISTOGRAM: u8 = 7;

pub const FAMILY_NAME: u8 = 1;
pub const FAMILY_HELP: u8 = 2;
pub const FAMILY_TYPE: u8 = 3;
pub const FAMILY_METRIC: u8 = 4;
pub const FAMILY_UNIT: u8 = 5;

/// `google.protobuf.Timestamp` (proto3: a zero field is left out).
pub const TIMESTAMP_SECONDS: u8 = 1;
pub const TIMESTAMP_NANOS: u8 = 2;

/// `MetricType` values.
pub const TYPE_COUNTER: u64 = 0;
pub const TYPE_GAUGE: u64 = 1;
pub const TYPE_SUMMARY: u64 = 2;
pub const TYPE_HISTOGRAM: u64 = 4;

/// The key byte of a field (every field written here is numbered below 16).
pub const fn key(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

const P: &str = "io.prometheus.client.";
const T: &str = "google.protobuf.";

/// One field the writer emits: (package prefix, message, field, number,
/// wire type).
pub type Entry = (&'static str, &'static str, &'static str, u8, u8);

/// Every field constant above.
#[rustfmt::skip]
pub const ALL: &[Entry] = &[
    (P, "LabelPair", "name", LABEL_PAIR_NAME, LEN),
    (P, "LabelPair", "value", LABEL_PAIR_VALUE, LEN),
    (P, "Gauge", "value", GAUGE_VALUE, FIXED64),
    (P, "Counter", "value", COUNTER_VALUE, FIXED64),
    (P, "Counter", "created_timestamp", COUNTER_CREATED, LEN),
    (P, "Quantile", "quantile", QUANTILE_QUANTILE, FIXED64),
    (P, "Quantile", "value", QUANTILE_VALUE, FIXED64),
    (P, "Summary", "sample_count", SUMMARY_SAMPLE_COUNT, VARINT),
    (P, "Summary", "sample_sum", SUMMARY_SAMPLE_SUM, FIXED64),
    (P, "Summary", "quantile", SUMMARY_QUANTILE, LEN),
    (P, "Summary", "created_timestamp", SUMMARY_CREATED, LEN),
    (P, "Histogram", "sample_count", HISTOGRAM_SAMPLE_COUNT, VARINT),
    (P, "Histogram", "sample_sum", HISTOGRAM_SAMPLE_SUM, FIXED64),
    (P, "Histogram", "bucket", HISTOGRAM_BUCKET, LEN),
    (P, "Histogram", "schema", HISTOGRAM_SCHEMA, VARINT),
    (P, "Histogram", "zero_threshold", HISTOGRAM_ZERO_THRESHOLD, FIXED64),
    (P, "Histogram", "zero_count", HISTOGRAM_ZERO_COUNT, VARINT),
    (P, "Histogram", "negative_span", HISTOGRAM_NEGATIVE_SPAN, LEN),
    (P, "Histogram", "negative_delta", HISTOGRAM_NEGATIVE_DELTA, VARINT),
    (P, "Histogram", "positive_span", HISTOGRAM_POSITIVE_SPAN, LEN),
    (P, "Histogram", "positive_delta", HISTOGRAM_POSITIVE_DELTA, VARINT),
    (P, "Histogram", "created_timestamp", HISTOGRAM_CREATED, LEN),
    (P, "Bucket", "cumulative_count", BUCKET_CUMULATIVE_COUNT, VARINT),
    (P, "Bucket", "upper_bound", BUCKET_UPPER_BOUND, FIXED64),
    (P, "Bucket", "exemplar", BUCKET_EXEMPLAR, LEN),
    (P, "BucketSpan", "offset", BUCKET_SPAN_OFFSET, VARINT),
    (P, "BucketSpan", "length", BUCKET_SPAN_LENGTH, VARINT),
    (P, "Exemplar", "label", EXEMPLAR_LABEL, LEN),
    (P, "Exemplar", "value", EXEMPLAR_VALUE, FIXED64),
    (P, "Exemplar", "timestamp", EXEMPLAR_TIMESTAMP, LEN),
    (P, "Metric", "label", METRIC_LABEL, LEN),
    (P, "Metric", "gauge", METRIC_GAUGE, LEN),
    (P, "Metric", "counter", METRIC_COUNTER, LEN),
    (P, "Metric", "summary", METRIC_SUMMARY, LEN),
    (P, "Metric", "histogram", METRIC_HISTOGRAM, LEN),
    (P, "MetricFamily", "name", FAMILY_NAME, LEN),
    (P, "MetricFamily", "help", FAMILY_HELP, LEN),
    (P, "MetricFamily", "type", FAMILY_TYPE, VARINT),
    (P, "MetricFamily", "metric", FAMILY_METRIC, LEN),
    (P, "MetricFamily", "unit", FAMILY_UNIT, LEN),
    (T, "Timestamp", "seconds", TIMESTAMP_SECONDS, VARINT),
    (T, "Timestamp", "nanos", TIMESTAMP_NANOS, VARINT),
];

/// The `MetricType` values the writer emits: (name, value).
pub const TYPES: &[(&str, u64)] = &[
    ("COUNTER", TYPE_COUNTER),
    ("GAUGE", TYPE_GAUGE),
    ("SUMMARY", TYPE_SUMMARY),
    ("HISTOGRAM", TYPE_HISTOGRAM),
];
