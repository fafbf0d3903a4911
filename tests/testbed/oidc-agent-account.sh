#!/usr/bin/env bash
# oidc-agent-account.sh OP_STATE NAME PASSWORD OUTFILE - make a real oidc-agent encrypted
# account configuration (what rucio-task-manager gets in OIDC_AGENT_AUTH_CLIENT_CFG_VALUE)
# with the real oidc-gen, against the test OP that start-op.sh started for OP_STATE.
#
# OP_STATE  the OP's state directory (its op.env gives the issuer and the robot-client).
# NAME      the account's short name (oidc-gen's account, "name" inside the config).
# PASSWORD  the encryption password. The file is encrypted with it by oidc-gen itself.
# OUTFILE   where the encrypted config goes (mode 0600), exactly as oidc-gen wrote it.
#
# Optional environment: ACCOUNT_SCOPE (default "openid offline_access"), ACCOUNT_LOGIN (the
# OP user who approves the device code; default alice).
#
# How: oidc-agent-cli is installed from Debian if missing; an oidc-agent runs on its own socket
# with HOME, the XDG dirs and OIDC_CONFIG_DIR in a private temporary directory (nothing reads
# or writes the real user's ~/.oidc-agent or ~/.config); oidc-gen registers the account with
# the device flow and the confidential robot-client (oidc-agent 4.2.6 always sends HTTP Basic
# at the token endpoint, which the OP refuses for its public device-client), and op-browser.sh
# approves the code as ACCOUNT_LOGIN. The refresh token inside is live at that OP (until the OP
# restarts: its grants are in memory). The agent is stopped and the temporary directory removed
# on every exit. Each failure names its step.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 4 ] || die "usage: $0 OP_STATE NAME PASSWORD OUTFILE"
OP_STATE=$1
NAME=$2
PASSWORD=$3
OUTFILE=$4
[[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "NAME must be letters, digits, . _ - (got '$NAME')"
[ -n "$PASSWORD" ] || die "PASSWORD must not be empty"
SCOPE=${ACCOUNT_SCOPE:-openid offline_access}
LOGIN=${ACCOUNT_LOGIN:-alice}

TB_STEP="install oidc-agent-cli"
if ! command -v oidc-gen >/dev/null || ! command -v oidc-agent >/dev/null; then
  apt_install oidc-agent-cli
fi
command -v oidc-gen >/dev/null || die "$TB_STEP: oidc-gen not found after installing"

TB_STEP="read $OP_STATE/op.env"
ISSUER=$(env_read "$OP_STATE/op.env" OP_ISSUER) || die "$TB_STEP: no op.env (start-op.sh first)"
CLIENT_ID=$(env_read "$OP_STATE/op.env" OP_ROBOT_CLIENT_ID)
CLIENT_SECRET=$(env_read "$OP_STATE/op.env" OP_ROBOT_CLIENT_SECRET)
if [ -z "$ISSUER" ] || [ -z "$CLIENT_ID" ] || [ -z "$CLIENT_SECRET" ]; then
  die "$TB_STEP: OP_ISSUER, OP_ROBOT_CLIENT_ID or OP_ROBOT_CLIENT_SECRET missing"
fi

# --- a private home for the agent and oidc-gen ----------------------------------------------
TB_STEP="private directories"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oidc-agent-account.XXXXXX")
AGENT_PID=
GEN_PID=
cleanup() {
  local rc=$?
  if [ -n "$GEN_PID" ] && pid_alive "$GEN_PID"; then
    stop_pid "$GEN_PID" oidc-gen || true
  fi
  if [ -n "$AGENT_PID" ]; then
    stop_pid "$AGENT_PID" oidc-agent || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

for v in $(compgen -e); do
  case $v in
    XDG_* | OIDC_* | OIDCD_*) unset "$v" ;;
  esac
done
export HOME=$WORK/home
export XDG_CONFIG_HOME=$HOME/.config XDG_DATA_HOME=$HOME/.local/share XDG_CACHE_HOME=$HOME/.cache
export XDG_RUNTIME_DIR=$WORK/run
export OIDC_CONFIG_DIR=$WORK/oidc-config
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" "$OIDC_CONFIG_DIR" "$WORK/agent"
chmod 700 "$WORK" "$XDG_RUNTIME_DIR" "$OIDC_CONFIG_DIR" "$WORK/agent"

# --- the agent ---------------------------------------------------------------------------------
TB_STEP="start oidc-agent"
AGENT_JSON=$(oidc-agent --socket-path="$WORK/agent/oidc-agent.sock" --json --quiet) \
  || die "$TB_STEP: oidc-agent exited with status $?"
AGENT_PID=$(json_get dpid <<<"$AGENT_JSON") || die "$TB_STEP: no dpid in its output"
OIDC_SOCK=$(json_get socket <<<"$AGENT_JSON") || die "$TB_STEP: no socket in its output"
export OIDC_SOCK OIDCD_PID=$AGENT_PID
[ -S "$OIDC_SOCK" ] || die "$TB_STEP: socket $OIDC_SOCK missing"

# --- oidc-gen with the device flow, approved by the headless browser --------------------------
TB_STEP="oidc-gen $NAME"
GEN_OUT=$WORK/oidc-gen.out
OIDC_ENCRYPTION_PW=$PASSWORD oidc-gen "$NAME" --issuer="$ISSUER" --client-id="$CLIENT_ID" \
  --client-secret="$CLIENT_SECRET" --scope="$SCOPE" --flow=device --pw-env --no-url-call \
  --confirm-default --prompt=none </dev/null >"$GEN_OUT" 2>&1 &
GEN_PID=$!
CODE=
for ((i = 0; i < 300; i++)); do
  CODE=$(grep -o 'enter the code: [A-Z0-9-]*' "$GEN_OUT" | head -n 1 | awk '{print $4}') || true
  [ -n "$CODE" ] && break
  pid_alive "$GEN_PID" || break
  sleep 0.1
done
if [ -z "$CODE" ]; then
  grep -v $'\e' "$GEN_OUT" >&2 || true
  die "$TB_STEP: printed no device user code"
fi

TB_STEP="approve device code $CODE as $LOGIN"
"$TESTBED_DIR/op-browser.sh" device "$ISSUER" "$CODE" "$LOGIN" >/dev/null \
  || die "$TB_STEP: op-browser.sh failed"

TB_STEP="oidc-gen $NAME (after approval)"
rc=0
wait "$GEN_PID" || rc=$?
GEN_PID=
if [ "$rc" -ne 0 ]; then
  grep -v $'\e' "$GEN_OUT" >&2 || true
  die "$TB_STEP: exited with status $rc"
fi

# --- the encrypted file ------------------------------------------------------------------------
TB_STEP="copy the encrypted account config"
SRC=$OIDC_CONFIG_DIR/$NAME
[ -s "$SRC" ] || die "$TB_STEP: oidc-gen wrote no $SRC"
grep -q '^Generated using version: ' "$SRC" \
  || die "$TB_STEP: $SRC has no 'Generated using version:' line (not oidc-agent's password format)"
mkdir -p "$(dirname "$OUTFILE")"
(umask 077 && cp "$SRC" "$OUTFILE.tmp.$$")
mv -f "$OUTFILE.tmp.$$" "$OUTFILE"

TB_STEP="stop oidc-agent"
stop_pid "$AGENT_PID" oidc-agent || die "$TB_STEP: pid $AGENT_PID did not stop"
AGENT_PID=
log "wrote $OUTFILE ($(tail -n 1 "$OUTFILE"), account $NAME at $ISSUER)"
