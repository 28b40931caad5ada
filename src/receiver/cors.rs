//! CORS for OTLP/HTTP, per the Fetch standard: which origins may post from
//! a browser (exact, `*`, or one `*` standing for part of the host as in
//! `https://*.example.com`), the preflight answer (allowed methods, the
//! default request headers plus `cors_allowed_headers`, max age), and the
//! `Access-Control-Allow-Origin` of actual responses. A refused origin never
//! gets an `Access-Control-Allow-Origin`.

use super::config::OtlpHttp;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Request headers every allowed origin may send: what the OpenTelemetry
/// JS exporters set, the trace context, and the CORS-safelisted names
/// (listed because a safelisted name with an unusual value needs it too).
pub const DEFAULT_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-language",
    "content-type",
    "content-encoding",
    "traceparent",
    "tracestate",
];

/// An allowed origin as configured.
#[derive(Debug, Clone)]
enum Pattern {
    Any,
    Exact(String),
    /// `prefix*suffix`: the `*` stands for one or more host characters.
    Wild {
        prefix: String,
        suffix: String,
    },
}

impl Pattern {
    fn new(o: &str) -> Pattern {
        if o == "*" {
            return Pattern::Any;
        }
        match o.split_once('*') {
            Some((p, s)) => Pattern::Wild {
                prefix: p.to_ascii_lowercase(),
                suffix: s.to_ascii_lowercase(),
            },
            None => Pattern::Exact(o.to_string()),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => e.eq_ignore_ascii_case(origin),
            Pattern::Wild { prefix, suffix } => wild_match(prefix, suffix, origin),
        }
    }
}

/// `origin` is `prefix`, at least one host character (letter, digit, `-`,
/// `.`), then `suffix`, ignoring ASCII case: `https://*.example.com` takes
/// `https://app.example.com` and `https://a.b.example.com`, never
/// `https://example.com` or `https://evil.com/.example.com`.
fn wild_match(prefix: &str, suffix: &str, origin: &str) -> bool {
    let o = origin.as_bytes();
    let (p, s) = (prefix.as_bytes(), suffix.as_bytes());
    if o.len() <= p.len() + s.len() {
        return false;
    }
    let (head, rest) = o.split_at(p.len());
    let (mid, tail) = rest.split_at(rest.len() - s.len());
    head.eq_ignore_ascii_case(p)
        && tail.eq_ignore_ascii_case(s)
        && mid
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
}

/// The CORS policy of the OTLP/HTTP receiver.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<Pattern>,
    /// `*` in `cors_allowed_headers`: the preflight allows whatever the
    /// browser asks for.
    any_header: bool,
    allow_headers: HeaderValue,
    max_age: HeaderValue,
    /// the section whose `cors_allowed_origins` a refusal names
    section: &'static str,
}

/// The CORS keys of a listener's section (`receivers.otlp_http`,
/// `receivers.browser`), validated (see `config::validate_cors`).
pub struct CorsKeys<'a> {
    pub section: &'static str,
    pub origins: &'a [String],
    pub headers: &'a [String],
    pub max_age: u32,
}

impl<'a> From<&'a OtlpHttp> for CorsKeys<'a> {
    fn from(c: &'a OtlpHttp) -> Self {
        CorsKeys {
            section: "receivers.otlp_http",
            origins: &c.cors_allowed_origins,
            headers: &c.cors_allowed_headers,
            max_age: c.cors_max_age,
        }
    }
}

