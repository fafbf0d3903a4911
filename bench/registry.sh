#!/usr/bin/env bash
# bench/registry.sh - container-registry credentials: the credential helper, the registry token
# server and the CRI proxy, in one run.
#
#   (1) helper `get`, a cold process per call: `docker-credential-credkeeper get` (a symlink to
#       the credkeeper binary; the credential is in credkeeper's own store) side by side with
#       Debian's `docker-credential-pass get` (golang-docker-credential-helpers 0.6.4, pass,
#       GnuPG; a key without passphrase, its gpg-agent running), both holding the same
#       credential stored through the helper protocol (`store`). The host goes in on standard
#       input: `hyperfine --input FILE` when hyperfine has it (1.16+); hyperfine 1.15 has not,
#       and then both helpers run as `sh -c 'printf HOST | HELPER get'` and
#       `sh -c 'printf HOST | cat'` is measured as the baseline to subtract (raw and
#       baseline-subtracted numbers are both reported). `/bin/true` is measured as the floor
#       (what starting any process costs here). Peak RSS: /usr/bin/time -f %M of the helper
#       itself (stdin from the file), and the gpg-agent daemon's VmHWM.
#   (2) token server: `credkeeper serve` with a [registry] section (RS256 with an RSA 2048 key,
#       then ES256 with a P-256 key; self-signed certificates made with openssl), one robot
#       (`auth = { secret = true }`, `registry = ["repository:test/*:pull"]`); wrk GETs
#       /registry/token?service=…&scope=repository:test/hello:pull with HTTP Basic, at 1 and 64
#       connections: tokens/s, p50/p99. Every answer is a freshly signed token (checked with
#       credkeeper_tokens_vended_total{provider="registry",source="signed"} and the audit log).
#   (3) CRI proxy: a private containerd 1.6 (tests/testbed/start-containerd.sh), a registry with
#       htpasswd auth (tests/testbed/start-registry.sh, image test/hello:1) and
#       `credkeeper registry cri-proxy --listen unix://… --upstream <containerd>`. ImageStatus
#       latency (tests/testbed/cri.py bench-status, one channel, BENCH_CRI_N sequential calls)
#       directly against containerd and through the proxy, alternating, BENCH_CRI_ROUNDS rounds:
#       p50/p99 and what the proxy adds; and full pulls (RemoveImage, then PullImage with
#       username/password, timed in one process by bench/registry/cri_pulls.py) alternating
#       between the two paths, BENCH_PULLS each: median. Skipped, with a note in the report,
#       when `credkeeper registry cri-proxy --help` fails (a binary without the proxy) or when
#       not running as root (containerd needs root).
#
# Non-interactive: installs what is missing (hyperfine, time, openssl, curl, wrk,
# golang-docker-credential-helpers, pass, gnupg; containerd, runc, skopeo and the registry
# through the testbed scripts); does NOT build credkeeper. Everything happens in a fresh mktemp
# directory with its own HOME, XDG dirs, GNUPGHOME, PASSWORD_STORE_DIR and credkeeper state;
# every broker, proxy, containerd, registry and gpg-agent started here is stopped on exit.
#
# Knobs (environment): CREDKEEPER (target/release/credkeeper: the binary to measure, built
#   beforehand) BENCH_PARTS ("helper token cri") BENCH_RUNS (60 runs of each helper command)
#   BENCH_ROUNDS (3 blocks per command, alternating between the commands, order reversed every
#   other round) BENCH_WARMUP (3 per block) BENCH_RSS_RUNS (10) BENCH_GPG_ALGO (default: gpg's
#   default key, rsa3072; e.g. future-default for ed25519/cv25519) BENCH_DURATION (10 s per wrk
#   run) BENCH_CONNS ("1 64") BENCH_WRK_THREADS (2) BENCH_TOKEN_ALGS ("RS256 ES256")
#   BENCH_CRI_N (2000 ImageStatus calls per round) BENCH_CRI_WARMUP (100 untimed calls first)
#   BENCH_CRI_ROUNDS (5) BENCH_PULLS (20 per path) BENCH_CRI_PROXY_CMD (a command line run
#   instead of `credkeeper registry cri-proxy`, with `--listen unix://… --upstream unix://…`
#   appended; only for testing this script with a stand-in proxy) BENCH_RESULTS
#   (bench/registry-results.md) BENCH_KEEP=1 keeps the work directory.
# Output: Markdown on stdout and in BENCH_RESULTS (progress on stderr).
# Exit status: 0 = every goal measured and met (helper `get` < 5 ms; the proxy adds < 1 ms to
# the ImageStatus p99); 3 = measured, a goal missed; 4 = none missed, but a goal could not be
# measured (its part skipped); 1 = error (the work directory is then kept).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
TESTBED=$ROOT/tests/testbed
HERE=$BENCH_DIR/registry
# shellcheck source=../tests/testbed/lib.sh
. "$TESTBED/lib.sh"
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

PARTS=${BENCH_PARTS:-helper token cri}
RUNS=${BENCH_RUNS:-60}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-3}
RSS_RUNS=${BENCH_RSS_RUNS:-10}
GPG_ALGO=${BENCH_GPG_ALGO:-default}
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNS:-1 64}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
ALGS=${BENCH_TOKEN_ALGS:-RS256 ES256}
CRI_N=${BENCH_CRI_N:-2000}
CRI_WARMUP=${BENCH_CRI_WARMUP:-100}
CRI_ROUNDS=${BENCH_CRI_ROUNDS:-5}
PULLS=${BENCH_PULLS:-20}
PROXY_CMD=${BENCH_CRI_PROXY_CMD:-}
RESULTS=${BENCH_RESULTS:-$BENCH_DIR/registry-results.md}
GOAL_HELPER_MS=5
GOAL_PROXY_P99_US=1000

