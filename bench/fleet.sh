#!/usr/bin/env bash
# bench/fleet.sh - a broker fleet on PostgreSQL against one broker on SQLite, side by side in
# one run (issue 16, "Speed"). Everything runs on this machine, on loopback:
#
#   PostgreSQL 15  tests/testbed/start-postgres.sh (TLS, scram-sha-256, sslmode=verify-full),
#                  then fsync, full_page_writes and synchronous_commit set back ON (the testbed
#                  turns fsync off for tests; the SQLite broker fsyncs, so this one does too).
#                  One database per measurement (tests/testbed/pg-newdb.sh).
#   test OP        tests/testbed/start-op.sh with OP_RT_ROTATE=never OP_AT_TTL=3600; one real
#                  device-flow login of the confidential robot-client, approved headlessly as
#                  alice (tests/testbed/op-browser.sh), gives one real refresh token.
#
# (1) vends: the requests bench/broker.sh makes, POST /api/v1/token with HTTP Basic
#     bench:<secret>, body {"scopes":"read:/data","minsecs":60} (cached: from the broker's
#     cache after the first) or "minsecs":100000 (signed: never cached, each one signed anew,
#     ES256), wrk for FLEET_DURATION s, 2 threads and 64 connections in all, against
#       sqlite  1 broker on SQLite                               wrk -t2 -c64
#       pg×2    2 replicas on one PostgreSQL database            two wrk -t1 -c32 at once, one
#               per replica (same total threads and connections); requests/s summed, p50
#               and p99 the worse of the two
#       pg×1    1 replica on PostgreSQL (replica A; B idle)      wrk -t2 -c64
#     FLEET_ROUNDS rounds; in each, cached then signed, the three setups in an order that is
#     reversed every other round. Checked per run: every answer 2xx, and the brokers'
#     credkeeper_tokens_vended_total{source=signed|cached} of the other kind did not move.
# (2) refresh pass over FLEET_REFRESH_CREDS credentials of provider `op` (the test OP, all
#     holding the one real refresh token; rotation off, so every refresh is a real
#     refresh_token grant at the OP with the same token). Seeded with
#     crates/store/examples/seed_store (SqliteStore::put: sealed rows, credkeeper's own
#     code), then for PostgreSQL `credkeeper store migrate --to` into a fresh database.
#     [refresher] interval = 1000000 (one pass: the first, at start), concurrency 16.
#     sqlite (reference), pg×1 and pg×2 (both replicas started at once); FLEET_ROUNDS rounds,
#     order reversed every other round. Time = from starting the broker(s) to the OP's log
#     line of the N-th refresh grant; the OP's log must count exactly N refresh grants and no
#     grant error, the brokers' credkeeper_refreshes_total{outcome="ok"} must sum to N.
# (3) memory: FLEET_MEM_CREDS credentials seeded the same way, migrated into PostgreSQL, two
#     replicas; VmRSS/VmHWM of each replica as soon as it answers /healthz (its first
#     refresher pass starts then), after that pass has refreshed them all at the OP (the same
#     real refresh token: these refreshes succeed), and after FLEET_DURATION s of cached and
#     FLEET_DURATION s of signed vends split across both replicas as in (1).
# (4) vends during a refresher pass: wrk -t1 -c8, 5 s of cached vends at one broker (SQLite,
#     then one replica on PostgreSQL) started as soon as it is ready, i.e. during its first
#     pass over the FLEET_REFRESH_CREDS credentials, and 5 s again after that pass. Cached
#     vends never read the store; what slows them is the pass sharing the broker's threads.
# Every row also gives "other CPU": what the machine spent on anything but the brokers,
# PostgreSQL, the OP and wrk while it ran (/proc/stat minus their CPU times; wrk's from
# /usr/bin/time), i.e. other users' load on a shared machine (plus this script's polling).
# Summaries are medians over the rounds.
#
# No arguments, no prompts. Installs wrk, curl and time (apt) when missing, builds the release
# `credkeeper` and the `seed_store` example (FLEET_NO_BUILD=1: use them as they are;
# CREDKEEPER=path: another credkeeper binary). Everything lives in one mktemp -d directory,
# stopped (brokers, OP, PostgreSQL) and removed on exit, also on failure (FLEET_KEEP=1 keeps
# it). Knobs: FLEET_DURATION (10) FLEET_ROUNDS (3) FLEET_REFRESH_CREDS (10000)
# FLEET_MEM_CREDS (100000) FLEET_PASS_TIMEOUT (900 s per refresher pass).
# Output: markdown on stdout, progress on stderr. Exit status: 0 measured and every check
# held; 3 measured, but a check or the < 100 MB goal failed (the tables say which); 1 a step
# failed (named on stderr).
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
TESTBED=$ROOT/tests/testbed
# shellcheck source=../tests/testbed/lib.sh
. "$TESTBED/lib.sh"
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

DURATION=${FLEET_DURATION:-10}
ROUNDS=${FLEET_ROUNDS:-3}
REFRESH_CREDS=${FLEET_REFRESH_CREDS:-10000}
MEM_CREDS=${FLEET_MEM_CREDS:-100000}
PASS_TIMEOUT=${FLEET_PASS_TIMEOUT:-900}
GOAL_RSS_MB=100
for v in DURATION ROUNDS REFRESH_CREDS MEM_CREDS PASS_TIMEOUT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { log "error: FLEET_$v must be a positive number"; exit 1; }
done

# shellcheck disable=SC2034 # TB_STEP: named by lib.sh's ERR trap
step() { TB_STEP=$1; log "== $1 =="; }
die() { log "error${TB_STEP:+ in step \"$TB_STEP\"}: $*"; exit 1; }

START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
WRK_VERSION=$( (wrk -v 2>&1 || true) | head -n 1 | cut -d' ' -f1-2)
T_START=$(now_ms)

