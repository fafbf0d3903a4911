#!/usr/bin/env bash
# bench/rotation.sh - how long a rotated refresh token is at risk: the window between the
# provider rotating it and credkeeper having the new one committed to its store. A process
# killed inside it loses the grant (the provider has revoked the old token; the new one died
# with the process), unless the provider's reuse grace is configured (README, "refresh
# claims").
#
# Against the test OP rotating on every refresh (OP_RT_ROTATE=always): one device login, then
# BENCH_RUNS `credkeeper get -m 999999` runs, each a refresh_token grant whose answer carries
# a new refresh token. Each run logs (-vv, JSON) two times measured in the process:
#   answer -> commit: from the provider's answer in hand to the store's commit returning
#                     (the part credkeeper controls);
#   ask -> commit:    from sending the grant to the commit returning (adds the provider's
#                     work and the loopback transfer; the provider rotates somewhere inside).
# The true window lies between the two. Its floor, measured in the same run on the same file
# system: one synchronous 4 KiB write (dd oflag=dsync), as the store's commit fsyncs its WAL.
#
# Knobs: BENCH_RUNS (200) BENCH_NO_BUILD=1 (use target/release/credkeeper as it is)
#   BENCH_KEEP=1 (keep the work directory).
# Output: a markdown table on stdout, progress on stderr. Exit 0 when every run rotated and
# was measured; 1 on any error (the work directory is then kept).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
TESTBED=$ROOT/tests/testbed
# shellcheck source=../tests/testbed/lib.sh
. "$TESTBED/lib.sh"
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

RUNS=${BENCH_RUNS:-200}
[ "$RUNS" -ge 20 ] || die "BENCH_RUNS must be >= 20"

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p credkeeper"
  (cd "$ROOT" && cargo build --release -p credkeeper >&2) || die "cargo build failed"
fi
CK=$ROOT/target/release/credkeeper
[ -x "$CK" ] || die "$CK missing (build it, or unset BENCH_NO_BUILD)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/credkeeper-rotation.XXXXXX")
OP_STATE=$WORK/op
BG_PIDS=()
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  local rc=$? p
  set +e
  for p in "${BG_PIDS[@]}"; do
    pid_alive "$p" && kill -TERM "$p" 2>/dev/null
  done
  "$TESTBED/stop-op.sh" "$OP_STATE" >/dev/null 2>&1
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Nothing below reads or writes the real user's files.
for v in $(compgen -e); do
  case $v in
    CREDKEEPER_* | BEARER_TOKEN* | XDG_*) unset "$v" ;;
  esac
done
export HOME=$WORK/home
export XDG_CONFIG_HOME=$HOME/.config XDG_DATA_HOME=$HOME/.local/share XDG_CACHE_HOME=$HOME/.cache
export XDG_RUNTIME_DIR=$WORK/run
export CREDKEEPER_STATE_DIR=$WORK/credkeeper-state
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"

OP_AT_TTL=3600 OP_RT_ROTATE=always "$TESTBED/start-op.sh" "$OP_STATE"
ISSUER=$(env_read "$OP_STATE/op.env" OP_ISSUER)
OP_LOG=$(env_read "$OP_STATE/op.env" OP_LOG)
CLIENT_ID=$(env_read "$OP_STATE/op.env" OP_ROBOT_CLIENT_ID)
SECRET_FILE=$WORK/client-secret
(umask 077 && env_read "$OP_STATE/op.env" OP_ROBOT_CLIENT_SECRET | tr -d '\n' >"$SECRET_FILE")

TOKEN_FILE=$XDG_RUNTIME_DIR/bt_rotation
ISSUER_ARGS=(--issuer "$ISSUER" --client-id "$CLIENT_ID" --client-secret-file "$SECRET_FILE" -o "$TOKEN_FILE")
device_login "credkeeper login" "$WORK/login.out" \
  "$CK" --insecure-loopback login "${ISSUER_ARGS[@]}"

grants() { grep -c -- "grant.success client=$CLIENT_ID grant_type=refresh_token" "$OP_LOG" || true; }
LOGS=$WORK/get.jsonl
before=$(grants)
log "$RUNS refreshes, each rotating the refresh token"
for ((i = 1; i <= RUNS; i++)); do
  "$CK" --insecure-loopback -vv --log-format json get "${ISSUER_ARGS[@]}" -m 999999 \
    >/dev/null 2>>"$LOGS" || die "run $i: credkeeper get failed (log: $LOGS)"
done
rotated=$(($(grants) - before))
[ "$rotated" -eq "$RUNS" ] || die "$rotated refresh grants at the provider for $RUNS runs"

# The floor: one synchronous 4 KiB write on the store's file system.
FLOOR_N=200
dd_out=$(LC_ALL=C dd if=/dev/zero of="$CREDKEEPER_STATE_DIR/floor" bs=4k count=$FLOOR_N oflag=dsync 2>&1) \
  || die "dd oflag=dsync failed: $dd_out"
rm -f "$CREDKEEPER_STATE_DIR/floor"
floor_s=$(sed -n 's/.* copied, \([0-9.e-]*\) s,.*/\1/p' <<<"$dd_out")
[ -n "$floor_s" ] || die "cannot read dd's time from: $dd_out"

fs=$(df -PT "$CREDKEEPER_STATE_DIR" | awk 'NR == 2 {print $2}')
printf 'machine: %s CPUs, %s; file system of the store: %s; %s\n' "$(nproc)" \
  "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)" "$fs" "$("$CK" --version)"
"$TESTBED_PYTHON" - "$LOGS" "$RUNS" "$floor_s" "$FLOOR_N" <<'EOF' || die "no window measured"
import json, statistics, sys
path, runs, floor_s, floor_n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
answer, ask = [], []
for line in open(path):
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if fields.get("message") == "rotated refresh token committed":
        answer.append(fields["answer_to_commit_us"] / 1000)
        ask.append(fields["ask_to_commit_us"] / 1000)
if len(answer) != runs:
    sys.exit(f"{len(answer)} windows logged for {runs} runs")
def q(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]
floor = floor_s / floor_n * 1000
print(f"\n{runs} rotating refreshes; the floor is one synchronous 4 KiB write ({floor_n} by dd oflag=dsync, same run)\n")
print("| window | p50 ms | p90 ms | p99 ms | max ms | p50 ÷ floor |")
print("|---|---:|---:|---:|---:|---:|")
for name, v in (("answer → commit", answer), ("ask → commit", ask)):
    print(f"| {name} | {q(v, .5):.2f} | {q(v, .9):.2f} | {q(v, .99):.2f} | {max(v):.2f} | {q(v, .5) / floor:.2f} |")
print(f"| floor: one 4 KiB write + fdatasync | {floor:.2f} | | | | 1 |")
EOF
log "done: $rotated rotations measured"
