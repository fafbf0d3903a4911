#!/usr/bin/env bash
# bench/tasks.sh - the scheduler's overhead and a run's credential preparation, measured.
#
#   (1) start lag: 1,000 tasks due in the same slot (`@every 20s`); each task's command is
#       `stamp FILE` (bench/tasks/stamp.c: appends the CLOCK_REALTIME ns it started at);
#       lag = that - due time. Its floor, in the same round after each slot: the same 1,000
#       processes started back to back by posix_spawn alone (bench/tasks/spawn_floor.c; Rust's Command uses
#       posix_spawn too) and, beside it, by Python's Popen; ratio scheduler/floor.
#   (1b) a single task `@every 1s` for BENCH_SINGLE_SECS: each run's lag from its due second,
#       against its floor: sleeping to each second and one posix_spawn of the same command.
#   (2) idle cost: 10,000 defined tasks (`@hourly`, none due during the window); the
#       scheduler's RSS (VmRSS, VmHWM) and CPU time (utime+stime) over BENCH_IDLE_SECS.
#   (3) credential preparation for one run, per Rucio auth type, against a real Rucio server
#       (tests/testbed/start-rucio.sh): `credkeeper tasks run` of a task whose command is
#       `true` (so the time is credkeeper's: login or files, then the run) side by side with
#       the same login done by the Python client (`Client()` with a fresh token cache, which
#       authenticates when it is built). hyperfine medians.
#
# Usage: bench/tasks.sh   (CREDKEEPER=path measures another binary than target/release/credkeeper)
# Knobs: BENCH_TASKS (1000) BENCH_IDLE_TASKS (10000) BENCH_IDLE_SECS (30) BENCH_RUNS (20)
#   BENCH_LAG_ROUNDS (3, slots of (1), each followed by its floor) BENCH_SINGLE_SECS (60)
#   BENCH_SKIP_RUCIO=1 (leaves out (3) and its Rucio server)
# Output: Markdown on stdout and in bench/tasks-results.md (BENCH_OUT=FILE elsewhere, "" nowhere). Exit 0 goals met, 3 not met, 1 error.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/testbed/lib.sh"
CK=${CREDKEEPER:-$ROOT/target/release/credkeeper}
[ -x "$CK" ] || die "no $CK: cargo build --release -p credkeeper first"
N=${BENCH_TASKS:-1000}
IDLE_N=${BENCH_IDLE_TASKS:-10000}
IDLE_SECS=${BENCH_IDLE_SECS:-30}
RUNS=${BENCH_RUNS:-20}
LAG_ROUNDS=${BENCH_LAG_ROUNDS:-3}
SINGLE_SECS=${BENCH_SINGLE_SECS:-60}
apt_install hyperfine >/dev/null
WORK=$(mktemp -d /tmp/ck-tasks-bench.XXXXXX)
SERVE_PID=
cleanup() {
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
  [ -f "$WORK/rucio.env" ] && "$ROOT/tests/testbed/stop-rucio.sh" "$WORK" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
export CREDKEEPER_STATE_DIR=$WORK/state XDG_RUNTIME_DIR=$WORK/run
mkdir -p "$XDG_RUNTIME_DIR" "$WORK/lag"

# ---- (1) start lag -----------------------------------------------------------------------
# The tasks' command and the spawn floor, built here (gcc): `stamp FILE` appends the
# CLOCK_REALTIME nanoseconds it started at; `spawn_floor N DIR PROGRAM` posix_spawns
# `PROGRAM DIR/i` N times back to back, nothing else.
apt_install gcc >/dev/null
gcc -O2 -o "$WORK/stamp" "$ROOT/bench/tasks/stamp.c"
gcc -O2 -o "$WORK/spawn_floor" "$ROOT/bench/tasks/spawn_floor.c"
STAMP=$WORK/stamp
{
  echo "tasks:"
  for i in $(seq 1 "$N"); do
    printf -- "- name: t%d\n  schedule: '@every 20s'\n  command: ['%s', '%s/lag/%d']\n" "$i" "$STAMP" "$WORK" "$i"
  done
} >"$WORK/lag.yaml"
# Started at least 4 s before a slot, so that its first slot is seen whole (runs prepared).
now=$(date +%s)
[ $(( (now / 20 + 1) * 20 - now )) -ge 4 ] || sleep $(( (now / 20 + 1) * 20 - now + 1 ))
start=$(date +%s)
first_due=$(( (start / 20 + 1) * 20 ))
"$CK" tasks serve "$WORK/lag.yaml" --grace 5 2>"$WORK/lag-serve.log" &
SERVE_PID=$!
# lags_from T0_NS LINE FILES...: line LINE of each file minus T0, in µs, sorted.
lags_from() { local t0=$1 line=$2; shift 2; awk -v t0="$t0" -v l="$line" 'FNR == l {printf "%.0f\n", ($1 - t0) / 1000}' "$@" | sort -n; }
# pct P FILE: the P-th percentile (nearest rank) of FILE's µs values, in ms.
pct() { awk -v p="$1" '{a[NR]=$1} END {i=int((p/100)*NR+0.999999); if(i<1)i=1; if(i>NR)i=NR; printf "%.2f", a[i]/1000}' "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
# median of the words given
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
# Rounds: the scheduler's slot (all N due), then, 6 s later and well before the next slot, the
# floor: the same N `stamp` processes started back to back by posix_spawn and nothing else
# (bench/tasks/spawn_floor.c; Rust's std::process::Command uses posix_spawn here, same process
# group, stdin and pipes), lag from just before its first start. Machine load that changes
# during the benchmark then hits both sides of a round alike; the ratio is taken per round.
LAG_ROWS=()
RATIOS50=() RATIOS99=()
for ((r = 1; r <= LAG_ROUNDS; r++)); do
  due=$((first_due + 20 * (r - 1)))
  while [ "$(date +%s)" -lt $((due + 6)) ]; do sleep 0.5; done
  # One directory for every round, as the tasks' `lag/`: each process appends its line to
  # a file that a process of the round before made, in both, and only round 1 creates them.
  mkdir -p "$WORK/floor-c"
  read -r C_T0 _ _ C_FAILED < <("$WORK/spawn_floor" "$N" "$WORK/floor-c" "$STAMP")
  [ "$C_FAILED" = 0 ] || die "spawn_floor: $C_FAILED of $N processes failed"
  lags_from "${due}000000000" "$r" "$WORK"/lag/* >"$WORK/lags-$r.txt"
  lags_from "$C_T0" "$r" "$WORK/floor-c"/* >"$WORK/floor-c-$r.txt"
  count=$(wc -l <"$WORK/lags-$r.txt")
  P50=$(pct 50 "$WORK/lags-$r.txt"); P99=$(pct 99 "$WORK/lags-$r.txt"); PMAX=$(pct 100 "$WORK/lags-$r.txt")
  F50=$(pct 50 "$WORK/floor-c-$r.txt"); F99=$(pct 99 "$WORK/floor-c-$r.txt"); FMAX=$(pct 100 "$WORK/floor-c-$r.txt")
  RATIOS50+=("$(ratio "$P50" "$F50")") RATIOS99+=("$(ratio "$P99" "$F99")")
  LAG_ROWS+=("| $r | $count | $P50 | $P99 | $PMAX | $F50 | $F99 | $FMAX | ${RATIOS50[-1]} | ${RATIOS99[-1]} |")
done
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=
R50=$(median "${RATIOS50[@]}"); R99=$(median "${RATIOS99[@]}")
P99_ALL=$(median "$(for ((r = 1; r <= LAG_ROUNDS; r++)); do pct 99 "$WORK/lags-$r.txt"; echo; done)")
# Python's subprocess.Popen (fork/exec), the floor of earlier runs, once, for comparison.
mkdir -p "$WORK/floor-py"
PY_T0=$(python3 - "$N" "$WORK/floor-py" "$STAMP" <<'PY'
import subprocess, sys, time
n, d, stamp = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t0 = time.time_ns()
ps = [subprocess.Popen([stamp, f"{d}/{i}"]) for i in range(n)]
for p in ps:
    p.wait()
print(t0)
PY
)
lags_from "$PY_T0" 1 "$WORK"/floor-py/* >"$WORK/floor-py.txt"
PY_ROW="$(pct 50 "$WORK/floor-py.txt") | $(pct 99 "$WORK/floor-py.txt") | $(pct 100 "$WORK/floor-py.txt")"

# ---- (1b) a single task: its start lag, alone -----------------------------------------------
# One task `@every 1s` for SINGLE_SECS seconds; `stamp` appends one line per run; each run's
# lag = its stamp - the whole second it was due at. Its floor, right after: `spawn_floor -s`
# sleeps to each whole second (clock_nanosleep) and posix_spawns the same `stamp`, SINGLE_SECS
# times: waking up and starting one process, nothing else, lag counted the same way.
printf -- "tasks:\n- name: single\n  schedule: '@every 1s'\n  command: ['%s', '%s/single']\n" "$STAMP" "$WORK" >"$WORK/single.yaml"
"$CK" tasks serve "$WORK/single.yaml" --grace 5 2>"$WORK/single-serve.log" &
SERVE_PID=$!
sleep 3 # started and settled; the runs of these seconds are not counted
: >"$WORK/single"
sleep "$SINGLE_SECS"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=
awk '{s = int($1 / 1e9); printf "%.0f\n", ($1 - s * 1e9) / 1000}' "$WORK/single" | sort -n >"$WORK/single-lags.txt"
S_COUNT=$(wc -l <"$WORK/single-lags.txt")
S50=$(pct 50 "$WORK/single-lags.txt"); S99=$(pct 99 "$WORK/single-lags.txt"); SMAX=$(pct 100 "$WORK/single-lags.txt")
"$WORK/spawn_floor" -s "$SINGLE_SECS" "$WORK/single-floor" "$STAMP" >/dev/null \
  || die "spawn_floor -s failed"
awk '{s = int($1 / 1e9); printf "%.0f\n", ($1 - s * 1e9) / 1000}' "$WORK/single-floor" | sort -n >"$WORK/single-floor.txt"
SF50=$(pct 50 "$WORK/single-floor.txt"); SF99=$(pct 99 "$WORK/single-floor.txt"); SFMAX=$(pct 100 "$WORK/single-floor.txt")

# ---- (2) idle -----------------------------------------------------------------------------
{
  echo "tasks:"
  for i in $(seq 1 "$IDLE_N"); do
    printf -- "- name: i%d\n  schedule: '@hourly'\n  command: [/bin/true]\n" "$i"
  done
} >"$WORK/idle.yaml"
"$CK" tasks serve "$WORK/idle.yaml" 2>"$WORK/idle-serve.log" &
SERVE_PID=$!
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$SERVE_PID/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); sleep "$IDLE_SECS"; t1=$(ticks)
IDLE_CPU=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$IDLE_SECS" 'BEGIN {printf "%.2f", (b - a) / hz / s * 100}')
RSS=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$SERVE_PID/status")
HWM=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$SERVE_PID/status")
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=

# ---- (3) credential preparation per auth type ----------------------------------------------
# (not indented: the whole section runs unless BENCH_SKIP_RUCIO=1)
PREP="| (not run: BENCH_SKIP_RUCIO=1) | | |"
if [ "${BENCH_SKIP_RUCIO:-0}" != 1 ]; then
"$ROOT/tests/testbed/start-rucio.sh" "$WORK" >/dev/null
R() { sed -n "s/^$1=//p" "$WORK/rucio.env" | tr -d "'"; }
RB=$(R RUCIO_BIN); RPY=$(R RUCIO_PYTHON); URL=$(R RUCIO_URL); TLS=$(R RUCIO_TLS_URL); CA=$(R RUCIO_CA_CERT)
mkdir -p "$WORK/secrets"
cp "$(R RUCIO_PASSWORD_FILE)" "$WORK/secrets/PW"
cat >"$WORK/prep.yaml" <<EOF
tasks:
- name: userpass
  schedule: '@hourly'
  command: [/bin/true]
  env: {RUCIO_CFG_AUTH_TYPE: userpass, RUCIO_CFG_RUCIO_HOST: $URL, RUCIO_CFG_ACCOUNT: robot, RUCIO_CFG_USERNAME: robot, RUCIO_CFG_PASSWORD: "{{ PW }}"}
- name: x509
  schedule: '@hourly'
  command: [/bin/true]
  env: {RUCIO_CFG_AUTH_TYPE: x509, RUCIO_CFG_RUCIO_HOST: $TLS, RUCIO_CFG_ACCOUNT: robot, RUCIO_CFG_CA_CERT: $CA, RUCIO_CFG_CLIENT_CERT: $(R RUCIO_CLIENT_CERT), RUCIO_CFG_CLIENT_KEY: $(R RUCIO_CLIENT_KEY)}
EOF
cat >"$WORK/login.py" <<'EOF'
import os, sys, tempfile
os.environ["TMPDIR"] = tempfile.mkdtemp()
from rucio.client import Client
Client()
EOF
env -u RUCIO_ACCOUNT -u RUCIO_CLIENT_CERT -u RUCIO_CLIENT_KEY hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$WORK/prep.json" \
  -n "credkeeper tasks run (userpass: login + session-token rucio.cfg)" "$CK tasks run $WORK/prep.yaml --task userpass --secret-dir $WORK/secrets" \
  -n "python Client() userpass login" "env RUCIO_CONFIG=$(R RUCIO_CLIENT_CONFIG) $RPY $WORK/login.py" \
  -n "credkeeper tasks run (x509: rucio.cfg)" "$CK tasks run $WORK/prep.yaml --task x509" \
  -n "python Client() x509 login" "env RUCIO_CONFIG=$(R RUCIO_CLIENT_CONFIG_X509) $RPY $WORK/login.py" \
  >"$WORK/prep.txt" 2>&1 || { cat "$WORK/prep.txt" >&2; die "hyperfine failed"; }
PREP=$(python3 - "$WORK/prep.json" <<'EOF'
import json, sys, statistics
r = json.load(open(sys.argv[1]))["results"]
for x in r:
    print(f"| {x['command']} | {statistics.median(x['times'])*1000:.1f} | {x['mean']*1000:.1f} ± {x['stddev']*1000:.1f} |")
EOF
)
fi # (3)

GOAL_LAG=met; awk -v p="$P99_ALL" 'BEGIN {exit !(p < 5)}' || GOAL_LAG="not met"
GOAL_FLOOR=met; awk -v r="$R99" 'BEGIN {exit !(r <= 1.05)}' || GOAL_FLOOR="not met"
GOAL_SINGLE=met; awk -v p="$S99" 'BEGIN {exit !(p < 2)}' || GOAL_SINGLE="not met"
GOAL_RSS=met; awk -v r="$RSS" 'BEGIN {exit !(r < 50)}' || GOAL_RSS="not met"
REPORT=$(cat <<EOF
# Benchmark: the task scheduler

Run of $(date -u '+%Y-%m-%d %H:%M UTC') at commit \`$(git -C "$ROOT" rev-parse --short HEAD)\`, $(nproc) CPUs
($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;
\`$CK\` ($($CK --version)). Reproduce: \`bench/tasks.sh\`.

## (1) Start lag, $N tasks due in the same slot

Each task's command is \`stamp FILE\` (bench/tasks/stamp.c), which writes the wall-clock
nanoseconds it started at; lag = that - the due time (the \`@every 20s\` slot). It includes
creating $N processes on $(nproc) CPUs one after the other, which no scheduler avoids: the last
task's lag is mostly the $((N - 1)) process starts before it.

The floor, in the same round 6 s after the slot: the same $N \`stamp\` processes started back
to back by \`posix_spawn\` and nothing else (bench/tasks/spawn_floor.c: own process group,
stdin /dev/null, stdout/stderr to pipes, as the scheduler starts a task; each appends to its
own file, made in round 1, as each task's does), lag from just before the first start.
$LAG_ROUNDS rounds (slots); the ratio is scheduler ÷ floor of the same round.

| round | runs seen | scheduler p50 ms | p99 ms | max ms | floor p50 ms | p99 ms | max ms | ratio p50 | ratio p99 |
|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|
$(printf '%s\n' "${LAG_ROWS[@]}")

Median of the rounds' ratios: p50 ${R50}×, p99 ${R99}×. Python's \`Popen\` (fork/exec, the
floor of earlier runs) of the same $N processes, once after the rounds: p50 | p99 | max ms =
$PY_ROW.

## (1b) Start lag of a single task

One task \`@every 1s\` for $SINGLE_SECS s ($S_COUNT runs), lag = its stamp - the second it was
due. Floor, right after: bench/tasks/spawn_floor.c \`-s\` sleeps to each whole second
(\`clock_nanosleep\`, absolute) and \`posix_spawn\`s the same command, $SINGLE_SECS times, lag
counted the same way: waking up on time and starting one process, nothing else.

| | p50 ms | p99 ms | max ms |
|---|--:|--:|--:|
| credkeeper tasks serve, one task, from the due time | $S50 | $S99 | $SMAX |
| floor: sleep to the second, one \`posix_spawn\` | $SF50 | $SF99 | $SFMAX |
| ratio scheduler / floor | $(ratio "$S50" "$SF50") | $(ratio "$S99" "$SF99") | $(ratio "$SMAX" "$SFMAX") |

## (2) Idle, $IDLE_N tasks defined (none due in the window)

VmRSS $RSS MB, VmHWM $HWM MB; CPU $IDLE_CPU % of one core over $IDLE_SECS s.

## (3) Credential preparation for one run, against Rucio 41.5.1 (one gunicorn worker)

\`credkeeper tasks run\` of a task whose command is \`true\` (userpass: the login at
\`/auth/userpass\`, the session token and \`rucio.cfg\` written 0600; x509: \`rucio.cfg\`
with the certificate paths, no login — the task's client logs in) next to the Python
client's \`Client()\` with an empty token cache (it logs in while it is built).
hyperfine, $RUNS runs each:

| command | median ms | mean ± σ ms |
|---|--:|--:|
$PREP

| goal | measured | |
|---|---|---|
| < 5 ms p99 start lag ($N tasks; median of the rounds) | $P99_ALL ms | $GOAL_LAG |
| ≤ 1.05× the posix_spawn floor at p99 ($N tasks; median of the rounds' ratios) | ${R99}× | $GOAL_FLOOR |
| single task: p99 start lag < 2 ms | $S99 ms | $GOAL_SINGLE |
| < 50 MB RSS at $IDLE_N tasks | $RSS MB | $GOAL_RSS |
EOF
)
OUT=${BENCH_OUT-$ROOT/bench/tasks-results.md}
if [ -n "$OUT" ]; then echo "$REPORT" | tee "$OUT"; else echo "$REPORT"; fi
[ "$GOAL_LAG$GOAL_FLOOR$GOAL_SINGLE$GOAL_RSS" = metmetmetmet ] && exit 0 || exit 3