for n in "$RUNS" "$ROUNDS" "$RSS_RUNS" "$DURATION" "$WRK_THREADS" "$CRI_N" "$CRI_ROUNDS" "$PULLS"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS, _ROUNDS, _RSS_RUNS, _DURATION, _WRK_THREADS, _CRI_N, _CRI_ROUNDS and _PULLS must be positive integers"
done
for n in "$WARMUP" "$CRI_WARMUP"; do
  [[ $n =~ ^[0-9]+$ ]] || die "BENCH_WARMUP and BENCH_CRI_WARMUP must be numbers"
done
for c in $CONNS; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNS must list positive integers"; done
for a in $ALGS; do case $a in RS256 | ES256) ;; *) die "BENCH_TOKEN_ALGS: RS256 and/or ES256" ;; esac; done
[[ $GPG_ALGO =~ ^[A-Za-z0-9_-]+$ ]] || die "BENCH_GPG_ALGO must be one word"
want() { [[ " $PARTS " == *" $1 "* ]]; }
for p in $PARTS; do case $p in helper | token | cri) ;; *) die "BENCH_PARTS: helper, token, cri" ;; esac; done

# The binary: $CREDKEEPER as given (relative to the current directory, else to the repository).
CK=${CREDKEEPER:-$ROOT/target/release/credkeeper}
case $CK in
  /*) ;;
  *) if [ -e "$PWD/$CK" ]; then CK=$PWD/$CK; else CK=$ROOT/$CK; fi ;;
esac
[ -x "$CK" ] || die "$CK missing: cargo build --release -p credkeeper (or set CREDKEEPER)"

# --- tools -------------------------------------------------------------------------------------
pkgs=(time curl)
want helper && pkgs+=(hyperfine golang-docker-credential-helpers pass gnupg)
want token && pkgs+=(openssl wrk)
apt_install "${pkgs[@]}"
for t in /usr/bin/time curl; do command -v "$t" >/dev/null || die "$t not found after installing"; done
if want helper; then
  for t in hyperfine docker-credential-pass pass gpg gpgconf gpg-connect-agent; do
    command -v "$t" >/dev/null || die "$t not found after installing"
  done
fi
if want token; then
  for t in openssl wrk; do command -v "$t" >/dev/null || die "$t not found after installing"; done
fi

# --- isolated work directory and cleanup -------------------------------------------------------
# Short: containerd's sockets live in it (a unix socket path holds at most 107 bytes).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ck-registry-bench.XXXXXX")
# hyperfine -N, wrk and the RSS runs split command lines on spaces: no path may hold one.
case "$WORK$ROOT$CK" in
  *[[:space:]\'\"\\]*) rm -rf "$WORK"; die "paths with spaces, quotes or backslashes are not supported: $WORK $ROOT $CK" ;;
esac
BROKER_PID=
BROKER_PATTERN=
PROXY_PID=
PROXY_PATTERN=
GPG_STARTED=0
REG_STARTED=0
CTD_STARTED=0
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  local rc=$?
  set +e
  if [ -n "$PROXY_PID" ]; then stop_pid "$PROXY_PID" "$PROXY_PATTERN" >/dev/null 2>&1; fi
  if [ -n "$BROKER_PID" ]; then stop_pid "$BROKER_PID" "$BROKER_PATTERN" >/dev/null 2>&1; fi
  # gpgconf --kill acts on this GNUPGHOME's daemons only (their sockets are in it)
  if [ "$GPG_STARTED" = 1 ]; then GNUPGHOME=$WORK/gnupg gpgconf --kill all >/dev/null 2>&1; fi
  if [ "$CTD_STARTED" = 1 ]; then "$TESTBED/stop-containerd.sh" "$WORK/ctd" >/dev/null 2>&1; fi
  if [ "$REG_STARTED" = 1 ]; then "$TESTBED/stop-registry.sh" "$WORK/reg" >/dev/null 2>&1; fi
  if [ "${BENCH_KEEP:-0}" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ] && [ "$rc" -ne 4 ]; }; then
    log "work directory kept: $WORK"
  elif awk -v p="$WORK/" 'index($5, p) == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
    log "mounts remain under $WORK; not removing it"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Nothing of the real user's is read or written: inherited credkeeper, docker, containers,
# GnuPG, pass and XDG settings are dropped; HOME and the XDG dirs live under $WORK.
for v in $(compgen -e); do
  case $v in
    CREDKEEPER_* | XDG_* | DOCKER_* | REGISTRY_* | GNUPGHOME | GPG_AGENT_INFO | PASSWORD_STORE_* | \
      CRI_* | CONTAINERD_* | CTD_* | REG_* | SSL_CERT_* | http_proxy | https_proxy | HTTP_PROXY | \
      HTTPS_PROXY | all_proxy | ALL_PROXY | no_proxy | NO_PROXY) unset "$v" ;;
  esac
done
export HOME=$WORK/home
export XDG_CONFIG_HOME=$HOME/.config XDG_DATA_HOME=$HOME/.local/share XDG_CACHE_HOME=$HOME/.cache
export XDG_RUNTIME_DIR=$WORK/run
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" "$WORK/results" "$WORK/rss" "$WORK/cri"
chmod 700 "$XDG_RUNTIME_DIR"
: >"$WORK/skips.tsv"

CLK_TCK=$(getconf CLK_TCK)
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
skip() { printf '%s\t%s\n' "$1" "$2" >>"$WORK/skips.tsv"; log "skipping part $1: $2"; }

# =============================================================================================
# (1) helper get
# =============================================================================================
HOST_REG=registry.example:5000
helper_part() {
  local ckh passh fpr cred out key r per order i keys=() extra=()
  log "== (1) helper get: docker-credential-credkeeper vs docker-credential-pass =="
  export CREDKEEPER_STATE_DIR=$WORK/helper-state
  export GNUPGHOME=$WORK/gnupg PASSWORD_STORE_DIR=$WORK/pass
  mkdir -p "$WORK/bin"
  mkdir -m 700 "$GNUPGHOME"
  ln -s "$CK" "$WORK/bin/docker-credential-credkeeper"
  ckh=$WORK/bin/docker-credential-credkeeper
  passh=$(command -v docker-credential-pass)
  printf '%s' "$HOST_REG" >"$WORK/host.txt"

  # A GnuPG key without passphrase and a password store for it (the agent starts here).
  GPG_STARTED=1
  gpg --batch --passphrase '' --quick-gen-key bench@example "$GPG_ALGO" default never \
    >"$WORK/gpg.log" 2>&1 || { cat "$WORK/gpg.log" >&2; die "gpg --quick-gen-key failed"; }
  fpr=$(gpg --batch --with-colons --list-keys bench@example 2>>"$WORK/gpg.log" | awk -F: '$1 == "fpr" {print $10; exit}')
  [ -n "$fpr" ] || die "no fingerprint for the new GnuPG key"
  GPG_KEY=$(gpg --batch --with-colons --list-keys bench@example 2>>"$WORK/gpg.log" | awk -F: '
    function name(a, l) { return a == 1 ? "rsa" l : a == 18 ? "cv25519" : a == 22 ? "ed25519" : a == 19 ? "nistp" l : "algo" a "/" l }
    $1 == "pub" {p = name($4, $3)} $1 == "sub" {s = name($4, $3)} END {print "primary " p ", encryption subkey " s}')
  command pass init "$fpr" >>"$WORK/gpg.log" 2>&1 || { cat "$WORK/gpg.log" >&2; die "pass init failed"; }

  # The same credential in both, through the helper protocol.
  cred='{"ServerURL":"registry.example:5000","Username":"bench-user","Secret":"bench-secret"}'
  printf '%s' "$cred" | "$ckh" store >"$WORK/store-ck.out" 2>&1 \
    || { cat "$WORK/store-ck.out" >&2; die "docker-credential-credkeeper store failed"; }
  printf '%s' "$cred" | "$passh" store >"$WORK/store-pass.out" 2>&1 \
    || { cat "$WORK/store-pass.out" >&2; die "docker-credential-pass store failed"; }
  for h in "$ckh" "$passh"; do
    out=$("$h" get <"$WORK/host.txt") || die "$h get failed: $out"
    if [ "$(json_get Username <<<"$out")" != bench-user ] || [ "$(json_get Secret <<<"$out")" != bench-secret ]; then
      die "$h get answered $out"
    fi
  done
  # credkeeper's answer comes from its store (no docker or containers config exists here)
  "$CK" registry get "$HOST_REG" --explain >/dev/null 2>"$WORK/explain.txt" || die "credkeeper registry get failed: $(cat "$WORK/explain.txt")"
  HELPER_SOURCE=$(grep -i "store" "$WORK/explain.txt" | tail -n 1)
  [ -n "$HELPER_SOURCE" ] || die "credkeeper registry get --explain does not name its store: $(cat "$WORK/explain.txt")"
  GPG_AGENT_PID=$(gpg-connect-agent 'getinfo pid' /bye 2>/dev/null | awk '$1 == "D" {print $2}')

  declare -gA HCMD
  if hyperfine --help 2>&1 | grep -q -- '--input'; then
    INPUT_MODE=1
    extra=(--input "$WORK/host.txt")
    HCMD[ck]="$ckh get"
    HCMD[pass]="$passh get"
    keys=(ck pass version floor)
  else
    INPUT_MODE=0
    HCMD[ck]="sh -c 'printf $HOST_REG | $ckh get'"
    HCMD[pass]="sh -c 'printf $HOST_REG | $passh get'"
    HCMD[base]="sh -c 'printf $HOST_REG | cat'"
    keys=(ck pass base version floor)
  fi
  HCMD[version]="$CK --version" # start-up alone, beside the floor
  HCMD[floor]=/bin/true
  : >"$WORK/helper-rows.tsv"
  for key in "${keys[@]}"; do printf '%s\t%s\n' "$key" "${HCMD[$key]}" >>"$WORK/helper-rows.tsv"; done

  per=$(((RUNS + ROUNDS - 1) / ROUNDS))
  HELPER_LOAD_BEFORE=$(loadavg)
  log "(1) $ROUNDS rounds of $per runs per command (+ $WARMUP warmup each); hyperfine --input: $([ "$INPUT_MODE" = 1 ] && echo yes || echo no, sh -c wrappers)"
  for ((r = 0; r < ROUNDS; r++)); do
    order=("${keys[@]}")
    if ((r % 2 == 1)); then
      order=()
      for ((i = ${#keys[@]} - 1; i >= 0; i--)); do order+=("${keys[$i]}"); done
    fi
    for key in "${order[@]}"; do
      hyperfine -N --style none --warmup "$WARMUP" --runs "$per" "${extra[@]}" \
        --export-json "$WORK/results/helper-$key-$r.json" -n "$key" "${HCMD[$key]}" \
        >/dev/null 2>"$WORK/hyperfine.err" \
        || { cat "$WORK/hyperfine.err" >&2; die "hyperfine failed for $key: ${HCMD[$key]}"; }
    done
  done
  HELPER_LOAD_AFTER=$(loadavg)

  log "(1) peak RSS: $RSS_RUNS runs of each helper"
  for key in ck pass; do
    h=$ckh
    [ "$key" = pass ] && h=$passh
    for ((i = 0; i < RSS_RUNS; i++)); do
      /usr/bin/time -f %M -a -o "$WORK/rss/$key.txt" "$h" get <"$WORK/host.txt" >"$WORK/once.out" 2>&1 \
        || { cat "$WORK/once.out" >&2; die "$key get failed under /usr/bin/time"; }
    done
  done
  AGENT_HWM_KB=0 AGENT_RSS_KB=0
  if [ -n "$GPG_AGENT_PID" ] && pid_matches "$GPG_AGENT_PID" gpg-agent; then
    AGENT_HWM_KB=$(mem_kb "$GPG_AGENT_PID" VmHWM)
    AGENT_RSS_KB=$(mem_kb "$GPG_AGENT_PID" VmRSS)
  fi
  HELPER_FILES=$( (find "$HOME" -type f 2>/dev/null || true) | wc -l)
  PASS_VER=$(dpkg-query -W -f='${Version}' pass 2>/dev/null || echo unknown)
  DCP_VER=$(dpkg-query -W -f='${Version}' golang-docker-credential-helpers 2>/dev/null || echo unknown)
  GPG_VER=$(gpg --version | head -n 1)
  unset CREDKEEPER_STATE_DIR
}

# =============================================================================================
# (2) token server
# =============================================================================================
SERVICE=bench-registry
TOKEN_ISSUER=credkeeper-bench-tokens
SERIES_SIGNED='credkeeper_tokens_vended_total{robot="puller",provider="registry",source="signed"}'

# start_broker DIR: `credkeeper serve` on a free port with DIR/broker.toml and DIR/state;
# sets BROKER_PID and BROKER_URL.
start_broker() {
  local d=$1 i
  BROKER_PATTERN="--config $d/broker.toml"
  "$CK" --config "$d/broker.toml" --state-dir "$d/state" serve --listen 127.0.0.1:0 \
    >"$d/broker.out" 2>"$d/broker.log" </dev/null &
  BROKER_PID=$!
  BROKER_URL=
  for ((i = 0; i < 300; i++)); do
    BROKER_URL=$(sed -n 's/^credkeeper broker listening on \(http:[^ ]*\).*/\1/p' "$d/broker.log" | head -n 1)
    [ -n "$BROKER_URL" ] && break
    pid_alive "$BROKER_PID" || { cat "$d/broker.log" >&2; die "the broker exited"; }
    sleep 0.1
  done
  [ -n "$BROKER_URL" ] || { cat "$d/broker.log" >&2; die "the broker did not say where it listens"; }
  wait_for_http "$BROKER_URL/healthz" 30 "$BROKER_PID" || die "broker: /healthz does not answer"
  log "broker pid $BROKER_PID on $BROKER_URL"
}

