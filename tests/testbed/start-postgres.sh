#!/usr/bin/env bash
# start-postgres.sh [STATE] [PORT] - start a private PostgreSQL 15 server (Debian's
# postgresql-15, installed when missing) on 127.0.0.1, TLS only for TCP, with a role
# `credkeeper` (random password, scram-sha-256) owning a database `credkeeper`, and write
# STATE/pg.env once that role has connected over TLS with sslmode=verify-full.
#
# STATE   state directory (created; default ${TMPDIR:-/tmp}/credkeeper-testbed-postgres).
#         pg-lib.sh lists what goes where. A server still running for STATE is not touched:
#         the script refuses (exit 1) and says so. What a stopped one left is wiped: every
#         start is a fresh cluster with a fresh CA, certificate and password. (To bring a
#         stopped server back with its data: pg-ctl.sh STATE start.)
# PORT    optional TCP port; otherwise a free loopback port.
#
# The server runs as an unprivileged user: as root, the `postgres` system user (the
# package creates it; initdb and postgres refuse to run as root), through runuser. It must
# be able to enter STATE: STATE gets o+x, and so does each parent directory owned by the
# caller below a world-writable sticky one (/tmp), which makes a state dir inside a 0700
# temp dir usable; no other directory is changed, and one the user still cannot enter
# (e.g. /root) is named in the error. Not as root, the caller runs the server itself.
#
# Server: listen_addresses 127.0.0.1 only, unix socket in STATE/pg (0700, not /var/run),
# ssl on with a certificate from a throw-away CA (IP SAN 127.0.0.1, DNS SAN localhost),
# pg_hba.conf: `hostssl all credkeeper 127.0.0.1/32 scram-sha-256`, the superuser only
# through the socket (peer, mapped from PG_USER and the caller), everything else rejected;
# no trust anywhere. fsync off (a test server: a crash of the machine may lose it; pg-ctl.sh
# stop is a clean shutdown and keeps everything).
#
# Outputs (STATE/pg.env, KEY=value, sourceable and dotenv-safe; its path printed on stdout):
#   PG_URL            postgres://credkeeper@127.0.0.1:PORT/credkeeper?sslmode=verify-full
#   PG_PASSWORD_FILE  the role's password (caller's file, 0600)
#   PG_PASSFILE       STATE/pgpass, the password in libpq's passfile format (0600)
#   PG_CA_FILE        the CA certificate (PEM) the server's certificate chains to
#   PG_HOST PG_PORT   127.0.0.1 and the port
#   PG_ROLE PG_DATABASE  credkeeper, credkeeper
#   PG_DATA PG_DIR PG_LOG  data directory, private directory, server log
#   PG_BIN            /usr/lib/postgresql/15/bin (run psql, pg_isready… from here)
#   PG_USER           the OS user running the server (postgres as root)
#   PG_SUPERUSER      postgres
#   PG_SUPERUSER_URL  postgresql://postgres@<socket dir, %2F-encoded>:PORT/postgres (peer
#                     authentication through the socket: usable by PG_USER and by the user
#                     who ran this script, e.g. `"$PG_BIN/psql" "$PG_SUPERUSER_URL"`)
#   PG_SOCKET_DIR     the socket's directory (= PG_DIR)
#   PG_SERVER_VERSION e.g. 15.18
#   PG_INSTALL_MS PG_START_MS
# Outputs are never read back as inputs (pg-ctl.sh and stop-postgres.sh read pg.env as the
# record of the instance to act on).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$TESTBED_DIR/pg-lib.sh"

