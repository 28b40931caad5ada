// Opens the example page in headless Chromium (Debian's /usr/bin/chromium,
// driven by puppeteer-core) and prints, as one JSON line, what the page
// reported (window.__geometra), the console errors, the failed requests and
// the OTLP exports the page made (POST .../v1/traces: the answer's status and
// the Authorization header sent, or null).
// Used by tests/python/clients/test_browser.py; also handy by hand:
//   node headless-check.mjs 'http://127.0.0.1:8080/?otlp=http://127.0.0.1:4318'
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const url = process.argv[2];
if (!url) {
  console.error('usage: node headless-check.mjs URL');
  process.exit(2);
}
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'geometra-chromium-'));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--user-data-dir=${profile}`,
  ],
});
const out = { console: [], failed: [], exports: [], page: null };
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') out.console.push(m.text()); });
  page.on('requestfailed', (r) => out.failed.push({ url: r.url(), method: r.method(), error: r.failure()?.errorText }));
  page.on('response', (r) => {
    const q = r.request();
    if (q.method() === 'POST' && new URL(q.url()).pathname === '/v1/traces') {
      out.exports.push({ status: r.status(), authorization: q.headers().authorization ?? null });
    }
  });
  await page.goto(url, { waitUntil: 'load', timeout: 20000 });
  await page.waitForFunction(() => window.__geometra && window.__geometra.done, { timeout: 20000 });
  out.page = await page.evaluate(() => window.__geometra);
  await new Promise((r) => { setTimeout(r, 300); }); // the last export's response event
} catch (err) {
  out.error = String(err);
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
