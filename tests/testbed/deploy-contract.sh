#!/usr/bin/env bash
# deploy-contract.sh BINARY - what deploy/Dockerfile promises, checked with the binary itself
# and no container engine (or, with CONTRACT_RUN, inside the image built from it).
#
# The image runs `credkeeper get` as whatever uid:gid `--user` / runAsUser gives, with no
# passwd entry and no HOME, the keytab mounted read-only (0440 root:<gid> with
# Kubernetes' fsGroup), a token volume it does not own but may write, and
# CREDKEEPER_STATE_DIR under /tmp. Here, as root: the same with `setpriv` to uid/gid
# 12345, `env -i` (no HOME), a read-only keytab directory and a root-owned 0770 token
# directory of group 12345.
#
# A valid token comes from a real broker: `BINARY serve --dev --listen 127.0.0.1:0`, whose
# first stdout line is the exact `credkeeper get` command for its dev robot; that command
# runs as uid 12345 into the token directory. Then the broker is stopped and the rest
# needs no network: CREDKEEPER_SERVER points at 127.0.0.1:9 (nothing listens) and the
# keytab's realm at a KDC on 127.0.0.1:9.
#
# CONTRACT_RUN=PROGRAM (tests/testbed/build-image.sh sets it): every command of the robot
# (the uid 12345 side) runs in the image instead, as
#   PROGRAM -v DIR UID:GID [VAR=VALUE...] -- COMMAND [ARG...]
# which must run COMMAND in a container of the image as UID:GID (no supplementary groups),
# with the image's ENV plus the VARs (`docker run -e`), this script's work directory DIR
# mounted at the same path, the host's network (the broker is on 127.0.0.1), and exit with
# COMMAND's status. COMMAND is then /usr/local/bin/credkeeper, the image's binary; BINARY is
# only the broker's (a test peer on the host).
#
# Prints `ok NAME` / `FAIL NAME: why`, ends with "N passed, M failed"; exit 1 on failure.
# Everything it starts is stopped and everything it makes is removed on exit.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 BINARY"
BIN=$(readlink -f "$1")
[ -x "$BIN" ] || die "$1 is not an executable"
[ "$(id -u)" -eq 0 ] || die "must run as root (setpriv switches to uid 12345)"
command -v setpriv >/dev/null || apt_install util-linux
BROKER_BIN=$BIN # the test broker's binary, always the host's
if [ -n "${CONTRACT_RUN:-}" ]; then
  [ -x "$CONTRACT_RUN" ] || die "CONTRACT_RUN=$CONTRACT_RUN is not an executable"
  BIN=/usr/local/bin/credkeeper # the robot's: the image's
  log "the robot's commands run in the image through $CONTRACT_RUN"
fi

