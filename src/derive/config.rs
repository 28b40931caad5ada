//! The derivation rules' configuration (`rules:` and `extra_rules:`): the
//! rule schema, the embedded default rules, and the checks a rule set must
//! pass (names, buckets, labels that never identify a person).

use crate::base::values::err;
use crate::base::ConfigError;
use crate::metrics::config::HistogramFormat;
use crate::metrics::sanitize::{valid_label_name, valid_metric_name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The default derivation rules, written out (also what `print-default-config` shows).
pub const DEFAULT_RULES_YAML: &str = include_str!("default-rules.yaml");

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Spans,
    Logs,
    /// spans and logs
    Any,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Counter,
    Histogram,
    /// A gauge: the number of distinct values of `value_from` seen in the
    /// store's `active_users_window` (the values are hashed, never labels).
    DistinctCount,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Match {
    /// Any of these span kinds (empty: any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub span_kinds: Vec<SpanKind>,
    /// Every one of these attributes must be present.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes_present: Vec<String>,
    /// Each attribute must have this value (compared as text).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes_equal: BTreeMap<String, String>,
    /// Logs: the event name (event_name field, else the `event`, `message`
    /// or `msg` field of a map or JSON-object body, else a string body).
    /// Spans: the span has an event of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LabelRule {
    pub name: String,
    /// Attribute keys tried in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// A constant value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When `from` finds nothing: `error` if the span status is ERROR, the log
    /// severity is ERROR or worse, or an `error.type` attribute is present;
    /// `success` otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub outcome: bool,
    /// When nothing else gives a value. Without it, such an item is skipped
    /// by this rule and counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// At most this many distinct values from `from`; a later new value
    /// becomes `overflow` (a bounded label for names a client chooses, such
    /// as model names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_values: Option<usize>,
    /// The value past `max_values` (default `_OTHER`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub help: String,
    pub kind: RuleKind,
    pub signal: Signal,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<LabelRule>,
    /// Counter: `one` (default) or `attribute`; histogram: `duration`
    /// (default, seconds) or `attribute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ValueSource>,
    /// Attribute keys for `value: attribute` and for `distinct_count`, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_from: Vec<String>,
    /// Histogram bucket upper bounds, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<f64>,
    /// Histogram: classic, native or both buckets (default `store.histograms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histograms: Option<HistogramFormat>,
    /// Where the rule's data may come from: `app` (the in-pod listeners,
    /// the default), `browser` (the browser listener), or both.
    #[serde(default = "app_only")]
    pub sources: Vec<Source>,
    /// In force only when `ai.conventions` is this (the GenAI metrics of a
    /// conventions version); always when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_conventions: Option<super::ai::Conventions>,
}

/// Where data came from, for a rule's `sources`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// the app beside the sidecar: `receivers.otlp_grpc`, `receivers.otlp_http`
    App,
    /// strangers on the internet: `receivers.browser`
    Browser,
}

fn app_only() -> Vec<Source> {
    vec![Source::App]
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    One,
    Duration,
    Attribute,
    /// A counter of money: the span's cost in USD, from the app's own
    /// figure (`value_from`) else the tokens and `ai.prices_file`.
    Cost,
}

/// The default rules, from the embedded YAML (a unit test proves it parses).
pub fn default_rules() -> Vec<Rule> {
    serde_yaml_ng::from_str(DEFAULT_RULES_YAML).unwrap_or_default()
}

/// Attribute keys that identify a person: never allowed as a label source.
/// Compared case-insensitively and ignoring `.`, `_` and `-` (see
/// [`identifies_user`]).
pub const USER_ID_KEYS: &[&str] = &[
    "enduser.id",
    "enduser.pseudo.id",
    "enduser.name",
    "user.id",
    "user.email",
    "user.name",
    "user.full_name",
    "user.hash",
    "user",
    "email",
    "username",
    "session.id",
    "client.address",
    "customer.id",
    "account.id",
];

