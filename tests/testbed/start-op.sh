#!/usr/bin/env bash
# start-op.sh STATE [PORT] - start the test OpenID Provider (oidc-provider 9.13.3 + op/server.mjs)
# on 127.0.0.1 and write STATE/op.env once its discovery document answers 200.
#
# STATE   state directory (created); the OP lives in STATE/op/ (signing keys, log).
# PORT    optional; otherwise a free loopback port. Restarting with the same STATE and PORT
#         gives the same issuer and keys but forgets every grant/token (in-memory storage).
#         An OP still running for STATE is stopped first.
#
# Inputs (environment, all optional): OP_AT_TTL (60) OP_RT_TTL (86400) OP_DEVICE_TTL (600)
#   OP_RT_ROTATE=default|always|never  OP_ISSUE_RT=offline_access|always  OP_AUTO_CONSENT=1|0
#   OP_TOKEN_VER (e.g. scitoken:2.0 -> "ver" claim)  OP_JWT_ALG=RS256|ES256
#   OP_DEFAULT_RESOURCE=api|none  OP_DYNAMIC_SCOPES (regex)  OP_CLIENTS_FILE (JSON array)
#   OP_TOKEN_DELAY_MS (hold each token request this long before handling it; logs token.delayed)
#   OP_REFRESH_HOLD_MS (hold each refresh grant's answer this long after handling it)
#   OP_RT_REUSE_GRACE (seconds a rotated refresh token still gets its first answer)
#   OP_ROBOT_SECRET OP_ROBOT_POST_SECRET OP_RS_SECRET  OP_ISSUER_URL (default http://127.0.0.1:PORT)
# Outputs (STATE/op.env) are never read back as inputs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 STATE [PORT]"
mkdir -p "$1"
STATE=$(cd "$1" && pwd)
REQ_PORT=${2:-}
[ -z "$REQ_PORT" ] || [[ $REQ_PORT =~ ^[0-9]+$ ]] || die "PORT must be a number"

OP_SRC=$TESTBED_DIR/op
OP_DIR=$STATE/op
ENV_FILE=$STATE/op.env
LOG=$OP_DIR/op.log
mkdir -p "$OP_DIR"

# --- install (npm ci from the lock file; serialised: tests may start several OPs at once) ---
t0=$(now_ms)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
mkdir -p "$TESTBED_DIR/.cache"
(
  flock -w 300 9 || die "timed out waiting for the npm install lock"
  stamp=$OP_SRC/node_modules/.package-lock.json
  if [ ! -f "$OP_SRC/node_modules/oidc-provider/package.json" ] || [ ! -f "$stamp" ] \
     || [ "$OP_SRC/package-lock.json" -nt "$stamp" ]; then
    log "npm ci in $OP_SRC"
    (cd "$OP_SRC" && npm ci --cache "$TESTBED_DIR/.cache/npm" --prefer-offline --no-audit --no-fund \
      --loglevel=error >&2)
  fi
) 9>"$TESTBED_DIR/.cache/npm-install.lock"
INSTALL_MS=$(( $(now_ms) - t0 ))

# --- stop an OP still running for this STATE -------------------------------------------------
if old_pid=$(env_read "$ENV_FILE" OP_PID) && [ -n "$old_pid" ]; then
  stop_pid "$old_pid" "$OP_SRC/server.mjs $OP_DIR"
fi
rm -f "$ENV_FILE"

