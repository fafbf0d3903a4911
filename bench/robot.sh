#!/usr/bin/env bash
# bench/robot.sh - Kerberos robots: `credkeeper get` side by side with htgettoken 2.2 and
# igwn-robot-get 0.3.3, in one run, against the same broker (`credkeeper serve`, TLS, its
# Vault-compatible API for the two peers, its native API for credkeeper) and the same KDC.
#
#   (a) robot path, keytab → token file, nothing cached client-side: before every run the
#       out file, the ccache and the Vault token file are removed (hyperfine --prepare).
#         credkeeper --cafile CA get --server URL -k KEYTAB -o OUT --minsecs 60
#         kinit -kt KEYTAB PRINC && htgettoken -a HOST:PORT -i igwn -r robot
#             --credkey robot/ci.example --cafile CA --vaulttokenfile VT -o OUT --nooidc --minsecs 60
#         igwn-robot-get -k KEYTAB -c CCACHE --vaulttokenfile VT -a HOST:PORT -o OUT -m 60 PRINC
#   (b) repeat call: the out file holds a valid token (and the peers keep their Vault token).
#       Same commands (htgettoken without the kinit); credkeeper reuses the file with no
#       network at all, the peers always ask the broker (with their Vault token; igwn-robot-get
#       first looks its Vault token up, and takes the ticket still in its ccache).
#   Peak RSS: /usr/bin/time "%M" (max RSS of the largest process of the command) over
#   BENCH_RSS_RUNS runs of each command, same preparation.
#
# The broker's token cache is shared by all three and warm: one token is signed before the
# timed runs, every run below is answered from the cache (the audit log's "source"; checked).
# Every block is checked against the broker's audit log and the KDC's log: per run, (a) one
# token vend, one AS-REQ and one TGS-REQ for each tool; (b) nothing for credkeeper, one vend
# and no KDC request for either peer.
#
# Non-interactive: installs what is missing (hyperfine, time, openssl, the MIT KDC packages
# through tests/testbed/start-kdc.sh, the Python venv through tests/testbed/setup-python.sh);
# does NOT build credkeeper. Everything else happens in a fresh mktemp directory: its own KDC
# (tests/testbed/start-kdc.sh), its own test CA and server certificate, its own broker, its own
# HOME/XDG dirs; KDC and broker are stopped on exit.
#
# Knobs (environment): CREDKEEPER (target/release/credkeeper: the binary to measure, built
#   beforehand: cargo build --release -p credkeeper) BENCH_RUNS_A (30, credkeeper runs in (a))
#   BENCH_RUNS_B (100, credkeeper runs in (b)) BENCH_RUNS_PY (20, runs of each Python peer per
#   case) BENCH_ROUNDS (2: each command's runs are split into that many blocks, alternating
#   between the tools and reversing their order every other round) BENCH_WARMUP (3, per block)
#   BENCH_RSS_RUNS (5) BENCH_RESULTS (bench/robot-results.md) BENCH_KEEP=1 keeps the work
#   directory.
# Output: Markdown on stdout and in BENCH_RESULTS (progress on stderr).
# Exit status: 0 = goals met (≥ 20× on (a), ≥ 100× on (b), against both peers); 3 = measured,
# a goal missed; 1 = error (the work directory is then kept).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
TESTBED=$ROOT/tests/testbed
# shellcheck source=../tests/testbed/lib.sh
. "$TESTBED/lib.sh"

RUNS_A=${BENCH_RUNS_A:-30}
RUNS_B=${BENCH_RUNS_B:-100}
RUNS_PY=${BENCH_RUNS_PY:-20}
ROUNDS=${BENCH_ROUNDS:-2}
WARMUP=${BENCH_WARMUP:-3}
RSS_RUNS=${BENCH_RSS_RUNS:-5}
RESULTS=${BENCH_RESULTS:-$BENCH_DIR/robot-results.md}
GOAL_A=20
GOAL_B=100
MINSECS=60
for n in "$RUNS_A" "$RUNS_B" "$RUNS_PY" "$ROUNDS" "$RSS_RUNS"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS_*, BENCH_ROUNDS and BENCH_RSS_RUNS must be positive integers"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "BENCH_WARMUP must be a number"