# --- tools and build -------------------------------------------------------------------------
step "tools and build"
apt_install wrk curl time
for t in wrk curl /usr/bin/time; do command -v "$t" >/dev/null || die "$t not found after installing"; done
if [ "${FLEET_NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p credkeeper"
  (cd "$ROOT" && cargo build --release -p credkeeper >&2) || die "cargo build --release -p credkeeper failed"
  log "cargo build --release --example seed_store -p credkeeper-store"
  (cd "$ROOT" && cargo build --release --example seed_store -p credkeeper-store >&2) \
    || die "cargo build of the seed_store example failed"
fi
CK=${CREDKEEPER:-$ROOT/target/release/credkeeper}
SEED=$ROOT/target/release/examples/seed_store
[ -x "$CK" ] || die "$CK missing (build it, or unset FLEET_NO_BUILD)"
[ -x "$SEED" ] || die "$SEED missing (build it, or unset FLEET_NO_BUILD)"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- work directory and cleanup --------------------------------------------------------------
step "work directory"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/credkeeper-fleet-bench.XXXXXX")
BROKER_PIDS=()
BG_PIDS=()
OP_STATE=
PG_STATE=
cleanup() {
  local rc=$? pid
  for pid in "${BG_PIDS[@]}"; do
    # /usr/bin/time and the wrk it runs
    if pid_alive "$pid" && pid_matches "$pid" wrk; then
      pkill -TERM -P "$pid" 2>/dev/null || true
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${BROKER_PIDS[@]}"; do stop_pid "$pid" "$CK" >/dev/null 2>&1 || true; done
  if [ -n "$OP_STATE" ]; then "$TESTBED/stop-op.sh" "$OP_STATE" >/dev/null 2>&1 || log "stop-op.sh failed"; fi
  if [ -n "$PG_STATE" ]; then "$TESTBED/stop-postgres.sh" "$PG_STATE" >/dev/null 2>&1 || log "stop-postgres.sh failed"; fi
  if [ "${FLEET_KEEP:-0}" = 1 ]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
CLK_TCK=$(getconf CLK_TCK)

# --- helpers ---------------------------------------------------------------------------------
declare -A BPID BURL
# launch NAME CONFIG STATE [global flags...]: start `credkeeper serve` on a free port in the
# background (BPID[NAME]); its stderr is $WORK/NAME.log. Does not wait.
launch() {
  local name=$1 config=$2 state=$3
  shift 3
  mkdir -p "$state"
  "$CK" --insecure-loopback "$@" --config "$config" --state-dir "$state" \
    serve --listen 127.0.0.1:0 >"$WORK/$name.out" 2>"$WORK/$name.log" </dev/null &
  BPID[$name]=$!
  BROKER_PIDS+=("$!")
}
# ready NAME: wait for NAME's "listening on" line, /healthz and /readyz; sets BURL[NAME].
ready() {
  local name=$1 i url=
  for ((i = 0; i < 600; i++)); do
    url=$(sed -n 's/^credkeeper broker listening on \([^ ]*\).*/\1/p' "$WORK/$name.log" | head -n 1)
    [ -n "$url" ] && break
    pid_alive "${BPID[$name]}" || die "broker $name exited at start: $(tail -n 20 "$WORK/$name.log")"
    sleep 0.05
  done
  [ -n "$url" ] || die "broker $name did not say where it listens within 30 s: $(tail -n 20 "$WORK/$name.log")"
  wait_for_http "$url/healthz" 30 "${BPID[$name]}" || die "broker $name: /healthz does not answer"
  wait_for_http "$url/readyz" 30 "${BPID[$name]}" || die "broker $name: /readyz does not answer 200"
  BURL[$name]=$url
  log "broker $name: $url (pid ${BPID[$name]})"
}
# halt NAME: SIGTERM, 10 s, then KILL (stop_pid); the broker must have been alive until then.
halt() {
  local name=$1
  pid_alive "${BPID[$name]}" || die "broker $name (pid ${BPID[$name]}) died: $(tail -n 20 "$WORK/$name.log")"
  stop_pid "${BPID[$name]}" "$CK" || die "broker $name (pid ${BPID[$name]}) did not stop"
  wait "${BPID[$name]}" 2>/dev/null || true
}
# pg_db NAME: create database NAME; prints its URL.
pg_db() {
  "$TESTBED/pg-newdb.sh" "$PG_STATE" "$1" >&2 || die "pg-newdb.sh $1 failed"
  sed "s#:$PG_PORT/credkeeper?#:$PG_PORT/$1?#" <<<"$PG_URL"
}
# store_pg URL KEY_FILE: the [store] section of a replica.
store_pg() {
  cat <<EOF

[store]
url = "$1"
password_file = "$PG_PASSWORD_FILE"
ca_file = "$PG_CA_FILE"
key_file = "$2"
EOF
}
# migrate SEED_DIR URL: credkeeper store migrate of a seeded SQLite store; sets MIGRATE_MS.
migrate() {
  local t0
  t0=$(now_ms)
  "$CK" --state-dir "$1" store migrate --to "$2" --password-file "$PG_PASSWORD_FILE" \
    --ca-file "$PG_CA_FILE" >"$WORK/migrate.out" 2>&1 \
    || die "credkeeper store migrate --to ${2%%\?*} failed: $(cat "$WORK/migrate.out")"
  MIGRATE_MS=$(( $(now_ms) - t0 ))
  log "migrated $1 into ${2%%\?*} in $MIGRATE_MS ms"
}
# pg_ticks: CPU ticks of the PostgreSQL server's processes (postmaster and its children that
# are alive now; a backend that exited in between is not counted).
pg_ticks() {
  local sum=0 p t
  for p in "$PG_PID" $(pgrep -P "$PG_PID" || true); do
    t=$(cpu_ticks "$p" 2>/dev/null) || continue
    sum=$((sum + t))
  done
  echo "$sum"
}
# machine_busy: CPU ticks of the whole machine that were not idle or waiting for I/O.
machine_busy() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
# other_pct BUSY_TICKS MINE_TICKS MS: the CPU the machine spent on processes other than this
# benchmark's (brokers, PostgreSQL, OP, wrk) in MS, in % of one core: other load disturbing it.
other_pct() { awk -v b="$1" -v m="$2" -v ms="$3" -v hz="$CLK_TCK" 'BEGIN {o = (b - m) / hz / (ms / 1000) * 100; if (o < 0) o = 0; printf "%.0f%%", o}'; }
# wrk_ticks FILE: user + system CPU ticks of a wrk run from /usr/bin/time's FILE.
wrk_ticks() { awk -v hz="$CLK_TCK" 'NF == 2 {printf "%.0f", ($1 + $2) * hz}' "$1"; }
ticks_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t / hz}'; }
# op_mark: from here on, op_count and op_grant_ms read only what the OP logs after now.
op_mark() { OP_OFF=$(stat -c %s "$OP_LOG"); }
op_since() { tail -c +$((OP_OFF + 1)) "$OP_LOG"; }
# op_count PATTERN: lines of the OP's log since op_mark containing PATTERN.
op_count() { op_since | grep -cF -- "$1" || true; }
GRANT_RT='grant.success client=robot-client grant_type=refresh_token'
# op_grant_ms K: the time (epoch ms) of the OP's K-th refresh grant since op_mark.
op_grant_ms() {
  local ts
  ts=$(op_since | grep -F -- "$GRANT_RT" | sed -n "$1{s/ .*//p;q}")
  [ -n "$ts" ] || die "the OP's log has no refresh grant number $1"
  date -d "$ts" +%s%3N
}
div() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
# median VALUES...: the median ("n/a" values left out); with one disturbed round of three it
# is still an undisturbed one.
median() {
  printf '%s\n' "$@" | awk '$1 != "n/a"' | sort -g | awk '{v[NR] = $1} END {
    if (!NR) {print "n/a"; exit}
    if (NR % 2) printf "%.4f", v[(NR + 1) / 2]; else printf "%.4f", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
CHECKS_OK=1
FAILED_CHECKS=()
check_failed() { CHECKS_OK=0; FAILED_CHECKS+=("$1"); log "CHECK FAILED: $1"; }

# --- PostgreSQL ------------------------------------------------------------------------------
step "PostgreSQL 15 (tests/testbed/start-postgres.sh)"
PG_STATE=$WORK/pg
mkdir -p "$PG_STATE"
"$TESTBED/start-postgres.sh" "$PG_STATE" >/dev/null || die "start-postgres.sh failed"
PG_ENV=$PG_STATE/pg.env
for k in PG_URL PG_PASSWORD_FILE PG_CA_FILE PG_BIN PG_PORT PG_SUPERUSER_URL PG_SERVER_VERSION PG_DATA; do
  printf -v "$k" '%s' "$(env_read "$PG_ENV" "$k")"
  [ -n "${!k}" ] || die "no $k in $PG_ENV"
done
PG_PID=$(head -n 1 "$PG_DATA/postmaster.pid")
pid_alive "$PG_PID" || die "no postmaster (pid '$PG_PID')"

step "PostgreSQL: fsync, full_page_writes, synchronous_commit on"
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$PG_SUPERUSER_URL" >/dev/null <<'EOF' || die "ALTER SYSTEM failed"
ALTER SYSTEM SET fsync = on;
ALTER SYSTEM SET full_page_writes = on;
ALTER SYSTEM SET synchronous_commit = on;
SELECT pg_reload_conf();
EOF
sleep 1
PG_SETTINGS=$("$PG_BIN/psql" -X -At -d "$PG_SUPERUSER_URL" -c \
  "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync','full_page_writes','synchronous_commit','shared_buffers','max_connections')") \
  || die "reading pg_settings failed"
[[ $PG_SETTINGS == *fsync=on* && $PG_SETTINGS == *full_page_writes=on* ]] \
  || die "fsync/full_page_writes are not on after the reload: $PG_SETTINGS"
log "PostgreSQL $PG_SERVER_VERSION on port $PG_PORT: $PG_SETTINGS"

# --- the test OP and one real refresh token --------------------------------------------------
step "test OpenID Provider (tests/testbed/start-op.sh)"
OP_STATE=$WORK/op
OP_RT_ROTATE=never OP_AT_TTL=3600 "$TESTBED/start-op.sh" "$OP_STATE" >/dev/null || die "start-op.sh failed"
OP_ENV=$OP_STATE/op.env
OP_ISSUER=$(env_read "$OP_ENV" OP_ISSUER)
OP_PID=$(env_read "$OP_ENV" OP_PID)
OP_LOG=$OP_STATE/op/op.log
ROBOT_ID=$(env_read "$OP_ENV" OP_ROBOT_CLIENT_ID)
ROBOT_SECRET=$(env_read "$OP_ENV" OP_ROBOT_CLIENT_SECRET)
[ -n "$OP_ISSUER" ] && [ -n "$ROBOT_ID" ] && [ -n "$ROBOT_SECRET" ] || die "op.env lacks the issuer or robot-client"

step "one device-flow login at the OP (robot-client, approved as alice)"
t0=$(now_ms)
dev=$(curl -fsS -u "$ROBOT_ID:$ROBOT_SECRET" --data-urlencode 'scope=openid offline_access read' \
  "$(env_read "$OP_ENV" OP_DEVICE_AUTHORIZATION_ENDPOINT)") || die "device authorization request failed"
"$TESTBED/op-browser.sh" device "$OP_ISSUER" "$(json_get user_code <<<"$dev")" alice >/dev/null \
  || die "op-browser.sh could not approve the device code"
tok=$(curl -sS -u "$ROBOT_ID:$ROBOT_SECRET" \
  --data-urlencode grant_type=urn:ietf:params:oauth:grant-type:device_code \
  --data-urlencode "device_code=$(json_get device_code <<<"$dev")" \
  "$(env_read "$OP_ENV" OP_TOKEN_ENDPOINT)") || die "device code token request failed"
LOGIN_MS=$(( $(now_ms) - t0 ))
( umask 077; json_get refresh_token <<<"$tok" >"$WORK/op.rt" ) || die "no refresh token from the OP: $tok"
( umask 077; printf '%s' "$ROBOT_SECRET" >"$WORK/op-client.secret" )
log "one real login (device flow, headless approval) took $LOGIN_MS ms"

# --- (1) vends ---------------------------------------------------------------------------------
step "(1) vends: configuration and robot secrets"
vend_common() {
  cat <<'EOF'
[issuer]
lifetime = 600
audience = "https://storage.example"

[[robot]]
name = "bench"
auth = { secret = true }
providers = ["local"]
scopes = ["read:/data"]
audiences = ["*"]
EOF
}
vend_common >"$WORK/vend-sqlite.toml"
VEND_URL=$(pg_db vend)
{ vend_common; store_pg "$VEND_URL" "$WORK/vend-store.key"; } >"$WORK/vend-pg.toml"
"$CK" --config "$WORK/vend-sqlite.toml" --state-dir "$WORK/vend-sqlite" robot-secret bench \
  -o "$WORK/vend-sqlite.secret" >/dev/null 2>"$WORK/robot-secret.err" \
  || die "robot-secret (SQLite) failed: $(cat "$WORK/robot-secret.err")"
"$CK" --config "$WORK/vend-pg.toml" --state-dir "$WORK/vend-pg-a" robot-secret bench \
  -o "$WORK/vend-pg.secret" >/dev/null 2>"$WORK/robot-secret.err" \
  || die "robot-secret (PostgreSQL) failed: $(cat "$WORK/robot-secret.err")"
AUTH_SQLITE=$(printf 'bench:%s' "$(cat "$WORK/vend-sqlite.secret")" | base64 -w0)
AUTH_PG=$(printf 'bench:%s' "$(cat "$WORK/vend-pg.secret")" | base64 -w0)

step "(1) vends: start the SQLite broker and replicas A and B"
launch s "$WORK/vend-sqlite.toml" "$WORK/vend-sqlite"
launch a "$WORK/vend-pg.toml" "$WORK/vend-pg-a"
launch b "$WORK/vend-pg.toml" "$WORK/vend-pg-b"
for n in s a b; do ready "$n"; done
declare -A AUTH=([s]=$AUTH_SQLITE [a]=$AUTH_PG [b]=$AUTH_PG)
declare -A IDLE_RSS
BODY_CACHED='{"scopes":"read:/data","minsecs":60}'
BODY_SIGNED='{"scopes":"read:/data","minsecs":100000}'
sleep 1
for n in s a b; do
  IDLE_RSS[$n]=$(mem_kb "${BPID[$n]}" VmRSS)
  code=$(curl -s -o "$WORK/first-$n.json" -w '%{http_code}' -H "Authorization: Basic ${AUTH[$n]}" \
    -H 'Content-Type: application/json' --data-binary "$BODY_CACHED" "${BURL[$n]}/api/v1/token")
  [ "$code" = 200 ] || die "first token request at $n: HTTP $code: $(cat "$WORK/first-$n.json")"
done
# The replicas sign with one key: the same JWKS at A and B.
[ "$(curl -fsS "${BURL[a]}/jwks")" = "$(curl -fsS "${BURL[b]}/jwks")" ] || die "replicas A and B publish different JWKS"

cat >"$WORK/vend.lua" <<'EOF'
-- POST the robot token API (as bench/broker.sh); WRK_AUTH = base64(robot:secret), WRK_BODY.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic " .. os.getenv("WRK_AUTH")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0 end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    "BENCH ok=%d non2xx=%d rps=%.1f p50_us=%d p99_us=%d max_us=%d sockerr=%d timeouts=%d\n",
    o, b, summary.requests / (summary.duration / 1e6), latency:percentile(50),
    latency:percentile(99), latency.max, e.connect + e.read + e.write, e.timeout))
