//! Validation of an OTLP export request against the OTLP protobuf schema:
//! every known field has its declared wire type, every `string` field is
//! UTF-8, every nested message and packed field is well-formed, and no
//! `AnyValue` is nested deeper than `receivers.max_value_depth`. What passes
//! here decodes with prost (redaction, the downstream collector), so a bad
//! request is refused with INVALID_ARGUMENT / 400 before it is acknowledged
//! instead of poisoning a batch later.
//!
//! Two uses (issue 24). The derive walk (`wire.rs`) checks the fields it
//! reads itself and calls [`field`] on the ones it skips, so a spans or logs
//! request is validated in the one pass that derives from it, forwarded or
//! not. [`request`] checks a whole request in a pass of its own: metrics
//! requests (nothing walks them), and the message of a request the walk
//! refused (which message and field, malformed or invalid), on the cold
//! path; it is also the oracle the walk is tested against
//! (`src/receiver/one_pass_tests.rs`).
//!
//! Schema-driven and allocation-free: one table per message type, indexed
//! by field number, written from the opentelemetry-proto `.proto` files
//! (common, resource, trace, logs, metrics v1). Unknown fields are skipped
//! like prost skips them (groups, a deprecated wire type, are refused).

use super::wire::{short_len, Reader, Wire};
use crate::base::SignalKind;

/// The deepest `AnyValue` nesting that is ever accepted. The deepest OTLP
/// path to an attribute (metric exemplar: 8 messages) plus 3 messages per
/// further kvlist level stays within prost's recursion limit of 100 up to
/// 31 levels (a unit test proves the bound).
pub const MAX_VALUE_DEPTH: u32 = 31;
/// The default `receivers.max_value_depth`.
pub const DEFAULT_VALUE_DEPTH: u32 = 24;

/// Why a request is not valid OTLP: the message and field where it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid {
    pub message: &'static str,
    pub field: &'static str,
    pub what: &'static str,
    /// not protobuf at all (a length past the end, a bad varint), rather
    /// than protobuf that breaks OTLP's schema
    pub malformed: bool,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.malformed {
            "malformed"
        } else {
            "invalid"
        };
        if self.field.is_empty() {
            write!(f, "{how} OTLP protobuf in {}: {}", self.message, self.what)
        } else {
            write!(
                f,
                "{how} OTLP protobuf in {}.{}: {}",
                self.message, self.field, self.what
            )
        }
    }
}
impl std::error::Error for Invalid {}

/// What a field holds, as far as its encoding goes.
#[derive(Clone, Copy)]
pub(crate) enum K {
    /// not in the schema: any well-formed field is skipped
    Unknown,
    Str,
    Bytes,
    Varint,
    Fixed64,
    Fixed32,
    /// repeated fixed64/double: packed (length-delimited) or one by one
    PackedFixed64,
    /// repeated uint64: packed or one by one
    PackedVarint,
    Msg(&'static M),
    /// an `AnyValue`: a message that counts one nesting level
    Any,
}

/// One message type: its name and its fields, indexed by field number.
pub(crate) struct M {
    name: &'static str,
    fields: &'static [(&'static str, K)],
}

const U: (&str, K) = ("", K::Unknown);