# run_wrk ALG CONNS: one wrk run against the running broker; a line in token.tsv.
run_wrk() {
  local alg=$1 conns=$2 threads=$WRK_THREADS out line s0 s1 t0 t1 a0 audit ok bad cpu signed
  [ "$conns" -lt "$threads" ] && threads=$conns
  s0=$(metric "$BROKER_URL" "$SERIES_SIGNED")
  a0=$(stat -c %s "$AUDIT")
  t0=$(cpu_ticks "$BROKER_PID")
  log "wrk $alg -t$threads -c$conns -d${DURATION}s"
  out=$(WRK_AUTH=$AUTH wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 5s --latency \
    -s "$HERE/token.lua" "$TOKEN_URL") || die "wrk failed: $out"
  printf '%s\n' "$out" >"$WORK/wrk-$alg-$conns.txt"
  t1=$(cpu_ticks "$BROKER_PID")
  sleep 0.5 # let the audit writer drain
  s1=$(metric "$BROKER_URL" "$SERIES_SIGNED")
  line=$(grep '^BENCH ' <<<"$out") || die "no BENCH line from wrk: $out"
  ok=$(field "$line" ok)
  bad=$(field "$line" non2xx)
  signed=$((s1 - s0))
  audit=$(tail -c +"$((a0 + 1))" "$AUDIT" | grep -c '"provider":"registry".*"result":"vended"' || true)
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN {printf "%.0f", 100 * t / hz / d}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$alg" "$conns" "$threads" \
    "$(field "$line" rps)" "$(field "$line" p50_us)" "$(field "$line" p99_us)" "$(field "$line" max_us)" \
    "$ok" "$bad" "$(field "$line" sockerr)" "$(field "$line" timeouts)" "$signed" "$audit" "$cpu" \
    >>"$WORK/token.tsv"
  [ "$bad" = 0 ] || log "WARNING: $bad non-2xx answers ($alg, $conns connections)"
  # wrk counts the answers it read before stopping; requests still in flight then were
  # answered (and counted by the broker) too: at most one per connection.
  if [ "$signed" -lt "$ok" ] || [ "$signed" -gt $((ok + bad + conns)) ]; then
    log "WARNING: $signed tokens signed for $ok answers ($alg, $conns connections)"
  fi
  [ "$audit" = "$signed" ] || log "WARNING: $audit audit lines for $signed signed tokens ($alg, $conns connections)"
}