end
EOF

SERIES_SIGNED='credkeeper_tokens_vended_total{robot="bench",provider="local",source="signed"}'
SERIES_CACHED='credkeeper_tokens_vended_total{robot="bench",provider="local",source="cached"}'
declare -A V_RPS V_P99
VEND_ROWS=()
# wrk_start NAME BODY THREADS CONNS OUT [SECONDS]: one wrk at broker NAME in the background
# (BG_PIDS), under /usr/bin/time (its CPU time in OUT.time).
wrk_start() {
  WRK_AUTH=${AUTH[$1]} WRK_BODY=$2 /usr/bin/time -f '%U %S' -o "$5.time" \
    wrk -t"$3" -c"$4" -d"${6:-$DURATION}s" --timeout 5s --latency \
    -s "$WORK/vend.lua" "${BURL[$1]}/api/v1/token" >"$5" 2>&1 &
  WRK_PID=$!
  BG_PIDS+=("$WRK_PID")
}
# load SETUP MODE ROUND [TAG]: one measurement of SETUP (sqlite, pg2, pg1) with MODE (cached,
# signed); fills V_RPS/V_P99/V_P50[SETUP-MODE-ROUND] and a VEND_ROWS row.
load() {
  local setup=$1 mode=$2 round=$3 body names threads conns n i line ok=0 bad=0 err=0 rps=0 p99=0 p50=0
  local pids=() other cpu=0 pg0 pg1 check=ok per=() busy0 mine0=0 mine1=0 w0 w1
  declare -A bt0 o0
  case $mode in cached) body=$BODY_CACHED ;; signed) body=$BODY_SIGNED ;; esac
  case $setup in
    sqlite) names=(s) threads=2 conns=64 ;;
    pg1) names=(a) threads=2 conns=64 ;;
    pg2) names=(a b) threads=1 conns=32 ;;
  esac
  # the series of the other kind must not move during this run
  if [ "$mode" = cached ]; then other=$SERIES_SIGNED; else other=$SERIES_CACHED; fi
  for n in "${names[@]}"; do
    o0[$n]=$(metric "${BURL[$n]}" "$other")
    bt0[$n]=$(cpu_ticks "${BPID[$n]}")
  done
  pg0=$(pg_ticks)
  for n in s a b; do mine0=$((mine0 + $(cpu_ticks "${BPID[$n]}"))); done
  mine0=$((mine0 + pg0 + $(cpu_ticks "$OP_PID")))
  busy0=$(machine_busy)
  w0=$(now_ms)
  log "round $round: $setup $mode: ${#names[@]} × wrk -t$threads -c$conns -d${DURATION}s"
  for n in "${names[@]}"; do
    wrk_start "$n" "$body" "$threads" "$conns" "$WORK/wrk-$setup-$mode-$round-$n.txt"
    pids+=("$WRK_PID")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || die "wrk at ${names[$i]} failed: $(cat "$WORK/wrk-$setup-$mode-$round-${names[$i]}.txt")"
  done
  pg1=$(pg_ticks)
  w1=$(now_ms)
  for n in s a b; do mine1=$((mine1 + $(cpu_ticks "${BPID[$n]}"))); done
  mine1=$((mine1 + pg1 + $(cpu_ticks "$OP_PID")))
  for n in "${names[@]}"; do mine1=$((mine1 + $(wrk_ticks "$WORK/wrk-$setup-$mode-$round-$n.txt.time"))); done
  local others
  others=$(other_pct $(( $(machine_busy) - busy0 )) $((mine1 - mine0)) $((w1 - w0)))
  for n in "${names[@]}"; do
    cpu=$((cpu + $(cpu_ticks "${BPID[$n]}") - bt0[$n]))
    line=$(grep '^BENCH ' "$WORK/wrk-$setup-$mode-$round-$n.txt") \
      || die "no BENCH line from wrk at $n: $(cat "$WORK/wrk-$setup-$mode-$round-$n.txt")"
    ok=$((ok + $(field "$line" ok)))
    bad=$((bad + $(field "$line" non2xx)))
    err=$((err + $(field "$line" sockerr) + $(field "$line" timeouts)))
    rps=$(awk -v a="$rps" -v b="$(field "$line" rps)" 'BEGIN {print a + b}')
    p99=$(awk -v a="$p99" -v b="$(field "$line" p99_us)" 'BEGIN {print (b > a) ? b : a}')
    p50=$(awk -v a="$p50" -v b="$(field "$line" p50_us)" 'BEGIN {print (b > a) ? b : a}')
    per+=("$n: $(printf '%.0f' "$(field "$line" rps)")/s p99 $(us_to_ms "$(field "$line" p99_us)") ms")
  done
  sleep 0.3
  for n in "${names[@]}"; do
    [ "$(metric "${BURL[$n]}" "$other")" = "${o0[$n]}" ] || check="other-kind vends at $n"
  done
  if [ "$bad" != 0 ] || [ "$err" != 0 ]; then check="$bad non-2xx, $err socket errors/timeouts"; fi
  [ "$check" = ok ] || check_failed "vends $setup $mode round $round: $check"
  V_RPS[$setup-$mode-$round]=$rps
  V_P99[$setup-$mode-$round]=$p99
  local detail=
  [ "${#names[@]}" -gt 1 ] && detail=" ($(IFS=';'; echo "${per[*]}" | sed 's/;/; /g'))"
  VEND_ROWS+=("| $round | $mode | $setup | $(printf '%.0f' "$rps")$detail | $(us_to_ms "$p50") | $(us_to_ms "$p99") | $ok | $bad | $err | $(awk -v t="$cpu" -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN {printf "%.0f%%", 100 * t / hz / d}') | $(awk -v t="$((pg1 - pg0))" -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN {printf "%.0f%%", 100 * t / hz / d}') | $others | $check |")
}

