#!/usr/bin/env bash
# bench/credmon.sh - `credkeeper credmon` side by side with upstream scitokens-credmon
# (htcondor/scitokens-credmon 0.8, run from its source with htcondor==24.0.24 from PyPI) on
# identical copies of one credential directory, against a loopback token endpoint.
#
# For each size N (BENCH_SIZES, default "1000 10000 100000") one directory is built by
# bench/credmon/make_dir.py: N OAuth users (`box.top/.use/.meta`, mode 0400), half of them due
# (`.use` with expires_in 0), half idle (a fresh `.use`, expires_in 3600), plus N/10 local-mode
# users (`scitokens.top`, no `.use` yet). Then, for each side, on its own `cp -a` copy made
# just before it runs (cp sets new ctimes, so both start the same 1800 s idle window), read
# back into the page cache right before its pass 1 and synced (warm_copy):
#
#   pass 1    one pass: refresh the N/2 due users at bench/credmon/token_server.js (node, on
#             127.0.0.1, answers every refresh at once; warmed first with 20,000 grants by
#             bench/credmon/warm.js, so that its JIT's warm-up falls on neither side), sign
#             the local users' tokens
#   idle      a second pass right after it (after `sync`, so that it does not pay for the
#             write-back of pass 1's files), in a new process: nothing is due
#   warm idle credkeeper only (BENCH_DAEMON=1): `credkeeper credmon` as a daemon with
#             CREDMON_OAUTH_SCAN_INTERVAL=2; its second pass, with the in-memory stat cache
#             warm (upstream has no cache: its daemon's later turns cost what a new one does)
#
#   credkeeper: CONDOR_CONFIG=ONLY_ENV _CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH=DIR
#               _CONDOR_LOCAL_CREDMON_*=… credkeeper --insecure-loopback credmon --once -v
#   upstream:   CONDOR_CONFIG=FILE OAUTHLIB_INSECURE_TRANSPORT=1
#               venv/bin/python bench/credmon/one_pass.py SRC DIR LOG
#               (one turn of upstream's daemon loop, its own classes, see one_pass.py)
#
# Measured: wall time of the process and its peak RSS (/usr/bin/time -v), and the pass alone
# as each reports it (credkeeper's "pass over N users in X ms", one_pass.py's "pass_ms":
# without process start-up and imports). Checked, or the script fails: the token server saw
# exactly N/2 refresh grants per pass 1 and none per idle pass; afterwards every due user's
# `.use` holds a new access token from the server and its `.top` a new refresh token (0400),
# every idle user's files are untouched, every local user has a signed `.use` (check.py).
#
# Upstream's source: htcondor/scitokens-credmon is not on PyPI, so it is taken at run time
# from CREDMON_UPSTREAM_SRC (a checkout holding credmon/, or a git directory), else from the
# mirror at /work/.mirror/htcondor+scitokens-credmon/repo/.git when present (git archive
# HEAD into the work directory; nothing of it enters the repository). Without either, the
# upstream side is skipped with a message and only credkeeper is measured.
#
# Knobs: BENCH_SIZES, BENCH_LOCAL_PCT (10: local users as % of N), BENCH_UPSTREAM_MAX
#   (100000: largest N run upstream), BENCH_UPSTREAM_TIMEOUT (1800 s per upstream pass; a
#   pass cut off is reported with the refreshes it made), BENCH_DAEMON (1), BENCH_CONCURRENCY
#   (unset: credkeeper's default CREDMON_OAUTH_CONCURRENCY), BENCH_NO_BUILD=1 (use
#   target/release/credkeeper as it is), BENCH_KEEP=1 (keep the work directory),
#   BENCH_CACHE (target/bench-cache: where the upstream venv is kept between runs),
#   TMPDIR (where the work directory goes; it needs about 4 KiB x 3.3 files x N x 3 for
#   all sizes together: nothing is removed before the end, see settle_inodes),
#   BENCH_FS=ext4-journal (root only: put the work directory on a new ext4 file system with
#   mkfs.ext4's defaults, journal included, but one inode per 4 KiB (three copies of 110,000
#   users' directories need 1.3 million), in a 16 GiB sparse image file under TMPDIR,
#   loop-mounted for the run and removed at the end; for machines whose own file system is
#   not what a credential directory sits on in production, see credmon-results.md).
# Output: a markdown table on stdout (progress on stderr), and the raw numbers as
#   results.tsv in the work directory when it is kept.
# Exit status: 0 = measured and the goals hold (>= 10x upstream per pass, pass 1 and idle,
# for every size both sides finished; an idle pass over 100,000 users < 1 s); 3 = measured,
# a goal missed or not checkable (upstream skipped or cut off); 1 = error (work dir kept).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
HELPERS=$BENCH_DIR/credmon
# shellcheck source=../tests/testbed/lib.sh
. "$ROOT/tests/testbed/lib.sh"

