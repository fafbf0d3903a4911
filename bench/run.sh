#!/usr/bin/env bash
# bench/run.sh - `credkeeper get` side by side with oidc-agent's `oidc-token`, against the
# test OpenID Provider of tests/testbed (npm oidc-provider on 127.0.0.1).
#
#   (a) reuse:   a valid access token is already in place, asked for >= 300 s of lifetime
#                credkeeper get -m 300 -o FILE          vs  oidc-token -t 300 ACCOUNT
#   (b) refresh: a real refresh_token grant at the provider on every run
#                credkeeper get -m 999999 -o FILE       vs  oidc-token -t 999999 ACCOUNT
#   (c) peak RSS of each command (/usr/bin/time -v, "Maximum resident set size"),
#       plus the high-water mark of the oidc-agent daemon that oidc-token talks to.
#
# Non-interactive and idempotent: installs what is missing (oidc-agent-cli, hyperfine, time),
# builds credkeeper (release), and runs everything in a fresh mktemp directory: its own OP
# (OP_AT_TTL=3600), its own oidc-agent (own socket, own OIDC_CONFIG_DIR and HOME), its own
# credkeeper state directory. Both the OP and the agent are stopped on exit.
#
# Knobs (environment): BENCH_RUNS (50, per command) BENCH_ROUNDS (5: the runs are split
#   into that many blocks alternating between the commands) BENCH_WARMUP (3, per block)
#   BENCH_RSS_RUNS (10)
#   BENCH_KEEP=1 keeps the work directory; BENCH_NO_BUILD=1 skips cargo (uses
#   target/release/credkeeper as it is); BENCH_JSON_DIR=DIR copies hyperfine's JSON there.
# Output: a markdown table on stdout (progress and hyperfine's own report on stderr).
# Exit status: 0 = measured and the goal holds (credkeeper's reuse median < 5 ms and below
# oidc-token's); 3 = measured, goal not met; 4 = the machine was too busy for a verdict (the
# /bin/true floor moved by more than half between blocks): rerun; 1 = error (the work
# directory is then kept).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
TESTBED=$ROOT/tests/testbed
# shellcheck source=../tests/testbed/lib.sh
. "$TESTBED/lib.sh"
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

RUNS=${BENCH_RUNS:-50}
ROUNDS=${BENCH_ROUNDS:-5}
WARMUP=${BENCH_WARMUP:-3}
RSS_RUNS=${BENCH_RSS_RUNS:-10}
GOAL_MS=5
[ "$RUNS" -ge 30 ] || die "BENCH_RUNS must be >= 30"

# --- tools -----------------------------------------------------------------------------------
apt_install oidc-agent-cli hyperfine time
for t in oidc-agent oidc-gen oidc-token oidc-add hyperfine /usr/bin/time curl; do
  command -v "$t" >/dev/null || die "$t not found after installing"
done

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p credkeeper"
  (cd "$ROOT" && cargo build --release -p credkeeper >&2)
fi
CK=$ROOT/target/release/credkeeper
[ -x "$CK" ] || die "$CK missing (build it, or unset BENCH_NO_BUILD)"

# --- isolated work directory and cleanup --------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/credkeeper-bench.XXXXXX")
# hyperfine -N and max_rss split the command lines on spaces: no path may hold one.
case "$WORK$ROOT" in *[[:space:]]*) rm -rf "$WORK"; die "paths with spaces are not supported: $WORK $ROOT" ;; esac
OP_STATE=$WORK/op
AGENT_PIDS=()
BG_PIDS=()
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  local rc=$? p
  set +e
  for p in "${BG_PIDS[@]}"; do
    pid_alive "$p" && kill -TERM "$p" 2>/dev/null
  done
  for p in "${AGENT_PIDS[@]}"; do
    stop_pid "$p" "oidc-agent --socket-path=$WORK/agent/" >/dev/null 2>&1
  done
  "$TESTBED/stop-op.sh" "$OP_STATE" >/dev/null 2>&1
  if [ "${BENCH_KEEP:-0}" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ] && [ "$rc" -ne 4 ]; }; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Nothing below reads or writes the real user's files: HOME, XDG dirs, the oidc-agent config
# dir and the credkeeper state dir all live under $WORK; inherited settings are dropped.
# (cargo ran above, with the real HOME.)
for v in $(compgen -e); do
  case $v in
    CREDKEEPER_* | BEARER_TOKEN* | XDG_* | OIDC_*) unset "$v" ;;
  esac
