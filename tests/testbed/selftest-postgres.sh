#!/usr/bin/env bash
# selftest-postgres.sh - prove the PostgreSQL test peer works: start-postgres.sh in a fresh
# state dir, then with psql: the server is 15 and runs as an unprivileged user; the
# credkeeper role connects over TLS with sslmode=verify-full (the test CA, the password file
# or the pgpass file) and pg_stat_ssl says so; a wrong password, no password, no TLS, a
# foreign CA and the superuser over TCP are all refused; it listens on 127.0.0.1 only, its
# socket in its private directory; a second start in the same STATE is refused; pg-newdb.sh
# makes a database the role owns; pg-ctl.sh stop takes it away and start brings it back on
# the same port with the data; stop-postgres.sh removes it.
# Ends with "N passed, M failed"; exits non-zero on any failure, naming the check.
# shellcheck disable=SC2016 # bash -c '…' _ ARGS: expanded by that shell, on purpose
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$TESTBED_DIR/pg-lib.sh"

T0=$(now_ms)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/selftest-postgres.XXXXXX")
cleanup() {
  "$TESTBED_DIR/stop-postgres.sh" "$STATE" 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT

load_env() {
  set -a
  # shellcheck disable=SC1090
  . "$1"
  set +a
}

# pq CONNINFO_URL SQL: psql as a client (no psqlrc, no ~/.pgpass unless the URL names one,
# 5 s connect timeout). Output (stdout+stderr) in OUT; the status is psql's.
pq() {
  OUT=$(PGPASSFILE=/nonexistent PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -At -w -v ON_ERROR_STOP=1 -d "$1" -c "$2" 2>&1)
}
# refused NAME PATTERN CONNINFO [PASSWORD]: the connection must fail with PATTERN in the error.
refused() {
  local name=$1 pattern=$2 url=$3 pw=${4:-}
  local envv=(env -u PGPASSWORD PGPASSFILE=/nonexistent PGCONNECT_TIMEOUT=5)
  [ -z "$pw" ] || envv+=(PGPASSWORD="$pw")
  if OUT=$("${envv[@]}" "$PG_BIN/psql" -X -At -w -d "$url" -c 'SELECT 1' 2>&1 </dev/null); then
    fail "$name" "connected: $OUT"
  elif grep -qiE "$pattern" <<<"$OUT"; then
    pass "$name: $(head -n 1 <<<"$OUT" | cut -c1-150)"
  else
    fail "$name" "refused, but not with /$pattern/: $OUT"
  fi
}

echo "== install"
if [ ! -x "$PG_BIN/psql" ]; then
  apt_install postgresql-client-15
fi
check "psql of PostgreSQL 15 at $PG_BIN/psql" test -x "$PG_BIN/psql"

echo "== start"
t0=$(now_ms)
if ENV_FILE=$("$TESTBED_DIR/start-postgres.sh" "$STATE"); then
  pass "start-postgres.sh (ready = the role's verify-full TLS connection) in $(( $(now_ms) - t0 )) ms"
else
  fail "start-postgres.sh"
  summary
  exit 1
fi
check_eq "start-postgres.sh prints the env file" "$STATE/pg.env" "$ENV_FILE"
load_env "$ENV_FILE"
missing_keys=
for k in PG_URL PG_PASSWORD_FILE PG_PASSFILE PG_CA_FILE PG_HOST PG_PORT PG_ROLE PG_DATABASE PG_DATA \
  PG_DIR PG_LOG PG_BIN PG_USER PG_SUPERUSER PG_SUPERUSER_URL PG_SOCKET_DIR PG_SERVER_VERSION; do
  [ -n "${!k:-}" ] || missing_keys+=" $k"
done
check_eq "pg.env has every key" "" "$missing_keys"
unsafe=$(grep -vE '^[A-Za-z_][A-Za-z0-9_]*=[^][:space:]"'"'"'$\\`&;|<>()]*$' "$ENV_FILE" || true)
check_eq "pg.env is dotenv-safe (KEY=value, nothing to quote)" "" "$unsafe"
check_eq "PG_URL" "postgres://credkeeper@127.0.0.1:$PG_PORT/credkeeper?sslmode=verify-full" "$PG_URL"
check_eq "PG_BIN" /usr/lib/postgresql/15/bin "$PG_BIN"
ME=$(id -un)
check_eq "PG_USER: postgres when run as root, else the caller" \
  "$([ "$(id -u)" -eq 0 ] && echo postgres || echo "$ME")" "$PG_USER"
check_eq "PG_PASSWORD_FILE is the caller's, 0600" "600 $ME" "$(stat -c '%a %U' "$PG_PASSWORD_FILE")"
check_eq "PG_PASSFILE is the caller's, 0600" "600 $ME" "$(stat -c '%a %U' "$PG_PASSFILE")"
PASSWORD=$(cat "$PG_PASSWORD_FILE")
check "the password is long and random (>= 32 hex digits)" grep -qE '^[0-9a-f]{32,}$' "$PG_PASSWORD_FILE"
check_eq "pgpass: libpq's host:port:db:user:password, 127.0.0.1 and localhost" \
  "127.0.0.1:$PG_PORT:*:credkeeper:$PASSWORD localhost:$PG_PORT:*:credkeeper:$PASSWORD " \
  "$(tr '\n' ' ' <"$PG_PASSFILE")"
check_eq "the private directory is $PG_USER's, 0700" "700 $PG_USER" "$(stat -c '%a %U' "$PG_DIR")"
check_eq "the data directory is $PG_USER's, 0700" "700 $PG_USER" "$(stat -c '%a %U' "$PG_DATA")"
PID=$(pg_pid)
check_eq "the postmaster runs as $PG_USER (uid $(id -u "$PG_USER"))" "$(id -u "$PG_USER")" \
  "$(awk '/^Uid:/ {print $2}' "/proc/$PID/status" 2>/dev/null)"
check "the postmaster is $PG_BIN/postgres" test "$(readlink "/proc/$PID/exe")" = "$PG_BIN/postgres"
check "the server certificate: CA-signed, SAN IP 127.0.0.1 and DNS localhost" bash -c '
  openssl verify -CAfile "$1" "$2" >/dev/null &&
  openssl x509 -in "$2" -noout -ext subjectAltName | grep -q "IP Address:127.0.0.1" &&
  openssl x509 -in "$2" -noout -ext subjectAltName | grep -q "DNS:localhost"' _ "$PG_CA_FILE" "$PG_DIR/server.crt"

echo "== as the superuser, through the socket"
if pq "$PG_SUPERUSER_URL" "SELECT current_user, current_setting('server_version_num')::int / 10000"; then
  check_eq "PG_SUPERUSER_URL: postgres, server major version 15" "postgres|15" "$OUT"
else
  fail "PG_SUPERUSER_URL connects (peer, through $PG_SOCKET_DIR)" "$OUT"
fi
pq "$PG_SUPERUSER_URL" "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'credkeeper'" || true
check_eq "database credkeeper is owned by role credkeeper" credkeeper "$OUT"
pq "$PG_SUPERUSER_URL" "SELECT rolsuper OR rolcreatedb OR rolcreaterole, left(rolpassword, 14) FROM pg_authid WHERE rolname = 'credkeeper'" || true
check_eq "role credkeeper: no superuser/createdb/createrole, a SCRAM verifier" "f|SCRAM-SHA-256\$" "$OUT"
pq "$PG_SUPERUSER_URL" "SELECT setting FROM pg_settings WHERE name IN ('listen_addresses', 'ssl', 'unix_socket_directories') ORDER BY name" || true
check_eq "settings: listen_addresses, ssl, unix_socket_directories" "127.0.0.1 on $PG_DIR" "$(tr '\n' ' ' <<<"$OUT" | sed 's/ $//')"
check "pg_hba.conf: no trust, TCP only hostssl + scram-sha-256" bash -c '
  ! grep -Ev "^[[:space:]]*(#|$)" "$1" | grep -qw trust &&
  ! grep -Ev "^[[:space:]]*(#|$)" "$1" | awk "\$1 ~ /^host/ && \$NF != \"reject\"" | grep -vE "^hostssl .* scram-sha-256$" | grep -q .' \
  _ "$PG_DATA/pg_hba.conf"

echo "== as credkeeper over TCP"
TLS_URL="$PG_URL&sslrootcert=$PG_CA_FILE"
SSL_SQL="SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
if OUT=$(PGPASSWORD=$PASSWORD PGPASSFILE=/nonexistent "$PG_BIN/psql" -X -At -d "$TLS_URL" -c "$SSL_SQL" 2>&1); then
  check "verify-full with PG_CA_FILE and the password: pg_stat_ssl says t ($OUT)" grep -qx 't|TLSv1\.[23]' <<<"$OUT"
else
  fail "verify-full with PG_CA_FILE and the password" "$OUT"
fi
if pq "$TLS_URL&passfile=$PG_PASSFILE" "$SSL_SQL"; then
  check "verify-full with PG_CA_FILE and passfile=PG_PASSFILE: ssl t" grep -qx 't|TLSv1\.[23]' <<<"$OUT"
else
  fail "verify-full with passfile=PG_PASSFILE" "$OUT"
fi
LOCALHOST_URL="postgres://credkeeper@localhost:$PG_PORT/credkeeper?sslmode=verify-full&sslrootcert=$PG_CA_FILE&passfile=$PG_PASSFILE"
if pq "$LOCALHOST_URL" "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"; then
  check_eq "verify-full to localhost (DNS SAN) works too" t "$OUT"
else
  fail "verify-full to localhost (DNS SAN)" "$OUT"
fi
if pq "$TLS_URL&passfile=$PG_PASSFILE" "CREATE TABLE selftest (n int); INSERT INTO selftest VALUES (42); SELECT n FROM selftest"; then
  check_eq "credkeeper creates a table in its database" 42 "$OUT"
else
  fail "credkeeper creates a table in its database" "$OUT"
fi
refused "a wrong password is refused" "password authentication failed" "$TLS_URL" wrong-password
refused "no password is refused (no trust)" "no password supplied|password authentication failed" "$TLS_URL"
refused "no TLS (sslmode=disable) is refused" "no encryption|pg_hba.conf rejects" \
  "postgres://credkeeper@127.0.0.1:$PG_PORT/credkeeper?sslmode=disable" "$PASSWORD"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$STATE/other-ca.key" \
  -subj "/CN=some other CA" -days 1 -out "$STATE/other-ca.pem" >/dev/null 2>&1
refused "verify-full with another CA is refused" "certificate verify failed" \
  "$PG_URL&sslrootcert=$STATE/other-ca.pem" "$PASSWORD"
refused "the superuser over TCP (TLS) is refused" "pg_hba.conf rejects|no pg_hba.conf entry" \
  "postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=verify-full&sslrootcert=$PG_CA_FILE" "$PASSWORD"

echo "== listeners"
listeners=$(ss -Hltnp 2>/dev/null | grep -E "pid=$PID," | awk '{print $4}' | sort -u | tr '\n' ' ')
check_eq "TCP: only 127.0.0.1:$PG_PORT" "127.0.0.1:$PG_PORT " "$listeners"
check "unix socket in the private directory ($PG_DIR/.s.PGSQL.$PG_PORT), none in /var/run/postgresql" \
  bash -c 'test -S "$1" && ! test -S "/var/run/postgresql/.s.PGSQL.$2"' _ "$PG_DIR/.s.PGSQL.$PG_PORT" "$PG_PORT"
# Only this one's port is known here: every address the server would answer on besides the
# loopback one refuses at the TCP level.
other_ips=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9.]+$' | grep -v '^127\.' || true)
for ip in $other_ips; do
  check "not reachable on $ip:$PG_PORT" bash -c '! "$1/pg_isready" -q -h "$2" -p "$3" -t 2' _ "$PG_BIN" "$ip" "$PG_PORT"
