#!/usr/bin/env bash
# selftest-registry.sh - prove the registry peer works: in a fresh state dir start it with
# htpasswd auth, drive skopeo through every credential source the tests rely on (none, --creds,
# an auth file's auths, credHelpers with bin/docker-credential-testhelper), copy the image out,
# restart; then REG_AUTH=none, and REG_AUTH=token against a throw-away token endpoint (JWTs
# signed here with openssl). Ends with "N passed, M failed"; exits non-zero on any failure.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

T0=$(now_ms)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/selftest-registry.XXXXXX")
TOKEN_PID=
cleanup() {
  [ -n "$TOKEN_PID" ] && stop_pid "$TOKEN_PID" "token-endpoint.py" || true
  for s in htp none token; do
    "$TESTBED_DIR/stop-registry.sh" "$STATE/$s" 2>/dev/null || true
  done
  rm -rf "$STATE"
}
trap cleanup EXIT

load_env() {
  set -a
  # shellcheck disable=SC1090
  . "$1"
  set +a
}

# sk ARGS...: skopeo with a private HOME, no XDG_RUNTIME_DIR/DOCKER_CONFIG, our policy, the auth
# file AUTHFILE (default: an empty one), PATH with tests/testbed/bin in front. Output in SK_OUT.
mkdir -p "$STATE/home"
printf '{}\n' >"$STATE/empty-auth.json"
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$STATE/policy.json"
sk() {
  local rc=0
  SK_OUT=$(env -u XDG_RUNTIME_DIR -u DOCKER_CONFIG HOME="$STATE/home" \
    REGISTRY_AUTH_FILE="${AUTHFILE:-$STATE/empty-auth.json}" PATH="$TESTBED_DIR/bin:$PATH" \
    skopeo --policy "$STATE/policy.json" "$@" 2>&1) || rc=$?
  return "$rc"
}
sk_digest() { json_get Digest <<<"$SK_OUT" || true; }
# expect_fail NAME PATTERN SKOPEO-ARGS...: skopeo must fail and its output contain PATTERN
expect_fail() {
  local name=$1 pattern=$2
  shift 2
  if sk "$@"; then
    fail "$name" "skopeo succeeded"
  elif grep -qF -- "$pattern" <<<"$SK_OUT"; then
    pass "$name"
  else
    fail "$name" "output lacks '$pattern': $(tail -n 2 <<<"$SK_OUT" | tr '\n' ' ')"
  fi
}
# expect_digest NAME SKOPEO-ARGS...: skopeo inspect must succeed and report REGISTRY_IMAGE_DIGEST
expect_digest() {
  local name=$1
  shift
  if sk "$@"; then
    check_eq "$name" "$REGISTRY_IMAGE_DIGEST" "$(sk_digest)"
  else
    fail "$name" "$(tail -n 2 <<<"$SK_OUT" | tr '\n' ' ')"
  fi
}
# headers URL [CURL-ARGS...]: response headers (CR stripped) + "code NNN" line
headers() {
  local url=$1
  shift
  curl -s -o /dev/null -D - -w 'code %{http_code}\n' --max-time 5 "$@" "$url" | tr -d '\r'
}
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# =============================================================================================
echo "== htpasswd"
S=$STATE/htp
t0=$(now_ms)
if "$TESTBED_DIR/start-registry.sh" "$S"; then pass "start-registry.sh (htpasswd)"; else
  fail "start-registry.sh (htpasswd)"
  summary
  exit 1
fi
FIRST_START_WALL=$(( $(now_ms) - t0 ))
load_env "$S/registry.env"
HOST=$REGISTRY_HOST
check_eq "REGISTRY_AUTH" htpasswd "$REGISTRY_AUTH"
check_eq "REGISTRY_IMAGE" "$HOST/test/hello:1" "$REGISTRY_IMAGE"
check_eq "REGISTRY_USER" tester "$REGISTRY_USER"
check "REGISTRY_PASSWORD set and equal to the password file" \
  test -n "$REGISTRY_PASSWORD" -a "$REGISTRY_PASSWORD" = "$(cat "$REGISTRY_PASSWORD_FILE")"