impl Cors {
    /// From a validated section.
    pub fn new<'a>(keys: impl Into<CorsKeys<'a>>) -> Cors {
        let cfg = keys.into();
        let mut names: Vec<String> = DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect();
        for h in cfg.headers {
            let h = h.to_ascii_lowercase();
            if h != "*" && !names.contains(&h) {
                names.push(h);
            }
        }
        Cors {
            origins: cfg.origins.iter().map(|o| Pattern::new(o)).collect(),
            any_header: cfg.headers.iter().any(|h| h == "*"),
            allow_headers: HeaderValue::from_str(&names.join(", "))
                .unwrap_or(HeaderValue::from_static("content-type")),
            max_age: HeaderValue::from(cfg.max_age),
            section: cfg.section,
        }
    }

    /// The request's `Origin` when it is allowed (what to echo in
    /// `Access-Control-Allow-Origin`).
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let o = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|p| p.matches(o))
            .then(|| origin.clone())
    }

    /// Answers a preflight: 204 with the allowances for an allowed origin,
    /// 403 without any `Access-Control-Allow-*` header otherwise.
    pub fn preflight(&self, headers: &HeaderMap) -> Response {
        let Some(origin) = self.allowed_origin(headers) else {
            let msg = format!("origin not in {}.cors_allowed_origins\n", self.section);
            let mut r = (StatusCode::FORBIDDEN, msg).into_response();
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
            return r;
        };
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers_for(headers),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h.insert(
            header::VARY,
            HeaderValue::from_static(if self.any_header {
                "Origin, Access-Control-Request-Headers"
            } else {
                "Origin"
            }),
        );
        r
    }

    /// The defaults and the configured names; with `*`, the names the
    /// browser asked for (a literal `*` would not cover `Authorization`, nor
    /// any header of a request with credentials).
    fn allow_headers_for(&self, headers: &HeaderMap) -> HeaderValue {
        let asked = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        match asked {
            Some(v) if self.any_header && !v.is_empty() => v.clone(),
            _ => self.allow_headers.clone(),
        }
    }

    /// Adds `Access-Control-Allow-Origin` (and `Vary: Origin`) to an actual
    /// response for an allowed origin.
    pub fn decorate(mut r: Response, origin: Option<HeaderValue>) -> Response {
        if let Some(o) = origin {
            let h = r.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], headers: &[&str]) -> Cors {
        Cors::new(&OtlpHttp {
            cors_allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            cors_allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            ..OtlpHttp::default()
        })
    }

    fn from(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h
    }

    #[test]
    fn wildcard_origins_take_one_host_part() {
        let c = cors(&["https://*.example.com", "http://localhost:*"], &[]);
        for ok in [
            "https://app.example.com",
            "https://a.b.example.com",
            "HTTPS://App.Example.COM",
            "http://localhost:3000",
        ] {
            assert!(c.allowed_origin(&from(ok)).is_some(), "{ok}");
        }
        for bad in [
            "https://example.com",
            "https://.example.com",
            "http://app.example.com",
            "https://evil.com/.example.com",
            "https://evil.com?.example.com",
            "https://app.example.com.evil.com",
            "http://localhost:",
            "http://localhost.evil.com",
            "null",
        ] {
            assert!(c.allowed_origin(&from(bad)).is_none(), "{bad}");
        }
    }

    #[test]
    fn exact_and_any_origins() {
        let c = cors(&["https://app.geometra.ai"], &[]);
        assert!(c.allowed_origin(&from("https://app.geometra.ai")).is_some());
        assert!(c
            .allowed_origin(&from("https://app.geometra.ai:8443"))
            .is_none());
        assert!(c.allowed_origin(&HeaderMap::new()).is_none());
        assert!(cors(&["*"], &[])
            .allowed_origin(&from("https://x.y"))
            .is_some());
        assert!(cors(&[], &[])
            .allowed_origin(&from("https://x.y"))
            .is_none());
    }

    #[test]
    fn configured_headers_join_the_defaults_lowercased_once() {
        let c = cors(&["*"], &["X-Tenant-Id", "content-type", "x-tenant-id"]);
        let r = c.preflight(&from("https://a.b"));
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap();
        assert_eq!(
            h,
            "accept, accept-language, content-language, content-type, content-encoding, traceparent, tracestate, x-tenant-id"
        );
    }
}