done

echo "== a second start in the same STATE"
if OUT=$("$TESTBED_DIR/start-postgres.sh" "$STATE" 2>&1); then
  fail "start-postgres.sh refuses while the server runs" "it started: $OUT"
else
  check "start-postgres.sh refuses while the server runs: $(tail -n 1 <<<"$OUT" | cut -c1-120)" \
    grep -q 'already running' <<<"$OUT"
fi
check_eq "... and the server is the same one, still up" "$PID" "$(pg_pid)"
pq "$TLS_URL&passfile=$PG_PASSFILE" "SELECT n FROM selftest" || true
check_eq "... with its data" 42 "$OUT"

echo "== pg-newdb.sh"
t0=$(now_ms)
if OUT=$("$TESTBED_DIR/pg-newdb.sh" "$STATE" selftest_db 2>&1); then
  check_eq "pg-newdb.sh STATE selftest_db: prints nothing ($(( $(now_ms) - t0 )) ms)" "" "$OUT"
else
  fail "pg-newdb.sh STATE selftest_db" "$OUT"
fi
NEWDB_URL="postgres://credkeeper@127.0.0.1:$PG_PORT/selftest_db?sslmode=verify-full&sslrootcert=$PG_CA_FILE&passfile=$PG_PASSFILE"
if pq "$NEWDB_URL" "CREATE TABLE t (x text); SELECT current_database(), pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"; then
  check_eq "credkeeper connects to it (TLS) and creates a table; the owner is credkeeper" "selftest_db|credkeeper" "$OUT"
