#!/usr/bin/env bash
# build-image.sh BINARY - build deploy/Dockerfile's image for real, run it under runc, and
# check the image's contract (deploy-contract.sh) with the binary inside the image.
#
# No registry and no Docker engine are needed; only Debian's mirror:
#   base     `FROM debian:bookworm-slim` is a `debootstrap --variant=minbase bookworm` from
#            the mirror apt uses here, slimmed like the official image (no docs, man pages or
#            locales; apt lists cleaned) and imported into a private buildah storage as
#            docker.io/library/debian:bookworm-slim. The root file system is cached as a tar
#            under tests/testbed/.cache/image/ (keyed by mirror, architecture and this
#            recipe; remade after 30 days), so only a cold run pays for debootstrap.
#   build    `buildah bud --isolation chroot --storage-driver vfs --pull=never
#            --build-context build=DIR -f deploy/Dockerfile`: the Dockerfile unchanged. The
#            named context replaces its `build` stage (rust:1-bookworm, which cannot be
#            pulled here and whose toolchain is too old in Debian anyway): DIR holds
#            out/credkeeper, BINARY without its debug sections. Everything else of the
#            runtime stage runs for real (apt-get install from the mirror, COPY --from=build,
#            the symlinks, ENV, USER, ENTRYPOINT). Docker users can do the same with
#            `docker buildx build --build-context build=DIR`: a named context overrides a
#            stage of that name there too.
#   run      `buildah from` + `buildah mount` give the image's root file system; every
#            command runs in its own `runc run` container of it: read-only root, a tmpfs on
#            /tmp, the image's ENV/WorkingDir, no capabilities, no new privileges, the
#            host's network (the contract's broker is on 127.0.0.1).
#   checks   the built image's config and files, its entrypoint as its own USER, then
#            deploy-contract.sh with CONTRACT_RUN: the robot's commands in the image.
#
# Prints `ok NAME` / `FAIL NAME: why`; deploy-contract.sh's own "N passed, M failed" comes in
# between, and the closing "N passed, M failed" counts everything (image checks + contract).
# Exit 1 when anything failed. The image stays in the private storage for a look afterwards:
#   buildah --root tests/testbed/.cache/image/storage --runroot tests/testbed/.cache/image/runroot \
#     --storage-driver vfs images
# and so does the runner, tests/testbed/.cache/image/run-in-image (usage below), until the
# next run.
#
# build-image.sh --exec [-v DIR]... UID:GID [VAR=VALUE...] -- COMMAND [ARG...]
#   (deploy-contract.sh's CONTRACT_RUN) run COMMAND in a container of the built image as
#   UID:GID with the image's ENV plus the VARs, each DIR bind-mounted read-write at its own
#   path, stdin /dev/null; exits with COMMAND's status (TERM/INT kill the container). Needs
#   CK_IMAGE_ROOTFS, CK_IMAGE_CONFIG, CK_RUNC_ROOT and CK_RUNC_SPEC: the run-in-image wrapper
#   sets them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SELF=$(readlink -f "$0")
[ "$(id -u)" -eq 0 ] || die "must run as root (buildah with vfs storage and chroot isolation, runc)"

# ---------------------------------------------------------------------------------- --exec
# make_config RUNC_SPEC IMAGE_CONFIG ROOTFS UID:GID DIRS(newline-separated) VAR=VALUE... -- ARGS...
# prints the config.json of one container.
make_config() {
  "$TESTBED_PYTHON" - "$@" <<'PY'
import json, sys
spec, image_config, rootfs, user, dirs = sys.argv[1:6]
rest = sys.argv[6:]
sep = rest.index("--")
envs, args = rest[:sep], rest[sep + 1:]
if not args:
    sys.exit("no COMMAND")
c = json.load(open(spec))
img = json.load(open(image_config))
# The image's ENV, then the given variables (docker run -e): the same key replaced.
env = {}
for kv in (img.get("Env") or []) + envs:
    k, _, v = kv.partition("=")
    env.pop(k, None)
    env[k] = v
uid, _, gid = user.partition(":")
p = c["process"]
p["terminal"] = False
p["user"] = {"uid": int(uid), "gid": int(gid or uid)}   # no additionalGids: --clear-groups
p["args"] = args
p["env"] = [f"{k}={v}" for k, v in env.items()]
p["cwd"] = img.get("WorkingDir") or "/"
p["capabilities"] = {k: [] for k in p.get("capabilities", {})}  # none, as the CronJobs drop ALL
p["noNewPrivileges"] = True
c["root"] = {"path": rootfs, "readonly": True}          # readOnlyRootFilesystem
c["hostname"] = "credkeeper-image"
# The host's network: the contract's broker listens on 127.0.0.1.
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]})
for d in [d for d in dirs.split("\n") if d]:
    c["mounts"].append({"destination": d, "type": "bind", "source": d, "options": ["rbind", "rw"]})
