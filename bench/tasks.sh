#!/usr/bin/env bash
# bench/tasks.sh - the scheduler's overhead and a run's credential preparation, measured.
#
#   (1) start lag: 1,000 tasks due in the same slot (`@every 20s`); each task's command is
#       `touch FILE`, whose modification time says when it ran; lag = that - due time.
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
# Output: Markdown on stdout and in bench/tasks-results.md. Exit 0 goals met, 3 not met, 1 error.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/testbed/lib.sh"
CK=${CREDKEEPER:-$ROOT/target/release/credkeeper}
[ -x "$CK" ] || die "no $CK: cargo build --release -p credkeeper first"
N=${BENCH_TASKS:-1000}
IDLE_N=${BENCH_IDLE_TASKS:-10000}
IDLE_SECS=${BENCH_IDLE_SECS:-30}
RUNS=${BENCH_RUNS:-20}
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
{
  echo "tasks:"
  for i in $(seq 1 "$N"); do
    printf -- "- name: t%d\n  schedule: '@every 20s'\n  command: [/usr/bin/touch, '%s/lag/%d']\n" "$i" "$WORK" "$i"
  done
} >"$WORK/lag.yaml"
"$CK" tasks serve "$WORK/lag.yaml" --grace 5 2>"$WORK/lag-serve.log" &
SERVE_PID=$!
# Wait for the first slot the scheduler saw whole, and its runs.
start=$(date +%s)
first_due=$(( (start / 20 + 1) * 20 ))
while [ "$(date +%s)" -lt $((first_due + 8)) ]; do sleep 1; done
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=
lags=$WORK/lags.txt
# Each file's modification time is when its `touch` ran (nanoseconds).
stat -c %.9Y "$WORK"/lag/* | awk -v d="$first_due" '{printf "%d\n", ($1 - d) * 1000000}' | sort -n >"$lags"
count=$(wc -l <"$lags")
pct() { awk -v p="$1" '{a[NR]=$1} END {i=int((p/100)*NR+0.999999); if(i<1)i=1; if(i>NR)i=NR; printf "%.2f", a[i]/1000}' "$lags"; }
P50=$(pct 50); P99=$(pct 99); PMAX=$(pct 100)
# The floor on this machine: the same $N processes started back to back by Python's
# Popen, no scheduler; lag counted from the first start.
FLOOR=$(python3 - "$N" "$WORK/floor" <<'PY'
import os, subprocess, sys, time
n, d = int(sys.argv[1]), sys.argv[2]
os.makedirs(d)
t0 = time.time_ns()
ps = [subprocess.Popen(["/usr/bin/touch", f"{d}/{i}"]) for i in range(n)]
for p in ps:
    p.wait()
ts = sorted(os.stat(f"{d}/{i}").st_mtime_ns - t0 for i in range(n))
pick = lambda q: ts[min(n - 1, max(0, int(q * n + 0.999999) - 1))] / 1e6
print(f"{pick(0.5):.2f} | {pick(0.99):.2f} | {ts[-1] / 1e6:.2f}")
PY
)

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

GOAL_LAG=met; awk -v p="$P99" 'BEGIN {exit !(p < 5)}' || GOAL_LAG="not met"
GOAL_RSS=met; awk -v r="$RSS" 'BEGIN {exit !(r < 50)}' || GOAL_RSS="not met"
REPORT=$(cat <<EOF
# Benchmark: the task scheduler

Run of $(date -u '+%Y-%m-%d %H:%M UTC') at commit \`$(git -C "$ROOT" rev-parse --short HEAD)\`, $(nproc) CPUs
($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;
\`$CK\` ($($CK --version)). Reproduce: \`bench/tasks.sh\`.

## (1) Start lag, $N tasks due in the same slot

Each task's command is \`touch FILE\`; lag = the file's modification time - the due time
(the \`@every 20s\` slot). It includes creating $N processes on $(nproc) CPUs one after the
other, which no scheduler avoids: the last task's lag is mostly the $((N - 1)) process starts
before it. Runs seen: $count of $N.

| | p50 ms | p99 ms | max ms |
|---|--:|--:|--:|
| credkeeper tasks serve, from the due time | $P50 | $P99 | $PMAX |
| floor: Python \`Popen\` of the same $N processes, no scheduler, from the first start | $FLOOR |

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
| < 5 ms p99 start lag | $P99 ms | $GOAL_LAG |
| < 50 MB RSS at $IDLE_N tasks | $RSS MB | $GOAL_RSS |
EOF
)
echo "$REPORT" | tee "$ROOT/bench/tasks-results.md"
[ "$GOAL_LAG" = met ] && [ "$GOAL_RSS" = met ] && exit 0 || exit 3
