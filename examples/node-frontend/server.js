// A Geometra-like front-end server: serves the app, proxies chat and memory
// calls, logs with winston. The OpenTelemetry set-up is in telemetry.js
// (loaded first, `npm start`); winston's records reach the sidecar as OTLP
// log records through @opentelemetry/winston-transport, with the trace of
// the request they were written in.
'use strict';

const express = require('express');
const winston = require('winston');
const { OpenTelemetryTransportV3 } = require('@opentelemetry/winston-transport');
const { metrics } = require('@opentelemetry/api');

const logger = winston.createLogger({
  level: 'info',
  format: winston.format.json(),
  transports: [new winston.transports.Console(), new OpenTelemetryTransportV3()],
});

const meter = metrics.getMeter('geometra.frontend');
const pageViews = meter.createCounter('frontend.page.views', { description: 'Pages served' });

const app = express();
app.use(express.json());

app.get('/healthz', (_req, res) => res.json({ ok: true, pid: process.pid }));

app.get('/', (_req, res) => {
  pageViews.add(1);
  res.type('html').send('<!doctype html><title>Geometra</title><div id="app">Geometra</div>');
});

// The memory panel: what the plan's front end logs for a memory read.
app.get('/api/users/:userId/memories', (req, res) => {
  logger.info('memory_operation', { operation: 'recall', user_id: req.params.userId });
  res.json({ user_id: req.params.userId, memories: [], pid: process.pid });
});

app.post('/api/chat', (req, res) => {
  const userId = String((req.body && req.body.user_id) || 'anonymous');
  logger.info('chat_message_sent', { user_id: userId, length: String((req.body && req.body.message) || '').length });
  res.json({ ok: true, pid: process.pid });
});

app.get('/api/fail', (_req, res) => {
  logger.error('upstream_failed', { upstream: 'geometra-api', reason: 'timeout' });
  res.status(500).json({ error: 'upstream failed' });
});

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
app.listen(port, host, () => logger.info('frontend_listening', { port, pid: process.pid }));
