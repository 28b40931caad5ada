//! Configuration: the YAML schema, its embedded defaults, and validation.
//! Every key is optional; an unknown or mistyped key is refused with its path
//! and line, never silently defaulted.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

// the exporters' own sections, declared next to the exporters
pub use crate::export::otlp::config::{
    Batch, Compression, Endpoint, Forward, Protocol, Queue, Retry,
};
pub use crate::export::remote_write::config::{BasicAuth, RemoteWrite};

/// The default derivation rules, written out (also what `print-default-config` shows).
pub const DEFAULT_RULES_YAML: &str = include_str!("default-rules.yaml");

/// A duration written as `500ms`, `10s`, `5m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write e.g. 500ms, 10s, 5m"
            ))
        })
    }
}
impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// A listen address: `IP:PORT` is exactly that socket; `localhost:PORT`
/// is both loopback addresses, 127.0.0.1 and ::1 (the latter where the host
/// has IPv6), so a client whose `localhost` resolves to either reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddr {
    Exact(SocketAddr),
    Localhost(u16),
}

impl ListenAddr {
    pub const fn localhost(port: u16) -> ListenAddr {
        ListenAddr::Localhost(port)
    }

    pub fn port(&self) -> u16 {
        match self {
            ListenAddr::Exact(a) => a.port(),
            ListenAddr::Localhost(p) => *p,
        }
    }