/// Checks a rule set: `rules` then `extra_rules` (their key paths), each
/// rule alone, and that rules making the same metric agree on its shape.
/// `histograms`: `store.histograms`, the default of a histogram rule.
pub fn validate_rules(
    rules: &[Rule],
    extra_rules: &[Rule],
    histograms: HistogramFormat,
) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<&str, (&Rule, String)> = BTreeMap::new();
    for (i, r) in rules.iter().chain(extra_rules).enumerate() {
        let at = if i < rules.len() {
            format!("rules[{i}]")
        } else {
            format!("extra_rules[{}]", i - rules.len())
        };
        validate_rule(r, &at)?;
        validate_histograms(r, histograms, &at)?;
        let names = r
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        match seen.get(r.name.as_str()) {
            Some((prev, prev_names))
                if prev.kind != r.kind || *prev_names != names || prev.buckets != r.buckets =>
            {
                return err(
                    &at,
                    &format!(
                        "metric {:?} is also made by another rule with another kind, labels or buckets",
                        r.name
                    ),
                );
            }
            Some(_) => {}
            None => {
                seen.insert(&r.name, (r, names));
            }
        }
    }
    Ok(())
}

/// One rule on its own (`at` is its key path).
fn validate_rule(r: &Rule, at: &str) -> Result<(), ConfigError> {
    validate_rule_name(&r.name, &format!("{at}.name"))?;
    if r.sources.is_empty() {
        return err(
            &format!("{at}.sources"),
            "name at least one of app, browser",
        );
    }
    validate_buckets(r, at)?;
    validate_value(r, at)?;
    if r.kind == RuleKind::DistinctCount && !r.labels.is_empty() {
        return err(&format!("{at}.labels"), "distinct_count has no labels");
    }
    if r.signal == Signal::Logs && !r.matcher.span_kinds.is_empty() {
        return err(
            &format!("{at}.match.span_kinds"),
            "log records have no span kind",
        );
    }
    for (j, l) in r.labels.iter().enumerate() {
        validate_label(l, &format!("{at}.labels[{j}]"))?;
    }
    if r.labels
        .iter()
        .enumerate()
        .any(|(j, l)| r.labels[..j].iter().any(|m| m.name == l.name))
    {
        return err(&format!("{at}.labels"), "label names must be unique");
    }
    Ok(())
}

/// Suffixes the exposition formats give series of their own (histogram
/// `_bucket`/`_count`/`_sum`, OpenMetrics `_created`): a rule named so would
/// clash with another family's series; and those of a distinct-count rule's
/// sketch families (`<rule>_sketch`, `<rule>_sketch_registers`).
pub const RESERVED_NAME_SUFFIXES: &[&str] = &[
    "_bucket",
    "_count",
    "_sum",
    "_created",
    "_sketch",
    "_sketch_registers",
];
/// Name prefixes of the sidecar's own metrics (and Prometheus' `scrape_*`).
pub const RESERVED_NAME_PREFIXES: &[&str] =
    &["otelcol_", "geometra_sidecar_", "process_", "scrape_"];
/// Names the sidecar or Prometheus write themselves.
pub const RESERVED_NAMES: &[&str] = &["target_info", "up"];

fn validate_rule_name(name: &str, at: &str) -> Result<(), ConfigError> {
    if !valid_metric_name(name) {
        return err(
            at,
            &format!("{name:?} is not a valid Prometheus metric name"),
        );
    }
    if let Some(sfx) = RESERVED_NAME_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
        return err(
            at,
            &format!(
                "{name:?} ends in {sfx:?}, which the exposition uses for a histogram's or \
                 OpenMetrics counter's own series: choose another name"
            ),
        );
    }
    let own = RESERVED_NAMES.contains(&name)
        || RESERVED_NAME_PREFIXES.iter().any(|p| name.starts_with(p));
    if own {
        return err(
            at,
            &format!("{name:?} is reserved for the sidecar's or Prometheus' own metrics"),
        );
    }
    Ok(())
}

fn validate_buckets(r: &Rule, at: &str) -> Result<(), ConfigError> {
    let at = format!("{at}.buckets");
    if r.kind != RuleKind::Histogram {
        return match r.buckets.is_empty() {
            true => Ok(()),
            false => err(&at, "only a histogram has buckets"),
        };
    }
    if r.buckets.windows(2).any(|w| w[0] >= w[1]) || r.buckets.iter().any(|b| !b.is_finite()) {
        return err(&at, "buckets must be finite and strictly ascending");
    }
    Ok(())
}

