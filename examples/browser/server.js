// A tiny static server for the example page: / is index.html, /app.js the
// bundle esbuild wrote to dist/ (`npm run build`). PORT (default 8080) and
// HOST (default 127.0.0.1); the page's origin is http://HOST:PORT, which the
// sidecar must list in receivers.otlp_http.cors_allowed_origins (or
// receivers.browser.cors_allowed_origins for the browser listener).
// API_URL (e.g. http://127.0.0.1:8000): /api/* is passed to that back end
// (the FastAPI example) without the /api prefix, so the page reaches
// POST /api/telemetry/token on its own origin, as behind an ingress.
'use strict';

const http = require('http');
const fs = require('fs');
const path = require('path');

const files = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': [path.join('dist', 'app.js'), 'text/javascript; charset=utf-8'],
};

const api = process.env.API_URL;

function proxy(req, res) {
  const target = new URL(req.url.slice('/api'.length), api);
  const up = http.request(target, { method: req.method, headers: { ...req.headers, host: target.host } }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  up.on('error', (err) => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`back end ${api}: ${err.code || err.message}\n`);
  });
  req.pipe(up);
}

const server = http.createServer((req, res) => {
  const pathname = new URL(req.url, 'http://x').pathname;
  if (api && pathname.startsWith('/api/')) {
    proxy(req, res);
    return;
  }
  const entry = files[pathname];
  if (!entry) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  fs.readFile(path.join(__dirname, entry[0]), (err, data) => {
    if (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`${entry[0]}: ${err.code} (run npm run build)\n`);
      return;
    }
    res.writeHead(200, { 'content-type': entry[1], 'cache-control': 'no-store' }).end(data);
  });
});

const port = Number(process.env.PORT || 8080);
const host = process.env.HOST || '127.0.0.1';
server.listen(port, host, () => console.log(`serving http://${host}:${port}/`));
