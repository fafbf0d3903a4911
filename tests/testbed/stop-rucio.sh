#!/usr/bin/env bash
# stop-rucio.sh STATE - stop the Rucio servers that start-rucio.sh started for STATE: exactly
# RUCIO_PID (plain HTTP) and RUCIO_TLS_PID (HTTPS) from STATE/rucio.env, and only while each is
# still that gunicorn master for this STATE (its command line names STATE/rucio's pid file).
# TERM to a master stops its worker too (about 1.5 s; both masters are stopped at once); KILL
# after 10 s (lib.sh stop_pid). An OP started next to it (start-op.sh) is not touched: stop it
# with stop-op.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 STATE"
[ -d "$1" ] || { log "no state directory $1; nothing to stop"; exit 0; }
STATE=$(cd "$1" && pwd)
ENV_FILE=$STATE/rucio.env
[ -f "$ENV_FILE" ] || { log "no $ENV_FILE; nothing to stop"; exit 0; }
stoppers=()
for pair in RUCIO_PID:gunicorn-http.pid RUCIO_TLS_PID:gunicorn-tls.pid; do
  pid=$(env_read "$ENV_FILE" "${pair%%:*}" || true)
  [ -n "$pid" ] || continue
  stop_pid "$pid" "--pid $STATE/rucio/${pair#*:}" &
  stoppers+=("$!")
done
rc=0
for j in "${stoppers[@]}"; do wait "$j" || rc=1; done
exit "$rc"