SIZES=${BENCH_SIZES:-"1000 10000 100000"}
LOCAL_PCT=${BENCH_LOCAL_PCT:-10}
UP_MAX=${BENCH_UPSTREAM_MAX:-100000}
UP_TIMEOUT=${BENCH_UPSTREAM_TIMEOUT:-1800}
DAEMON=${BENCH_DAEMON:-1}
CACHE=${BENCH_CACHE:-$ROOT/target/bench-cache}
MIRROR=/work/.mirror/htcondor+scitokens-credmon/repo/.git
GOAL_RATIO=10
GOAL_IDLE_MS=1000
GOAL_IDLE_N=100000
# What upstream 0.8 needs (its requirements.txt), at the versions the research notes used;
# htcondor < 25 because 0.8 imports the v1 `htcondor` module, which 25.x wheels dropped.
UPSTREAM_PINS=(htcondor==24.0.24 requests_oauthlib==2.0.0 six==1.17.0 flask==3.1.3
  cryptography==50.0.2 scitokens==1.9.7)

for n in $SIZES; do
  { [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 2 ]; } || die "BENCH_SIZES: '$n' is not a number >= 2"
done

# --- tools ---------------------------------------------------------------------------------
apt_install time openssl curl
command -v node >/dev/null || apt_install nodejs
for t in /usr/bin/time openssl curl node "$TESTBED_PYTHON"; do
  command -v "$t" >/dev/null || die "$t not found after installing"
done

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p credkeeper"
  (cd "$ROOT" && cargo build --release -p credkeeper >&2)
fi
CK=$ROOT/target/release/credkeeper
[ -x "$CK" ] || die "$CK missing (build it, or unset BENCH_NO_BUILD)"

# --- work directory, isolation, cleanup -----------------------------------------------------
FS_MOUNT= FS_IMAGE=
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  local rc=$?
  set +e
  [ -n "${DAEMON_PID:-}" ] && stop_pid "$DAEMON_PID" "credmon" >/dev/null 2>&1
  [ -n "${SERVER_PID:-}" ] && stop_pid "$SERVER_PID" "token_server.js" >/dev/null 2>&1
  if [ -z "${WORK:-}" ]; then
    :
  elif [ "${BENCH_KEEP:-0}" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; }; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  if [ -n "$FS_MOUNT" ]; then
    umount "$FS_MOUNT" || log "cannot unmount $FS_MOUNT"
    rmdir "$FS_MOUNT"
  fi
  [ -n "$FS_IMAGE" ] && rm -f "$FS_IMAGE"
  exit "$rc"
}
trap cleanup EXIT

case ${BENCH_FS:-} in
  "") BASE=${TMPDIR:-/tmp} ;;
  ext4-journal)
    [ "$(id -u)" = 0 ] || die "BENCH_FS=ext4-journal needs root (mkfs.ext4 and mount -o loop)"
    command -v mkfs.ext4 >/dev/null || apt_install e2fsprogs
    FS_IMAGE=$(mktemp "${TMPDIR:-/tmp}/credmon-bench-fs.XXXXXX.img")
    truncate -s 16G "$FS_IMAGE" || die "BENCH_FS: cannot make the image file $FS_IMAGE"
    mkfs.ext4 -q -F -i 4096 -E lazy_itable_init=0,lazy_journal_init=0 "$FS_IMAGE" || die "BENCH_FS: mkfs.ext4 $FS_IMAGE failed"
    FS_MOUNT=$(mktemp -d "${TMPDIR:-/tmp}/credmon-bench-fs.XXXXXX")
    mount -o loop "$FS_IMAGE" "$FS_MOUNT" ||
      { rmdir "$FS_MOUNT"; FS_MOUNT=; die "BENCH_FS: mount -o loop $FS_IMAGE failed (no loop devices here?)"; }
    BASE=$FS_MOUNT
    ;;
  *) die "BENCH_FS=$BENCH_FS: the only file system this script makes is ext4-journal" ;;
