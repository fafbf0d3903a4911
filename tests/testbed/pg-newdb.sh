#!/usr/bin/env bash
# pg-newdb.sh STATE NAME - create database NAME, owned by the credkeeper role, in the server
# that start-postgres.sh started in STATE: a fresh, empty database per test in a few tens of
# milliseconds instead of a fresh cluster. Prints nothing on success; fails (psql's error on
# stderr) when NAME exists or is not a plain lower-case identifier ([a-z_][a-z0-9_]*, at most
# 63 bytes). The role connects to it as to `credkeeper`: PG_URL with the path /NAME.
set -euo pipefail
# No python here: skip lib.sh's interpreter look-up (0.1 s through a pyenv shim).
TESTBED_PYTHON=${TESTBED_PYTHON:-python3}
. "$(dirname "$0")/lib.sh"
. "$TESTBED_DIR/pg-lib.sh"

[ $# -eq 2 ] || die "usage: $0 STATE NAME"
[ -d "$1" ] || die "no state directory $1"
NAME=$2
[[ $NAME =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "database name '$NAME': use [a-z_][a-z0-9_]*, at most 63 bytes"
pg_load_env "$(cd "$1" && pwd)"
TB_STEP="CREATE DATABASE $NAME"
psql_super -c "CREATE DATABASE $NAME OWNER $PG_APP_ROLE" >/dev/null \
  || die "could not create database $NAME in the server of $STATE (127.0.0.1:$PG_PORT)"
