//! What every request on the browser listener goes through before the
//! pipeline: the token, the rate limits, the payload limits, and the stamp
//! that marks its resources as the browser's. Browser requests are few and
//! small, so this is the cold path: the request is decoded with prost,
//! checked, stamped and encoded again (the in-pod listeners never pay it).

use super::auth::{AuthStats, Unauthorized, Verifier};
use super::config::Browser;
use super::limit::{client_addr, Cidr, LimitStats, Limiter, Refused};
use crate::base::SignalKind;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The attribute every browser resource carries, beside `service.name`.
pub const SOURCE_KEY: &str = "geometra.source";
pub const SOURCE_VALUE: &str = "browser";

/// Why a browser request was refused whole, in [`REFUSED_REASONS`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    RateLimited = 0,
    GlobalRateLimited = 1,
    Unauthorized = 2,
    TooLarge = 3,
    TooManyItems = 4,
    TooManyAttributes = 5,
    ValueTooLong = 6,
    Malformed = 7,
}
/// The `reason` label of each [`Refusal`].
pub const REFUSED_REASONS: [&str; 8] = [
    "rate_limited",
    "global_rate_limited",
    "unauthorized",
    "too_large",
    "too_many_items",
    "too_many_attributes",
    "value_too_long",
    "malformed",
];

/// Browser requests refused whole, by reason (the token's and the rate
/// limits' own counters say more: [`AuthStats`], [`LimitStats`]).
#[derive(Default)]
pub struct GuardStats {
    pub refused: [AtomicU64; 8],
}

