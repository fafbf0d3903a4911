#!/usr/bin/env bash
# start-containerd.sh STATE - start a private containerd 1.6 (Debian's containerd + runc) with
# its CRI plugin, as root, on the unix socket STATE/containerd/containerd.sock, and write
# STATE/containerd.env once a CRI Version call answers runtime_name "containerd".
#
# Everything lives in STATE/containerd/: config.toml, root/, state/, tmp/, opt/, cni/ (empty
# bin and conf dirs), certs.d/ (the CRI registry hosts dir), containerd.log. Nothing is written
# to /run/containerd, /var/lib/containerd, /opt/containerd or /etc/containerd (the package's
# own service is not used; the daemon gets only the config written here and an empty
# environment, so no proxy variables reach its pulls). A containerd still running for STATE
# is stopped first; images pulled earlier stay in STATE/containerd/root.
# Only image work is meant: no CNI plugins, no pause image, no containers (a running container
# would put shim sockets in /run/containerd/s).
#
# Inputs (environment, all optional; CTD_* so that an exported containerd.env never feeds back):
#   CTD_SNAPSHOTTER=native (default) | overlayfs   the CRI snapshotter. native copies layers and
#                                       leaves no mounts; overlayfs is what a node runs.
#   CTD_HOSTS="NAME=URL[,ca=FILE][,skip_verify] ..."   registry hosts entries: for each one,
#                                       certs.d/NAME/hosts.toml gets `server = "URL"` (and
#                                       `ca`, `skip_verify`), so that image refs naming NAME
#                                       are fetched from URL: http://127.0.0.1:PORT for a
#                                       plain-HTTP registry under another name, https://... with
#                                       ca=FILE for a registry with a test CA. Entries can also
#                                       be written into CONTAINERD_HOSTS_DIR while containerd
#                                       runs: the next pull reads them.
#   CTD_LOG_LEVEL=info                  containerd --log-level.
# Registries on 127.0.0.1:PORT or localhost:PORT need no entry: containerd uses plain http for
# loopback hosts by itself.
#
# Outputs (STATE/containerd.env): CONTAINERD_PID CONTAINERD_SOCK CONTAINERD_ENDPOINT
#   (unix://SOCK) CONTAINERD_ADDRESS (= SOCK; ctr reads it) CONTAINERD_NAMESPACE (k8s.io, where
#   the CRI keeps images; ctr reads it) CONTAINERD_SNAPSHOTTER (ctr reads it too)
#   CONTAINERD_TTRPC_SOCK CONTAINERD_DIR CONTAINERD_CONFIG CONTAINERD_ROOT CONTAINERD_STATE
#   CONTAINERD_HOSTS_DIR CONTAINERD_LOG CONTAINERD_VERSION CONTAINERD_RUNTIME_API_VERSION
#   CONTAINERD_INSTALL_MS CONTAINERD_START_MS (spawn -> CRI Version answered).
# Stop with stop-containerd.sh STATE [--purge].
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 STATE"
[ "$(id -u)" -eq 0 ] || die "containerd needs root"
mkdir -p "$1"
STATE=$(cd "$1" && pwd)

SNAPSHOTTER=${CTD_SNAPSHOTTER:-native}
case $SNAPSHOTTER in native | overlayfs) ;; *) die "CTD_SNAPSHOTTER must be native or overlayfs" ;; esac
LOG_LEVEL=${CTD_LOG_LEVEL:-info}

CTD_DIR=$STATE/containerd
CONFIG=$CTD_DIR/config.toml
ROOT=$CTD_DIR/root
RUN=$CTD_DIR/state
TMP=$CTD_DIR/tmp
HOSTS_DIR=$CTD_DIR/certs.d
LOG=$CTD_DIR/containerd.log
SOCK=$CTD_DIR/containerd.sock
TTRPC_SOCK=$CTD_DIR/containerd.sock.ttrpc
ENV_FILE=$STATE/containerd.env
PATTERN="containerd --config $CONFIG"
# sun_path holds 107 bytes plus the NUL
[ "${#TTRPC_SOCK}" -le 107 ] || die "STATE path too long for a unix socket: $TTRPC_SOCK (${#TTRPC_SOCK} > 107 bytes)"

