#!/usr/bin/env bash
# stop-registry.sh STATE - stop the registry that start-registry.sh started for STATE (exactly
# REGISTRY_PID from STATE/registry.env, and only while that PID is still the docker-registry
# serving STATE/registry/). Storage, password and log stay in STATE/registry/.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 STATE"
[ -d "$1" ] || { log "no state directory $1; nothing to stop"; exit 0; }
STATE=$(cd "$1" && pwd)
ENV_FILE=$STATE/registry.env
pid=$(env_read "$ENV_FILE" REGISTRY_PID || true)
if [ -z "$pid" ]; then
  log "no REGISTRY_PID in $ENV_FILE; nothing to stop"
  exit 0
fi
stop_pid "$pid" "docker-registry serve $STATE/registry/"
