# shellcheck shell=bash
# Shared helpers for the testbed scripts. Source it: . "$(dirname "$0")/lib.sh"
# Everything here is non-interactive and loopback-only.

TESTBED_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export TESTBED_DIR

# python3 for the small helpers below. A pyenv shim costs ~0.1 s per call, so resolve the
# real interpreter once (and pass it on to child scripts).
if [ -z "${TESTBED_PYTHON:-}" ]; then
  TESTBED_PYTHON=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || TESTBED_PYTHON=python3
  export TESTBED_PYTHON
fi

log() { printf '%s %s\n' "[$(basename "$0")]" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Every script that sources this fails loudly: under `set -e` a failing command would end it
# without a word, so say which command it was and where (errtrace: in functions too). Only
# under `set -e`: a script without it checks statuses itself, and expected failures are not
# news.
set -o errtrace
trap 'tb_status=$?; [[ $- == *e* ]] && log "error: \`$BASH_COMMAND\` failed with status $tb_status (line $LINENO${TB_STEP:+, step: $TB_STEP})"' ERR

# Milliseconds since the epoch.
now_ms() { date +%s%3N; }

# free_port: print a TCP port on 127.0.0.1 that the kernel just handed out (bind to port 0).
free_port() {
  "$TESTBED_PYTHON" -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# wait_for_http URL TIMEOUT_SECONDS [PID] [HEADER]: poll until URL answers 200 (and, when
# HEADER like "x-foo: bar" is given, carries that header: proves it is *our* server answering,
# not another one already on that port). Returns 1 on timeout, 2 as soon as PID has exited.
wait_for_http() {
  local url=$1 timeout=${2:-30} pid=${3:-} header=${4:-} deadline code out
  deadline=$(( $(now_ms) + timeout * 1000 ))
  while :; do
    out=$(curl -s -o /dev/null -D - -w '%{http_code}' --max-time 2 "$url" 2>/dev/null | tr -d '\r') || true
    code=${out##*$'\n'}
    if [ "$code" = 200 ] && { [ -z "$header" ] || grep -qixF "$header" <<<"$out"; }; then
      return 0
    fi
    if [ -n "$pid" ] && ! pid_alive "$pid"; then
      return 2
    fi
    [ "$(now_ms)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

# env_write FILE KEY VALUE: set KEY=VALUE in a KEY=value file (replacing an earlier KEY).
# Values must be sourceable and dotenv-parseable as they are: no whitespace, quotes, $ or \.
env_write() {
  local file=$1 key=$2 value=$3 tmp
  [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "env_write: bad key '$key'"
  case $value in
    *[[:space:]]* | *\'* | *\"* | *\$* | *\\* | *\`*)
      die "env_write: value for $key contains whitespace, quotes, \$, \\ or a backtick" ;;
  esac
  tmp=$(mktemp "$file.XXXXXX")
  if [ -f "$file" ]; then
    grep -v "^$key=" "$file" >"$tmp" || true
  fi
  printf '%s=%s\n' "$key" "$value" >>"$tmp"
  mv -f "$tmp" "$file"
}

# env_read FILE KEY: print the value of KEY from a KEY=value file (without sourcing it).
env_read() {
  local file=$1 key=$2
  [ -f "$file" ] || return 1
  sed -n "s/^$key=//p" "$file" | tail -n 1
}

# pid_alive PID: true while PID exists and is not a zombie.
pid_alive() {
  local pid=$1 stat state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  # field 3 comes after "(comm)", and comm may contain spaces or parentheses
  state=${stat##*) }
  state=${state%% *}
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# pid_matches PID PATTERN: true when /proc/PID/cmdline (NULs read as spaces) contains PATTERN.
pid_matches() {
  local pid=$1 pattern=$2 cmd
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$pattern"* ]]
}

# stop_pid PID PATTERN: TERM exactly PID (only if its cmdline still contains PATTERN, so a
# reused PID is never hit), wait up to 10 s for it to be gone or a zombie, then KILL.
# Daemons started with nohup are reparented and stay zombies until PID 1 reaps them, so
# kill -0 is useless here; /proc/PID/stat's state is what counts.
stop_pid() {
  local pid=$1 pattern=$2 i
  [[ $pid =~ ^[0-9]+$ ]] || { log "stop_pid: no pid"; return 0; }
  if ! pid_alive "$pid"; then
    return 0
  fi
  if ! pid_matches "$pid" "$pattern"; then
    log "pid $pid is not '$pattern' any more; leaving it alone"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.05
  done
  if pid_alive "$pid" && pid_matches "$pid" "$pattern"; then
    log "pid $pid did not stop after TERM; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
      pid_alive "$pid" || return 0
      sleep 0.05
    done
    log "pid $pid still present after KILL"
    return 1
  fi
  return 0
}

# apt_install PKG...: install the Debian packages that are not installed yet.
# apt-get update runs only when a package is unknown to the current lists.
apt_install() {
  local missing=() pkg sudo=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "apt_install: need root or sudo for: ${missing[*]}"
    sudo=(sudo -n)
  fi
  for pkg in "${missing[@]}"; do
    if ! apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1; then
      log "apt-get update (package $pkg unknown to the current lists)"
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
      break
    fi
  done
  log "apt-get install ${missing[*]}"
  # Tests start peers in parallel, and each may install what it needs: wait for another
  # install's dpkg lock instead of failing on it.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install \
    -y -qq --no-install-recommends "${missing[@]}" >&2
}

# json_get PATH: read JSON from stdin, print the value at PATH (dot-separated keys, numeric
# list indices: "keys.0.kid"). Strings print raw, everything else as compact JSON.
# Prints nothing and returns 1 when PATH is absent or the input is not JSON.
json_get() {
  "$TESTBED_PYTHON" -c 'import json, sys
try:
    v = json.load(sys.stdin)
    for k in [p for p in sys.argv[1].split(".") if p != ""]:
        v = v[int(k)] if isinstance(v, list) else v[k]
except Exception:
    sys.exit(1)
print(v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))' "${1:-}"
}

# jwt_payload TOKEN: print the (unverified) JSON payload of a compact JWS; jwt_header likewise.
jwt_part() {
  "$TESTBED_PYTHON" -c 'import base64, sys
p = sys.argv[1].split(".")[int(sys.argv[2])]
sys.stdout.write(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode() + "\n")' "$1" "$2"
}
jwt_payload() { jwt_part "$1" 1; }
jwt_header() { jwt_part "$1" 0; }

# pkce_pair: print "VERIFIER CHALLENGE" (S256).
pkce_pair() {
  "$TESTBED_PYTHON" -c 'import base64, hashlib, secrets
v = secrets.token_urlsafe(48)
c = base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()
print(v, c)'
}

# urlencode STRING
urlencode() {
  "$TESTBED_PYTHON" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"
}

# url_query_param URL NAME: print a query parameter of URL (decoded).
url_query_param() {
  "$TESTBED_PYTHON" -c 'import sys, urllib.parse
q = urllib.parse.parse_qs(urllib.parse.urlsplit(sys.argv[1]).query)
v = q.get(sys.argv[2])
sys.exit(1) if not v else print(v[0])' "$1" "$2"
}

# --- self-test bookkeeping ------------------------------------------------------------------
TB_PASSED=0
TB_FAILED=0

# pass NAME / fail NAME [DETAIL]
pass() { TB_PASSED=$((TB_PASSED + 1)); printf 'ok   %s\n' "$1"; }
fail() { TB_FAILED=$((TB_FAILED + 1)); printf 'FAIL %s%s\n' "$1" "${2:+: $2}"; }

# check NAME COMMAND...: run COMMAND, count it as passed when it succeeds.
check() {
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

# check_eq NAME EXPECTED ACTUAL
check_eq() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected '$2', got '$3'"; fi
}

# summary: print the closing line; returns non-zero when anything failed.
summary() {
  printf '%d passed, %d failed\n' "$TB_PASSED" "$TB_FAILED"
  [ "$TB_FAILED" -eq 0 ]
}

# venv_stamp_ok PYTHON STAMP KEY: whether a pinned venv is complete. The stamp's first line
# is the pin set (KEY) it was installed for; the other lines are `pip freeze` of the finished
# venv. Complete = the same pin set, and every frozen distribution still installed at its
# version (metadata look-ups only: no imports, no pip). Used by the setup-*.sh scripts.
venv_stamp_ok() {
  local py=$1 stamp=$2 key=$3
  [ -x "$py" ] && [ -f "$stamp" ] || return 1
  "$py" -I -c 'import sys
from importlib.metadata import version, PackageNotFoundError
lines = open(sys.argv[1]).read().splitlines()
if not lines or lines[0] != sys.argv[2]:
    sys.exit(1)
for line in lines[1:]:
    name, _, want = line.partition("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)' "$stamp" "$key" 2>/dev/null
}

# venv_prepare VENV STAMP: a venv of the testbed's base interpreter (the real one behind a
# pyenv shim, never a venv's own python) at VENV, kept when its Python version still matches
# and remade otherwise. The stamp goes until the install is finished (venv_stamp_write).
# Sets BASE_PY.
venv_prepare() {
  local venv=$1 stamp=$2 vpy=$1/bin/python want_ver have_ver
  BASE_PY=$("$TESTBED_PYTHON" -c 'import sys; print(getattr(sys, "_base_executable", "") or sys.executable)')
  if ! "$BASE_PY" -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian's python3 ships venv/ensurepip separately
    apt_install python3-venv
  fi
  want_ver=$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  have_ver=$("$vpy" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
  rm -f "$stamp"
  if [ -d "$venv" ] && [ "$have_ver" != "$want_ver" ]; then
    log "removing unusable venv $venv (python '${have_ver:-broken}', want $want_ver)"
    rm -rf "$venv"
  fi
  if [ ! -x "$vpy" ]; then
    log "creating venv $venv with $BASE_PY ($want_ver)"
    "$BASE_PY" -m venv "$venv" >&2
  fi
}

# venv_stamp_write PYTHON STAMP KEY: record a finished install for venv_stamp_ok, written
# last and renamed into place so a half-done install never passes.
venv_stamp_write() {
  local py=$1 stamp=$2 key=$3
  {
    printf '%s\n' "$key"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$py" -m pip freeze --all --exclude-editable 2>/dev/null \
      | grep -E '^[A-Za-z0-9._-]+==' || true
  } >"$stamp.tmp"
  mv -f "$stamp.tmp" "$stamp"
}

# setup_once READY LOCK CHECK_ONLY: the gate of the setup-*.sh scripts. When the command READY
# succeeds, print $VPY and exit 0; with CHECK_ONLY=1 (--check) exit 1 otherwise. Else take LOCK (waiting
# up to 10 min for another run) and ask READY again, as that run may have done the job; the
# caller goes on to install only when it still fails. The lock is held until the script exits.
setup_once() {
  local ready=$1 lock=$2 check_only=$3
  if "$ready"; then
    echo "$VPY"
    exit 0
  fi
  [ "$check_only" -eq 1 ] && exit 1
  mkdir -p "$(dirname "$lock")"
  exec 9>"$lock"
  flock -w 600 9 || die "timed out waiting for $lock"
  if "$ready"; then
    echo "$VPY"
    exit 0
  fi
}
