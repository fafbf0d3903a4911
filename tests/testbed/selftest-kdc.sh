#!/usr/bin/env bash
# selftest-kdc.sh - prove the test KDC works: set up the venv (setup-python.sh), start the KDC in
# a fresh state dir, get tickets with every robot keytab, get service tickets for the HTTP/ and
# host/ principals, check that a wrong keytab and "no credentials" fail, run a python-gssapi
# context (robot keytab -> host@localhost, accepted with host.keytab), check the htgettoken and
# igwn-robot-get clients, restart in the same STATE (fresh realm), stop it.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

T0=$(now_ms)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/selftest-kdc.XXXXXX")
cleanup() {
  "$TESTBED_DIR/stop-kdc.sh" "$STATE" 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT

PATH=$PATH:/usr/sbin:/sbin
load_env() {
  set -a
  # shellcheck disable=SC1090
  . "$1"
  set +a
}

# ---------------------------------------------------------------------------------------------
echo "== python venv (htgettoken, igwn-robot-auth, gssapi)"
if PY=$("$TESTBED_DIR/setup-python.sh"); then pass "setup-python.sh"; else
  fail "setup-python.sh"
  summary
  exit 1
fi
VENV_BIN=$(dirname "$PY")

echo "== start"
t0=$(now_ms)
if ENV_FILE=$("$TESTBED_DIR/start-kdc.sh" "$STATE"); then
  pass "start-kdc.sh (ready = keytab AS exchange + kadmin query) in $(( $(now_ms) - t0 )) ms"
else
  fail "start-kdc.sh"
  summary
  exit 1
fi
check_eq "start-kdc.sh prints the env file" "$STATE/kdc.env" "$ENV_FILE"
load_env "$ENV_FILE"
missing_keys=
for k in KRB5_CONFIG KRB5_KDC_PROFILE KRB5RCACHEDIR KRB5_REALM KDC_PORT KDC_DIR KDC_PID KADMIND_PID \
  KRB5_ROBOT_PRINCIPAL KRB5_ROBOT_KEYTAB KRB5_ROBOT2_PRINCIPAL KRB5_ROBOT2_KEYTAB \
  KRB5_STRANGER_PRINCIPAL KRB5_STRANGER_KEYTAB KRB5_SERVICE_KEYTAB KRB5_HTTP_KEYTAB \
  KRB5_HOST_KEYTAB KRB5_USER_PRINCIPAL KRB5_USER_PASSWORD KRB5_ADMIN_PRINCIPAL KRB5_ADMIN_PASSWORD; do
  [ -n "${!k:-}" ] || missing_keys+=" $k"
done
check_eq "kdc.env has every key" "" "$missing_keys"
# every line KEY=value, values without whitespace, quotes, $, \ or backticks
unsafe=$(grep -vE '^[A-Za-z_][A-Za-z0-9_]*=[^][:space:]"'"'"'$\\`]*$' "$ENV_FILE" || true)
check_eq "kdc.env is dotenv-safe (KEY=value, nothing to quote)" "" "$unsafe"
export KRB5CCNAME=FILE:$STATE/cc
check "KRB5_CONFIG, KRB5_KDC_PROFILE, KRB5RCACHEDIR inside STATE/kdc" \
  bash -c 'for v in "$@"; do [[ $v == "$0"/* ]] || exit 1; done' "$KDC_DIR" \
  "$KRB5_CONFIG" "$KRB5_KDC_PROFILE" "$KRB5RCACHEDIR"
check "krb5.conf has no default_client_keytab_name" bash -c '! grep -q "^[[:space:]]*default_client_keytab_name" "$1"' _ "$KRB5_CONFIG"
listeners=$(ss -Hltnup 2>/dev/null | grep -E "pid=($KDC_PID|$KADMIND_PID)," | awk '{print $5}' | sort -u | tr '\n' ' ')
check "krb5kdc and kadmind listen on 127.0.0.1 only ($listeners)" \
  bash -c '[ -n "$1" ] && ! tr " " "\n" <<<"$1" | grep -v "^$" | grep -qv "^127\.0\.0\.1:"' _ "$listeners"
check "KDC port is KDC_PORT (TCP)" bash -c "ss -Hltnp 'sport = :$KDC_PORT' | grep -q 'pid=$KDC_PID,'"
modes=$(stat -c '%a' "$KRB5_ROBOT_KEYTAB" "$KRB5_ROBOT2_KEYTAB" "$KRB5_STRANGER_KEYTAB" "$KRB5_SERVICE_KEYTAB" \
  "$KRB5_HTTP_KEYTAB" "$KRB5_HOST_KEYTAB" | sort -u | tr '\n' ' ')
check_eq "keytabs are 0600" "600 " "$modes"
kt_princs() { klist -k "$1" 2>/dev/null | awk 'NR > 3 {print $2}' | sort -u | tr '\n' ' '; }
R=$KRB5_REALM
check_eq "service.keytab holds HTTP/* and host/*" \
  "HTTP/127.0.0.1@$R HTTP/localhost@$R host/127.0.0.1@$R host/localhost@$R " "$(kt_princs "$KRB5_SERVICE_KEYTAB")"
check_eq "http.keytab holds HTTP/localhost, HTTP/127.0.0.1" "HTTP/127.0.0.1@$R HTTP/localhost@$R " "$(kt_princs "$KRB5_HTTP_KEYTAB")"
check_eq "host.keytab holds host/localhost, host/127.0.0.1" "host/127.0.0.1@$R host/localhost@$R " "$(kt_princs "$KRB5_HOST_KEYTAB")"

echo "== kinit / kvno"
default_principal() { klist 2>/dev/null | sed -n 's/^Default principal: //p'; }
for who in ROBOT ROBOT2 STRANGER; do
  p_var=KRB5_${who}_PRINCIPAL kt_var=KRB5_${who}_KEYTAB
  kdestroy -q 2>/dev/null || true
  if kinit -kt "${!kt_var}" "${!p_var}" 2>"$STATE/err"; then
    check_eq "kinit -kt ${!kt_var##*/} ${!p_var}" "${!p_var}" "$(default_principal)"
  else
    fail "kinit -kt ${!kt_var##*/} ${!p_var}" "$(cat "$STATE/err")"
  fi
done
kdestroy -q 2>/dev/null || true
kinit -kt "$KRB5_ROBOT_KEYTAB" "$KRB5_ROBOT_PRINCIPAL" 2>/dev/null || true
for svc in HTTP/localhost HTTP/127.0.0.1 host/localhost host/127.0.0.1; do
  if out=$(kvno "$svc" 2>&1); then pass "kvno $svc: $out"; else fail "kvno $svc" "$out"; fi
done
if out=$(kvno HTTP/nowhere.example 2>&1); then fail "kvno of an unknown service fails" "$out"; else
  pass "kvno of an unknown service fails: $out"
fi
if out=$(kinit -kt "$KRB5_ROBOT2_KEYTAB" "$KRB5_ROBOT_PRINCIPAL" 2>&1); then
  fail "kinit with a wrong keytab (robot2.keytab for robot/ci.example) fails"
else
  pass "kinit with a wrong keytab fails: $out"
fi
kdestroy -q 2>/dev/null || true
if printf '%s\n' "$KRB5_USER_PASSWORD" | kinit "$KRB5_USER_PRINCIPAL" >/dev/null 2>"$STATE/err"; then
  check_eq "kinit alice with her password" "$KRB5_USER_PRINCIPAL" "$(default_principal)"
else
  fail "kinit alice with her password" "$(cat "$STATE/err")"
fi
kdestroy -q 2>/dev/null || true
if out=$(kadmin -p "$KRB5_ADMIN_PRINCIPAL" -w "$KRB5_ADMIN_PASSWORD" -q listprincs 2>&1); then
  check "kadmin (remote, via kadmind) listprincs as admin/admin" grep -qx "$KRB5_STRANGER_PRINCIPAL" <<<"$out"
else
  fail "kadmin listprincs" "$out"
fi

echo "== python-gssapi from the venv"
# Initiator: robot keytab -> MEMORY ccache (nothing on disk); acceptor: host.keytab.
GSS_OUT=$(KRB5_CLIENT_KTNAME=FILE:/nonexistent "$PY" - "$KRB5_ROBOT_KEYTAB" "$KRB5_HOST_KEYTAB" 2>&1 <<'PY'
import sys
import gssapi
robot_kt, host_kt = sys.argv[1:3]
target = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)
icred = gssapi.Credentials(store={"client_keytab": robot_kt, "ccache": "MEMORY:x"}, usage="initiate")
acred = gssapi.Credentials(store={"keytab": host_kt}, usage="accept")
ictx = gssapi.SecurityContext(name=target, creds=icred, usage="initiate",
                              flags=gssapi.RequirementFlag.mutual_authentication)
actx = gssapi.SecurityContext(creds=acred, usage="accept")
tok = ictx.step()
while True:
    reply = actx.step(tok)
    if reply:
        tok = ictx.step(reply)
    if actx.complete and ictx.complete:
        break
print("initiator", actx.initiator_name)
print("target", actx.target_name)
PY
) || true
check_eq "gssapi: robot keytab -> host@localhost, accepted with host.keytab: initiator $KRB5_ROBOT_PRINCIPAL" \
  "initiator $KRB5_ROBOT_PRINCIPAL" \
  "$(grep '^initiator ' <<<"$GSS_OUT" || echo "$GSS_OUT" | tail -n 1)"
