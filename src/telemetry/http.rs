//! The OTLP/HTTP client of the sidecar's own telemetry (`telemetry.otlp`
//! with `protocol: http`): the reqwest 0.12 client the forwarder already
//! uses, run on the sidecar's Tokio runtime, so the SDK's exporter threads
//! need no runtime of their own and no second HTTP stack is linked.

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Response bodies past this are cut (an OTLP response is a few bytes).
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Client {
    client: reqwest::Client,
    rt: tokio::runtime::Handle,
}

impl Client {
    /// Call within the Tokio runtime.
    pub fn new(timeout: Duration) -> Result<Client, String> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| format!("telemetry.otlp: no runtime for the HTTP client: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("telemetry.otlp: HTTP client: {e}"))?;
        Ok(Client { client, rt })
    }

    async fn send(
        client: reqwest::Client,
        req: Request<Bytes>,
    ) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let mut r = client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let mut resp = Response::builder().status(r.status());
        if let Some(h) = resp.headers_mut() {
            *h = r.headers().clone();
        }
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await? {
            let room = MAX_RESPONSE.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        Ok(resp.body(Bytes::from(body))?)
    }
}

impl HttpClient for Client {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        // on the runtime: the caller is the SDK's exporter thread
        let task = self.rt.spawn(Self::send(self.client.clone(), request));
        Box::pin(async move { task.await.map_err(|e| Box::new(e) as HttpError)? })
    }
}