    /// Whether a client connecting to `host:port` reaches this listener
    /// (by address: a name other than `localhost` is not resolved).
    pub fn reached_by(&self, host: &str, port: u16) -> bool {
        let ip = host.parse::<std::net::IpAddr>().ok();
        let local = host.eq_ignore_ascii_case("localhost")
            || ip.is_some_and(|ip| ip.is_loopback() || ip.is_unspecified());
        port == self.port()
            && match self {
                ListenAddr::Localhost(_) => local,
                ListenAddr::Exact(a) => {
                    a.ip().is_unspecified() && local
                        || ip == Some(a.ip())
                        || local && a.ip().is_loopback()
                }
            }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let localhost = s
            .rsplit_once(':')
            .filter(|(h, _)| h.eq_ignore_ascii_case("localhost"));
        if let Some((_, port)) = localhost {
            return port.parse().map(ListenAddr::Localhost).map_err(|_| {
                format!("invalid listen address {s:?}: the port must be a number 0-65535")
            });
        }
        s.parse().map(ListenAddr::Exact).map_err(|_| {
            format!("invalid listen address {s:?}: write IP:PORT, [IPv6]:PORT or localhost:PORT")
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Exact(a) => write!(f, "{a}"),
            ListenAddr::Localhost(p) => write!(f, "localhost:{p}"),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub receivers: Receivers,
    pub server: Server,
    pub store: Store,
    pub passthrough: Passthrough,
    /// When given, replaces the default rules.
    #[serde(default = "default_rules")]
    pub rules: Vec<Rule>,
    /// Appended to `rules`.
    pub extra_rules: Vec<Rule>,
    pub forward: Forward,
    /// Prometheus remote write of the store's metrics; off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_write: Option<RemoteWrite>,
    pub redaction: Redaction,
    pub telemetry: Telemetry,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            receivers: Receivers::default(),
            server: Server::default(),
            store: Store::default(),
            passthrough: Passthrough::default(),
            rules: default_rules(),
            extra_rules: Vec::new(),
            forward: Forward::default(),
            remote_write: None,
            redaction: Redaction::default(),
            telemetry: Telemetry::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Receivers {
    pub otlp_grpc: OtlpGrpc,
    pub otlp_http: OtlpHttp,
    /// The deepest `AnyValue` nesting (attribute values, log bodies) accepted
    /// in a forwarded request; deeper is refused with INVALID_ARGUMENT / 400.
    #[serde(default = "default_value_depth")]
    pub max_value_depth: u32,
    /// The most bytes all OTLP requests being read or worked on may hold
    /// together (`receiver/admit.rs`); past it a request is refused,
    /// retryable. At least the larger of the two message limits.
    #[serde(default = "default_in_flight")]
    pub max_in_flight_bytes: usize,
    /// The most of it the requests of one gRPC connection may hold, so that
    /// one connection stalling large requests cannot take the whole budget
    /// from the other clients. Unset: [`Receivers::in_flight_per_connection`].
    pub max_in_flight_bytes_per_connection: Option<usize>,
}
fn default_value_depth() -> u32 {
    crate::receiver::validate::DEFAULT_VALUE_DEPTH
}
/// 32 MiB: eight requests of the largest size, a hundred and more of the
/// usual 200-300 KB, with the sidecar's own ~10 MiB well inside the Helm
/// chart's 64 MiB limit.
fn default_in_flight() -> usize {
    32 << 20
}
/// A quarter of the default budget: two requests of the largest size
/// from one connection, the rest for the others.
const DEFAULT_IN_FLIGHT_PER_CONNECTION: usize = 8 << 20;

impl Receivers {
    /// The largest single request accepted, either transport.
    pub fn largest_request(&self) -> usize {
        self.otlp_http
            .max_body_bytes
            .max(self.otlp_grpc.max_message_bytes)
    }

    /// `max_in_flight_bytes_per_connection`, or unset 8 MiB, raised to the
    /// largest request and lowered to the budget (so that a config that
    /// changes only those keys stays valid).
    pub fn in_flight_per_connection(&self) -> usize {
        self.max_in_flight_bytes_per_connection.unwrap_or_else(|| {
            DEFAULT_IN_FLIGHT_PER_CONNECTION
                .min(self.max_in_flight_bytes)
                .max(self.largest_request())
        })
    }
}
impl Default for Receivers {
    fn default() -> Self {
        Receivers {
            otlp_grpc: OtlpGrpc::default(),
            otlp_http: OtlpHttp::default(),
            max_value_depth: default_value_depth(),
            max_in_flight_bytes: default_in_flight(),
            max_in_flight_bytes_per_connection: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpGrpc {
    pub listen: ListenAddr,
    pub max_message_bytes: usize,
}
impl Default for OtlpGrpc {
    fn default() -> Self {
        OtlpGrpc {
            listen: ListenAddr::localhost(4317),
            max_message_bytes: 4 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpHttp {
    /// null disables the OTLP/HTTP receiver.
    pub listen: Option<ListenAddr>,
    pub max_body_bytes: usize,
    /// Origins allowed to post from a browser: exact, "*", or one "*" for
    /// part of the host (`https://*.example.com`).
    pub cors_allowed_origins: Vec<String>,
    /// Request headers a browser may send besides the defaults (matched
    /// ignoring case; "*" allows any).
    pub cors_allowed_headers: Vec<String>,
    /// Seconds a browser may cache a preflight answer (Access-Control-Max-Age).
    pub cors_max_age: u32,
}
impl Default for OtlpHttp {
    fn default() -> Self {
        OtlpHttp {
            listen: Some(ListenAddr::localhost(4318)),
            max_body_bytes: 4 << 20,
            cors_allowed_origins: Vec::new(),
            cors_allowed_headers: Vec::new(),
            cors_max_age: 7200,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub listen: ListenAddr,
    /// Limits of every listener's connections (4317, 4318, 9464).
    pub connections: Connections,
}
impl Default for Server {
    fn default() -> Self {
        Server {
            listen: ListenAddr::Exact(SocketAddr::from(([0, 0, 0, 0], 9464))),
            connections: Connections::default(),
        }
    }
}

/// Bounds on slow, silent or too many connections, per listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Connections {
    /// HTTP/1: the request line and headers must arrive within this.
    pub header_read_timeout: Dur,
    /// A request, body included, must be received and answered within this.
    pub request_timeout: Dur,
    /// A connection with no traffic for this long is closed (gRPC clients
    /// answer the sidecar's keep-alive pings, so a live one never idles).
    pub idle_timeout: Dur,
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
}
impl Default for Connections {
    fn default() -> Self {
        Connections {
            header_read_timeout: Dur(Duration::from_secs(10)),
            request_timeout: Dur(Duration::from_secs(30)),
            idle_timeout: Dur(Duration::from_secs(60)),
            max_connections: 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    pub max_series_per_metric: usize,
    pub series_ttl: Dur,
    pub active_users_window: Dur,
    pub max_active_users: usize,
    /// Longest label value (derived and pass-through alike); a longer one
    /// drops the item, counted as `label_too_long`.
    #[serde(deserialize_with = "label_value_bytes")]
    pub max_label_value_bytes: usize,
    /// Most series across all metrics (past it, new series go to their
    /// metric's overflow series).
    #[serde(deserialize_with = "at_least_one")]
    pub max_series: usize,
    /// Most estimated exposition bytes of all series together (lines times
    /// name, labels and value), the same overflow past it.
    #[serde(deserialize_with = "at_least_one")]
    pub max_series_bytes: usize,
    /// Most pass-through metric families (past it, `family_limit`).
    #[serde(deserialize_with = "at_least_one")]
    pub max_passthrough_families: usize,
    /// The share (1-100 %) of `max_series` and `max_series_bytes` that
    /// pass-through series may take; the rest stays free for the derived
    /// metrics, so an application's metrics can never push the dashboards'
    /// series into overflow.
    pub passthrough_share_percent: usize,
    /// Buckets of derived histograms: `classic` (the rule's `buckets`, what
    /// the text formats and the seed's `_bucket` queries read), `native`
    /// (Prometheus' exponential buckets) or `both`; a rule may override it.
    pub histograms: HistogramFormat,
    /// Starting resolution of native histograms (-4 ..= 8; 3 is
    /// client_golang's bucket factor 1.1).
    pub native_histogram_schema: i32,
    /// Most buckets per side of a native histogram; past it the resolution
    /// is halved (neighbouring buckets merged), as client_golang does.
    #[serde(deserialize_with = "at_least_one")]
    pub native_histogram_max_buckets: usize,
}

/// Which buckets a derived histogram keeps (`store.histograms`, a rule's `histograms`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HistogramFormat {
    #[default]
    Classic,
    Native,
    Both,
}

impl HistogramFormat {
    pub fn classic(self) -> bool {
        self != HistogramFormat::Native
    }
    pub fn native(self) -> bool {
        self != HistogramFormat::Classic
    }
}
impl Default for Store {
    fn default() -> Self {
        Store {
            max_series_per_metric: 2000,
            series_ttl: Dur(Duration::from_secs(600)),
            active_users_window: Dur(Duration::from_secs(300)),
            max_active_users: 100_000,
            max_label_value_bytes: 2048,
            max_series: 50_000,
            max_series_bytes: 8 << 20,
            max_passthrough_families: 1000,
            passthrough_share_percent: 50,
            histograms: HistogramFormat::Classic,
            native_histogram_schema: crate::metrics::native::DEFAULT_SCHEMA,
            native_histogram_max_buckets: crate::metrics::native::DEFAULT_MAX_BUCKETS,
        }
    }
}

/// `store.max_label_value_bytes`: 1 to what the series key encoding holds
/// (refused at parse time, so the error names the key and the line).
fn label_value_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let max = crate::metrics::store::MAX_LABEL_VALUE_BYTES;
    let v = usize::deserialize(d)?;
    if v == 0 || v > max {
        return Err(serde::de::Error::custom(format!(
            "must be between 1 and {max}, not {v}"
        )));
    }
    Ok(v)
}

fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(v)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Passthrough {
    pub enabled: bool,
    /// Adds `otel_scope_name` and `otel_scope_version` labels (compatibility spec).
    pub scope_labels: bool,
    /// Adds `job` and `instance` from the resource to every series (on by
    /// default: without them, processes of one service overwrite each
    /// other's series).
    pub resource_labels: bool,
}
impl Default for Passthrough {
    fn default() -> Self {
        Passthrough {
            enabled: true,
            scope_labels: false,
            resource_labels: true,
        }
    }
}

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
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    One,
    Duration,
    Attribute,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RedactAction {
    Drop,
    Hash,
    Truncate,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    pub key: String,
    pub action: RedactAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Redaction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<RedactRule>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Telemetry {
    pub log_level: String,
    pub log_format: LogFormat,
    /// The sidecar's own traces, logs and metrics over OTLP (off unless
    /// `endpoint` is set), like the Collector's `service.telemetry`.
    #[serde(skip_serializing_if = "TelemetryOtlp::is_off")]
    pub otlp: TelemetryOtlp,
}
impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            log_level: "info".into(),
            log_format: LogFormat::Text,
            otlp: TelemetryOtlp::default(),
        }
    }
}

/// `telemetry.otlp`: where the sidecar sends its own telemetry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryOtlp {
    /// `http://host:4317` (gRPC) or `http://host:4318` (OTLP/HTTP, with
    /// `protocol: http`; `/v1/<signal>` is appended); unset: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How often self-metrics are pushed.
    pub interval: Dur,
    pub timeout: Dur,
    /// Resource attributes added to (and overriding) those from the
    /// environment (`OTEL_RESOURCE_ATTRIBUTES`, `K8S_POD_NAME`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resource: BTreeMap<String, String>,
    /// Allow an endpoint that is this sidecar's own OTLP receiver (its own
    /// telemetry is then derived and forwarded like any app's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_self: bool,
}
impl Default for TelemetryOtlp {
    fn default() -> Self {
        TelemetryOtlp {
            endpoint: None,
            protocol: Protocol::Grpc,
            headers: BTreeMap::new(),
            interval: Dur(Duration::from_secs(60)),
            timeout: Dur(Duration::from_secs(10)),
            resource: BTreeMap::new(),
            allow_self: false,
        }
    }
}
impl TelemetryOtlp {
    pub fn is_off(&self) -> bool {
        *self == TelemetryOtlp::default()
    }
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

/// A config error, naming the key.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

impl Config {
    /// Parses YAML text (errors name the key path and the line).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            // serde_path_to_error names the full key path even for errors
            // raised inside a value (a bad duration, address or enum).
            serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)).map_err(
                |e| {
                    let path = e.path().to_string();
                    let inner = e.into_inner().to_string();
                    // the YAML error may start with its own, shorter, path
                    let inner = match inner.split_once(": ") {
                        Some((p, rest)) if path.starts_with(p) && !p.contains(' ') => {
                            rest.to_string()
                        }
                        _ => inner,
                    };
                    if path == "." {
                        ConfigError(format!("{origin}: {inner}"))
                    } else {
                        ConfigError(format!("{origin}: {path}: {inner}"))
                    }
                },
            )?
        };
        cfg.validate()
            .map_err(|e| ConfigError(format!("{origin}: {}", with_line(text, &e.0))))?;
        Ok(cfg)
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = crate::fsread::read_string(path, crate::fsread::CONFIG_MAX, "config file")
            .map_err(ConfigError)?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// All rules in effect.
    pub fn all_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().chain(self.extra_rules.iter())
    }

    /// Checks what serde cannot: names, buckets, limits, consistency
    /// between rules. The error starts with the key path (`a.b[0].c: ...`);
    /// [`Config::from_yaml`] adds the line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_receivers()?;
        self.validate_store()?;
        self.validate_connections()?;
        self.validate_rules()?;
        self.validate_redaction()?;
        self.forward.validate()?;
        if let Some(rw) = &self.remote_write {
            rw.validate()?;
        }
        self.validate_telemetry()?;
        validate_log_level(&self.telemetry.log_level)
    }

    /// `telemetry.otlp`: a URL, a sane interval, and not this sidecar's own
    /// receiver unless `allow_self` says so (its own telemetry would be
    /// derived and forwarded, and every export would log, be exported...).
    fn validate_telemetry(&self) -> Result<(), ConfigError> {
        let t = &self.telemetry.otlp;
        let Some(ep) = &t.endpoint else {
            return Ok(());
        };
        let Some(rest) = ep
            .strip_prefix("http://")
            .or_else(|| ep.strip_prefix("https://"))
        else {
            return err(
                "telemetry.otlp.endpoint",
                "must start with http:// or https://",
            );
        };
        if t.interval.0 < Duration::from_secs(1) {
            return err("telemetry.otlp.interval", "must be at least 1s");
        }
        if t.timeout.0.is_zero() {
            return err("telemetry.otlp.timeout", "must be more than 0");
        }
        let authority = rest.split('/').next().unwrap_or("");
        if !t.allow_self && self.is_own_receiver(authority) {
            return err(
                "telemetry.otlp.endpoint",
                &format!(
                    "{ep} is this sidecar's own OTLP receiver: its own telemetry would be \
                     derived and forwarded as an app's; send it to a Collector, or set \
                     telemetry.otlp.allow_self: true if that is meant"
                ),
            );
        }
        Ok(())
    }

    /// Whether `host:port` reaches one of this sidecar's OTLP listeners.
    fn is_own_receiver(&self, authority: &str) -> bool {
        let Some((host, Ok(port))) = authority
            .rsplit_once(':')
            .map(|(h, p)| (h, p.parse::<u16>()))
        else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let r = &self.receivers;
        r.otlp_grpc.listen.reached_by(host, port)
            || r.otlp_http.listen.is_some_and(|l| l.reached_by(host, port))
    }

    fn validate_receivers(&self) -> Result<(), ConfigError> {
        if self.receivers.otlp_grpc.max_message_bytes < 1024 {
            return err(
                "receivers.otlp_grpc.max_message_bytes",
                "must be at least 1024",
            );
        }
        let depth = self.receivers.max_value_depth;
        let max = crate::receiver::validate::MAX_VALUE_DEPTH;
        if depth == 0 || depth > max {
            return err(
                "receivers.max_value_depth",
                &format!("must be between 1 and {max} (prost's recursion limit)"),
            );
        }
        let http = &self.receivers.otlp_http;
        if http.max_body_bytes == 0 {
            return err("receivers.otlp_http.max_body_bytes", "must be at least 1");
        }
        validate_in_flight(&self.receivers)?;
        validate_cors(http)
    }

    fn validate_connections(&self) -> Result<(), ConfigError> {
        let c = &self.server.connections;
        for (key, d) in [
            ("header_read_timeout", c.header_read_timeout),
            ("request_timeout", c.request_timeout),
            ("idle_timeout", c.idle_timeout),
        ] {
            if d.0.is_zero() {
                return err(
                    &format!("server.connections.{key}"),
                    "must be longer than 0s",
                );
            }
        }
        if c.max_connections == 0 || c.max_connections > u32::MAX as usize {
            return err(
                "server.connections.max_connections",
                "must be between 1 and 4294967295",
            );
        }
        Ok(())
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        let st = &self.store;
        if st.max_series_per_metric == 0 {
            return err("store.max_series_per_metric", "must be at least 1");
        }
        if st.max_active_users == 0 {
            return err("store.max_active_users", "must be at least 1");
        }
        if !(1..=100).contains(&st.passthrough_share_percent) {
            return err(
                "store.passthrough_share_percent",
                "must be between 1 and 100",
            );
        }
        if st.series_ttl.0.is_zero() {
            return err("store.series_ttl", "must be longer than 0s");
        }
        if st.active_users_window.0.is_zero() {
            return err("store.active_users_window", "must be longer than 0s");
        }
        let (lo, hi) = (
            crate::metrics::native::MIN_SCHEMA,
            crate::metrics::native::MAX_SCHEMA,
        );
        if !(lo..=hi).contains(&st.native_histogram_schema) {
            return err(
                "store.native_histogram_schema",
                &format!("must be between {lo} and {hi}"),
            );
        }
        Ok(())
    }

    fn validate_rules(&self) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<&str, (&Rule, String)> = BTreeMap::new();
        for (i, r) in self.all_rules().enumerate() {
            let at = if i < self.rules.len() {
                format!("rules[{i}]")
            } else {
                format!("extra_rules[{}]", i - self.rules.len())
            };
            validate_rule(r, &at)?;
            validate_histograms(r, self.store.histograms, &at)?;
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

    fn validate_redaction(&self) -> Result<(), ConfigError> {
        for (i, r) in self.redaction.attributes.iter().enumerate() {
            if r.action == RedactAction::Truncate && r.max_length.is_none() {
                return err(
                    &format!("redaction.attributes[{i}].max_length"),
                    "truncate needs max_length",
                );
            }
        }
        let hashes = self
            .redaction
            .attributes
            .iter()
            .any(|r| r.action == RedactAction::Hash);
        if hashes && self.redaction.hash_key_file.is_none() {
            return err(
                "redaction.hash_key_file",
                "the hash action needs a key file",
            );
        }
        Ok(())
    }
}

/// An error at `key`.
fn err(key: &str, msg: &str) -> Result<(), ConfigError> {
    Err(ConfigError(format!("{key}: {msg}")))
}

/// One rule on its own (`at` is its key path).
fn validate_rule(r: &Rule, at: &str) -> Result<(), ConfigError> {
    validate_rule_name(&r.name, &format!("{at}.name"))?;
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
/// clash with another family's series.
pub const RESERVED_NAME_SUFFIXES: &[&str] = &["_bucket", "_count", "_sum", "_created"];
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
        (RuleKind::Histogram, Some(ValueSource::One)) => {
            "a histogram observes `duration` or an `attribute`"
        }
        _ => "",
    };
    if !msg.is_empty() {
        return err(&format!("{at}.value"), msg);
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
    if let Some(k) = l.from.iter().find(|k| identifies_user(k)) {
        return err(
            &format!("{at}.from"),
            &format!("{k:?} identifies a user: it can never be a label (cardinality and privacy)"),
        );
    }
    Ok(())
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

/// The CORS keys of `receivers.otlp_http`.
/// The in-flight budget holds the largest request, and a connection's
/// share lies between the largest request and the whole budget.
fn validate_in_flight(r: &Receivers) -> Result<(), ConfigError> {
    let largest = r.largest_request();
    let which = "receivers.otlp_grpc.max_message_bytes, receivers.otlp_http.max_body_bytes";
    if r.max_in_flight_bytes < largest {
        return err(
            "receivers.max_in_flight_bytes",
            &format!("must be at least the largest request accepted ({largest} bytes: {which})"),
        );
    }
    let key = "receivers.max_in_flight_bytes_per_connection";
    match r.max_in_flight_bytes_per_connection {
        Some(n) if n < largest => err(
            key,
            &format!("must be at least the largest request accepted ({largest} bytes: {which})"),
        ),
        Some(n) if n > r.max_in_flight_bytes => err(
            key,
            &format!(
                "must be at most receivers.max_in_flight_bytes ({} bytes)",
                r.max_in_flight_bytes
            ),
        ),
        _ => Ok(()),
    }
}

fn validate_cors(http: &OtlpHttp) -> Result<(), ConfigError> {
    for (i, o) in http.cors_allowed_origins.iter().enumerate() {
        if !valid_cors_origin(o) {
            return err(
                &format!("receivers.otlp_http.cors_allowed_origins[{i}]"),
                &format!(
                    "{o:?} is not an origin: write \"*\", scheme://host[:port], or one \"*\" \
                     for part of the host as in https://*.example.com \
                     (http or https, visible ASCII, no path, no whitespace)"
                ),
            );
        }
    }
    for (i, h) in http.cors_allowed_headers.iter().enumerate() {
        if h != "*" && (h.is_empty() || !h.bytes().all(is_token_char)) {
            return err(
                &format!("receivers.otlp_http.cors_allowed_headers[{i}]"),
                &format!(
                    "{h:?} is not a header name: write a name such as x-tenant-id \
                     (letters, digits and !#$%&'*+-.^_`|~), or \"*\" for any"
                ),
            );
        }
    }
    if http.cors_max_age > MAX_CORS_MAX_AGE {
        return err(
            "receivers.otlp_http.cors_max_age",
            &format!(
                "{} is more than browsers keep a preflight: at most {MAX_CORS_MAX_AGE} \
                 seconds (Firefox's cap; Chromium's is 7200)",
                http.cors_max_age
            ),
        );
    }
    Ok(())
}

/// The longest preflight cache any browser honours (Firefox: 24 h).
const MAX_CORS_MAX_AGE: u32 = 86_400;

/// A character of an RFC 9110 token (a header name).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `*`, or an origin as browsers send it: `scheme://host[:port]`, with at
/// most one `*` standing for part of it.
fn valid_cors_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest.bytes().filter(|&b| b == b'*').count() <= 1
        && rest.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// The levels `telemetry.log_level` takes, alone or as `target=level`.
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

fn validate_log_level(s: &str) -> Result<(), ConfigError> {
    let ok = |lvl: &str| LOG_LEVELS.contains(&lvl.trim().to_ascii_lowercase().as_str());
    let bad = s.split(',').find(|d| match d.split_once('=') {
        Some((target, lvl)) => target.trim().is_empty() || !ok(lvl),
        None => !ok(d),
    });
    match bad {
        Some(d) => err(
            "telemetry.log_level",
            &format!(
                "{d:?} is not a level: write one of {} or target=level, comma-separated",
                LOG_LEVELS.join(", ")
            ),
        ),
        None => Ok(()),
    }
}

/// Appends ` at line N` to a validation error `key.path: message` when the
/// key is found in the YAML text.
fn with_line(text: &str, e: &str) -> String {
    match e.split_once(": ").and_then(|(path, _)| locate(text, path)) {
        Some(line) => format!("{e} at line {line}"),
        None => e.to_string(),
    }
}

/// One step of a key path: a map key or a sequence index.
enum Seg<'a> {
    Key(&'a str),
    Idx(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, idx) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        for i in idx.split('[') {
            if let Ok(n) = i.trim_end_matches(']').parse() {
                out.push(Seg::Idx(n));
            }
        }
    }
    out
}

/// The 1-based line of a key path in block-style YAML (the line of the
/// deepest key found: a key inside a flow mapping `{a: 1}` gives the line of
/// that mapping). A heuristic for error messages, never for meaning.
fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let skip = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
    // the region of the current node: lines [start, end), entries deeper than `col`
    let (mut start, mut end, mut col) = (0usize, lines.len(), -1isize);
    let mut found = None;
    for seg in segments(path) {
        let region = (start..end).filter(|&i| !skip(lines[i]));
        let hit = match seg {
            Seg::Key(k) => {
                // (line, column of its key, the text from the key on)
                let keys: Vec<(usize, isize, &str)> = region
                    .map(|i| {
                        let body = lines[i].trim_start().trim_start_matches("- ").trim_start();
                        (i, (lines[i].len() - body.len()) as isize, body)
                    })
                    .filter(|(_, c, _)| *c > col)
                    .collect();
                let level = keys.iter().map(|(_, c, _)| *c).min();
                keys.into_iter()
                    .find(|(_, c, body)| {
                        Some(*c) == level
                            && body
                                .strip_prefix(k)
                                .is_some_and(|r| r.trim_start().starts_with(':'))
                    })
                    .map(|(i, c, _)| (i, c, i + 1))
            }
            Seg::Idx(n) => {
                let dashes: Vec<usize> = region
                    .filter(|&i| lines[i].trim_start().starts_with('-'))
                    .collect();
                let d = dashes.iter().map(|&i| indent(lines[i])).min();
                dashes
                    .into_iter()
                    .filter(|&i| Some(indent(lines[i])) == d)
                    .nth(n)
                    .map(|i| (i, indent(lines[i]) as isize, i))
            }
        };
        let Some((line, c, next)) = hit else { break };
        found = Some(line + 1);
        // the node runs until a line at its own level or shallower
        let stop = (line + 1..end)
            .find(|&i| {
                let l = lines[i];
                !skip(l)
                    && ((indent(l) as isize) < c
                        || (indent(l) as isize == c
                            && (matches!(seg, Seg::Idx(_)) || !l.trim_start().starts_with('-'))))
            })
            .unwrap_or(end);
        (start, end, col) = (next, stop, c);
    }
    found
}

pub fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !s.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e =
            Config::from_yaml("passthrough:\n  resource_labels: maybe\n", "f.yaml").unwrap_err();
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
        let y =
            "extra_rules:\n- name: h\n  kind: histogram\n  signal: spans\n  buckets: [1, 0.5]\n";
        assert!(Config::from_yaml(y, "f")
            .unwrap_err()
            .0
            .contains("extra_rules[0].buckets"));
    }
}