U=12345 # the container's --user uid and gid; not in /etc/passwd
WORK=$(mktemp -d /tmp/credkeeper-contract.XXXXXX)
BROKER_PID=
cleanup() {
  [ -n "$BROKER_PID" ] && stop_pid "$BROKER_PID" "serve --dev"
  chmod -R u+w "$WORK" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 0755 "$WORK"

# The binary must be executable by uid 12345 (a copy when its directory is private).
if [ -z "${CONTRACT_RUN:-}" ] && ! setpriv --reuid=$U --regid=$U --clear-groups test -x "$BIN"; then
  install -m 0755 "$BIN" "$WORK/credkeeper"
  BIN=$WORK/credkeeper
fi

# --- the container's file system ------------------------------------------------------------
# /keytab: a real keytab (MIT format 0x0502, one aes256 key for the robot principal),
# 0440 root:12345 in a read-only directory, like a Secret volume with fsGroup.
mkdir -p "$WORK/keytab" "$WORK/keytab-open" "$WORK/keytab-root"
"$TESTBED_PYTHON" - "$WORK/keytab/robot.keytab" <<'PY'
import os, struct, sys, time
def s(b): return struct.pack(">H", len(b)) + b
entry = (struct.pack(">H", 2) + s(b"EXAMPLE.ORG") + s(b"robot") + s(b"ci.example")
         + struct.pack(">IIB", 1, int(time.time()), 1)           # KRB5_NT_PRINCIPAL, time, kvno
         + struct.pack(">H", 18) + s(os.urandom(32)))             # aes256-cts-hmac-sha1-96
open(sys.argv[1], "wb").write(b"\x05\x02" + struct.pack(">i", len(entry)) + entry)
PY
cp "$WORK/keytab/robot.keytab" "$WORK/keytab-open/robot.keytab"
cp "$WORK/keytab/robot.keytab" "$WORK/keytab-root/robot.keytab"
chown root:$U "$WORK/keytab/robot.keytab" && chmod 0440 "$WORK/keytab/robot.keytab"
chmod 0644 "$WORK/keytab-open/robot.keytab"                               # others may read
chown root:root "$WORK/keytab-root/robot.keytab" && chmod 0400 "$WORK/keytab-root/robot.keytab" # no fsGroup
chmod 0555 "$WORK/keytab" "$WORK/keytab-open" "$WORK/keytab-root"
KEYTAB=$WORK/keytab/robot.keytab

# /tokens: a volume the uid does not own but may write (group 12345, 0770).
mkdir -p "$WORK/tokens" && chown root:$U "$WORK/tokens" && chmod 0770 "$WORK/tokens"
TOKEN=$WORK/tokens/bt
# /tmp of the container, for CREDKEEPER_STATE_DIR=/tmp/credkeeper (created on demand).
mkdir -p "$WORK/tmp" && chmod 1777 "$WORK/tmp"
# /etc/krb5.conf, mounted by the site: the realm's KDC is a port where nothing listens.
cat >"$WORK/krb5.conf" <<'EOF'
[libdefaults]
  default_realm = EXAMPLE.ORG
  dns_lookup_kdc = false
  dns_lookup_realm = false
[realms]
  EXAMPLE.ORG = {
    kdc = 127.0.0.1:9
  }
EOF
# The dev robot's secret, handed to the uid as a 0600 file of its own.
mkdir -p "$WORK/robot" && chown $U:$U "$WORK/robot" && chmod 0700 "$WORK/robot"

# as_uid VAR=VALUE... -- CMD...: run CMD as uid/gid 12345 with only these variables (no
# HOME, no USER); with CONTRACT_RUN in the image, with its ENV plus these (and runc's HOME=/).
as_uid() {
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  if [ -n "${CONTRACT_RUN:-}" ]; then
    timeout 60 "$CONTRACT_RUN" -v "$WORK" "$U:$U" "${envs[@]}" -- "$@"
  else
    env -i "${envs[@]}" timeout 60 setpriv --reuid=$U --regid=$U --clear-groups "$@"
  fi
}
# as_robot VAR=VALUE... -- CMD...: run CMD as uid/gid 12345 with only the image's
# environment (no HOME, no USER), plus the given variables.
as_robot() {
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  as_uid PATH=/usr/local/bin:/usr/bin:/bin \
    KRB5_CONFIG="$WORK/krb5.conf" KRB5_KTNAME="$KEYTAB" BEARER_TOKEN_FILE="$TOKEN" \
    CREDKEEPER_MINSECS=3600 CREDKEEPER_STATE_DIR="$WORK/tmp/credkeeper" \
    "${envs[@]}" -- "$@"
}
# The robot path of the image: the broker is gone (port 9 refuses), the audience and
# scopes are the ones the token was fetched with.
ROBOT_ENV=(CREDKEEPER_SERVER=https://127.0.0.1:9 CREDKEEPER_SCOPES=read:/data
  CREDKEEPER_AUDIENCE=https://storage.example)

file_id() { stat -c '%i %y %s' "$1" 2>/dev/null; } # inode, mtime, size

# --- a valid token from `serve --dev` -------------------------------------------------------
"$BROKER_BIN" serve --dev --listen 127.0.0.1:0 --state-dir "$WORK/broker" \
  >"$WORK/broker.out" 2>"$WORK/broker.err" &
BROKER_PID=$!
GET_LINE='' URL=''
for _ in $(seq 1 300); do
  GET_LINE=$(head -n 1 "$WORK/broker.out" 2>/dev/null)
  URL=$(sed -n '1s/^credkeeper broker listening on \([^ ]*\).*/\1/p' "$WORK/broker.err" 2>/dev/null)
  [ -n "$GET_LINE" ] && [ -n "$URL" ] && break
  pid_alive "$BROKER_PID" || break
  sleep 0.1
done
if [ -n "$URL" ] && [[ $GET_LINE == *" get --server $URL "*"--robot dev --secret-file "* ]]; then
  pass "serve --dev: first stderr line names the URL, first stdout line is the get command ($URL)"
else
  fail "serve --dev: first stderr line names the URL, first stdout line is the get command" \
    "stdout '$GET_LINE', stderr '$(head -n 3 "$WORK/broker.err" | tr '\n' ' ')'"
fi

# The printed command, with the secret file handed to the robot's uid and the token going
# to the token volume; and the image's audience and scopes.
read -ra GET_CMD <<<"$GET_LINE"
for i in "${!GET_CMD[@]}"; do
  case ${GET_CMD[$i]} in
    --secret-file)
      install -o $U -g $U -m 0600 "${GET_CMD[$((i + 1))]}" "$WORK/robot/secret" 2>/dev/null
      GET_CMD[i + 1]=$WORK/robot/secret ;;
    -o | --outfile) GET_CMD[i + 1]=$TOKEN ;;
  esac