token_part() {
  local alg d keygen code tok hdr payload
  log "== (2) registry token server =="
  : >"$WORK/token.tsv"
  : >"$WORK/token-mem.tsv"
  TOKEN_LOAD_BEFORE=$(loadavg)
  for alg in $ALGS; do
    d=$WORK/token-$alg
    mkdir -p "$d"
    case $alg in
      RS256) keygen=(-newkey rsa:2048) ;;
      ES256) keygen=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    esac
    openssl req -x509 "${keygen[@]}" -nodes -keyout "$d/signer.key" -out "$d/signer.pem" -days 2 \
      -subj /CN=credkeeper-bench-registry-tokens >"$d/openssl.log" 2>&1 \
      || { cat "$d/openssl.log" >&2; die "openssl failed"; }
    chmod 600 "$d/signer.key"
    cat >"$d/broker.toml" <<EOF
[registry]
service = "$SERVICE"
issuer = "$TOKEN_ISSUER"
key_file = "$d/signer.key"
cert_file = "$d/signer.pem"
algorithm = "$alg"
lifetime = 300

[[robot]]
name = "puller"
auth = { secret = true }
registry = ["repository:test/*:pull"]
EOF
    if ! "$CK" --config "$d/broker.toml" --state-dir "$d/state" robot-secret puller -o "$d/puller.secret" \
      >"$d/robot-secret.out" 2>&1; then
      if grep -q 'unknown field `registry`' "$d/robot-secret.out"; then
        skip token "this binary does not know the \`[registry]\` section (its config check says: unknown field registry): built before the token server"
        return 0
      fi
      cat "$d/robot-secret.out" >&2
      die "credkeeper robot-secret failed"
    fi
    start_broker "$d"
    AUDIT=$d/state/audit.log
    AUTH=$(printf 'puller:%s' "$(cat "$d/puller.secret")" | base64 -w0)
    TOKEN_URL="$BROKER_URL/registry/token?service=$SERVICE&scope=repository:test/hello:pull"

    # One request by hand: a token signed with ALG, for the service, with exactly the access.
    code=$(curl -s -o "$d/first.json" -w '%{http_code}' -H "Authorization: Basic $AUTH" "$TOKEN_URL")
    [ "$code" = 200 ] || die "first token request: HTTP $code: $(cat "$d/first.json")"
    tok=$(json_get token <"$d/first.json") || die "no token in $(cat "$d/first.json")"
    hdr=$(jwt_header "$tok")
    payload=$(jwt_payload "$tok")
    [ "$(json_get alg <<<"$hdr")" = "$alg" ] || die "token header $hdr: not $alg"
    json_get x5c.0 <<<"$hdr" >/dev/null || die "token header $hdr: no x5c"
    if [ "$(json_get aud <<<"$payload")" != "$SERVICE" ] || [ "$(json_get iss <<<"$payload")" != "$TOKEN_ISSUER" ] \
      || [ "$(json_get sub <<<"$payload")" != puller ] \
      || ! "$TESTBED_PYTHON" -c 'import json, sys
