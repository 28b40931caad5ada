//! The OTLP field numbers the zero-copy walker ([`super::wire`]) reads: one
//! constant per field, named after its message and field in `proto/otlp/`.
//! [`ALL`] lists them with their wire types; `tests/suite/proto.rs` checks every
//! entry against `proto/` and `proto/` against the official OTLP protos, so
//! a wrong number cannot hide in a `match` arm.

/// Wire types (protobuf encoding spec).
pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const FIXED32: u8 = 5;

/// The first byte of a field's tag, for fields numbered below 16.
pub const fn tag(field: u32, wire: u8) -> u8 {
    ((field as u8) << 3) | wire
}

/// The two bytes of a field's tag, for fields numbered 16 to 2047.
pub const fn tag2(field: u32, wire: u8) -> [u8; 2] {
    let key = (field << 3) | wire as u32;
    [(key & 0x7f) as u8 | 0x80, (key >> 7) as u8]
}

// common.v1
pub const ANY_VALUE_STRING: u32 = 1;
pub const ANY_VALUE_BOOL: u32 = 2;
pub const ANY_VALUE_INT: u32 = 3;
pub const ANY_VALUE_DOUBLE: u32 = 4;
pub const ANY_VALUE_ARRAY: u32 = 5;
pub const ANY_VALUE_KVLIST: u32 = 6;
pub const ANY_VALUE_BYTES: u32 = 7;
pub const KEY_VALUE_LIST_VALUES: u32 = 1;
pub const KEY_VALUE_KEY: u32 = 1;
pub const KEY_VALUE_VALUE: u32 = 2;
// resource.v1
pub const RESOURCE_ATTRIBUTES: u32 = 1;

/// The envelope every export request shares: request → resource-level
/// (`resource_spans`, `resource_logs`, `resource_metrics`) → scope-level
/// → items. The three signals number these alike.
pub const REQUEST_RESOURCE_ITEMS: u32 = 1;
pub const RESOURCE_ITEMS_RESOURCE: u32 = 1;
pub const RESOURCE_ITEMS_SCOPE_ITEMS: u32 = 2;
pub const SCOPE_ITEMS_ITEMS: u32 = 2;

// trace.v1
pub const SPAN_TRACE_ID: u32 = 1;
pub const SPAN_SPAN_ID: u32 = 2;
pub const SPAN_TRACE_STATE: u32 = 3;
pub const SPAN_PARENT_SPAN_ID: u32 = 4;
pub const SPAN_NAME: u32 = 5;
pub const SPAN_KIND: u32 = 6;
pub const SPAN_START_TIME: u32 = 7;
pub const SPAN_END_TIME: u32 = 8;
pub const SPAN_ATTRIBUTES: u32 = 9;
pub const SPAN_DROPPED_ATTRIBUTES: u32 = 10;
pub const SPAN_EVENTS: u32 = 11;
pub const SPAN_DROPPED_EVENTS: u32 = 12;
pub const SPAN_LINKS: u32 = 13;
pub const SPAN_DROPPED_LINKS: u32 = 14;
pub const SPAN_STATUS: u32 = 15;
pub const SPAN_FLAGS: u32 = 16;
pub const SPAN_EVENT_NAME: u32 = 2;
pub const STATUS_CODE: u32 = 3;

// logs.v1
pub const LOG_TIME: u32 = 1;
pub const LOG_SEVERITY_NUMBER: u32 = 2;
pub const LOG_SEVERITY_TEXT: u32 = 3;
pub const LOG_BODY: u32 = 5;
pub const LOG_ATTRIBUTES: u32 = 6;
pub const LOG_DROPPED_ATTRIBUTES: u32 = 7;
pub const LOG_FLAGS: u32 = 8;
pub const LOG_TRACE_ID: u32 = 9;
pub const LOG_SPAN_ID: u32 = 10;
pub const LOG_OBSERVED_TIME: u32 = 11;
pub const LOG_EVENT_NAME: u32 = 12;

// metrics.v1 (only to count data points)
pub const METRIC_GAUGE: u32 = 5;
pub const METRIC_SUM: u32 = 7;
pub const METRIC_HISTOGRAM: u32 = 9;
pub const METRIC_EXPONENTIAL_HISTOGRAM: u32 = 10;
pub const METRIC_SUMMARY: u32 = 11;
/// `data_points` is field 1 of Gauge, Sum, Histogram, ExponentialHistogram
/// and Summary alike.
pub const DATA_POINTS: u32 = 1;

const C: &str = "opentelemetry.proto.common.v1.";
const R: &str = "opentelemetry.proto.resource.v1.";
const T: &str = "opentelemetry.proto.trace.v1.";
const L: &str = "opentelemetry.proto.logs.v1.";
const M: &str = "opentelemetry.proto.metrics.v1.";