else
  fail "credkeeper connects to selftest_db" "$OUT"
fi
if OUT=$("$TESTBED_DIR/pg-newdb.sh" "$STATE" selftest_db 2>&1); then
  fail "pg-newdb.sh refuses an existing name"
else
  check "pg-newdb.sh refuses an existing name" grep -q 'already exists' <<<"$OUT"
fi
check "pg-newdb.sh refuses a name that is not [a-z_][a-z0-9_]*" bash -c '! "$1" "$2" "x; DROP DATABASE credkeeper" 2>/dev/null' \
  _ "$TESTBED_DIR/pg-newdb.sh" "$STATE"

echo "== pg-ctl.sh stop / start: the database goes away and comes back"
OLD_PORT=$PG_PORT
t0=$(now_ms)
if "$TESTBED_DIR/pg-ctl.sh" "$STATE" stop; then pass "pg-ctl.sh stop in $(( $(now_ms) - t0 )) ms"; else fail "pg-ctl.sh stop"; fi
check "the postmaster is gone" bash -c '! kill -0 "$1" 2>/dev/null || grep -q "^State:.*Z" "/proc/$1/status"' _ "$PID"
refused "while stopped, connections fail" "connection refused|could not connect" "$TLS_URL&passfile=$PG_PASSFILE"
check "pg-ctl.sh status says stopped (3)" bash -c '"$1" "$2" status 2>/dev/null; [ $? -eq 3 ]' _ "$TESTBED_DIR/pg-ctl.sh" "$STATE"
t0=$(now_ms)
if "$TESTBED_DIR/pg-ctl.sh" "$STATE" start; then pass "pg-ctl.sh start in $(( $(now_ms) - t0 )) ms"; else fail "pg-ctl.sh start"; fi
load_env "$ENV_FILE"
check_eq "same port" "$OLD_PORT" "$PG_PORT"
if pq "$TLS_URL&passfile=$PG_PASSFILE" "SELECT n FROM selftest"; then
  check_eq "the table written before the stop is read back (verify-full, same CA and password)" 42 "$OUT"
