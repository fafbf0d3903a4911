#!/usr/bin/env node
// bench/credmon/token_server.js PORT_FILE [PORT] - a loopback OAuth token endpoint for
// bench/credmon.sh that answers every valid refresh_token grant at once.
//
//   POST /token  (application/x-www-form-urlencoded: grant_type=refresh_token, client_id,
//                client_secret, refresh_token; credentials in the body as scitokens-credmon
//                and credkeeper send them, or HTTP Basic)
//                -> 200 {"access_token", "token_type": "Bearer", "expires_in": 3600,
//                        "scope", "refresh_token"}: a new access and refresh token each time
//                -> 400 {"error": "invalid_request" | "unsupported_grant_type"} otherwise,
//                   401 {"error": "invalid_client"} for a wrong client id or secret
//   GET /stats   -> {"refreshed": N, "rejected": N}: counters since start (the script takes
//                   differences around each run to check how many refreshes a pass made)
//
// Binds 127.0.0.1 only; PORT 0 (the default) lets the kernel choose, and the chosen port is
// written to PORT_FILE once the server listens. Every answer carries `x-credmon-bench: 1`, so
// the script can tell that it is this server answering. A real provider (signing a JWT,
// storing the grant) would be the bottleneck at tens of thousands of refreshes; this one is
// deliberately not, so that the benchmark measures the credmons.
'use strict';
const http = require('http');
const fs = require('fs');
const crypto = require('crypto');

const CLIENT_ID = process.env.BENCH_CLIENT_ID || 'bench-client';
const CLIENT_SECRET = process.env.BENCH_CLIENT_SECRET || 'bench-secret';
const portFile = process.argv[2];
const port = Number(process.argv[3] || 0);
if (!portFile) {
  console.error('usage: token_server.js PORT_FILE [PORT]');
  process.exit(2);
}

// Unique per server run, so a token from an earlier run can never pass for a new one.
const runId = crypto.randomBytes(6).toString('hex');
let refreshed = 0;
let rejected = 0;

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    'x-credmon-bench': '1',
  });
  res.end(text);
}

function basic(header) {
  const m = /^Basic\s+(.+)$/i.exec(header || '');
  if (!m) return null;
  const text = Buffer.from(m[1], 'base64').toString();
  const i = text.indexOf(':');
  if (i < 0) return null;
  const dec = (s) => decodeURIComponent(s.replace(/\+/g, ' '));
  return [dec(text.slice(0, i)), dec(text.slice(i + 1))];
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    return send(res, 200, { refreshed, rejected });
  }
  if (req.method !== 'POST' || req.url.split('?')[0] !== '/token') {
    rejected++;
    return send(res, 404, { error: 'not_found' });
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const form = new URLSearchParams(Buffer.concat(chunks).toString());
    let id = form.get('client_id');
    let secret = form.get('client_secret');
    const b = basic(req.headers.authorization);
    if (b) [id, secret] = b;
    if (form.get('grant_type') !== 'refresh_token') {
      rejected++;
      return send(res, 400, { error: 'unsupported_grant_type' });
    }
    if (!form.get('refresh_token')) {
      rejected++;
      return send(res, 400, { error: 'invalid_request', error_description: 'no refresh_token' });
    }
    if (id !== CLIENT_ID || secret !== CLIENT_SECRET) {
      rejected++;
      return send(res, 401, { error: 'invalid_client' });
    }
    refreshed++;
    send(res, 200, {
      access_token: `at-${runId}-${refreshed}-${crypto.randomBytes(12).toString('hex')}`,
      token_type: 'Bearer',
      expires_in: 3600,
      scope: 'openid offline_access read',
      refresh_token: `rt-${runId}-${refreshed}`,
    });
  });
});
server.keepAliveTimeout = 30000;
server.listen(port, '127.0.0.1', () => {
  const tmp = `${portFile}.tmp`;
  fs.writeFileSync(tmp, String(server.address().port));
  fs.renameSync(tmp, portFile);
});
const stop = () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