step "(1) vends: wrk runs"
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2 == 1)); then order=(sqlite pg2 pg1); else order=(pg1 pg2 sqlite); fi
  for mode in cached signed; do
    for setup in "${order[@]}"; do load "$setup" "$mode" "$r"; done
  done
done
declare -A LOADED_RSS LOADED_HWM
for n in s a b; do
  LOADED_RSS[$n]=$(mem_kb "${BPID[$n]}" VmRSS)
  LOADED_HWM[$n]=$(mem_kb "${BPID[$n]}" VmHWM)
done
AUDIT_MB=$(du -cm "$WORK"/vend-sqlite/audit.log "$WORK"/vend-pg-?/audit.log | tail -n 1 | cut -f1)
for n in s a b; do halt "$n"; done

# --- (2) refresh pass ------------------------------------------------------------------------
refresh_common() {
  cat <<EOF
[issuer]
lifetime = 600
audience = "https://storage.example"

[refresher]
interval = 1000000
concurrency = 16

[[provider]]
name = "op"
issuer = "$OP_ISSUER"
client_id = "$ROBOT_ID"
client_secret_file = "$WORK/op-client.secret"

[[robot]]
name = "bench"
auth = { secret = true }
providers = ["local", "op"]
scopes = ["read:/data"]
audiences = ["*"]
EOF
}