json.dump(c, sys.stdout, indent=1)
PY
}

if [ "${1:-}" = --exec ]; then
  shift
  : "${CK_IMAGE_ROOTFS:?}" "${CK_IMAGE_CONFIG:?}" "${CK_RUNC_ROOT:?}" "${CK_RUNC_SPEC:?}"
  dirs=''
  while [ "${1:-}" = -v ]; do
    d=$(readlink -f "$2") || die "--exec: no directory $2"
    dirs+="$d"$'\n'
    shift 2
  done
  [[ ${1:-} =~ ^[0-9]+(:[0-9]+)?$ ]] || die "usage: $0 --exec [-v DIR]... UID:GID [VAR=VALUE...] -- COMMAND [ARG...]"
  user=$1
  shift
  bundle=$(mktemp -d "$CK_RUNC_ROOT/bundle.XXXXXX")
  id=ck-$$-$RANDOM
  cleanup_exec() {
    runc --root "$CK_RUNC_ROOT" delete --force "$id" >/dev/null 2>&1 || true
    rm -rf "$bundle"
  }
  trap cleanup_exec EXIT
  make_config "$CK_RUNC_SPEC" "$CK_IMAGE_CONFIG" "$CK_IMAGE_ROOTFS" "$user" "$dirs" "$@" \
    >"$bundle/config.json"
  trap - ERR # COMMAND's failure is its caller's business, not an error of this script
  # runc passes TERM/INT (from `timeout`) on to COMMAND, but COMMAND is PID 1 of its PID
  # namespace, where a signal without a handler does nothing (as with `docker run` without
  # --init). So runc runs in the background and a signal here KILLs the container.
  runc --root "$CK_RUNC_ROOT" run --bundle "$bundle" "$id" </dev/null &
  runc_pid=$!
  on_signal() {
    runc --root "$CK_RUNC_ROOT" kill "$id" KILL >/dev/null 2>&1 || true
    wait "$runc_pid" 2>/dev/null || true
    exit "$1"
  }
  trap 'on_signal 143' TERM
  trap 'on_signal 130' INT
  rc=0
  wait "$runc_pid" || rc=$?
  exit $rc
fi

# ------------------------------------------------------------------------------ build + run
[ $# -eq 1 ] || die "usage: $0 BINARY | $0 --exec [-v DIR]... UID:GID [VAR=VALUE...] -- COMMAND [ARG...]"
BINARY=$(readlink -f "$1")
[ -x "$BINARY" ] || die "$1 is not an executable"
ROOT=$(cd "$TESTBED_DIR/../.." && pwd)
DOCKERFILE=$ROOT/deploy/Dockerfile
[ -f "$DOCKERFILE" ] || die "no $DOCKERFILE"

T0=$(now_ms)
took() { printf '%d.%01d s' $(( ($(now_ms) - $1) / 1000 )) $(( ($(now_ms) - $1) % 1000 / 100 )); }
step() { TB_STEP=$*; log "[$(took "$T0")] $*"; }

step "system packages"
# buildah (vfs storage, chroot isolation), runc to run the image, debootstrap for the base,
# objcopy (binutils) to drop the debug sections of a debug BINARY.
apt_install buildah runc debootstrap debian-archive-keyring binutils util-linux

CACHE=$TESTBED_DIR/.cache/image
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock -w 1200 9 || die "timed out waiting for another build-image.sh ($CACHE/lock)"

STORAGE=$CACHE/storage
RUNROOT=$CACHE/runroot
RUNC_ROOT=$CACHE/runc
BUILDAH=(buildah --root "$STORAGE" --runroot "$RUNROOT" --storage-driver vfs)
IMAGE=localhost/credkeeper:contract
BASE_IMAGE=docker.io/library/debian:bookworm-slim
SUITE=bookworm
ARCH=$(dpkg --print-architecture)

# The mirror apt uses here (the only one reachable), for debootstrap and the image's sources.
MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null \
  | awk -v s="$SUITE" '$2 == s { print $1; exit }')
