//! The command line: check-config, print-default-config, and refusing a bad
//! config at start-up with the key and line.

use crate::common;

use std::io::Write;
use std::process::Command;

/// The binary for a one-shot command (servers start with common::Sidecar).
fn bin() -> Command {
    Command::new(common::BIN)
}

/// `check-config` on `text`.
fn check_config(text: &str) -> std::process::Output {
    let f = config(text);
    bin()
        .args(["check-config", "--config"])
        .arg(f.path())
        .output()
        .expect("run")
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
    let out = check_config(&text);
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
    let out = check_config(
        "store:\n  max_series_per_metric: 10\nreceivers:\n  otlp_grpc:\n    max_mesage_bytes: 10\n",
    );
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

/// `check-config` refuses `yaml`, naming `key` and `line N`.
fn refused(yaml: &str, key: &str, line: usize) -> String {
    let out = check_config(yaml);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "accepted:\n{yaml}\n{err}");
    assert!(err.contains(&format!("{key}:")), "{key} not named: {err}");
    assert!(
        err.contains(&format!("line {line}")),
        "line {line} not named: {err}"
    );
    err
}

fn counter_named(name: &str) -> String {
    format!("extra_rules:\n- name: {name}\n  kind: counter\n  signal: spans\n")
}

#[test]
fn a_rule_name_ending_like_another_familys_series_is_refused() {
    for name in [
        "jobs_count",
        "jobs_bucket",
        "jobs_sum",
        "jobs_created",
        "users_sketch",
        "users_sketch_registers",
    ] {
        let err = refused(&counter_named(name), "extra_rules[0].name", 2);
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn a_rule_named_like_the_sidecars_own_metrics_is_refused() {
    for name in [
        "process_cpu_seconds_total",
        "otelcol_receiver_accepted_spans_total",
        "geometra_sidecar_build_info",
        "target_info",
    ] {
        refused(&counter_named(name), "extra_rules[0].name", 2);
    }
}

#[test]
fn user_id_label_sources_are_refused_in_any_spelling() {
    for key in [
        "User.Id",
        "USER_ID",
        "userId",
        "user-id",
        "EndUser.Id",
        "user.email",
        "Email",
    ] {
        let yaml = format!(
            "extra_rules:\n- name: by_user\n  kind: counter\n  signal: spans\n  labels:\n  - name: user\n    from: [http.route, {key}]\n"
        );
        let err = refused(&yaml, "extra_rules[0].labels[0].from", 7);
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn an_unknown_log_level_is_refused() {
    refused("telemetry:\n  log_level: loud\n", "telemetry.log_level", 2);
    refused(
        "telemetry:\n  log_format: json\n  log_level: info,geometra_sidecar=chatty\n",
        "telemetry.log_level",
        3,
    );
    let out = check_config("telemetry:\n  log_level: warn,geometra_sidecar=debug\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_cors_origin_with_a_newline_is_refused() {
    refused(
        "receivers:\n  otlp_http:\n    cors_allowed_origins:\n    - https://app.geometra.ai\n    - \"https://a.example\\nX-Evil: 1\"\n",
        "receivers.otlp_http.cors_allowed_origins[1]",
        5,
    );
    refused(
        "receivers:\n  otlp_http:\n    cors_allowed_origins: [\"https://a.example\\r\"]\n",
        "receivers.otlp_http.cors_allowed_origins[0]",
        3,
    );
}

#[test]
fn sketch_precision_and_key_file_are_checked() {
    for p in [3, 17] {
        let yaml = format!("store:\n  max_active_users: 5\n  distinct_sketch_precision: {p}\n");
        let err = refused(&yaml, "store.distinct_sketch_precision", 3);
        assert!(err.contains("between 4 and 16"), "{err}");
    }
    let missing = "store:\n  distinct_key_file: /nonexistent/fleet-key\n";
    refused(missing, "store.distinct_key_file", 2);
    let short = config("0123456789abcdef\n");
    let yaml = format!("store:\n  distinct_key_file: {}\n", short.path().display());
    let err = refused(&yaml, "store.distinct_key_file", 2);
    assert!(err.contains("32 hex digits"), "{err}");
    let good = config("000102030405060708090a0b0c0d0e0f\n");
    let yaml = format!(
        "store:\n  distinct_sketch_precision: 12\n  distinct_key_file: {}\n",
        good.path().display()
    );
    let out = check_config(&yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zero_limits_are_refused_not_clamped() {
    for (yaml, key, line) in [
        ("store:\n  series_ttl: 0s\n", "store.series_ttl", 2),
        (
            "store:\n  max_series_per_metric: 5\n  active_users_window: 0s\n",
            "store.active_users_window",
            3,
        ),
        (
            "store:\n  max_active_users: 0\n",
            "store.max_active_users",
            2,
        ),
        (
            "forward:\n  batch:\n    max_items: 0\n",
            "forward.batch.max_items",
            3,
        ),
        (
            "forward:\n  queue:\n    consumers: 0\n",
            "forward.queue.consumers",
            3,
        ),
        (
            "receivers:\n  otlp_http:\n    max_body_bytes: 0\n",
            "receivers.otlp_http.max_body_bytes",
            3,
        ),
        (
            "receivers:\n  max_in_flight_bytes: 1048576\n",
            "receivers.max_in_flight_bytes",
            2,
        ),
    ] {
        refused(yaml, key, line);
    }
}

#[test]
fn a_forward_queue_wait_beyond_a_second_is_refused() {
    let err = refused(
        "forward:\n  queue:\n    max_wait: 1500ms\n",
        "forward.queue.max_wait",
        3,
    );
    assert!(
        err.contains(
            "forward.queue.max_wait: must be at most 1s (a request refused is told to retry in 1s)"
        ),
        "{err}"
    );
}

#[test]
fn an_fsync_delay_beyond_100ms_is_refused() {
    let err = refused(
        "forward:\n  queue:\n    fsync_delay: 150ms\n",
        "forward.queue.fsync_delay",
        3,
    );
    assert!(
        err.contains(
            "forward.queue.fsync_delay: must be at most 100ms (every acknowledgement waits for it)"
        ),
        "{err}"
    );
}

#[test]
fn a_connections_in_flight_share_lies_between_the_largest_request_and_the_budget() {
    let key = "receivers.max_in_flight_bytes_per_connection";
    let err = refused(
        "receivers:\n  max_in_flight_bytes_per_connection: 1048576\n",
        key,
        2,
    );
    assert!(
        err.contains("at least the largest request accepted (4194304 bytes"),
        "{err}"
    );
    let err = refused(
        "receivers:\n  max_in_flight_bytes_per_connection: 67108864\n",
        key,
        2,
    );
    assert!(
        err.contains("at most receivers.max_in_flight_bytes (33554432 bytes)"),
        "{err}"
    );
    // unset, it follows the budget and the message limits; either bound is fine
    for ok in [
        "receivers:\n  max_in_flight_bytes: 4194304\n",
        "receivers:\n  otlp_grpc:\n    max_message_bytes: 16777216\n  max_in_flight_bytes: 67108864\n",
        "receivers:\n  max_in_flight_bytes_per_connection: 4194304\n",
        "receivers:\n  max_in_flight_bytes_per_connection: 33554432\n",
    ] {
        let out = check_config(ok);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{ok}: {err}");
    }
}

/// Ports chosen by the kernel (port 0), so nothing here needs a free port.
const ANY_PORTS: [&str; 6] = [
    "--otlp-grpc-listen",
    "127.0.0.1:0",
    "--otlp-http-listen",
    "localhost:0",
    "--metrics-listen",
    "127.0.0.1:0",
];

/// Runs the sidecar with `args` and `env` until it logs its ready line;
/// returns everything it wrote to stderr (a pipe, not a terminal) so far.
fn until_ready(args: &[&str], env: &[(&str, &str)]) -> String {
    use std::io::BufRead;
    let mut b = common::Sidecar::builder()
        .no_config()
        .rust_log(None)
        .stderr(std::process::Stdio::piped());
    for pair in args.chunks(2) {
        b = match pair {
            ["--otlp-grpc-listen", a] => b.grpc_listen(a),
            ["--otlp-http-listen", a] => b.http_listen(a),
            ["--metrics-listen", a] => b.metrics_listen(a),
            _ => panic!("a listener flag and its address: {pair:?}"),
        };
    }
    for (k, v) in env {
        b = b.env(k, v);
    }
    let mut s = b.spawn();
    let stderr = s.child.stderr.take().expect("stderr");
    let mut out = String::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        out.push_str(&line);
        out.push('\n');
        if line.contains("ready") {
            break;
        }
    }
    s.kill();
    assert!(
        out.contains("geometra-sidecar ready"),
        "no ready line:\n{out}"
    );
    out
}

#[test]
fn logs_to_a_pipe_have_no_colour_and_plain_addresses() {
    for env in [vec![], vec![("NO_COLOR", "1")], vec![("NO_COLOR", "")]] {
        let out = until_ready(&ANY_PORTS, &env);
        assert!(
            !out.contains("\x1b["),
            "escape codes in piped logs ({env:?}):\n{out:?}"
        );
        assert!(!out.contains("Some("), "{out}");
        // the addresses actually bound, the kernel's ports included
        let field = |k: &str| {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k}= in {out}"))
                .to_string()
        };
        let grpc = field("otlp_grpc");
        assert!(
            grpc.starts_with("127.0.0.1:") && !grpc.ends_with(":0"),
            "{out}"
        );
        let http = field("otlp_http");
        let ports: Vec<&str> = http
            .split(',')
            .filter_map(|a| a.rsplit(':').next())
            .collect();
        assert!(http.starts_with("127.0.0.1:"), "{out}");
        // localhost: ::1 on the same port, where the host has IPv6
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            assert!(http.contains(",[::1]:"), "{out}");
            assert_eq!(ports[0], ports[1], "{out}");
        }
    }
    let mut args = ANY_PORTS.to_vec();
    args[3] = "off";
    let out = until_ready(&args, &[]);
    assert!(out.contains(" otlp_http=off "), "{out}");
}

/// The sidecar's first log lines written to a terminal (a pty from
/// util-linux `script`), with `NO_COLOR` as given.
fn on_a_terminal(no_color: Option<&str>) -> String {
    let cmd = format!("timeout -s INT 3 {} {}", common::BIN, ANY_PORTS.join(" "));
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env_remove("NO_COLOR");
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let out = c.output().expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("geometra-sidecar ready"), "{text:?}");
    text
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    if !common::require(
        Command::new("script").arg("--version").output().is_ok(),
        "no `script` (util-linux) for a pty",
    ) {
        return;
    }
    assert!(
        on_a_terminal(None).contains("\x1b["),
        "no colour on a terminal"
    );
    assert!(
        on_a_terminal(Some("")).contains("\x1b["),
        "an empty NO_COLOR keeps colour"
    );
    let out = on_a_terminal(Some("1"));
    assert!(!out.contains("\x1b["), "NO_COLOR=1 still coloured: {out:?}");
}

#[test]
fn default_listeners_are_both_loopbacks_and_explicit_ones_exact() {
    let out = check_config("");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("otlp_grpc:\n    listen: localhost:4317"),
        "{text}"
    );
    assert!(
        text.contains("otlp_http:\n    listen: localhost:4318"),
        "{text}"
    );
    assert!(text.contains("listen: 0.0.0.0:9464"), "{text}");
    let out = check_config("receivers:\n  otlp_grpc:\n    listen: \"[::1]:4317\"\n  otlp_http:\n    listen: LocalHost:4000\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen: '[::1]:4317'"), "{text}");
    assert!(text.contains("listen: localhost:4000"), "{text}");
    let err = refused(
        "receivers:\n  otlp_grpc:\n    listen: example.com:4317\n",
        "receivers.otlp_grpc.listen",
        3,
    );
    assert!(err.contains("localhost:PORT"), "{err}");
    refused(
        "receivers:\n  otlp_grpc:\n    listen: localhost:70000\n",
        "receivers.otlp_grpc.listen",
        3,
    );
}

#[test]
fn cors_headers_max_age_and_wildcard_origins_are_checked() {
    let err = refused(
        "receivers:\n  otlp_http:\n    cors_allowed_headers: [x-tenant-id, \"x tenant\"]\n",
        "receivers.otlp_http.cors_allowed_headers[1]",
        3,
    );
    assert!(err.contains("\"x tenant\""), "{err}");
    refused(
        "receivers:\n  otlp_http:\n    cors_max_age: 100000\n",
        "receivers.otlp_http.cors_max_age",
        3,
    );
    refused(
        "receivers:\n  otlp_http:\n    cors_allowed_origins: [\"https://*.*.example.com\"]\n",
        "receivers.otlp_http.cors_allowed_origins[0]",
        3,
    );
    let out = check_config(
        "receivers:\n  otlp_http:\n    cors_allowed_origins: [\"https://*.geometra.ai\"]\n    cors_allowed_headers: [\"*\", X-Tenant-Id]\n    cors_max_age: 0\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every override: its flag, its variable, the key it sets (a YAML path),
/// the file's section around it, and three values (file, variable, flag).
const OVERRIDES: [(&str, &str, &str, &str, [&str; 3]); 7] = [
    (
        "--otlp-grpc-listen",
        "GEOMETRA_OTLP_GRPC_LISTEN",
        "receivers.otlp_grpc.listen",
        "",
        ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"],
    ),
    (
        "--otlp-http-listen",
        "GEOMETRA_OTLP_HTTP_LISTEN",
        "receivers.otlp_http.listen",
        "",
        ["127.0.0.1:5401", "127.0.0.1:5402", "127.0.0.1:5403"],
    ),
    (
        "--metrics-listen",
        "GEOMETRA_METRICS_LISTEN",
        "server.listen",
        "",
        ["127.0.0.1:5901", "127.0.0.1:5902", "127.0.0.1:5903"],
    ),
    (
        "--forward-logs-to",
        "GEOMETRA_FORWARD_LOGS_TO",
        "forward.logs.endpoint",
        "timeout: 5s",
        ["http://a:4317", "http://b:4317", "http://c:4317"],
    ),
    (
        "--remote-write-url",
        "GEOMETRA_REMOTE_WRITE_URL",
        "remote_write.url",
        "interval: 30s",
        ["http://a/push", "http://b/push", "http://c/push"],
    ),
    (
        "--queue-dir",
        "GEOMETRA_QUEUE_DIR",
        "forward.queue.dir",
        "max_items: 7",
        ["/tmp/qa", "/tmp/qb", "/tmp/qc"],
    ),
    (
        "--log-format",
        "GEOMETRA_LOG_FORMAT",
        "telemetry.log_format",
        "log_level: debug",
        ["json", "text", "json"],
    ),
];

/// A YAML document setting `path` to `value`, with `sibling` (a `key: value`
/// of the same section) beside it.
fn nested(path: &str, value: Option<&str>, sibling: &str) -> String {
    let keys: Vec<&str> = path.split('.').collect();
    let mut out = String::new();
    for (depth, k) in keys[..keys.len() - 1].iter().enumerate() {
        out += &format!("{}{k}:\n", "  ".repeat(depth));
    }
    let indent = "  ".repeat(keys.len() - 1);
    if let Some(v) = value {
        out += &format!("{indent}{}: {v}\n", keys[keys.len() - 1]);
    }
    if !sibling.is_empty() {
        out += &format!("{indent}{sibling}\n");
    }
    out
}

/// `check-config` with `file`, the variable and the flag as given, and no
/// other `GEOMETRA_*` variable; the effective config as YAML.
fn effective(
    file: &str,
    var: Option<(&str, &str)>,
    flag: Option<(&str, &str)>,
) -> serde_yaml_ng::Value {
    let f = config(file);
    let mut cmd = bin();
    cmd.args(["check-config", "--config"]).arg(f.path());
    for (_, v, _, _, _) in OVERRIDES {
        cmd.env_remove(v);
    }
    if let Some((k, v)) = var {
        cmd.env(k, v);
    }
    if let Some((k, v)) = flag {
        cmd.args([k, v]);
    }
    let out = cmd.output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{file}\n{var:?} {flag:?}\n{err}");
    serde_yaml_ng::from_slice(&out.stdout).expect("check-config prints YAML")
}

fn at<'a>(v: &'a serde_yaml_ng::Value, path: &str) -> &'a serde_yaml_ng::Value {
    path.split('.').fold(v, |v, k| &v[k])
}

fn text(v: &serde_yaml_ng::Value) -> String {
    serde_yaml_ng::to_string(v)
        .expect("yaml")
        .trim()
        .to_string()
}

#[test]
fn every_flag_wins_over_its_variable_which_wins_over_the_file_which_wins_over_the_default() {
    for (flag, var, path, sibling, [in_file, in_var, in_flag]) in OVERRIDES {
        let file = nested(path, Some(in_file), sibling);
        let sib_path = format!(
            "{}.{}",
            path.rsplit_once('.').expect("a section").0,
            sibling.split(':').next().unwrap_or("")
        );
        let cases = [
            (None, None, in_file),
            (Some((var, in_var)), None, in_var),
            (Some((var, in_var)), Some((flag, in_flag)), in_flag),
            (None, Some((flag, in_flag)), in_flag),
        ];
        for (v, f, want) in cases {
            let got = effective(&file, v, f);
            assert_eq!(text(at(&got, path)), want, "{path} with {v:?} {f:?}");
            if !sibling.is_empty() {
                let kept = sibling.split_once(": ").expect("key: value").1;
                assert_eq!(
                    text(at(&got, &sib_path)),
                    kept,
                    "{sib_path} kept with {v:?} {f:?}"
                );
            }
        }
    }
    // and nothing set: the embedded default
    let got = effective("", None, None);
    assert_eq!(
        text(at(&got, "receivers.otlp_grpc.listen")),
        "localhost:4317"
    );
    assert_eq!(text(at(&got, "telemetry.log_format")), "text");
}

#[test]
fn a_flag_or_variable_fills_in_the_key_a_partial_section_leaves_out() {
    for (flag, var, path, sibling, [_, in_var, in_flag]) in OVERRIDES {
        if sibling.is_empty() {
            continue;
        }
        let file = nested(path, None, sibling);
        for (v, f, want) in [
            (Some((var, in_var)), None, in_var),
            (None, Some((flag, in_flag)), in_flag),
        ] {
            let got = effective(&file, v, f);
            assert_eq!(text(at(&got, path)), want, "{file}");
        }
    }
}

#[test]
fn a_partial_section_without_its_flag_names_the_missing_key_and_how_to_give_it() {
    let err = refused("remote_write:\n  interval: 30s\n", "remote_write.url", 1);
    assert!(
        err.contains("is required") && err.contains("--remote-write-url"),
        "{err}"
    );
    let err = refused(
        "forward:\n  logs:\n    timeout: 5s\n",
        "forward.logs.endpoint",
        2,
    );
    assert!(
        err.contains("is required") && err.contains("--forward-logs-to"),
        "{err}"
    );
}

#[test]
fn a_bad_value_from_the_command_line_names_the_flag() {
    let out = bin()
        .args(["check-config", "--forward-logs-to", "ftp://x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("command line (--forward-logs-to / GEOMETRA_FORWARD_LOGS_TO): forward.logs.endpoint: must start with http:// or https://"),
        "{err}"
    );
}

#[test]
fn the_config_flag_wins_over_geometra_config() {
    let a = config("store:\n  max_series: 11\n");
    let b = config("store:\n  max_series: 22\n");
    let run = |flag: bool| {
        let mut cmd = bin();
        cmd.arg("check-config").env("GEOMETRA_CONFIG", a.path());
        if flag {
            cmd.arg("--config").arg(b.path());
        }
        let out = cmd.output().expect("run");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(run(false).contains("max_series: 11"));
    assert!(run(true).contains("max_series: 22"));
}

#[test]
fn keep_accepting_for_is_bounded() {
    let err = refused(
        "receivers:\n  keep_accepting_for: 6m\n",
        "receivers.keep_accepting_for",
        2,
    );
    assert!(err.contains("must be at most 5m"), "{err}");
}

#[test]
fn a_bad_price_table_is_refused_naming_the_entry_and_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("prices.yaml");
    let shown = p.display().to_string();
    std::fs::write(
        &p,
        "# prices\n- {match: gpt-4o*, input: 2.5, output: -10}\n",
    )
    .expect("write");
    let yaml = format!("store:\n  max_series: 100\nai:\n  prices_file: {shown}\n");
    let err = refused(&yaml, "ai.prices_file", 4);
    assert!(
        err.contains(&format!(
            "ai.prices_file: {shown}: [0] (line 2): output must be USD per million tokens, 0 or more at line 4"
        )),
        "{err}"
    );
    std::fs::write(&p, "- {match: gpt-4o*, input: 2.5}\n").expect("write");
    let err = refused(&yaml, "ai.prices_file", 4);
    assert!(
        err.contains(&format!("{shown}: [0]: missing field `output`")),
        "{err}"
    );
    let gone = dir.path().join("none.yaml");
    let yaml = format!("ai:\n  prices_file: {}\n", gone.display());
    let err = refused(&yaml, "ai.prices_file", 2);
    assert!(
        err.contains(&format!("cannot read price table {}", gone.display())),
        "{err}"
    );
}

#[test]
fn an_unknown_conventions_version_and_a_zero_label_cap_are_refused() {
    let err = refused("ai:\n  conventions: newest\n", "ai.conventions", 2);
    assert!(err.contains("unknown variant `newest`"), "{err}");
    let rule = "extra_rules:\n- name: m_total\n  kind: counter\n  signal: spans\n  labels:\n  - name: model\n    from: [gen_ai.request.model]\n    max_values: 0\n";
    let err = refused(rule, "extra_rules[0].labels[0].max_values", 8);
    assert!(err.contains("max_values: must be at least 1"), "{err}");
    let rule = rule.replace("max_values: 0", "overflow: other");
    let err = refused(&rule, "extra_rules[0].labels[0].overflow", 8);
    assert!(err.contains("overflow: only with `max_values`"), "{err}");
}