step "(2) refresh: seed $REFRESH_CREDS credentials (seed_store, SQLite)"
t0=$(now_ms)
"$SEED" "$WORK/seed-refresh" "$REFRESH_CREDS" "$OP_ISSUER" "$ROBOT_ID" "$WORK/op.rt" 2>"$WORK/seed.err" \
  || die "seed_store failed: $(cat "$WORK/seed.err")"
SEED_REFRESH_MS=$(( $(now_ms) - t0 ))

declare -A R_WALL
REFRESH_ROWS=()
MIGRATE_REFRESH=()
# pass_wait N NAMES...: wait until the OP has logged N refresh grants since op_mark and each broker
# named has logged its pass (a replica that refreshed nothing logs no pass line: then 5 s
# after the N-th grant are enough), or a broker died, or PASS_TIMEOUT. N = 0: the pass
# lines alone.
pass_wait() {
  local want=$1 n done_all since='' now g
  shift
  local deadline=$(( $(now_ms) + PASS_TIMEOUT * 1000 ))
  while :; do
    done_all=1
    for n in "$@"; do
      pid_alive "${BPID[$n]}" || die "broker $n exited during its refresher pass: $(tail -n 20 "$WORK/$n.log")"
      grep -q 'refresher pass over' "$WORK/$n.log" || done_all=0
    done
    g=$(op_count "$GRANT_RT")
    now=$(now_ms)
    if [ "$want" -gt 0 ] && [ "$g" -ge "$want" ]; then
      [ -n "$since" ] || since=$now
      [ "$done_all" = 1 ] && return 0
      [ $((now - since)) -ge 5000 ] && return 0
    elif [ "$done_all" = 1 ]; then
      return 0 # every pass ended short of N: reported below
    fi
    [ "$now" -ge "$deadline" ] && die "refresher pass not finished after $PASS_TIMEOUT s ($g of $want refresh grants at the OP)"
    sleep 0.5
  done
}
# pass_field NAME: the pass line of broker NAME ("-" when none).
pass_line() { grep -o 'refresher pass over.*' "$WORK/$1.log" | head -n 1 || echo "-"; }

# refresh_run SETUP ROUND: one refresher pass over the seeded credentials.
refresh_run() {
  local setup=$1 round=$2 names cfg state n url t0 t_end first o0 pg0 ok=0 fail=0 nl=0
  local cpu=0 per=() g e check=ok busy0 t1
  declare -A c0
  case $setup in
    sqlite) names=(rs) ;;
    pg1) names=(ra) ;;
    pg2) names=(ra rb) ;;
  esac
  if [ "$setup" = sqlite ]; then
    state=$WORK/refresh-sqlite-$round
    cp -a "$WORK/seed-refresh" "$state"
    cfg=$WORK/refresh-sqlite.toml
    refresh_common >"$cfg"
  else
    url=$(pg_db "refresh_${setup}_$round")
    migrate "$WORK/seed-refresh" "$url"
    MIGRATE_REFRESH+=("$MIGRATE_MS")
    cfg=$WORK/refresh-$setup-$round.toml
    { refresh_common; store_pg "$url" "$WORK/seed-refresh/store.key"; } >"$cfg"
  fi
  op_mark
  o0=$(cpu_ticks "$OP_PID")
  pg0=$(pg_ticks)
  log "round $round: $setup: refresher pass over $REFRESH_CREDS credentials"
  busy0=$(machine_busy)
  t0=$(now_ms)
  for n in "${names[@]}"; do
    if [ "$setup" = sqlite ]; then launch "$n" "$cfg" "$state" -v; else launch "$n" "$cfg" "$WORK/refresh-$setup-$round-$n" -v; fi
  done
  for n in "${names[@]}"; do ready "$n"; done
  pass_wait "$REFRESH_CREDS" "${names[@]}"
  g=$(op_count "$GRANT_RT")
  e=$(op_count "grant.error")
  if [ "$g" -ge 1 ]; then
    first=$(op_grant_ms 1)
    t_end=$(op_grant_ms "$g")
  else
    first=$t0 t_end=$t0
  fi
  for n in "${names[@]}"; do
    c0[$n]=$(metric "${BURL[$n]}" 'credkeeper_refreshes_total{provider="op",outcome="ok"}')
    ok=$((ok + c0[$n]))
    fail=$((fail + $(metric "${BURL[$n]}" 'credkeeper_refreshes_total{provider="op",outcome="failed"}')))
    nl=$((nl + $(metric "${BURL[$n]}" 'credkeeper_refreshes_total{provider="op",outcome="needs_login"}')))
    cpu=$((cpu + $(cpu_ticks "${BPID[$n]}")))
    per+=("${n#r}: ${c0[$n]} ok, \`$(pass_line "$n")\`")
  done
  local opcpu pgcpu others optk pgtk
  optk=$(( $(cpu_ticks "$OP_PID") - o0 ))
  pgtk=$(( $(pg_ticks) - pg0 ))
  others=$(other_pct $(( $(machine_busy) - busy0 )) $((cpu + optk + pgtk)) $(( $(now_ms) - t0 )))
  opcpu=$(ticks_s "$optk")
  pgcpu=$(ticks_s "$pgtk")
  for n in "${names[@]}"; do halt "$n"; done
  [ "$g" = "$REFRESH_CREDS" ] || check="the OP logged $g refresh grants, not $REFRESH_CREDS"
  [ "$ok" = "$REFRESH_CREDS" ] || check="refreshes_total{ok} = $ok, not $REFRESH_CREDS"
  [ "$e" = 0 ] || check="$e grant errors at the OP"
  [ "$fail$nl" = 00 ] || check="$fail failed, $nl need login"
  [ "$check" = ok ] || check_failed "refresh $setup round $round: $check"
  R_WALL[$setup-$round]=$((t_end - t0))
  REFRESH_ROWS+=("| $round | $setup | $((t_end - t0)) | $((t_end - first)) | $(awk -v n="$REFRESH_CREDS" -v ms="$((t_end - t0))" 'BEGIN {printf "%.0f", n * 1000 / ms}') | $g | $e | $ok | $(ticks_s "$cpu") | $opcpu | $pgcpu | $others | $check |")
  REFRESH_DETAIL+=("- round $round, $setup: $(IFS=';'; echo "${per[*]}" | sed 's/;/; /g')")
}
REFRESH_DETAIL=()
step "(2) refresh: passes"
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2 == 1)); then order=(sqlite pg1 pg2); else order=(pg2 pg1 sqlite); fi
  for setup in "${order[@]}"; do refresh_run "$setup" "$r"; done
