//! `receivers.browser`: the listener for browsers, off unless `listen` is
//! set. Its data never counts as the app's own: it feeds only rules with
//! `sources: [browser]`, its resources are stamped as the browser's, and it
//! has limits of its own, smaller than the in-pod listeners'.

use super::auth::Auth;
use super::limit::{Cidr, RateLimit};
use crate::base::values::err;
use crate::base::{ConfigError, ListenAddr};
use crate::receiver::cors::CorsKeys;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Browser {
    /// null: off. Where browsers post OTLP/HTTP (protobuf or JSON) traces
    /// and logs, e.g. `0.0.0.0:4319` behind a Service or Ingress.
    pub listen: Option<ListenAddr>,
    /// `service.name` of every resource that arrives here, whatever the
    /// request says (with `geometra.source: browser` beside it).
    pub service_name: String,
    /// The largest request body, compressed or not.
    pub max_body_bytes: usize,
    /// The most spans or log records one request may carry (413 past it).
    pub max_items_per_request: u64,
    /// The most attributes one span, span event or log record (and one
    /// resource) may carry (413 past it).
    pub max_attributes_per_item: usize,
    /// The longest attribute value or log body, in bytes (413 past it).
    pub max_attribute_value_bytes: usize,
    /// Origins allowed to post from a browser (as `receivers.otlp_http`).
    pub cors_allowed_origins: Vec<String>,
    /// Request headers a browser may send besides the defaults
    /// (`authorization` is added when `auth` is on).
    pub cors_allowed_headers: Vec<String>,
    /// Seconds a browser may cache a preflight answer.
    pub cors_max_age: u32,
    pub rate_limit: RateLimit,
    /// Proxies (CIDRs) whose `X-Forwarded-For` / `Forwarded` name the
    /// client; from any other peer those headers are ignored.
    pub trusted_proxies: Vec<Cidr>,
    pub auth: Auth,
}

impl Default for Browser {
    fn default() -> Self {
        Browser {
            listen: None,
            service_name: "geometra-web".into(),
            max_body_bytes: 512 << 10,
            max_items_per_request: 512,
            max_attributes_per_item: 64,
            max_attribute_value_bytes: 4096,
            cors_allowed_origins: Vec::new(),
            cors_allowed_headers: Vec::new(),
            cors_max_age: 7200,
            rate_limit: RateLimit::default(),
            trusted_proxies: Vec::new(),
            auth: Auth::default(),
        }
    }
}

impl<'a> From<&'a Browser> for CorsKeys<'a> {
    fn from(c: &'a Browser) -> Self {
        CorsKeys {
            section: "receivers.browser",
            origins: &c.cors_allowed_origins,
            headers: &c.cors_allowed_headers,
            max_age: c.cors_max_age,
        }
    }
}

impl Browser {
    /// Bounds, CORS, the rate limits and the token settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at = |k: &str| format!("receivers.browser.{k}");
        if self.service_name.trim().is_empty() {
            return err(&at("service_name"), "must not be empty");
        }
        for (k, v) in [
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_items_per_request", self.max_items_per_request),
            (
                "max_attributes_per_item",
                self.max_attributes_per_item as u64,
            ),
            (
                "max_attribute_value_bytes",
                self.max_attribute_value_bytes as u64,
            ),
        ] {
            if v == 0 {
                return err(&at(k), "must be at least 1");
            }
        }
        if self.max_body_bytes > 64 << 20 {
            return err(&at("max_body_bytes"), "must be at most 64 MiB (67108864)");
        }
        crate::receiver::config::validate_cors(&self.into())?;
        self.rate_limit.validate()?;
        self.auth.validate()
    }
}