esac
WORK=$(mktemp -d "$BASE/credmon-bench.XXXXXX")
chmod 700 "$WORK"
SERVER_PID=
DAEMON_PID=
trap 'exit 130' INT TERM

# Neither side reads the real user's files or an inherited HTCondor configuration; loopback
# is never sent through a proxy.
for v in $(compgen -e); do
  case $v in
    CREDKEEPER_* | XDG_* | _CONDOR_* | CONDOR_CONFIG | OAUTHLIB_*) unset "$v" ;;
  esac
done
export HOME=$WORK/home
mkdir -p "$HOME"
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

# --- the local issuer's key (both sides; upstream 0.8 cannot generate one on Python 3) -----
KEY=$WORK/scitokens-private.pem
PUB=$WORK/scitokens.pem
(umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$KEY" 2>/dev/null)
openssl ec -in "$KEY" -pubout -out "$PUB" 2>/dev/null
chmod 644 "$PUB"
ISSUER=https://credmon.bench.example
LIFETIME=1200

# --- upstream: source and venv -----------------------------------------------------------
UPSTREAM=1
UP_SRC=$WORK/upstream-src
UP_REV=
mkdir -p "$UP_SRC"
if [ -n "${CREDMON_UPSTREAM_SRC:-}" ] && [ -d "$CREDMON_UPSTREAM_SRC/credmon/CredentialMonitors" ]; then
  cp -a "$CREDMON_UPSTREAM_SRC/credmon" "$UP_SRC/"
  UP_REV=$(git -C "$CREDMON_UPSTREAM_SRC" rev-parse HEAD 2>/dev/null || echo "a checkout at $CREDMON_UPSTREAM_SRC")
elif [ -n "${CREDMON_UPSTREAM_SRC:-}" ] && git --git-dir="$CREDMON_UPSTREAM_SRC" rev-parse HEAD >/dev/null 2>&1; then
  git --git-dir="$CREDMON_UPSTREAM_SRC" archive HEAD credmon | tar -x -C "$UP_SRC"
  UP_REV=$(git --git-dir="$CREDMON_UPSTREAM_SRC" rev-parse HEAD)
elif [ -z "${CREDMON_UPSTREAM_SRC:-}" ] && git --git-dir="$MIRROR" rev-parse HEAD >/dev/null 2>&1; then
  git --git-dir="$MIRROR" archive HEAD credmon | tar -x -C "$UP_SRC"
  UP_REV=$(git --git-dir="$MIRROR" rev-parse HEAD)
else
  log "UPSTREAM SKIPPED: htcondor/scitokens-credmon's source is not here (it is not on PyPI)."
  log "  Set CREDMON_UPSTREAM_SRC to a checkout of it (or its git directory), or make the"
  log "  mirror $MIRROR available; only credkeeper is measured now."
  UPSTREAM=0
fi
[ "$UPSTREAM" = 0 ] || [ -f "$UP_SRC/credmon/CredentialMonitors/OAuthCredmon.py" ] ||
  die "upstream source at ${CREDMON_UPSTREAM_SRC:-$MIRROR} has no credmon/CredentialMonitors/OAuthCredmon.py"

VENV=$CACHE/credmon-venv
VPY=$VENV/bin/python
if [ "$UPSTREAM" = 1 ]; then
  want="${UPSTREAM_PINS[*]}"
  if [ ! -x "$VPY" ] || [ "$(cat "$VENV/.bench-pins" 2>/dev/null)" != "$want" ]; then
    log "creating $VENV (${UPSTREAM_PINS[*]})"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    "$TESTBED_PYTHON" -m venv "$VENV"
    if ! "$VPY" -m pip install -q "${UPSTREAM_PINS[@]}" >&2; then
      rm -rf "$VENV"
      die "pip could not install ${UPSTREAM_PINS[*]} (htcondor 24.0.24 has wheels for CPython 3.x on x86_64/aarch64 Linux only)"
    fi
    printf '%s' "$want" >"$VENV/.bench-pins"
  fi
  cat >"$WORK/condor_config" <<EOF
LOCAL_CREDMON_PRIVATE_KEY = $KEY
LOCAL_CREDMON_PUBLIC_KEY = $PUB
LOCAL_CREDMON_ISSUER = $ISSUER
LOCAL_CREDMON_KEY_ID = local
LOCAL_CREDMON_TOKEN_LIFETIME = $LIFETIME
EOF
  export CONDOR_CONFIG=$WORK/condor_config
  "$VPY" -c 'import htcondor, scitokens, requests_oauthlib' ||
    die "the upstream venv $VENV cannot import htcondor, scitokens, requests_oauthlib"
  UP_DESC="htcondor/scitokens-credmon ${UP_REV:0:12}, $("$VPY" -c 'import htcondor, sys; print("htcondor", htcondor.version().split()[1], "Python", sys.version.split()[0])')"
  unset CONDOR_CONFIG
  log "upstream: $UP_DESC"
fi

# describe_fs DIR: the file system DIR is on, with what makes a replacing rename cheap or
# dear: its mount options and, for ext4, whether it has a journal (jbd2 lists the devices it
# journals; ext4 without one frees each replaced file's blocks at once, and with `discard`
# waits for the device to trim them).
describe_fs() {
  local src fstype opts journal=""
  read -r src fstype opts < <(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$1")
  if [ "$fstype" = ext4 ]; then
    if [ -e "/proc/fs/jbd2/$(basename "$src")-8" ]; then journal=", with a journal"; else journal=", without a journal"; fi
  fi
  echo "$fstype$journal ($opts)"
}
# On ext4 without a journal a new inode is placed past every inode freed in the last 60 s
# (360 s while its inode-table block is dirty): a pass that replaces files right after
# another side's would pay for those frees. settle_inodes syncs and waits out the minute
# since the last pass 1 ended (LAST_FREES, epoch seconds) before the next pass 1 is measured.
NO_JOURNAL=0
case $(describe_fs "$WORK") in ext4,\ without\ a\ journal*) NO_JOURNAL=1 ;; esac
# Started as if a pass had just ended: whatever freed inodes right before this script (the
# clean-up of a run before it) weighs on neither side's first pass.
LAST_FREES=$(date +%s)
settle_inodes() {
  [ "$NO_JOURNAL" = 1 ] || return 0
  sync
  local wait=$((LAST_FREES + 61 - $(date +%s)))
  if [ "$wait" -gt 0 ]; then
    log "waiting $wait s: inodes freed by the last pass are 'recently deleted' to ext4 without a journal for 60 s"
    sleep "$wait"
  fi
}
# warm_copy DIR: read every file of DIR, so that a pass starts with its copy in the page
# cache, as right after its `cp`. A host may page out page cache unused for a while: this VM
# runs DAMON's `pageout` on memory idle for 60 s (/sys/kernel/mm/damon), the wait of
# settle_inodes. Without this, a pass would read most of its files from the disk.
# Then `sync`: `cp -a` copies each file's atime, no later than its mtime, so under `relatime`
# these reads update every inode's atime (this VM: /proc/meminfo's Dirty 0.2 MB -> 24 MB for
# 10,000 users). Left dirty, that write-back would fall on the first `syncfs` of credkeeper's
# pass (1.1 s of a 9.3 s pass over 100,000 users) and on the flusher's background threads
# during upstream's, which syncs nothing: the bench's own reads, measured on one side only.
warm_copy() {
  local t0 dirty
  t0=$(date +%s%N)
  find "$1" -type f -print0 | xargs -0 -r cat >/dev/null
  dirty=$(awk '/^Dirty:/ {print $2}' /proc/meminfo)
  sync
  log "page cache: $1 read back in $((($(date +%s%N) - t0) / 1000000)) ms (Dirty $dirty kB before the sync)"
}
MACHINE="$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); work directory on $(describe_fs "$WORK") ($WORK)"
log "machine: $MACHINE; load average $(cut -d ' ' -f 1-3 /proc/loadavg)"

# --- token endpoint --------------------------------------------------------------------------
node "$HELPERS/token_server.js" "$WORK/token-port" >"$WORK/token-server.log" 2>&1 &
SERVER_PID=$!
for ((i = 0; i < 100; i++)); do
  [ -s "$WORK/token-port" ] && break
  pid_alive "$SERVER_PID" || break
  sleep 0.1
done
[ -s "$WORK/token-port" ] || { cat "$WORK/token-server.log" >&2; die "the token server did not start"; }
PORT=$(cat "$WORK/token-port")
TOKEN_URL=http://127.0.0.1:$PORT/token
wait_for_http "http://127.0.0.1:$PORT/stats" 10 "$SERVER_PID" "x-credmon-bench: 1" ||
  die "the token server on port $PORT does not answer"
log "token endpoint $TOKEN_URL (pid $SERVER_PID)"
grants() { curl -s --max-time 5 "http://127.0.0.1:$PORT/stats" | json_get refreshed; }
# A fresh node answers its first thousands of requests before its JIT has compiled them:
# warmed here, neither side measures that (the first side measured would).
node "$HELPERS/warm.js" "$TOKEN_URL" 20000 || die "warming the token server failed"
log "token server warmed with 20,000 grants"

# --- measuring ------------------------------------------------------------------------------
# measure NAME TIMEOUT CMD...: run CMD under /usr/bin/time -v (stdout NAME.out, stderr
# NAME.err); sets WALL_MS, RSS_KB, FS_IN (512-byte blocks read from a disk), RC.
measure() {
  local name=$1 limit=$2 t0 t1
  shift 2
  t0=$(date +%s%N)
  RC=0
  /usr/bin/time -v -o "$WORK/$name.time" timeout --signal=TERM "$limit" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.err" || RC=$?
  t1=$(date +%s%N)
  WALL_MS=$(((t1 - t0) / 1000000))
  RSS_KB=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/$name.time")
  RSS_KB=${RSS_KB:-0}
  FS_IN=$(sed -n 's/.*File system inputs: //p' "$WORK/$name.time")
  FS_IN=${FS_IN:-0}
}

# ck_env DIR: CK_ENV = the `env …` prefix that runs credkeeper on DIR (HTCondor knobs as
# _CONDOR_ variables, no configuration file).
ck_env() {
  CK_ENV=(env CONDOR_CONFIG=ONLY_ENV
    "_CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH=$1"
    "_CONDOR_LOCAL_CREDMON_PRIVATE_KEY=$KEY"
    "_CONDOR_LOCAL_CREDMON_PUBLIC_KEY=$PUB"
    "_CONDOR_LOCAL_CREDMON_ISSUER=$ISSUER"
    _CONDOR_LOCAL_CREDMON_KEY_ID=local
    "_CONDOR_LOCAL_CREDMON_TOKEN_LIFETIME=$LIFETIME")
  if [ -n "${BENCH_CONCURRENCY:-}" ]; then
    CK_ENV+=("_CONDOR_CREDMON_OAUTH_CONCURRENCY=$BENCH_CONCURRENCY")
  fi
}

# ck_pass_ms FILE: the "pass over N users in X ms: …" line's X (the last one in FILE).
ck_pass_ms() { grep -o 'pass over [0-9]* users in [0-9]* ms' "$1" | tail -n 1 | awk '{print $6}'; }
ck_report() { grep -o 'pass over .*' "$1" | tail -n 1; }

# check_dir NAME DIR N L: check.py, failing the script when the directory is wrong.
check_dir() {
  local out
  if ! out=$("$TESTBED_PYTHON" "$HELPERS/check.py" "$2" "$3" "$4"); then
    log "$1: WRONG RESULT: $out"
    die "$1: the directory is not as a correct pass leaves it"
  fi
  log "$1: directory checked ($(json_get due_refreshed <<<"$out") refreshed, $(json_get idle_untouched <<<"$out") idle untouched, $(json_get local_signed <<<"$out") local signed)"
}

# expect_grants NAME BEFORE EXPECTED
expect_grants() {
  local now
  now=$(grants)
  [ "$((now - $2))" -eq "$3" ] || die "$1: the token server saw $((now - $2)) refresh grants, expected $3"
}

RESULTS=$WORK/results.tsv
printf 'users\tlocal\tside\tpass_ms\tpass_wall_ms\tpass_rss_kb\tidle_ms\tidle_wall_ms\tidle_rss_kb\twarm_idle_ms\tdaemon_rss_kb\tnote\n' >"$RESULTS"
VERDICT_OK=1

for N in $SIZES; do
  L=$((N * LOCAL_PCT / 100))
  DUE=$(((N + 1) / 2))
  MASTER=$WORK/master-$N
  log "=== $N OAuth users ($DUE due, $((N - DUE)) idle) + $L local users; load average $(cut -d ' ' -f 1-3 /proc/loadavg) ==="
  "$TESTBED_PYTHON" "$HELPERS/make_dir.py" "$MASTER" "$N" "$L" "$TOKEN_URL"

  # --- credkeeper -----------------------------------------------------------------------
  D=$WORK/ck-$N
  cp -a "$MASTER" "$D"
  sync
  g0=$(grants)
  ck_env "$D"
  settle_inodes
  warm_copy "$D"
  measure "ck-$N-pass" 3600 "${CK_ENV[@]}" "$CK" --insecure-loopback credmon --once -v
  LAST_FREES=$(date +%s)
  [ "$RC" -eq 0 ] || { tail -n 20 "$WORK/ck-$N-pass.err" >&2; die "credkeeper pass 1 exited $RC"; }
  ck_pass=$(ck_pass_ms "$WORK/ck-$N-pass.err")
  ck_pass_wall=$WALL_MS ck_pass_rss=$RSS_KB
  log "credkeeper pass 1: $(ck_report "$WORK/ck-$N-pass.err"); wall $WALL_MS ms, max RSS $RSS_KB kB, $FS_IN blocks read"
  expect_grants "credkeeper pass 1" "$g0" "$DUE"
  check_dir "credkeeper pass 1" "$D" "$N" "$L"

  # Pass 1's writes are still being written back (upstream's all of them, credkeeper's
  # metadata); an idle pass should not pay for that flush.
  sync
  g0=$(grants)
  measure "ck-$N-idle" 3600 "${CK_ENV[@]}" "$CK" --insecure-loopback credmon --once -v
  [ "$RC" -eq 0 ] || { tail -n 20 "$WORK/ck-$N-idle.err" >&2; die "credkeeper idle pass exited $RC"; }
  ck_idle=$(ck_pass_ms "$WORK/ck-$N-idle.err")
  ck_idle_wall=$WALL_MS ck_idle_rss=$RSS_KB
  log "credkeeper idle pass (new process, cold cache): $(ck_report "$WORK/ck-$N-idle.err"); wall $WALL_MS ms, max RSS $RSS_KB kB"
  grep -q 'pass over [0-9]* users in [0-9]* ms: 0 refreshed, 0 signed, 0 failed' "$WORK/ck-$N-idle.err" ||
    die "credkeeper's idle pass did something: $(ck_report "$WORK/ck-$N-idle.err")"
  expect_grants "credkeeper idle pass" "$g0" 0

  ck_warm=- ck_daemon_rss=-
  if [ "$DAEMON" = 1 ]; then
    sync
    g0=$(grants)
    "${CK_ENV[@]}" _CONDOR_CREDMON_OAUTH_SCAN_INTERVAL=2 "$CK" --insecure-loopback credmon -v \
      >"$WORK/ck-$N-daemon.out" 2>"$WORK/ck-$N-daemon.err" &
    DAEMON_PID=$!
    for ((i = 0; i < 3000; i++)); do
      [ "$(grep -c 'pass over' "$WORK/ck-$N-daemon.err" || true)" -ge 2 ] && break
      pid_alive "$DAEMON_PID" || break
      sleep 0.1
    done
    [ "$(grep -c 'pass over' "$WORK/ck-$N-daemon.err" || true)" -ge 2 ] ||
      { tail -n 20 "$WORK/ck-$N-daemon.err" >&2; die "the credkeeper daemon did not make two passes"; }
    ck_daemon_rss=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAEMON_PID/status")
    stop_pid "$DAEMON_PID" "credmon"
    DAEMON_PID=
    ck_warm=$(ck_pass_ms "$WORK/ck-$N-daemon.err")
    log "credkeeper daemon: first pass (cold) $(grep -o 'pass over [0-9]* users in [0-9]* ms' "$WORK/ck-$N-daemon.err" | head -n 1 | awk '{print $6}') ms, second (warm) $ck_warm ms; VmHWM $ck_daemon_rss kB"
    grep -c 'pass over [0-9]* users in [0-9]* ms: 0 refreshed, 0 signed, 0 failed' "$WORK/ck-$N-daemon.err" |
      grep -qx 2 || die "the credkeeper daemon's idle passes did something"
    expect_grants "credkeeper daemon" "$g0" 0
  fi
  check_dir "credkeeper after the idle passes" "$D" "$N" "$L"
  printf '%s\t%s\tcredkeeper\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n' "$N" "$L" "$ck_pass" "$ck_pass_wall" \
    "$ck_pass_rss" "$ck_idle" "$ck_idle_wall" "$ck_idle_rss" "$ck_warm" "$ck_daemon_rss" >>"$RESULTS"
  # Nothing is removed until the end (see settle_inodes).

  # --- upstream -------------------------------------------------------------------------
  if [ "$UPSTREAM" = 1 ] && [ "$N" -le "$UP_MAX" ]; then
    D=$WORK/up-$N
    cp -a "$MASTER" "$D"
    sync
    g0=$(grants)
    settle_inodes
    warm_copy "$D"
    measure "up-$N-pass" "$UP_TIMEOUT" env CONDOR_CONFIG="$WORK/condor_config" OAUTHLIB_INSECURE_TRANSPORT=1 \
      "$VPY" "$HELPERS/one_pass.py" "$UP_SRC" "$D" "$WORK/up-$N.log"
    LAST_FREES=$(date +%s)
    up_pass_wall=$WALL_MS up_pass_rss=$RSS_KB
    if [ "$RC" -eq 124 ]; then
      done_grants=$(($(grants) - g0))
      log "upstream pass 1 CUT OFF after ${UP_TIMEOUT} s: $done_grants of $DUE refreshes made"
      printf '%s\t%s\tupstream\t>%s\t%s\t%s\t-\t-\t-\t-\t-\tcut off after %s s with %s of %s refreshes\n' "$N" "$L" \
        "$((UP_TIMEOUT * 1000))" "$up_pass_wall" "$up_pass_rss" "$UP_TIMEOUT" "$done_grants" "$DUE" >>"$RESULTS"
      VERDICT_OK=0
      continue
    fi
    [ "$RC" -eq 0 ] || { tail -n 20 "$WORK/up-$N-pass.err" >&2; die "upstream pass 1 exited $RC"; }
    up_pass=$(json_get pass_ms <"$WORK/up-$N-pass.out")
    log "upstream pass 1: $up_pass ms in the pass; wall $WALL_MS ms, max RSS $RSS_KB kB, $FS_IN blocks read"
    expect_grants "upstream pass 1" "$g0" "$DUE"
    check_dir "upstream pass 1" "$D" "$N" "$L"

    sync
    g0=$(grants)
    measure "up-$N-idle" "$UP_TIMEOUT" env CONDOR_CONFIG="$WORK/condor_config" OAUTHLIB_INSECURE_TRANSPORT=1 \
      "$VPY" "$HELPERS/one_pass.py" "$UP_SRC" "$D" "$WORK/up-$N.log"
    [ "$RC" -eq 0 ] || { tail -n 20 "$WORK/up-$N-idle.err" >&2; die "upstream idle pass exited $RC"; }
    up_idle=$(json_get pass_ms <"$WORK/up-$N-idle.out")
    log "upstream idle pass: $up_idle ms in the pass; wall $WALL_MS ms, max RSS $RSS_KB kB"
    expect_grants "upstream idle pass" "$g0" 0
    check_dir "upstream after the idle pass" "$D" "$N" "$L"
    printf '%s\t%s\tupstream\t%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t\n' "$N" "$L" "$up_pass" "$up_pass_wall" \
      "$up_pass_rss" "$up_idle" "$WALL_MS" "$RSS_KB" >>"$RESULTS"
  elif [ "$UPSTREAM" = 1 ]; then
    log "upstream not run for $N users (BENCH_UPSTREAM_MAX=$UP_MAX)"
  fi
done

# --- report ---------------------------------------------------------------------------------
"$TESTBED_PYTHON" - "$RESULTS" "$GOAL_RATIO" "$GOAL_IDLE_MS" "$GOAL_IDLE_N" "$UPSTREAM" >"$WORK/report.md" <<'EOF' || VERDICT_OK=0
import csv, sys
path, goal_ratio, goal_idle_ms, goal_idle_n, upstream = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
rows = list(csv.DictReader(open(path), delimiter="\t"))
def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None
def ms(s):
    v = num(s)
    return s if v is None else "{:,.0f}".format(v)
def mb(s):
    v = num(s)
    return s if v is None else "{:,.0f}".format(v / 1024)
def ratio(a, b):
    a, b = num(a), num(b)
    return "{:.1f}x".format(a / b) if a is not None and b else "-"
print("| OAuth users (+ local) | side | pass 1 ms (in-process) | pass 1 wall ms | pass 1 max RSS MB "
      "| idle ms (in-process) | idle wall ms | idle max RSS MB | warm idle ms (daemon) | daemon RSS MB | note |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")
ok = True
by = {}
for r in rows:
    by[(r["users"], r["side"])] = r
    print("| {:,} (+{:,}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        int(r["users"]), int(r["local"]), r["side"], ms(r["pass_ms"]), ms(r["pass_wall_ms"]),
        mb(r["pass_rss_kb"]), ms(r["idle_ms"]), ms(r["idle_wall_ms"]), mb(r["idle_rss_kb"]),
        ms(r["warm_idle_ms"]), mb(r["daemon_rss_kb"]), r["note"]))
