//! The command line: check-config, print-default-config, and refusing a bad
//! config at start-up with the key and line.

use std::io::Write;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_geometra-sidecar"))
}

fn config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

#[test]
fn print_default_config_is_a_valid_config_with_the_rules() {
    let out = bin().arg("print-default-config").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "ai_requests_total",
        "ai_request_duration_seconds",
        "memory_operations_total",
        "active_users",
    ] {
        assert!(
            text.contains(&format!("name: {name}")),
            "{name} missing from the default rules"
        );
    }
    let f = config(&text);
    let out = bin()
        .args(["check-config", "--config"])
        .arg(f.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        text,
        "the printed defaults are the effective config"
    );
}

#[test]
fn check_config_names_the_key_and_line() {
    let f = config(
        "store:\n  max_series_per_metric: 10\nreceivers:\n  otlp_grpc:\n    max_mesage_bytes: 10\n",
    );
    let out = bin()
        .args(["check-config", "--config"])
        .arg(f.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("receivers.otlp_grpc.max_mesage_bytes"),
        "{err}"
    );
    assert!(err.contains("line 5"), "{err}");
}

#[test]
fn flags_and_environment_override_the_file() {
    let f = config("receivers:\n  otlp_grpc:\n    listen: 127.0.0.1:5000\n");
    let out = bin()
        .args(["check-config", "--config"])
        .arg(f.path())
        .args(["--metrics-listen", "127.0.0.1:9999"])
        .env("GEOMETRA_OTLP_GRPC_LISTEN", "0.0.0.0:4317")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen: 0.0.0.0:4317"), "{text}");
    assert!(text.contains("listen: 127.0.0.1:9999"), "{text}");
    let out = bin()
        .args(["check-config", "--otlp-http-listen", "off"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("otlp_http:\n    listen: null"), "{text}");
    let out = bin()
        .args(["check-config", "--otlp-http-listen", "nowhere"])
        .output()
        .expect("run");
    assert!(!out.status.success());
}

#[test]
fn a_bad_config_stops_start_up() {
    let f = config("extra_rules:\n- name: by_user\n  kind: counter\n  signal: spans\n  labels:\n  - {name: user, from: [enduser.id]}\n");
    let out = bin()
        .args(["--config"])
        .arg(f.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "it must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("extra_rules[0].labels[0].from"), "{err}");
    let out = bin()
        .args(["--config", "/nonexistent/geometra.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/geometra.yaml"));
}