sys.exit(json.loads(sys.argv[1]) != [{"type": "repository", "name": "test/hello", "actions": ["pull"]}])' \
        "$(json_get access <<<"$payload")"; then
      die "unexpected token claims: $payload"
    fi
    printf '%s\t%s\n' "$alg" "${#tok}" >>"$WORK/token-size.tsv"

    for c in $CONNS; do run_wrk "$alg" "$c"; done
    printf '%s\t%s\t%s\n' "$alg" "$(mem_kb "$BROKER_PID" VmRSS)" "$(mem_kb "$BROKER_PID" VmHWM)" >>"$WORK/token-mem.tsv"
    stop_pid "$BROKER_PID" "$BROKER_PATTERN" || true
    BROKER_PID=
  done
  TOKEN_LOAD_AFTER=$(loadavg)
}

# =============================================================================================
# (3) CRI proxy
# =============================================================================================
cri_part() {
  local pcmd=() i r order key out sd sp ref ref2 b0 b1 vpy
  log "== (3) CRI proxy =="
  if [ -z "$PROXY_CMD" ] && ! "$CK" registry cri-proxy --help >"$WORK/cri-proxy-help.txt" 2>&1; then
    skip cri "\`credkeeper registry cri-proxy --help\` failed ($(head -n 1 "$WORK/cri-proxy-help.txt" | cut -c1-160)): the proxy is not in this binary"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    skip cri "containerd needs root"
    return 0
  fi
  CRI=$TESTBED/cri.py

  REG_STARTED=1
  REG_AUTH=htpasswd "$TESTBED/start-registry.sh" "$WORK/reg" >&2
  REG_ENV=$WORK/reg/registry.env
  IMAGE=$(env_read "$REG_ENV" REGISTRY_IMAGE)
  REG_USER=$(env_read "$REG_ENV" REGISTRY_USER)
  REG_PASSWORD=$(env_read "$REG_ENV" REGISTRY_PASSWORD)
  REG_LOG=$(env_read "$REG_ENV" REGISTRY_LOG)
  REG_VERSION=$(env_read "$REG_ENV" REGISTRY_VERSION)
  if [ -z "$IMAGE" ] || [ -z "$REG_PASSWORD" ]; then die "start-registry.sh left no image or password in $REG_ENV"; fi

  CTD_STARTED=1
  "$TESTBED/start-containerd.sh" "$WORK/ctd" >&2
  CTD_ENV=$WORK/ctd/containerd.env
  DIRECT_EP=$(env_read "$CTD_ENV" CONTAINERD_ENDPOINT)
  CTD_PID=$(env_read "$CTD_ENV" CONTAINERD_PID)
  CTD_VERSION=$(env_read "$CTD_ENV" CONTAINERD_VERSION)
  CTD_SNAPSHOTTER=$(env_read "$CTD_ENV" CONTAINERD_SNAPSHOTTER)

  # The proxy, with a state dir of its own (it may look for credentials there; these pulls
  # carry username/password, which it passes on).
  PROXY_SOCK=$WORK/cri-proxy.sock
  PROXY_EP=unix://$PROXY_SOCK
  if [ -n "$PROXY_CMD" ]; then
    read -r -a pcmd <<<"$PROXY_CMD"
    PROXY_LABEL="BENCH_CRI_PROXY_CMD: $PROXY_CMD (a stand-in, NOT credkeeper's proxy)"
  else
    pcmd=("$CK" registry cri-proxy)
    PROXY_LABEL="credkeeper registry cri-proxy"
  fi
  PROXY_PATTERN="--listen $PROXY_EP"
  mkdir -p "$WORK/proxy-state"
  CREDKEEPER_STATE_DIR=$WORK/proxy-state "${pcmd[@]}" --listen "$PROXY_EP" --upstream "$DIRECT_EP" \
    >"$WORK/proxy.out" 2>"$WORK/proxy.log" </dev/null &
  PROXY_PID=$!
  for ((i = 0; i < 300; i++)); do
    grep -qF "credkeeper cri-proxy listening on unix://" "$WORK/proxy.log" && break
    pid_alive "$PROXY_PID" || { cat "$WORK/proxy.log" >&2; die "the CRI proxy exited"; }
    sleep 0.1
  done
  grep -qF "credkeeper cri-proxy listening on $PROXY_EP" "$WORK/proxy.log" \
    || { cat "$WORK/proxy.log" >&2; die "the CRI proxy did not say it listens on $PROXY_EP"; }
  log "CRI proxy pid $PROXY_PID on $PROXY_EP -> $DIRECT_EP"

  # Transparent: Version, a pull and ImageStatus answer the same either way.
  out=$("$CRI" -e "$PROXY_EP" version) || die "Version through the proxy failed"
  [ "$(json_get runtime_name <<<"$out")" = containerd ] || die "Version through the proxy: $out"
  ref=$(CRI_PASSWORD=$REG_PASSWORD "$CRI" -e "$DIRECT_EP" pull "$IMAGE" -u "$REG_USER") \
    || die "pull directly from containerd failed"
  ref2=$(CRI_PASSWORD=$REG_PASSWORD "$CRI" -e "$PROXY_EP" pull "$IMAGE" -u "$REG_USER") \
    || die "pull through the proxy failed"
  [ "$ref" = "$ref2" ] || die "image_ref directly $ref, through the proxy $ref2"
  IMAGE_REF=$ref
  sd=$("$CRI" -e "$DIRECT_EP" status "$IMAGE")
  sp=$("$CRI" -e "$PROXY_EP" status "$IMAGE")
  [ "$sd" = "$sp" ] || die "ImageStatus differs: directly $sd, through the proxy $sp"
  [ "$(json_get image.id <<<"$sd")" = "$ref" ] || die "ImageStatus: $sd"

  CRI_LOAD_BEFORE=$(loadavg)
  log "(3) ImageStatus: $CRI_ROUNDS rounds of $CRI_N calls each way (+ $CRI_WARMUP warmup)"
  for ((r = 0; r < CRI_ROUNDS; r++)); do
    if ((r % 2 == 0)); then order=(direct proxy); else order=(proxy direct); fi
    for key in "${order[@]}"; do
      local ep=$DIRECT_EP
      [ "$key" = proxy ] && ep=$PROXY_EP
      "$CRI" -e "$ep" bench-status "$IMAGE" -n "$CRI_N" --warmup "$CRI_WARMUP" >"$WORK/cri/status-$key-$r.json" \
        || die "bench-status $key failed"
      [ "$(json_get found <"$WORK/cri/status-$key-$r.json")" = true ] || die "bench-status $key: image not found"
    done
  done

  log "(3) full pulls: $PULLS each way, alternating (RemoveImage, then PullImage)"
  vpy=$TESTBED/venv-cri/bin/python
  b0=$(grep -c 'response completed.*http.request.method=GET.*http.request.uri="/v2/[^"]*/blobs/' "$REG_LOG" || true)
  CRI_USERNAME=$REG_USER CRI_PASSWORD=$REG_PASSWORD "$vpy" -I "$HERE/cri_pulls.py" "$IMAGE" -n "$PULLS" \
    --warmup 1 --expect-ref "$IMAGE_REF" "direct=$DIRECT_EP" "proxy=$PROXY_EP" >"$WORK/cri/pulls.json" \
    || die "cri_pulls.py failed"
  b1=$(grep -c 'response completed.*http.request.method=GET.*http.request.uri="/v2/[^"]*/blobs/' "$REG_LOG" || true)
  # 1 warmup + PULLS timed pulls per path
  BLOB_GETS_PER_PULL=$(awk -v b=$((b1 - b0)) -v n=$((2 * (PULLS + 1))) 'BEGIN {printf "%.2f", b / n}')
  # the test image has two blobs (config and one layer): fewer GETs means a pull was served
  # from something left behind by the previous one
  if awk -v v="$BLOB_GETS_PER_PULL" 'BEGIN {exit !(v < 2)}'; then
    log "WARNING: only $BLOB_GETS_PER_PULL blob GETs per pull: not every pull was a full one"
  fi
  CRI_LOAD_AFTER=$(loadavg)
  PROXY_RSS_KB=$(mem_kb "$PROXY_PID" VmRSS)
  PROXY_HWM_KB=$(mem_kb "$PROXY_PID" VmHWM)
  CTD_RSS_KB=$(mem_kb "$CTD_PID" VmRSS)
  pid_alive "$PROXY_PID" || die "the CRI proxy died during the runs: $(tail -n 5 "$WORK/proxy.log")"
  stop_pid "$PROXY_PID" "$PROXY_PATTERN" || true
  PROXY_PID=
}

