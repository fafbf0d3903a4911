#!/usr/bin/env bash
# stop-containerd.sh STATE [--purge] - stop the containerd that start-containerd.sh started for
# STATE: exactly CONTAINERD_PID from STATE/containerd.env, and only while that PID is still the
# containerd running STATE/containerd/config.toml (SIGTERM, then SIGKILL after 10 s). Then any
# shim of that daemon (a containerd-shim whose -address is our socket; none unless containers
# were started) is stopped by its PID, and every mount left under STATE (overlayfs snapshots,
# temporary unpack mounts) is unmounted, deepest first.
#
# --purge  also delete STATE/containerd (images, metadata, config, log) and STATE/containerd.env.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 STATE [--purge]"
PURGE=0
case ${2:-} in
  --purge) PURGE=1 ;;
  "") ;;
  *) die "usage: $0 STATE [--purge]" ;;
esac
[ -d "$1" ] || { log "no state directory $1; nothing to stop"; exit 0; }
STATE=$(cd "$1" && pwd)
CTD_DIR=$STATE/containerd
ENV_FILE=$STATE/containerd.env
SOCK=$CTD_DIR/containerd.sock

pid=$(env_read "$ENV_FILE" CONTAINERD_PID || true)
if [ -n "$pid" ]; then
  stop_pid "$pid" "containerd --config $CTD_DIR/config.toml"
else
  log "no CONTAINERD_PID in $ENV_FILE"
fi

# shims of this daemon (they outlive it by design)
for f in $(grep -lsaF containerd-shim /proc/[0-9]*/cmdline 2>/dev/null || true); do
  spid=${f#/proc/}
  spid=${spid%/cmdline}
  pid_matches "$spid" "containerd-shim" && pid_matches "$spid" " -address $SOCK " || continue
  log "stopping shim pid $spid"
  stop_pid "$spid" " -address $SOCK " || true
done

# mounts under STATE, deepest first (mountinfo field 5 is the mount point, octal-escaped)
unmount_all() {
  local m left=0
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || { log "cannot unmount $m"; left=1; }
  done < <(awk -v p="$STATE/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  return "$left"
}
MOUNTS_OK=1
unmount_all || MOUNTS_OK=0

if [ "$PURGE" -eq 1 ]; then
  [ "$MOUNTS_OK" -eq 1 ] || die "mounts remain under $STATE; not purging"
  rm -rf "$CTD_DIR" "$ENV_FILE"
fi