print()
print("| OAuth users | ratio pass 1 (in-process) | ratio pass 1 (wall) | ratio idle (in-process, cold) "
      "| ratio idle (wall) | ratio idle (in-process, credkeeper warm) | ratio max RSS pass 1 |")
print("|---|--:|--:|--:|--:|--:|--:|")
ratio_ok, compared = True, 0
for n in dict.fromkeys(r["users"] for r in rows):
    c, u = by.get((n, "credkeeper")), by.get((n, "upstream"))
    if not c or not u:
        ratio_ok = False
        continue
    if u["note"]:
        print("| {:,} | upstream: {} | | | | | |".format(int(n), u["note"]))
        ratio_ok = False
        continue
    compared += 1
    rp = num(u["pass_ms"]) / max(num(c["pass_ms"]), 0.5)
    ri = num(u["idle_ms"]) / max(num(c["idle_ms"]), 0.5)
    print("| {:,} | {} | {} | {} | {} | {} | {} |".format(int(n), ratio(u["pass_ms"], c["pass_ms"]),
          ratio(u["pass_wall_ms"], c["pass_wall_ms"]), ratio(u["idle_ms"], c["idle_ms"]),
          ratio(u["idle_wall_ms"], c["idle_wall_ms"]), ratio(u["idle_ms"], c["warm_idle_ms"]),
          ratio(u["pass_rss_kb"], c["pass_rss_kb"])))
    if rp < goal_ratio or ri < goal_ratio:
        ratio_ok = False