[ $# -le 2 ] || die "usage: $0 [STATE] [PORT]"
TB_STEP="state directory"
mkdir -p "${1:-$PG_DEFAULT_STATE}"
pg_paths "$(cd "${1:-$PG_DEFAULT_STATE}" && pwd)"
REQ_PORT=${2:-}
[ -z "$REQ_PORT" ] || [[ $REQ_PORT =~ ^[0-9]+$ ]] || die "PORT must be a number"
ME=$(id -un)

# --- install ---------------------------------------------------------------------------------
TB_STEP="install postgresql-15"
t0=$(now_ms)
pg_installed() {
  local b
  for b in initdb postgres pg_ctl psql pg_isready; do
    [ -x "$PG_BIN/$b" ] || return 1
  done
}
if ! pg_installed; then
  # postgresql-15 (server, initdb, pg_ctl; creates the `postgres` user) and
  # postgresql-client-15 (psql, pg_isready) are Debian 12's. The package's postinst may
  # create a `main` cluster and try to start its service: neither is ever used here.
  # Serialised: tests may start several servers at once on a fresh machine.
  mkdir -p "$TESTBED_DIR/.cache"
  (
    flock -w 600 9 || die "timed out waiting for $TESTBED_DIR/.cache/postgres-install.lock"
    pg_installed || apt_install postgresql-15 postgresql-client-15
  ) 9>"$TESTBED_DIR/.cache/postgres-install.lock"
  pg_installed || die "postgresql-15 and postgresql-client-15 are installed, but not every one of initdb, postgres, pg_ctl, psql, pg_isready is in $PG_BIN"
fi
command -v openssl >/dev/null || apt_install openssl
INSTALL_MS=$(( $(now_ms) - t0 ))

if [ "$(id -u)" -eq 0 ]; then
  PG_USER=postgres
  getent passwd "$PG_USER" >/dev/null \
    || die "no '$PG_USER' system user (postgresql-common creates it): initdb refuses to run as root"
else
  PG_USER=$ME
fi
PG_GROUP=$(id -gn "$PG_USER")

# --- a server already running here is left alone; a stopped one's files are wiped -------------
TB_STEP="earlier server in $STATE"
if [ -f "$PG_DATA/PG_VERSION" ]; then
  old_user=$(env_read "$PG_ENV_FILE" PG_USER 2>/dev/null || true)
  if PG_USER=${old_user:-$PG_USER} pg_running; then
    die "a PostgreSQL server is already running in $STATE (pid $(pg_pid), port $(env_read "$PG_ENV_FILE" PG_PORT || echo '?')): stop it first (stop-postgres.sh $STATE), or use it (pg-ctl.sh $STATE …)"
  fi
  log "removing the stopped server that an earlier run left in $STATE"
fi
rm -rf "$PG_DIR" "$PG_PKI"
rm -f "$PG_ENV_FILE" "$PG_CA_FILE" "$PG_PASSWORD_FILE" "$PG_PASSFILE"

# --- directories: the private one is the server user's, and that user must reach it ------------
TB_STEP="private directory for $PG_USER"
mkdir -m 0700 "$PG_DIR" "$PG_PKI"
if [ "$PG_USER" != "$ME" ]; then
  chown "$PG_USER:$PG_GROUP" "$PG_DIR"
  # PG_USER must be able to enter every directory above PG_DIR. Search permission only (no
  # listing): STATE gets o+x; so does each parent owned by the caller, but only below a
  # world-writable sticky directory (/tmp, /var/tmp, /dev/shm), i.e. the caller's own temp
  # directories. Nothing else (e.g. /root) is changed: the check below names it.
  chmod o+x "$STATE"
  below_sticky=()
  d=$(dirname "$STATE")
  while :; do
    mode=$(stat -c '%a' "$d")
    if [ $(( 8#$mode & 01002 )) -eq $(( 01002 )) ]; then
      for p in "${below_sticky[@]}"; do chmod o+x "$p"; done
      break
    fi
    [ "$d" = / ] && break
    if [ "$(stat -c %U "$d")" = "$ME" ] && [ $(( 8#$mode & 01 )) -eq 0 ]; then
      below_sticky+=("$d")
    fi
    d=$(dirname "$d")
  done
  if ! as_pg test -w "$PG_DIR" -a -x "$PG_DIR"; then
    culprit=$PG_DIR d=$PG_DIR
    while [ "$d" != / ]; do
      d=$(dirname "$d")
      as_pg test -x "$d" || culprit=$d
    done
    die "user $PG_USER cannot enter $culprit ($(stat -c '%A %U' "$culprit")): put STATE under /tmp (TMPDIR=/tmp) or give that directory o+x"
  fi
fi
SOCKET_MAX=$(( ${#PG_DIR} + 15 )) # + "/.s.PGSQL.65535"
[ "$SOCKET_MAX" -le 107 ] \
  || die "the socket path $PG_DIR/.s.PGSQL.PORT is too long for a unix socket ($SOCKET_MAX > 107 bytes): use a shorter STATE"

# --- TLS: a throw-away CA and the server's certificate ----------------------------------------
TB_STEP="TLS: test CA and server certificate (openssl)"
cat >"$PG_PKI/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
serial() { printf '0x%s' "$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"; }
(
  umask 077
  openssl req -x509 -new -config "$PG_PKI/openssl.cnf" -extensions ca_ext \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PG_PKI/ca.key" \
    -subj "/O=credkeeper testbed/CN=PostgreSQL test CA $(basename "$STATE")" \
    -set_serial "$(serial)" -days 30 -out "$PG_PKI/ca.pem"
  openssl req -new -config "$PG_PKI/openssl.cnf" \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PG_PKI/server.key" \
    -subj "/O=credkeeper testbed/CN=localhost" -out "$PG_PKI/server.csr"
  openssl x509 -req -in "$PG_PKI/server.csr" -CA "$PG_PKI/ca.pem" -CAkey "$PG_PKI/ca.key" \
    -set_serial "$(serial)" -days 30 -extfile "$PG_PKI/openssl.cnf" -extensions server_ext \
    -out "$PG_PKI/server.crt"
) >"$PG_PKI/openssl.log" 2>&1 || { cat "$PG_PKI/openssl.log" >&2; die "openssl failed"; }
install -m 0644 "$PG_PKI/ca.pem" "$PG_CA_FILE"
# postgres wants its key 0600 and owned by the user it runs as.
if [ "$PG_USER" != "$ME" ]; then own=(-o "$PG_USER" -g "$PG_GROUP"); else own=(); fi
install -m 0600 "${own[@]}" "$PG_PKI/server.key" "$PG_DIR/server.key"
install -m 0644 "${own[@]}" "$PG_PKI/server.crt" "$PG_DIR/server.crt"

# --- initdb and configuration ----------------------------------------------------------------
TB_STEP="initdb"
# --no-sync: nothing to make durable for a test cluster. The superuser is `postgres` whoever
# runs the server.
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_SUPERUSER" --encoding=UTF8 --no-locale \
  --auth-local=peer --auth-host=reject --no-sync >"$PG_DIR/initdb.log" 2>&1 \
  || { tail -n 30 "$PG_DIR/initdb.log" >&2; die "initdb -D $PG_DATA failed (as $PG_USER)"; }

TB_STEP="configuration"
# write_conf PORT: our settings, included at the end of postgresql.conf (rewritten with
# another port when the one picked was taken).
write_conf() {
  as_pg tee "$PG_DATA/testbed.conf" >/dev/null <<EOF
# Written by start-postgres.sh (credkeeper testbed).
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = '$PG_DIR'
unix_socket_permissions = 0700
ssl = on
ssl_cert_file = '$PG_DIR/server.crt'
ssl_key_file = '$PG_DIR/server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
# brokers with a pool each, several per test
max_connections = 200
shared_buffers = 32MB
# a test server: nothing needs to survive a crash of the machine
fsync = off
full_page_writes = off
log_connections = on
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
}
printf "\ninclude 'testbed.conf'\n" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
as_pg tee "$PG_DATA/pg_hba.conf" >/dev/null <<EOF
# Written by start-postgres.sh (credkeeper testbed). No trust anywhere.
# TYPE   DATABASE  USER           ADDRESS        METHOD
# the superuser: only through the unix socket in the private directory, peer authentication
local    all       $PG_SUPERUSER                      peer map=testbed
# the application role: TLS over TCP, SCRAM
hostssl  all       $PG_APP_ROLE     127.0.0.1/32   scram-sha-256
# anything else over TCP (no TLS, other users, other addresses)
host     all       all            0.0.0.0/0      reject
host     all       all            ::/0           reject
EOF
{
  echo "# Written by start-postgres.sh: OS users allowed to be the superuser through the socket."
  echo "testbed  $PG_USER  $PG_SUPERUSER"
  [ "$ME" = "$PG_USER" ] || echo "testbed  $ME  $PG_SUPERUSER"
} | as_pg tee "$PG_DATA/pg_ident.conf" >/dev/null

# --- start -----------------------------------------------------------------------------------
TB_STEP="start the server"
t0=$(now_ms)
attempt=0
while :; do
  attempt=$((attempt + 1))
  PG_PORT=${REQ_PORT:-$(free_port)}
  write_conf "$PG_PORT"
  pg_ctl_start && break
  # a port picked by us may have been taken in between: try another one
  if [ -z "$REQ_PORT" ] && [ "$attempt" -lt 3 ] && ! pg_running \
     && tail -n 20 "$PG_LOG" 2>/dev/null | grep -q 'Address already in use'; then
    log "port $PG_PORT was taken, retrying"
    continue
  fi
  pg_ctl_stop immediate || true
  die "PostgreSQL did not start on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
done
# From here on a failure stops the server again: nothing is left running without pg.env.
started_cleanup() {
  if [ ! -f "$PG_ENV_FILE" ]; then
    pg_ctl_stop immediate || true
  fi
}
trap started_cleanup EXIT

# --- the application role and database ---------------------------------------------------------
TB_STEP="role and database $PG_APP_ROLE"
PASSWORD=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
(
  umask 077
  printf '%s\n' "$PASSWORD" >"$PG_PASSWORD_FILE"
  # libpq's passfile: hostname:port:database:username:password
  printf '%s:%s:*:%s:%s\n' 127.0.0.1 "$PG_PORT" "$PG_APP_ROLE" "$PASSWORD" \
    localhost "$PG_PORT" "$PG_APP_ROLE" "$PASSWORD" >"$PG_PASSFILE"
)
# The password on stdin, never on a command line.
psql_super -f - <<EOF || { pg_log_tail; die "creating role and database $PG_APP_ROLE failed"; }
CREATE ROLE $PG_APP_ROLE LOGIN PASSWORD '$PASSWORD';
CREATE DATABASE $PG_APP_DB OWNER $PG_APP_ROLE;
EOF

# --- ready: the role connects over TLS, certificate and host name verified ----------------------
TB_STEP="TLS connection as $PG_APP_ROLE (sslmode=verify-full)"
PG_URL="postgres://$PG_APP_ROLE@127.0.0.1:$PG_PORT/$PG_APP_DB?sslmode=verify-full"
out=$("$PG_BIN/psql" -X -At \
  -d "$PG_URL&sslrootcert=$PG_CA_FILE&passfile=$PG_PASSFILE&connect_timeout=10" \
  -c "SELECT ssl, current_setting('server_version') FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>&1) \
  || { log "$out"; pg_log_tail; die "the role $PG_APP_ROLE cannot connect with sslmode=verify-full"; }
[ "${out%%|*}" = t ] || { pg_log_tail; die "connected, but pg_stat_ssl says ssl='${out%%|*}'"; }
SERVER_VERSION=${out#*|}
SERVER_VERSION=${SERVER_VERSION%% *}
[[ $SERVER_VERSION == "$PG_MAJOR".* ]] || die "server version $SERVER_VERSION, not $PG_MAJOR"
START_MS=$(( $(now_ms) - t0 ))

# --- env file --------------------------------------------------------------------------------
TB_STEP="write $PG_ENV_FILE"
tmp_env=$(mktemp "$STATE/.pg.env.XXXXXX")
{
  w() { env_write "$tmp_env" "$1" "$2"; }
  w PG_URL "$PG_URL"
  w PG_PASSWORD_FILE "$PG_PASSWORD_FILE"
  w PG_PASSFILE "$PG_PASSFILE"
  w PG_CA_FILE "$PG_CA_FILE"
  w PG_HOST 127.0.0.1
  w PG_PORT "$PG_PORT"
  w PG_ROLE "$PG_APP_ROLE"
  w PG_DATABASE "$PG_APP_DB"
  w PG_DATA "$PG_DATA"
  w PG_DIR "$PG_DIR"
  w PG_LOG "$PG_LOG"
  w PG_BIN "$PG_BIN"
  w PG_USER "$PG_USER"
  w PG_SUPERUSER "$PG_SUPERUSER"
  w PG_SUPERUSER_URL "$(pg_superuser_url)"
  w PG_SOCKET_DIR "$PG_DIR"
  w PG_SERVER_VERSION "$SERVER_VERSION"
  w PG_INSTALL_MS "$INSTALL_MS"
  w PG_START_MS "$START_MS"
}
chmod 0644 "$tmp_env"
mv -f "$tmp_env" "$PG_ENV_FILE"
log "PostgreSQL $SERVER_VERSION ready on 127.0.0.1:$PG_PORT as $PG_USER (pid $(pg_pid), start ${START_MS} ms) -> $PG_ENV_FILE"
echo "$PG_ENV_FILE"