# The binary: $CREDKEEPER as given (relative to the current directory, else to the repository).
CK=${CREDKEEPER:-$ROOT/target/release/credkeeper}
case $CK in
  /*) ;;
  *) if [ -e "$PWD/$CK" ]; then CK=$PWD/$CK; else CK=$ROOT/$CK; fi ;;
esac
[ -x "$CK" ] || die "$CK missing: cargo build --release -p credkeeper (or set CREDKEEPER)"

# --- tools -------------------------------------------------------------------------------------
apt_install hyperfine time openssl
for t in hyperfine /usr/bin/time openssl; do
  command -v "$t" >/dev/null || die "$t not found after installing"
done
log "Python peers: tests/testbed/setup-python.sh"
"$TESTBED/setup-python.sh" >/dev/null
VENV=$TESTBED/venv
HTGETTOKEN=$VENV/bin/htgettoken
IGWN=$VENV/bin/igwn-robot-get
{ [ -x "$HTGETTOKEN" ] && [ -x "$IGWN" ]; } || die "the venv lacks htgettoken or igwn-robot-get"

# --- isolated work directory and cleanup -------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/credkeeper-robot-bench.XXXXXX")
# hyperfine -N and the RSS runs split command lines on spaces: no path may hold one.
case "$WORK$ROOT$CK" in
  *[[:space:]]*) rm -rf "$WORK"; die "paths with spaces are not supported: $WORK $ROOT $CK" ;;
esac
KDC_STATE=$WORK/kdc-state
BROKER_PID=
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  local rc=$?
  set +e
  if [ -n "$BROKER_PID" ]; then stop_pid "$BROKER_PID" "$WORK/broker.toml" >/dev/null 2>&1; fi
  "$TESTBED/stop-kdc.sh" "$KDC_STATE" >/dev/null 2>&1
  if [ "${BENCH_KEEP:-0}" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; }; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Nothing of the real user's is read or written: inherited Kerberos, credkeeper, htgettoken
# and XDG settings are dropped; HOME and the XDG dirs live under $WORK.
for v in $(compgen -e); do
  case $v in
    CREDKEEPER_* | BEARER_TOKEN* | XDG_* | KRB5* | HTGETTOKENOPTS | VAULT_* | SSL_CERT_* | REQUESTS_CA_BUNDLE) unset "$v" ;;
  esac
done
export HOME=$WORK/home
export XDG_CONFIG_HOME=$HOME/.config XDG_DATA_HOME=$HOME/.local/share XDG_CACHE_HOME=$HOME/.cache
export XDG_RUNTIME_DIR=$WORK/run
export CREDKEEPER_STATE_DIR=$WORK/client-state
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" "$WORK/results" "$WORK/rss"
chmod 700 "$XDG_RUNTIME_DIR"

# --- KDC ---------------------------------------------------------------------------------------
KDC_WITH_KADMIND=0 "$TESTBED/start-kdc.sh" "$KDC_STATE" >/dev/null
set -a
# shellcheck disable=SC1091  # written by start-kdc.sh
. "$KDC_STATE/kdc.env"
set +a
KT=$KRB5_ROBOT_KEYTAB
PRINC=$KRB5_ROBOT_PRINCIPAL # robot/ci.example@TEST.REALM
CREDKEY=${PRINC%@*}         # robot/ci.example
KDC_LOG_FILE=$KDC_LOG
PATH=$PATH:/usr/sbin:/sbin
command -v kinit >/dev/null || die "kinit not found"

# --- test CA and the broker's certificate (htgettoken needs TLS) -------------------------------
(
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
    -out ca.pem -days 2 -subj /CN=credkeeper-bench-ca
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
    -out server.csr -subj /CN=localhost
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
    -days 2 -extfile server.ext
  chmod 600 ca.key server.key
) >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log" >&2; die "openssl failed"; }
CA=$WORK/ca.pem

# --- broker ------------------------------------------------------------------------------------
BSTATE=$WORK/bstate
AUDIT=$BSTATE/audit.log
cat >"$WORK/broker.toml" <<EOF
[server]
state_dir = "$BSTATE"
kerberos_keytab = "$KRB5_SERVICE_KEYTAB"
tls_cert = "$WORK/server.pem"
tls_key = "$WORK/server.key"

[vault.issuers]
igwn = "local"

[[robot]]
name = "ci"
auth = { kerberos_principal = "${CREDKEY}" }
providers = ["local"]
scopes = ["read:/", "write:/user/ci"]
audiences = ["*"]
EOF
# --state-dir: CREDKEEPER_STATE_DIR (the clients') would override the file's state_dir.
"$CK" --config "$WORK/broker.toml" --state-dir "$BSTATE" serve --listen 127.0.0.1:0 \
  >"$WORK/broker.out" 2>"$WORK/broker.log" </dev/null &
BROKER_PID=$!
BROKER_URL=
for ((i = 0; i < 300; i++)); do
  BROKER_URL=$(sed -n 's/^credkeeper broker listening on \(https:[^ ]*\).*/\1/p' "$WORK/broker.log" | head -n 1)
  [ -n "$BROKER_URL" ] && break
  pid_alive "$BROKER_PID" || { cat "$WORK/broker.log" >&2; die "the broker exited"; }
  sleep 0.1