print()
idle_ok = False
big = [r for r in rows if r["side"] == "credkeeper" and int(r["users"]) >= goal_idle_n]
if big:
    r = big[0]
    idle = num(r["idle_ms"])
    idle_ok = idle is not None and idle < goal_idle_ms
    print("- Idle pass over {:,} OAuth users (+{:,} local): {} ms in a new process (cold cache; {} ms wall), "
          "{} ms in the daemon (warm): goal < {:,.0f} ms **{}**.".format(int(r["users"]), int(r["local"]),
          ms(r["idle_ms"]), ms(r["idle_wall_ms"]), ms(r["warm_idle_ms"]), goal_idle_ms,
          "met" if idle_ok else "NOT met"))
else:
    print("- No size >= {:,}: the idle-pass goal was not checked.".format(goal_idle_n))
if not upstream:
    print("- Goal >= {:.0f}x upstream per pass: **not checked** (the upstream side was skipped).".format(goal_ratio))
else:
    print("- Goal >= {:.0f}x upstream per pass (pass 1 and idle, in-process, every size): **{}**.".format(
        goal_ratio, "met" if ratio_ok and compared else "NOT met, or not checkable (see above)"))
ok = idle_ok and ratio_ok and compared > 0 and upstream
sys.exit(0 if ok else 3)
EOF
{
  echo "Machine: $MACHINE. credkeeper: $("$CK" --version) ($CK). Upstream: ${UP_DESC:-skipped}."
  echo "Load average at the end: $(cut -d ' ' -f 1-3 /proc/loadavg)."
  echo
  cat "$WORK/report.md"
}
if [ "${BENCH_KEEP:-0}" = 1 ]; then
  log "raw numbers: $RESULTS"
fi
[ "$VERDICT_OK" = 1 ] || exit 3
exit 0
