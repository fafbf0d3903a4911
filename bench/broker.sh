#!/usr/bin/env bash
# bench/broker.sh - load benchmark of the `credkeeper serve` broker on loopback.
#
#   (a) cached:  wrk POSTs /api/v1/token (HTTP Basic, body {"scopes":"read:/data","minsecs":60});
#                every answer after the first comes from the broker's cache.
#   (b) signed:  the same with "minsecs":100000 > [issuer] lifetime (600), so no cached token
#                ever fits and each request is signed anew by the local issuer (ES256).
#                Checked with credkeeper_tokens_vended_total{...,source="signed"|"cached"}
#                and the audit log.
#       (a) and (b) at 1, 64 and 1024 connections (wrk -t1 for one connection, else -t2).
#   floor: GET /healthz with the same wrk settings on the same broker, in the same round:
#                the server doing nothing (same runtime, same loopback, same wrk). For each
#                connection count a round runs healthz, cached, signed (reversed every other
#                round), and the report gives cached/healthz and signed/healthz for requests/s
#                and p99, and signed/cached.
#   sign floor:  crates/issuer/examples/sign_floor.rs, ES256/RS256 signatures per second on
#                one thread with aws-lc-rs (the key parsed once), and through jsonwebtoken and
#                LocalIssuer::sign; the report divides the signed vends by it.
#   (c) memory:  VmRSS/VmHWM of an idle broker with 0 credentials, and of a broker whose store
#                holds 100,000 credentials of a configured provider whose issuer is a closed
#                loopback port (so nothing is refreshed), sampled while its first refresher
#                pass runs; and of the same store when the credentials belong to no configured
#                provider (the pass skips them all and completes at once).
#   (d) refresher: 10,000 credentials sharing one refresh token of the test OpenID Provider
#                (OP_RT_ROTATE=never, OP_AT_TTL=3600; confidential robot-client, one device-flow
#                login approved headlessly), [refresher] interval = 1000000 so only the first
#                pass runs; its time comes from the broker's own log line
#                "refresher pass over N credentials in X ms: ...".
#
# Non-interactive: installs wrk (and curl) with apt-get if missing, builds credkeeper and the
# seed_store example (release), runs everything in a fresh mktemp directory and stops every
# broker and the OP it started on exit.
#
# Knobs (environment): BENCH_DURATION (10, seconds per wrk run) BENCH_CONNS ("1 64 1024")
#   BENCH_ROUNDS (2, rounds of healthz/cached/signed per connection count)
#   BENCH_SIGN_ITERS (20000 ES256 signatures per layer; RS256 a tenth)
#   BENCH_SECTIONS ("c d": which of (c) and (d) run after (a)/(b) and the floors; "" for none)
#   BENCH_WRK_THREADS (2) BENCH_MEM_CREDS (100000) BENCH_MEM_SECONDS (20, how long the 100k
#   broker is sampled) BENCH_REFRESH_CREDS (10000) BENCH_REFRESH_CONCURRENCY (16, the default)
#   BENCH_KEEP=1 keeps the work directory; BENCH_NO_BUILD=1 skips cargo; CREDKEEPER=path measures
#   another binary than target/release/credkeeper.
# Output: markdown tables on stdout; progress on stderr.
# Exit status: 0 = measured and every goal holds; 3 = measured, a goal is missed; 1 = error
# (the work directory is then kept).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
TESTBED=$ROOT/tests/testbed
# shellcheck source=../tests/testbed/lib.sh
. "$TESTBED/lib.sh"
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNS:-1 64 1024}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-2}
SIGN_ITERS=${BENCH_SIGN_ITERS:-20000}
SECTIONS=${BENCH_SECTIONS-c d}
has() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
MEM_CREDS=${BENCH_MEM_CREDS:-100000}
MEM_SECONDS=${BENCH_MEM_SECONDS:-20}
REFRESH_CREDS=${BENCH_REFRESH_CREDS:-10000}
REFRESH_CONCURRENCY=${BENCH_REFRESH_CONCURRENCY:-16}
# goals (the issue's, for this 2-core machine)
GOAL_CACHED_RPS=20000
GOAL_CACHED_P99_MS=10
GOAL_SIGNED_RPS=5000
GOAL_RSS_MB=100
# goals against the floors (issue 18), at 64 connections
GOAL_CACHED_VS_HEALTHZ=0.7
GOAL_CACHED_P99_VS_HEALTHZ=2
GOAL_SIGNED_VS_CACHED=0.5