impl GuardStats {
    pub fn count(&self, r: Refusal) {
        self.refused[r as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A payload limit a request broke: which, and the message for the sender.
#[derive(Debug)]
pub struct Oversize {
    pub why: Refusal,
    pub message: String,
}

/// The browser listener's checks, built from its section.
pub struct Guard {
    pub cfg: Browser,
    pub limiter: Arc<Limiter>,
    pub limit_stats: Arc<LimitStats>,
    pub verifier: Option<Arc<Verifier>>,
    pub auth_stats: Arc<AuthStats>,
    pub stats: Arc<GuardStats>,
}

impl Guard {
    /// The guard of `cfg`; reads the token secret when `auth` is on.
    pub fn new(cfg: &Browser) -> Result<Guard, String> {
        let auth_stats = Arc::new(AuthStats::default());
        Ok(Guard {
            cfg: cfg.clone(),
            limiter: Arc::new(Limiter::new(&cfg.rate_limit)),
            limit_stats: Arc::new(LimitStats::default()),
            verifier: Verifier::start(&cfg.auth, auth_stats.clone())?,
            auth_stats,
            stats: Arc::new(GuardStats::default()),
        })
    }

    /// The client's address (the peer, or what a trusted proxy says).
    pub fn client(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        client_addr(peer, headers, &self.cfg.trusted_proxies)
    }

    /// The token, when tokens are asked for (counted by the verifier).
    pub fn authorize(&self, authorization: Option<&[u8]>) -> Result<(), Unauthorized> {
        let Some(v) = &self.verifier else {
            return Ok(());
        };
        v.check(authorization).map(|_| ()).inspect_err(|_| {
            self.stats.count(Refusal::Unauthorized);
        })
    }

    /// The client's and the global budgets for one request of `items` items.
    pub fn admit(&self, client: IpAddr, items: u64) -> Result<(), Refused> {
        self.limiter
            .check(client, items, Instant::now())
            .inspect_err(|r| {
                self.limit_stats.count(r);
                self.stats.count(match r.reason {
                    super::limit::RefuseReason::Client => Refusal::RateLimited,
                    super::limit::RefuseReason::Global => Refusal::GlobalRateLimited,
                });
            })
    }

    /// Checks a decoded-to-protobuf request against the payload limits and
    /// stamps its resources: the body the pipeline takes, and its items.
    pub fn inspect(&self, sig: SignalKind, body: &[u8]) -> Result<(Bytes, u64), Oversize> {
        let r = match sig {
            SignalKind::Spans => self.traces(body),
            _ => self.logs(body),
        };
        r.inspect_err(|o| self.stats.count(o.why))
    }

    fn traces(&self, body: &[u8]) -> Result<(Bytes, u64), Oversize> {
        let mut req = ExportTraceServiceRequest::decode(body).map_err(malformed)?;
        let items: u64 = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum();
        self.check_items(items)?;
        for rs in &mut req.resource_spans {
            self.check_attrs(resource_attrs(&rs.resource))?;
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                self.check_attrs(&span.attributes)?;
                for e in &span.events {
                    self.check_attrs(&e.attributes)?;
                }
                for l in &span.links {
                    self.check_attrs(&l.attributes)?;
                }
            }
            self.stamp(&mut rs.resource);
        }
        Ok((Bytes::from(req.encode_to_vec()), items))
    }

    fn logs(&self, body: &[u8]) -> Result<(Bytes, u64), Oversize> {
        let mut req = ExportLogsServiceRequest::decode(body).map_err(malformed)?;
        let items: u64 = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum();
        self.check_items(items)?;
        for rl in &mut req.resource_logs {
            self.check_attrs(resource_attrs(&rl.resource))?;
            for rec in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                self.check_attrs(&rec.attributes)?;
                if let Some(b) = &rec.body {
                    self.check_value("the log body", b)?;
                }
            }
            self.stamp(&mut rl.resource);
        }
        Ok((Bytes::from(req.encode_to_vec()), items))
    }

    fn check_items(&self, items: u64) -> Result<(), Oversize> {
        let max = self.cfg.max_items_per_request;
        match items > max {
            true => Err(Oversize {
                why: Refusal::TooManyItems,
                message: format!(
                    "{items} items in one request: receivers.browser.max_items_per_request is {max}"
                ),
            }),
            false => Ok(()),
        }
    }

    fn check_attrs(&self, attrs: &[KeyValue]) -> Result<(), Oversize> {
        let (n, max) = (attrs.len(), self.cfg.max_attributes_per_item);
        if n > max {
            return Err(Oversize {
                why: Refusal::TooManyAttributes,
                message: format!(
                    "an item with {n} attributes: receivers.browser.max_attributes_per_item is {max}"
                ),
            });
        }
        for kv in attrs {
            if let Some(v) = &kv.value {
                self.check_value(&format!("attribute {:?}", kv.key), v)?;
            }
        }
        Ok(())
    }

    /// A value's encoded size (strings, bytes, arrays and maps alike).
    fn check_value(&self, what: &str, v: &AnyValue) -> Result<(), Oversize> {
        let (len, max) = (v.encoded_len(), self.cfg.max_attribute_value_bytes);
        match len > max {
            true => Err(Oversize {
                why: Refusal::ValueTooLong,
                message: format!(
                    "{what} is {len} bytes: receivers.browser.max_attribute_value_bytes is {max}"
                ),
            }),
            false => Ok(()),
        }
    }

    /// `service.name` set to the configured name and `geometra.source:
    /// browser`, whatever the request said.
    fn stamp(&self, resource: &mut Option<Resource>) {
        let r = resource.get_or_insert_with(Resource::default);
        r.attributes
            .retain(|kv| kv.key != "service.name" && kv.key != SOURCE_KEY);
        r.attributes
            .push(string_kv("service.name", &self.cfg.service_name));
        r.attributes.push(string_kv(SOURCE_KEY, SOURCE_VALUE));
    }

    /// Whether `peer` is one of the trusted proxies (for tests and logs).
    pub fn trusted(&self, peer: IpAddr) -> bool {
        self.cfg
            .trusted_proxies
            .iter()
            .any(|c: &Cidr| c.contains(peer))
    }
}

fn resource_attrs(r: &Option<Resource>) -> &[KeyValue] {
    r.as_ref().map_or(&[], |r| &r.attributes)
}

fn malformed(e: prost::DecodeError) -> Oversize {
    Oversize {
        why: Refusal::Malformed,
        message: format!("malformed OTLP protobuf: {e}"),
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// The browser listener's counters: requests refused whole by reason, the
/// token refusals by reason, and the clients the rate limiter tracks.
pub fn declare(t: &crate::telemetry::SelfMetrics, g: &Arc<Guard>) {
    let s = g.stats.clone();
    t.counter(
        "geometra_sidecar_browser_refused_requests_total",
        "Browser listener requests refused whole, by reason (rate limits, token, payload limits, malformed).",
        "",
        move |o| {
            for (reason, n) in REFUSED_REASONS.iter().zip(&s.refused) {
                o.observe(n.load(Ordering::Relaxed), &crate::telemetry::kv([("reason", *reason)]));
            }
        },
    );
    AuthStats::declare(t, g.auth_stats.clone());
    super::limit::declare_clients(t, g.limiter.clone());
}
