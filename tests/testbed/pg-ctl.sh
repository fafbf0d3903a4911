#!/usr/bin/env bash
# pg-ctl.sh STATE stop|start|restart|status - take the server that start-postgres.sh started in
# STATE away and bring it back, on the same port with its data (integration tests: brokers
# that lose their database and get it back).
#
#   stop     pg_ctl stop -m fast: clients are disconnected at once, clean shutdown, data kept;
#            127.0.0.1:PG_PORT refuses connections afterwards. Nothing to do when it is down.
#   start    pg_ctl start on the recorded port (postgresql.conf has it); returns once
#            127.0.0.1:PG_PORT accepts connections (pg_isready), or fails with the log's
#            tail (e.g. when something else took the port meanwhile). Nothing to do when up.
#   restart  stop, then start.
#   status   exit 0 while the server runs, 3 when it is down.
# Acts only on STATE/pg/data (pg_ctl -D), as the OS user recorded in STATE/pg.env.
set -euo pipefail
# No python here: skip lib.sh's interpreter look-up (0.1 s through a pyenv shim).
TESTBED_PYTHON=${TESTBED_PYTHON:-python3}
. "$(dirname "$0")/lib.sh"
. "$TESTBED_DIR/pg-lib.sh"

[ $# -eq 2 ] || die "usage: $0 STATE stop|start|restart|status"
[ -d "$1" ] || die "no state directory $1"
pg_load_env "$(cd "$1" && pwd)"
[ -f "$PG_DATA/PG_VERSION" ] || die "no data directory $PG_DATA (stop-postgres.sh removed it?)"

do_stop() {
  TB_STEP="stop the server of $STATE"
  if ! pg_running; then
    log "not running ($PG_DATA)"
    return 0
  fi
  pg_ctl_stop fast || die "could not stop the server of $PG_DATA"
  # the port is closed once the postmaster is gone
  ! "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 1 \
    || die "stopped, but 127.0.0.1:$PG_PORT still accepts connections (another server on that port?)"
}

do_start() {
  TB_STEP="start the server of $STATE on port $PG_PORT"
  if pg_running; then
    log "already running (pid $(pg_pid), port $PG_PORT)"
    return 0
  fi
  pg_ctl_start || die "could not start the server of $PG_DATA on 127.0.0.1:$PG_PORT"
}

case $2 in
  stop) do_stop ;;
  start) do_start ;;
  restart) do_stop && do_start ;;
  status)
    if pg_running; then
      log "running (pid $(pg_pid), port $PG_PORT)"
    else
      log "not running"
      exit 3
    fi
    ;;
  *) die "usage: $0 STATE stop|start|restart|status" ;;
esac
