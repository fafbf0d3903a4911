#!/usr/bin/env bash
# stop-postgres.sh [STATE] - stop the server that start-postgres.sh started in STATE (default
# ${TMPDIR:-/tmp}/credkeeper-testbed-postgres) and remove everything it wrote there: the
# cluster (STATE/pg), the CA (STATE/pki, STATE/ca.pem), the password files and pg.env. STATE
# itself stays (it is the caller's), except the default one, removed when empty.
#
# pg_ctl stop -m fast (immediate when that does not end within 30 s) on STATE/pg/data only;
# nothing else (the Debian package's cluster, other testbed servers) is touched. Nothing to do
# when STATE has no server.
set -euo pipefail
# No python here: skip lib.sh's interpreter look-up (0.1 s through a pyenv shim).
TESTBED_PYTHON=${TESTBED_PYTHON:-python3}
. "$(dirname "$0")/lib.sh"
. "$TESTBED_DIR/pg-lib.sh"

[ $# -le 1 ] || die "usage: $0 [STATE]"
ARG=${1:-$PG_DEFAULT_STATE}
[ -d "$ARG" ] || { log "no state directory $ARG; nothing to stop"; exit 0; }
pg_paths "$(cd "$ARG" && pwd)"

TB_STEP="stop the server of $STATE"
if [ -f "$PG_DATA/PG_VERSION" ]; then
  PG_USER=$(env_read "$PG_ENV_FILE" PG_USER 2>/dev/null || true)
  if [ -z "$PG_USER" ]; then
    # no pg.env (start-postgres.sh failed half-way): the data directory's owner runs it
    PG_USER=$(stat -c %U "$PG_DATA")
  fi
  pid=$(pg_pid)
  pg_ctl_stop fast || die "could not stop the server of $PG_DATA (pid ${pid:-?})"
  if [ -n "$pid" ] && pid_alive "$pid"; then
    die "the postmaster (pid $pid) of $PG_DATA is still there after pg_ctl stop"
  fi
fi

TB_STEP="remove the data in $STATE"
rm -rf "$PG_DIR" "$PG_PKI"
rm -f "$PG_ENV_FILE" "$PG_CA_FILE" "$PG_PASSWORD_FILE" "$PG_PASSFILE"
if [ "$STATE" = "$PG_DEFAULT_STATE" ]; then
  rmdir "$STATE" 2>/dev/null || true
fi