pub(crate) static ANY_VALUE: M = M {
    name: "AnyValue",
    fields: &[
        U,
        ("string_value", K::Str),
        ("bool_value", K::Varint),
        ("int_value", K::Varint),
        ("double_value", K::Fixed64),
        ("array_value", K::Msg(&ARRAY_VALUE)),
        ("kvlist_value", K::Msg(&KEY_VALUE_LIST)),
        ("bytes_value", K::Bytes),
        ("string_value_strindex", K::Varint),
    ],
};
static ARRAY_VALUE: M = M {
    name: "ArrayValue",
    fields: &[U, ("values", K::Any)],
};
static KEY_VALUE_LIST: M = M {
    name: "KeyValueList",
    fields: &[U, ("values", K::Msg(&KEY_VALUE))],
};
pub(crate) static KEY_VALUE: M = M {
    name: "KeyValue",
    fields: &[
        U,
        ("key", K::Str),
        ("value", K::Any),
        ("key_strindex", K::Varint),
    ],
};
pub(crate) static SCOPE: M = M {
    name: "InstrumentationScope",
    fields: &[
        U,
        ("name", K::Str),
        ("version", K::Str),
        ("attributes", K::Msg(&KEY_VALUE)),
        ("dropped_attributes_count", K::Varint),
    ],
};
static ENTITY_REF: M = M {
    name: "EntityRef",
    fields: &[
        U,
        ("schema_url", K::Str),
        ("type", K::Str),
        ("id_keys", K::Str),
        ("description_keys", K::Str),
    ],
};
pub(crate) static RESOURCE: M = M {
    name: "Resource",
    fields: &[
        U,
        ("attributes", K::Msg(&KEY_VALUE)),
        ("dropped_attributes_count", K::Varint),
        ("entity_refs", K::Msg(&ENTITY_REF)),
    ],
};

// logs.v1
static LOGS_REQUEST: M = M {
    name: "ExportLogsServiceRequest",
    fields: &[U, ("resource_logs", K::Msg(&RESOURCE_LOGS))],
};
pub(crate) static RESOURCE_LOGS: M = M {
    name: "ResourceLogs",
    fields: &[
        U,
        ("resource", K::Msg(&RESOURCE)),
        ("scope_logs", K::Msg(&SCOPE_LOGS)),
        ("schema_url", K::Str),
    ],
};
pub(crate) static SCOPE_LOGS: M = M {
    name: "ScopeLogs",
    fields: &[
        U,
        ("scope", K::Msg(&SCOPE)),
        ("log_records", K::Msg(&LOG_RECORD)),
        ("schema_url", K::Str),
    ],
};
pub(crate) static LOG_RECORD: M = M {
    name: "LogRecord",
    fields: &[
        U,
        ("time_unix_nano", K::Fixed64),
        ("severity_number", K::Varint),
        ("severity_text", K::Str),
        U,
        ("body", K::Any),
        ("attributes", K::Msg(&KEY_VALUE)),
        ("dropped_attributes_count", K::Varint),
        ("flags", K::Fixed32),
        ("trace_id", K::Bytes),
        ("span_id", K::Bytes),
        ("observed_time_unix_nano", K::Fixed64),
        ("event_name", K::Str),
    ],
};

// trace.v1
static TRACES_REQUEST: M = M {
    name: "ExportTraceServiceRequest",
    fields: &[U, ("resource_spans", K::Msg(&RESOURCE_SPANS))],
};
pub(crate) static RESOURCE_SPANS: M = M {
    name: "ResourceSpans",
    fields: &[
        U,
        ("resource", K::Msg(&RESOURCE)),
        ("scope_spans", K::Msg(&SCOPE_SPANS)),
        ("schema_url", K::Str),
    ],
};
pub(crate) static SCOPE_SPANS: M = M {
    name: "ScopeSpans",
    fields: &[
        U,
        ("scope", K::Msg(&SCOPE)),
        ("spans", K::Msg(&SPAN)),
        ("schema_url", K::Str),
    ],
};
pub(crate) static SPAN: M = M {
    name: "Span",
    fields: &[
        U,
        ("trace_id", K::Bytes),
        ("span_id", K::Bytes),
        ("trace_state", K::Str),
        ("parent_span_id", K::Bytes),
        ("name", K::Str),
        ("kind", K::Varint),
        ("start_time_unix_nano", K::Fixed64),
        ("end_time_unix_nano", K::Fixed64),
        ("attributes", K::Msg(&KEY_VALUE)),
        ("dropped_attributes_count", K::Varint),
        ("events", K::Msg(&SPAN_EVENT)),
        ("dropped_events_count", K::Varint),
        ("links", K::Msg(&SPAN_LINK)),
        ("dropped_links_count", K::Varint),
        ("status", K::Msg(&STATUS)),
        ("flags", K::Fixed32),
    ],
};
static SPAN_EVENT: M = M {
    name: "Span.Event",
    fields: &[
        U,
        ("time_unix_nano", K::Fixed64),
        ("name", K::Str),
        ("attributes", K::Msg(&KEY_VALUE)),
        ("dropped_attributes_count", K::Varint),
    ],
};
static SPAN_LINK: M = M {
    name: "Span.Link",
    fields: &[
        U,
        ("trace_id", K::Bytes),
        ("span_id", K::Bytes),
        ("trace_state", K::Str),
        ("attributes", K::Msg(&KEY_VALUE)),
        ("dropped_attributes_count", K::Varint),
        ("flags", K::Fixed32),
    ],
};
static STATUS: M = M {
    name: "Status",
    fields: &[U, U, ("message", K::Str), ("code", K::Varint)],
};

