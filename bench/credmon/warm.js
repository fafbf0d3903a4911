#!/usr/bin/env node
// bench/credmon/warm.js TOKEN_URL COUNT - send COUNT refresh grants to token_server.js, 16 at a
// time over kept-alive connections, before anything is measured.
//
// A node process answers its first thousands of requests in its interpreter, several times
// slower than once its JIT has compiled the handler; without this the credmon measured first
// would pay for that warm-up and the one measured second would not. Exits 1 when a grant is
// not answered 200.
'use strict';
const http = require('http');

const [url, countArg] = process.argv.slice(2);
const count = Number(countArg);
if (!url || !(count > 0)) {
  console.error('usage: warm.js TOKEN_URL COUNT');
  process.exit(2);
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
const body = new URLSearchParams({
  grant_type: 'refresh_token',
  client_id: process.env.BENCH_CLIENT_ID || 'bench-client',
  client_secret: process.env.BENCH_CLIENT_SECRET || 'bench-secret',
  refresh_token: 'warm-up',
}).toString();

function grant() {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(body),
        },
      },
      (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

let sent = 0;
async function loop() {
  while (sent < count) {
    sent++;
    await grant();
  }
}

Promise.all(Array.from({ length: 16 }, loop)).then(
  () => agent.destroy(),
  (e) => {
    console.error(`warming the token server: ${e.message}`);
    process.exit(1);
  },
);
