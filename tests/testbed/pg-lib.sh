# shellcheck shell=bash
# shellcheck disable=SC2034 # the PG_* names are for the scripts that source this
# Shared by start-postgres.sh, pg-ctl.sh, pg-newdb.sh, stop-postgres.sh and
# selftest-postgres.sh. Source it after lib.sh: . "$TESTBED_DIR/pg-lib.sh"
#
# Layout of a state directory STATE (everything start-postgres.sh writes):
#   STATE/pg/              the server's private directory: owned by the OS user that runs the
#                          server (PG_USER: `postgres` when the scripts run as root, else the
#                          caller), 0700. Holds data/ (PGDATA), the unix socket
#                          (.s.PGSQL.PORT), server.crt/server.key (0600), postgres.log.
#   STATE/pki/             the throw-away CA's key and the server's CSR (caller's, 0700)
#   STATE/ca.pem           the CA certificate (PG_CA_FILE)
#   STATE/pg-password      the credkeeper role's password (PG_PASSWORD_FILE, caller's, 0600)
#   STATE/pgpass           the same in libpq's passfile format (PG_PASSFILE, caller's, 0600)
#   STATE/pg.env           the outputs, KEY=value (start-postgres.sh's header lists them)
#
# Only the binaries of PostgreSQL 15 under PG_BIN are run, never whatever pg_ctl/initdb/psql
# is first on PATH (/usr/bin/psql is Debian's version-picking wrapper; /usr/local/bin may
# hold anything). The Debian package's own cluster (/var/lib/postgresql/15/main) and its
# service are never touched: every pg_ctl call names -D STATE/pg/data.

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_SUPERUSER=postgres
PG_APP_ROLE=credkeeper
PG_APP_DB=credkeeper
# Where the server lives when no STATE is given.
PG_DEFAULT_STATE=${TMPDIR:-/tmp}/credkeeper-testbed-postgres

# libpq and pg_ctl read PGHOST, PGPORT, PGDATA, PGUSER, PGPASSFILE, PGSSLMODE… from the
# environment: a caller's must never redirect what these scripts do.
while read -r v; do
  unset "$v"
done < <(compgen -e | grep -E '^PG[A-Z]+$' || true)

# pg_paths STATE: set the paths of the instance in STATE (absolute, existing directory).
pg_paths() {
  STATE=$1
  # The paths go into postgresql.conf ('…'), pg.env (no quoting) and a socket path.
  [[ $STATE =~ ^/[A-Za-z0-9/._+-]*$ ]] \
    || die "state directory '$STATE': only letters, digits and /._+- are supported in its path"
  PG_DIR=$STATE/pg
  PG_DATA=$PG_DIR/data
  PG_LOG=$PG_DIR/postgres.log
  PG_PKI=$STATE/pki
  PG_CA_FILE=$STATE/ca.pem
  PG_PASSWORD_FILE=$STATE/pg-password
  PG_PASSFILE=$STATE/pgpass
  PG_ENV_FILE=$STATE/pg.env
}

# pg_load_env STATE: the recorded instance (pg_paths plus PG_USER and PG_PORT from pg.env).
pg_load_env() {
  pg_paths "$1"
  [ -f "$PG_ENV_FILE" ] || die "no $PG_ENV_FILE: start-postgres.sh $STATE has not run (or stop-postgres.sh removed it)"
  PG_USER=$(env_read "$PG_ENV_FILE" PG_USER) || die "no PG_USER in $PG_ENV_FILE"
  PG_PORT=$(env_read "$PG_ENV_FILE" PG_PORT) || die "no PG_PORT in $PG_ENV_FILE"
  if [ -z "$PG_USER" ] || ! [[ $PG_PORT =~ ^[0-9]+$ ]]; then die "$PG_ENV_FILE: bad PG_USER/PG_PORT"; fi
}

# as_pg COMMAND...: run COMMAND as PG_USER (the server's OS user) in a clean environment.
# As root through runuser (setpriv when there is no runuser); as PG_USER itself directly.
as_pg() {
  local envv=(env -i PATH=/usr/bin:/bin HOME="$PG_DIR" LANG=C LC_ALL=C TZ=UTC)
  if [ "$(id -un)" = "$PG_USER" ]; then
    "${envv[@]}" "$@"
  elif [ "$(id -u)" -eq 0 ]; then
    if command -v runuser >/dev/null; then
      runuser -u "$PG_USER" -- "${envv[@]}" "$@"
    else
      setpriv --reuid="$PG_USER" --regid="$(id -g "$PG_USER")" --init-groups -- "${envv[@]}" "$@"
    fi
  else
    die "the server runs as '$PG_USER': run this as root or as $PG_USER"
  fi
}

# pg_running: the server of PG_DATA is up (pg_ctl status: postmaster.pid names a live process).
pg_running() {
  [ -f "$PG_DATA/PG_VERSION" ] || return 1
  as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

# pg_pid: the postmaster's PID from postmaster.pid (empty when there is none).
pg_pid() {
  head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true
}

# pg_log_tail: the server log's last lines on stderr, for a failure report.
pg_log_tail() {
  local f
  for f in "$PG_LOG" "$PG_DIR/pg_ctl.out"; do
    [ -s "$f" ] || continue
    log "last lines of $f:"
    tail -n 25 "$f" >&2
  done
}

# pg_wait_tcp PORT TIMEOUT_S: until the server accepts connections on 127.0.0.1:PORT
# (pg_isready; no credentials needed). 1 on timeout.
pg_wait_tcp() {
  local port=$1 deadline=$(( $(now_ms) + ${2:-15} * 1000 ))
  while :; do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 && return 0
    [ "$(now_ms)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

# pg_superuser_url: the superuser's URL through the unix socket in PG_DIR (peer
# authentication; pg_ident.conf maps PG_USER and the user who started the server to
# `postgres`). The socket directory is the percent-encoded host, as libpq and the Rust
# clients read it.
pg_superuser_url() {
  printf 'postgresql://%s@%s:%s/postgres' "$PG_SUPERUSER" "${PG_DIR//\//%2F}" "$PG_PORT"
}

# psql_super ARGS...: psql as the superuser through the socket, no psqlrc, stop at the
# first error.
psql_super() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$(pg_superuser_url)" "$@"
}

# pg_ctl_start: start the server of PG_DATA as PG_USER (fast to fail: pg_ctl waits up to
# 30 s for postmaster.pid to say "ready"), then wait for 127.0.0.1:PG_PORT. On failure:
# the log's tail and 1.
pg_ctl_start() {
  if ! as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t 30 -s >>"$PG_DIR/pg_ctl.out" 2>&1; then
    log "pg_ctl start -D $PG_DATA failed"
    pg_log_tail
    return 1
  fi
  if ! pg_wait_tcp "$PG_PORT" 15; then
    log "the server started but does not accept connections on 127.0.0.1:$PG_PORT within 15 s"
    pg_log_tail
    return 1
  fi
}

# pg_ctl_stop [MODE]: stop the server of PG_DATA (fast by default: disconnects clients,
# clean shutdown; immediate when fast does not end within 30 s), data kept.
pg_ctl_stop() {
  local mode=${1:-fast}
  pg_running || return 0
  if ! as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m "$mode" -w -t 30 -s >>"$PG_DIR/pg_ctl.out" 2>&1; then
    log "pg_ctl stop -m $mode did not stop the server; trying -m immediate"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w -t 30 -s >>"$PG_DIR/pg_ctl.out" 2>&1 || {
      pg_log_tail
      return 1
    }
  fi
}
