#!/usr/bin/env bash
# tests/testbed/fuzz.sh [SECONDS_PER_TARGET | -runs=N]: build the fuzz targets under fuzz/
# with cargo-fuzz (libFuzzer) and run each one; default -runs=20000 each. On the stable
# toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags, --sanitizer none drops
# the nightly-only sanitizers. A crash fails the target by name; its input stays in
# fuzz/artifacts/<target>/. Ends with `N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/testbed/lib.sh

CARGO_FUZZ_VERSION=0.13.2
limit=${1:--runs=20000}
case $limit in
  -runs=[0-9]*) ;;
  [0-9]*) limit=-max_total_time=$limit ;;
  *) die "usage: $0 [SECONDS_PER_TARGET | -runs=N]" ;;
esac

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

export RUSTC_BOOTSTRAP=1
cd fuzz
log "building the fuzz targets"
cargo fuzz build --sanitizer none
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target" "artifacts/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  log "fuzzing $target ($limit)"
  if out=$(cargo fuzz run --sanitizer none "$target" "corpus/$target" "${seeds[@]}" -- \
      "$limit" -artifact_prefix="artifacts/$target/" 2>&1); then
    pass "$target: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' <<<"$out" | tail -1)"
  else
    printf '%s\n' "$out" | tail -40 >&2
    fail "$target" "crashed; input kept in fuzz/artifacts/$target/"
  fi
done
summary
