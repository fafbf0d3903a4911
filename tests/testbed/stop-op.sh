#!/usr/bin/env bash
# stop-op.sh STATE - stop the OP that start-op.sh started for STATE (exactly OP_PID from
# STATE/op.env, and only while that PID is still our server.mjs for this STATE).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 STATE"
[ -d "$1" ] || { log "no state directory $1; nothing to stop"; exit 0; }
STATE=$(cd "$1" && pwd)
ENV_FILE=$STATE/op.env
pid=$(env_read "$ENV_FILE" OP_PID || true)
if [ -z "$pid" ]; then
  log "no OP_PID in $ENV_FILE; nothing to stop"
  exit 0
fi
stop_pid "$pid" "$TESTBED_DIR/op/server.mjs $STATE/op"