# --- start -----------------------------------------------------------------------------------
t0=$(now_ms)
attempt=0
while :; do
  attempt=$((attempt + 1))
  PORT=${REQ_PORT:-$(free_port)}
  printf '%s start-op.sh: starting on port %s\n' "$(date -u +%FT%TZ)" "$PORT" >>"$LOG"
  # Issuer/port inputs are explicit here so an exported op.env of another instance can't leak in.
  (cd "$OP_DIR" && export OP_LISTEN_PORT=$PORT && exec nohup node "$OP_SRC/server.mjs" "$OP_DIR" \
    >>"$LOG" 2>&1 </dev/null) &
  PID=$!
  ISSUER=${OP_ISSUER_URL:-http://127.0.0.1:$PORT}
  ISSUER=${ISSUER%/}
  rc=0
  wait_for_http "http://127.0.0.1:$PORT/.well-known/openid-configuration" 30 "$PID" "x-testbed-op-pid: $PID" || rc=$?
  [ "$rc" -eq 0 ] && break
  # a port picked by us may have been taken in between: try another one
  if [ -z "$REQ_PORT" ] && [ "$attempt" -lt 3 ] && tail -n 5 "$LOG" | grep -q EADDRINUSE; then
    log "port $PORT was taken, retrying"
    continue
  fi
  # What holds the port, and what the OP is doing, before it is stopped: for the report.
  log "port $PORT: $(ss -Hltnp "sport = :$PORT" 2>/dev/null | tr -s ' ' | head -n 3)"
  log "OP process: state $(awk '{print $3}' "/proc/$PID/stat" 2>/dev/null), wchan $(cat "/proc/$PID/wchan" 2>/dev/null)"
  stop_pid "$PID" "$OP_SRC/server.mjs" || true
  log "OP did not become ready on 127.0.0.1:$PORT (rc=$rc); last log lines of $LOG:"
  tail -n 40 "$LOG" >&2
  exit 1
done
START_MS=$(( $(now_ms) - t0 ))

# --- env file (endpoints come from the discovery document itself) ----------------------------
DISCOVERY=$(curl -fsS --max-time 5 "http://127.0.0.1:$PORT/.well-known/openid-configuration")
disc() { json_get "$1" <<<"$DISCOVERY"; }
[ "$(disc issuer)" = "$ISSUER" ] || die "discovery issuer $(disc issuer) != $ISSUER"

tmp_env=$(mktemp "$STATE/.op.env.XXXXXX")
{
  w() { env_write "$tmp_env" "$1" "$2"; }
  w OP_ISSUER "$ISSUER"
  w OP_PORT "$PORT"
  w OP_PID "$PID"
  w OP_DISCOVERY_URL "$ISSUER/.well-known/openid-configuration"
  w OP_JWKS_URL "$(disc jwks_uri)"
  w OP_TOKEN_ENDPOINT "$(disc token_endpoint)"
  w OP_DEVICE_AUTHORIZATION_ENDPOINT "$(disc device_authorization_endpoint)"
  w OP_AUTHORIZATION_ENDPOINT "$(disc authorization_endpoint)"
  w OP_INTROSPECTION_ENDPOINT "$(disc introspection_endpoint)"
  w OP_REVOCATION_ENDPOINT "$(disc revocation_endpoint)"
  w OP_USERINFO_ENDPOINT "$(disc userinfo_endpoint)"
  w OP_END_SESSION_ENDPOINT "$(disc end_session_endpoint)"
  w OP_API_RESOURCE https://api.test.example
  w OP_OPAQUE_RESOURCE urn:test:opaque-api
  w OP_DEVICE_CLIENT_ID device-client
  w OP_CLI_CLIENT_ID cli-client
  w OP_ROBOT_CLIENT_ID robot-client
  w OP_ROBOT_CLIENT_SECRET "${OP_ROBOT_SECRET:-robot-secret}"
  w OP_ROBOT_POST_CLIENT_ID robot-client-post
  w OP_ROBOT_POST_CLIENT_SECRET "${OP_ROBOT_POST_SECRET:-robot-post-secret}"
  w OP_RS_CLIENT_ID resource-server
  w OP_RS_CLIENT_SECRET "${OP_RS_SECRET:-rs-secret}"
  w OP_DIR "$OP_DIR"
  w OP_LOG "$LOG"
  w OP_INSTALL_MS "$INSTALL_MS"
  w OP_START_MS "$START_MS"
}
mv -f "$tmp_env" "$ENV_FILE"
log "OP ready: $ISSUER (pid $PID, start ${START_MS} ms) -> $ENV_FILE"