# --- install ---------------------------------------------------------------------------------
t0=$(now_ms)
mkdir -p "$TESTBED_DIR/.cache"
(
  flock -w 300 9 || die "timed out waiting for the containerd install lock"
  apt_install containerd runc
) 9>"$TESTBED_DIR/.cache/containerd-install.lock"
command -v containerd >/dev/null || die "containerd is not installed"
CTD_BIN=$(command -v containerd)
# the readiness probe is a CRI client: venv-cri + compiled stubs (fast when already there)
"$TESTBED_DIR/setup-cri.sh" >/dev/null
INSTALL_MS=$(( $(now_ms) - t0 ))

# --- stop a containerd still running for this STATE ------------------------------------------
if old_pid=$(env_read "$ENV_FILE" CONTAINERD_PID) && [ -n "$old_pid" ]; then
  stop_pid "$old_pid" "$PATTERN"
fi
rm -f "$ENV_FILE"
# a socket file left by a killed daemon
rm -f "$SOCK" "$TTRPC_SOCK"

# --- config ----------------------------------------------------------------------------------
mkdir -p "$ROOT" "$RUN" "$TMP" "$CTD_DIR/opt" "$CTD_DIR/cni/bin" "$CTD_DIR/cni/net.d" "$HOSTS_DIR"
chmod 700 "$CTD_DIR"