// metrics.v1
static METRICS_REQUEST: M = M {
    name: "ExportMetricsServiceRequest",
    fields: &[U, ("resource_metrics", K::Msg(&RESOURCE_METRICS))],
};
static RESOURCE_METRICS: M = M {
    name: "ResourceMetrics",
    fields: &[
        U,
        ("resource", K::Msg(&RESOURCE)),
        ("scope_metrics", K::Msg(&SCOPE_METRICS)),
        ("schema_url", K::Str),
    ],
};
static SCOPE_METRICS: M = M {
    name: "ScopeMetrics",
    fields: &[
        U,
        ("scope", K::Msg(&SCOPE)),
        ("metrics", K::Msg(&METRIC)),
        ("schema_url", K::Str),
    ],
};
static METRIC: M = M {
    name: "Metric",
    fields: &[
        U,
        ("name", K::Str),
        ("description", K::Str),
        ("unit", K::Str),
        U,
        ("gauge", K::Msg(&GAUGE)),
        U,
        ("sum", K::Msg(&SUM)),
        U,
        ("histogram", K::Msg(&HISTOGRAM)),
        ("exponential_histogram", K::Msg(&EXP_HISTOGRAM)),
        ("summary", K::Msg(&SUMMARY)),
        ("metadata", K::Msg(&KEY_VALUE)),
    ],
};
static GAUGE: M = M {
    name: "Gauge",
    fields: &[U, ("data_points", K::Msg(&NUMBER_POINT))],
};
static SUM: M = M {
    name: "Sum",
    fields: &[
        U,
        ("data_points", K::Msg(&NUMBER_POINT)),
        ("aggregation_temporality", K::Varint),
        ("is_monotonic", K::Varint),
    ],
};
static HISTOGRAM: M = M {
    name: "Histogram",
    fields: &[
        U,
        ("data_points", K::Msg(&HISTOGRAM_POINT)),
        ("aggregation_temporality", K::Varint),
    ],
};
static EXP_HISTOGRAM: M = M {
    name: "ExponentialHistogram",
    fields: &[
        U,
        ("data_points", K::Msg(&EXP_HISTOGRAM_POINT)),
        ("aggregation_temporality", K::Varint),
    ],
};
static SUMMARY: M = M {
    name: "Summary",
    fields: &[U, ("data_points", K::Msg(&SUMMARY_POINT))],
};
static NUMBER_POINT: M = M {
    name: "NumberDataPoint",
    fields: &[
        U,
        U,
        ("start_time_unix_nano", K::Fixed64),
        ("time_unix_nano", K::Fixed64),
        ("as_double", K::Fixed64),
        ("exemplars", K::Msg(&EXEMPLAR)),
        ("as_int", K::Fixed64),
        ("attributes", K::Msg(&KEY_VALUE)),
        ("flags", K::Varint),
    ],
};
static HISTOGRAM_POINT: M = M {
    name: "HistogramDataPoint",
    fields: &[
        U,
        U,
        ("start_time_unix_nano", K::Fixed64),
        ("time_unix_nano", K::Fixed64),
        ("count", K::Fixed64),
        ("sum", K::Fixed64),
        ("bucket_counts", K::PackedFixed64),
        ("explicit_bounds", K::PackedFixed64),
        ("exemplars", K::Msg(&EXEMPLAR)),
        ("attributes", K::Msg(&KEY_VALUE)),
        ("flags", K::Varint),
        ("min", K::Fixed64),
        ("max", K::Fixed64),
    ],
};
static EXP_HISTOGRAM_POINT: M = M {
    name: "ExponentialHistogramDataPoint",
    fields: &[
        U,
        ("attributes", K::Msg(&KEY_VALUE)),
        ("start_time_unix_nano", K::Fixed64),
        ("time_unix_nano", K::Fixed64),
        ("count", K::Fixed64),
        ("sum", K::Fixed64),
        ("scale", K::Varint),
        ("zero_count", K::Fixed64),
        ("positive", K::Msg(&EXP_BUCKETS)),
        ("negative", K::Msg(&EXP_BUCKETS)),
        ("flags", K::Varint),
        ("exemplars", K::Msg(&EXEMPLAR)),
        ("min", K::Fixed64),
        ("max", K::Fixed64),
        ("zero_threshold", K::Fixed64),
    ],
};
static EXP_BUCKETS: M = M {
    name: "ExponentialHistogramDataPoint.Buckets",
    fields: &[U, ("offset", K::Varint), ("bucket_counts", K::PackedVarint)],
};
static SUMMARY_POINT: M = M {
    name: "SummaryDataPoint",
    fields: &[
        U,
        U,
        ("start_time_unix_nano", K::Fixed64),
        ("time_unix_nano", K::Fixed64),
        ("count", K::Fixed64),
        ("sum", K::Fixed64),
        ("quantile_values", K::Msg(&VALUE_AT_QUANTILE)),
        ("attributes", K::Msg(&KEY_VALUE)),
        ("flags", K::Varint),
    ],
};
static VALUE_AT_QUANTILE: M = M {
    name: "SummaryDataPoint.ValueAtQuantile",
    fields: &[U, ("quantile", K::Fixed64), ("value", K::Fixed64)],
};
static EXEMPLAR: M = M {
    name: "Exemplar",
    fields: &[
        U,
        U,
        ("time_unix_nano", K::Fixed64),
        ("as_double", K::Fixed64),
        ("span_id", K::Bytes),
        ("trace_id", K::Bytes),
        ("as_int", K::Fixed64),
        ("filtered_attributes", K::Msg(&KEY_VALUE)),
    ],
};