done

# --- (4) vends at a broker during its refresher pass ---------------------------------------------
# The same cached vends (they never read the store) at one broker while its first refresher
# pass over the REFRESH_CREDS seeded credentials runs, then again once it has ended.
DURING_SECS=5
DURING_ROWS=()
# during_run SETUP: sqlite or pg1.
during_run() {
  local setup=$1 cfg state url n=d line line2 pass running
  if [ "$setup" = sqlite ]; then
    state=$WORK/during-sqlite
    cp -a "$WORK/seed-refresh" "$state"
    cfg=$WORK/refresh-sqlite.toml
  else
    url=$(pg_db during_pg)
    migrate "$WORK/seed-refresh" "$url"
    state=$WORK/during-pg
    cfg=$WORK/during-pg.toml
    { refresh_common; store_pg "$url" "$WORK/seed-refresh/store.key"; } >"$cfg"
  fi
  "$CK" --config "$cfg" --state-dir "$state" robot-secret bench -o "$WORK/during.secret" \
    >/dev/null 2>"$WORK/robot-secret.err" || die "robot-secret ($setup) failed: $(cat "$WORK/robot-secret.err")"
  AUTH[$n]=$(printf 'bench:%s' "$(cat "$WORK/during.secret")" | base64 -w0)
  launch "$n" "$cfg" "$state" -v
  ready "$n"
  log "$setup: wrk -t1 -c8 -d${DURING_SECS}s cached vends during the refresher pass"
  wrk_start "$n" "$BODY_CACHED" 1 8 "$WORK/wrk-during-$setup.txt" "$DURING_SECS"
  wait "$WRK_PID" || die "wrk during the pass failed: $(cat "$WORK/wrk-during-$setup.txt")"
  running=yes
  grep -q 'refresher pass over' "$WORK/$n.log" && running="**no** (it ended before wrk did)"
  op_mark
  pass_wait 0 "$n"
  pass=$(pass_line "$n")
  wrk_start "$n" "$BODY_CACHED" 1 8 "$WORK/wrk-after-$setup.txt" "$DURING_SECS"
  wait "$WRK_PID" || die "wrk after the pass failed: $(cat "$WORK/wrk-after-$setup.txt")"
  halt "$n"
  line=$(grep '^BENCH ' "$WORK/wrk-during-$setup.txt") || die "no BENCH line from wrk during the pass"
  line2=$(grep '^BENCH ' "$WORK/wrk-after-$setup.txt") || die "no BENCH line from wrk after the pass"
  for l in "$line" "$line2"; do
    [ "$(field "$l" non2xx)$(field "$l" sockerr)$(field "$l" timeouts)" = 000 ] \
      || check_failed "vends during/after the pass ($setup): $l"
  done
  DURING_ROWS+=("| $setup | $(printf '%.0f' "$(field "$line" rps)") | $(us_to_ms "$(field "$line" p50_us)") | $(us_to_ms "$(field "$line" p99_us)") | $(us_to_ms "$(field "$line" max_us)") | $(printf '%.0f' "$(field "$line2" rps)") | $(us_to_ms "$(field "$line2" p50_us)") | $(us_to_ms "$(field "$line2" p99_us)") | $(us_to_ms "$(field "$line2" max_us)") | $running | \`$pass\` |")
}
step "(4) vends during a refresher pass"
during_run sqlite
during_run pg1

# --- (3) memory with MEM_CREDS credentials -----------------------------------------------------
step "(3) memory: seed $MEM_CREDS credentials (seed_store, SQLite)"
t0=$(now_ms)
"$SEED" "$WORK/seed-mem" "$MEM_CREDS" "$OP_ISSUER" "$ROBOT_ID" "$WORK/op.rt" 2>"$WORK/seed.err" \
  || die "seed_store failed: $(cat "$WORK/seed.err")"
SEED_MEM_MS=$(( $(now_ms) - t0 ))
SEED_MEM_DB_MB=$(du -m "$WORK/seed-mem/credentials.db" | cut -f1)

step "(3) memory: store migrate into PostgreSQL"
MEM_URL=$(pg_db mem)
migrate "$WORK/seed-mem" "$MEM_URL"
MIGRATE_MEM_MS=$MIGRATE_MS
MEM_DB_MB=$("$PG_BIN/psql" -X -At -d "$PG_SUPERUSER_URL" -c "SELECT pg_database_size('mem') / 1048576") \
  || die "pg_database_size failed"
{ refresh_common; store_pg "$MEM_URL" "$WORK/seed-mem/store.key"; } >"$WORK/mem.toml"
"$CK" --config "$WORK/mem.toml" --state-dir "$WORK/mem-a" robot-secret bench \
  -o "$WORK/mem.secret" >/dev/null 2>"$WORK/robot-secret.err" \
  || die "robot-secret (mem) failed: $(cat "$WORK/robot-secret.err")"

