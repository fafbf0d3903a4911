#!/usr/bin/env bash
# selftest-cri.sh - prove the CRI peer works: venv-cri + compiled stubs (setup-cri.sh), a
# registry with htpasswd auth (start-registry.sh; a second tiny image pushed with skopeo), a
# private containerd 1.6 with its CRI plugin (start-containerd.sh), and cri.py against it:
# Version; PullImage without credentials fails with containerd's own status and message, with
# username/password (and the other AuthConfig forms) it succeeds; ListImages, ImageStatus,
# ImageFsInfo, RemoveImage, bench-status; the registry hosts dir (a plain-HTTP registry under
# another name, a TLS registry with a test CA); restart on the same state; the overlayfs
# snapshotter. Everything is stopped on exit. Ends with "N passed, M failed"; exits non-zero on
# any failure. SELFTEST_SNAPSHOTTER=overlayfs runs the main part on overlayfs too.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

T0=$(now_ms)
# a short path: containerd's sockets live in it (unix socket paths are limited to 107 bytes)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/selftest-cri.XXXXXX")
TLS_PID=
cleanup() {
  [ -n "$TLS_PID" ] && stop_pid "$TLS_PID" "docker-registry serve $STATE/" || true
  for s in ctd ctd-ovl; do
    "$TESTBED_DIR/stop-containerd.sh" "$STATE/$s" --purge 2>/dev/null || true
  done
  "$TESTBED_DIR/stop-registry.sh" "$STATE/reg" 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT

load_env() {
  set -a
  # shellcheck disable=SC1090
  . "$1"
  set +a
}
CRI=$TESTBED_DIR/cri.py

# cri ARGS...: cri.py against CONTAINERD_ENDPOINT; stdout in OUT, stderr in ERR, status in RC
cri() {
  local errf=$STATE/cri.err
  RC=0
  OUT=$("$CRI" -e "$CONTAINERD_ENDPOINT" "$@" 2>"$errf") || RC=$?
  ERR=$(cat "$errf")
}
# expect_ok NAME ARGS...: cri.py must succeed
expect_ok() {
  local name=$1
  shift
  cri "$@"
  if [ "$RC" -eq 0 ]; then pass "$name"; else fail "$name" "exit $RC: $ERR"; fi
}
# expect_rpc_fail NAME CODE PATTERN ARGS...: cri.py must exit 1 with
# "cri.py: <Method>: CODE: ...PATTERN..." on stderr
expect_rpc_fail() {
  local name=$1 code=$2 pattern=$3
  shift 3
  cri "$@"
  if [ "$RC" -ne 1 ]; then
    fail "$name" "exit $RC (want 1): $OUT $ERR"
  elif ! grep -qE "^cri\.py: [A-Za-z]+: $code: " <<<"$ERR"; then
    fail "$name" "status code is not $code: $ERR"
  elif ! grep -qF -- "$pattern" <<<"$ERR"; then
    fail "$name" "message lacks '$pattern': $ERR"
  else
    pass "$name"
  fi
}
# has_tag IMAGE: ListImages lists IMAGE as a repo tag
has_tag() { "$CRI" -e "$CONTAINERD_ENDPOINT" images -q | grep -qxF "$1"; }
gone() { ! pid_alive "$1"; }
absent() { [ "$("$CRI" -e "$CONTAINERD_ENDPOINT" status "$1")" = "{}" ]; }

# the dirs a packaged containerd uses: none may appear because of this test
SYSTEM_DIRS=(/run/containerd /var/lib/containerd /opt/containerd /etc/cni/net.d /run/containerd/s)
sys_dirs_state() { for d in "${SYSTEM_DIRS[@]}"; do [ -e "$d" ] && echo "$d"; done; true; }
SYS_BEFORE=$(sys_dirs_state)

# =============================================================================================
echo "== setup"
t0=$(now_ms)
if VPY=$("$TESTBED_DIR/setup-cri.sh"); then pass "setup-cri.sh (venv-cri, stubs from the k8s-cri proto)"; else
  fail "setup-cri.sh"
  summary
  exit 1
fi
SETUP_MS=$(( $(now_ms) - t0 ))
t0=$(now_ms)
check "setup-cri.sh --check (fast path)" bash -c "'$TESTBED_DIR/setup-cri.sh' --check >/dev/null"
CHECK_MS=$(( $(now_ms) - t0 ))
check_eq "venv-cri pins" "grpcio=1.85.3 grpcio-tools=1.85.1 protobuf=7.36.2" \
  "$("$VPY" -I -c 'from importlib.metadata import version as v
print(" ".join("%s=%s" % (p, v(p)) for p in ("grpcio", "grpcio-tools", "protobuf")))')"
check "stubs: runtime.v1 with ImageService and RuntimeService" "$VPY" -I -c 'import sys
sys.path.insert(0, sys.argv[1])
import v1_pb2
s = v1_pb2.DESCRIPTOR.services_by_name
assert v1_pb2.DESCRIPTOR.package == "runtime.v1" and "ImageService" in s and "RuntimeService" in s
assert "registry_token" in v1_pb2.AuthConfig.DESCRIPTOR.fields_by_name' "$TESTBED_DIR/.cache/cri-py"

# =============================================================================================
echo "== registry"
if "$TESTBED_DIR/start-registry.sh" "$STATE/reg"; then pass "start-registry.sh (htpasswd)"; else
  fail "start-registry.sh (htpasswd)"
  summary
  exit 1
fi
load_env "$STATE/reg/registry.env"
HOST=$REGISTRY_HOST
IMAGE=$REGISTRY_IMAGE
# the config digest of test/hello:1 = what PullImage returns as image_ref
manifest_config() { json_get config.digest <"$1/blobs/sha256/${2#sha256:}"; }
CONFIG_DIGEST=$(manifest_config "$REGISTRY_OCI_LAYOUT" "$REGISTRY_IMAGE_DIGEST")

# a second private image, pushed with skopeo from a hand-made OCI layout
IMAGE2=$HOST/test/second:v2
DIGEST2=$("$TESTBED_DIR/make-tiny-oci.sh" "$STATE/oci2" v2 "second image")
if env -u XDG_RUNTIME_DIR -u DOCKER_CONFIG REGISTRY_AUTH_FILE="$STATE/reg/registry/empty-auth.json" \
    skopeo --policy "$REGISTRY_SKOPEO_POLICY" copy -q --dest-tls-verify=false \
    --dest-creds "$REGISTRY_USER:$REGISTRY_PASSWORD" "oci:$STATE/oci2:v2" "docker://$IMAGE2" \
    >"$STATE/push2.log" 2>&1; then
  pass "skopeo push of $IMAGE2"
else
  fail "skopeo push of $IMAGE2" "$(tail -n 2 "$STATE/push2.log")"
fi
CONFIG2=$(manifest_config "$STATE/oci2" "$DIGEST2")

# =============================================================================================
echo "== containerd"
SNAP=${SELFTEST_SNAPSHOTTER:-native}
t0=$(now_ms)
if CTD_SNAPSHOTTER=$SNAP "$TESTBED_DIR/start-containerd.sh" "$STATE/ctd"; then
  pass "start-containerd.sh (snapshotter $SNAP)"
else
  fail "start-containerd.sh (snapshotter $SNAP)"
  summary
  exit 1
fi
START_WALL=$(( $(now_ms) - t0 ))
load_env "$STATE/ctd/containerd.env"
FIRST_START_MS=$CONTAINERD_START_MS
check_eq "CONTAINERD_ENDPOINT" "unix://$STATE/ctd/containerd/containerd.sock" "$CONTAINERD_ENDPOINT"
check "CONTAINERD_SOCK is a socket" test -S "$CONTAINERD_SOCK"
check "CONTAINERD_PID is our containerd" pid_matches "$CONTAINERD_PID" "containerd --config $STATE/ctd/containerd/config.toml"
check_eq "CONTAINERD_SNAPSHOTTER" "$SNAP" "$CONTAINERD_SNAPSHOTTER"
check "CONTAINERD_ROOT, CONTAINERD_HOSTS_DIR under STATE" \
  test -d "$CONTAINERD_ROOT" -a -d "$CONTAINERD_HOSTS_DIR" -a "${CONTAINERD_ROOT#"$STATE"/}" != "$CONTAINERD_ROOT"
check "ready in under 5 s (CONTAINERD_START_MS=$CONTAINERD_START_MS)" test "$CONTAINERD_START_MS" -lt 5000

expect_ok "Version" version
check_eq "  ... runtime_name" containerd "$(json_get runtime_name <<<"$OUT")"
check_eq "  ... runtime_api_version" v1 "$(json_get runtime_api_version <<<"$OUT")"
check "  ... runtime_version 1.6.x ($(json_get runtime_version <<<"$OUT"))" \
  grep -q '^1\.6\.' <<<"$(json_get runtime_version <<<"$OUT")"
check "ctr (CONTAINERD_ADDRESS) sees the CRI plugin ok" \
  bash -c 'ctr plugins ls | awk '\''$1 == "io.containerd.grpc.v1" && $2 == "cri" && $NF == "ok"'\'' | grep -q .'

# --- PullImage and credentials -----------------------------------------------------------------
expect_rpc_fail "pull without credentials: UNKNOWN ... 401 Unauthorized (containerd's error)" UNKNOWN \
  "failed to pull and unpack image \"$IMAGE\": failed to resolve reference \"$IMAGE\": pulling from host $HOST failed with status code [manifests 1]: 401 Unauthorized" \
  pull "$IMAGE"
UNAUTH_ERR=$ERR
check "  ... and the image is absent" absent "$IMAGE"
expect_rpc_fail "pull with a wrong password: 401" UNKNOWN "401 Unauthorized" \
  pull "$IMAGE" -u "$REGISTRY_USER" -p wrong
t0=$(now_ms)
expect_ok "pull with username/password" pull "$IMAGE" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD"
PULL_MS=$(( $(now_ms) - t0 ))
check_eq "  ... image_ref = the image's config digest" "$CONFIG_DIGEST" "$OUT"
check "ListImages lists $IMAGE" has_tag "$IMAGE"
cri images
check "  ... with repo digest $REGISTRY_IMAGE_DIGEST" \
  grep -qF "\"$HOST/test/hello@$REGISTRY_IMAGE_DIGEST\"" <<<"$OUT"
expect_ok "ImageStatus" status "$IMAGE"
check_eq "  ... image.id" "$CONFIG_DIGEST" "$(json_get image.id <<<"$OUT")"
check_eq "  ... image.repo_tags" "[\"$IMAGE\"]" "$(json_get image.repo_tags <<<"$OUT")"
expect_ok "ImageStatus --verbose carries info" status "$IMAGE" --verbose
check "  ... info.info holds the image spec" grep -q 'imageSpec' <<<"$(json_get info.info <<<"$OUT")"
check "ctr -n k8s.io images ls shows it" bash -c "ctr images ls -q | grep -qxF '$IMAGE'"
expect_ok "ImageFsInfo" imagefsinfo
check "  ... mountpoint under CONTAINERD_ROOT" \
  grep -q "^$CONTAINERD_ROOT/io.containerd.snapshotter.v1.$SNAP\$" <<<"$(json_get image_filesystems.0.fs_id.mountpoint <<<"$OUT")"
CRI_PASSWORD=$REGISTRY_PASSWORD expect_ok "pull again (password from CRI_PASSWORD, pod metadata set)" \
  pull "$IMAGE" -u "$REGISTRY_USER" --pod-name p --pod-namespace ns --pod-uid u1
expect_ok "pull $IMAGE2 with auth = base64(user:pass)" \
  pull "$IMAGE2" --auth "$(printf '%s:%s' "$REGISTRY_USER" "$REGISTRY_PASSWORD" | base64 -w0)"
check_eq "  ... image_ref" "$CONFIG2" "$OUT"
expect_ok "pull with server_address http://$HOST" \
  pull "$IMAGE" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD" --server-address "http://$HOST"
expect_rpc_fail "server_address without a scheme: containerd cannot parse it" UNKNOWN \
  "first path segment in URL cannot contain colon" \
  pull "$IMAGE" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD" --server-address "$HOST"
expect_rpc_fail "server_address of another host: credentials dropped, 401" UNKNOWN "401 Unauthorized" \
  pull "$IMAGE" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD" --server-address "http://localhost:${REGISTRY_PORT}"
expect_rpc_fail "registry_token alone is ignored by containerd 1.6: 401" UNKNOWN "401 Unauthorized" \
  pull "$IMAGE" --registry-token not-a-jwt
expect_rpc_fail "pull of an image the registry does not have: NOT_FOUND" NOT_FOUND "not found" \
  pull "$HOST/test/nope:1" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD"
expect_rpc_fail "unreachable endpoint: UNAVAILABLE" UNAVAILABLE "" \
  -e "unix://$STATE/nothing.sock" --timeout 5 version

# --- bench-status ------------------------------------------------------------------------------
expect_ok "bench-status -n 200" bench-status "$IMAGE" -n 200
BENCH=$OUT
check_eq "  ... n" 200 "$(json_get n <<<"$BENCH")"
check_eq "  ... found" true "$(json_get found <<<"$BENCH")"
check "  ... p50_us <= p99_us, both > 0" "$TESTBED_PYTHON" -c 'import json, sys
b = json.loads(sys.argv[1]); sys.exit(not (0 < b["p50_us"] <= b["p99_us"] <= b["max_us"]))' "$BENCH"

# --- RemoveImage -------------------------------------------------------------------------------
expect_ok "RemoveImage $IMAGE" rm "$IMAGE"
check "  ... ImageStatus answers {} (absent, no error)" absent "$IMAGE"
check "  ... ListImages no longer lists it" bash -c "! '$CRI' -e '$CONTAINERD_ENDPOINT' images -q | grep -qxF '$IMAGE'"
check "  ... the other image is still there" has_tag "$IMAGE2"
expect_ok "RemoveImage of an absent image succeeds" rm "$IMAGE"

# --- registry hosts dir -------------------------------------------------------------------------
# localhost:1 is an alias: nothing listens there, only the hosts.toml leads to the registry.
# (Names that need DNS are avoided: a broken hosts.toml would send a lookup off the machine.)
ALIAS=localhost:1
mkdir -p "$CONTAINERD_HOSTS_DIR/$ALIAS"
printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$HOST" "$HOST" \
  >"$CONTAINERD_HOSTS_DIR/$ALIAS/hosts.toml"
expect_ok "hosts.toml written while running: $ALIAS -> http://$HOST, pull with credentials" \
  pull "$ALIAS/test/hello:1" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD"
check_eq "  ... image_ref" "$CONFIG_DIGEST" "$OUT"
expect_rpc_fail "  ... server_address must name the endpoint contacted (http://$ALIAS: 401)" UNKNOWN \
  "pulling from host $HOST failed with status code [manifests 1]: 401 Unauthorized" \
  pull "$ALIAS/test/hello:1" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD" --server-address "http://$ALIAS"
# containerd 1.6.20 rejects a hosts.toml that has only `server` and falls back to the name
mkdir -p "$CONTAINERD_HOSTS_DIR/localhost:2"
printf 'server = "http://%s"\n' "$HOST" >"$CONTAINERD_HOSTS_DIR/localhost:2/hosts.toml"
expect_rpc_fail "  ... a hosts.toml with only 'server' is ignored (1.6.20), the name is dialled" UNKNOWN \
  "localhost:2" pull "localhost:2/test/hello:1" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD"
check "  ... containerd logged: failed to decode hosts.toml, invalid \`host\` tree" \
  grep -q 'failed to decode hosts.toml.*invalid `host` tree' "$CONTAINERD_LOG"

# A TLS registry with a test CA (same binary, storage and htpasswd), configured at start time
# through CTD_HOSTS; restart containerd on the same STATE for it.
K=$STATE/tls
mkdir -p "$K"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$K/ca.key" -out "$K/ca.pem" -days 2 \
  -subj /CN=testbed-ca -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$K/srv.key" -out "$K/srv.csr" -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >"$K/ext"
openssl x509 -req -in "$K/srv.csr" -CA "$K/ca.pem" -CAkey "$K/ca.key" -CAcreateserial -out "$K/srv.pem" \
  -days 2 -extfile "$K/ext" 2>/dev/null
TLS_PORT=$(free_port)
TLS_HOST=127.0.0.1:$TLS_PORT
cat >"$K/config.yml" <<EOF
version: 0.1
log: {level: info, formatter: text}
storage:
  filesystem: {rootdirectory: "$REGISTRY_DATA"}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: $TLS_HOST
  secret: $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  tls: {certificate: "$K/srv.pem", key: "$K/srv.key"}
auth:
  htpasswd: {realm: testbed-registry, path: "$REGISTRY_HTPASSWD"}
EOF
(cd "$K" && exec env -i PATH=/usr/bin:/bin nohup "$REGISTRY_BIN" serve "$K/config.yml" \
  >"$K/registry.log" 2>&1 </dev/null) &
TLS_PID=$!
tls_up() {
  local i code
  for ((i = 0; i < 100; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$K/ca.pem" "https://$TLS_HOST/v2/" || true)
    [ "$code" = 401 ] && return 0
    pid_alive "$TLS_PID" || return 1
    sleep 0.05
  done
  return 1
}
check "TLS registry on $TLS_HOST (test CA) answers 401" tls_up

OLD_PID=$CONTAINERD_PID
t0=$(now_ms)
if CTD_SNAPSHOTTER=$SNAP CTD_HOSTS="$TLS_HOST=https://$TLS_HOST,ca=$K/ca.pem" \
    "$TESTBED_DIR/start-containerd.sh" "$STATE/ctd"; then
  pass "start-containerd.sh again on the same STATE, CTD_HOSTS with ca="
else
  fail "start-containerd.sh again on the same STATE, CTD_HOSTS with ca="
  summary
  exit 1
fi
RESTART_WALL=$(( $(now_ms) - t0 ))
load_env "$STATE/ctd/containerd.env"
check "  ... the old containerd was stopped" gone "$OLD_PID"
check "  ... images survive the restart ($IMAGE2)" has_tag "$IMAGE2"
check "  ... hosts.toml for $TLS_HOST has server, host table and ca" bash -c \
  "grep -qx 'server = \"https://$TLS_HOST\"' '$CONTAINERD_HOSTS_DIR/$TLS_HOST/hosts.toml' &&
   grep -qx '\[host.\"https://$TLS_HOST\"\]' '$CONTAINERD_HOSTS_DIR/$TLS_HOST/hosts.toml' &&
   grep -qx '  ca = \"$K/ca.pem\"' '$CONTAINERD_HOSTS_DIR/$TLS_HOST/hosts.toml'"
expect_ok "pull from the TLS registry (https + ca from the hosts dir) with credentials" \
  pull "$TLS_HOST/test/hello:1" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD"
check_eq "  ... image_ref" "$CONFIG_DIGEST" "$OUT"
expect_rpc_fail "  ... without credentials: 401" UNKNOWN "401 Unauthorized" pull "$TLS_HOST/test/hello:1"
expect_rpc_fail "localhost:$TLS_PORT (no hosts entry): loopback means plain http -> 400" UNKNOWN \
  "400 Bad Request" pull "localhost:$TLS_PORT/test/hello:1" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD"
stop_pid "$TLS_PID" "docker-registry serve $K/config.yml"
TLS_PID=

# --- stop ------------------------------------------------------------------------------------
CTD_PID=$CONTAINERD_PID
check "stop-containerd.sh" "$TESTBED_DIR/stop-containerd.sh" "$STATE/ctd"
check "  ... CONTAINERD_PID is gone" gone "$CTD_PID"
check "  ... no mounts left under STATE" bash -c "! awk '{print \$5}' /proc/self/mountinfo | grep -q '^$STATE/'"
check "stop-containerd.sh again (nothing to stop)" "$TESTBED_DIR/stop-containerd.sh" "$STATE/ctd"
check "stop-containerd.sh --purge removes STATE/containerd" \
  bash -c "'$TESTBED_DIR/stop-containerd.sh' '$STATE/ctd' --purge && test ! -e '$STATE/ctd/containerd'"

# =============================================================================================
if [ "$SNAP" != overlayfs ]; then
  echo "== overlayfs"
  if CTD_SNAPSHOTTER=overlayfs "$TESTBED_DIR/start-containerd.sh" "$STATE/ctd-ovl"; then
    pass "start-containerd.sh (CTD_SNAPSHOTTER=overlayfs)"
    load_env "$STATE/ctd-ovl/containerd.env"
    expect_ok "pull with username/password (overlayfs)" pull "$IMAGE" -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD"
    check "  ... snapshots in the overlayfs snapshotter" \
      bash -c "ctr snapshots --snapshotter overlayfs ls | grep -q Committed"
    check "stop-containerd.sh --purge (overlayfs)" "$TESTBED_DIR/stop-containerd.sh" "$STATE/ctd-ovl" --purge
    check "  ... no mounts left under STATE" bash -c "! awk '{print \$5}' /proc/self/mountinfo | grep -q '^$STATE/'"
  else
    fail "start-containerd.sh (CTD_SNAPSHOTTER=overlayfs)"
  fi
fi

"$TESTBED_DIR/stop-registry.sh" "$STATE/reg"
check_eq "nothing created in ${SYSTEM_DIRS[*]}" "$SYS_BEFORE" "$(sys_dirs_state)"

echo "unauthenticated pull, as containerd words it: $UNAUTH_ERR"
echo "timings: setup-cri ${SETUP_MS} ms (check ${CHECK_MS} ms), containerd ready ${FIRST_START_MS} ms" \
  "(start-containerd.sh ${START_WALL} ms wall, restart ${RESTART_WALL} ms), first pull ${PULL_MS} ms," \
  "ImageStatus p50 $(json_get p50_us <<<"$BENCH") us p99 $(json_get p99_us <<<"$BENCH") us," \
  "selftest $(( $(now_ms) - T0 )) ms"
summary