# --- tools and build -------------------------------------------------------------------------
apt_install wrk curl
for t in wrk curl; do command -v "$t" >/dev/null || die "$t not found after installing"; done
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p credkeeper"
  (cd "$ROOT" && cargo build --release -p credkeeper >&2)
  log "cargo build --release --example seed_store -p credkeeper-store"
  (cd "$ROOT" && cargo build --release --example seed_store -p credkeeper-store >&2)
  log "cargo build --release --example sign_floor -p credkeeper-issuer"
  (cd "$ROOT" && cargo build --release --example sign_floor -p credkeeper-issuer >&2)
fi
CK=${CREDKEEPER:-$ROOT/target/release/credkeeper}
SEED=$ROOT/target/release/examples/seed_store
SIGN_FLOOR=$ROOT/target/release/examples/sign_floor
[ -x "$CK" ] || die "$CK missing (build it, or unset BENCH_NO_BUILD)"
if has c || has d; then
  [ -x "$SEED" ] || die "$SEED missing (build it, or unset BENCH_NO_BUILD)"
fi
[ -x "$SIGN_FLOOR" ] || die "$SIGN_FLOOR missing (build it, or unset BENCH_NO_BUILD)"

# 1024 connections need as many descriptors on both ends
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge 2200 ] || die "open-file limit $(ulimit -n) is too low for 1024 connections"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- work directory and cleanup --------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/credkeeper-broker-bench.XXXXXX")
BROKER_PIDS=()
OP_STATE=
OK=0
cleanup() {
  local pid
  for pid in "${BROKER_PIDS[@]}"; do stop_pid "$pid" "$CK" || true; done
  if [ -n "$OP_STATE" ]; then "$TESTBED/stop-op.sh" "$OP_STATE" >/dev/null 2>&1 || true; fi
  if [ "$OK" = 1 ] && [ "${BENCH_KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
  else
    log "work directory kept: $WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

CLK_TCK=$(getconf CLK_TCK)



# start_broker NAME CONFIG STATE [credkeeper global flags...]: start `credkeeper serve` on a free
# port; sets BROKER_PID and BROKER_URL. Its standard error goes to $WORK/NAME.log.
start_broker() {
  local name=$1 config=$2 state=$3 logf i
  shift 3
  logf=$WORK/$name.log
  "$CK" --insecure-loopback "$@" --config "$config" --state-dir "$state" \
    serve --listen 127.0.0.1:0 >"$WORK/$name.out" 2>"$logf" </dev/null &
  BROKER_PID=$!
  BROKER_PIDS+=("$BROKER_PID")
  for ((i = 0; i < 300; i++)); do
    BROKER_URL=$(sed -n 's/^credkeeper broker listening on \([^ ]*\).*/\1/p' "$logf" | head -n 1)
    [ -n "$BROKER_URL" ] && break
    pid_alive "$BROKER_PID" || { cat "$logf" >&2; die "broker $name exited"; }
    sleep 0.1
  done
  [ -n "$BROKER_URL" ] || { cat "$logf" >&2; die "broker $name did not start"; }
  wait_for_http "$BROKER_URL/healthz" 30 "$BROKER_PID" || die "broker $name: /healthz does not answer"
  log "broker $name: $BROKER_URL (pid $BROKER_PID)"
}

# stop_broker PID: SIGTERM, wait up to 10 s (then stop_pid's KILL); sets STOPPED to how it went.
stop_broker() {
  local pid=$1 t0 i
  STOPPED="exited on SIGTERM"
  pid_alive "$pid" && pid_matches "$pid" "$CK" || return 0
  t0=$(now_ms)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    pid_alive "$pid" || break
    sleep 0.05
  done
  if pid_alive "$pid"; then
    STOPPED="still running 10 s after SIGTERM: killed"
    stop_pid "$pid" "$CK" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  else
    STOPPED="exited $(( $(now_ms) - t0 )) ms after SIGTERM"
  fi
}


# --- (a)/(b): the broker under wrk -------------------------------------------------------------
log "== (a)/(b) cached and signed tokens =="
cat >"$WORK/broker.toml" <<'EOF'
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
"$CK" --config "$WORK/broker.toml" --state-dir "$WORK/state" robot-secret bench \
  -o "$WORK/bench.secret" >&2
start_broker bench "$WORK/broker.toml" "$WORK/state"
BENCH_PID=$BROKER_PID
BENCH_URL=$BROKER_URL
sleep 1
IDLE_RSS_KB=$(mem_kb "$BENCH_PID" VmRSS)
IDLE_HWM_KB=$(mem_kb "$BENCH_PID" VmHWM)

BODY_CACHED='{"scopes":"read:/data","minsecs":60}'
BODY_SIGNED='{"scopes":"read:/data","minsecs":100000}'
AUTH=$(printf 'bench:%s' "$(cat "$WORK/bench.secret")" | base64 -w0)

# One request by hand: the token is what we think it is (and the secret is now verified).
code=$(curl -s -o "$WORK/first.json" -w '%{http_code}' -H "Authorization: Basic $AUTH" \
  -H 'Content-Type: application/json' --data-binary "$BODY_CACHED" "$BENCH_URL/api/v1/token")
[ "$code" = 200 ] || die "first token request: HTTP $code: $(cat "$WORK/first.json")"
[ "$(json_get scope <"$WORK/first.json")" = read:/data ] || die "unexpected answer: $(cat "$WORK/first.json")"

cat >"$WORK/vend.lua" <<'EOF'
-- POST the robot token API; WRK_AUTH = base64(robot:secret), WRK_BODY = the JSON body.
-- Without WRK_BODY: a plain GET of the URL (the /healthz floor), same counting and output.
if os.getenv("WRK_BODY") then
  wrk.method = "POST"
  wrk.body = os.getenv("WRK_BODY")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Basic " .. os.getenv("WRK_AUTH")
end

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

WRK_ROWS=()
declare -A RPS P99
SERIES_SIGNED='credkeeper_tokens_vended_total{robot="bench",provider="local",source="signed"}'
SERIES_CACHED='credkeeper_tokens_vended_total{robot="bench",provider="local",source="cached"}'

# run_wrk MODE CONNS ROUND: one wrk run of MODE (healthz, cached or signed); its row goes to
# WRK_ROWS, its requests/s and p99 (µs) to RPS/P99[MODE-CONNS-ROUND].
run_wrk() {
  local mode=$1 conns=$2 round=$3 threads out line s0 c0 s1 c1 t0 t1 a0 a1 ok bad cpu signed cached
  local url=$BENCH_URL/api/v1/token body
  case $mode in
    healthz) url=$BENCH_URL/healthz body= ;;
    cached) body=$BODY_CACHED ;;
    signed) body=$BODY_SIGNED ;;
  esac
  threads=$WRK_THREADS
  [ "$conns" -lt "$threads" ] && threads=$conns
  s0=$(metric "$BENCH_URL" "$SERIES_SIGNED")
  c0=$(metric "$BENCH_URL" "$SERIES_CACHED")
  a0=$(stat -c %s "$WORK/state/audit.log")
  t0=$(cpu_ticks "$BENCH_PID")
  log "round $round: wrk $mode -t$threads -c$conns -d${DURATION}s"
  if [ -n "$body" ]; then
    out=$(WRK_AUTH=$AUTH WRK_BODY=$body wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 5s \
      --latency -s "$WORK/vend.lua" "$url")
  else
    out=$(env -u WRK_BODY wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 5s \
      --latency -s "$WORK/vend.lua" "$url")
  fi
  printf '%s\n' "$out" >"$WORK/wrk-$mode-$conns-$round.txt"
  t1=$(cpu_ticks "$BENCH_PID")
  sleep 0.5 # let the audit writer drain
  s1=$(metric "$BENCH_URL" "$SERIES_SIGNED")
  c1=$(metric "$BENCH_URL" "$SERIES_CACHED")
  line=$(grep '^BENCH ' <<<"$out") || die "no BENCH line from wrk:\n$out"
  ok=$(field "$line" ok)
  bad=$(field "$line" non2xx)
  signed=$((s1 - s0))
  cached=$((c1 - c0))
  # The audit log: one line per vend; count this run's lines by source.
  a1=$(tail -c +"$((a0 + 1))" "$WORK/state/audit.log" | grep -c "\"source\":\"$mode\"" || true)
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN {printf "%.0f", 100 * t / hz / d}')
  RPS[$mode-$conns-$round]=$(field "$line" rps)
  P99[$mode-$conns-$round]=$(field "$line" p99_us)
  CPU_TICKS[$mode-$conns-$round]=$((t1 - t0))
  REQS[$mode-$conns-$round]=$((ok + bad))
  WRK_ROWS+=("| $round | $mode | $conns | $threads | $(printf '%.0f' "$(field "$line" rps)") | $(us_to_ms "$(field "$line" p50_us)") | $(us_to_ms "$(field "$line" p99_us)") | $(us_to_ms "$(field "$line" max_us)") | $ok | $bad | $(field "$line" sockerr)/$(field "$line" timeouts) | $signed / $cached | $a1 | $cpu% |")
  [ "$bad" = 0 ] || log "WARNING: $bad non-2xx answers in $mode at $conns connections"
  case $mode in
    healthz)
      [ "$((signed + cached))" = 0 ] || log "WARNING: $((signed + cached)) tokens vended during the healthz run"
      ;;
    cached) [ "$signed" -le 1 ] || log "WARNING: $signed tokens were signed during the cached run" ;;
    signed)
      [ "$cached" = 0 ] || log "WARNING: $cached tokens came from the cache during the signed run"
      [ "$signed" -ge "$ok" ] || log "WARNING: only $signed signed for $ok answers"
      ;;
  esac
}