/// Which buckets a histogram rule keeps: classic ones need `buckets`.
fn validate_histograms(r: &Rule, store: HistogramFormat, at: &str) -> Result<(), ConfigError> {
    if r.kind != RuleKind::Histogram {
        return match r.histograms {
            None => Ok(()),
            Some(_) => err(&format!("{at}.histograms"), "only a histogram has buckets"),
        };
    }
    if r.histograms.unwrap_or(store).classic() && r.buckets.is_empty() {
        return err(
            &format!("{at}.buckets"),
            "a classic histogram needs buckets (or `histograms: native`)",
        );
    }
    Ok(())
}

fn validate_value(r: &Rule, at: &str) -> Result<(), ConfigError> {
    let msg = match (r.kind, r.value) {
        (RuleKind::DistinctCount, Some(_)) => {
            "distinct_count counts `value_from`; it takes no `value`"
        }
        (RuleKind::Counter, Some(ValueSource::Duration)) => {
            "a counter counts `one` or an `attribute`"
        }
        (RuleKind::Histogram, Some(ValueSource::One | ValueSource::Cost)) => {
            "a histogram observes `duration` or an `attribute`"
        }
        _ => "",
    };
    if !msg.is_empty() {
        return err(&format!("{at}.value"), msg);
    }
    if r.value == Some(ValueSource::Cost) && r.signal != Signal::Spans {
        return err(
            &format!("{at}.signal"),
            "a cost is read from GenAI spans: `signal: spans`",
        );
    }
    let needs_from = r.kind == RuleKind::DistinctCount || r.value == Some(ValueSource::Attribute);
    if needs_from && r.value_from.is_empty() {
        return err(
            &format!("{at}.value_from"),
            "needs at least one attribute key",
        );
    }
    Ok(())
}

fn validate_label(l: &LabelRule, at: &str) -> Result<(), ConfigError> {
    if !valid_label_name(&l.name) {
        return err(
            &format!("{at}.name"),
            &format!("{:?} is not a valid label name", l.name),
        );
    }
    if l.name == "le" || l.name == "otel_metric_overflow" {
        return err(&format!("{at}.name"), "this label name is reserved");
    }
    if l.from.is_empty() && l.value.is_none() && !l.outcome && l.default.is_none() {
        return err(at, "a label needs `from`, `value`, `outcome` or `default`");
    }
    validate_label_cap(l, at)?;
    if let Some(k) = l.from.iter().find(|k| identifies_user(k)) {
        return err(
            &format!("{at}.from"),
            &format!("{k:?} identifies a user: it can never be a label (cardinality and privacy)"),
        );
    }
    Ok(())
}

/// `max_values` and `overflow`: a cap on values from `from`.
fn validate_label_cap(l: &LabelRule, at: &str) -> Result<(), ConfigError> {
    match (l.max_values, &l.overflow) {
        (Some(0), _) => err(&format!("{at}.max_values"), "must be at least 1"),
        (Some(_), _) if l.from.is_empty() => err(
            &format!("{at}.max_values"),
            "caps the values of `from`: name the attributes",
        ),
        (None, Some(_)) => err(&format!("{at}.overflow"), "only with `max_values`"),
        _ => Ok(()),
    }
}

/// Whether an attribute key names a person ([`USER_ID_KEYS`], compared
/// case-insensitively and ignoring `.`, `_` and `-`, so `User.Id`, `userId`
/// and `USER-ID` are all `user.id`).
pub fn identifies_user(key: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '.' | '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let k = norm(key);
    USER_ID_KEYS.iter().any(|u| norm(u) == k)
}

/// What a deriver is compiled from: the rules in force (`rules`, then
/// `extra_rules`) and the `store:` limits they use.
#[derive(Clone, Copy)]
pub struct DeriveConfig<'a> {
    pub rules: &'a [Rule],
    pub extra_rules: &'a [Rule],
    pub store: &'a crate::metrics::config::StoreConfig,
    pub ai: &'a super::ai::AiConfig,
}

impl DeriveConfig<'_> {
    /// All rules in effect, in order (those of another `ai.conventions` left out).
    pub fn all_rules(&self) -> impl Iterator<Item = &Rule> {
        let conv = self.ai.conventions;
        self.rules
            .iter()
            .chain(self.extra_rules.iter())
            .filter(move |r| r.ai_conventions.is_none_or(|c| c == conv))
    }
}