/// One field of the validator's schema, as [`schema`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SchemaField {
    /// the message's name inside its package (`Span.Event`)
    pub message: &'static str,
    pub number: u32,
    pub name: &'static str,
    /// `string`, `bytes`, `varint`, `fixed64`, `fixed32`, `packed_fixed64`,
    /// `packed_varint`, `any` (an `AnyValue`) or `message:<name>`
    pub kind: String,
}

/// Every field of every message reachable from `sig`'s export request.
/// `tests/suite/proto.rs` checks this table against the official OTLP
/// descriptors, so a wrong number or wire type cannot hide.
pub fn schema(sig: SignalKind) -> Vec<SchemaField> {
    let mut seen: Vec<&'static str> = Vec::new();
    let mut out = Vec::new();
    let mut todo: Vec<&'static M> = vec![root(sig)];
    while let Some(m) = todo.pop() {
        if seen.contains(&m.name) {
            continue;
        }
        seen.push(m.name);
        for (number, (name, kind)) in m.fields.iter().enumerate() {
            let kind = match kind {
                K::Unknown => continue,
                K::Str => "string".to_string(),
                K::Bytes => "bytes".to_string(),
                K::Varint => "varint".to_string(),
                K::Fixed64 => "fixed64".to_string(),
                K::Fixed32 => "fixed32".to_string(),
                K::PackedFixed64 => "packed_fixed64".to_string(),
                K::PackedVarint => "packed_varint".to_string(),
                K::Any => {
                    todo.push(&ANY_VALUE);
                    "any".to_string()
                }
                K::Msg(sub) => {
                    todo.push(sub);
                    format!("message:{}", sub.name)
                }
            };
            let number = number as u32;
            out.push(SchemaField {
                message: m.name,
                number,
                name,
                kind,
            });
        }
    }
    out
}

