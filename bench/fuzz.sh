#!/usr/bin/env bash
# bench/fuzz.sh [RUNS] [TARGET...]: the long fuzz run, RUNS (default 1000000) executions
# of each target under fuzz/ (all of them unless named), recording executions, exec/s and
# crashes per target in bench/fuzz-results.md with the date, machine and command.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/testbed/lib.sh
runs=${1:-1000000}
shift || true
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
out=bench/fuzz-results.md
cd fuzz
cargo fuzz build --sanitizer none
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
{
  echo "# Fuzzing: $runs executions per target"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(rustc --version)"
  echo "Command: \`bench/fuzz.sh $runs${*:+ $*}\` (cargo fuzz run --sanitizer none TARGET corpus/TARGET seeds/TARGET -- -runs=$runs, RUSTC_BOOTSTRAP=1)"
  echo
  echo "| target | executions | seconds | exec/s | crashes |"
  echo "|---|---:|---:|---:|---:|"
} >"../$out.tmp"
failed=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  start=$(now_ms)
  crashes=0
  log=$(cargo fuzz run --sanitizer none "$target" "corpus/$target" "${seeds[@]}" -- \
    -runs="$runs" -artifact_prefix="artifacts/$target/" 2>&1) || { crashes=1; failed=1; }
  secs=$(awk -v ms=$(( $(now_ms) - start )) 'BEGIN {printf "%.1f", ms / 1000}')
  done_runs=$(grep -o 'Done [0-9]* runs' <<<"$log" | awk '{print $2}' | tail -1)
  done_runs=${done_runs:-$(grep -o '#[0-9]*' <<<"$log" | tail -1 | tr -d '#')}
  rate=$(awk -v r="${done_runs:-0}" -v s="$secs" 'BEGIN {if (s > 0) printf "%d", r / s; else print 0}')
  echo "| $target | ${done_runs:-0} | $secs | $rate | $crashes |" >>"../$out.tmp"
  log "$target: ${done_runs:-0} runs, $secs s, $rate exec/s, crashes $crashes"
done
mv "../$out.tmp" "../$out"
cat "../$out"
exit $failed