declare -A CPU_TICKS REQS
for ((r = 1; r <= ROUNDS; r++)); do
  for c in $CONNS; do
    if ((r % 2 == 1)); then order=(healthz cached signed); else order=(signed cached healthz); fi
    for m in "${order[@]}"; do run_wrk "$m" "$c" "$r"; done
  done
done
LOADED_RSS_KB=$(mem_kb "$BENCH_PID" VmRSS)
LOADED_HWM_KB=$(mem_kb "$BENCH_PID" VmHWM)
AUDIT_MB=$(kb_to_mb $(( $(stat -c %s "$WORK/state/audit.log") / 1024 )))
stop_broker "$BENCH_PID"
BENCH_STOP=$STOPPED

# --- the signing floor: the same signature in-process, one thread, nothing else --------------
log "== signing floor: $SIGN_FLOOR $SIGN_ITERS =="
"$SIGN_FLOOR" "$SIGN_ITERS" >"$WORK/sign-floor.txt" 2>>"$WORK/sign-floor.err" \
  || die "sign_floor failed: $(cat "$WORK/sign-floor.err")"
# sign_per_sec ALG LAYER: signatures per second of one line of sign_floor's output.
sign_per_sec() { awk -v a="alg=$1" -v l="layer=$2" '$2 == a && $3 == l {sub("per_sec=", "", $6); print $6}' "$WORK/sign-floor.txt"; }
SIGN_ROWS=()
while read -r _ alg layer iters _ per us; do
  SIGN_ROWS+=("| ${alg#alg=} | ${layer#layer=} | ${iters#iters=} | ${per#per_sec=} | ${us#us_per=} |")