SECURITY=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null \
  | awk -v s="$SUITE-security" '$2 == s { print $1; exit }')
MIRROR=${MIRROR:-http://deb.debian.org/debian/}
SECURITY=${SECURITY:-http://deb.debian.org/debian-security/}

# make_base DIR: the debian:bookworm-slim equivalent, in DIR.
make_base() {
  local dir=$1
  debootstrap --variant=minbase --arch="$ARCH" --components=main "$SUITE" "$dir" "$MIRROR" \
    >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  # What the official slim image does (debuerreotype-slimify, its apt settings): dpkg skips
  # docs, man pages and locales from now on, and the ones there are removed.
  cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$dir"/usr/share/{groff,info,linda,lintian/overrides,locale,man}/*
  cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$dir/etc/apt/apt.conf.d/docker-no-languages"
  rm -f "$dir/etc/apt/sources.list"
  cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${MIRROR%/}
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${SECURITY%/}
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  rm -rf "$dir"/var/log/* "$dir/debootstrap"
  # Nothing of this host: the runtime provides resolv.conf and the hostname.
  : >"$dir/etc/resolv.conf"
  echo localhost >"$dir/etc/hostname"
  : >"$dir/etc/machine-id"
}

# --- the base root file system (cached) --------------------------------------------------------
step "the $SUITE base (debootstrap --variant=minbase, cached)"
KEY=$(printf '%s\n' "$SUITE" "$ARCH" "$MIRROR" "$SECURITY" "$(declare -f make_base)" | sha256sum | cut -c1-16)
BASE_TAR=$CACHE/base-$SUITE-$ARCH-$KEY.tar
find "$CACHE" -maxdepth 1 -name "base-*.tar*" -not -name "$(basename "$BASE_TAR")" -delete
find "$CACHE" -maxdepth 1 -name "rootfs.*" -type d -exec rm -rf {} + # a killed run's
find "$CACHE" -maxdepth 1 -name "$(basename "$BASE_TAR")" -mtime +30 -delete
t=$(now_ms)
if [ -s "$BASE_TAR" ]; then
  log "cached: $BASE_TAR"
else
  rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $SUITE from $MIRROR into $rootfs"
  make_base "$rootfs"
  tar --numeric-owner --xattrs --xattrs-include='*' --sort=name -C "$rootfs" -cf "$BASE_TAR.tmp" .
  mv -f "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$rootfs"
  trap - EXIT
  log "base made in $(took "$t"): $(du -h "$BASE_TAR" | cut -f1)"
fi

# --- a private buildah storage, made afresh ----------------------------------------------------
step "buildah storage $STORAGE (vfs), made afresh"
if grep -qF " $CACHE/" /proc/self/mountinfo; then
  die "something is still mounted under $CACHE (a killed run?): $(grep -F " $CACHE/" /proc/self/mountinfo | cut -d' ' -f5 | tr '\n' ' ')"
fi
[ -d "$RUNC_ROOT" ] && for id in $(runc --root "$RUNC_ROOT" list -q 2>/dev/null); do
  runc --root "$RUNC_ROOT" delete --force "$id" >/dev/null 2>&1 || true
done
rm -rf "$STORAGE" "$RUNROOT" "$RUNC_ROOT" "$CACHE/context" "$CACHE/run-in-image"
mkdir -p "$RUNC_ROOT"

step "import the base as $BASE_IMAGE"
t=$(now_ms)
ctr=$("${BUILDAH[@]}" from scratch)
mnt=$("${BUILDAH[@]}" mount "$ctr")
tar --numeric-owner --same-owner --xattrs --xattrs-include='*' -xpf "$BASE_TAR" -C "$mnt"
"${BUILDAH[@]}" umount "$ctr" >/dev/null
# The official image's config: PATH and `bash`.
"${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --cmd bash --os linux --arch "$ARCH" "$ctr"
"${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
log "imported in $(took "$t")"

# --- the image -----------------------------------------------------------------------------------
step "buildah bud -f deploy/Dockerfile --build-context build=<BINARY> (runtime stage for real)"
t=$(now_ms)
mkdir -p "$CACHE/context/out"
# The build stage's output: /out/credkeeper. A debug build's DWARF is 3/4 of its size and of
# no use in the image (every vfs layer is a full copy): the code itself is unchanged.
objcopy --strip-debug "$BINARY" "$CACHE/context/out/credkeeper"
chmod 0755 "$CACHE/context/out/credkeeper"
"${BUILDAH[@]}" bud --isolation chroot --pull=never --layers=false \
  --build-context build="$CACHE/context" \
  -f "$DOCKERFILE" -t "$IMAGE" "$ROOT" >"$CACHE/build.log" 2>&1 \
  || { tail -n 40 "$CACHE/build.log" >&2; die "buildah bud failed (log: $CACHE/build.log)"; }
grep '^\[' "$CACHE/build.log" | grep -F ' STEP ' >&2 || true
log "built in $(took "$t")"

step "the image's root file system for runc (buildah from + mount)"
RUN_CTR=$("${BUILDAH[@]}" from --pull=never --name credkeeper-contract "$IMAGE")
ROOTFS=$("${BUILDAH[@]}" mount "$RUN_CTR")
IMAGE_CONFIG=$CACHE/image-config.json
"${BUILDAH[@]}" inspect --type image "$IMAGE" \
  | "$TESTBED_PYTHON" -c 'import json, sys; json.dump(json.load(sys.stdin)["OCIv1"]["config"], sys.stdout)' \
  >"$IMAGE_CONFIG"
RUNC_SPEC=$CACHE/runc-spec.json
(cd "$RUNC_ROOT" && rm -f config.json && runc spec && mv config.json "$RUNC_SPEC")
# The runner: deploy-contract.sh's CONTRACT_RUN, and a way in for a look afterwards.
{
  echo '#!/bin/sh'
  echo '# run-in-image [-v DIR]... UID:GID [VAR=VALUE...] -- COMMAND [ARG...]: made by build-image.sh'
  printf 'CK_IMAGE_ROOTFS=%q CK_IMAGE_CONFIG=%q CK_RUNC_ROOT=%q CK_RUNC_SPEC=%q \\\n' \
    "$ROOTFS" "$IMAGE_CONFIG" "$RUNC_ROOT" "$RUNC_SPEC"
  printf '  exec %q --exec "$@"\n' "$SELF"
} >"$CACHE/run-in-image"
chmod 0755 "$CACHE/run-in-image"
RUN=$CACHE/run-in-image
log "image ready after $(took "$T0") in all; storage $(du -sh "$STORAGE" | cut -f1)"

# --- the built image: config and files -----------------------------------------------------------
step "image checks"
cfg() { json_get "$1" <"$IMAGE_CONFIG" 2>/dev/null || true; }
check_eq "image: USER 65532:65532" 65532:65532 "$(cfg User)"
check_eq "image: ENTRYPOINT [credkeeper, get]" '["credkeeper","get"]' "$(cfg Entrypoint)"
check_eq "image: WorkingDir /tokens" /tokens "$(cfg WorkingDir)"
for kv in KRB5_KTNAME=/keytab BEARER_TOKEN_FILE=/tokens/bt CREDKEEPER_MINSECS=3600 \
  CREDKEEPER_STATE_DIR=/tmp/credkeeper XDG_CACHE_HOME=/tmp/.cache; do
  check "image: ENV $kv" grep -qxF "$kv" <<<"$(cfg Env | "$TESTBED_PYTHON" -c 'import json, sys; print("\n".join(json.load(sys.stdin)))')"
done
check "image: /usr/local/bin/credkeeper is the given binary (its code: objcopy --strip-debug of BINARY)" \
  cmp -s "$CACHE/context/out/credkeeper" "$ROOTFS/usr/local/bin/credkeeper"
for name in igwn-robot-get htgettoken docker-credential-credkeeper; do
  check_eq "image: /usr/local/bin/$name -> credkeeper" credkeeper "$(readlink "$ROOTFS/usr/local/bin/$name")"
done
has() { compgen -G "$ROOTFS/$1" >/dev/null; }
check "image: libgssapi_krb5.so.2 installed (libgssapi-krb5-2)" has 'usr/lib/*/libgssapi_krb5.so.2'
check "image: the public CAs installed (ca-certificates)" test -s "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
check "image: /tokens is mode 1777" test "$(stat -c %a "$ROOTFS/tokens")" = 1777
check "image: no krb5.conf baked in" test ! -e "$ROOTFS/etc/krb5.conf"
check "image: no apt lists left" bash -c '! compgen -G "$1/var/lib/apt/lists/*_Packages*" >/dev/null' _ "$ROOTFS"
check_eq "image: Debian 12 (bookworm), the release the binary was built on" 12 "$(cut -d. -f1 "$ROOTFS/etc/debian_version")"

# --- the image under runc, as its own USER with its own ENV --------------------------------------
step "runc: the image's entrypoint as its USER"
IUSER=$(cfg User)
mapfile -t EP < <(cfg Entrypoint | "$TESTBED_PYTHON" -c 'import json, sys; print("\n".join(json.load(sys.stdin)))')
rc=0; out=$("$RUN" "$IUSER" -- sh -c 'id -u; id -g; echo "$HOME"; pwd; command -v credkeeper' 2>&1) || rc=$?
check_eq "runc: uid, gid, HOME, cwd, PATH of the image (65532, 65532, /, /tokens, /usr/local/bin/credkeeper)" \
  "65532 65532 / /tokens /usr/local/bin/credkeeper" "$(tr '\n' ' ' <<<"$out" | sed 's/ $//')"
rc=0; out=$("$RUN" "$IUSER" -- credkeeper --version 2>&1) || rc=$?
check "runc: credkeeper --version runs in the image (the binary's libraries are there): $out" test $rc -eq 0
# `docker run IMAGE --audience … --scopes …` with CREDKEEPER_SERVER and nothing mounted: the
# image's KRB5_KTNAME=/keytab is where it looks, and it says so.
rc=0; out=$("$RUN" "$IUSER" CREDKEEPER_SERVER=https://127.0.0.1:9 -- "${EP[@]}" \
  --audience https://storage.example --scopes read:/data 2>&1) || rc=$?
if [ $rc -eq 1 ] && [[ $out == *"/keytab"* ]] && [[ $out == *KRB5_KTNAME* ]]; then
  pass "runc: the entrypoint with nothing mounted: exit 1, names the image's /keytab and KRB5_KTNAME"
else
  fail "runc: the entrypoint with nothing mounted: exit 1, names the image's /keytab and KRB5_KTNAME" "rc $rc: $out"
fi
rc=0; out=$("$RUN" "$IUSER" -- docker-credential-credkeeper version 2>&1) || rc=$?
check "runc: docker-credential-credkeeper (the symlink on PATH) answers \`version\`: $out" test $rc -eq 0
rc=0; out=$("$RUN" "$IUSER" -- sh -c 'touch /usr/local/bin/x' 2>&1) || rc=$?
check "runc: the root file system is read-only" test $rc -ne 0

# --- deploy-contract.sh in the image -------------------------------------------------------------
step "deploy-contract.sh with CONTRACT_RUN (the robot's commands in the image)"
contract_rc=0
CONTRACT_RUN=$RUN "$TESTBED_DIR/deploy-contract.sh" "$BINARY" | tee "$CACHE/contract.log" || contract_rc=$?
# Its counts go into the closing line; a contract that ended early counts as a failure.
last=$(tail -n 1 "$CACHE/contract.log")
if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
  TB_PASSED=$((TB_PASSED + BASH_REMATCH[1]))
  TB_FAILED=$((TB_FAILED + BASH_REMATCH[2]))
  [ "$contract_rc" -eq 0 ] || [ "${BASH_REMATCH[2]}" -gt 0 ] || fail "deploy-contract.sh exited $contract_rc"
else
  fail "deploy-contract.sh in the image ended without its closing line (exit $contract_rc)"
fi

log "done in $(took "$T0"); disk: base $(du -sh "$BASE_TAR" | cut -f1), storage $(du -sh "$STORAGE" | cut -f1) (the image stays there, and $RUN runs commands in it, until the next run)"
summary