check_eq "gssapi: acceptor's target" "target host/localhost@$KRB5_REALM" "$(grep '^target ' <<<"$GSS_OUT" || true)"
# No ccache, no default client keytab: initiating must fail (tests rely on reaching this state).
NOCRED=$(KRB5CCNAME=FILE:$STATE/empty-cc "$PY" -c 'import gssapi
try:
    gssapi.Credentials(usage="initiate").name
    print("got credentials")
except gssapi.exceptions.GSSError as e:
    print("no credentials")' 2>&1 || true)
check_eq "gssapi: empty ccache and no client keytab -> no credentials" "no credentials" "$NOCRED"

echo "== htgettoken / igwn-robot-get"
check_eq "htgettoken --version" 2.2 "$("$VENV_BIN/htgettoken" --version 2>&1 || true)"
check "igwn-robot-get --help lists --keytab" bash -c '"$1" --help 2>&1 | grep -q -- "--keytab"' _ "$VENV_BIN/igwn-robot-get"

echo "== restart in the same STATE: a fresh realm"
cp "$KRB5_ROBOT_KEYTAB" "$STATE/old-robot.keytab"
OLD_KDC_PID=$KDC_PID OLD_KADMIND_PID=$KADMIND_PID OLD_PORT=$KDC_PORT
t0=$(now_ms)
if "$TESTBED_DIR/start-kdc.sh" "$STATE" >/dev/null; then
  pass "start-kdc.sh again in $(( $(now_ms) - t0 )) ms"
else
  fail "start-kdc.sh again"
fi
load_env "$ENV_FILE"
if pid_alive "$OLD_KDC_PID" || pid_alive "$OLD_KADMIND_PID"; then fail "old daemons stopped"; else pass "old daemons stopped"; fi
if [ "$KDC_PID" != "$OLD_KDC_PID" ] && pid_alive "$KDC_PID" && pid_alive "$KADMIND_PID"; then
  pass "new daemons running (KDC port $OLD_PORT -> $KDC_PORT)"
else
  fail "new daemons running"
fi
kdestroy -q 2>/dev/null || true
if kinit -kt "$STATE/old-robot.keytab" "$KRB5_ROBOT_PRINCIPAL" 2>/dev/null; then
  fail "the keytab of the previous realm no longer works"
else
  pass "the keytab of the previous realm no longer works"
fi
check "the new robot keytab works" kinit -kt "$KRB5_ROBOT_KEYTAB" "$KRB5_ROBOT_PRINCIPAL"
kdestroy -q 2>/dev/null || true

echo "== stop"
NEW_KDC_PID=$KDC_PID NEW_KADMIND_PID=$KADMIND_PID
"$TESTBED_DIR/stop-kdc.sh" "$STATE" || true
if pid_alive "$NEW_KDC_PID" || pid_alive "$NEW_KADMIND_PID"; then fail "stop-kdc.sh: daemons gone"; else
  pass "stop-kdc.sh: daemons gone"
fi
check "stop-kdc.sh: port $KDC_PORT closed" bash -c "! ss -Hltn 'sport = :$KDC_PORT' | grep -q ."

echo "== $(( $(now_ms) - T0 )) ms"
summary
