//! The HTTP client both HTTP exporters build (OTLP/HTTP, remote write):
//! reqwest with rustls, timeouts, a connection pool, the configured CA and
//! client certificate, and default headers.
//!
//! reqwest is the most used, well-kept Rust HTTP client and gives custom
//! CAs, client certificates, timeouts and pooling without the TLS and pool
//! plumbing that hyper-util's legacy client leaves to the caller.

use crate::base::Tls;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Reads a PEM file named in the config (start-up and reload only).
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    crate::fsread::read(path, crate::fsread::PEM_MAX, what)
}

/// A client for one endpoint; `at` is the config key path for errors.
pub fn client(
    at: &str,
    tls: Option<&Tls>,
    timeout: Duration,
    headers: &BTreeMap<String, String>,
    fixed: &[(HeaderName, &'static str)],
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(t) = tls {
        if let Some(ca) = &t.ca_file {
            for c in reqwest::Certificate::from_pem_bundle(&read(ca, "tls.ca_file")?)
                .map_err(|e| format!("{at}.tls.ca_file: {e}"))?
            {
                b = b.add_root_certificate(c);
            }
        }
        match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => {
                let mut pem = read(c, "tls.cert_file")?;
                pem.push(b'\n');
                pem.extend_from_slice(&read(k, "tls.key_file")?);
                let id = reqwest::Identity::from_pem(&pem).map_err(|e| format!("{at}.tls: {e}"))?;
                b = b.identity(id);
            }
            (None, None) => {}
            _ => return Err(format!("{at}.tls: cert_file and key_file go together")),
        }
    }
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let key = HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("{at}.headers: {k:?}: {e}"))?;
        let val = HeaderValue::from_str(v).map_err(|e| format!("{at}.headers.{k}: {e}"))?;
        map.insert(key, val);
    }
    for (k, v) in fixed {
        map.insert(k.clone(), HeaderValue::from_static(v));
    }
    b.default_headers(map)
        .build()
        .map_err(|e| format!("{at}: {e}"))
}
