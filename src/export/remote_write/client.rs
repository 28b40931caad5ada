//! One remote-write request: a snappy-compressed `WriteRequest` POSTed with
//! the protocol's headers and the configured credentials, and the answer
//! classified by [`crate::export::retry`] (every 5xx and 429 retryable,
//! honouring Retry-After; any other non-2xx permanent).

use super::config::RemoteWrite;
use crate::export::auth::Token;
use crate::export::retry::{classify_http, Failure, HttpRetry};
use bytes::Bytes;
use reqwest::header::{HeaderName, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use std::sync::Arc;

pub struct Client {
    http: reqwest::Client,
    url: String,
    bearer: Option<Arc<Token>>,
    basic: Option<(String, Arc<Token>)>,
}

impl Client {
    /// Reads the credential files and TLS material now (start-up errors).
    pub fn new(cfg: &RemoteWrite) -> Result<Client, String> {
        let fixed = [
            (CONTENT_ENCODING, "snappy"),
            (CONTENT_TYPE, "application/x-protobuf"),
            (
                HeaderName::from_static("x-prometheus-remote-write-version"),
                "0.1.0",
            ),
            (
                reqwest::header::USER_AGENT,
                concat!("geometra-sidecar/", env!("CARGO_PKG_VERSION")),
            ),
        ];
        let http = crate::export::http::client(
            "remote_write",
            cfg.tls.as_ref(),
            cfg.timeout.0,
            &cfg.headers,
            &fixed,
        )?;
        let bearer = match &cfg.bearer_token_file {
            Some(p) => Some(Arc::new(Token::new(p)?)),
            None => None,
        };
        let basic = match &cfg.basic_auth {
            Some(b) => Some((b.username.clone(), Arc::new(Token::new(&b.password_file)?))),
            None => None,
        };
        Ok(Client {
            http,
            url: cfg.url.clone(),
            bearer,
            basic,
        })
    }

    /// Sends one compressed request body.
    pub async fn send(&self, body: Bytes) -> Result<(), Failure> {
        let mut req = self.http.post(self.url.as_str()).body(body);
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t.current().await);
        }
        if let Some((user, pw)) = &self.basic {
            req = req.basic_auth(user, Some(pw.current().await));
        }
        let resp = req.send().await.map_err(|e| Failure::Retryable {
            after: None,
            msg: format!("HTTP request: {e}"),
        })?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // an error body is read only to quote its start in the log
        let body = resp.bytes().await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
        Err(classify_http(
            status,
            retry_after.as_deref(),
            &text,
            HttpRetry::RemoteWrite,
        ))
    }
}