step "(3) memory: two replicas, their first refresher pass over $MEM_CREDS credentials"
declare -A M_START M_PASS_RSS M_PASS_HWM M_LOAD_RSS M_LOAD_HWM M_OK
op_mark
o0=$(cpu_ticks "$OP_PID")
pg0=$(pg_ticks)
busy0=$(machine_busy)
t0=$(now_ms)
launch ma "$WORK/mem.toml" "$WORK/mem-a" -v
launch mb "$WORK/mem.toml" "$WORK/mem-b" -v
for n in ma mb; do
  ready "$n"
  M_START[$n]=$(mem_kb "${BPID[$n]}" VmRSS)
done
pass_wait "$MEM_CREDS" ma mb
MEM_G=$(op_count "$GRANT_RT")
MEM_E=$(op_count "grant.error")
MEM_WALL=$(( $(op_grant_ms "$MEM_G") - t0 ))
MEM_OP_S=$(ticks_s $(( $(cpu_ticks "$OP_PID") - o0 )))
MEM_PG_S=$(ticks_s $(( $(pg_ticks) - pg0 )))
MEM_BR_S=$(ticks_s $(( $(cpu_ticks "${BPID[ma]}") + $(cpu_ticks "${BPID[mb]}") )))
MEM_OTHERS=$(other_pct $(( $(machine_busy) - busy0 )) $(( $(cpu_ticks "${BPID[ma]}") + $(cpu_ticks "${BPID[mb]}") + $(cpu_ticks "$OP_PID") - o0 + $(pg_ticks) - pg0 )) $(( $(now_ms) - t0 )))
sleep 2
MEM_OK=0
for n in ma mb; do
  M_PASS_RSS[$n]=$(mem_kb "${BPID[$n]}" VmRSS)
  M_PASS_HWM[$n]=$(mem_kb "${BPID[$n]}" VmHWM)
  M_OK[$n]=$(metric "${BURL[$n]}" 'credkeeper_refreshes_total{provider="op",outcome="ok"}')
  MEM_OK=$((MEM_OK + M_OK[$n]))
done
MEM_CHECK=ok
[ "$MEM_G" = "$MEM_CREDS" ] || MEM_CHECK="the OP logged $MEM_G refresh grants, not $MEM_CREDS"
[ "$MEM_OK" = "$MEM_CREDS" ] || MEM_CHECK="refreshes_total{ok} = $MEM_OK, not $MEM_CREDS"
[ "$MEM_E" = 0 ] || MEM_CHECK="$MEM_E grant errors at the OP"
[ "$MEM_CHECK" = ok ] || check_failed "memory pass: $MEM_CHECK"

step "(3) memory: vends at both replicas"
AUTH[ma]=$(printf 'bench:%s' "$(cat "$WORK/mem.secret")" | base64 -w0)
AUTH[mb]=${AUTH[ma]}
MEM_LOAD=()
for mode in cached signed; do
  case $mode in cached) body=$BODY_CACHED ;; signed) body=$BODY_SIGNED ;; esac
  pids=()
  for n in ma mb; do
    wrk_start "$n" "$body" 1 32 "$WORK/wrk-mem-$mode-$n.txt"
    pids+=("$WRK_PID")
  done
  for p in "${pids[@]}"; do wait "$p" || die "wrk failed during the memory load"; done
  rps=0
  for n in ma mb; do
    line=$(grep '^BENCH ' "$WORK/wrk-mem-$mode-$n.txt") || die "no BENCH line from wrk at $n"
    [ "$(field "$line" non2xx)" = 0 ] || check_failed "memory load $mode at $n: $(field "$line" non2xx) non-2xx"
    rps=$(awk -v a="$rps" -v b="$(field "$line" rps)" 'BEGIN {print a + b}')
  done
  MEM_LOAD+=("$mode $(printf '%.0f' "$rps")/s")
done
for n in ma mb; do
  M_LOAD_RSS[$n]=$(mem_kb "${BPID[$n]}" VmRSS)
  M_LOAD_HWM[$n]=$(mem_kb "${BPID[$n]}" VmHWM)
done
M_PASS_LINES=("$(pass_line ma)" "$(pass_line mb)")
for n in ma mb; do halt "$n"; done
MAX_HWM=$(printf '%s\n' "${M_LOAD_HWM[ma]}" "${M_LOAD_HWM[mb]}" | sort -n | tail -n 1)
GOAL_RSS=met
[ "$MAX_HWM" -lt $((GOAL_RSS_MB * 1024)) ] || GOAL_RSS="**missed**"

# --- report ------------------------------------------------------------------------------------
step "report"
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
TOTAL_S=$(( ($(now_ms) - T_START) / 1000 ))
# ratio_of MODE SETUP ARRAY: the median over the rounds of ARRAY[SETUP-MODE-r] / ARRAY[sqlite-MODE-r].
ratio_of() {
  local mode=$1 setup=$2 r vals=()
  local -n arr=$3
  for ((r = 1; r <= ROUNDS; r++)); do vals+=("$(div "${arr[$setup-$mode-$r]}" "${arr[sqlite-$mode-$r]}")"); done
  median "${vals[@]}" | awk '{printf "%.2f", $1}'
}
median_of() {
  local key=$1 r vals=()
  local -n arr=$2
  for ((r = 1; r <= ROUNDS; r++)); do vals+=("${arr[$key-$r]}"); done
  median "${vals[@]}"
}
SUMMARY_ROWS=()
for mode in cached signed; do
  for setup in sqlite pg2 pg1; do
    label=$setup
    case $setup in
      sqlite) label="(a) 1 broker, SQLite" ;;
      pg2) label="(b) 2 replicas, PostgreSQL" ;;
      pg1) label="(c) 1 replica, PostgreSQL" ;;
    esac
    SUMMARY_ROWS+=("| $mode | $label | $(printf '%.0f' "$(median_of "$setup-$mode" V_RPS)") | $(ratio_of "$mode" "$setup" V_RPS) | $(us_to_ms "$(median_of "$setup-$mode" V_P99)") | $(ratio_of "$mode" "$setup" V_P99) |")
  done
done
R_SUMMARY=()
for setup in sqlite pg1 pg2; do
  case $setup in
    sqlite) label="1 broker, SQLite (reference)" ;;
    pg1) label="1 replica, PostgreSQL" ;;
    pg2) label="2 replicas, PostgreSQL" ;;
  esac
  vals=() rs=()
  for ((r = 1; r <= ROUNDS; r++)); do
    vals+=("${R_WALL[$setup-$r]}")
    rs+=("$(div "${R_WALL[$setup-$r]}" "${R_WALL[pg1-$r]}")")
  done
  w=$(median "${vals[@]}")
  R_SUMMARY+=("| $label | $(printf '%.0f' "$w") | $(awk -v n="$REFRESH_CREDS" -v ms="$w" 'BEGIN {printf "%.0f", n * 1000 / ms}') | $(median "${rs[@]}" | awk '{printf "%.2f", $1}') |")