done <"$WORK/sign-floor.txt"
ES256_FLOOR=$(sign_per_sec ES256 aws-lc)
[ -n "$ES256_FLOOR" ] || die "no ES256 line from sign_floor: $(cat "$WORK/sign-floor.txt")"

# --- (c): memory with many stored credentials ------------------------------------------------
# (c) and (d) run when BENCH_SECTIONS names them; the sections are not indented.
if has c; then
log "== (c) memory with $MEM_CREDS stored credentials =="
DEAD_ISSUER=http://127.0.0.1:$(free_port) # nothing listens there
printf 'bench-refresh-token-not-used\n' >"$WORK/dummy.rt"
t0=$(now_ms)
"$SEED" "$WORK/mem-state" "$MEM_CREDS" "$DEAD_ISSUER" bench-client "$WORK/dummy.rt" >&2
SEED_MS=$(( $(now_ms) - t0 ))
DB_MB=$(kb_to_mb $(( $(stat -c %s "$WORK/mem-state/credentials.db") / 1024 )))
cp -a "$WORK/mem-state" "$WORK/mem-state-unmatched"

mem_config() { # mem_config FILE CLIENT_ID
  cat >"$1" <<EOF
[refresher]
interval = 1000000

[[provider]]
name = "dead"
issuer = "$DEAD_ISSUER"
client_id = "$2"

[[robot]]
name = "bench"
auth = { secret = true }
providers = ["local", "dead"]
scopes = ["read:/data"]
audiences = ["*"]
EOF
}

# sample_mem NAME SECONDS: sample the broker's RSS every 0.5 s; sets MEM_RSS, MEM_HWM (kB),
# MEM_PASS (the pass log line, if it came) and MEM_FAILED (refresher warnings so far).
sample_mem() {
  local name=$1 secs=$2 i
  MEM_PASS=
  for ((i = 0; i < secs * 2; i++)); do
    MEM_PASS=$(grep -o 'refresher pass over.*' "$WORK/$name.log" | head -n 1 || true)
    [ -n "$MEM_PASS" ] && [ "$i" -ge 6 ] && break
    sleep 0.5
  done
  MEM_RSS=$(mem_kb "$BROKER_PID" VmRSS)
  MEM_HWM=$(mem_kb "$BROKER_PID" VmHWM)
  MEM_FAILED=$(grep -c 'WARN refresher' "$WORK/$name.log" || true)
}