fn root(sig: SignalKind) -> &'static M {
    match sig {
        SignalKind::Spans => &TRACES_REQUEST,
        SignalKind::LogRecords => &LOGS_REQUEST,
        SignalKind::MetricPoints => &METRICS_REQUEST,
    }
}

/// Validates a whole `Export*ServiceRequest` of signal `sig`; `max_depth`
/// is the deepest `AnyValue` nesting allowed (a top-level attribute value
/// or log body is level 1), at most [`MAX_VALUE_DEPTH`].
pub fn request(sig: SignalKind, buf: &[u8], max_depth: u32) -> Result<(), Invalid> {
    message(buf, root(sig), 0, max_depth.min(MAX_VALUE_DEPTH))
}

/// One message; `depth` is the number of `AnyValue`s it is nested in. An
/// error names the innermost message and field where the request failed.
pub(crate) fn message(
    buf: &[u8],
    m: &'static M,
    depth: u32,
    max_depth: u32,
) -> Result<(), Invalid> {
    let mut r = Reader::new(buf);
    loop {
        match r.next_field() {
            Ok(Some((f, v))) => field(m, f, v, depth, max_depth)?,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(Invalid {
                    message: m.name,
                    field: "",
                    what: e.0,
                    malformed: true,
                })
            }
        }
    }
}

/// Field `f` of message `m`, holding `v`, checked whole (a nested message
/// to its leaves): what the walker calls for the fields it does not read
/// itself, so each byte of a request is checked once.
#[inline]
pub(crate) fn field(
    m: &'static M,
    f: u32,
    v: Wire<'_>,
    depth: u32,
    max_depth: u32,
) -> Result<(), Invalid> {
    let (name, kind) = m.fields.get(f as usize).copied().unwrap_or(U);
    let at = |what: &'static str| Invalid {
        message: m.name,
        field: name,
        what,
        malformed: false,
    };
    match (kind, v) {
        // the usual attribute and log body, checked without recursion
        // (what passes here passes the general path too; anything else
        // takes it, so errors name the same place)
        (K::Msg(sub), Wire::Bytes(b))
            if std::ptr::eq(sub, &KEY_VALUE) && plain_key_value(b, depth < max_depth) => {}
        (K::Any, Wire::Bytes(b)) if depth < max_depth && scalar_any_value(b) => {}
        (K::Msg(sub), Wire::Bytes(b)) => message(b, sub, depth, max_depth)?,
        (K::Any, Wire::Bytes(b)) => {
            if depth >= max_depth {
                return Err(at("AnyValue nested deeper than receivers.max_value_depth"));
            }
            message(b, &ANY_VALUE, depth + 1, max_depth)?
        }
        _ => scalar(kind, v).map_err(at)?,
    }
    Ok(())
}

/// A `KeyValue` of a UTF-8 key and a scalar value (or none), each field
/// once, in order: valid without a closer look (`value_fits`: one more
/// `AnyValue` level is allowed).
#[inline]
fn plain_key_value(b: &[u8], value_fits: bool) -> bool {
    // key: field 1, length-delimited (tag 0x0a)
    let Some((key, rest)) = b.strip_prefix(&[0x0a]).and_then(short_len) else {
        return false;
    };
    if !utf8(key) {
        return false;
    }
    if rest.is_empty() {
        return true;
    }
    // value: field 2, length-delimited (tag 0x12), the last field
    match rest.strip_prefix(&[0x12]).and_then(short_len) {
        Some((v, [])) => value_fits && scalar_any_value(v),
        _ => false,
    }
}

