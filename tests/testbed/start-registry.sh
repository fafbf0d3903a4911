#!/usr/bin/env bash
# start-registry.sh STATE [PORT] - start a private container registry (CNCF distribution 2.8.2,
# Debian's docker-registry binary unpacked under tests/testbed/opt/, never installed as a package
# or service) on 127.0.0.1, push the tiny test image test/hello:1 into it, and write
# STATE/registry.env once /v2/ answers (200 or 401, carrying this instance's nonce header).
#
# STATE   state directory (created); the registry lives in STATE/registry/ (config, storage in
#         STATE/registry/data, htpasswd, password, log). Restarting with the same STATE keeps the
#         stored images and the password. A registry still running for STATE is stopped first.
# PORT    optional; otherwise a free loopback port.
#
# Inputs (environment, all optional; REG_* so that an exported registry.env never feeds back):
#   REG_AUTH=htpasswd (default) | none | token
#   REG_USER (tester)                        htpasswd user; the password is generated once per
#                                            STATE into STATE/registry/password
#   REG_TOKEN_REALM REG_TOKEN_SERVICE REG_TOKEN_ISSUER REG_TOKEN_ROOTCERT   (required for token:
#                                            realm URL, service = expected "aud", issuer = expected
#                                            "iss", PEM bundle of the certs that sign the tokens)
#   REG_TOKEN_AUTOREDIRECT=1                 token auth: set auth.token.autoredirect
#   REG_PUSH=0                               do not push the test image
# Outputs (STATE/registry.env): REGISTRY_HOST REGISTRY_PORT REGISTRY_URL REGISTRY_PID REGISTRY_AUTH
#   REGISTRY_USER REGISTRY_PASSWORD (empty unless htpasswd) REGISTRY_IMAGE REGISTRY_IMAGE_DIGEST
#   REGISTRY_REPO REGISTRY_TAG REGISTRY_START_MS REGISTRY_INSTALL_MS REGISTRY_PUSH_MS ... (below).
#   None is named REGISTRY_AUTH_FILE: skopeo reads that variable.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 STATE [PORT]"
mkdir -p "$1"
STATE=$(cd "$1" && pwd)
REQ_PORT=${2:-}
[ -z "$REQ_PORT" ] || [[ $REQ_PORT =~ ^[0-9]+$ ]] || die "PORT must be a number"