done
export HOME=$WORK/home
export XDG_CONFIG_HOME=$HOME/.config XDG_DATA_HOME=$HOME/.local/share XDG_CACHE_HOME=$HOME/.cache
export XDG_RUNTIME_DIR=$WORK/run
export OIDC_CONFIG_DIR=$WORK/oidc-config
export CREDKEEPER_STATE_DIR=$WORK/credkeeper-state
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" "$OIDC_CONFIG_DIR" "$WORK/agent"
chmod 700 "$XDG_RUNTIME_DIR" "$OIDC_CONFIG_DIR" "$WORK/agent"

# --- OpenID Provider ---------------------------------------------------------------------
OP_AT_TTL=3600 "$TESTBED/start-op.sh" "$OP_STATE"
ISSUER=$(env_read "$OP_STATE/op.env" OP_ISSUER)
OP_LOG=$(env_read "$OP_STATE/op.env" OP_LOG)
# oidc-agent 4.2.6 always authenticates at the token and device endpoints with HTTP Basic
# (an empty secret for a public client), which the provider rejects for the public
# device-client (token_endpoint_auth_method none). Both tools therefore use the confidential
# robot-client (device_code + refresh_token grants), with the same secret.
CLIENT_ID=$(env_read "$OP_STATE/op.env" OP_ROBOT_CLIENT_ID)
CLIENT_SECRET=$(env_read "$OP_STATE/op.env" OP_ROBOT_CLIENT_SECRET)
SECRET_FILE=$WORK/client-secret
(umask 077 && printf '%s' "$CLIENT_SECRET" >"$SECRET_FILE")
SCOPES="openid offline_access"

# Count provider log lines matching a pattern (the provider logs every request and grant).
op_count() { grep -c -- "$1" "$OP_LOG" || true; }

# --- oidc-agent + account ----------------------------------------------------------------
AGENT_JSON=$(oidc-agent --socket-path="$WORK/agent/oidc-agent.sock" --json --quiet)
export OIDC_SOCK
OIDC_SOCK=$(json_get socket <<<"$AGENT_JSON")
AGENT_PID=$(json_get dpid <<<"$AGENT_JSON")
AGENT_PIDS+=("$AGENT_PID")
export OIDCD_PID=$AGENT_PID
[ -S "$OIDC_SOCK" ] || die "oidc-agent socket $OIDC_SOCK missing"
log "oidc-agent pid $AGENT_PID on $OIDC_SOCK"

ACCOUNT=bench
export OIDC_ENCRYPTION_PW=bench-encryption-password
device_login oidc-gen "$WORK/oidc-gen.out" \
  oidc-gen "$ACCOUNT" --issuer="$ISSUER" --client-id="$CLIENT_ID" --client-secret="$CLIENT_SECRET" \
  --scope="$SCOPES" --flow=device --pw-env --no-url-call --confirm-default --prompt=none
oidc-add -a 2>/dev/null | grep -qx "$ACCOUNT" || die "account $ACCOUNT not loaded in the agent"

# --- credkeeper login --------------------------------------------------------------------
TOKEN_FILE=$WORK/run/bt_bench
# No --scopes: `login` always asks for "openid offline_access" (what oidc-gen is given), and
# `get` without --scopes accepts the token in the file whatever its scopes.
CK_ARGS=(--insecure-loopback get --issuer "$ISSUER" --client-id "$CLIENT_ID"
  --client-secret-file "$SECRET_FILE" -o "$TOKEN_FILE")
device_login "credkeeper login" "$WORK/credkeeper-login.out" \
  "$CK" --insecure-loopback login --issuer "$ISSUER" --client-id "$CLIENT_ID" \
  --client-secret-file "$SECRET_FILE" -o "$TOKEN_FILE"

# Both sides now hold a valid access token (3600 s) for alice from the same client.
"$CK" "${CK_ARGS[@]}" -m 300 || die "credkeeper get -m 300 failed"
oidc-token -t 300 "$ACCOUNT" >/dev/null || die "oidc-token -t 300 failed"
for who in credkeeper oidc-agent; do
  if [ $who = credkeeper ]; then tok=$(cat "$TOKEN_FILE"); else tok=$(oidc-token -t 300 "$ACCOUNT"); fi
  jwt_payload "$tok" | "$TESTBED_PYTHON" -c 'import json, sys, time
