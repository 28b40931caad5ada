//! Checks the protobuf facts the sidecar hard-codes against the official
//! definitions: `proto/` (the subset the zero-copy walker is written
//! against), the walker's field numbers and the validator's schema tables
//! against OTLP; `proto/prometheus/client/metrics.proto` and the exposition
//! writer's field numbers against Prometheus' client_model. The official OTLP
//! `.proto` files are read from the opentelemetry-proto crate's own sources
//! (the crate our OTLP types are generated from), located with `cargo
//! metadata`; client_model's from Debian's
//! golang-github-prometheus-client-model-dev (scripts/test.sh installs it).
//! Both sides are compiled with protox (no `protoc`).

use crate::common;

use geometra_sidecar::base::SignalKind;
use geometra_sidecar::derive::fields;
use geometra_sidecar::metrics::encode::fields as expo;
use geometra_sidecar::receiver::validate::{schema, SchemaField};
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use std::path::{Path, PathBuf};
use std::process::Command;

const ANY_VALUE: &str = "opentelemetry.proto.common.v1.AnyValue";

/// The directory holding the official `opentelemetry/proto/**.proto` files
/// of the opentelemetry-proto crate this build uses.
fn official_root() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let pkg = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "opentelemetry-proto")
        .expect("opentelemetry-proto in the dependency graph");
    let dir = Path::new(pkg["manifest_path"].as_str().expect("manifest_path"))
        .parent()
        .expect("crate dir")
        .join("src/proto/opentelemetry-proto");
    assert!(
        dir.join("opentelemetry/proto/common/v1/common.proto")
            .is_file(),
        "{dir:?}"
    );
    dir
}

fn official() -> DescriptorPool {
    let root = official_root();
    let files = [
        "opentelemetry/proto/collector/trace/v1/trace_service.proto",
        "opentelemetry/proto/collector/logs/v1/logs_service.proto",
        "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
    ];
    let mut c = protox::Compiler::new([&root]).expect("compiler");
    c.include_imports(true);
    c.open_files(files)
        .expect("compile the official OTLP protos");
    c.descriptor_pool()
}

fn ours() -> DescriptorPool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let files: Vec<String> = std::fs::read_dir(root.join("otlp"))
        .expect("proto/otlp")
        .map(|e| format!("otlp/{}", e.expect("entry").file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".proto"))
        .collect();
    assert!(files.len() >= 5, "{files:?}");
    let mut c = protox::Compiler::new([&root]).expect("compiler");
    c.include_imports(true);
    c.open_files(&files).expect("compile proto/");
    c.descriptor_pool()
}

/// How a field travels on the wire: 0 varint, 1 fixed64, 2 length-delimited,
/// 5 fixed32 (a packed repeated scalar is length-delimited).
fn wire_type(f: &FieldDescriptor) -> u8 {
    let packed = f.is_list() && f.is_packed();
    match f.kind() {
        _ if packed => 2,
        Kind::String | Kind::Bytes | Kind::Message(_) => 2,
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => 1,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => 5,
        _ => 0,
    }
}

fn short_name(m: &MessageDescriptor) -> String {
    let pkg = m.package_name();
    m.full_name()
        .strip_prefix(pkg)
        .and_then(|s| s.strip_prefix('.'))
        .unwrap_or(m.full_name())
        .to_string()
}

#[test]
fn proto_dir_matches_the_official_otlp_definitions() {
    let (ours, official) = (ours(), official());
    let mut checked = 0;
    for m in ours.all_messages() {
        let o = official
            .get_message_by_name(m.full_name())
            .unwrap_or_else(|| panic!("{} is not an OTLP message", m.full_name()));
        for f in m.fields() {
            let of = o
                .get_field(f.number())
                .unwrap_or_else(|| panic!("{}: no field {} in OTLP", m.full_name(), f.number()));
            let at = format!("{}.{} = {}", m.full_name(), f.name(), f.number());
            assert_eq!(f.name(), of.name(), "{at}: name");
            assert_eq!(wire_type(&f), wire_type(&of), "{at}: wire type");
            assert_eq!(f.is_list(), of.is_list(), "{at}: repeated");
            if let (Kind::Message(a), Kind::Message(b)) = (f.kind(), of.kind()) {
                assert_eq!(a.full_name(), b.full_name(), "{at}: message type");
            }
            checked += 1;
        }
    }
    for e in ours.all_enums() {
        let o = official
            .get_enum_by_name(e.full_name())
            .unwrap_or_else(|| panic!("{} is not an OTLP enum", e.full_name()));
        for v in e.values() {
            let ov = o.get_value(v.number()).expect("enum value in OTLP");
            assert_eq!(v.name(), ov.name(), "{}", e.full_name());
        }
    }
    assert!(checked >= 30, "only {checked} fields checked");
}

