#!/usr/bin/env bash
# make-tiny-oci.sh DIR [TAG] [TEXT] - build a one-layer OCI image layout in DIR by hand (tar,
# gzip, sha256sum; no daemon, no umoci) and print its manifest digest (sha256:...).
#
# DIR    the layout directory (created; an existing layout there is replaced).
# TAG    the ref name in index.json (default 1): copy it with `skopeo copy oci:DIR:TAG ...`.
# TEXT   the content of /hello.txt in the layer (default "hello from the testbed").
#
# The image is deterministic: the same TEXT always gives the same layer, config and manifest
# digests (fixed mtime, owner, file order; gzip -n; no timestamps in the config).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -ge 1 ] && [ $# -le 3 ] || die "usage: $0 DIR [TAG] [TEXT]"
DIR=$1
TAG=${2:-1}
TEXT=${3:-hello from the testbed}
[[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "bad TAG '$TAG'"

case $(uname -m) in
  x86_64) ARCH=amd64 ;;
  aarch64 | arm64) ARCH=arm64 ;;
  *) ARCH=$(uname -m) ;;
esac

rm -rf "$DIR"
mkdir -p "$DIR/blobs/sha256"
work=$(mktemp -d "${TMPDIR:-/tmp}/tiny-oci.XXXXXX")
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# put FILE: move FILE into the blob store, print its hex digest
put() {
  local d
  d=$(sha "$1")
  mv -f "$1" "$DIR/blobs/sha256/$d"
  printf '%s' "$d"
}

# --- layer: /hello.txt -----------------------------------------------------------------------
mkdir -p "$work/root"
printf '%s\n' "$TEXT" >"$work/root/hello.txt"
chmod 0644 "$work/root/hello.txt"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$work/root" -cf "$work/layer.tar" hello.txt
DIFF_ID=$(sha "$work/layer.tar")
gzip -n -9 <"$work/layer.tar" >"$work/layer.tar.gz"
LAYER_SIZE=$(size "$work/layer.tar.gz")
LAYER=$(put "$work/layer.tar.gz")

# --- config ----------------------------------------------------------------------------------
printf '{"architecture":"%s","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$ARCH" "$DIFF_ID" >"$work/config.json"
CONFIG_SIZE=$(size "$work/config.json")
CONFIG=$(put "$work/config.json")

# --- manifest --------------------------------------------------------------------------------
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$CONFIG" "$CONFIG_SIZE" "$LAYER" "$LAYER_SIZE" >"$work/manifest.json"
MANIFEST_SIZE=$(size "$work/manifest.json")
MANIFEST=$(put "$work/manifest.json")

# --- layout ----------------------------------------------------------------------------------
printf '{"imageLayoutVersion":"1.0.0"}' >"$DIR/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$MANIFEST" "$MANIFEST_SIZE" "$TAG" >"$DIR/index.json"

printf 'sha256:%s\n' "$MANIFEST"
