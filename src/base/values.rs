//! The values config sections are written in, shared by every section,
//! and the error a section's validation returns.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

    /// Whether only this host can reach it (a loopback address).
    pub fn is_loopback(&self) -> bool {
        match self {
            ListenAddr::Exact(a) => a.ip().is_loopback(),
            ListenAddr::Localhost(_) => true,
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

/// How an OTLP endpoint is spoken to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Grpc,
    Http,
}

/// A config error: `key.path: message` (the config loader adds the origin
/// and the line).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl ConfigError {
    /// The error of the key at `key` (a dotted path, `a.b[0].c`).
    pub fn at(key: &str, msg: &str) -> ConfigError {
        ConfigError(format!("{key}: {msg}"))
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

/// `Err` of [`ConfigError::at`], for validation functions.
pub fn err(key: &str, msg: &str) -> Result<(), ConfigError> {
    Err(ConfigError::at(key, msg))
}
