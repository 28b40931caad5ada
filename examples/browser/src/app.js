// The page's OpenTelemetry set-up: sdk-trace-web exporting OTLP/HTTP JSON to
// geometra-sidecar's :4318, with a tenant header (so the sidecar must allow
// it in receivers.otlp_http.cors_allowed_headers). Bundled by esbuild
// (`npm run build`) into dist/app.js.
//
// The sidecar's address: ?otlp=http://127.0.0.1:4318 on the page URL, else
// http://localhost:4318. The page writes what happened to window.__geometra.
import { WebTracerProvider } from '@opentelemetry/sdk-trace-web';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { SpanKind } from '@opentelemetry/api';

const params = new URLSearchParams(window.location.search);
const otlp = params.get('otlp') || 'http://localhost:4318';
const userId = params.get('user') || 'b1';

const provider = new WebTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'geometra-web', 'service.version': '0.1.0' }),
  spanProcessors: [
    new BatchSpanProcessor(
      new OTLPTraceExporter({ url: `${otlp}/v1/traces`, headers: { 'x-tenant-id': 'geometra' } }),
      { scheduledDelayMillis: 200 },
    ),
  ],
});
const tracer = provider.getTracer('geometra.web');

function record(state) {
  window.__geometra = state;
  document.getElementById('status').textContent = JSON.stringify(state);
}

async function main() {
  // The user opens the memory panel: one span for the panel, one for the recall.
  const panel = tracer.startSpan('memory.panel.open', { kind: SpanKind.INTERNAL, attributes: { 'enduser.id': userId } });
  const recall = tracer.startSpan('memory.recall', {
    kind: SpanKind.CLIENT,
    attributes: { 'memory.operation': 'recall', 'enduser.id': userId },
  });
  recall.end();
  panel.end();
  try {
    await provider.forceFlush(); // rejects when the export failed (e.g. CORS)
    record({ done: true, ok: true, spans: 2 });
  } catch (err) {
    record({ done: true, ok: false, error: String((err && err.message) || err) });
  }
}

main();