mem_config "$WORK/mem.toml" bench-client
start_broker mem "$WORK/mem.toml" "$WORK/mem-state" -v
t0=$(now_ms)
sample_mem mem "$MEM_SECONDS"
MEM_WAIT_S=$(( ($(now_ms) - t0) / 1000 ))
MEM_RSS_KB=$MEM_RSS
MEM_HWM_KB=$MEM_HWM
MEM_PASS_DEAD=${MEM_PASS:-"not finished after ${MEM_WAIT_S} s: $MEM_FAILED of $MEM_CREDS credentials tried (each waits for discovery of the unreachable issuer)"}
stop_broker "$BROKER_PID"
MEM_STOP=$STOPPED

mem_config "$WORK/mem-unmatched.toml" other-client
start_broker mem-unmatched "$WORK/mem-unmatched.toml" "$WORK/mem-state-unmatched" -v
sample_mem mem-unmatched 5
UNM_RSS_KB=$MEM_RSS
UNM_HWM_KB=$MEM_HWM
stop_broker "$BROKER_PID"
UNM_STOP=$STOPPED
fi # (c)

# --- (d): one refresher pass against the test OP ---------------------------------------------
if has d; then
log "== (d) refresher pass over $REFRESH_CREDS credentials =="
OP_STATE=$WORK/op
OP_RT_ROTATE=never OP_AT_TTL=3600 "$TESTBED/start-op.sh" "$OP_STATE" >&2
OP_ENV=$OP_STATE/op.env
OP_ISSUER=$(env_read "$OP_ENV" OP_ISSUER)
OP_PID=$(env_read "$OP_ENV" OP_PID)
ROBOT_ID=$(env_read "$OP_ENV" OP_ROBOT_CLIENT_ID)
ROBOT_SECRET=$(env_read "$OP_ENV" OP_ROBOT_CLIENT_SECRET)
# One device-flow login for the confidential robot-client (its grant types include the device
# code), approved headlessly as alice; offline_access gives the refresh token.
dev=$(curl -fsS -u "$ROBOT_ID:$ROBOT_SECRET" --data-urlencode 'scope=openid offline_access read' \
  "$(env_read "$OP_ENV" OP_DEVICE_AUTHORIZATION_ENDPOINT)")
"$TESTBED/op-browser.sh" device "$OP_ISSUER" "$(json_get user_code <<<"$dev")" alice >/dev/null
tok=$(curl -sS -u "$ROBOT_ID:$ROBOT_SECRET" \
  --data-urlencode grant_type=urn:ietf:params:oauth:grant-type:device_code \
  --data-urlencode "device_code=$(json_get device_code <<<"$dev")" \
  "$(env_read "$OP_ENV" OP_TOKEN_ENDPOINT)")
( umask 077; json_get refresh_token <<<"$tok" >"$WORK/op.rt" ) || die "no refresh token from the OP: $tok"
( umask 077; printf '%s' "$ROBOT_SECRET" >"$WORK/op-client.secret" )
"$SEED" "$WORK/refresh-state" "$REFRESH_CREDS" "$OP_ISSUER" "$ROBOT_ID" "$WORK/op.rt" >&2
cat >"$WORK/refresh.toml" <<EOF
[refresher]
interval = 1000000
concurrency = $REFRESH_CONCURRENCY

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
op_t0=$(cpu_ticks "$OP_PID")
start_broker refresh "$WORK/refresh.toml" "$WORK/refresh-state" -v
REFRESH_PID=$BROKER_PID
PASS=
for ((i = 0; i < 6000; i++)); do
  PASS=$(grep -o 'refresher pass over.*' "$WORK/refresh.log" | head -n 1 || true)
  [ -n "$PASS" ] && break
  pid_alive "$REFRESH_PID" || die "the refresh broker exited: $(tail -n 5 "$WORK/refresh.log")"
  sleep 0.1
done
[ -n "$PASS" ] || die "no refresher pass line after 600 s"
op_t1=$(cpu_ticks "$OP_PID")
br_ticks=$(cpu_ticks "$REFRESH_PID")
# "refresher pass over N credentials in X ms: R refreshed, F failed, L need login, H fresh"
read -r P_N P_MS P_OK P_FAIL P_LOGIN < <(sed -E \
  's/refresher pass over ([0-9]+) credentials in ([0-9]+) ms: ([0-9]+) refreshed, ([0-9]+) failed, ([0-9]+) need login.*/\1 \2 \3 \4 \5/' <<<"$PASS")
