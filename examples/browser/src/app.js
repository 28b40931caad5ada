// The page's OpenTelemetry set-up: sdk-trace-web exporting OTLP/HTTP JSON to
// geometra-sidecar's browser listener (receivers.browser, :4319 in
// sidecar.yaml), with a tenant header (so the listener must allow it in
// receivers.browser.cors_allowed_headers). The document-load instrumentation
// reports the page load (the sidecar's browser_page_loads_total and
// browser_page_load_duration_seconds). Bundled by esbuild (`npm run build`)
// into dist/app.js.
//
// The sidecar's address: ?otlp=http://127.0.0.1:4319 on the page URL, else
// http://localhost:4319. The page writes what happened to window.__geometra:
// {done, ok, spans} (spans: how many it ended, page-load spans included).
//
// Tokens: with ?token=/api/telemetry/token the page asks the back end (the
// FastAPI example's POST /telemetry/token, reached through server.js's /api/)
// for a short-lived token for its user and sends it as
// `Authorization: Bearer <token>` with every export, as the sidecar's browser
// listener asks when receivers.browser.auth is on (the listener must then
// allow the `authorization` header in its CORS settings). The token is
// fetched before the first export and refreshed ahead of its expiry.
//
// ?exports=N&every=MS: N rounds of the two spans, each flushed, MS apart
// (default one round), to see tokens refreshed on a long-lived page.
import { WebTracerProvider } from '@opentelemetry/sdk-trace-web';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { SpanKind } from '@opentelemetry/api';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { DocumentLoadInstrumentation } from '@opentelemetry/instrumentation-document-load';

const params = new URLSearchParams(window.location.search);
const otlp = params.get('otlp') || 'http://localhost:4319';
const userId = params.get('user') || 'b1';
const tokenUrl = params.get('token');
const exportsWanted = Math.max(1, Number(params.get('exports') || 1));
const every = Math.max(0, Number(params.get('every') || 0));

// The token in force and when to ask for the next one: at 80% of its
// lifetime (4 minutes of the example's 5), by a timer and, should the timer
// have been throttled (a background tab), before the next export.
const token = { value: null, expiresAt: 0, refreshAt: 0, fetched: 0, pending: null, timer: null, error: null };

async function fetchToken() {
  const res = await fetch(tokenUrl, {
    method: 'POST',
    credentials: 'same-origin', // the back end's session cookie: tokens are for its logged-in user
    cache: 'no-store',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: userId }),
  });
  if (!res.ok) throw new Error(`token endpoint answered ${res.status}`);
  const body = await res.json();
  // The lifetime the back end states, counted on this clock (the browser's
  // clock may be off; the sidecar allows receivers.browser.auth.clock_skew).
  const lifetimeMs = Number(body.expires_in) * 1000;
  const now = Date.now();
  token.value = body.token;
  token.expiresAt = now + lifetimeMs;
  token.refreshAt = now + Math.max(lifetimeMs * 0.8, 1000);
  token.fetched += 1;
  token.error = null;
  clearTimeout(token.timer);
  token.timer = setTimeout(() => { refreshToken().catch(() => {}); }, token.refreshAt - now);
}

// One fetch at a time, however many exports ask at once.
function refreshToken() {
  if (!token.pending) {
    token.pending = fetchToken()
      .catch((err) => { token.error = String((err && err.message) || err); throw err; })
      .finally(() => { token.pending = null; });
  }
  return token.pending;
}

// The exporter's headers, asked for before each export. The exporter wants a
// function that never throws: without a valid token the export goes without
// one, the sidecar answers 401 and counts it (reason `missing`).
async function exportHeaders() {
  const headers = { 'x-tenant-id': 'geometra' };
  if (!tokenUrl) return headers;
  if (!token.value || Date.now() >= token.refreshAt) {
    await refreshToken().catch(() => {});
  }
  if (token.value && Date.now() < token.expiresAt) headers.authorization = `Bearer ${token.value}`;
  return headers;
}

// Counts the spans the page ends (and so exports), for window.__geometra.
const ended = { spans: 0 };
const counter = {
  onStart() {},
  onEnd() { ended.spans += 1; },
  forceFlush() { return Promise.resolve(); },
  shutdown() { return Promise.resolve(); },
};

const provider = new WebTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'geometra-web', 'service.version': '0.1.0' }),
  spanProcessors: [
    counter,
    new BatchSpanProcessor(
      new OTLPTraceExporter({ url: `${otlp}/v1/traces`, headers: exportHeaders }),
      { scheduledDelayMillis: 200 },
    ),
  ],
});
const tracer = provider.getTracer('geometra.web');

// documentLoad (with its loadEventEnd event), documentFetch and one
// resourceFetch per resource, ended just after the window's load event.
registerInstrumentations({ tracerProvider: provider, instrumentations: [new DocumentLoadInstrumentation()] });

// Resolves once the document-load spans have ended: the instrumentation ends
// them in a timeout it sets on `load`, queued before this one.
function pageLoaded() {
  return new Promise((resolve) => {
    const after = () => setTimeout(resolve, 0);
    if (document.readyState === 'complete') after();
    else window.addEventListener('load', after, { once: true });
  });
}

function record(state) {
  if (tokenUrl) state.tokens = { fetched: token.fetched, error: token.error };
  window.__geometra = state;
  document.getElementById('status').textContent = JSON.stringify(state);
}

// The user opens the memory panel: one span for the panel, one for the recall.
function openMemoryPanel() {
  const panel = tracer.startSpan('memory.panel.open', { kind: SpanKind.INTERNAL, attributes: { 'enduser.id': userId } });
  const recall = tracer.startSpan('memory.recall', {
    kind: SpanKind.CLIENT,
    attributes: { 'memory.operation': 'recall', 'enduser.id': userId },
  });
  recall.end();
  panel.end();
}

async function main() {
  try {
    await pageLoaded(); // the first export carries the page load
    for (let i = 0; i < exportsWanted; i += 1) {
      if (i > 0) await new Promise((r) => setTimeout(r, every));
      openMemoryPanel();
      await provider.forceFlush(); // rejects when the export failed (e.g. CORS, 401)
    }
    record({ done: true, ok: true, spans: ended.spans });
  } catch (err) {
    record({ done: true, ok: false, error: String((err && err.message) || err) });
  }
}

main();