done
mb() { kb_to_mb "$1"; }

cat <<EOF
## credkeeper fleet: 2 replicas on PostgreSQL vs 1 broker on SQLite ($(nproc) CPUs: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); everything shares them)

Started $START_DATE, $TOTAL_S s in all; load average at the start $START_LOAD, at the end $END_LOAD.
PostgreSQL $PG_SERVER_VERSION on loopback over TLS (sslmode=verify-full, scram-sha-256): $PG_SETTINGS; pool_size default (8) per replica.
$WRK_VERSION, ${DURATION} s per wrk run, $ROUNDS rounds. credkeeper: $("$CK" --version) ($CK).

### (1) vends/s: summary (median of the $ROUNDS rounds; ratios per round to (a), then their median)

| vend | setup | requests/s | ÷ (a) | p99 ms | p99 ÷ (a) |
|---|---|--:|--:|--:|--:|
$(printf '%s\n' "${SUMMARY_ROWS[@]}")

(b) = two wrk -t1 -c32 at once, one per replica, requests/s summed, p50 and p99 the worse of the two;
(a) and (c) = one wrk -t2 -c64. Same total: 2 wrk threads, 64 connections.
"other CPU" (below) is what the machine spent, in % of one core, on everything but the brokers,
PostgreSQL, the OP and wrk: other users' work on this shared machine, and this script's own
curl/grep polling (a few %). A high value marks a disturbed row.

### (1) every run

| round | vend | setup | requests/s | p50 ms | p99 ms | 2xx | non-2xx | socket errors/timeouts | brokers' CPU (of one core) | PostgreSQL CPU | other CPU | check |
|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|
$(printf '%s\n' "${VEND_ROWS[@]}")

RSS MB (VmRSS idle after start → after all runs, VmHWM): SQLite broker $(mb "${IDLE_RSS[s]}") → $(mb "${LOADED_RSS[s]}") (HWM $(mb "${LOADED_HWM[s]}")); replica A $(mb "${IDLE_RSS[a]}") → $(mb "${LOADED_RSS[a]}") (HWM $(mb "${LOADED_HWM[a]}")); replica B $(mb "${IDLE_RSS[b]}") → $(mb "${LOADED_RSS[b]}") (HWM $(mb "${LOADED_HWM[b]}")). Audit logs: $AUDIT_MB MB in all.

### (2) refresher pass over $REFRESH_CREDS credentials at the test OP (summary: median of the $ROUNDS rounds; ratios per round, then their median)

| setup | ms from start to the last refresh grant | refreshes/s | time ÷ 1 replica on PostgreSQL |
|---|--:|--:|--:|
$(printf '%s\n' "${R_SUMMARY[@]}")

| round | setup | ms from start to the last grant | ms first → last grant | refreshes/s | OP refresh grants | OP grant errors | refreshes_total{ok} | brokers' CPU s | OP CPU s | PostgreSQL CPU s | other CPU | check |
|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|
$(printf '%s\n' "${REFRESH_ROWS[@]}")

Per broker (refreshes_total{ok}, its own pass line):
$(printf '%s\n' "${REFRESH_DETAIL[@]}")

Seeding $REFRESH_CREDS credentials (seed_store): $SEED_REFRESH_MS ms; store migrate into a fresh database: $(printf '%s ' "${MIGRATE_REFRESH[@]}")ms. One real login (device flow, headless approval by op-browser.sh): $LOGIN_MS ms.

### (3) RSS per replica with $MEM_CREDS credentials on PostgreSQL

Seeded with seed_store in $SEED_MEM_MS ms (credentials.db $SEED_MEM_DB_MB MB), \`store migrate\` into PostgreSQL in $MIGRATE_MEM_MS ms (database $MEM_DB_MB MB). The replicas' first refresher pass: $MEM_G refresh grants at the OP ($MEM_E grant errors), refreshes_total{ok} A ${M_OK[ma]} + B ${M_OK[mb]} = $MEM_OK, $MEM_WALL ms from the start to the last grant (CPU: brokers $MEM_BR_S s, OP $MEM_OP_S s, PostgreSQL $MEM_PG_S s, other processes $MEM_OTHERS of one core); A: \`${M_PASS_LINES[0]}\`; B: \`${M_PASS_LINES[1]}\`. Load after it: ${MEM_LOAD[*]} (two wrk -t1 -c32, ${DURATION} s each).

| replica | VmRSS at /healthz (pass starting) MB | VmRSS after the pass MB | VmHWM after the pass MB | VmRSS after the load MB | VmHWM after the load MB |
|---|--:|--:|--:|--:|--:|
| A | $(mb "${M_START[ma]}") | $(mb "${M_PASS_RSS[ma]}") | $(mb "${M_PASS_HWM[ma]}") | $(mb "${M_LOAD_RSS[ma]}") | $(mb "${M_LOAD_HWM[ma]}") |
| B | $(mb "${M_START[mb]}") | $(mb "${M_PASS_RSS[mb]}") | $(mb "${M_PASS_HWM[mb]}") | $(mb "${M_LOAD_RSS[mb]}") | $(mb "${M_LOAD_HWM[mb]}") |

| goal | measured | |
|---|---|---|
| < $GOAL_RSS_MB MB RSS per replica at $MEM_CREDS credentials (VmHWM, the worse replica) | $(mb "$MAX_HWM") MB | $GOAL_RSS |

### (4) cached vends at one broker during its refresher pass over $REFRESH_CREDS credentials

wrk -t1 -c8 -d${DURING_SECS}s of the cached vend, started as soon as the broker answers /readyz (its first pass starts then), and again after the pass.

| broker | during: requests/s | p50 ms | p99 ms | max ms | after: requests/s | p50 ms | p99 ms | max ms | pass still running when wrk ended | the pass |
|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|
$(printf '%s\n' "${DURING_ROWS[@]}")
EOF
if [ "$CHECKS_OK" = 1 ]; then
  echo
  echo "Checks: all held (every answer 2xx, no vends of the other kind, N refresh grants and N refreshes_total{ok} per pass, no grant errors)."
else
  echo
  echo "Checks FAILED:"
  printf -- '- %s\n' "${FAILED_CHECKS[@]}"
fi
if [ "$CHECKS_OK" = 1 ] && [ "$GOAL_RSS" = met ]; then exit 0; else exit 3; fi