check "REGISTRY_PID is our docker-registry" pid_matches "$REGISTRY_PID" "docker-registry serve $S/registry/"
check "registry listens on 127.0.0.1 only" \
  bash -c "ss -Hltn 'sport = :$REGISTRY_PORT' | awk '{print \$4}' | grep -qx '127.0.0.1:$REGISTRY_PORT'"

H=$(headers "$REGISTRY_URL/v2/")
check "/v2/ without creds: 401" grep -qx 'code 401' <<<"$H"
check "/v2/ without creds: WWW-Authenticate: Basic realm=\"testbed-registry\"" \
  grep -qix 'www-authenticate: Basic realm="testbed-registry"' <<<"$H"
check "/v2/ with creds: 200" grep -qx 'code 200' <<<"$(headers "$REGISTRY_URL/v2/" -u "$REGISTRY_USER:$REGISTRY_PASSWORD")"
check "/v2/ wrong password: 401" grep -qx 'code 401' <<<"$(headers "$REGISTRY_URL/v2/" -u "$REGISTRY_USER:wrong")"
H=$(headers "$REGISTRY_URL/v2/test/hello/manifests/1" -I -u "$REGISTRY_USER:$REGISTRY_PASSWORD" \
  -H 'Accept: application/vnd.oci.image.manifest.v1+json')
check "manifest HEAD with creds: Docker-Content-Digest = REGISTRY_IMAGE_DIGEST" \
  grep -qix "docker-content-digest: $REGISTRY_IMAGE_DIGEST" <<<"$H"

# --- skopeo: credential sources --------------------------------------------------------------
expect_fail "skopeo inspect without creds fails (401)" "authentication required" \
  inspect --tls-verify=false "docker://$REGISTRY_IMAGE"
expect_digest "skopeo inspect --creds" \
  inspect --tls-verify=false --creds "$REGISTRY_USER:$REGISTRY_PASSWORD" "docker://$REGISTRY_IMAGE"
expect_fail "skopeo inspect --creds with a wrong password fails" "authentication required" \
  inspect --tls-verify=false --creds "$REGISTRY_USER:wrong" "docker://$REGISTRY_IMAGE"

AUTH_B64=$(printf '%s:%s' "$REGISTRY_USER" "$REGISTRY_PASSWORD" | base64 -w0)
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$HOST" "$AUTH_B64" >"$STATE/auths.json"
AUTHFILE=$STATE/auths.json expect_digest "skopeo inspect, REGISTRY_AUTH_FILE with auths.<host>.auth" \
  inspect --tls-verify=false "docker://$REGISTRY_IMAGE"
AUTHFILE=$REGISTRY_AUTHS_JSON expect_digest "skopeo inspect, REGISTRY_AUTHS_JSON from registry.env" \
  inspect --tls-verify=false "docker://$REGISTRY_IMAGE"

# credHelpers -> docker-credential-testhelper (found through PATH)
export TESTHELPER_CREDS=$STATE/helper-creds TESTHELPER_LOG=$STATE/helper.log
printf '{"credHelpers":{"%s":"testhelper"}}\n' "$HOST" >"$STATE/helpers.json"
printf '%s %s %s\n' "$HOST" "$REGISTRY_USER" "$REGISTRY_PASSWORD" >"$TESTHELPER_CREDS"
: >"$TESTHELPER_LOG"
AUTHFILE=$STATE/helpers.json expect_digest "skopeo inspect, credHelpers -> testhelper" \
  inspect --tls-verify=false "docker://$REGISTRY_IMAGE"
# how skopeo called it: "get", one argument, the bare host:port on stdin without a newline
HELPER_CALLS=$(cat "$TESTHELPER_LOG")
check "helper called as 'get' with exactly the bare host:port on stdin" \
  test -n "$HELPER_CALLS" -a "$(sort -u <<<"$HELPER_CALLS")" = "get argc=1 stdin=$HOST"

