# shellcheck shell=bash
# Shared by the bench/*.sh scripts (after tests/testbed/lib.sh): reading a process's CPU
# time and memory from /proc, a broker's metrics, and wrk's BENCH lines.

# cpu_ticks PID: user + system CPU time of PID in clock ticks.
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat")
  stat=${stat##*) }
  # after "(comm) ": state is field 1, utime field 12, stime field 13
  awk '{print $12 + $13}' <<<"$stat"
}

# mem_kb PID FIELD: VmRSS / VmHWM of PID in kB (0 when gone).
mem_kb() { awk -v f="$2:" '$1 == f {print $2; found = 1} END {if (!found) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }
kb_to_mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# metric URL SERIES: the value of one exact metrics series (0 when absent).
metric() {
  curl -fsS --max-time 10 "$1/metrics" | awk -v s="$2" 'index($0, s " ") == 1 {v = $NF} END {print v + 0}'
}

# field LINE KEY: the value of KEY=value in a `BENCH k=v ...` line from a wrk script.
field() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" <<<"$1"; }
us_to_ms() { awk -v u="$1" 'BEGIN {printf "%.2f", u / 1000}'; }

# device_login NAME OUTFILE COMMAND...: run COMMAND in the background (stdout+stderr to
# OUTFILE), approve the user code it prints as alice with the headless browser (at the
# provider $ISSUER, through $TESTBED/op-browser.sh), wait for it. Its pid joins BG_PIDS.
device_login() {
  local name=$1 out=$2 pid code i rc=0
  shift 2
  "$@" </dev/null >"$out" 2>&1 &
  pid=$!
  BG_PIDS+=("$pid")
  code=
  for ((i = 0; i < 300; i++)); do
    code=$(grep -o 'enter the code: [A-Z0-9-]*' "$out" | head -n 1 | awk '{print $4}') || true
    [ -n "$code" ] && break
    pid_alive "$pid" || break
    sleep 0.1
  done
  [ -n "$code" ] || { grep -v $'\e' "$out" >&2 || true; die "$name printed no user code"; }
  "$TESTBED/op-browser.sh" device "$ISSUER" "$code" alice >/dev/null
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    grep -v $'\e' "$out" >&2 || true
    die "$name device login failed (exit $rc)"
  fi
  log "$name: device login approved ($code)"
}
