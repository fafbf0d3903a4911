#!/usr/bin/env bash
# stop-kdc.sh STATE - stop the KDC that start-kdc.sh started for STATE: exactly KDC_PID and
# KADMIND_PID from STATE/kdc.env, and only while each is still that daemon for this STATE (its
# command line names STATE/kdc's pid file). System services (krb5-kdc, krb5-admin-server) are
# never touched. TERM, then KILL after 10 s (lib.sh stop_pid).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 STATE"
[ -d "$1" ] || { log "no state directory $1; nothing to stop"; exit 0; }
STATE=$(cd "$1" && pwd)
ENV_FILE=$STATE/kdc.env
[ -f "$ENV_FILE" ] || { log "no $ENV_FILE; nothing to stop"; exit 0; }
rc=0
for daemon in KDC_PID:krb5kdc KADMIND_PID:kadmind; do
  pid=$(env_read "$ENV_FILE" "${daemon%%:*}" || true)
  [ -n "$pid" ] || continue
  stop_pid "$pid" "-P $STATE/kdc/${daemon#*:}.pid" || rc=1
done
exit "$rc"