/// The official schema in the validator's terms, from `root` down.
fn official_schema(pool: &DescriptorPool, root: &str) -> Vec<SchemaField> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let mut todo = vec![pool.get_message_by_name(root).expect("root message")];
    while let Some(m) = todo.pop() {
        if seen.contains(&m.full_name().to_string()) {
            continue;
        }
        seen.push(m.full_name().to_string());
        let message: &'static str = short_name(&m).leak();
        for f in m.fields() {
            let list = f.is_list();
            let kind = match f.kind() {
                Kind::String => "string".to_string(),
                Kind::Bytes => "bytes".to_string(),
                Kind::Message(sub) if sub.full_name() == ANY_VALUE => {
                    todo.push(sub);
                    "any".to_string()
                }
                Kind::Message(sub) => {
                    let k = format!("message:{}", short_name(&sub));
                    todo.push(sub);
                    k
                }
                Kind::Double | Kind::Fixed64 | Kind::Sfixed64 if list => "packed_fixed64".into(),
                Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => "fixed64".into(),
                Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => "fixed32".into(),
                _ if list => "packed_varint".into(),
                _ => "varint".into(),
            };
            let name: &'static str = f.name().to_string().leak();
            out.push(SchemaField {
                message,
                number: f.number(),
                name,
                kind,
            });
        }
    }
    out
}

#[test]
fn the_validators_tables_match_the_official_otlp_definitions() {
    let pool = official();
    let roots = [
        (
            SignalKind::Spans,
            "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
        ),
        (
            SignalKind::LogRecords,
            "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest",
        ),
        (
            SignalKind::MetricPoints,
            "opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest",
        ),
    ];
    for (sig, root) in roots {
        let mut want = official_schema(&pool, root);
        let mut got = schema(sig);
        want.sort();
        got.sort();
        let missing: Vec<_> = want.iter().filter(|f| !got.contains(f)).collect();
        let wrong: Vec<_> = got.iter().filter(|f| !want.contains(f)).collect();
        assert!(
            missing.is_empty() && wrong.is_empty(),
            "{root}: the validator lacks {missing:#?}\nand has fields OTLP does not: {wrong:#?}"
        );
        assert!(got.len() > 20, "{root}: {} fields", got.len());
    }
}

#[test]
fn the_walkers_field_numbers_are_the_ones_in_proto_dir() {
    let ours = ours();
    let mut used = Vec::new();
    for &(pkg, message, field, number, wire) in fields::ALL {
        let full = format!("{pkg}{message}");
        let m = ours
            .get_message_by_name(&full)
            .unwrap_or_else(|| panic!("{full} is not in proto/"));
        let f = m
            .get_field_by_name(field)
            .unwrap_or_else(|| panic!("{full}.{field} is not in proto/"));
        assert_eq!(
            f.number(),
            number,
            "{full}.{field}: the walker's field number"
        );
        assert_eq!(
            wire_type(&f),
            wire,
            "{full}.{field}: the walker's wire type"
        );
        used.push(format!("{full}.{field}"));
    }
    // and proto/ declares nothing the walker does not read
    for m in ours.all_messages() {
        for f in m.fields() {
            let name = format!("{}.{}", m.full_name(), f.name());
            let read = used.contains(&name)
                // AnyValue.array_value only gives the oneof its type
                || name == "opentelemetry.proto.common.v1.ArrayValue.values";
            assert!(read, "{name} is in proto/ but the walker does not read it");
        }
    }
}

#[test]
fn the_fast_path_tags_are_the_canonical_encodings() {
    // what prost writes for a short string AnyValue and a KeyValue
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use prost::Message;
    let kv = KeyValue {
        key: "k".into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue("v".into())),
        }),
        ..Default::default()
    };
    let b = kv.encode_to_vec();
    assert_eq!(b[0], fields::tag(fields::KEY_VALUE_KEY, fields::LEN));
    assert_eq!(b[3], fields::tag(fields::KEY_VALUE_VALUE, fields::LEN));
    assert_eq!(b[5], fields::tag(fields::ANY_VALUE_STRING, fields::LEN));
}

/// A field's type: the scalar, or the message's or enum's full name.
fn kind_name(f: &FieldDescriptor) -> String {
    match f.kind() {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        k => format!("{k:?}"),
    }
}

/// client_model's `metrics.proto` as Debian ships it.
const CLIENT_MODEL: &str = "/usr/share/gocode/src/github.com/prometheus/client_model";
const CLIENT: &str = "io.prometheus.client.";

fn ours_client() -> DescriptorPool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/prometheus");
    let mut c = protox::Compiler::new([&root]).expect("compiler");
    c.include_imports(true);
    c.open_files(["client/metrics.proto"])
        .expect("compile proto/prometheus/client");
    c.descriptor_pool()
}