: >"$TESTHELPER_CREDS"
: >"$TESTHELPER_LOG"
expect_fail_nf() {
  AUTHFILE=$STATE/helpers.json expect_fail "$@" inspect --tls-verify=false "docker://$REGISTRY_IMAGE"
}
expect_fail_nf "helper answers not-found (stdout, exit 1): skopeo goes on anonymous -> 401" \
  "authentication required"
check "  ... and the helper was asked" grep -q "^get argc=1 stdin=$HOST\$" "$TESTHELPER_LOG"
TESTHELPER_MODE=stderr-notfound expect_fail_nf \
  "not-found text on stderr instead of stdout: hard error" "error getting credentials"

# credsStore is not used by skopeo 1.9.3 (documented in the research; flag a change)
printf '%s %s %s\n' "$HOST" "$REGISTRY_USER" "$REGISTRY_PASSWORD" >"$TESTHELPER_CREDS"
: >"$TESTHELPER_LOG"
printf '{"credsStore":"testhelper"}\n' >"$STATE/store.json"
AUTHFILE=$STATE/store.json expect_fail "credsStore ignored by skopeo 1.9.3 (anonymous -> 401)" \
  "authentication required" inspect --tls-verify=false "docker://$REGISTRY_IMAGE"
check "  ... and the helper was not run" test ! -s "$TESTHELPER_LOG"