/// An `AnyValue` holding one string, bool, int or double (or nothing),
/// encoded the usual way.
#[inline(always)]
pub(crate) fn scalar_any_value(b: &[u8]) -> bool {
    match b {
        [] => true,
        // string_value (field 1, length-delimited)
        [0x0a, rest @ ..] => matches!(short_len(rest), Some((s, [])) if utf8(s)),
        // bool_value, int_value (fields 2, 3, varint): one varint of at
        // most 9 bytes (a 10-byte one takes the general path)
        [0x10 | 0x18, rest @ ..] => match rest.split_last() {
            Some((last, init)) => *last < 0x80 && init.len() < 9 && init.iter().all(|&x| x >= 0x80),
            None => false,
        },
        // double_value (field 4, fixed64)
        [0x21, rest @ ..] => rest.len() == 8,
        _ => false,
    }
}

/// UTF-8, with a word-at-a-time test for ASCII first (most attribute keys
/// and values), the full check only when a byte is not ASCII.
#[inline(always)]
pub(crate) fn utf8(b: &[u8]) -> bool {
    ascii(b) || std::str::from_utf8(b).is_ok()
}

/// Whether every byte is below 0x80: 16 bytes at a time, the last 16
/// overlapping the ones before (a short string: two overlapping loads), no
/// byte loop.
#[inline(always)]
pub(crate) fn ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |w: &[u8; 8]| u64::from_le_bytes(*w);
    let pair = |p: &[u8; 16]| {
        let (a, z) = (p.first_chunk::<8>(), p.last_chunk::<8>());
        a.map_or(0, word) | z.map_or(0, word)
    };
    if let (Some(first), Some(last)) = (b.first_chunk::<16>(), b.last_chunk::<16>()) {
        let mut all = pair(first) | pair(last);
        if b.len() <= 32 {
            // most attribute keys and values, whole KeyValues too
            return all & HIGH == 0;
        }
        let mut rest = b;
        while let Some((p, tail)) = rest.split_first_chunk::<16>() {
            all |= pair(p);
            rest = tail;
        }
        return all & HIGH == 0;
    }
    if let (Some(a), Some(z)) = (b.first_chunk::<8>(), b.last_chunk::<8>()) {
        return (word(a) | word(z)) & HIGH == 0;
    }
    if let (Some(a), Some(z)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
        return (u32::from_le_bytes(*a) | u32::from_le_bytes(*z)) & 0x8080_8080 == 0;
    }
    b.iter().fold(0u8, |a, &x| a | x) < 0x80
}