P_RATE=$(awk -v n="$P_OK" -v ms="$P_MS" 'BEGIN {printf "%.0f", (ms > 0) ? (n * 1000 / ms) : 0}')
P_METRIC=$(metric "$BROKER_URL" 'credkeeper_refreshes_total{provider="op",outcome="ok"}')
REFRESH_RSS_KB=$(mem_kb "$REFRESH_PID" VmRSS)
OP_CPU_S=$(awk -v t=$((op_t1 - op_t0)) -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t / hz}')
BR_CPU_S=$(awk -v t="$br_ticks" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t / hz}')
if pid_alive "$OP_PID" && curl -fsS --max-time 5 -o /dev/null "$OP_ISSUER/.well-known/openid-configuration"; then
  OP_ALIVE=yes
else
  OP_ALIVE=NO
fi
OP_GRANTS=$(grep -c 'grant.success client=robot-client grant_type=refresh_token' "$OP_STATE/op/op.log" || true)
stop_broker "$REFRESH_PID"
REFRESH_STOP=$STOPPED
fi # (d)

# --- report ------------------------------------------------------------------------------------
goal() { if [ "$1" = 1 ]; then echo met; else echo "**missed**"; fi; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN {print (a >= b) ? 1 : 0}'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN {print (a < b) ? 1 : 0}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
# mean_of MODE CONNS ARRAY: the mean over the rounds of ARRAY[MODE-CONNS-ROUND].
mean_of() {
  local mode=$1 conns=$2 r sum=0
  local -n arr=$3
  for ((r = 1; r <= ROUNDS; r++)); do sum=$(awk -v s="$sum" -v x="${arr[$mode-$conns-$r]}" 'BEGIN {print s + x}'); done
  awk -v s="$sum" -v n="$ROUNDS" 'BEGIN {printf "%.1f", s / n}'
}
# ratio_of A B CONNS ARRAY: the mean over the rounds of ARRAY[A-CONNS-r] / ARRAY[B-CONNS-r].
ratio_of() {
  local a=$1 b=$2 conns=$3 r sum=0
  local -n arr=$4
  for ((r = 1; r <= ROUNDS; r++)); do
    sum=$(awk -v s="$sum" -v x="${arr[$a-$conns-$r]}" -v y="${arr[$b-$conns-$r]}" 'BEGIN {print s + x / y}')
  done
  awk -v s="$sum" -v n="$ROUNDS" 'BEGIN {printf "%.2f", s / n}'
}
# cpu_us MODE-CONNS-ROUND: the broker's CPU time (user + system) per answered request, µs.
cpu_us() { awk -v t="${CPU_TICKS[$1]}" -v hz="$CLK_TCK" -v n="${REQS[$1]}" 'BEGIN {if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a"}'; }
FLOOR_ROWS=()
CPU_ROWS=()
for c in $CONNS; do
  for ((r = 1; r <= ROUNDS; r++)); do
    h=${RPS[healthz-$c-$r]} hp=${P99[healthz-$c-$r]}
    FLOOR_ROWS+=("| $c | $r | $(printf '%.0f' "$h") | $(us_to_ms "$hp") | $(printf '%.0f' "${RPS[cached-$c-$r]}") | $(div "${RPS[cached-$c-$r]}" "$h") | $(us_to_ms "${P99[cached-$c-$r]}") | $(div "${P99[cached-$c-$r]}" "$hp") | $(printf '%.0f' "${RPS[signed-$c-$r]}") | $(div "${RPS[signed-$c-$r]}" "$h") | $(us_to_ms "${P99[signed-$c-$r]}") | $(div "${P99[signed-$c-$r]}" "$hp") | $(div "${RPS[signed-$c-$r]}" "${RPS[cached-$c-$r]}") |")
    hc=$(cpu_us "healthz-$c-$r") cc=$(cpu_us "cached-$c-$r") sc=$(cpu_us "signed-$c-$r")
    CPU_ROWS+=("| $c | $r | $hc | $cc | $(div "$hc" "$cc") | $sc | $(div "$hc" "$sc") |")
  done
done
NPROC=$(nproc)
# Signed vends against the signing floor, per connection count (mean of the rounds):
#   ÷ (floor × cores): the vends per second over what all cores could sign doing nothing else;
#   per broker CPU-second ÷ floor: the vends per second of the broker's own CPU time over the
#   signatures per second of one core, i.e. how much of the broker's CPU time a vend's
#   signature is (1 would mean the broker did nothing but sign).
SIGNVEND_ROWS=()
for c in $CONNS; do
  sv=$(mean_of signed "$c" RPS)
  ticks=0
  for ((r = 1; r <= ROUNDS; r++)); do ticks=$((ticks + ${CPU_TICKS[signed-$c-$r]})); done
  per_cpu=$(awk -v v="$sv" -v t="$ticks" -v hz="$CLK_TCK" -v d="$DURATION" -v n="$ROUNDS" \
    'BEGIN {cpu = t / hz / (d * n); if (cpu > 0) printf "%.0f", v / cpu; else print 0}')
  all=$(awk -v f="$ES256_FLOOR" -v n="$NPROC" 'BEGIN {print f * n}')
  SIGNVEND_ROWS+=("| $c | $(printf '%.0f' "$sv") | $(div "$sv" "$all") | $per_cpu | $(div "$per_cpu" "$ES256_FLOOR") |")
done

best_signed=0
for c in $CONNS; do
  v=$(mean_of signed "$c" RPS)
  [ "$(ge "$v" "$best_signed")" = 1 ] && best_signed=$v
done
G_CACHED=0 G_P99=0 G_VS_H=0 G_P99_VS_H=0 G_S_VS_C=0
C64=n/a P99_64=0 R_C_H=n/a R_P99=n/a R_S_C=n/a
if [ -n "${RPS[cached-64-1]:-}" ]; then
  C64=$(mean_of cached 64 RPS)
  P99_64=$(mean_of cached 64 P99)
  R_C_H=$(ratio_of cached healthz 64 RPS)
  R_P99=$(ratio_of cached healthz 64 P99)
  R_S_C=$(ratio_of signed cached 64 RPS)
  G_CACHED=$(ge "$C64" "$GOAL_CACHED_RPS")
  G_P99=$(lt "$P99_64" $((GOAL_CACHED_P99_MS * 1000)))
  G_VS_H=$(ge "$R_C_H" "$GOAL_CACHED_VS_HEALTHZ")
  G_P99_VS_H=$(lt "$R_P99" "$GOAL_CACHED_P99_VS_HEALTHZ")
  G_S_VS_C=$(ge "$R_S_C" "$GOAL_SIGNED_VS_CACHED")
fi
G_SIGNED=$(ge "$best_signed" "$GOAL_SIGNED_RPS")
G_RSS=1
if has c; then G_RSS=$(lt "$MEM_HWM_KB" $((GOAL_RSS_MB * 1024))); fi

cat <<EOF
## credkeeper serve under load ($NPROC CPUs: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); wrk and the broker share them)

\`$CK\` ($("$CK" --version)); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end.

### (a) cached and (b) freshly signed robot tokens, and their floor GET /healthz: ${DURATION} s per row

| round | source | connections | wrk threads | requests/s | p50 ms | p99 ms | max ms | 2xx | non-2xx | socket errors/timeouts | vended signed / cached (metrics) | audit lines with this source | broker CPU |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${WRK_ROWS[@]}")

Broker RSS: $(kb_to_mb "$IDLE_RSS_KB") MB idle with 0 credentials (HWM $(kb_to_mb "$IDLE_HWM_KB") MB); after all wrk runs $(kb_to_mb "$LOADED_RSS_KB") MB (HWM $(kb_to_mb "$LOADED_HWM_KB") MB). Audit log after the runs: $AUDIT_MB MB.

### The HTTP floor: each path against GET /healthz of the same broker, same wrk settings, same round

Ratios are vend ÷ healthz of the same round (requests/s: 1 = as fast as doing nothing; p99: 1 = no slower).

| connections | round | healthz req/s | healthz p99 ms | cached req/s | ÷ healthz | cached p99 ms | ÷ healthz p99 | signed req/s | ÷ healthz | signed p99 ms | ÷ healthz p99 | signed ÷ cached |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${FLOOR_ROWS[@]}")

The same rows as the broker's CPU time per request (/proc utime + stime over the row, ÷ its
answers): less disturbed by whatever else the machine runs than requests/s are. "healthz ÷"
is the share of a vend's CPU time that the server's bare request handling takes (1 = the vend
costs no more than /healthz).

| connections | round | healthz µs CPU/request | cached µs CPU/request | healthz ÷ cached | signed µs CPU/request | healthz ÷ signed |
|---|---|---|---|---|---|---|
$(printf '%s\n' "${CPU_ROWS[@]}")

### The signing floor: \`sign_floor $SIGN_ITERS\`, one thread, signatures per second

| alg | layer | iterations | signatures/s | µs each |
|---|---|---|---|---|
$(printf '%s\n' "${SIGN_ROWS[@]}")

Layers: \`aws-lc\` signs the token's \`header.payload\` with a key parsed once (the crypto
alone: the floor); \`aws-lc+parse\` parses the key from DER before each signature, as
jsonwebtoken's aws-lc backend does in \`encode\`; \`jsonwebtoken\` is \`jsonwebtoken::encode\`
of the same header and claims; \`issuer\` is \`LocalIssuer::sign\`, what a signed vend calls.

Signed vends (ES256, mean of the rounds) against the ES256 floor ($ES256_FLOOR/s on one core):

| connections | signed vends/s | ÷ (floor × $NPROC cores) | signed vends per broker CPU-second | ÷ floor (the share of the broker's CPU the signatures alone would take) |
|---|---|---|---|---|
$(printf '%s\n' "${SIGNVEND_ROWS[@]}")
EOF

if has c; then
  cat <<EOF

### (c) memory

| broker | VmRSS MB | VmHWM MB | refresher pass | stop |
|---|---|---|---|---|
| 0 credentials, idle | $(kb_to_mb "$IDLE_RSS_KB") | $(kb_to_mb "$IDLE_HWM_KB") | nothing to do | (after the wrk runs) $BENCH_STOP |
| $MEM_CREDS credentials of provider \`dead\` (issuer: closed port), after ${MEM_WAIT_S} s | $(kb_to_mb "$MEM_RSS_KB") | $(kb_to_mb "$MEM_HWM_KB") | $MEM_PASS_DEAD | $MEM_STOP |
| $MEM_CREDS credentials of no configured provider (all skipped) | $(kb_to_mb "$UNM_RSS_KB") | $(kb_to_mb "$UNM_HWM_KB") | finished (nothing refreshed, so no log line) | $UNM_STOP |

Seeding $MEM_CREDS credentials (seed_store): $SEED_MS ms; credentials.db $DB_MB MB.
EOF
fi

if has d; then
  cat <<EOF

### (d) refresher pass against the test OP (OP_RT_ROTATE=never, OP_AT_TTL=3600)

| credentials | concurrency | pass ms | refreshed | failed | need login | refreshes/s | refreshes_total{ok} | OP grant.success lines | OP CPU s | broker CPU s | broker RSS MB | OP alive after |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| $P_N | $REFRESH_CONCURRENCY | $P_MS | $P_OK | $P_FAIL | $P_LOGIN | $P_RATE | $P_METRIC | $OP_GRANTS | $OP_CPU_S | $BR_CPU_S | $(kb_to_mb "$REFRESH_RSS_KB") | $OP_ALIVE |

Broker log: \`$PASS\`. Broker after the pass: $REFRESH_STOP.
EOF
fi

cat <<EOF

### Goals (64 connections: the mean of the $ROUNDS rounds; ratios per round, then their mean)

| goal | measured | |
|---|---|---|
| ≥ $GOAL_CACHED_RPS cached vends/s at 64 connections | $C64 | $(goal "$G_CACHED") |
| cached p99 < $GOAL_CACHED_P99_MS ms at 64 connections | $(us_to_ms "$P99_64") ms | $(goal "$G_P99") |
| cached vends ≥ $GOAL_CACHED_VS_HEALTHZ × /healthz at 64 connections | ${R_C_H}× | $(goal "$G_VS_H") |
| cached p99 < $GOAL_CACHED_P99_VS_HEALTHZ × /healthz's p99 at 64 connections | ${R_P99}× | $(goal "$G_P99_VS_H") |
| signed vends ≥ $GOAL_SIGNED_VS_CACHED × cached vends at 64 connections | ${R_S_C}× | $(goal "$G_S_VS_C") |
| ≥ $GOAL_SIGNED_RPS signed tokens/s (best of $CONNS connections, mean of the rounds) | $best_signed | $(goal "$G_SIGNED") |
EOF
if has c; then
  echo "| < $GOAL_RSS_MB MB RSS at $MEM_CREDS credentials (VmHWM, provider \`dead\`) | $(kb_to_mb "$MEM_HWM_KB") MB | $(goal "$G_RSS") |"
fi

OK=1
if has d && { [ "$P_OK" != "$REFRESH_CREDS" ] || [ "$P_FAIL" != 0 ] || [ "$OP_ALIVE" != yes ]; }; then
  log "WARNING: refresher pass: $P_OK of $REFRESH_CREDS refreshed, $P_FAIL failed, OP alive: $OP_ALIVE"
fi
if [ "$G_CACHED$G_P99$G_VS_H$G_P99_VS_H$G_S_VS_C$G_SIGNED$G_RSS" = 1111111 ]; then exit 0; else exit 3; fi
