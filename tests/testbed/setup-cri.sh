#!/usr/bin/env bash
# setup-cri.sh [--check] - create/refresh tests/testbed/venv-cri (pinned grpcio, grpcio-tools,
# protobuf) and compile the CRI v1 proto into tests/testbed/.cache/cri-py/ for cri.py.
#
# Idempotent and non-interactive; concurrent runs are serialised with flock. When the venv holds
# exactly the pinned versions (every distribution recorded at install time) and the compiled
# stubs match the proto, nothing else runs: the check-only path takes well under a second.
#
# --check  only check; exit 0 when venv and stubs are complete, 1 otherwise (never installs).
# Prints the venv's python on stdout when everything is ready; logs go to stderr.
#
# The proto: CRI_PROTO (a file) when set, otherwise proto/v1.proto of the k8s-cri 0.11.0 crate
# (package runtime.v1, the crate the Rust side can use) in cargo's registry cache, which
# `cargo info k8s-cri@0.11.0` fills when it is absent. The stubs (v1_pb2.py, v1_pb2_grpc.py)
# and their stamp live in tests/testbed/.cache/cri-py/ (ignored, never committed); cri.py puts
# that directory on sys.path.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

CRI_PINS=(
  grpcio==1.85.3
  grpcio-tools==1.85.1 # protoc + the grpc plugin, used here only to compile the proto
  protobuf==7.36.2
)
# Versions of what the pins pull in (pip constraints: they only pin what is installed anyway).
CRI_CONSTRAINTS=(
  typing_extensions==4.16.0 # grpcio
  setuptools==84.2.1        # grpcio-tools (needs >=77; the venv comes with an older one)
)
K8S_CRI_VERSION=0.11.0

VENV=$TESTBED_DIR/venv-cri
VPY=$VENV/bin/python
STAMP=$VENV/.testbed-pins
CACHE=$TESTBED_DIR/.cache
OUT=$CACHE/cri-py
OUT_STAMP=$OUT/.stamp
READY=$OUT/READY # touched whenever everything is verified; cri.py compares its mtime
LOCK=$CACHE/cri-setup.lock

CHECK_ONLY=0
case ${1:-} in
  --check) CHECK_ONLY=1 ;;
  "") ;;
  *) die "usage: $0 [--check]" ;;
esac

pin_key() { printf '%s ' "${CRI_PINS[@]}" "--" "${CRI_CONSTRAINTS[@]}"; }

# the stamp's first line is the pin set; the rest is `pip freeze` of the finished venv
venv_ok() { venv_stamp_ok "$VPY" "$STAMP" "$(pin_key)"; }

# proto_key: identifies the stubs' source. The crate's files never change on crates.io, so a
# stamp for k8s-cri-0.11.0 needs no re-hash; a CRI_PROTO file is hashed every time.
proto_key() {
  local tools
  tools=$(printf '%s\n' "${CRI_PINS[@]}" | grep '^grpcio-tools==')
  if [ -n "${CRI_PROTO:-}" ]; then
    [ -f "$CRI_PROTO" ] || die "CRI_PROTO=$CRI_PROTO is not a file"
    printf 'file sha256=%s %s' "$(sha256sum "$CRI_PROTO" | cut -d' ' -f1)" "$tools"
  else
    printf 'k8s-cri-%s/proto/v1.proto %s' "$K8S_CRI_VERSION" "$tools"
  fi
}

stubs_ok() {
  [ -f "$OUT/v1_pb2.py" ] && [ -f "$OUT/v1_pb2_grpc.py" ] && [ -f "$OUT_STAMP" ] \
    && [ "$(head -n 1 "$OUT_STAMP")" = "$(proto_key)" ]
}

ready() {
  venv_ok && stubs_ok || return 1
  touch "$READY" 2>/dev/null || true
}

setup_once ready "$LOCK" "$CHECK_ONLY"
t0=$(now_ms)

# --- venv ------------------------------------------------------------------------------------
if ! venv_ok; then
  venv_prepare "$VENV" "$STAMP"
  constraints=$(mktemp "$CACHE/cri-constraints.XXXXXX")
  trap 'rm -f "$constraints"' EXIT
  printf '%s\n' "${CRI_CONSTRAINTS[@]}" >"$constraints"
  log "pip install ${CRI_PINS[*]}"
  # binary wheels only: building grpcio from source would take many minutes
  PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$VPY" -m pip install -q --only-binary=:all: \
    --cache-dir "$CACHE/pip" -c "$constraints" "${CRI_PINS[@]}" >&2
  "$VPY" -I -c 'import grpc, grpc_tools.protoc, google.protobuf' || die "venv-cri: imports fail"
  venv_stamp_write "$VPY" "$STAMP" "$(pin_key)"
  venv_ok || die "venv-cri incomplete after install (see $STAMP)"
fi

# --- the proto -------------------------------------------------------------------------------
# Prints the unpacked crate's proto, or nothing (never fails: the caller decides).
find_crate_proto() {
  local home=${CARGO_HOME:-$HOME/.cargo} f
  for f in "$home"/registry/src/*/"k8s-cri-$K8S_CRI_VERSION"/proto/v1.proto; do
    [ -f "$f" ] && { echo "$f"; return 0; }
  done
  return 0
}
if [ -n "${CRI_PROTO:-}" ]; then
  PROTO=$CRI_PROTO
else
  PROTO=$(find_crate_proto)
  if [ -z "$PROTO" ]; then
    command -v cargo >/dev/null || die "no k8s-cri $K8S_CRI_VERSION in cargo's cache and no cargo; set CRI_PROTO"
    log "cargo info k8s-cri@$K8S_CRI_VERSION (downloads the crate source)"
    # outside the workspace, so that its lock file and members play no part
    (cd / && cargo info -q "k8s-cri@$K8S_CRI_VERSION" >/dev/null) || die "cargo info k8s-cri@$K8S_CRI_VERSION failed"
    PROTO=$(find_crate_proto)
    [ -n "$PROTO" ] || die "k8s-cri $K8S_CRI_VERSION source has no proto/v1.proto"
  fi
fi
grep -q '^package runtime\.v1;' "$PROTO" || die "$PROTO is not the CRI v1 proto (package runtime.v1)"

# --- compile ---------------------------------------------------------------------------------
if ! stubs_ok; then
  log "compiling $PROTO -> $OUT"
  tmp=$(mktemp -d "$CACHE/.cri-py.XXXXXX")
  cp "$PROTO" "$tmp/v1.proto"
  (cd "$tmp" && "$VPY" -I -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. v1.proto >&2) \
    || { rm -rf "$tmp"; die "protoc failed on $PROTO"; }
  rm -f "$tmp/v1.proto"
  (cd "$tmp" && "$VPY" -I -c 'import sys; sys.path.insert(0, ".")
import v1_pb2, v1_pb2_grpc
assert v1_pb2.DESCRIPTOR.package == "runtime.v1"
assert "ImageService" in v1_pb2.DESCRIPTOR.services_by_name') || { rm -rf "$tmp"; die "compiled stubs do not import"; }
  { proto_key; echo; echo "source=$PROTO"; } >"$tmp/.stamp"
  chmod 755 "$tmp"
  rm -rf "$OUT"
  mv "$tmp" "$OUT"
fi
ready || die "venv-cri or the compiled stubs are incomplete after setup"
log "venv-cri and CRI stubs ready in $(( $(now_ms) - t0 )) ms: $(sed -n '2,$p' "$STAMP" | tr '\n' ' ')"
echo "$VPY"