# toml_str VALUE: a TOML basic string; paths with quotes, backslashes or control characters
# are refused rather than escaped
toml_str() {
  case $1 in *[\"\\]* | *[[:cntrl:]]*) die "cannot put '$1' in the containerd config" ;; esac
  printf '"%s"' "$1"
}

# hosts entries from CTD_HOSTS
read -r -a host_entries <<<"${CTD_HOSTS:-}"
for entry in "${host_entries[@]}"; do
  name=${entry%%=*}
  rest=${entry#*=}
  [ -n "$name" ] && [ "$name" != "$entry" ] || die "CTD_HOSTS entry '$entry' is not NAME=URL[,ca=FILE][,skip_verify]"
  [[ $name =~ ^[A-Za-z0-9._-]+(:[0-9]+)?$ ]] || die "CTD_HOSTS: bad registry name '$name'"
  IFS=, read -r -a parts <<<"$rest"
  url=${parts[0]}
  [[ $url =~ ^https?://[^/]+$ ]] || die "CTD_HOSTS: '$url' is not http(s)://HOST[:PORT]"
  mkdir -p "$HOSTS_DIR/$name"
  # containerd 1.6.20 rejects a hosts.toml without a [host."..."] table ("failed to decode
  # hosts.toml" error="invalid `host` tree", logged only) and then silently falls back to
  # https://NAME; so the endpoint goes into a host table (server alone is not enough).
  {
    printf 'server = %s\n\n' "$(toml_str "$url")"
    printf '[host.%s]\n' "$(toml_str "$url")"
    printf '  capabilities = ["pull", "resolve"]\n'
    for opt in "${parts[@]:1}"; do
      case $opt in
        ca=*)
          ca=${opt#ca=}
          [ -f "$ca" ] || die "CTD_HOSTS: CA file $ca not found"
          printf '  ca = %s\n' "$(toml_str "$(cd "$(dirname "$ca")" && pwd)/$(basename "$ca")")" ;;
        skip_verify) printf '  skip_verify = true\n' ;;
        *) die "CTD_HOSTS: unknown option '$opt'" ;;
      esac
    done
  } >"$HOSTS_DIR/$name/hosts.toml"
done

cat >"$CONFIG" <<EOF
# written by tests/testbed/start-containerd.sh
version = 2
root = $(toml_str "$ROOT")
state = $(toml_str "$RUN")
temp = $(toml_str "$TMP")
oom_score = 0
# they only log why they are skipped
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = $(toml_str "$SOCK")
  uid = 0
  gid = 0

[ttrpc]
  address = $(toml_str "$TTRPC_SOCK")

[debug]
  address = ""

[metrics]
  address = ""

[timeouts]
  # fail instead of waiting forever when another daemon holds the metadata db
  "io.containerd.timeout.bolt.open" = "10s"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = $(toml_str "$CTD_DIR/opt")

  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "$SNAPSHOTTER"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = $(toml_str "$CTD_DIR/cni/bin")
      conf_dir = $(toml_str "$CTD_DIR/cni/net.d")

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = $(toml_str "$HOSTS_DIR")
EOF

# --- start -----------------------------------------------------------------------------------
printf '%s start-containerd.sh: starting (snapshotter %s)\n' "$(date -u +%FT%TZ)" "$SNAPSHOTTER" >>"$LOG"
t0=$(now_ms)
(cd "$CTD_DIR" && exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME="$CTD_DIR" TMPDIR="$TMP" \
  nohup "$CTD_BIN" --config "$CONFIG" --log-level "$LOG_LEVEL" >>"$LOG" 2>&1 </dev/null) &
PID=$!

fail_start() {
  stop_pid "$PID" "$PATTERN" || true
  log "containerd did not become ready ($1); last log lines of $LOG:"
  tail -n 30 "$LOG" >&2
  exit 1
}
VERSION_JSON=$("$TESTBED_DIR/cri.py" -e "unix://$SOCK" version --wait 20 --wait-pid "$PID") \
  || fail_start "no CRI Version answer"
START_MS=$(( $(now_ms) - t0 ))
RUNTIME_NAME=$(json_get runtime_name <<<"$VERSION_JSON" || true)
[ "$RUNTIME_NAME" = containerd ] || fail_start "CRI Version answered runtime_name '$RUNTIME_NAME'"
RUNTIME_VERSION=$(json_get runtime_version <<<"$VERSION_JSON" || true)
API_VERSION=$(json_get runtime_api_version <<<"$VERSION_JSON" || true)
# the chosen snapshotter must have loaded (the CRI plugin starts without it and fails on pull)
plugins=$(ctr --address "$SOCK" plugins ls 2>/dev/null) || fail_start "ctr plugins ls failed"
awk -v s="$SNAPSHOTTER" '$1 == "io.containerd.snapshotter.v1" && $2 == s && $NF == "ok"' <<<"$plugins" | grep -q . \
  || fail_start "snapshotter $SNAPSHOTTER is not ok: $(grep "snapshotter.v1 *$SNAPSHOTTER" <<<"$plugins" | tr -s ' ')"

# --- env file --------------------------------------------------------------------------------
tmp_env=$(mktemp "$STATE/.containerd.env.XXXXXX")
{
  w() { env_write "$tmp_env" "$1" "$2"; }
  w CONTAINERD_PID "$PID"
  w CONTAINERD_SOCK "$SOCK"
  w CONTAINERD_ENDPOINT "unix://$SOCK"
  w CONTAINERD_ADDRESS "$SOCK"
  w CONTAINERD_NAMESPACE k8s.io
  w CONTAINERD_SNAPSHOTTER "$SNAPSHOTTER"
  w CONTAINERD_TTRPC_SOCK "$TTRPC_SOCK"
  w CONTAINERD_DIR "$CTD_DIR"
  w CONTAINERD_CONFIG "$CONFIG"
  w CONTAINERD_ROOT "$ROOT"
  w CONTAINERD_STATE "$RUN"
  w CONTAINERD_HOSTS_DIR "$HOSTS_DIR"
  w CONTAINERD_LOG "$LOG"
  w CONTAINERD_VERSION "$RUNTIME_VERSION"
  w CONTAINERD_RUNTIME_API_VERSION "$API_VERSION"
  w CONTAINERD_INSTALL_MS "$INSTALL_MS"
  w CONTAINERD_START_MS "$START_MS"
}
mv -f "$tmp_env" "$ENV_FILE"
log "containerd $RUNTIME_VERSION ready: unix://$SOCK snapshotter=$SNAPSHOTTER (pid $PID, start ${START_MS} ms) -> $ENV_FILE"