# =============================================================================================
LOAD_START=$(loadavg)
if want helper; then helper_part; else skip helper "not in BENCH_PARTS"; fi
if want token; then token_part; else skip token "not in BENCH_PARTS"; fi
if want cri; then cri_part; else skip cri "not in BENCH_PARTS"; fi
LOAD_END=$(loadavg)

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
CK_BUILT="built $(date -u -d "@$(stat -c %Y "$CK")" '+%Y-%m-%d %H:%M UTC')"
if head_time=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null) && [ "$(stat -c %Y "$CK")" -lt "$head_time" ]; then
  CK_BUILT="$CK_BUILT, **before** the commit above ($(date -u -d "@$head_time" '+%H:%M UTC')): it may lack that commit's changes"
fi
skipped() { awk -F'\t' -v p="$1" '$1 == p {print $2}' "$WORK/skips.tsv"; }

tool_versions() {
  local v=()
  command -v hyperfine >/dev/null && v+=("$(hyperfine --version)")
  command -v wrk >/dev/null && v+=("wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo '?')")
  command -v openssl >/dev/null && v+=("$(openssl version | cut -d' ' -f1-2)")
  v+=("GNU time $(dpkg-query -W -f='${Version}' time 2>/dev/null || echo '?')")
  local IFS=,
  printf '%s' "${v[*]}" | sed 's/,/, /g'
}

