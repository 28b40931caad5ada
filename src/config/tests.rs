use super::*;
use crate::derive::config::DEFAULT_RULES_YAML;

#[test]
fn embedded_default_rules_parse_and_validate() {
    let rules: Vec<Rule> =
        serde_yaml_ng::from_str(DEFAULT_RULES_YAML).expect("embedded rules parse");
    assert!(rules.len() >= 6);
    let cfg = Config::default();
    assert_eq!(cfg.rules, rules);
    cfg.validate().expect("defaults validate");
    // the printed default config reads back as the same config
    let back = Config::from_yaml(&cfg.to_yaml(), "printed").expect("round trip");
    assert_eq!(back, cfg);
}

#[test]
fn unknown_key_is_refused_with_path_and_line() {
    let e = Config::from_yaml("receivers:\n  otlp_grpc:\n    lisen: 1.2.3.4:1\n", "f.yaml")
        .unwrap_err();
    assert!(e.0.contains("lisen"), "{e}");
    assert!(e.0.contains("line 3"), "{e}");
    assert!(e.0.contains("otlp_grpc"), "{e}");
}

#[test]
fn resource_labels_default_on_and_only_a_boolean() {
    assert!(Config::default().passthrough.resource_labels);
    let off = Config::from_yaml("passthrough:\n  resource_labels: false\n", "f.yaml");
    assert!(!off.expect("false is accepted").passthrough.resource_labels);
    let e = Config::from_yaml("passthrough:\n  resource_labels: maybe\n", "f.yaml").unwrap_err();
    assert!(e.0.contains("passthrough.resource_labels"), "{e}");
    assert!(e.0.contains("line 2"), "{e}");
}

#[test]
fn user_id_label_is_refused() {
    let y = "extra_rules:\n- name: by_user\n  kind: counter\n  signal: spans\n  labels:\n  - name: user\n    from: [enduser.id]\n";
    let e = Config::from_yaml(y, "f").unwrap_err();
    assert!(e.0.contains("extra_rules[0].labels[0].from"), "{e}");
}

#[test]
fn store_limits_are_checked_with_key_and_line() {
    for (y, key) in [
        (
            "store:\n  max_label_value_bytes: 70000\n",
            "max_label_value_bytes",
        ),
        (
            "store:\n  max_label_value_bytes: 0\n",
            "max_label_value_bytes",
        ),
        ("store:\n  max_series: 0\n", "max_series"),
        ("store:\n  max_series_bytes: 0\n", "max_series_bytes"),
        (
            "store:\n  max_passthrough_families: 0\n",
            "max_passthrough_families",
        ),
        (
            "store:\n  passthrough_share_percent: 0\n",
            "passthrough_share_percent",
        ),
        (
            "store:\n  passthrough_share_percent: 101\n",
            "passthrough_share_percent",
        ),
    ] {
        let e = Config::from_yaml(y, "f").unwrap_err();
        assert!(e.0.contains(&format!("store.{key}")), "{e}");
        assert!(e.0.contains("line 2"), "{e}");
    }
    let ok = Config::from_yaml("store:\n  max_label_value_bytes: 16384\n", "f");
    assert_eq!(ok.map(|c| c.store.max_label_value_bytes), Ok(16384));
}

#[test]
fn bad_duration_and_buckets_are_refused() {
    assert!(Config::from_yaml("store:\n  series_ttl: soon\n", "f")
        .unwrap_err()
        .0
        .contains("series_ttl"));
    let y = "extra_rules:\n- name: h\n  kind: histogram\n  signal: spans\n  buckets: [1, 0.5]\n";
    assert!(Config::from_yaml(y, "f")
        .unwrap_err()
        .0
        .contains("extra_rules[0].buckets"));
}
