#!/usr/bin/env bash
# selftest-browser.sh - prove the headless browser works here: setup-browser.sh, then
#   1. Chromium (via playwright-core) loads a tiny loopback page, fills and submits its form,
#      takes a screenshot; a request to a non-loopback host is blocked at once;
#   2. the real test OP's own pages: an authorization request for cli-client (PKCE S256,
#      prompt=consent) walked through login + consent until the browser lands on the
#      redirect_uri with code= and state=; the code is then redeemed with curl;
#   3. browser/web-login.mjs end to end against a small stand-in broker (node, written to a
#      temp dir; it implements the web pages' contract) and the real OP: login, --revoke,
#      --screenshot, --reuse of the used link, an unknown provider.
# Ends with "N passed, M failed"; exits non-zero on any failure; stops everything it started.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

T0=$(now_ms)
BROWSER_DIR=$TESTBED_DIR/browser
WORK=$(mktemp -d "${TMPDIR:-/tmp}/selftest-browser.XXXXXX")
PIDS=()   # "pid pattern" of the servers started here
cleanup() {
  local entry
  for entry in "${PIDS[@]}"; do
    stop_pid "${entry%% *}" "${entry#* }" || true
  done
  "$TESTBED_DIR/stop-op.sh" "$WORK/state" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# browser profiles go to $WORK/tmp, so the leftover checks below see only this run's
mkdir -p "$WORK/tmp"
export TMPDIR=$WORK/tmp

# serve DIR: python3 http.server on a free loopback port; sets SERVE_PORT
serve() {
  local dir=$1 pid rc
  for _ in 1 2 3; do
    SERVE_PORT=$(free_port)
    "$TESTBED_PYTHON" -m http.server "$SERVE_PORT" --bind 127.0.0.1 --directory "$dir" \
      >>"$WORK/http-server.log" 2>&1 </dev/null &
    pid=$!
    PIDS+=("$pid http.server $SERVE_PORT")
    rc=0
    wait_for_http "http://127.0.0.1:$SERVE_PORT/" 10 "$pid" || rc=$?
    [ "$rc" -eq 0 ] && return 0
    stop_pid "$pid" "http.server $SERVE_PORT" || true
  done
  return 1
}

is_png() { [ "$(head -c 8 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }
no_chromium_left() { ! pgrep -f "$TMPDIR/web-login-profile-" >/dev/null; }
no_profile_left() { ! compgen -G "$TMPDIR/web-login-profile-*" >/dev/null; }
# has_keys JSON KEY...: every KEY is present and non-empty in the JSON object
has_keys() {
  "$TESTBED_PYTHON" -c 'import json, sys
d = json.loads(sys.argv[1])
sys.exit(0 if all(d.get(k) for k in sys.argv[2:]) else 1)' "$@" 2>/dev/null
}
# blocked_fast LOAD_MS OUTPUT: the load took < 3 s and both foreign requests failed
blocked_fast() { [ "$1" -lt 3000 ] && grep -q fonts.googleapis.com <<<"$2" && grep -q 192.0.2.1 <<<"$2"; }
# one_line_error FILE URL: FILE is one line naming URL and the refusal page's h1
one_line_error() { [ "$(wc -l <"$1")" -eq 1 ] && grep -qF "$2 (h1: Login link expired" "$1"; }

# node_inline SCRIPT ARGS...: run an ES module from stdin-less -e in browser/ (so that
# playwright-core and ./web-login.mjs resolve)
node_inline() {
  local script=$1
  shift
  (cd "$BROWSER_DIR" && node --input-type=module -e "$script" "$@")
}

# ---------------------------------------------------------------------------------------------
echo "== setup"
t0=$(now_ms)
if CHROMIUM=$("$TESTBED_DIR/setup-browser.sh"); then pass "setup-browser.sh ($(( $(now_ms) - t0 )) ms)"; else
  fail "setup-browser.sh"
  summary
  exit 1
fi
t0=$(now_ms)
SETUP_AGAIN=$("$TESTBED_DIR/setup-browser.sh" 2>&1) || true
ms=$(( $(now_ms) - t0 ))
check_eq "setup-browser.sh again: nothing to do, prints the path" "$CHROMIUM" "$SETUP_AGAIN"
check "setup-browser.sh again is fast (${ms} ms < 3000)" test "$ms" -lt 3000
VERSION=$("$CHROMIUM" --version 2>/dev/null || true)
check "chromium --version: $VERSION" grep -q '^Chromium [0-9]' <<<"$VERSION"

# ---------------------------------------------------------------------------------------------
echo "== 1. a tiny loopback page with a form"
mkdir -p "$WORK/site"
cat >"$WORK/site/index.html" <<'EOF'
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>selftest form</title>
<style>@import url(https://fonts.googleapis.com/css?family=Roboto:400,100);</style></head>
<body><h1>Form</h1>
<form method="get" action="/result.html"><input name="q"><button type="submit">Go</button></form>
<img src="http://192.0.2.1/blocked.png" alt="">
</body></html>
EOF
printf '<!DOCTYPE html><html><head><title>result</title></head><body><h1>Result</h1></body></html>\n' \
  >"$WORK/site/result.html"
if serve "$WORK/site"; then pass "python3 http.server on 127.0.0.1:$SERVE_PORT"; else fail "python3 http.server"; fi
SITE=http://127.0.0.1:$SERVE_PORT

t0=$(now_ms)
OUT=$(node_inline '
import { launchBrowser } from "./web-login.mjs";
const [site, shot] = process.argv.slice(1);
const b = await launchBrowser();
try {
  const { page } = b;
  const blocked = [];
  page.on("requestfailed", (r) => blocked.push(r.url()));
  const t = Date.now();
  const resp = await page.goto(site + "/index.html", { waitUntil: "load" });
  const loadMs = Date.now() - t;
  const title = await page.title();
  await page.fill("input[name=q]", "hello world");
  await Promise.all([page.waitForURL(/result\.html/), page.click("button[type=submit]")]);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ status: resp.status(), title, loadMs, url: page.url(),
    h1: await page.textContent("h1"), blocked, ua: await page.evaluate(() => navigator.userAgent) }));
} finally { await b.close(); }
' "$SITE" "$WORK/form.png" 2>"$WORK/form.err") || true
ms=$(( $(now_ms) - t0 ))
if [ -n "$OUT" ]; then pass "playwright run (launch + 2 pages + screenshot: ${ms} ms)"; else
  fail "playwright run" "$(head -c 600 "$WORK/form.err")"
  OUT='{}'
fi
check_eq "page status" 200 "$(json_get status <<<"$OUT" || true)"
check_eq "page title" "selftest form" "$(json_get title <<<"$OUT" || true)"
check_eq "form submitted (GET ?q=...)" "$SITE/result.html?q=hello+world" "$(json_get url <<<"$OUT" || true)"
check_eq "result page h1" Result "$(json_get h1 <<<"$OUT" || true)"
check "headless user agent" grep -q HeadlessChrome <<<"$(json_get ua <<<"$OUT" || true)"
load_ms=$(json_get loadMs <<<"$OUT" || echo 99999)
check "non-loopback requests blocked, load not held up (${load_ms} ms < 3000)" \
  blocked_fast "$load_ms" "$OUT"
check "screenshot is a PNG" is_png "$WORK/form.png"
check "no chromium left behind" no_chromium_left

# ---------------------------------------------------------------------------------------------
echo "== 2. the real OP's login + consent pages"
if "$TESTBED_DIR/start-op.sh" "$WORK/state" 2>"$WORK/start-op.err"; then pass "start-op.sh"; else
  fail "start-op.sh" "$(tail -n 5 "$WORK/start-op.err")"
  summary
  exit 1
fi
OP_ISSUER=$(env_read "$WORK/state/op.env" OP_ISSUER)
OP_AUTHORIZATION_ENDPOINT=$(env_read "$WORK/state/op.env" OP_AUTHORIZATION_ENDPOINT)
OP_TOKEN_ENDPOINT=$(env_read "$WORK/state/op.env" OP_TOKEN_ENDPOINT)
OP_REVOCATION_ENDPOINT=$(env_read "$WORK/state/op.env" OP_REVOCATION_ENDPOINT)

mkdir -p "$WORK/callback"
serve "$WORK/callback" || fail "callback listener"
CB_PORT=$SERVE_PORT
REDIRECT_URI=http://127.0.0.1:$CB_PORT/callback
read -r VERIFIER CHALLENGE < <(pkce_pair)
STATE_PARAM=st-$RANDOM$RANDOM
AUTH_URL="$OP_AUTHORIZATION_ENDPOINT?client_id=cli-client&response_type=code"
AUTH_URL+="&redirect_uri=$(urlencode "$REDIRECT_URI")&scope=$(urlencode 'openid offline_access read')"
AUTH_URL+="&code_challenge=$CHALLENGE&code_challenge_method=S256&state=$STATE_PARAM&prompt=consent"

t0=$(now_ms)
OUT=$(node_inline '
import { launchBrowser } from "./web-login.mjs";
const [authUrl, redirectUri] = process.argv.slice(1);
const b = await launchBrowser();
try {
  const { page } = b;
  const pages = [];
  await page.goto(authUrl, { waitUntil: "load" });
  pages.push(await page.textContent("h1"));
  await page.fill("input[name=login]", "alice");
  await page.fill("input[name=password]", "anything");
  await Promise.all([page.waitForURL((u) => !u.href.includes("/login")), page.click("button.login-submit")]);
  await page.waitForLoadState("load");
  pages.push(await page.textContent("h1"));
  const consent = await page.locator("form input[name=prompt][value=consent]").count();
  await Promise.all([page.waitForURL((u) => u.href.startsWith(redirectUri)),
    page.click("form:has(input[name=prompt][value=consent]) button[type=submit]")]);
  console.log(JSON.stringify({ pages, consent, url: page.url() }));
} finally { await b.close(); }
' "$AUTH_URL" "$REDIRECT_URI" 2>"$WORK/op.err") || true
ms=$(( $(now_ms) - t0 ))
if [ -n "$OUT" ]; then pass "walked the OP pages (${ms} ms)"; else
  fail "walk the OP pages" "$(head -c 600 "$WORK/op.err")"
  OUT='{}'
fi
check_eq "OP pages seen: Sign-in, Authorize" '["Sign-in","Authorize"]' "$(json_get pages <<<"$OUT" || true)"
FINAL=$(json_get url <<<"$OUT" || true)
check "ended at the redirect_uri ($REDIRECT_URI?...)" grep -q "^$REDIRECT_URI?" <<<"$FINAL"
CODE=$(url_query_param "$FINAL" code || true)
check "code= present" test -n "$CODE"
check_eq "state= echoed" "$STATE_PARAM" "$(url_query_param "$FINAL" state || true)"
check_eq "iss= is the OP" "$OP_ISSUER" "$(url_query_param "$FINAL" iss || true)"
TOK=$(curl -sS --max-time 10 -d grant_type=authorization_code -d client_id=cli-client \
  --data-urlencode "code=$CODE" --data-urlencode "redirect_uri=$REDIRECT_URI" \
  --data-urlencode "code_verifier=$VERIFIER" "$OP_TOKEN_ENDPOINT" || true)
check "code redeemed with the PKCE verifier: access + refresh token" \
  has_keys "$TOK" access_token refresh_token
check_eq "callback listener got the redirect (GET /callback)" 1 \
  "$(grep -c 'GET /callback?' "$WORK/http-server.log" || true)"

# ---------------------------------------------------------------------------------------------
echo "== 3. web-login.mjs against a stand-in broker + the real OP"
cat >"$WORK/broker.mjs" <<'EOF'
// Stand-in for the broker's web pages (the contract web-login.mjs relies on); loopback only.
import * as crypto from 'node:crypto';
import * as http from 'node:http';

const [port, authEp, tokenEp, revokeEp, linkToken] = process.argv.slice(2);
const origin = `http://127.0.0.1:${port}`;
const redirectUri = `${origin}/callback`;
const providers = ['other-op', 'test-op'];
const unused = new Set(linkToken.split(','));
const sessions = new Map(); // sid -> { csrf, flash }
const creds = new Map();    // provider -> refresh token
const pending = new Map();  // state -> { verifier, provider }
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const rnd = () => crypto.randomBytes(16).toString('base64url');

function page(res, code, h1, body = '') {
  res.writeHead(code, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!DOCTYPE html><html><head><title>${esc(h1)}</title></head><body><h1>${esc(h1)}</h1>${body}</body></html>`);
}
function redirect(res, to, cookie) {
  res.writeHead(303, { location: to, ...(cookie ? { 'set-cookie': cookie } : {}) });
  res.end();
}
async function form(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, origin);
    const sid = /(?:^|; )broker_sid=([\w-]+)/.exec(req.headers.cookie || '')?.[1];
    const sess = sessions.get(sid);
    const m = /^\/login\/([\w-]+)$/.exec(url.pathname);
    if (req.method === 'GET' && m) {
      if (!unused.delete(m[1])) return page(res, 410, 'Login link expired or already used');
      const id = rnd();
      sessions.set(id, { csrf: rnd(), flash: null });
      return redirect(res, '/web', `broker_sid=${id}; Path=/; HttpOnly; SameSite=Lax`);
    }
    if (!sess) return page(res, 401, 'Not signed in');
    if (req.method === 'GET' && url.pathname === '/web') {
      const flash = sess.flash ? `<p class="flash">${esc(sess.flash)}</p>` : '';
      sess.flash = null;
      const sections = providers.map((p) => `<section class="provider" data-provider="${esc(p)}"><h2>${esc(p)}</h2>
        <span class="status">${creds.has(p) ? 'logged in (refresh token stored)' : 'not logged in'}</span>
        <form method="post" action="/web/login/${esc(p)}"><input type="hidden" name="csrf" value="${sess.csrf}"><button type="submit">Log in</button></form>
        ${creds.has(p) ? `<form method="post" action="/web/revoke/${esc(p)}"><input type="hidden" name="csrf" value="${sess.csrf}"><button type="submit">Revoke</button></form>` : ''}
        </section>`).join('\n');
      return page(res, 200, 'Credentials', `<p id="who">Signed in as tester</p>${flash}${sections}`);
    }
    const act = /^\/web\/(login|revoke)\/([\w-]+)$/.exec(url.pathname);
    if (req.method === 'POST' && act) {
      const f = await form(req);
      if (f.get('csrf') !== sess.csrf) return page(res, 403, 'Bad CSRF token');
      const [, what, provider] = act;
      if (what === 'revoke') {
        const rt = creds.get(provider);
        creds.delete(provider);
        if (rt) await fetch(revokeEp, { method: 'POST', body: new URLSearchParams({ token: rt, client_id: 'cli-client' }) });
        sess.flash = `Revoked ${provider}`;
        return redirect(res, '/web');
      }
      const verifier = rnd() + rnd();
      const state = rnd();
      pending.set(state, { verifier, provider });
      const q = new URLSearchParams({
        client_id: 'cli-client', response_type: 'code', redirect_uri: redirectUri, state, prompt: 'consent',
        scope: 'openid offline_access read', code_challenge_method: 'S256',
        code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'),
      });
      return redirect(res, `${authEp}?${q}`);
    }
    if (req.method === 'GET' && url.pathname === '/callback') {
      const p = pending.get(url.searchParams.get('state'));
      pending.delete(url.searchParams.get('state'));
      if (!p) return page(res, 400, 'Unknown state');
      const r = await fetch(tokenEp, { method: 'POST', body: new URLSearchParams({
        grant_type: 'authorization_code', client_id: 'cli-client', code: url.searchParams.get('code') || '',
        redirect_uri: redirectUri, code_verifier: p.verifier }) });
      const tok = await r.json();
      if (tok.refresh_token) creds.set(p.provider, tok.refresh_token);
      sess.flash = tok.refresh_token ? `Logged in to ${p.provider}` : `Login to ${p.provider} failed: ${tok.error}`;
      return redirect(res, '/web');
    }
    return page(res, 404, 'Not found');
  } catch (err) {
    return page(res, 500, `Broker error: ${err.message}`);
  }
}).listen(Number(port), '127.0.0.1', () => console.log(`broker listening on ${origin}`));
EOF
BROKER_PORT=$(free_port)
LINK_TOKEN=tok$RANDOM$RANDOM
LINK_TOKEN2=tok$RANDOM$RANDOM
node "$WORK/broker.mjs" "$BROKER_PORT" "$OP_AUTHORIZATION_ENDPOINT" "$OP_TOKEN_ENDPOINT" \
  "$OP_REVOCATION_ENDPOINT" "$LINK_TOKEN,$LINK_TOKEN2" >>"$WORK/broker.log" 2>&1 </dev/null &
PIDS+=("$! $WORK/broker.mjs")
for _ in $(seq 100); do  # (wait_for_http wants a 200; any answer will do here)
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$BROKER_PORT/" && break
  sleep 0.1
done
check "stand-in broker up on 127.0.0.1:$BROKER_PORT" curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$BROKER_PORT/"
LINK=http://127.0.0.1:$BROKER_PORT/login/$LINK_TOKEN

t0=$(now_ms)
rc=0
OUT=$(node "$BROWSER_DIR/web-login.mjs" "$LINK" test-op alice --revoke --screenshot "$WORK/web.png" \
  2>"$WORK/web-login.err") || rc=$?
ms=$(( $(now_ms) - t0 ))
check_eq "web-login.mjs LINK test-op alice --revoke: exit 0 (${ms} ms)" "0" "$rc"
[ "$rc" -eq 0 ] || log "web-login.mjs stderr: $(cat "$WORK/web-login.err")"
printf '%s\n' "$OUT"
check_eq "who" "Signed in as tester" "$(json_get who <<<"$OUT" || true)"
check_eq "status after login" "logged in (refresh token stored)" "$(json_get status <<<"$OUT" || true)"
check_eq "flash after login" "Logged in to test-op" "$(json_get flash <<<"$OUT" || true)"
check_eq "final url" "http://127.0.0.1:$BROKER_PORT/web" "$(json_get url <<<"$OUT" || true)"
check_eq "status_after_revoke" "not logged in" "$(json_get status_after_revoke <<<"$OUT" || true)"
check "screenshot written (PNG)" is_png "$WORK/web.png"

rc=0
OUT=$(node "$BROWSER_DIR/web-login.mjs" --reuse "$LINK" 2>"$WORK/reuse.err") || rc=$?
check_eq "--reuse of the used link: exit 0" 0 "$rc"
check_eq "--reuse: status 410" 410 "$(json_get status <<<"$OUT" || true)"
check_eq "--reuse: h1" "Login link expired or already used" "$(json_get h1 <<<"$OUT" || true)"
check_eq "--reuse: url" "$LINK" "$(json_get url <<<"$OUT" || true)"

rc=0
OUT=$(node "$BROWSER_DIR/web-login.mjs" "$LINK" test-op alice 2>"$WORK/used.err") || rc=$?
check_eq "login with the used link: exit 1" 1 "$rc"
check "  one line naming the URL and h1" one_line_error "$WORK/used.err" "$LINK"
check_eq "  nothing on stdout" "" "$OUT"

rc=0
OUT=$(node "$BROWSER_DIR/web-login.mjs" "${LINK%/*}/$LINK_TOKEN2" no-such-op alice 2>"$WORK/noop.err") || rc=$?
check_eq "unknown provider: exit 1" 1 "$rc"
check "  message lists the providers present" grep -q "present: other-op, test-op" "$WORK/noop.err"

rc=0
node "$BROWSER_DIR/web-login.mjs" only-one-arg >/dev/null 2>&1 || rc=$?
check_eq "bad usage: exit 2" 2 "$rc"

check "no chromium left behind" no_chromium_left
check "no profile directories left behind" no_profile_left

echo "== total $(( $(now_ms) - T0 )) ms"
summary