else
  fail "the table written before the stop is read back" "$OUT"
fi
pq "$NEWDB_URL" "SELECT count(*) FROM t" || true
check_eq "the database made by pg-newdb.sh is still there" 0 "$OUT"
check "pg-ctl.sh start while running: nothing to do" "$TESTBED_DIR/pg-ctl.sh" "$STATE" start
PID2=$(pg_pid)
if "$TESTBED_DIR/pg-ctl.sh" "$STATE" restart; then pass "pg-ctl.sh restart"; else fail "pg-ctl.sh restart"; fi
check "restart: a new postmaster" test "$(pg_pid)" != "$PID2"
pq "$TLS_URL&passfile=$PG_PASSFILE" "SELECT n FROM selftest" || true
check_eq "restart: data kept" 42 "$OUT"

echo "== stop-postgres.sh"
PID=$(pg_pid)
if "$TESTBED_DIR/stop-postgres.sh" "$STATE"; then pass "stop-postgres.sh"; else fail "stop-postgres.sh"; fi
check "the postmaster is gone" bash -c '! kill -0 "$1" 2>/dev/null || grep -q "^State:.*Z" "/proc/$1/status"' _ "$PID"
check "port $PG_PORT closed" bash -c "! ss -Hltn 'sport = :$PG_PORT' | grep -q ."
check "the data, the CA, the passwords and pg.env are removed" bash -c \
  '! ls -d "$1/pg" "$1/pki" "$1/pg.env" "$1/ca.pem" "$1/pg-password" "$1/pgpass" 2>/dev/null | grep -q .' _ "$STATE"
check "stop-postgres.sh again: nothing to do" "$TESTBED_DIR/stop-postgres.sh" "$STATE"

echo "== $(( $(now_ms) - T0 )) ms"
summary
