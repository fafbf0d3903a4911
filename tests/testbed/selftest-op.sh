#!/usr/bin/env bash
# selftest-op.sh - prove the test OP works: start it in a fresh state dir, drive every flow the
# integration tests rely on with curl (+ op-browser.sh), stop it. Ends with "N passed, M failed";
# exits non-zero on any failure.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

T0=$(now_ms)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/selftest-op.XXXXXX")
STATE2=$STATE/second
LISTENER_PID=
cleanup() {
  [ -n "$LISTENER_PID" ] && stop_pid "$LISTENER_PID" oneshot-listener || true
  "$TESTBED_DIR/stop-op.sh" "$STATE" 2>/dev/null || true
  "$TESTBED_DIR/stop-op.sh" "$STATE2" 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT

TE=urn:ietf:params:oauth:grant-type:token-exchange
DEVICE_GRANT=urn:ietf:params:oauth:grant-type:device_code
TT_AT=urn:ietf:params:oauth:token-type:access_token

# http CURL-ARGS...: curl wrapper, sets CODE (HTTP status) and RESP (body)
http() {
  local out
  out=$(curl -sS --max-time 10 -w '\n%{http_code}' "$@") || { CODE=000 RESP=; return 0; }
  CODE=${out##*$'\n'}
  RESP=${out%$'\n'*}
}
jget() { json_get "$1" <<<"$RESP" || true; }
claims() { jwt_payload "$1" 2>/dev/null || echo '{}'; }
claim() { json_get "$2" <<<"$(claims "$1")" || true; }
ttl_of() { # exp - iat of a JWT
  claims "$1" | "$TESTBED_PYTHON" -c 'import json, sys; d = json.load(sys.stdin); print(d["exp"] - d["iat"])' 2>/dev/null || echo '?'
}
kids() { json_get keys <<<"$RESP" | "$TESTBED_PYTHON" -c 'import json, sys; print(" ".join(sorted(k["kid"] for k in json.load(sys.stdin))))' 2>/dev/null || true; }

# verify_jwt TOKEN AUDIENCE: verify signature (via the OP's JWKS), iss, aud and typ with jose
verify_jwt() {
  (cd "$TESTBED_DIR/op" && node --input-type=module -e '
import * as jose from "jose";
const [tok, jwks, iss, aud] = process.argv.slice(1);
await jose.jwtVerify(tok, jose.createRemoteJWKSet(new URL(jwks)), { issuer: iss, audience: aud, typ: "at+jwt" });
' "$1" "$OP_JWKS_URL" "$OP_ISSUER" "$2") 2>/dev/null
}

load_env() {
  set -a
  # shellcheck disable=SC1090
  . "$1"
  set +a
}

# ---------------------------------------------------------------------------------------------
echo "== start"
if "$TESTBED_DIR/start-op.sh" "$STATE"; then pass "start-op.sh (ready = discovery 200)"; else
  fail "start-op.sh"
  summary
  exit 1
fi
load_env "$STATE/op.env"
missing=
for k in OP_ISSUER OP_PORT OP_PID OP_DISCOVERY_URL OP_JWKS_URL OP_TOKEN_ENDPOINT \
  OP_DEVICE_AUTHORIZATION_ENDPOINT OP_AUTHORIZATION_ENDPOINT OP_INTROSPECTION_ENDPOINT \
  OP_REVOCATION_ENDPOINT OP_API_RESOURCE OP_OPAQUE_RESOURCE OP_LOG OP_START_MS; do
  [ -n "${!k:-}" ] || missing+=" $k"
done
check_eq "op.env has every OP_* key" "" "$missing"
check "listens on 127.0.0.1 only" bash -c "ss -Hltn 'sport = :$OP_PORT' | awk '{print \$4}' | grep -qx '127.0.0.1:$OP_PORT'"

echo "== discovery + JWKS"
http "$OP_DISCOVERY_URL"
check_eq "discovery 200" 200 "$CODE"
check_eq "discovery issuer" "$OP_ISSUER" "$(jget issuer)"
GT=$(jget grant_types_supported) missing=
for t in authorization_code refresh_token client_credentials $DEVICE_GRANT $TE; do
  grep -q "\"$t\"" <<<"$GT" || missing+=" $t"
done
check_eq "discovery: grant types incl. device_code, client_credentials, token-exchange" "" "$missing"
check_eq "discovery: PKCE S256" '["S256"]' "$(jget code_challenge_methods_supported)"
http "$OP_JWKS_URL"
check "JWKS: one RS256 and one ES256 public key, random kid suffix" "$TESTBED_PYTHON" -c '
import json, sys
ks = json.loads(sys.argv[1])["keys"]
algs = sorted(k["alg"] for k in ks)
assert algs == ["ES256", "RS256"], algs
assert all("d" not in k and "p" not in k for k in ks)
suffixes = {k["kid"].split("-", 1)[1] for k in ks}
assert len(suffixes) == 1 and len(next(iter(suffixes))) == 12
' "$RESP"
KIDS=$(kids)

echo "== client_credentials"
http -u robot-client:robot-secret -d grant_type=client_credentials \
  --data-urlencode 'scope=read storage.read:/' "$OP_TOKEN_ENDPOINT"
CC_AT=$(jget access_token)
check_eq "client_credentials (client_secret_basic) 200" 200 "$CODE"
check_eq "cc: expires_in = OP_AT_TTL default 60" 60 "$(jget expires_in)"
check_eq "cc: JWT header typ/alg" "at+jwt RS256" "$(jwt_header "$CC_AT" | json_get typ) $(jwt_header "$CC_AT" | json_get alg)"
check_eq "cc: aud/scope/sub/client_id/iss" \
  "https://api.test.example|read storage.read:/|robot-client|robot-client|$OP_ISSUER" \
  "$(claim "$CC_AT" aud)|$(claim "$CC_AT" scope)|$(claim "$CC_AT" sub)|$(claim "$CC_AT" client_id)|$(claim "$CC_AT" iss)"
check_eq "cc: exp = iat + 60" 60 "$(ttl_of "$CC_AT")"
check "cc: signature verifies against JWKS (jose, aud, typ)" verify_jwt "$CC_AT" https://api.test.example
http -d client_id=robot-client-post -d client_secret=robot-post-secret -d grant_type=client_credentials \
  --data-urlencode 'scope=write storage.create:/data/run1' "$OP_TOKEN_ENDPOINT"
check_eq "cc (client_secret_post) with a dynamic WLCG scope" "200 write storage.create:/data/run1" "$CODE $(jget scope)"
http -u robot-client:wrong -d grant_type=client_credentials -d scope=read "$OP_TOKEN_ENDPOINT"
check_eq "cc: wrong secret -> 401 invalid_client" "401 invalid_client" "$CODE $(jget error)"

echo "== token exchange (RFC 8693)"
http -u robot-client:robot-secret -d grant_type=$TE -d subject_token="$CC_AT" -d subject_token_type=$TT_AT \
  --data-urlencode audience=https://api.test.example -d scope=read "$OP_TOKEN_ENDPOINT"
TX_AT=$(jget access_token)
check_eq "exchange: 200, issued_token_type, scope" "200 $TT_AT read Bearer" \
  "$CODE $(jget issued_token_type) $(jget scope) $(jget token_type)"
check_eq "exchange: act.sub = client, sub = subject's sub, aud" '{"sub":"robot-client"} robot-client https://api.test.example' \
  "$(claim "$TX_AT" act) $(claim "$TX_AT" sub) $(claim "$TX_AT" aud)"
http -u robot-client:robot-secret -d grant_type=$TE -d subject_token="$CC_AT" -d subject_token_type=$TT_AT \
  -d scope=write "$OP_TOKEN_ENDPOINT"
check_eq "exchange: scope not held by subject -> invalid_scope" "400 invalid_scope" "$CODE $(jget error)"
http -u robot-client:robot-secret -d grant_type=$TE -d subject_token="$CC_AT" -d subject_token_type=$TT_AT \
  --data-urlencode audience=https://elsewhere.example "$OP_TOKEN_ENDPOINT"
check_eq "exchange: unknown audience -> invalid_target" "400 invalid_target" "$CODE $(jget error)"
http -u robot-client:robot-secret -d grant_type=$TE -d subject_token=not-a-token -d subject_token_type=$TT_AT \
  "$OP_TOKEN_ENDPOINT"
check_eq "exchange: bogus subject_token -> invalid_grant" "400 invalid_grant" "$CODE $(jget error)"

echo "== opaque access token: introspection + revocation"
http -u robot-client:robot-secret -d grant_type=client_credentials -d scope=read \
  --data-urlencode resource=urn:test:opaque-api "$OP_TOKEN_ENDPOINT"
OPQ=$(jget access_token)
check "opaque AT is not a JWT" bash -c '[ -n "$1" ] && [[ $1 != *.*.* ]]' _ "$OPQ"
http -d client_id=robot-client-post -d client_secret=robot-post-secret -d grant_type=$TE \
  -d subject_token="$OPQ" -d subject_token_type=$TT_AT "$OP_TOKEN_ENDPOINT"
check_eq "exchange with an opaque subject token -> JWT for the default resource" \
  "200 robot-client robot-client-post read" \
  "$CODE $(claim "$(jget access_token)" sub) $(claim "$(jget access_token)" act.sub) $(claim "$(jget access_token)" scope)"
http -u resource-server:rs-secret -d token="$OPQ" "$OP_INTROSPECTION_ENDPOINT"
check_eq "introspection: active, aud, scope, client_id" "true urn:test:opaque-api read robot-client" \
  "$(jget active) $(jget aud) $(jget scope) $(jget client_id)"
http -u robot-client:robot-secret -d token="$OPQ" -d token_type_hint=access_token "$OP_REVOCATION_ENDPOINT"
check_eq "revocation 200" 200 "$CODE"
http -u resource-server:rs-secret -d token="$OPQ" "$OP_INTROSPECTION_ENDPOINT"
check_eq "introspection after revocation: inactive" false "$(jget active)"

echo "== device flow (RFC 8628)"
http -d client_id=device-client --data-urlencode 'scope=openid offline_access read' "$OP_DEVICE_AUTHORIZATION_ENDPOINT"
DC=$(jget device_code) UC=$(jget user_code)
check_eq "device authorization: user_code, verification_uri, expires_in" "$OP_ISSUER/device 600 yes" \
  "$(jget verification_uri) $(jget expires_in) $([ -n "$UC" ] && [ -n "$DC" ] && echo yes)"
http -d grant_type=$DEVICE_GRANT -d client_id=device-client -d device_code="$DC" "$OP_TOKEN_ENDPOINT"
check_eq "device: authorization_pending before approval" "400 authorization_pending" "$CODE $(jget error)"
check "op-browser.sh device: wrong user code -> exit 1" \
  bash -c '! "$1/op-browser.sh" device "$2" BCDF-GHJK alice >/dev/null 2>&1' _ "$TESTBED_DIR" "$OP_ISSUER"
check "op-browser.sh device: approve as alice" \
  bash -c '[ "$("$1/op-browser.sh" device "$2" "$3" alice)" = approved ]' _ "$TESTBED_DIR" "$OP_ISSUER" "$UC"
http -d grant_type=$DEVICE_GRANT -d client_id=device-client -d device_code="$DC" "$OP_TOKEN_ENDPOINT"
DEV_AT=$(jget access_token) DEV_RT=$(jget refresh_token)
check_eq "device: tokens (sub=alice, scope, RT and ID token present)" "200 alice read yes yes" \
  "$CODE $(claim "$DEV_AT" sub) $(jget scope) $([ -n "$DEV_RT" ] && echo yes) $([ -n "$(jget id_token)" ] && echo yes)"
http -d client_id=robot-client-post -d client_secret=robot-post-secret -d grant_type=$TE \
  -d subject_token="$DEV_AT" -d subject_token_type=$TT_AT "$OP_TOKEN_ENDPOINT"
check_eq "exchange of alice's token: sub=alice, act.sub=robot-client-post, scope inherited" \
  "200 alice robot-client-post read" \
  "$CODE $(claim "$(jget access_token)" sub) $(claim "$(jget access_token)" act.sub) $(jget scope)"
http -d grant_type=refresh_token -d client_id=device-client -d refresh_token="$DEV_RT" "$OP_TOKEN_ENDPOINT"
DEV_RT2=$(jget refresh_token)
check_eq "device-client (public) refresh: 200, RT rotated, AT still for alice" "200 yes alice" \
  "$CODE $([ -n "$DEV_RT2" ] && [ "$DEV_RT2" != "$DEV_RT" ] && echo yes) $(claim "$(jget access_token)" sub)"

http -u robot-client:robot-secret --data-urlencode 'scope=offline_access read' "$OP_DEVICE_AUTHORIZATION_ENDPOINT"
RDC=$(jget device_code)
"$TESTBED_DIR/op-browser.sh" device "$OP_ISSUER" "$(jget user_code)" robot-owner >/dev/null || true
http -u robot-client:robot-secret -d grant_type=$DEVICE_GRANT -d device_code="$RDC" "$OP_TOKEN_ENDPOINT"
ROBOT_RT=$(jget refresh_token)
check_eq "robot-client (confidential) device flow: sub, RT" "200 robot-owner yes" \
  "$CODE $(claim "$(jget access_token)" sub) $([ -n "$ROBOT_RT" ] && echo yes)"
http -u robot-client:robot-secret -d grant_type=refresh_token -d refresh_token="$ROBOT_RT" "$OP_TOKEN_ENDPOINT"
check_eq "confidential refresh: same RT returned (no rotation before 70% of its TTL)" "200 $ROBOT_RT" "$CODE $(jget refresh_token)"
http -u robot-client:robot-secret -d grant_type=refresh_token -d refresh_token="$ROBOT_RT" \
  --data-urlencode resource=urn:test:opaque-api "$OP_TOKEN_ENDPOINT"
check_eq "refresh for a resource that was not granted -> invalid_target" "400 invalid_target" "$CODE $(jget error)"
http -u robot-client:robot-secret -d grant_type=refresh_token -d refresh_token="$ROBOT_RT" "$OP_TOKEN_ENDPOINT"
check_eq "...non-rotating RT still works afterwards" 200 "$CODE"

echo "== authorization code + PKCE (cli-client, loopback redirect, any port)"
read -r VERIFIER CHALLENGE < <(pkce_pair)
CB_PORT=$(free_port)
REDIRECT=http://127.0.0.1:$CB_PORT/callback
auth_url() { # auth_url SCOPE EXTRA_QUERY
  printf '%s?client_id=cli-client&response_type=code&redirect_uri=%s&scope=%s&code_challenge=%s&code_challenge_method=S256&state=st123%s\n' \
    "$OP_AUTHORIZATION_ENDPOINT" "$(urlencode "$REDIRECT")" "$(urlencode "$1")" "$CHALLENGE" "${2:-}"
}
# a real one-shot loopback listener for --deliver: records the request line and answers 200
"$TESTBED_PYTHON" - "$CB_PORT" "$STATE/callback.txt" oneshot-listener <<'PY' &
import http.server, sys
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        open(out, "w").write(self.path + "\n")
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok\n")
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", port), H)
s.timeout = 30
s.handle_request()
PY
LISTENER_PID=$!
wait_for_port() { for _ in $(seq 50); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done; return 1; }
wait_for_port "$CB_PORT" || true
FINAL=$("$TESTBED_DIR/op-browser.sh" login "$(auth_url 'openid offline_access read' '&prompt=consent')" carol --deliver || true)
CODE_PARAM=$(url_query_param "$FINAL" code || true)
check_eq "login+consent: redirect to the loopback port with code, state, iss" "$REDIRECT st123 $OP_ISSUER yes" \
  "${FINAL%%\?*} $(url_query_param "$FINAL" state || true) $(url_query_param "$FINAL" iss || true) $([ -n "$CODE_PARAM" ] && echo yes)"
wait "$LISTENER_PID" 2>/dev/null || true
LISTENER_PID=
check "--deliver: the loopback listener received the code" grep -q "code=$CODE_PARAM" "$STATE/callback.txt"
http -d grant_type=authorization_code -d client_id=cli-client --data-urlencode code="$CODE_PARAM" \
  --data-urlencode redirect_uri="$REDIRECT" -d code_verifier="$VERIFIER" "$OP_TOKEN_ENDPOINT"
CLI_AT=$(jget access_token) CLI_RT=$(jget refresh_token) CLI_ID=$(jget id_token)
check_eq "code redemption: JWT AT for carol, scope read, RT + ID token" "200 carol https://api.test.example read yes yes" \
  "$CODE $(claim "$CLI_AT" sub) $(claim "$CLI_AT" aud) $(jget scope) $([ -n "$CLI_RT" ] && echo yes) $([ -n "$CLI_ID" ] && echo yes)"
check_eq "ID token: aud = client, sub" "cli-client carol" "$(claim "$CLI_ID" aud) $(claim "$CLI_ID" sub)"

FINAL=$("$TESTBED_DIR/op-browser.sh" login "$(auth_url 'openid offline_access read')" dave || true)
DAVE_CODE=$(url_query_param "$FINAL" code || true)
http -d grant_type=authorization_code -d client_id=cli-client --data-urlencode code="$DAVE_CODE" \
  --data-urlencode redirect_uri="$REDIRECT" -d code_verifier="$VERIFIER" "$OP_TOKEN_ENDPOINT"
check_eq "without prompt=consent offline_access is dropped: no RT" "200 -" "$CODE $(jget refresh_token)-"
# (a second redemption also revokes everything issued from that code's grant)
http -d grant_type=authorization_code -d client_id=cli-client --data-urlencode code="$DAVE_CODE" \
  --data-urlencode redirect_uri="$REDIRECT" -d code_verifier="$VERIFIER" "$OP_TOKEN_ENDPOINT"
check_eq "code is single use" "400 invalid_grant" "$CODE $(jget error)"
FINAL=$("$TESTBED_DIR/op-browser.sh" login "$(auth_url 'openid read')" dave --deny || true)
check_eq "op-browser.sh login --deny -> error=access_denied" access_denied "$(url_query_param "$FINAL" error || true)"

echo "== refresh tokens (public client: rotation + reuse detection)"
http -d grant_type=refresh_token -d client_id=cli-client -d refresh_token="$CLI_RT" "$OP_TOKEN_ENDPOINT"
RT2=$(jget refresh_token)
check "refresh: 200 with a new RT (rotated) and a new AT" \
  bash -c '[ "$1" = 200 ] && [ -n "$2" ] && [ "$2" != "$3" ] && [ -n "$4" ]' _ "$CODE" "$RT2" "$CLI_RT" "$(jget access_token)"
http -d grant_type=refresh_token -d client_id=cli-client -d refresh_token="$RT2" -d scope=read "$OP_TOKEN_ENDPOINT"
RT3=$(jget refresh_token)
check_eq "refresh with scope=read (down-scope allowed)" "200 read" "$CODE $(jget scope)"
http -d grant_type=refresh_token -d client_id=cli-client -d refresh_token="$CLI_RT" "$OP_TOKEN_ENDPOINT"
check_eq "reuse of a rotated RT -> invalid_grant" "400 invalid_grant" "$CODE $(jget error)"
http -d grant_type=refresh_token -d client_id=cli-client -d refresh_token="$RT3" "$OP_TOKEN_ENDPOINT"
check_eq "...and reuse revoked the whole grant (newest RT dead too)" "400 invalid_grant" "$CODE $(jget error)"

echo "== restart on the same port forgets grants, keeps keys"
http -u resource-server:rs-secret -d token="$DEV_RT2" "$OP_INTROSPECTION_ENDPOINT"
check_eq "introspection of a live RT before the restart: active" true "$(jget active)"
OLD_ISSUER=$OP_ISSUER OLD_PORT=$OP_PORT OLD_PID=$OP_PID
"$TESTBED_DIR/stop-op.sh" "$STATE" || true
if pid_alive "$OLD_PID"; then fail "stop-op.sh: process gone"; else pass "stop-op.sh: process gone"; fi
if "$TESTBED_DIR/start-op.sh" "$STATE" "$OLD_PORT"; then pass "restart with same STATE and PORT"; else fail "restart"; fi
load_env "$STATE/op.env"
check_eq "same issuer after restart" "$OLD_ISSUER" "$OP_ISSUER"
http "$OP_JWKS_URL"
check_eq "same signing keys after restart" "$KIDS" "$(kids)"
http -u resource-server:rs-secret -d token="$DEV_RT2" "$OP_INTROSPECTION_ENDPOINT"
check_eq "introspection of that RT after the restart: inactive" false "$(jget active)"
http -d grant_type=refresh_token -d client_id=device-client -d refresh_token="$DEV_RT2" "$OP_TOKEN_ENDPOINT"
check_eq "RT from before the restart -> invalid_grant" "400 invalid_grant" "$CODE $(jget error)"
check "JWT from before the restart still verifies (keys persisted)" verify_jwt "$CC_AT" https://api.test.example

echo "== second instance side by side: ES256, OP_TOKEN_VER, OP_AT_TTL"
if OP_JWT_ALG=ES256 OP_TOKEN_VER=scitoken:2.0 OP_AT_TTL=30 "$TESTBED_DIR/start-op.sh" "$STATE2"; then
  pass "second OP started"
  P1=$OP_PORT
  load_env "$STATE2/op.env"
  check "second OP on another port" test "$OP_PORT" != "$P1"
  http -u robot-client:robot-secret -d grant_type=client_credentials -d scope=storage.read:/x "$OP_TOKEN_ENDPOINT"
  A2=$(jget access_token)
  check_eq "ES256 header, ver claim, exp-iat=30" "ES256 scitoken:2.0 30" \
    "$(jwt_header "$A2" | json_get alg) $(claim "$A2" ver) $(ttl_of "$A2")"
  check "ES256 token verifies against the second OP's JWKS" verify_jwt "$A2" https://api.test.example
  "$TESTBED_DIR/stop-op.sh" "$STATE2" || true
else
  fail "second OP started"
fi

echo "== $(( ($(now_ms) - T0) )) ms"
summary