AUTH=${REG_AUTH:-htpasswd}
case $AUTH in htpasswd | none | token) ;; *) die "REG_AUTH must be htpasswd, none or token" ;; esac
USER_NAME=${REG_USER:-tester}
[[ $USER_NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "REG_USER must be [A-Za-z0-9._-]+"
if [ "$AUTH" = token ]; then
  for v in REG_TOKEN_REALM REG_TOKEN_SERVICE REG_TOKEN_ISSUER REG_TOKEN_ROOTCERT; do
    [ -n "${!v:-}" ] || die "REG_AUTH=token needs $v"
  done
  [ -f "$REG_TOKEN_ROOTCERT" ] && grep -q -- '-----BEGIN CERTIFICATE-----' "$REG_TOKEN_ROOTCERT" \
    || die "REG_TOKEN_ROOTCERT $REG_TOKEN_ROOTCERT is not a PEM file with a certificate"
  TOKEN_ROOTCERT=$(cd "$(dirname "$REG_TOKEN_ROOTCERT")" && pwd)/$(basename "$REG_TOKEN_ROOTCERT")
fi

REG_DIR=$STATE/registry
DATA=$REG_DIR/data
CONFIG=$REG_DIR/config.yml
LOG=$REG_DIR/registry.log
ENV_FILE=$STATE/registry.env
REPO=test/hello
TAG=1
mkdir -p "$REG_DIR" "$DATA"

OPT=$TESTBED_DIR/opt/docker-registry
REG_BIN=$OPT/usr/bin/docker-registry
DEB_DIR=$TESTBED_DIR/debs

# --- install ---------------------------------------------------------------------------------
# skopeo (push, and the clients in the tests), htpasswd; the registry binary is unpacked from the
# .deb: installing the package would add a system user and start a service on *:5000.
t0=$(now_ms)
mkdir -p "$TESTBED_DIR/.cache"
(
  flock -w 300 9 || die "timed out waiting for the registry install lock"
  need=(skopeo)
  [ "$AUTH" = htpasswd ] && need+=(apache2-utils)
  apt_install "${need[@]}"
  if [ ! -x "$REG_BIN" ]; then
    mkdir -p "$DEB_DIR"
    deb=$(ls "$DEB_DIR"/docker-registry_*.deb 2>/dev/null | tail -n 1 || true)
    if [ -z "$deb" ]; then
      if ! apt-cache show --no-all-versions docker-registry >/dev/null 2>&1; then
        log "apt-get update (docker-registry unknown to the current lists)"
        sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      fi
      log "apt-get download docker-registry -> $DEB_DIR"
      apt_opts=()
      # root: the _apt sandbox user can't write here; download as root without the warning
      [ "$(id -u)" -eq 0 ] && apt_opts=(-o APT::Sandbox::User=root)
      (cd "$DEB_DIR" && apt-get "${apt_opts[@]}" download -qq docker-registry >&2)
      deb=$(ls "$DEB_DIR"/docker-registry_*.deb | tail -n 1)
    fi
    log "unpacking $(basename "$deb") -> $OPT"
    mkdir -p "$(dirname "$OPT")"
    tmp=$(mktemp -d "$(dirname "$OPT")/.unpack.XXXXXX")
    dpkg-deb -x "$deb" "$tmp"
    [ -x "$tmp/usr/bin/docker-registry" ] || die "$deb has no usr/bin/docker-registry"
    rm -rf "$OPT"
    mv "$tmp" "$OPT"
  fi
) 9>"$TESTBED_DIR/.cache/registry-install.lock"
command -v skopeo >/dev/null || die "skopeo is not installed"
REG_VERSION=$("$REG_BIN" --version | awk '{print $NF}')
INSTALL_MS=$(( $(now_ms) - t0 ))

# --- stop a registry still running for this STATE --------------------------------------------
PATTERN="docker-registry serve $REG_DIR/"
if old_pid=$(env_read "$ENV_FILE" REGISTRY_PID) && [ -n "$old_pid" ]; then
  stop_pid "$old_pid" "$PATTERN"
fi
rm -f "$ENV_FILE"

# --- credentials -----------------------------------------------------------------------------
PASSWORD_FILE=$REG_DIR/password
HTPASSWD=$REG_DIR/htpasswd
REALM=testbed-registry
if [ ! -s "$PASSWORD_FILE" ]; then
  (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' 'xy' >"$PASSWORD_FILE")
fi
PASSWORD=$(cat "$PASSWORD_FILE")
if [ "$AUTH" = htpasswd ]; then
  # distribution accepts bcrypt entries only
  (umask 077 && htpasswd -Bin "$USER_NAME" <"$PASSWORD_FILE" >"$HTPASSWD.tmp" 2>/dev/null) \
    || die "htpasswd failed"
  mv -f "$HTPASSWD.tmp" "$HTPASSWD"
fi

# skopeo: an explicit signature policy, an empty auth file, no user config.
POLICY=$REG_DIR/policy.json
EMPTY_AUTH=$REG_DIR/empty-auth.json
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$POLICY"
printf '{}\n' >"$EMPTY_AUTH"
reg_skopeo() {
  env -u XDG_RUNTIME_DIR -u DOCKER_CONFIG REGISTRY_AUTH_FILE="$EMPTY_AUTH" \
    skopeo --policy "$POLICY" "$@"
}

# yaml_str VALUE: a double-quoted YAML scalar (JSON string syntax is valid YAML)
yaml_str() { "$TESTBED_PYTHON" -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }

# write_config FILE PORT AUTHMODE NONCE
write_config() {
  local file=$1 port=$2 mode=$3 nonce=$4
  {
    cat <<EOF
version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: testbed-registry
storage:
  filesystem:
    rootdirectory: $(yaml_str "$DATA")
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: $(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  headers:
    X-Content-Type-Options: [nosniff]
    X-Testbed-Registry: [$nonce]
EOF
    case $mode in
      htpasswd)
        cat <<EOF
auth:
  htpasswd:
    realm: $REALM
    path: $(yaml_str "$HTPASSWD")
EOF
        ;;
      token)
        cat <<EOF
auth:
  token:
    realm: $(yaml_str "$REG_TOKEN_REALM")
    service: $(yaml_str "$REG_TOKEN_SERVICE")
    issuer: $(yaml_str "$REG_TOKEN_ISSUER")
    rootcertbundle: $(yaml_str "$TOKEN_ROOTCERT")
EOF
        if [ "${REG_TOKEN_AUTOREDIRECT:-0}" = 1 ]; then echo "    autoredirect: true"; fi
        ;;
    esac
  } >"$file"
}

# wait_registry PORT PID NONCE TIMEOUT: /v2/ answers 200 or 401 with our nonce header.
# Returns 1 on timeout, 2 once PID has exited.
wait_registry() {
  local port=$1 pid=$2 nonce=$3 timeout=$4 deadline out code
  deadline=$(( $(now_ms) + timeout * 1000 ))
  while :; do
    out=$(curl -s -o /dev/null -D - -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/v2/" \
      2>/dev/null | tr -d '\r') || true
    code=${out##*$'\n'}
    if { [ "$code" = 200 ] || [ "$code" = 401 ]; } && grep -qixF "x-testbed-registry: $nonce" <<<"$out"; then
      return 0
    fi
    pid_alive "$pid" || return 2
    [ "$(now_ms)" -ge "$deadline" ] && return 1
    sleep 0.05
  done
}

# launch CONFIG_FILE NONCE: start the registry (no REGISTRY_* variables reach it: distribution
# reads them as config overrides) and wait for it; sets PID and PORT. Exits on failure.
launch() {
  local config=$1 nonce=$2 attempt=0 rc
  while :; do
    attempt=$((attempt + 1))
    PORT=${REQ_PORT_FOR_LAUNCH:-$(free_port)}
    write_config "$config" "$PORT" "$LAUNCH_MODE" "$nonce"
    printf '%s start-registry.sh: starting (%s) on port %s\n' "$(date -u +%FT%TZ)" "$LAUNCH_MODE" "$PORT" >>"$LOG"
    (cd "$REG_DIR" && exec env -i PATH=/usr/bin:/bin HOME="$REG_DIR" \
      nohup "$REG_BIN" serve "$config" >>"$LOG" 2>&1 </dev/null) &
    PID=$!
    rc=0
    wait_registry "$PORT" "$PID" "$nonce" 30 || rc=$?
    [ "$rc" -eq 0 ] && return 0
    if [ -z "${REQ_PORT_FOR_LAUNCH:-}" ] && [ "$attempt" -lt 3 ] \
       && tail -n 5 "$LOG" | grep -q 'address already in use'; then
      log "port $PORT was taken, retrying"
      stop_pid "$PID" "$PATTERN" || true
      continue
    fi
    log "port $PORT: $(ss -Hltnp "sport = :$PORT" 2>/dev/null | tr -s ' ' | head -n 3)"
    stop_pid "$PID" "$PATTERN" || true
    log "registry did not become ready on 127.0.0.1:$PORT (rc=$rc); last log lines of $LOG:"
    tail -n 40 "$LOG" >&2
    exit 1
  done
}

# --- test image ------------------------------------------------------------------------------
OCI=$REG_DIR/oci
DIGEST=$("$TESTBED_DIR/make-tiny-oci.sh" "$OCI" "$TAG")
TAG_LINK=$DATA/docker/registry/v2/repositories/$REPO/_manifests/tags/$TAG/current/link
stored_digest() { cat "$TAG_LINK" 2>/dev/null || true; }

# push HOSTPORT [CREDS]
push_image() {
  local host=$1 creds=${2:-} args=() got
  [ -n "$creds" ] && args=(--dest-creds "$creds")
  rm -f "$REG_DIR/pushed.digest"
  if ! reg_skopeo copy -q --dest-tls-verify=false "${args[@]}" --digestfile "$REG_DIR/pushed.digest" \
      "oci:$OCI:$TAG" "docker://$host/$REPO:$TAG" >>"$REG_DIR/push.log" 2>&1; then
    tail -n 20 "$REG_DIR/push.log" >&2
    return 1
  fi
  got=$(cat "$REG_DIR/pushed.digest")
  [ "$got" = "$DIGEST" ] || { log "pushed digest $got != built $DIGEST"; return 1; }
}

PUSH_MS=0
t0=$(now_ms)
if [ "${REG_PUSH:-1}" != 0 ] && [ "$AUTH" = token ] && [ "$(stored_digest)" != "$DIGEST" ]; then
  # token auth needs a token server to push; push through a short-lived anonymous instance on
  # the same storage instead (tags are stored by repository name, not by host).
  LAUNCH_MODE=none REQ_PORT_FOR_LAUNCH='' launch "$REG_DIR/config-bootstrap.yml" "bootstrap-$$-$RANDOM"
  push_image "127.0.0.1:$PORT" || { stop_pid "$PID" "$PATTERN"; die "bootstrap push failed"; }
  stop_pid "$PID" "$PATTERN"
  rm -f "$REG_DIR/config-bootstrap.yml"
fi
PUSH_MS=$(( $(now_ms) - t0 ))

# --- start -----------------------------------------------------------------------------------
t0=$(now_ms)
NONCE="$$-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
LAUNCH_MODE=$AUTH REQ_PORT_FOR_LAUNCH=$REQ_PORT launch "$CONFIG" "$NONCE"
START_MS=$(( $(now_ms) - t0 ))
HOST=127.0.0.1:$PORT

if [ "${REG_PUSH:-1}" != 0 ] && [ "$AUTH" != token ]; then
  t0=$(now_ms)
  creds=
  [ "$AUTH" = htpasswd ] && creds="$USER_NAME:$PASSWORD"
  push_image "$HOST" "$creds" || { stop_pid "$PID" "$PATTERN"; die "push of $REPO:$TAG failed"; }
  PUSH_MS=$(( $(now_ms) - t0 ))
fi
if [ "${REG_PUSH:-1}" != 0 ] && [ "$(stored_digest)" != "$DIGEST" ]; then
  stop_pid "$PID" "$PATTERN"
  die "$REPO:$TAG is not in the storage after the push"
fi

# an auth file with this registry's credentials, for the tests (htpasswd only)
AUTHS_JSON=
if [ "$AUTH" = htpasswd ]; then
  AUTHS_JSON=$REG_DIR/auths.json
  (umask 077 && printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$HOST" \
    "$(printf '%s:%s' "$USER_NAME" "$PASSWORD" | base64 -w0)" >"$AUTHS_JSON")
fi

# --- env file --------------------------------------------------------------------------------
tmp_env=$(mktemp "$STATE/.registry.env.XXXXXX")
{
  w() { env_write "$tmp_env" "$1" "$2"; }
  w REGISTRY_HOST "$HOST"
  w REGISTRY_PORT "$PORT"
  w REGISTRY_URL "http://$HOST"
  w REGISTRY_PID "$PID"
  w REGISTRY_AUTH "$AUTH"
  if [ "$AUTH" = htpasswd ]; then
    w REGISTRY_USER "$USER_NAME"
    w REGISTRY_PASSWORD "$PASSWORD"
    w REGISTRY_PASSWORD_FILE "$PASSWORD_FILE"
    w REGISTRY_HTPASSWD "$HTPASSWD"
    w REGISTRY_REALM "$REALM"
    w REGISTRY_AUTHS_JSON "$AUTHS_JSON"
  else
    w REGISTRY_USER ""
    w REGISTRY_PASSWORD ""
  fi
  if [ "$AUTH" = token ]; then
    w REGISTRY_TOKEN_REALM "$REG_TOKEN_REALM"
    w REGISTRY_TOKEN_SERVICE "$REG_TOKEN_SERVICE"
    w REGISTRY_TOKEN_ISSUER "$REG_TOKEN_ISSUER"
    w REGISTRY_TOKEN_ROOTCERT "$TOKEN_ROOTCERT"
  fi
  if [ "${REG_PUSH:-1}" != 0 ]; then
    w REGISTRY_IMAGE "$HOST/$REPO:$TAG"
    w REGISTRY_IMAGE_DIGEST "$DIGEST"
  fi
  w REGISTRY_REPO "$REPO"
  w REGISTRY_TAG "$TAG"
  w REGISTRY_OCI_LAYOUT "$OCI"
  w REGISTRY_SKOPEO_POLICY "$POLICY"
  w REGISTRY_VERSION "$REG_VERSION"
  w REGISTRY_BIN "$REG_BIN"
  w REGISTRY_CONFIG "$CONFIG"
  w REGISTRY_DATA "$DATA"
  w REGISTRY_DIR "$REG_DIR"
  w REGISTRY_LOG "$LOG"
  w REGISTRY_NONCE "$NONCE"
  w REGISTRY_INSTALL_MS "$INSTALL_MS"
  w REGISTRY_START_MS "$START_MS"
  w REGISTRY_PUSH_MS "$PUSH_MS"
}
mv -f "$tmp_env" "$ENV_FILE"
log "registry $REG_VERSION ready: http://$HOST auth=$AUTH (pid $PID, start ${START_MS} ms, push ${PUSH_MS} ms) -> $ENV_FILE"
