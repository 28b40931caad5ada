//! The receivers' configuration (`receivers:`, and the connection limits
//! under `server.connections` that every listener applies), with its
//! validation.

use super::browser::config::Browser;
use crate::base::values::err;
use crate::base::{ConfigError, Dur, ListenAddr};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Receivers {
    pub otlp_grpc: OtlpGrpc,
    pub otlp_http: OtlpHttp,
    /// The listener for browsers (off by default): see `browser/config.rs`.
    pub browser: Browser,
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
    /// After SIGTERM, how long the listeners keep accepting before the
    /// drain (readiness says 503 meanwhile). A regular container beside the
    /// app is stopped together with it, and the app's last export (its
    /// SDK's flush at shutdown) comes after the signal: without this it
    /// finds the port closed. 0s (the default): stop accepting at once, as
    /// a native sidecar, stopped after the app, should. At most 5m.
    pub keep_accepting_for: Dur,
}
/// The longest `keep_accepting_for`: a pod's grace period is rarely longer.
const MAX_KEEP_ACCEPTING: Duration = Duration::from_secs(300);
fn default_value_depth() -> u32 {
    super::validate::DEFAULT_VALUE_DEPTH
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
        let browser = match self.browser.listen {
            Some(_) => self.browser.max_body_bytes,
            None => 0,
        };
        self.otlp_http
            .max_body_bytes
            .max(self.otlp_grpc.max_message_bytes)
            .max(browser)
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
            browser: Browser::default(),
            max_value_depth: default_value_depth(),
            max_in_flight_bytes: default_in_flight(),
            max_in_flight_bytes_per_connection: None,
            keep_accepting_for: Dur(Duration::ZERO),
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

impl Receivers {
    /// Checks what serde cannot: sizes, the in-flight budget, CORS.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.otlp_grpc.max_message_bytes < 1024 {
            return err(
                "receivers.otlp_grpc.max_message_bytes",
                "must be at least 1024",
            );
        }
        let depth = self.max_value_depth;
        let max = super::validate::MAX_VALUE_DEPTH;
        if depth == 0 || depth > max {
            return err(
                "receivers.max_value_depth",
                &format!("must be between 1 and {max} (prost's recursion limit)"),
            );
        }
        let http = &self.otlp_http;
        if http.max_body_bytes == 0 {
            return err("receivers.otlp_http.max_body_bytes", "must be at least 1");
        }
        if self.keep_accepting_for.0 > MAX_KEEP_ACCEPTING {
            return err("receivers.keep_accepting_for", "must be at most 5m");
        }
        validate_in_flight(self)?;
        validate_cors(&http.into())?;
        self.browser.validate()
    }

    /// Whether a client connecting to `host:port` reaches one of these
    /// OTLP listeners.
    pub fn reached_by(&self, host: &str, port: u16) -> bool {
        self.otlp_grpc.listen.reached_by(host, port)
            || self
                .otlp_http
                .listen
                .is_some_and(|l| l.reached_by(host, port))
    }
}

impl Connections {
    /// `at`: where the section sits (`server.connections`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        for (key, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("request_timeout", self.request_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d.0.is_zero() {
                return err(&format!("{at}.{key}"), "must be longer than 0s");
            }
        }
        if self.max_connections == 0 || self.max_connections > u32::MAX as usize {
            return err(
                &format!("{at}.max_connections"),
                "must be between 1 and 4294967295",
            );
        }
        Ok(())
    }
}

/// The in-flight budget holds the largest request, and a connection's
/// share lies between the largest request and the whole budget.
fn validate_in_flight(r: &Receivers) -> Result<(), ConfigError> {
    let largest = r.largest_request();
    let which = "receivers.otlp_grpc.max_message_bytes, receivers.otlp_http.max_body_bytes, receivers.browser.max_body_bytes";
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

/// The CORS keys of a listener's section.
pub(crate) fn validate_cors(c: &super::cors::CorsKeys) -> Result<(), ConfigError> {
    let at = c.section;
    for (i, o) in c.origins.iter().enumerate() {
        if !valid_cors_origin(o) {
            return err(
                &format!("{at}.cors_allowed_origins[{i}]"),
                &format!(
                    "{o:?} is not an origin: write \"*\", scheme://host[:port], or one \"*\" \
                     for part of the host as in https://*.example.com \
                     (http or https, visible ASCII, no path, no whitespace)"
                ),
            );
        }
    }
    for (i, h) in c.headers.iter().enumerate() {
        if h != "*" && (h.is_empty() || !h.bytes().all(is_token_char)) {
            return err(
                &format!("{at}.cors_allowed_headers[{i}]"),
                &format!(
                    "{h:?} is not a header name: write a name such as x-tenant-id \
                     (letters, digits and !#$%&'*+-.^_`|~), or \"*\" for any"
                ),
            );
        }
    }
    if c.max_age > MAX_CORS_MAX_AGE {
        return err(
            &format!("{at}.cors_max_age"),
            &format!(
                "{} is more than browsers keep a preflight: at most {MAX_CORS_MAX_AGE} \
                 seconds (Firefox's cap; Chromium's is 7200)",
                c.max_age
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
