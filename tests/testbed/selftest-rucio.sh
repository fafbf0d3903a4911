#!/usr/bin/env bash
# selftest-rucio.sh - prove the Rucio peer works: venv-rucio (setup-rucio.sh), the test OP
# (start-op.sh) and a real Rucio 41.5.1 server (start-rucio.sh) trusting it; then the real
# `rucio` client: `rucio whoami` answers account robot with userpass (config file, flags only),
# with OIDC bearer tokens from the OP (client_credentials and a device login as alice; through
# BEARER_TOKEN, BEARER_TOKEN_FILE and auth_token_file_path) and with an X.509 client certificate
# over TLS; a wrong password, an unmapped subject, a token without the expected scope and an
# unmapped certificate are refused (the exact output and exit status are shown); the token
# cache; restart in the same STATE; stop. Everything is stopped on exit.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

T0=$(now_ms)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/selftest-rucio.XXXXXX")
cleanup() {
  "$TESTBED_DIR/stop-rucio.sh" "$STATE" 2>/dev/null || true
  "$TESTBED_DIR/stop-op.sh" "$STATE" 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT

load_env() {
  set -a
  # shellcheck disable=SC1090
  . "$1"
  set +a
}
DEVICE_GRANT=urn:ietf:params:oauth:grant-type:device_code

# rucio_run CASE [VAR=value...] -- ARGS...: the venv's rucio with nothing from our environment
# that the client library reads (rucio.env itself sets RUCIO_ACCOUNT, RUCIO_CLIENT_CERT and
# RUCIO_CLIENT_KEY, which the library does read), the given variables, a private TMPDIR
# ($STATE/tmp/CASE: the token cache goes there), stdin from /dev/null (a rejected bearer token
# makes the client try its interactive OIDC flow) and a timeout. Sets OUT, ERR, RC, TMPD.
rucio_run() {
  local case=$1 vars=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  TMPD=$STATE/tmp/$case
  mkdir -p "$TMPD" "$STATE/home"
  RC=0
  env -u RUCIO_HOME -u RUCIO_CONFIG -u RUCIO_ACCOUNT -u RUCIO_AUTH_TYPE -u RUCIO_VO -u RUCIO_CLIENT_MODE \
    -u RUCIO_CLIENT_CERT -u RUCIO_CLIENT_KEY -u RUCIO_CLIENT_PROXY -u X509_USER_PROXY -u X509_CERT_DIR \
    -u BEARER_TOKEN -u BEARER_TOKEN_FILE -u XDG_RUNTIME_DIR -u VIRTUAL_ENV -u CONDA_PREFIX -u TMP -u TEMP \
    HOME="$STATE/home" TMPDIR="$TMPD" "${vars[@]}" timeout 60 "$RUCIO_BIN" "$@" \
    >"$TMPD.out" 2>"$TMPD.err" </dev/null || RC=$?
  OUT=$(cat "$TMPD.out")
  ERR=$(cat "$TMPD.err")
}
# the account line of `rucio whoami` (key order varies between runs)
acct() { sed -nE 's/^account +: +//p' <<<"$OUT" | head -n 1; }
# ERR without colours and log timestamps
plain_err() { sed -E 's/\x1b\[[0-9;]*m//g; s/^[0-9]{4}-[0-9-]+ [0-9:,]+\t[A-Z]+\t//' <<<"$ERR"; }
# show OUT/ERR/RC as they are (cat -v: colour codes visible), for the record
show() {
  printf '     | exit status %s\n' "$RC"
  [ -z "$OUT" ] || printf '%s\n' "$OUT" | cat -v | sed 's/^/     | stdout: /'
  [ -z "$ERR" ] || printf '%s\n' "$ERR" | cat -v | sed 's/^/     | stderr: /'
}
cache_dir() { printf '%s/%s/.rucio_%s' "$TMPD" "$(id -un)" "$(id -un)"; }

# http CURL-ARGS...: sets CODE, HDRS (lower-cased names) and RESP (body)
http() {
  local out
  out=$(curl -sS --max-time 10 -D "$STATE/hdrs" -w '\n%{http_code}' "$@") || { CODE=000 RESP='' HDRS=''; return 0; }
  CODE=${out##*$'\n'}
  RESP=${out%$'\n'*}
  HDRS=$(tr -d '\r' <"$STATE/hdrs" | sed -E 's/^([^:]+):/\L\1:/')
}
hdr() { sed -n "s/^$1: //p" <<<"$HDRS" | tail -n 1; }
jget() { json_get "$1" <<<"$RESP" || true; }
claim() { json_get "$2" <<<"$(jwt_payload "$1" 2>/dev/null || echo '{}')" || true; }
cc_token() { # cc_token SCOPE: a client_credentials JWT of the OP's robot-client
  http -u "$OP_ROBOT_CLIENT_ID:$OP_ROBOT_CLIENT_SECRET" -d grant_type=client_credentials \
    --data-urlencode "scope=$1" --data-urlencode "resource=$OP_API_RESOURCE" "$OP_TOKEN_ENDPOINT"
  jget access_token
}
device_token() { # device_token LOGIN: a device-flow JWT of device-client, approved as LOGIN
  local dc
  http -d client_id="$OP_DEVICE_CLIENT_ID" --data-urlencode 'scope=openid read' "$OP_DEVICE_AUTHORIZATION_ENDPOINT"
  dc=$(jget device_code)
  "$TESTBED_DIR/op-browser.sh" device "$OP_ISSUER" "$(jget user_code)" "$1" >/dev/null || return 0
  http -d grant_type=$DEVICE_GRANT -d client_id="$OP_DEVICE_CLIENT_ID" -d device_code="$dc" "$OP_TOKEN_ENDPOINT"
  jget access_token
}
count_in() { grep -c "$1" "$2" 2>/dev/null || true; }

# ---------------------------------------------------------------------------------------------
echo "== venv-rucio"
t0=$(now_ms)
if VPY=$("$TESTBED_DIR/setup-rucio.sh"); then pass "setup-rucio.sh in $(( $(now_ms) - t0 )) ms"; else
  fail "setup-rucio.sh"
  summary
  exit 1
fi
t0=$(now_ms)
if "$TESTBED_DIR/setup-rucio.sh" --check >/dev/null; then
  pass "setup-rucio.sh --check (fast path) in $(( $(now_ms) - t0 )) ms"
else
  fail "setup-rucio.sh --check"
fi
check_eq "rucio --version" "rucio 41.5.1" "$("$(dirname "$VPY")/rucio" --version 2>&1 || true)"
check_eq "gunicorn --version" "gunicorn (version 27.0.1)" "$("$(dirname "$VPY")/gunicorn" --version 2>&1 || true)"

echo "== start the OP and Rucio"
if OP_AT_TTL=600 "$TESTBED_DIR/start-op.sh" "$STATE" 2>"$STATE/op-start.err"; then pass "start-op.sh"; else
  cat "$STATE/op-start.err" >&2
  fail "start-op.sh"
  summary
  exit 1
fi
load_env "$STATE/op.env"
t0=$(now_ms)
if ENV_FILE=$(RUCIO_OIDC_ISSUER=$OP_ISSUER RUCIO_OIDC_SUBJECT=alice,$OP_ROBOT_CLIENT_ID \
  "$TESTBED_DIR/start-rucio.sh" "$STATE"); then
  pass "start-rucio.sh (ready = rucio whoami with userpass) in $(( $(now_ms) - t0 )) ms"
else
  fail "start-rucio.sh"
  summary
  exit 1
fi
check_eq "start-rucio.sh prints the env file" "$STATE/rucio.env" "$ENV_FILE"
load_env "$ENV_FILE"
echo "     | start: pki ${RUCIO_PKI_MS} ms, db ${RUCIO_DB_MS} ms, servers+whoami ${RUCIO_START_MS} ms"
missing_keys=
for k in RUCIO_URL RUCIO_AUTH_URL RUCIO_TLS_URL RUCIO_PORT RUCIO_TLS_PORT RUCIO_PID RUCIO_TLS_PID \
  RUCIO_ACCOUNT RUCIO_USERPASS_USER RUCIO_PASSWORD_FILE RUCIO_ROOT_PASSWORD_FILE RUCIO_CA_CERT \
  RUCIO_CLIENT_CERT RUCIO_CLIENT_KEY RUCIO_CLIENT_DN RUCIO_STRANGER_CERT RUCIO_STRANGER_KEY \
  RUCIO_CLIENT_CONFIG RUCIO_CLIENT_CONFIG_OIDC RUCIO_CLIENT_CONFIG_X509 RUCIO_OIDC \
  RUCIO_OIDC_TRUSTED_ISSUER RUCIO_BIN RUCIO_SERVER_CONFIG RUCIO_DB; do
  [ -n "${!k:-}" ] || missing_keys+=" $k"
done
check_eq "rucio.env has every key" "" "$missing_keys"
unsafe=$(grep -vE '^[A-Za-z_][A-Za-z0-9_]*=[^][:space:]"'"'"'$\\`]*$' "$ENV_FILE" || true)
check_eq "rucio.env is dotenv-safe (KEY=value, nothing to quote)" "" "$unsafe"
check_eq "RUCIO_ACCOUNT, RUCIO_USERPASS_USER, OIDC on, trusted issuer = OP issuer" \
  "robot robot 1 $OP_ISSUER" "$RUCIO_ACCOUNT $RUCIO_USERPASS_USER $RUCIO_OIDC $RUCIO_OIDC_TRUSTED_ISSUER"
check_eq "RUCIO_BIN is the venv's rucio" "$(dirname "$VPY")/rucio" "$RUCIO_BIN"
PASSWORD=$(cat "$RUCIO_PASSWORD_FILE")
check "robot password: 32 hex digits, no newline" bash -c '[[ $(cat "$1") =~ ^[0-9a-f]{32}$ ]] && [ "$(wc -c <"$1")" = 32 ]' _ "$RUCIO_PASSWORD_FILE"
modes=$(stat -c '%a' "$RUCIO_PASSWORD_FILE" "$RUCIO_ROOT_PASSWORD_FILE" "$RUCIO_CLIENT_KEY" "$RUCIO_STRANGER_KEY" \
  "$RUCIO_CLIENT_CONFIG" | sort -u | tr '\n' ' ')
check_eq "passwords, keys and the userpass client config are 0600" "600 " "$modes"
check "every file is inside STATE/rucio" bash -c 'for v in "${@:2}"; do [[ $v == "$1"/rucio/* ]] || exit 1; done' _ \
  "$STATE" "$RUCIO_PASSWORD_FILE" "$RUCIO_CA_CERT" "$RUCIO_CLIENT_CERT" "$RUCIO_CLIENT_KEY" "$RUCIO_CLIENT_CONFIG" \
  "$RUCIO_CLIENT_CONFIG_OIDC" "$RUCIO_CLIENT_CONFIG_X509" "$RUCIO_SERVER_CONFIG" "$RUCIO_DB"
check "client configs have [client] and no [database] (that would mean server mode)" bash -c \
  'for f; do grep -qx "\[client\]" "$f" && ! grep -q "^\[database\]" "$f" || exit 1; done' _ \
  "$RUCIO_CLIENT_CONFIG" "$RUCIO_CLIENT_CONFIG_OIDC" "$RUCIO_CLIENT_CONFIG_X509"
check_eq "robot certificate subject (RFC 2253) = RUCIO_CLIENT_DN" "$RUCIO_CLIENT_DN" \
  "$(openssl x509 -in "$RUCIO_CLIENT_CERT" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')"
check "robot certificate verifies against RUCIO_CA_CERT (purpose sslclient)" \
  bash -c 'openssl verify -CAfile "$1" -purpose sslclient "$2" >/dev/null' _ "$RUCIO_CA_CERT" "$RUCIO_CLIENT_CERT"
pids="$RUCIO_PID|$RUCIO_TLS_PID"
listeners=$(ss -Hltnp 2>/dev/null | grep -E "pid=($pids)," | awk '{print $4}' | sort -u | tr '\n' ' ')
check_eq "the two gunicorn masters listen on 127.0.0.1 only" \
  "$(printf '%s\n' "127.0.0.1:$RUCIO_PORT" "127.0.0.1:$RUCIO_TLS_PORT" | sort | tr '\n' ' ')" "$listeners"
http "$RUCIO_URL/ping"
check_eq "GET RUCIO_URL/ping" "200 41.5.1" "$CODE $(jget version)"
http --cacert "$RUCIO_CA_CERT" "$RUCIO_TLS_URL/ping"
check_eq "GET RUCIO_TLS_URL/ping (https, test CA)" "200 41.5.1" "$CODE $(jget version)"

echo "== userpass"
rucio_run up1 RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG" -- whoami
check_eq "rucio whoami (RUCIO_CONFIG=RUCIO_CLIENT_CONFIG): account robot, exit 0" "robot 0" "$(acct) $RC"
TOKFILE=$(cache_dir)/auth_token_for_account_robot
check_eq "token cache: TMPDIR/<user>/.rucio_<user>/auth_token_for_account_robot, dir 700, file 600" "700 600" \
  "$(stat -c %a "$(cache_dir)" 2>/dev/null) $(stat -c %a "$TOKFILE" 2>/dev/null)"
check "cached token is robot-robot-unknown-<32 hex>, no newline" \
  bash -c '[[ $(cat "$1") =~ ^robot-robot-unknown-[0-9a-f]{32}$ ]] && [ "$(tail -c 1 "$1" | od -An -c | tr -d " ")" != "\\n" ]' _ "$TOKFILE"
logins=$(count_in 'GET /auth/userpass' "$RUCIO_ACCESS_LOG")
rucio_run up1 RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG" -- whoami
check_eq "second whoami with the same TMPDIR reuses the cached token (no new /auth/userpass)" \
  "robot $logins" "$(acct) $(count_in 'GET /auth/userpass' "$RUCIO_ACCESS_LOG")"
printf 'robot-robot-unknown-00000000000000000000000000000000' >"$TOKFILE"
rucio_run up1 RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG" -- whoami
check_eq "a stale cached token: 401, the client logs in again by itself, rewrites the cache" \
  "robot $((logins + 1)) yes" \
  "$(acct) $(count_in 'GET /auth/userpass' "$RUCIO_ACCESS_LOG") $(grep -qv 00000000000 "$TOKFILE" && echo yes)"
rucio_run up-flags -- -H "$RUCIO_URL" --auth-host "$RUCIO_AUTH_URL" -S userpass -u "$RUCIO_USERPASS_USER" \
  --password "$PASSWORD" --account robot whoami
check_eq "no config file, flags only (-H --auth-host -S userpass -u --password --account)" "robot 0" "$(acct) $RC"
grep -v '^account' "$RUCIO_CLIENT_CONFIG" >"$STATE/up-noacc.cfg"
rucio_run up-noacc RUCIO_CONFIG="$STATE/up-noacc.cfg" -- whoami
check_eq "config without 'account': the identity's default account; cache ..._for_default_account" \
  "robot 0 yes" "$(acct) $RC $([ -f "$(cache_dir)/auth_token_for_default_account" ] && echo yes)"
sed "s/^password = .*/password = $(cat "$RUCIO_ROOT_PASSWORD_FILE")/; s/^username = .*/username = root/; s/^account = .*/account = root/" \
  "$RUCIO_CLIENT_CONFIG" >"$STATE/up-root.cfg"
rucio_run up-root RUCIO_CONFIG="$STATE/up-root.cfg" -- whoami
check_eq "root / RUCIO_ROOT_PASSWORD_FILE -> account root" "root 0" "$(acct) $RC"
sed 's/^password = .*/password = wrong-password/' "$RUCIO_CLIENT_CONFIG" >"$STATE/up-wrong.cfg"
rucio_run up-wrong RUCIO_CONFIG="$STATE/up-wrong.cfg" -- whoami
echo "     rucio whoami with a WRONG password prints:"
show
check_eq "wrong password: exit 1, no account line" "1 " "$RC $(acct)"
check_eq "wrong password: stderr (colours and timestamp stripped)" \
  "Cannot authenticate.
Details: CannotAuthenticate: Cannot authenticate to account robot with given credentials" "$(plain_err)"
check "wrong password: no token cache file written" bash -c '[ -z "$(find "$1" -type f)" ]' _ "$TMPD"
http -H "X-Rucio-Account: robot" -H "X-Rucio-Username: robot" -H "X-Rucio-Password: $PASSWORD" "$RUCIO_AUTH_URL/auth/userpass"
UP_TOKEN=$(hdr x-rucio-auth-token)
check_eq "GET /auth/userpass: 200, X-Rucio-Auth-Account robot, token robot-robot-unknown-..." \
  "200 robot yes" "$CODE $(hdr x-rucio-auth-account) $([[ $UP_TOKEN == robot-robot-unknown-* ]] && echo yes)"
http -H "X-Rucio-Auth-Token: $UP_TOKEN" "$RUCIO_URL/accounts/whoami"
check_eq "GET /accounts/whoami with X-Rucio-Auth-Token: 303 Location robot" "303 robot" "$CODE $(hdr location)"
http -H "X-Rucio-Account: robot" -H "X-Rucio-Username: robot" -H "X-Rucio-Password: nope" "$RUCIO_AUTH_URL/auth/userpass"
check_eq "GET /auth/userpass with a wrong password: 401 CannotAuthenticate" "401 CannotAuthenticate" \
  "$CODE $(hdr exceptionclass)"
# several clients at once against SQLite (each its own TMPDIR: it logs in itself)
for i in 1 2 3 4 5 6; do
  (rucio_run "par$i" RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG" -- whoami; echo "$(acct) $RC" >"$STATE/par$i.res") &
done
wait
check_eq "six concurrent whoamis with fresh logins" "robot 0 robot 0 robot 0 robot 0 robot 0 robot 0" \
  "$(cat "$STATE"/par?.res | tr '\n' ' ' | sed 's/ $//')"

echo "== OIDC bearer tokens from the OP"
CC=$(cc_token read)
check_eq "OP client_credentials token: iss = RUCIO_OIDC_TRUSTED_ISSUER, sub, aud, scope" \
  "$RUCIO_OIDC_TRUSTED_ISSUER robot-client $RUCIO_OIDC_EXPECTED_AUDIENCE read" \
  "$(claim "$CC" iss) $(claim "$CC" sub) $(claim "$CC" aud) $(claim "$CC" scope)"
printf '%s\n' "$CC" >"$STATE/cc.jwt"
rucio_run oidc-file RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG_OIDC" BEARER_TOKEN_FILE="$STATE/cc.jwt" -- whoami
check_eq "auth_type=oidc + BEARER_TOKEN_FILE (client_credentials JWT) -> robot" "robot 0" "$(acct) $RC"
check "a discovered bearer token is not written to the token cache" bash -c '[ -z "$(find "$1" -type f)" ]' _ "$TMPD"
rucio_run oidc-env RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG_OIDC" BEARER_TOKEN="$CC" -- whoami
check_eq "auth_type=oidc + BEARER_TOKEN -> robot" "robot 0" "$(acct) $RC"
printf '%s' "$CC" >"$STATE/cc-nonl.jwt"
{ cat "$RUCIO_CLIENT_CONFIG_OIDC"; echo "auth_token_file_path = $STATE/cc-nonl.jwt"; } >"$STATE/oidc-tokfile.cfg"
rucio_run oidc-tokfile RUCIO_CONFIG="$STATE/oidc-tokfile.cfg" -- whoami
check_eq "auth_type=oidc + [client] auth_token_file_path (JWT, no newline), no env -> robot" "robot 0" "$(acct) $RC"
printf '%s\n' "$CC" >"$STATE/cc-nonl.jwt"
rucio_run oidc-tokfile-nl RUCIO_CONFIG="$STATE/oidc-tokfile.cfg" -- whoami
echo "     auth_token_file_path whose token ends in a newline prints:"
show
check_eq "...a trailing newline there breaks it (readline keeps it: 'Invalid header value'), exit 0" \
  "0 yes" "$RC $(grep -q 'Invalid header value' <<<"$ERR" && echo yes)"
rucio_run oidc-noconf RUCIO_AUTH_TYPE=oidc RUCIO_ACCOUNT=robot BEARER_TOKEN_FILE="$STATE/cc.jwt" -- \
  -H "$RUCIO_URL" --auth-host "$RUCIO_AUTH_URL" whoami
check_eq "no config file: RUCIO_AUTH_TYPE=oidc RUCIO_ACCOUNT=robot BEARER_TOKEN_FILE, -H, --auth-host" \
  "robot 0" "$(acct) $RC"
grep -v '^account' "$RUCIO_CLIENT_CONFIG_OIDC" >"$STATE/oidc-noacc.cfg"
rucio_run oidc-noacc RUCIO_CONFIG="$STATE/oidc-noacc.cfg" BEARER_TOKEN="$CC" -- whoami
check_eq "oidc config without 'account': the token's account" "robot 0" "$(acct) $RC"
http -H "X-Rucio-Auth-Token: $CC" "$RUCIO_URL/accounts/whoami"
check_eq "curl: X-Rucio-Auth-Token: <JWT> -> 303 Location robot" "303 robot" "$CODE $(hdr location)"
http -H "Authorization: Bearer $CC" "$RUCIO_URL/accounts/whoami"
check_eq "curl: Authorization: Bearer <JWT> is not read -> 400" 400 "$CODE"
ALICE=$(device_token alice)
check_eq "device login approved as alice: sub alice, scope read" "alice read $OP_ISSUER" \
  "$(claim "$ALICE" sub) $(claim "$ALICE" scope) $(claim "$ALICE" iss)"
rucio_run oidc-alice RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG_OIDC" BEARER_TOKEN="$ALICE" -- whoami
check_eq "alice's JWT (RUCIO_OIDC_SUBJECT alice -> robot) -> robot" "robot 0" "$(acct) $RC"
BOB=$(device_token bob)
rucio_run oidc-bob RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG_OIDC" BEARER_TOKEN="$BOB" -- whoami
echo "     rucio whoami with a valid JWT of an UNMAPPED subject (bob) prints:"
show
check_eq "bob's JWT is refused: no account line, but exit status 0" " 0" "$(acct) $RC"
check_eq "bob's JWT: stderr (colours and timestamp stripped)" \
  "Cannot authenticate.
Details: OIDC authentication failed for account=robot" "$(plain_err)"
WRITE=$(cc_token write)
rucio_run oidc-write RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG_OIDC" BEARER_TOKEN="$WRITE" -- whoami
check_eq "a JWT without scope 'read' (scope write) is refused (exit 0, no account line)" " 0 yes" \
  "$(acct) $RC $(grep -q 'OIDC authentication failed' <<<"$ERR" && echo yes)"
http -H "X-Rucio-Auth-Token: $WRITE" "$RUCIO_URL/accounts/whoami"
check_eq "curl: the scope-write JWT -> 401 CannotAuthenticate" "401 CannotAuthenticate" "$CODE $(hdr exceptionclass)"

echo "== X.509 over TLS"
rucio_run x509 RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG_X509" -- whoami
check_eq "auth_type=x509 (client_cert, client_key, ca_cert; https) -> robot" "robot 0" "$(acct) $RC"
check "cached token is robot-<DN>-unknown-<hex>" bash -c '[[ $(cat "$1") == "robot-$2-unknown-"* ]]' _ \
  "$(cache_dir)/auth_token_for_account_robot" "$RUCIO_CLIENT_DN"
grep -v '^account' "$RUCIO_CLIENT_CONFIG_X509" >"$STATE/x509-noacc.cfg"
rucio_run x509-noacc RUCIO_CONFIG="$STATE/x509-noacc.cfg" -- whoami
check_eq "x509 config without 'account': the DN's account" "robot 0" "$(acct) $RC"
sed "s#^client_cert = .*#client_cert = $RUCIO_STRANGER_CERT#; s#^client_key = .*#client_key = $RUCIO_STRANGER_KEY#" \
  "$RUCIO_CLIENT_CONFIG_X509" >"$STATE/x509-stranger.cfg"
rucio_run x509-stranger RUCIO_CONFIG="$STATE/x509-stranger.cfg" -- whoami
echo "     rucio whoami with a CA-signed certificate that is mapped to NO account prints:"
show
check_eq "unmapped certificate: exit 1, CannotAuthenticate" "1  yes" \
  "$RC $(acct) $(grep -q 'Cannot authenticate to account robot with given credentials' <<<"$ERR" && echo yes)"
rucio_run x509-envcert RUCIO_CONFIG="$STATE/x509-stranger.cfg" RUCIO_CLIENT_CERT="$RUCIO_CLIENT_CERT" \
  RUCIO_CLIENT_KEY="$RUCIO_CLIENT_KEY" -- whoami
check_eq "RUCIO_CLIENT_CERT/RUCIO_CLIENT_KEY in the environment beat client_cert/client_key" "robot 0" "$(acct) $RC"
cp "$RUCIO_CLIENT_KEY" "$STATE/loose.key"
chmod 0644 "$STATE/loose.key"
sed "s#^client_key = .*#client_key = $STATE/loose.key#" "$RUCIO_CLIENT_CONFIG_X509" >"$STATE/x509-loose.cfg"
rucio_run x509-loose RUCIO_CONFIG="$STATE/x509-loose.cfg" -- whoami
check_eq "a 0644 client key is refused by the client ('permissions are liberal'), exit 1" "1 yes" \
  "$RC $(grep -q 'permissions are liberal' <<<"$ERR" && echo yes)"
mkdir -p "$STATE/empty-certdir"
rucio_run x509-certdir RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG_X509" X509_CERT_DIR="$STATE/empty-certdir" -- whoami
check_eq "X509_CERT_DIR beats [client] ca_cert (an empty dir: the TLS server is not trusted)" "" "$(acct)"
sed "s#^rucio_host = .*#rucio_host = $RUCIO_TLS_URL#; s#^auth_host = .*#auth_host = $RUCIO_TLS_URL#; \$a ca_cert = $RUCIO_CA_CERT" \
  "$RUCIO_CLIENT_CONFIG" >"$STATE/up-tls.cfg"
rucio_run up-tls RUCIO_CONFIG="$STATE/up-tls.cfg" -- whoami
check_eq "userpass over TLS too (no client certificate needed there)" "robot 0" "$(acct) $RC"
http --cacert "$RUCIO_CA_CERT" --cert "$RUCIO_CLIENT_CERT" --key "$RUCIO_CLIENT_KEY" "$RUCIO_TLS_URL/auth/x509"
check_eq "curl GET TLS/auth/x509 with the robot certificate: 200, account robot" "200 robot" \
  "$CODE $(hdr x-rucio-auth-account)"
http --cacert "$RUCIO_CA_CERT" "$RUCIO_TLS_URL/auth/x509"
check_eq "curl GET TLS/auth/x509 without a certificate: 401 Cannot get DN" "401 Cannot get DN" \
  "$CODE $(hdr exceptionmessage)"
http -H "SSL_CLIENT_S_DN: $RUCIO_CLIENT_DN" -H "SSL-Client-S-DN: $RUCIO_CLIENT_DN" "$RUCIO_URL/auth/x509"
check_eq "plain HTTP /auth/x509 (a DN sent as a header is ignored): 401 Cannot get DN" "401 Cannot get DN" \
  "$CODE $(hdr exceptionmessage)"

echo "== nothing outside STATE"
check "the clients wrote nothing to HOME" bash -c '[ -z "$(find "$1" -mindepth 1)" ]' _ "$STATE/home"

echo "== restart in the same STATE"
OLD_PIDS="$RUCIO_PID $RUCIO_TLS_PID" OLD_PASSWORD=$PASSWORD
t0=$(now_ms)
if RUCIO_OIDC_ISSUER=$OP_ISSUER "$TESTBED_DIR/start-rucio.sh" "$STATE" >/dev/null; then
  pass "start-rucio.sh again in $(( $(now_ms) - t0 )) ms"
else
  fail "start-rucio.sh again"
fi
load_env "$ENV_FILE"
echo "     | start: pki ${RUCIO_PKI_MS} ms, db ${RUCIO_DB_MS} ms, servers+whoami ${RUCIO_START_MS} ms"
gone=yes
for p in $OLD_PIDS; do pid_alive "$p" && gone=no; done
check_eq "old servers stopped" yes "$gone"
check "new servers running" bash -c 'kill -0 "$1" && kill -0 "$2"' _ "$RUCIO_PID" "$RUCIO_TLS_PID"
check "a new robot password" bash -c '[ "$(cat "$1")" != "$2" ]' _ "$RUCIO_PASSWORD_FILE" "$OLD_PASSWORD"
rucio_run restart RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG" -- whoami
check_eq "whoami after the restart" "robot 0" "$(acct) $RC"
rucio_run restart-x509 RUCIO_CONFIG="$RUCIO_CLIENT_CONFIG_X509" -- whoami
check_eq "x509 after the restart (new PKI)" "robot 0" "$(acct) $RC"

echo "== stop"
t0=$(now_ms)
"$TESTBED_DIR/stop-rucio.sh" "$STATE" || true
stop_ms=$(( $(now_ms) - t0 ))
if pid_alive "$RUCIO_PID" || pid_alive "$RUCIO_TLS_PID"; then fail "stop-rucio.sh: masters gone"; else
  pass "stop-rucio.sh: masters gone in $stop_ms ms"
fi
check "ports $RUCIO_PORT and $RUCIO_TLS_PORT closed" \
  bash -c "! ss -Hltn 'sport = :$RUCIO_PORT' | grep -q . && ! ss -Hltn 'sport = :$RUCIO_TLS_PORT' | grep -q ."
check "the OP is still running (stop-rucio.sh leaves it alone)" pid_alive "$OP_PID"
"$TESTBED_DIR/stop-op.sh" "$STATE" || true

echo "== $(( $(now_ms) - T0 )) ms"
summary
