//! Checks the protobuf facts the sidecar hard-codes against the official OTLP
//! definitions: `proto/` (the subset the zero-copy walker is written
//! against), the walker's field numbers and the validator's schema tables.
//! The official `.proto` files are read from the opentelemetry-proto crate's
//! own sources (the crate our OTLP types are generated from), located with
//! `cargo metadata`; both sides are compiled with protox (no `protoc`).

use geometra_sidecar::base::SignalKind;
use geometra_sidecar::derive::fields;
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