c = json.load(sys.stdin); left = c["exp"] - time.time()
sub, cid = c["sub"], c["client_id"]
assert sub == "alice" and cid == sys.argv[1] and left > 300, c
print(f"[run.sh] {sys.argv[2]} holds a token for {sub} via {cid}, {left:.0f} s left", file=sys.stderr)' \
    "$CLIENT_ID" "$who"
done

# The agent side of oidc-token: both oidc-agent processes. VmHWM (peak RSS) is reset here,
# after the account setup (oidc-gen's password hashing makes the agent peak at ~70 MiB), so
# the value read at the end is the peak while serving the benchmark runs.
agent_pids() { printf '%s\n' "$AGENT_PID"; cat "/proc/$AGENT_PID/task/"*/children 2>/dev/null | tr ' ' '\n' | grep . || true; }
agent_kib() {
  local field=$1 total=0 p v
  for p in $(agent_pids); do
    v=$(sed -n "s/^$field:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$p/status" 2>/dev/null) || v=0
    total=$((total + ${v:-0}))
  done
  printf '%s\n' "$total"
}
AGENT_SETUP_HWM=$(agent_kib VmHWM)
for p in $(agent_pids); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || log "cannot reset VmHWM of $p"; done

CK_REUSE="$CK ${CK_ARGS[*]} -m 300"
PEER_REUSE="oidc-token -t 300 $ACCOUNT"
CK_REFRESH="$CK ${CK_ARGS[*]} -m 999999"
PEER_REFRESH="oidc-token -t 999999 $ACCOUNT"