/// Fields of our copy that the client_model release Debian ships (0.3.0)
/// does not have yet: added by later releases (created timestamps 0.5,
/// native histograms' exemplars 0.5, the family's unit 0.6).
const NEWER_THAN_DEBIANS: &[&str] = &[
    "Counter.created_timestamp",
    "Summary.created_timestamp",
    "Histogram.created_timestamp",
    "Histogram.exemplars",
    "MetricFamily.unit",
];

#[test]
fn proto_client_matches_prometheus_client_model() {
    let file = Path::new(CLIENT_MODEL).join("io/prometheus/client/metrics.proto");
    if !common::require(
        file.is_file(),
        &format!(
            "{} (Debian's golang-github-prometheus-client-model-dev)",
            file.display()
        ),
    ) {
        return;
    }
    let mut c = protox::Compiler::new([CLIENT_MODEL]).expect("compiler");
    c.include_imports(true);
    c.open_files(["io/prometheus/client/metrics.proto"])
        .expect("compile client_model's metrics.proto");
    let (official, ours) = (c.descriptor_pool(), ours_client());
    let mut checked = 0;
    for m in ours
        .all_messages()
        .filter(|m| m.package_name() == "io.prometheus.client")
    {
        let o = official
            .get_message_by_name(m.full_name())
            .unwrap_or_else(|| panic!("{} is not in client_model", m.full_name()));
        for f in m.fields() {
            let at = format!("{}.{} = {}", short_name(&m), f.name(), f.number());
            let Some(of) = o.get_field(f.number()) else {
                let newer = NEWER_THAN_DEBIANS
                    .contains(&format!("{}.{}", short_name(&m), f.name()).as_str());
                assert!(newer, "{at}: not in client_model");
                continue;
            };
            assert_eq!(f.name(), of.name(), "{at}: name");
            assert_eq!(wire_type(&f), wire_type(&of), "{at}: wire type");
            assert_eq!(kind_name(&f), kind_name(&of), "{at}: type");
            assert_eq!(f.is_list(), of.is_list(), "{at}: repeated");
            assert_eq!(f.is_packed(), of.is_packed(), "{at}: packed");
            checked += 1;
        }
        // and everything client_model declares is in ours
        assert_eq!(
            o.fields()
                .filter(|f| m.get_field(f.number()).is_none())
                .count(),
            0,
            "{}",
            m.full_name()
        );
    }
    let (e, oe) = (
        ours.get_enum_by_name("io.prometheus.client.MetricType")
            .expect("MetricType"),
        official
            .get_enum_by_name("io.prometheus.client.MetricType")
            .expect("MetricType"),
    );
    let names = |e: &prost_reflect::EnumDescriptor| -> Vec<(String, i32)> {
        e.values()
            .map(|v| (v.name().to_string(), v.number()))
            .collect()
    };
    assert_eq!(names(&e), names(&oe));
    assert!(checked >= 40, "only {checked} fields checked");
}

#[test]
fn the_exposition_writers_field_numbers_are_the_ones_in_proto_client() {
    let ours = ours_client();
    let mut used = Vec::new();
    for &(pkg, message, field, number, wire) in expo::ALL {
        let full = format!("{pkg}{message}");
        let f = ours
            .get_message_by_name(&full)
            .unwrap_or_else(|| panic!("{full} is not in proto/prometheus/client"))
            .get_field_by_name(field)
            .unwrap_or_else(|| panic!("{full}.{field} is not in proto/prometheus/client"));
        assert_eq!(
            f.number(),
            u32::from(number),
            "{full}.{field}: the writer's field number"
        );
        assert_eq!(
            wire_type(&f),
            wire,
            "{full}.{field}: the writer's wire type"
        );
        used.push(full);
    }
    let e = ours
        .get_enum_by_name(&format!("{CLIENT}MetricType"))
        .expect("MetricType");
    for &(name, value) in expo::TYPES {
        let v = e
            .get_value_by_name(name)
            .unwrap_or_else(|| panic!("MetricType.{name}"));
        assert_eq!(i64::from(v.number()), value as i64, "MetricType.{name}");
    }
    // every message the writer emits is covered, the timestamp included
    for m in [
        "MetricFamily",
        "Metric",
        "LabelPair",
        "Counter",
        "Gauge",
        "Summary",
        "Quantile",
        "Histogram",
        "Bucket",
        "BucketSpan",
        "Exemplar",
    ] {
        assert!(used.contains(&format!("{CLIENT}{m}")), "{m}");
    }
    assert!(used.contains(&"google.protobuf.Timestamp".to_string()));
}