done
[ -n "$BROKER_URL" ] || { cat "$WORK/broker.log" >&2; die "the broker did not say where it listens (TLS?)"; }
PORT=${BROKER_URL##*:}
PORT=${PORT%%/*}
HOSTPORT=localhost:$PORT # the service principals are HTTP/localhost and host/localhost
log "broker pid $BROKER_PID on https://$HOSTPORT"

# --- the commands ------------------------------------------------------------------------------
# Out files, ccaches and Vault token files: one set per tool. credkeeper keeps its tickets in a
# private in-memory ccache (it ignores KRB5CCNAME) and has no Vault token.
export KRB5CCNAME=FILE:$WORK/cc-ht # htgettoken's (and kinit's before it)
export HTGETTOKENOPTS="--cafile $CA" # igwn-robot-get runs htgettoken in-process without --cafile
CK_CMD="$CK --cafile $CA get --server https://$HOSTPORT -k $KT -o $WORK/bt-ck --minsecs $MINSECS"
HT_CMD="$HTGETTOKEN -a $HOSTPORT -i igwn -r robot --credkey $CREDKEY --cafile $CA --vaulttokenfile $WORK/vt-ht -o $WORK/bt-ht --nooidc --minsecs $MINSECS"
HT_CMD_A="/bin/sh $BENCH_DIR/robot/kinit-then.sh $KT $PRINC $HT_CMD"
IGWN_CMD="$IGWN -k $KT -c FILE:$WORK/cc-igwn --vaulttokenfile $WORK/vt-igwn -a $HOSTPORT -o $WORK/bt-igwn -m $MINSECS $PRINC"
CK_PREP="rm -f $WORK/bt-ck"
HT_PREP="rm -f $WORK/bt-ht $WORK/cc-ht $WORK/vt-ht"
IGWN_PREP="rm -f $WORK/bt-igwn $WORK/cc-igwn $WORK/vt-igwn"

# label_of CASE KEY: the tool's name in the tables
label_of() {
  case $1-$2 in
    *-ck) echo "credkeeper get" ;;
    a-ht) echo "kinit -kt + htgettoken 2.2" ;;
    b-ht) echo "htgettoken 2.2" ;;
    *-igwn) echo "igwn-robot-get 0.3.3" ;;
  esac
}

# cmd_of CASE KEY / prep_of CASE KEY / runs_of KEY CASE
cmd_of() {
  case $1-$2 in
    a-ck | b-ck) echo "$CK_CMD" ;;
    a-ht) echo "$HT_CMD_A" ;;
    b-ht) echo "$HT_CMD" ;;
    a-igwn | b-igwn) echo "$IGWN_CMD" ;;
  esac
}
prep_of() {
  case $1-$2 in
    a-ck) echo "$CK_PREP" ;;
    a-ht) echo "$HT_PREP" ;;
    a-igwn) echo "$IGWN_PREP" ;;
    *) echo "" ;;
  esac
}
runs_of() {
  case $1-$2 in
    a-ck) echo "$RUNS_A" ;;
    b-ck) echo "$RUNS_B" ;;
    *) echo "$RUNS_PY" ;;
  esac
}

# run_once CASE KEY: one run outside hyperfine (with its preparation), output kept for errors.
run_once() {
  local cmd prep
  cmd=$(cmd_of "$1" "$2")
  prep=$(prep_of "$1" "$2")
  # shellcheck disable=SC2086  # plain word lists (no spaces in paths, checked above)
  if [ -n "$prep" ]; then $prep; fi
  # shellcheck disable=SC2086
  $cmd >"$WORK/once.out" 2>&1 || { cat "$WORK/once.out" >&2; die "$1 $2 failed: $cmd"; }
}

# token_left FILE: seconds the JWT in FILE has left (fails unless it is the robot's token).
token_left() {
  jwt_payload "$(cat "$1")" | "$TESTBED_PYTHON" -c 'import json, sys, time
c = json.load(sys.stdin)
assert c["sub"] == "ci", c
print(int(c["exp"] - time.time()))'
}

# --- warm the broker's cache, check every command once -----------------------------------------
log "one run of each command (the first signs the token all later runs get from the cache)"
for key in ck ht igwn; do run_once a "$key"; done
for key in ck ht igwn; do run_once b "$key"; done
for key in ck ht igwn; do
  left=$(token_left "$WORK/bt-$key") || die "$WORK/bt-$key does not hold the robot's token"
  [ "$left" -gt "$MINSECS" ] || die "$WORK/bt-$key: only $left s left"
done
if cmp -s "$WORK/bt-ck" "$WORK/bt-ht" && cmp -s "$WORK/bt-ck" "$WORK/bt-igwn"; then
  SAME_TOKEN="all three out files hold the same token (the broker's cached one)"
else
  SAME_TOKEN="the three out files hold different tokens"
fi
log "$SAME_TOKEN"

# --- timed blocks ------------------------------------------------------------------------------
count() { grep -c -- "$1" || true; }
kdc_count() { sleep 0.05; count "$1_REQ.*ISSUE" <"$KDC_LOG_FILE"; }

# block CASE KEY ROUND: one hyperfine invocation (JSON to results/CASE-KEY-ROUND.json), and a
# line in checks.tsv with what the broker and the KDC saw meanwhile.
block() {
  local case=$1 key=$2 round=$3 runs per cmd prep a0 as0 tgs0 new n args=()
  runs=$(runs_of "$case" "$key")
  per=$(((runs + ROUNDS - 1) / ROUNDS))
  cmd=$(cmd_of "$case" "$key")
  prep=$(prep_of "$case" "$key")
  if [ -n "$prep" ]; then args+=(--prepare "$prep"); fi
  a0=$(stat -c %s "$AUDIT")
  as0=$(kdc_count AS)
  tgs0=$(kdc_count TGS)
  hyperfine -N --style none --warmup "$WARMUP" --runs "$per" "${args[@]}" \
    --export-json "$WORK/results/$case-$key-$round.json" -n "$key" "$cmd" >/dev/null \
    || die "hyperfine failed for ($case) $key: $cmd"
  sleep 0.3 # the broker writes its audit log from a task of its own
  new=$(tail -c +"$((a0 + 1))" "$AUDIT")
  n=$((per + WARMUP))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$key" "$round" "$n" \
    "$(count '"result":"vended"' <<<"$new")" \
    "$(count '"auth":"kerberos"' <<<"$new")" \
    "$(count '"auth":"vault-token"' <<<"$new")" \
    "$(count '"source":"signed"' <<<"$new")" \
    "$(grep -v -- '"result":"vended"' <<<"$new" | count '"result"')" \
    "$(($(kdc_count AS) - as0))" "$(($(kdc_count TGS) - tgs0))" >>"$WORK/checks.tsv"
}

# The rows of the report, in table order.
for case in a b; do
  for key in ck ht igwn; do
    printf '%s\t%s\t%s\t%s\n' "$case" "$key" "$(label_of "$case" "$key")" "$(cmd_of "$case" "$key")" >>"$WORK/rows.tsv"
  done
done
: >"$WORK/checks.tsv"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for case in a b; do
  log "($case): $ROUNDS rounds; per round $(( ($(runs_of "$case" ck) + ROUNDS - 1) / ROUNDS )) credkeeper runs, $(( (RUNS_PY + ROUNDS - 1) / ROUNDS )) of each peer (+ $WARMUP warmup each)"
  for ((r = 0; r < ROUNDS; r++)); do
    if ((r % 2 == 0)); then order=(ck ht igwn); else order=(igwn ht ck); fi
    for key in "${order[@]}"; do block "$case" "$key" "$r"; done
  done
done

# The premises, from checks.tsv: per run, (a) 1 vend + 1 AS-REQ + 1 TGS-REQ for each tool;
# (b) credkeeper nothing, htgettoken and igwn-robot-get 1 vend and no KDC request. Never a
# freshly signed token (the cache is warm) and never a denial.
"$TESTBED_PYTHON" - "$WORK/checks.tsv" <<'PY' || die "the runs did not do what they should (see above; $WORK/checks.tsv)"
import sys
want = {  # (case, key): (vends, AS-REQs, TGS-REQs) per run
    ("a", "ck"): (1, 1, 1), ("a", "ht"): (1, 1, 1), ("a", "igwn"): (1, 1, 1),
    ("b", "ck"): (0, 0, 0), ("b", "ht"): (1, 0, 0), ("b", "igwn"): (1, 0, 0),
}
bad = 0
for line in open(sys.argv[1]):
    case, key, rnd, n, vended, kerb, vault, signed, other, as_req, tgs = line.split("\t")
    n = int(n)
    v, a, t = want[(case, key)]
    got = (int(vended), int(as_req), int(tgs))
    if got != (v * n, a * n, t * n) or int(other) or int(signed):
        bad += 1
        print(f"[robot.sh] ({case}) {key} round {rnd}: {n} runs gave vends/AS/TGS {got}, "
              f"expected {(v * n, a * n, t * n)}; signed {signed}, denied/failed {other}",
              file=sys.stderr)
sys.exit(1 if bad else 0)
PY

# --- peak RSS ----------------------------------------------------------------------------------
log "peak RSS: $RSS_RUNS runs of each command"
for case in a b; do
  for key in ck ht igwn; do
    cmd=$(cmd_of "$case" "$key")
    prep=$(prep_of "$case" "$key")
    for ((i = 0; i < RSS_RUNS; i++)); do
      # shellcheck disable=SC2086  # plain word lists
      if [ -n "$prep" ]; then $prep; fi
      # shellcheck disable=SC2086
      /usr/bin/time -f %M -a -o "$WORK/rss/$case-$key.txt" $cmd >"$WORK/once.out" 2>&1 \
        || { cat "$WORK/once.out" >&2; die "($case) $key failed under /usr/bin/time"; }
    done
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
BROKER_HWM_KB=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$BROKER_PID/status")
BROKER_RSS_KB=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$BROKER_PID/status")
BROKER_RSS_MB=$(awk -v k="$BROKER_RSS_KB" 'BEGIN {printf "%.1f", k / 1024}')
BROKER_HWM_MB=$(awk -v k="$BROKER_HWM_KB" 'BEGIN {printf "%.1f", k / 1024}')
TOKEN_LEFT=$(token_left "$WORK/bt-ck")

# The client side really started from nothing in (a): nothing was written to HOME or to
# credkeeper's state dir (credkeeper's tickets live in a private in-memory ccache).
CK_STATE_FILES=$({ find "$CREDKEEPER_STATE_DIR" "$HOME" -type f 2>/dev/null || true; } | wc -l)

# --- report ------------------------------------------------------------------------------------
CPU=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)
OS=$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null | head -n 1)
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git --no-optional-locks -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then REV="$REV+changes"; fi
case $CK in
  */target/debug/*) PROFILE="debug build: NOT representative" ;;
  */target/release/*) PROFILE="release build" ;;
  *) PROFILE="build profile unknown" ;;
esac
CK_REL=${CK#"$ROOT"/}
KRB5_VER=$(dpkg-query -W -f='${Version}' krb5-user 2>/dev/null || echo unknown)
PY_VER=$("$VENV/bin/python" -c 'import platform; print(platform.python_version())')

rc=0
"$TESTBED_PYTHON" "$BENCH_DIR/robot/report.py" "$WORK" "$GOAL_A" "$GOAL_B" >"$WORK/tables.md" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || die "report.py failed"

{
  cat <<EOF
# Benchmark: Kerberos robots, \`credkeeper get\` vs htgettoken 2.2 and igwn-robot-get 0.3.3

Reproduce: \`bench/robot.sh\` (\`CREDKEEPER=path/to/credkeeper\` measures another binary than
\`target/release/credkeeper\`). Run of $(date -u '+%Y-%m-%d %H:%M UTC') at commit \`$REV\`.

* Machine: \`nproc\` = $(nproc), CPU "$CPU", ${OS:-unknown OS}, kernel $(uname -r); the broker,
  the KDC and the clients share it. Load average $LOAD_BEFORE before the timed runs,
  $LOAD_AFTER after the peak-RSS runs.
* credkeeper: $("$CK" --version 2>/dev/null || echo credkeeper), \`$CK_REL\` ($PROFILE,
  $(($(stat -c %s "$CK") / 1024 / 1024)) MiB); the same binary is the broker.
* Peers: htgettoken $("$HTGETTOKEN" --version 2>&1 | tail -n 1) and igwn-robot-get $("$IGWN" --version 2>&1 | tail -n 1)
  (Python $PY_VER, the venv of \`tests/testbed/setup-python.sh\`).
* MIT krb5 $KRB5_VER, $(hyperfine --version), $(openssl version | cut -d' ' -f1-2).

Setup: one MIT KDC (\`tests/testbed/start-kdc.sh\`, realm $KRB5_REALM on 127.0.0.1), one broker
(\`credkeeper serve\`, TLS with a throw-away test CA, robot \`ci\` = \`$PRINC\`, local
issuer, 1200 s tokens). All three clients authenticate with the same keytab and ask with
\`--minsecs $MINSECS\` (htgettoken and igwn-robot-get send it as \`minimum_seconds\`). credkeeper
uses the broker's native API (SPNEGO to \`HTTP/localhost\`), the peers its Vault-compatible API
(Kerberos login to \`host/localhost\`, then reads with a Vault token). **The broker's token
cache is shared and warm for all three**: one token was signed before the timed runs and every
timed run got that cached token (audit log: no token signed during the runs); $SAME_TOKEN. So
(a) measures the clients, Kerberos and the HTTPS round trips, not token signing.

* (a) keytab → token file: before every run (\`hyperfine --prepare\`) that tool's out file,
  ccache and Vault token file are removed. htgettoken is timed as \`kinit -kt KEYTAB PRINC &&
  htgettoken …\` (through \`bench/robot/kinit-then.sh\`, a /bin/sh wrapper), since the other
  two start from the keytab by themselves.
* (b) repeat call: the out file holds a valid token ($TOKEN_LEFT s left at the end) and each peer
  keeps its Vault token file (and ccache). credkeeper reads the file and exits (no network).
  htgettoken always asks the broker (one GET with its Vault token). igwn-robot-get always
  acquires Kerberos credentials (GSSAPI with the keytab as \`client_keytab\`: the ticket still
  valid in its ccache is taken, no KDC request), looks its Vault token up (\`lookup-self\`,
  since it passes \`--vaulttokenminttl 24h\`) and then asks the broker.

Timings: \`hyperfine -N\` (no shell), $WARMUP warmup runs per block, each command's runs split into
$ROUNDS blocks alternating between the tools (order reversed every other round); median, mean ±
sample σ and min over all runs of a command; "user+sys" is the mean CPU time per run of the
command's processes. Ratio = the peer's median / credkeeper's median in the same case. Peak
RSS: \`/usr/bin/time -f %M\` (largest process of the command), max over $RSS_RUNS runs. The
broker after all runs: VmRSS $BROKER_RSS_MB MB, VmHWM $BROKER_HWM_MB MB. Files in HOME and in
credkeeper's state dir after all runs (a client-side cache would show up there): $CK_STATE_FILES.

EOF
  cat "$WORK/tables.md"
} >"$WORK/report.md"

cp "$WORK/report.md" "$RESULTS.tmp" && mv -f "$RESULTS.tmp" "$RESULTS"
cat "$WORK/report.md"
log "written to $RESULTS"
exit "$rc"