JSON_DIR=$WORK/results
mkdir -p "$JSON_DIR"
# /bin/true is the floor: what starting any process costs here.
FLOOR=$(command -v true)
case $FLOOR in /*) ;; *) FLOOR=/bin/true ;; esac

# Runs are split into ROUNDS blocks that alternate between the commands (and reverse their
# order every other round), so a change in machine load hits both sides alike instead of
# whichever happened to run second. The report merges the blocks.
PER=$(((RUNS + ROUNDS - 1) / ROUNDS))
[ "$PER" -ge 2 ] || die "BENCH_RUNS / BENCH_ROUNDS must be >= 2"
TOTAL=$((PER * ROUNDS))

# block PHASE NAME ROUND CMD: one hyperfine invocation, JSON to results/PHASE-NAME-ROUND.json.
block() {
  local phase=$1 name=$2 round=$3 cmd=$4
  hyperfine -N --style none --warmup "$WARMUP" --runs "$PER" \
    --export-json "$JSON_DIR/$phase-$name-$round.json" -n "$name" "$cmd" >/dev/null \
    || die "hyperfine failed for $phase $name: $cmd"
}

# (b) a block whose every run must be a refresh_token grant at the provider.
declare -A REFRESH_GRANTS=()
refresh_block() {
  local name=$1 round=$2 cmd=$3 rt0 cc0 rt1 cc1 n
  rt0=$(op_count "grant.success client=$CLIENT_ID grant_type=refresh_token")
  cc0=$(op_count "grant_type=client_credentials")
  block refresh "$name" "$round" "$cmd"
  rt1=$(op_count "grant.success client=$CLIENT_ID grant_type=refresh_token")
  cc1=$(op_count "grant_type=client_credentials")
  n=$((rt1 - rt0))
  [ "$n" -ge $((PER + WARMUP)) ] || die "$name: only $n refresh grants for $((PER + WARMUP)) runs"
  [ "$cc1" -eq "$cc0" ] || die "$name: client_credentials grants seen during the refresh runs"
  REFRESH_GRANTS[$name]=$((${REFRESH_GRANTS[$name]:-0} + n))
}

# --- (a) reuse ---------------------------------------------------------------------------
log "(a) reuse: $ROUNDS blocks x $PER runs (+ $WARMUP warmup) per command"
before=$(wc -l <"$OP_LOG")
for ((r = 0; r < ROUNDS; r++)); do
  if ((r % 2 == 0)); then order=(credkeeper oidc-token version floor); else order=(floor version oidc-token credkeeper); fi
  for who in "${order[@]}"; do
    case $who in
      credkeeper) block reuse credkeeper "$r" "$CK_REUSE" ;;
      oidc-token) block reuse oidc-token "$r" "$PEER_REUSE" ;;
      version) block reuse version "$r" "$CK --version" ;;
      floor) block reuse floor "$r" "$FLOOR" ;;
    esac
  done
done
after=$(wc -l <"$OP_LOG")
[ "$after" -eq "$before" ] || die "the provider saw $((after - before)) log lines during the reuse runs (expected none)"

# --- (b) refresh -------------------------------------------------------------------------
log "(b) refresh: $ROUNDS blocks x $PER runs (+ $WARMUP warmup) per command"
for ((r = 0; r < ROUNDS; r++)); do
  if ((r % 2 == 0)); then order=(credkeeper oidc-token); else order=(oidc-token credkeeper); fi
  for who in "${order[@]}"; do
    case $who in
      credkeeper) refresh_block credkeeper "$r" "$CK_REFRESH" ;;
      oidc-token) refresh_block oidc-token "$r" "$PEER_REFRESH" ;;
    esac
  done
done
for who in credkeeper oidc-token; do
  log "$who: ${REFRESH_GRANTS[$who]} refresh_token grants at the provider for $((TOTAL + ROUNDS * WARMUP)) runs"
done

# --- (c) peak RSS ------------------------------------------------------------------------
# max_rss NAME CMD: largest "Maximum resident set size" (KiB) over RSS_RUNS runs.
max_rss() {
  local name=$1 cmd=$2 i kib best=0
  for ((i = 0; i < RSS_RUNS; i++)); do
    # shellcheck disable=SC2086  # cmd is a plain word list (see above)
    /usr/bin/time -v -o "$WORK/time.out" $cmd >/dev/null 2>"$WORK/time.err" \
      || { cat "$WORK/time.err" >&2; die "$name failed under /usr/bin/time"; }
    kib=$(sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$WORK/time.out")
    [ "$kib" -gt "$best" ] && best=$kib
  done
  printf '%s\n' "$best"
}
log "(c) peak RSS: $RSS_RUNS runs each"
RSS_CK_REUSE=$(max_rss credkeeper "$CK_REUSE")
RSS_PEER_REUSE=$(max_rss oidc-token "$PEER_REUSE")
RSS_CK_REFRESH=$(max_rss credkeeper "$CK_REFRESH")
RSS_PEER_REFRESH=$(max_rss oidc-token "$PEER_REFRESH")
AGENT_HWM=$(agent_kib VmHWM)
AGENT_RSS=$(agent_kib VmRSS)

# --- report ------------------------------------------------------------------------------
CPU=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git --no-optional-locks -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then REV="$REV+changes"; fi
CK_VER="$("$CK" --version 2>/dev/null || echo credkeeper) (tree $REV, binary $(($(stat -c %s "$CK") / 1024)) KiB)"
rc=0
"$TESTBED_PYTHON" - "$JSON_DIR" "$GOAL_MS" "$TOTAL" "$WARMUP" "$RSS_RUNS" "$ROUNDS" \
  "$RSS_CK_REUSE" "$RSS_PEER_REUSE" "$RSS_CK_REFRESH" "$RSS_PEER_REFRESH" \
  "$AGENT_HWM" "$AGENT_RSS" "$AGENT_SETUP_HWM" "$(nproc)" "$CPU" "$CK_VER" \
  "$(oidc-agent --version 2>/dev/null | head -n 1)" "$(hyperfine --version)" \
  "$CK_REUSE" "$PEER_REUSE" "$CK_REFRESH" "$PEER_REFRESH" "$ROOT" <<'PY' || rc=$?
import glob, json, os, statistics, sys
(d, goal, runs, warmup, rss_runs, rounds, rss_ck_reuse, rss_peer_reuse, rss_ck_refresh,
 rss_peer_refresh, agent_hwm, agent_rss, agent_setup_hwm, nproc, cpu, ck_ver, peer_ver, hf_ver,
 ck_reuse, peer_reuse, ck_refresh, peer_refresh, root) = sys.argv[1:]
goal = float(goal)

def load(phase, name):
    """Merge the blocks of one command: all run times, CPU time weighted by runs."""
    times, cpu, block_medians = [], 0.0, []
    for f in sorted(glob.glob(os.path.join(d, f"{phase}-{name}-*.json"))):
        r = json.load(open(f))["results"][0]
        times += r["times"]
        cpu += (r["user"] + r["system"]) * len(r["times"])
        block_medians.append(r["median"])
    return {"median": statistics.median(times), "mean": statistics.mean(times),
            "stddev": statistics.stdev(times), "min": min(times),
            "cpu": cpu / len(times), "n": len(times), "blocks": block_medians}

def ms(x):
    return x * 1000.0

def mib(kib):
    return f"{int(kib) / 1024:.1f} MiB"

def row(label, r, ratio, rss):
    # × /bin/true: this command's median over the floor's, both from this run's blocks.
    return (f"| {label} | {ms(r['median']):.2f} | {ms(r['mean']):.2f} ± {ms(r['stddev']):.2f} "
            f"| {ms(r['min']):.2f} | {ms(r['cpu']):.2f} | {r['median'] / floor['median']:.2f} "
            f"| {ratio} | {rss} |")

ck_a, peer_a, floor = load("reuse", "credkeeper"), load("reuse", "oidc-token"), load("reuse", "floor")
version = load("reuse", "version")
ck_b, peer_b = load("refresh", "credkeeper"), load("refresh", "oidc-token")
assert all(x["n"] == int(runs) for x in (ck_a, peer_a, floor, version, ck_b, peer_b))
ra = peer_a["median"] / ck_a["median"]
rb = peer_b["median"] / ck_b["median"]
short = lambda c: c.replace(root + "/", "")

print(f"machine: {nproc} CPUs, {cpu}; {ck_ver}; {peer_ver}; {hf_ver}")
print(f"hyperfine -N, {runs} runs per command in {rounds} alternating blocks ({warmup} warmup runs each); "
      f"peak RSS = max over {rss_runs} runs of /usr/bin/time -v")
print()
print("| command | median ms | mean ± σ ms | min ms | user+sys ms | × /bin/true (median) | ratio oidc-token/credkeeper (median) | max RSS |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
print(row("(a) reuse: `credkeeper get -m 300`", ck_a, "1", mib(rss_ck_reuse)))
print(row("(a) reuse: `oidc-token -t 300`", peer_a, f"{ra:.2f}", mib(rss_peer_reuse)))
print(row("`credkeeper --version` (start-up alone)", version, "", ""))
print(row("floor: `/bin/true` (process start only)", floor, "", ""))
print(row("(b) refresh: `credkeeper get -m 999999`", ck_b, "1", mib(rss_ck_refresh)))
print(row("(b) refresh: `oidc-token -t 999999`", peer_b, f"{rb:.2f}", mib(rss_peer_refresh)))
print(f"| oidc-agent daemon (both processes) serving (a)–(c) | | | | | | | {mib(agent_hwm)} |")
print()
print(f"oidc-agent daemon: VmHWM {mib(agent_setup_hwm)} after account setup (reset before the runs), "
      f"VmRSS {mib(agent_rss)} at the end")
print()
print("commands (paths under the mktemp work directory):")
for c in (ck_reuse, peer_reuse, ck_refresh, peer_refresh):
    print(f"  {short(c)}")
print()
fb = floor["blocks"]
print(f"floor per block (median ms): {' '.join(f'{ms(x):.2f}' for x in fb)}")
print(f"ratio to the floor (median ÷ /bin/true's median, same run): reuse credkeeper "
      f"{ck_a['median'] / floor['median']:.2f}×, oidc-token {peer_a['median'] / floor['median']:.2f}×; "
      f"`credkeeper --version` {version['median'] / floor['median']:.2f}×; refresh credkeeper "
      f"{ck_b['median'] / floor['median']:.2f}×, oidc-token {peer_b['median'] / floor['median']:.2f}×")
noisy = max(fb) > 1.5 * min(fb)
med = ms(ck_a["median"])
ok = med < goal and ck_a["median"] < peer_a["median"]
verdict = "NO VERDICT, machine busy (floor moved > 50 % between blocks): rerun" if noisy else ("MET" if ok else "NOT MET")
print(f"goal (reuse: credkeeper median < {goal:g} ms and below oidc-token): "
      f"{verdict} ({med:.2f} ms vs {ms(peer_a['median']):.2f} ms)")
over = ms(version["median"] - floor["median"])
print(f"start-up (`credkeeper --version` within 0.5 ms of /bin/true): "
      f"{'MET' if over <= 0.5 else 'NOT MET'} (+{over:.2f} ms: {ms(version['median']):.2f} vs {ms(floor['median']):.2f} ms)")
sys.exit(4 if noisy else 0 if ok else 3)
PY

if [ -n "${BENCH_JSON_DIR:-}" ]; then
  mkdir -p "$BENCH_JSON_DIR" && cp "$JSON_DIR"/*.json "$BENCH_JSON_DIR"/
fi
exit "$rc"