# copy the image out
if sk copy -q --src-tls-verify=false --src-creds "$REGISTRY_USER:$REGISTRY_PASSWORD" \
    "docker://$REGISTRY_IMAGE" "dir:$STATE/copy"; then
  pass "skopeo copy docker://REGISTRY_IMAGE -> dir: with --src-creds"
  layer=$(json_get layers.0.digest <"$STATE/copy/manifest.json" || true)
  check_eq "  ... layer holds hello.txt" "hello from the testbed" \
    "$(tar -xzOf "$STATE/copy/${layer#sha256:}" hello.txt 2>/dev/null || true)"
else
  fail "skopeo copy docker://REGISTRY_IMAGE -> dir: with --src-creds" "$(tail -n 2 <<<"$SK_OUT")"
fi
expect_fail "skopeo copy without creds fails" "authentication required" \
  copy -q --src-tls-verify=false "docker://$REGISTRY_IMAGE" "dir:$STATE/copy-anon"

# --- stop, restart on the same STATE -----------------------------------------------------------
OLD_PID=$REGISTRY_PID OLD_PASSWORD=$REGISTRY_PASSWORD
check "stop-registry.sh" "$TESTBED_DIR/stop-registry.sh" "$S"
gone() { ! pid_alive "$1"; }
check "  ... REGISTRY_PID is gone" gone "$OLD_PID"
check "stop-registry.sh again (nothing to stop)" "$TESTBED_DIR/stop-registry.sh" "$S"
t0=$(now_ms)
check "start-registry.sh on the same STATE" "$TESTBED_DIR/start-registry.sh" "$S"
RESTART_WALL=$(( $(now_ms) - t0 ))
load_env "$S/registry.env"
check_eq "  ... same password" "$OLD_PASSWORD" "$REGISTRY_PASSWORD"
expect_digest "  ... image still there (--creds)" \
  inspect --tls-verify=false --creds "$REGISTRY_USER:$REGISTRY_PASSWORD" "docker://$REGISTRY_IMAGE"
"$TESTBED_DIR/stop-registry.sh" "$S"

# =============================================================================================
echo "== none"
S=$STATE/none
if REG_AUTH=none "$TESTBED_DIR/start-registry.sh" "$S"; then
  pass "start-registry.sh (REG_AUTH=none)"
  load_env "$S/registry.env"
  check_eq "REGISTRY_AUTH" none "$REGISTRY_AUTH"
  check_eq "REGISTRY_PASSWORD empty" "" "$REGISTRY_PASSWORD"
  check "/v2/ without creds: 200" grep -qx 'code 200' <<<"$(headers "$REGISTRY_URL/v2/")"
  expect_digest "skopeo inspect anonymous" inspect --tls-verify=false "docker://$REGISTRY_IMAGE"
  "$TESTBED_DIR/stop-registry.sh" "$S"
else
  fail "start-registry.sh (REG_AUTH=none)"
fi

# =============================================================================================
echo "== token"
S=$STATE/token
K=$STATE/tokenkeys
mkdir -p "$K"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$K/key.pem" -out "$K/cert.pem" -days 2 \
  -subj /CN=testbed-token-signer 2>/dev/null
X5C=$(openssl x509 -in "$K/cert.pem" -outform DER | base64 -w0)
# mint_jwt AUD [REPO]: RS256 JWT with x5c (the leaf is the root in rootcertbundle)
mint_jwt() {
  local aud=$1 repo=${2:-test/hello} now h p s
  now=$(date +%s)
  h=$(printf '{"typ":"JWT","alg":"RS256","x5c":["%s"]}' "$X5C" | b64url)
  p=$(printf '{"iss":"testbed-issuer","sub":"tester","aud":"%s","exp":%d,"nbf":%d,"iat":%d,"jti":"j%s","access":[{"type":"repository","name":"%s","actions":["pull"]}]}' \
    "$aud" $((now + 600)) $((now - 10)) "$now" "$RANDOM" "$repo" | b64url)
  s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$K/key.pem" -binary | b64url)
  printf '%s.%s.%s' "$h" "$p" "$s"
}
GOOD_JWT=$(mint_jwt testbed-registry)
printf '%s' "$GOOD_JWT" >"$K/token"

# A throw-away token endpoint: logs each request and hands out the pre-minted JWT to anyone
# (it checks nothing; it only shows what a client sends to the realm).
cat >"$K/token-endpoint.py" <<'PY'
import json, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
tok = open(sys.argv[2]).read().strip()
log = open(sys.argv[3], "a", buffering=1)
class H(BaseHTTPRequestHandler):
    def answer(self, body):
        u = urllib.parse.urlsplit(self.path)
        log.write(json.dumps({"method": self.command, "path": u.path,
            "query": urllib.parse.parse_qs(u.query), "form": urllib.parse.parse_qs(body),
            "basic": (self.headers.get("Authorization") or "").startswith("Basic "),
            "chunked": getattr(self, "chunked", False)}) + "\n")
        out = json.dumps({"token": tok, "access_token": tok, "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def do_GET(self): self.answer("")
    def do_POST(self):
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # skopeo's POST is chunked
            while True:
                n = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if n == 0:
                    while self.rfile.readline().strip():
                        pass
                    break
                body += self.rfile.read(n)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        self.answer(body.decode())
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
TPORT=$(free_port)
: >"$K/token-requests.log"
nohup "$TESTBED_PYTHON" "$K/token-endpoint.py" "$TPORT" "$K/token" "$K/token-requests.log" \
  >"$K/token-endpoint.out" 2>&1 </dev/null &
TOKEN_PID=$!
for _ in $(seq 100); do
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$TPORT/token" && break
  sleep 0.05
done
REALM=http://127.0.0.1:$TPORT/token

if REG_AUTH=token REG_TOKEN_REALM=$REALM REG_TOKEN_SERVICE=testbed-registry \
   REG_TOKEN_ISSUER=testbed-issuer REG_TOKEN_ROOTCERT=$K/cert.pem \
   "$TESTBED_DIR/start-registry.sh" "$S"; then
  pass "start-registry.sh (REG_AUTH=token; test image pushed through an anonymous bootstrap)"
  load_env "$S/registry.env"
  check_eq "REGISTRY_AUTH" token "$REGISTRY_AUTH"
  H=$(headers "$REGISTRY_URL/v2/")
  check "/v2/: 401 with WWW-Authenticate: Bearer realm=\"$REALM\",service=\"testbed-registry\"" \
    grep -qix "www-authenticate: Bearer realm=\"$REALM\",service=\"testbed-registry\"" <<<"$H"
  H=$(headers "$REGISTRY_URL/v2/test/hello/manifests/1" -I)
  check "manifest HEAD: challenge carries scope=\"repository:test/hello:pull\"" \
    grep -qi '^www-authenticate: Bearer .*scope="repository:test/hello:pull"' <<<"$H"
  check "/v2/ with the RS256+x5c JWT: 200" \
    grep -qx 'code 200' <<<"$(headers "$REGISTRY_URL/v2/" -H "Authorization: Bearer $GOOD_JWT")"
  expect_digest "skopeo inspect --registry-token (JWT signed by the rootcertbundle key)" \
    inspect --tls-verify=false --registry-token "$GOOD_JWT" "docker://$REGISTRY_IMAGE"
  expect_fail "JWT with aud != service rejected" "authentication required" \
    inspect --tls-verify=false --registry-token "$(mint_jwt other-service)" "docker://$REGISTRY_IMAGE"
  check "  ... registry log: token intended for another audience" \
    grep -q 'token intended for another audience' "$REGISTRY_LOG"
  expect_fail "JWT for another repository: insufficient scope" "authentication required" \
    inspect --tls-verify=false --registry-token "$(mint_jwt testbed-registry other/repo)" "docker://$REGISTRY_IMAGE"

  : >"$K/token-requests.log"
  expect_digest "skopeo --creds: token fetched from the realm, pull works" \
    inspect --tls-verify=false --creds "u1:p1" "docker://$REGISTRY_IMAGE"
  check "  ... realm got GET ?service=testbed-registry&scope=repository:test/hello:pull with Basic" \
    "$TESTBED_PYTHON" -c 'import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
sys.exit(not rs or not all(r["method"] == "GET" and r["basic"] and r["query"].get("service") == ["testbed-registry"]
    and "repository:test/hello:pull" in r["query"].get("scope", []) for r in rs))' "$K/token-requests.log"

  # identity token via the helper: Username "<token>" -> OAuth2 refresh_token grant
  printf '{"credHelpers":{"%s":"testhelper"}}\n' "$REGISTRY_HOST" >"$STATE/helpers-token.json"
  printf '%s <token> refresh-abc\n' "$REGISTRY_HOST" >"$TESTHELPER_CREDS"
  : >"$K/token-requests.log"
  AUTHFILE=$STATE/helpers-token.json expect_digest "credHelpers answering Username \"<token>\": pull works" \
    inspect --tls-verify=false "docker://$REGISTRY_IMAGE"
  check "  ... realm got POST grant_type=refresh_token refresh_token=<Secret> client_id=containers/image" \
    "$TESTBED_PYTHON" -c 'import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
ok = lambda f, k, v: f.get(k) == [v]
sys.exit(not rs or not all(r["method"] == "POST" and not r["basic"] and ok(r["form"], "grant_type", "refresh_token")
    and ok(r["form"], "refresh_token", "refresh-abc") and ok(r["form"], "client_id", "containers/image")
    and ok(r["form"], "service", "testbed-registry") and ok(r["form"], "scope", "repository:test/hello:pull")
    for r in rs))' "$K/token-requests.log"
  check "  ... that POST came with Transfer-Encoding: chunked (no Content-Length)" \
    grep -q '"method": "POST".*"chunked": true' "$K/token-requests.log"
  "$TESTBED_DIR/stop-registry.sh" "$S"
else
  fail "start-registry.sh (REG_AUTH=token)"
fi
stop_pid "$TOKEN_PID" "token-endpoint.py"
TOKEN_PID=

echo "timings: first start ${FIRST_START_WALL} ms wall, restart ${RESTART_WALL:-?} ms wall," \
  "selftest $(( $(now_ms) - T0 )) ms"
summary