done
GET_CMD[0]=$BIN
GET_CMD+=(--scopes read:/data --audience https://storage.example)

# An unwritable token directory (root's, 0755) fails and says where.
mkdir -p "$WORK/tokens-ro" && chmod 0755 "$WORK/tokens-ro"
ro_cmd=("${GET_CMD[@]}")
for i in "${!ro_cmd[@]}"; do [ "${ro_cmd[$i]}" = "$TOKEN" ] && ro_cmd[i]=$WORK/tokens-ro/bt; done
out=$(as_robot -- "${ro_cmd[@]}" 2>&1); rc=$?
if [ $rc -eq 1 ] && [[ $out == *"$WORK/tokens-ro/bt"* ]] && [ -z "$(ls -A "$WORK/tokens-ro")" ]; then
  pass "a token directory the uid cannot write: exit 1, the message names the file"
else
  fail "a token directory the uid cannot write: exit 1, the message names the file" "rc $rc: $out"
fi

out=$(as_robot -- "${GET_CMD[@]}" 2>&1); rc=$?
check_eq "the printed get, as uid $U with no HOME, into a 0770 root:$U directory: exit 0" 0 "$rc"
[ $rc -eq 0 ] || log "get said: $out"
check_eq "the token file is mode 0600" 600 "$(stat -c %a "$TOKEN" 2>/dev/null)"
check_eq "the token file is owned by $U:$U" "$U:$U" "$(stat -c %u:%g "$TOKEN" 2>/dev/null)"
check_eq "nothing but the token file is left in the token directory" bt "$(ls -A "$WORK/tokens")"
inspect_ok() { as_robot -- "$BIN" token inspect -m 600 "$TOKEN" >/dev/null 2>&1; }
check "the token is a JWT with at least 600 s left (token inspect -m 600, as the uid)" inspect_ok
claims=$(jwt_payload "$(cat "$TOKEN" 2>/dev/null)" 2>/dev/null)
aud=$(json_get aud <<<"$claims")
check "the token carries the asked audience (https://storage.example)" \
  grep -q 'https://storage.example' <<<"$aud"
check "the token carries the asked scope (read:/data)" \
  grep -qw 'read:/data' <<<"$(json_get scope <<<"$claims")"
check "the state directory was not needed for a broker get (nothing under /tmp)" \
  test -z "$(ls -A "$WORK/tmp")"

# The broker is not needed from here on.
stop_pid "$BROKER_PID" "serve --dev"
BROKER_PID=
before=$(file_id "$TOKEN")

# --- reuse: no network, the file untouched ----------------------------------------------------
t0=$(now_ms)
out=$(as_robot "${ROBOT_ENV[@]}" CREDKEEPER_MINSECS=600 -- "$BIN" get 2>&1); rc=$?
t1=$(now_ms)
check_eq "reuse: --minsecs 600 < the token's life, broker gone, read-only 0440 keytab: exit 0" 0 "$rc"
[ $rc -eq 0 ] || log "get said: $out"
check_eq "reuse: the token file is untouched (inode, mtime, size)" "$before" "$(file_id "$TOKEN")"
check "reuse: done at once ($((t1 - t0)) ms < 2000 ms: no connection attempted)" test $((t1 - t0)) -lt 2000
out=$(as_robot "${ROBOT_ENV[@]}" CREDKEEPER_MINSECS=600 -- "$BIN" -v get 2>&1); rc=$?
check "reuse: -v says the token was reused" grep -qi 'reus' <<<"$out"
# The same through argv flags (the image's `docker run IMAGE --minsecs …` form).
out=$(as_robot CREDKEEPER_SERVER=https://127.0.0.1:9 -- "$BIN" get --minsecs 600 \
  --audience https://storage.example --scopes read:/data -o "$TOKEN" 2>&1); rc=$?
check_eq "reuse with flags (--minsecs/--audience/--scopes/-o): exit 0" 0 "$rc"
check_eq "reuse with flags: the token file is untouched" "$before" "$(file_id "$TOKEN")"
# Why the image sets CREDKEEPER_STATE_DIR: with neither it nor HOME, this build of
# credkeeper stops before looking at the token file (it wants a state directory even
# when it would not use one). Either that, naming the variable, or a plain reuse.
# In the image (CONTRACT_RUN) none is given either, so the image's own one must do: reuse.
out=$(as_uid PATH=/usr/bin:/bin KRB5_KTNAME="$KEYTAB" BEARER_TOKEN_FILE="$TOKEN" CREDKEEPER_MINSECS=600 \
  -- "$BIN" get --server https://127.0.0.1:9 \
  --audience https://storage.example --scopes read:/data 2>&1); rc=$?
if [ -n "${CONTRACT_RUN:-}" ]; then
  if [ $rc -eq 0 ] && [ "$before" = "$(file_id "$TOKEN")" ]; then
    pass "no CREDKEEPER_STATE_DIR given, HOME=/ (not writable): the image's CREDKEEPER_STATE_DIR does, reused; file untouched"
  else
    fail "no CREDKEEPER_STATE_DIR given, HOME=/ (not writable): the image's CREDKEEPER_STATE_DIR does, reused" "rc $rc: $out"
  fi
elif { [ $rc -eq 0 ] || [[ $out == *CREDKEEPER_STATE_DIR* ]]; } && [ "$before" = "$(file_id "$TOKEN")" ]; then
  pass "no CREDKEEPER_STATE_DIR and no HOME: $([ $rc -eq 0 ] && echo "reused" || echo "stops, naming CREDKEEPER_STATE_DIR (the image sets it)"); file untouched"
else
  fail "no CREDKEEPER_STATE_DIR and no HOME: reuse, or an error naming CREDKEEPER_STATE_DIR" "rc $rc: $out"
fi

# --- not reusable: renewal is attempted, fails offline, the old file stays ------------------
out=$(as_robot "${ROBOT_ENV[@]}" CREDKEEPER_MINSECS=86400 -- "$BIN" get 2>&1); rc=$?
if [ $rc -eq 1 ] && [ "$before" = "$(file_id "$TOKEN")" ]; then
  pass "--minsecs longer than the token's life: renewal tried (exit 1 offline), the old file stays"
else
  fail "--minsecs longer than the token's life: renewal tried (exit 1 offline), the old file stays" "rc $rc: $out"
fi
# With the 0440 root:12345 keytab the attempt gets as far as the KDC: the keytab was
# accepted and read through the group (no permission complaint).
if [[ $out == *KDC* ]] && [[ $out != *chmod* ]] && [[ $out != *"cannot be read"* ]]; then
  pass "a 0440 root:$U keytab in a read-only directory is accepted (the error is the offline KDC)"
else
  fail "a 0440 root:$U keytab in a read-only directory is accepted (the error is the offline KDC)" "$out"
fi
out=$(as_robot "${ROBOT_ENV[@]}" CREDKEEPER_MINSECS=600 CREDKEEPER_AUDIENCE=https://other.example -- "$BIN" get 2>&1); rc=$?
if [ $rc -eq 1 ] && [ "$before" = "$(file_id "$TOKEN")" ]; then
  pass "another audience: not reused (exit 1 offline), the old file stays"
else
  fail "another audience: not reused (exit 1 offline), the old file stays" "rc $rc: $out"
fi

# --- keytab problems, said so before anything goes out -----------------------------------------
rm -f "$TOKEN" # nothing to reuse: get goes for the keytab
out=$(as_robot "${ROBOT_ENV[@]}" KRB5_KTNAME="$WORK/keytab-open/robot.keytab" -- "$BIN" get 2>&1); rc=$?
if [ $rc -eq 1 ] && [[ $out == *"chmod 600"* ]]; then
  pass "a 0644 keytab is refused with \`chmod 600\` in the message"
else
  fail "a 0644 keytab is refused with \`chmod 600\` in the message" "rc $rc: $out"
fi
out=$(as_robot "${ROBOT_ENV[@]}" KRB5_KTNAME="$WORK/keytab/missing.keytab" -- "$BIN" get 2>&1); rc=$?
if [ $rc -eq 1 ] && [[ $out == *KRB5_KTNAME* ]] && [[ $out == *missing.keytab* ]]; then
  pass "a missing keytab: the message names the path and KRB5_KTNAME"
else
  fail "a missing keytab: the message names the path and KRB5_KTNAME" "rc $rc: $out"
fi
out=$(as_robot "${ROBOT_ENV[@]}" KRB5_KTNAME="$WORK/keytab-root/robot.keytab" -- "$BIN" get 2>&1); rc=$?
if [ $rc -eq 1 ] && [[ $out == *"cannot be read"* ]]; then
  pass "a 0400 root keytab (no fsGroup): the message says it cannot be read"
else
  fail "a 0400 root keytab (no fsGroup): the message says it cannot be read" "rc $rc: $out"
fi
check "no failed run left anything in the token directory" test -z "$(ls -A "$WORK/tokens")"

summary