/// One field the walker reads: (package prefix, message, field, number,
/// wire type).
pub type Entry = (&'static str, &'static str, &'static str, u32, u8);

/// Every constant above, where it applies. The envelope constants appear
/// once per signal.
#[rustfmt::skip]
pub const ALL: &[Entry] = &[
    (C, "AnyValue", "string_value", ANY_VALUE_STRING, LEN),
    (C, "AnyValue", "bool_value", ANY_VALUE_BOOL, VARINT),
    (C, "AnyValue", "int_value", ANY_VALUE_INT, VARINT),
    (C, "AnyValue", "double_value", ANY_VALUE_DOUBLE, FIXED64),
    (C, "AnyValue", "array_value", ANY_VALUE_ARRAY, LEN),
    (C, "AnyValue", "kvlist_value", ANY_VALUE_KVLIST, LEN),
    (C, "AnyValue", "bytes_value", ANY_VALUE_BYTES, LEN),
    (C, "KeyValueList", "values", KEY_VALUE_LIST_VALUES, LEN),
    (C, "KeyValue", "key", KEY_VALUE_KEY, LEN),
    (C, "KeyValue", "value", KEY_VALUE_VALUE, LEN),
    (R, "Resource", "attributes", RESOURCE_ATTRIBUTES, LEN),
    ("opentelemetry.proto.collector.trace.v1.", "ExportTraceServiceRequest", "resource_spans", REQUEST_RESOURCE_ITEMS, LEN),
    (T, "ResourceSpans", "resource", RESOURCE_ITEMS_RESOURCE, LEN),
    (T, "ResourceSpans", "scope_spans", RESOURCE_ITEMS_SCOPE_ITEMS, LEN),
    (T, "ScopeSpans", "spans", SCOPE_ITEMS_ITEMS, LEN),
    (T, "Span", "trace_id", SPAN_TRACE_ID, LEN),
    (T, "Span", "span_id", SPAN_SPAN_ID, LEN),
    (T, "Span", "trace_state", SPAN_TRACE_STATE, LEN),
    (T, "Span", "parent_span_id", SPAN_PARENT_SPAN_ID, LEN),
    (T, "Span", "name", SPAN_NAME, LEN),
    (T, "Span", "kind", SPAN_KIND, VARINT),
    (T, "Span", "start_time_unix_nano", SPAN_START_TIME, FIXED64),
    (T, "Span", "end_time_unix_nano", SPAN_END_TIME, FIXED64),
    (T, "Span", "attributes", SPAN_ATTRIBUTES, LEN),
    (T, "Span", "dropped_attributes_count", SPAN_DROPPED_ATTRIBUTES, VARINT),
    (T, "Span", "events", SPAN_EVENTS, LEN),
    (T, "Span", "dropped_events_count", SPAN_DROPPED_EVENTS, VARINT),
    (T, "Span", "links", SPAN_LINKS, LEN),
    (T, "Span", "dropped_links_count", SPAN_DROPPED_LINKS, VARINT),
    (T, "Span", "status", SPAN_STATUS, LEN),
    (T, "Span", "flags", SPAN_FLAGS, FIXED32),
    (T, "Span.Event", "name", SPAN_EVENT_NAME, LEN),
    (T, "Status", "code", STATUS_CODE, VARINT),
    ("opentelemetry.proto.collector.logs.v1.", "ExportLogsServiceRequest", "resource_logs", REQUEST_RESOURCE_ITEMS, LEN),
    (L, "ResourceLogs", "resource", RESOURCE_ITEMS_RESOURCE, LEN),
    (L, "ResourceLogs", "scope_logs", RESOURCE_ITEMS_SCOPE_ITEMS, LEN),
    (L, "ScopeLogs", "log_records", SCOPE_ITEMS_ITEMS, LEN),
    (L, "LogRecord", "time_unix_nano", LOG_TIME, FIXED64),
    (L, "LogRecord", "severity_number", LOG_SEVERITY_NUMBER, VARINT),
    (L, "LogRecord", "severity_text", LOG_SEVERITY_TEXT, LEN),
    (L, "LogRecord", "body", LOG_BODY, LEN),
    (L, "LogRecord", "attributes", LOG_ATTRIBUTES, LEN),
    (L, "LogRecord", "dropped_attributes_count", LOG_DROPPED_ATTRIBUTES, VARINT),
    (L, "LogRecord", "flags", LOG_FLAGS, FIXED32),
    (L, "LogRecord", "trace_id", LOG_TRACE_ID, LEN),
    (L, "LogRecord", "span_id", LOG_SPAN_ID, LEN),
    (L, "LogRecord", "observed_time_unix_nano", LOG_OBSERVED_TIME, FIXED64),
    (L, "LogRecord", "event_name", LOG_EVENT_NAME, LEN),
    ("opentelemetry.proto.collector.metrics.v1.", "ExportMetricsServiceRequest", "resource_metrics", REQUEST_RESOURCE_ITEMS, LEN),
    (M, "ResourceMetrics", "scope_metrics", RESOURCE_ITEMS_SCOPE_ITEMS, LEN),
    (M, "ScopeMetrics", "metrics", SCOPE_ITEMS_ITEMS, LEN),
    (M, "Metric", "gauge", METRIC_GAUGE, LEN),
    (M, "Metric", "sum", METRIC_SUM, LEN),
    (M, "Metric", "histogram", METRIC_HISTOGRAM, LEN),
    (M, "Metric", "exponential_histogram", METRIC_EXPONENTIAL_HISTOGRAM, LEN),
    (M, "Metric", "summary", METRIC_SUMMARY, LEN),
    (M, "Gauge", "data_points", DATA_POINTS, LEN),
    (M, "Sum", "data_points", DATA_POINTS, LEN),
    (M, "Histogram", "data_points", DATA_POINTS, LEN),
    (M, "ExponentialHistogram", "data_points", DATA_POINTS, LEN),
    (M, "Summary", "data_points", DATA_POINTS, LEN),
];
