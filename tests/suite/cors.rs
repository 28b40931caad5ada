//! CORS on OTLP/HTTP over real HTTP requests: preflights as browsers send
//! them (with and without a custom header allowed, `*` headers, wildcard
//! origins, a refused origin), and the actual export that follows.

use crate::common;

use common::Sidecar;
use reqwest::header::HeaderMap;

const SPANS: &str = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET","kind":2,"startTimeUnixNano":"1000000000","endTimeUnixNano":"1020000000","attributes":[{"key":"http.route","value":{"stringValue":"/browser"}},{"key":"http.request.method","value":{"stringValue":"GET"}},{"key":"http.response.status_code","value":{"intValue":"200"}}]}]}]}]}"#;

/// A preflight for a POST from `origin` asking for `headers` (as Chromium
/// sends it: lowercase, comma-separated, sorted).
async fn preflight(sc: &Sidecar, origin: &str, headers: &str) -> (u16, HeaderMap) {
    let r = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/v1/traces", sc.http),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", headers)
        .send()
        .await
        .expect("preflight");
    (r.status().as_u16(), r.headers().clone())
}

fn get<'a>(h: &'a HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Whether a browser would let the request through: every requested header
/// listed in Access-Control-Allow-Headers (Fetch's CORS-preflight check).
fn browser_allows(h: &HeaderMap, requested: &str) -> bool {
    let allowed: Vec<String> = get(h, "access-control-allow-headers")
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    requested
        .split(',')
        .all(|r| allowed.iter().any(|a| a == r.trim() || a == "*"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_header_passes_preflight_only_when_allowed() {
    let asked = "content-type,x-tenant-id";
    let plain = Sidecar::start(
        "receivers:\n  otlp_http:\n    cors_allowed_origins: [\"https://app.geometra.ai\"]\n",
    )
    .await;
    let (status, h) = preflight(&plain, "https://app.geometra.ai", asked).await;
    assert_eq!(status, 204);
    assert_eq!(
        get(&h, "access-control-allow-origin"),
        "https://app.geometra.ai"
    );
    assert!(browser_allows(&h, "content-type"), "{h:?}");
    assert!(
        !browser_allows(&h, asked),
        "x-tenant-id is not allowed here: {h:?}"
    );
    assert_eq!(get(&h, "access-control-max-age"), "7200");

    let sc = Sidecar::start(
        "receivers:\n  otlp_http:\n    cors_allowed_origins: [\"https://app.geometra.ai\"]\n    cors_allowed_headers: [X-Tenant-Id]\n    cors_max_age: 600\n",
    )
    .await;
    let (status, h) = preflight(&sc, "https://app.geometra.ai", asked).await;
    assert_eq!(status, 204);
    assert_eq!(
        get(&h, "access-control-allow-origin"),
        "https://app.geometra.ai"
    );
    assert!(
        get(&h, "access-control-allow-methods").contains("POST"),
        "{h:?}"
    );
    assert!(browser_allows(&h, asked), "{h:?}");
    assert_eq!(get(&h, "access-control-max-age"), "600");
    assert_eq!(get(&h, "vary"), "Origin");
    // the export the browser then sends
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", sc.http))
        .header("origin", "https://app.geometra.ai")
        .header("content-type", "application/json")
        .header("x-tenant-id", "geometra")
        .body(SPANS)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(
        get(r.headers(), "access-control-allow-origin"),
        "https://app.geometra.ai"
    );
    assert_eq!(get(r.headers(), "vary"), "Origin");
    let m = sc.scrape().await;
    assert_eq!(
        m.value("http_requests_total", &[("endpoint", "/browser")]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_origins_get_no_allowances() {
    let sc = Sidecar::start(
        "receivers:\n  otlp_http:\n    cors_allowed_origins: [\"https://*.geometra.ai\"]\n    cors_allowed_headers: [\"*\"]\n",
    )
    .await;
    for origin in [
        "https://geometra.ai",
        "https://app.geometra.ai.evil.example",
        "http://app.geometra.ai",
        "null",
    ] {
        let (status, h) = preflight(&sc, origin, "content-type").await;
        assert_eq!(status, 403, "{origin}");
        for k in [
            "access-control-allow-origin",
            "access-control-allow-headers",
            "access-control-allow-methods",
        ] {
            assert!(h.get(k).is_none(), "{origin}: {k} in {h:?}");
        }
        let r = reqwest::Client::new()
            .post(format!("http://{}/v1/traces", sc.http))
            .header("origin", origin)
            .header("content-type", "application/json")
            .body(SPANS)
            .send()
            .await
            .expect("post");
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    // a subdomain matches the wildcard, and "*" headers allow what is asked
    let asked = "authorization,content-type,x-tenant-id";
    let (status, h) = preflight(&sc, "https://eu.app.geometra.ai", asked).await;
    assert_eq!(status, 204);
    assert_eq!(
        get(&h, "access-control-allow-origin"),
        "https://eu.app.geometra.ai"
    );
    assert_eq!(get(&h, "access-control-allow-headers"), asked);
    assert!(browser_allows(&h, asked));
    assert_eq!(get(&h, "vary"), "Origin, Access-Control-Request-Headers");
}