/// Checks a field that is not a nested message against its kind.
fn scalar(kind: K, v: Wire<'_>) -> Result<(), &'static str> {
    match (kind, v) {
        (K::Unknown, _)
        | (K::Bytes, Wire::Bytes(_))
        | (K::Varint, Wire::Varint(_))
        | (K::Fixed64 | K::PackedFixed64, Wire::Fixed64(_))
        | (K::Fixed32, Wire::Fixed32(_))
        | (K::PackedVarint, Wire::Varint(_)) => Ok(()),
        (K::Str, Wire::Bytes(b)) if utf8(b) => Ok(()),
        (K::Str, Wire::Bytes(_)) => Err("invalid UTF-8 in a string field"),
        (K::PackedFixed64, Wire::Bytes(b)) if b.len() % 8 == 0 => Ok(()),
        (K::PackedFixed64, Wire::Bytes(_)) => Err("packed fixed64 length is not a multiple of 8"),
        (K::PackedVarint, Wire::Bytes(mut b)) => {
            while !b.is_empty() {
                prost::encoding::decode_varint(&mut b).map_err(|_| "invalid packed varint")?;
            }
            Ok(())
        }
        _ => Err("wrong wire type for this field"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value::Value, AnyValue, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, Exemplar, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
        ScopeMetrics,
    };

    use prost::Message;

    use crate::derive::testgen::G;

    fn prost_ok(sig: SignalKind, buf: &[u8]) -> bool {
        match sig {
            SignalKind::Spans => ExportTraceServiceRequest::decode(buf).is_ok(),
            SignalKind::LogRecords => ExportLogsServiceRequest::decode(buf).is_ok(),
            SignalKind::MetricPoints => ExportMetricsServiceRequest::decode(buf).is_ok(),
        }
    }

    const SIGNALS: [SignalKind; 3] = [
        SignalKind::Spans,
        SignalKind::LogRecords,
        SignalKind::MetricPoints,
    ];

    fn generate(g: &mut G, sig: SignalKind) -> Vec<u8> {
        match sig {
            SignalKind::Spans => g.traces(),
            SignalKind::LogRecords => g.logs(),
            SignalKind::MetricPoints => g.metrics(),
        }
    }

    #[test]
    fn accepts_everything_prost_encodes() {
        let mut g = G(fastrand::Rng::with_seed(8));
        for _ in 0..400 {
            for sig in SIGNALS {
                let buf = generate(&mut g, sig);
                if let Err(e) = request(sig, &buf, DEFAULT_VALUE_DEPTH) {
                    panic!("{sig:?}: {e} for a request prost encoded: {buf:02x?}");
                }
            }
        }
    }

    /// Mutated requests (a byte changed, inserted or cut): whatever prost
    /// refuses, the validator refuses too.
    #[test]
    fn rejects_what_prost_rejects() {
        let mut g = G(fastrand::Rng::with_seed(13));
        let (mut prost_refused, mut both_accepted) = (0, 0);
        for _ in 0..150 {
            for sig in SIGNALS {
                let buf = generate(&mut g, sig);
                for _ in 0..40 {
                    let mut m = buf.clone();
                    if m.is_empty() {
                        break;
                    }
                    let at = g.0.usize(..m.len());
                    match g.0.u8(0..3) {
                        0 => m[at] = g.0.u8(..),
                        1 => m.insert(at, g.0.u8(..)),
                        _ => m.truncate(at),
                    }
                    let ours = request(sig, &m, MAX_VALUE_DEPTH);
                    if !prost_ok(sig, &m) {
                        prost_refused += 1;
                        assert!(ours.is_err(), "{sig:?}: prost refuses {m:02x?}");
                    } else if ours.is_ok() {
                        both_accepted += 1;
                    }
                }
            }
        }
        assert!(prost_refused > 1000, "{prost_refused}");
        assert!(both_accepted > 1000, "{both_accepted}");
    }

    /// The no-recursion paths for the usual attribute and value accept only
    /// what the general path accepts, on mutated encodings too; the ASCII
    /// shortcut agrees with `from_utf8`.
    #[test]
    fn the_fast_paths_accept_only_what_the_general_path_accepts() {
        let mut g = G(fastrand::Rng::with_seed(21));
        let (mut fast, mut general) = (0, 0);
        for _ in 0..3000 {
            let kv = g.attrs(1).into_iter().next().unwrap_or_default();
            let mut b = kv.encode_to_vec();
            if !b.is_empty() && g.0.bool() {
                let at = g.0.usize(..b.len());
                b[at] = g.0.u8(..);
            }
            for fits in [true, false] {
                let depth = if fits { 0 } else { 1 };
                if plain_key_value(&b, fits) {
                    fast += 1;
                    assert_eq!(message(&b, &KEY_VALUE, depth, 1), Ok(()), "{b:02x?}");
                } else {
                    general += 1;
                }
            }
            let any = g.any(0).encode_to_vec();
            if scalar_any_value(&any) {
                assert_eq!(message(&any, &ANY_VALUE, 1, 1), Ok(()), "{any:02x?}");
            }
            let raw = g.b();
            assert_eq!(utf8(&raw), std::str::from_utf8(&raw).is_ok(), "{raw:02x?}");
            let text = g.s().repeat(g.n(5));
            assert!(utf8(text.as_bytes()));
        }
        assert!(fast > 300 && general > 300, "{fast} {general}");
    }

    /// A log record whose body nests kvlists `levels` deep.
    fn nested_value(levels: u32) -> AnyValue {
        let mut v = AnyValue {
            value: Some(Value::StringValue("leaf".into())),
        };
        for _ in 1..levels {
            v = AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        value: Some(v),
                        ..Default::default()
                    }],
                })),
            };
        }
        v
    }

    /// The deepest place an attribute lives: a histogram exemplar.
    fn deep_metric(levels: u32) -> Vec<u8> {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "m".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                exemplars: vec![Exemplar {
                                    filtered_attributes: vec![KeyValue {
                                        key: "deep".into(),
                                        value: Some(nested_value(levels)),
                                        ..Default::default()
                                    }],
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn the_depth_limit_keeps_every_accepted_request_within_prosts_recursion_limit() {
        let sig = SignalKind::MetricPoints;
        let ok = deep_metric(MAX_VALUE_DEPTH);
        assert_eq!(request(sig, &ok, MAX_VALUE_DEPTH), Ok(()));
        assert!(prost_ok(sig, &ok), "the deepest accepted request decodes");
        let deeper = deep_metric(MAX_VALUE_DEPTH + 1);
        assert!(request(sig, &deeper, u32::MAX).is_err(), "capped at MAX");
        assert!(
            !prost_ok(sig, &deeper),
            "MAX_VALUE_DEPTH is the tight bound"
        );
        // the configured limit counts levels: a top-level value is level 1
        let two = deep_metric(2);
        assert!(request(sig, &two, 2).is_ok());
        let e = request(sig, &two, 1).unwrap_err();
        assert_eq!((e.message, e.field), ("KeyValue", "value"));
    }

    #[test]
    fn errors_name_the_message_and_field() {
        let logs = crate::derive::testgen::log_request;
        let sig = SignalKind::LogRecords;
        let mut buf = logs(vec![LogRecord {
            attributes: vec![KeyValue {
                key: "K\u{e9}y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }]);
        let at = buf.iter().position(|b| *b == 0xc3).unwrap_or(0);
        buf[at] = 0xff;
        let e = request(sig, &buf, DEFAULT_VALUE_DEPTH).unwrap_err();
        assert_eq!((e.message, e.field), ("KeyValue", "key"), "{e}");
        assert!(e.to_string().contains("UTF-8"), "{e}");
        // severity_number as a fixed32: wrong wire type
        let record = [0x15, 1, 0, 0, 0];
        let e = request(sig, &in_log_request(&record), DEFAULT_VALUE_DEPTH).unwrap_err();
        assert_eq!(
            (e.message, e.field),
            ("LogRecord", "severity_number"),
            "{e}"
        );
        // a truncated nested message in a field the walker never reads
        let scope = [0x1a, 0x03, 0x0a, 0x09, b'k'];
        let e = request(sig, &in_log_request(&[0x2a, 0x00]), DEFAULT_VALUE_DEPTH);
        assert_eq!(e, Ok(()), "an empty body is valid");
        let mut scope_logs = wrap(1, &scope);
        scope_logs.extend(wrap(2, &[]));
        let buf = wrap(1, &wrap(2, &scope_logs));
        let e = request(sig, &buf, DEFAULT_VALUE_DEPTH).unwrap_err();
        assert_eq!(e.message, "KeyValue", "{e}");
        assert!(!prost_ok(sig, &buf));
    }

    /// A length-delimited field `f` holding `body` (bodies under 128 bytes).
    fn wrap(f: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![f << 3 | 2, body.len() as u8];
        out.extend_from_slice(body);
        out
    }

    /// A logs request with one record made of `record`.
    fn in_log_request(record: &[u8]) -> Vec<u8> {
        wrap(1, &wrap(2, &wrap(2, record)))
    }
}