rc=0
"$TESTBED_PYTHON" "$HERE/report.py" "$WORK" goals "$GOAL_HELPER_MS" "$GOAL_PROXY_P99_US" "${INPUT_MODE:-0}" \
  >"$WORK/goals.md" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || [ "$rc" -eq 4 ] || die "report.py failed"

{
  cat <<EOF
# Benchmark: registry credentials — helper \`get\`, token server, CRI proxy

Reproduce: \`bench/registry.sh\` (\`CREDKEEPER=path/to/credkeeper\` measures another binary than
\`target/release/credkeeper\`; \`BENCH_PARTS="helper token cri"\` picks parts). Run of
$(date -u '+%Y-%m-%d %H:%M UTC') at commit \`$REV\`.

* Machine: \`nproc\` = $(nproc), CPU "$CPU", ${OS:-unknown OS}, kernel $(uname -r); every
  server and client shares it. Load average $LOAD_START at the start, $LOAD_END at the end.
* credkeeper: $("$CK" --version 2>/dev/null || echo credkeeper), \`$CK_REL\` ($PROFILE,
  $(($(stat -c %s "$CK") / 1024 / 1024)) MiB, $CK_BUILT).
* Tools: $(tool_versions).

EOF
  cat "$WORK/goals.md"
  echo
  echo "## (1) Helper \`get\`, a cold process per call"
  echo
  if [ -n "$(skipped helper)" ]; then
    echo "Skipped: $(skipped helper)."
  else
    cat <<EOF
Both helpers hold the same credential (\`{"ServerURL":"$HOST_REG","Username":"bench-user",…}\`),
stored through the helper protocol's \`store\`; \`get\` reads the host on standard input and
prints the JSON.

* \`docker-credential-credkeeper\`: a symlink to \`$CK_REL\`; its store is
  \`CREDKEEPER_STATE_DIR\` (SQLite, the secret sealed with AES-256-GCM-SIV). No docker or
  containers config exists in the private HOME, so \`get\` falls through to the store:
  \`credkeeper registry get --explain\` said "$HELPER_SOURCE".
* \`docker-credential-pass\` $DCP_VER (Debian's golang-docker-credential-helpers), pass
  $PASS_VER, $GPG_VER; a key without passphrase ($GPG_KEY; \`gpg --quick-gen-key bench@example $GPG_ALGO default never\`),
  its gpg-agent running (started by the key generation, as on a desktop) with VmRSS
  $(kb_to_mb "$AGENT_RSS_KB") MB, VmHWM $(kb_to_mb "$AGENT_HWM_KB") MB after all runs.
EOF
    if [ "$INPUT_MODE" = 1 ]; then
      cat <<EOF
* Timing: \`hyperfine -N --input HOSTFILE\` runs each helper directly with the host file as
  standard input.
EOF
    else
      cat <<EOF
* Timing: this hyperfine has no \`--input\`, so both helpers run under the same wrapper,
  \`sh -c 'printf $HOST_REG | HELPER get'\` (docker, too, writes the host into a pipe), and
  \`sh -c 'printf $HOST_REG | cat'\` is the baseline: the same shell, printf and pipe, with
  a trivial program in the helper's place. "− baseline" is a helper's median minus the
  baseline's: what the helper costs beyond starting a trivial program; adding back the floor
  (\`/bin/true\`, what starting a trivial program costs) estimates the helper alone.
EOF
    fi
    cat <<EOF
* \`hyperfine -N\`, $WARMUP warmup runs per block, each command's $RUNS runs split into $ROUNDS blocks
  alternating between the commands (order reversed every other round); median, mean ± sample σ
  and min over all runs; "user+sys" is the mean CPU time per run of all the command's
  processes. Peak RSS: \`/usr/bin/time -f %M\` of the helper run directly (stdin from the
  file; the largest process of its tree: for docker-credential-pass that includes \`pass\` and
  \`gpg\`), max over $RSS_RUNS runs. Load average $HELPER_LOAD_BEFORE before, $HELPER_LOAD_AFTER after.
  Files in the private HOME after the runs: $HELPER_FILES.

EOF
    "$TESTBED_PYTHON" "$HERE/report.py" "$WORK" helper "$GOAL_HELPER_MS" "$GOAL_PROXY_P99_US" "${INPUT_MODE:-0}"
  fi
  echo
  echo "## (2) Registry token server: \`GET /registry/token\`"
  echo
  if [ -n "$(skipped token)" ]; then
    echo "Skipped: $(skipped token)."
  else
    cat <<EOF
\`credkeeper serve\` with \`[registry] service = "$SERVICE"\`, \`issuer = "$TOKEN_ISSUER"\`,
\`lifetime = 300\`, the key and a self-signed certificate made by openssl (RS256: RSA 2048;
ES256: P-256; one broker per algorithm, no TLS), and one robot \`puller\`
(\`auth = { secret = true }\`, \`registry = ["repository:test/*:pull"]\`, its secret from
\`credkeeper robot-secret\`). wrk (\`bench/registry/token.lua\`) GETs
\`/registry/token?service=$SERVICE&scope=repository:test/hello:pull\` with
\`Authorization: Basic\` for ${DURATION} s per row, \`--latency\`. Every answer is a freshly
signed token (the token server has no cache): checked with the broker's
\`credkeeper_tokens_vended_total{…,provider="registry",source="signed"}\` and its audit log (one
line per token). A first request by hand checked the token: header \`alg\` and \`x5c\`,
\`iss\`, \`aud\`, \`sub\`, and \`access\` = exactly \`repository:test/hello:pull\`. wrk and the broker
share the machine's $(nproc) CPUs. Load average $TOKEN_LOAD_BEFORE before, $TOKEN_LOAD_AFTER after.

EOF
    "$TESTBED_PYTHON" "$HERE/report.py" "$WORK" token "$GOAL_HELPER_MS" "$GOAL_PROXY_P99_US" "${INPUT_MODE:-0}"
  fi
  echo
  echo "## (3) CRI proxy: what it adds per call"
  echo
  if [ -n "$(skipped cri)" ]; then
    echo "Skipped: $(skipped cri)."
  else
    cat <<EOF
containerd $CTD_VERSION (tests/testbed/start-containerd.sh, snapshotter $CTD_SNAPSHOTTER), registry
$REG_VERSION with htpasswd auth (tests/testbed/start-registry.sh, image \`$IMAGE\`), and the proxy:
$PROXY_LABEL \`--listen $PROXY_EP --upstream $DIRECT_EP\`. Through the proxy, Version answered
containerd, a pull answered the same image_ref (\`$IMAGE_REF\`) and ImageStatus the same JSON as
directly.

* ImageStatus: \`tests/testbed/cri.py bench-status IMAGE -n $CRI_N --warmup $CRI_WARMUP\` (one
  gRPC channel, sequential calls, each timed in the client; nearest-rank percentiles), directly
  and through the proxy, alternating, $CRI_ROUNDS rounds (order reversed every other round). "+"
  is the proxy's value minus the direct one of the same round; the last row is the median over
  the rounds.
* Full pull: \`bench/registry/cri_pulls.py\` (one process, one channel per path): RemoveImage,
  then a timed PullImage with username/password, alternating between the paths, 1 warmup + $PULLS
  timed pulls each way. The registry logged $BLOB_GETS_PER_PULL blob GETs per pull (the test image
  has two blobs, config and layer: 2 means every pull fetched everything again).
* Memory after the runs: proxy VmRSS $(kb_to_mb "$PROXY_RSS_KB") MB, VmHWM $(kb_to_mb "$PROXY_HWM_KB") MB;
  containerd VmRSS $(kb_to_mb "$CTD_RSS_KB") MB. Load average $CRI_LOAD_BEFORE before, $CRI_LOAD_AFTER after.

EOF
    "$TESTBED_PYTHON" "$HERE/report.py" "$WORK" cri "$GOAL_HELPER_MS" "$GOAL_PROXY_P99_US" "${INPUT_MODE:-0}"
  fi
} >"$WORK/report.md"

cp "$WORK/report.md" "$RESULTS.tmp" && mv -f "$RESULTS.tmp" "$RESULTS"
cat "$WORK/report.md"
log "written to $RESULTS"
exit "$rc"
