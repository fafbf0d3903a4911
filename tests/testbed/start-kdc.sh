#!/usr/bin/env bash
# start-kdc.sh STATE [PORT] - start an MIT Kerberos KDC (krb5kdc, plus kadmind/kpasswd unless
# KDC_WITH_KADMIND=0) on 127.0.0.1 and write STATE/kdc.env once a real keytab AS exchange works.
#
# STATE   state directory (created); the KDC lives in STATE/kdc/ (krb5.conf, kdc.conf, kadm5.acl,
#         database, stash, keytabs, logs, ccaches, replay caches). A STATE/kdc/ left by an earlier
#         run is wiped (its recorded daemons are stopped first): every start is a fresh realm with
#         fresh keys.
# PORT    optional KDC port (TCP and UDP); otherwise a free loopback port. kadmind and kpasswd
#         always get free ports of their own.
#
# Inputs (environment, all optional): KRB5_REALM (TEST.REALM), KDC_WITH_KADMIND (1).
# Outputs (STATE/kdc.env, also printed on stdout) are never read back as inputs. Nothing
# system-wide is used: /etc/krb5.conf, /etc/krb5kdc/, /tmp/krb5cc_UID and /var/tmp replay
# caches are all replaced by files under STATE/kdc via KRB5_CONFIG, KRB5_KDC_PROFILE,
# KRB5CCNAME and KRB5RCACHEDIR.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: $0 STATE [PORT]"; fi
mkdir -p "$1"
STATE=$(cd "$1" && pwd)
REQ_PORT=${2:-}
[ -z "$REQ_PORT" ] || [[ $REQ_PORT =~ ^[0-9]+$ ]] || die "PORT must be a number"
REALM=${KRB5_REALM:-TEST.REALM}
[[ $REALM =~ ^[A-Z0-9.-]+$ ]] || die "KRB5_REALM must be upper-case letters, digits, dots, dashes"
WITH_KADMIND=${KDC_WITH_KADMIND:-1}

KDC_DIR=$STATE/kdc
ENV_FILE=$STATE/kdc.env
LOG=$KDC_DIR/krb5kdc.log
KADMIND_LOG=$KDC_DIR/kadmind.log

# --- install ---------------------------------------------------------------------------------
t0=$(now_ms)
# krb5-kdc: krb5kdc, kdb5_util; krb5-admin-server: kadmind, kadmin.local; krb5-user: kinit,
# kvno, klist, kadmin. Their postinst scripts may try to start the system services; those are
# never used here (and not configured: nothing under /etc is read).
for cmd in krb5kdc kdb5_util kadmind kadmin.local kinit kvno klist kadmin; do
  if ! PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null; then
    apt_install krb5-kdc krb5-admin-server krb5-user
    break
  fi
done
PATH=$PATH:/usr/sbin:/sbin
INSTALL_MS=$(( $(now_ms) - t0 ))

# --- stop and wipe what an earlier run left in STATE/kdc --------------------------------------
t0=$(now_ms)
if [ -f "$ENV_FILE" ]; then
  for daemon in KDC_PID:krb5kdc KADMIND_PID:kadmind; do
    pid=$(env_read "$ENV_FILE" "${daemon%%:*}" || true)
    if [ -n "$pid" ]; then stop_pid "$pid" "-P $KDC_DIR/${daemon#*:}.pid" || true; fi
  done
fi
rm -f "$ENV_FILE"
rm -rf "$KDC_DIR"
mkdir -p "$KDC_DIR/rcache"
chmod 0700 "$KDC_DIR"

# Everything below (kdb5_util, kadmin.local, krb5kdc, kadmind, kinit) reads only these files.
export KRB5_CONFIG=$KDC_DIR/krb5.conf
export KRB5_KDC_PROFILE=$KDC_DIR/kdc.conf
export KRB5CCNAME=FILE:$KDC_DIR/ready.ccache
export KRB5RCACHEDIR=$KDC_DIR/rcache
unset KRB5_KTNAME KRB5_CLIENT_KTNAME KRB5_TRACE

random_hex() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
MASTER_PASSWORD=$(random_hex)
ADMIN_PASSWORD=$(random_hex)
USER_PASSWORD=alice-pw

ROBOT=robot/ci.example@$REALM
ROBOT2=robot2/ci.example@$REALM
STRANGER=stranger/ci.example@$REALM
USER_PRINC=alice@$REALM
ADMIN=admin/admin@$REALM
HTTP_PRINCS=("HTTP/localhost@$REALM" "HTTP/127.0.0.1@$REALM")
HOST_PRINCS=("host/localhost@$REALM" "host/127.0.0.1@$REALM")

# write_configs KDC_PORT KADMIN_PORT KPASSWD_PORT
write_configs() {
  local kport=$1 aport=$2 pport=$3
  cat >"$KRB5_CONFIG" <<EOF
# Client configuration for the test realm $REALM (written by start-kdc.sh; loopback only).
[libdefaults]
    default_realm = $REALM
    # no DNS at all: the KDC is found from [realms], host names are used exactly as given
    # (no forward/reverse canonicalisation, so HTTP/127.0.0.1 stays HTTP/127.0.0.1 instead of
    # becoming HTTP/<machine name> through /etc/hosts)
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    qualify_shortname = ""
    # always TCP (the KDC serves both)
    udp_preference_limit = 1
    # an acceptor takes any matching key of its keytab, whatever host name the client used
    ignore_acceptor_hostname = true
    forwardable = true
    ticket_lifetime = 10h
    # ccache and acceptor keytab defaults inside the state dir, never /tmp/krb5cc_UID or
    # /etc/krb5.keytab (callers normally set KRB5CCNAME / KRB5_KTNAME themselves).
    default_ccache_name = FILE:$KDC_DIR/krb5cc_default
    default_keytab_name = FILE:$KDC_DIR/no-default.keytab
    # Deliberately NO default_client_keytab_name: with it, GSSAPI initiators (curl --negotiate,
    # python-gssapi, the Rust binding) silently get a fresh TGT from that keytab even after
    # kdestroy, so tests could never reach "no credentials". Initiating from a keytab must be
    # explicit (KRB5_CLIENT_KTNAME, a client_keytab credential store, kinit -kt). The built-in
    # default (FILE:/etc/krb5/user/%{euid}/client.keytab) does not exist on a test machine.

[realms]
    $REALM = {
        kdc = 127.0.0.1:$kport
        admin_server = 127.0.0.1:$aport
        kpasswd_server = 127.0.0.1:$pport
    }

[logging]
    default = FILE:$KDC_DIR/krb5lib.log
EOF
  cat >"$KRB5_KDC_PROFILE" <<EOF
# KDC/kadmind configuration for the test realm $REALM (written by start-kdc.sh).
[kdcdefaults]
    # bind 127.0.0.1 only (without these the KDC listens on every interface, ports 88/750)
    kdc_listen = 127.0.0.1:$kport
    kdc_tcp_listen = 127.0.0.1:$kport

[realms]
    $REALM = {
        database_name = $KDC_DIR/principal
        key_stash_file = $KDC_DIR/stash
        acl_file = $KDC_DIR/kadm5.acl
        kdc_listen = 127.0.0.1:$kport
        kdc_tcp_listen = 127.0.0.1:$kport
        kadmind_listen = 127.0.0.1:$aport
        kpasswd_listen = 127.0.0.1:$pport
        max_life = 10h
        max_renewable_life = 7d
    }

[logging]
    kdc = FILE:$LOG
    admin_server = FILE:$KADMIND_LOG
    default = FILE:$KDC_DIR/krb5lib.log
EOF
}

# --- realm database and principals (ports are filled in later; the database doesn't care) -----
write_configs 0 0 0
cat >"$KDC_DIR/kadm5.acl" <<EOF
$ADMIN *
$ROBOT i
EOF
kdb5_util -r "$REALM" create -s -P "$MASTER_PASSWORD" >"$KDC_DIR/kdb5_util.log" 2>&1 \
  || { cat "$KDC_DIR/kdb5_util.log" >&2; die "kdb5_util create failed"; }

kt() { printf '%s/%s.keytab' "$KDC_DIR" "$1"; }
# One kadmin.local session (commands on stdin) instead of one process per principal. ktadd
# -norandkey exports the current keys, so a principal can go into several keytabs without
# invalidating the earlier ones.
{
  printf 'addprinc -randkey %s\n' "$ROBOT" "$ROBOT2" "$STRANGER" "${HTTP_PRINCS[@]}" "${HOST_PRINCS[@]}"
  printf 'addprinc -pw %s %s\n' "$USER_PASSWORD" "$USER_PRINC" "$ADMIN_PASSWORD" "$ADMIN"
  printf 'ktadd -norandkey -k %s %s\n' "$(kt robot)" "$ROBOT" "$(kt robot2)" "$ROBOT2" \
    "$(kt stranger)" "$STRANGER"
  for p in "${HTTP_PRINCS[@]}"; do printf 'ktadd -norandkey -k %s %s\n' "$(kt http)" "$p"; done
  for p in "${HOST_PRINCS[@]}"; do printf 'ktadd -norandkey -k %s %s\n' "$(kt host)" "$p"; done
  for p in "${HTTP_PRINCS[@]}" "${HOST_PRINCS[@]}"; do
    printf 'ktadd -norandkey -k %s %s\n' "$(kt service)" "$p"
  done
} | kadmin.local -r "$REALM" >"$KDC_DIR/kadmin-local.log" 2>&1 \
  || { cat "$KDC_DIR/kadmin-local.log" >&2; die "kadmin.local failed"; }
for k in robot robot2 stranger http host service; do
  [ -s "$(kt "$k")" ] || { cat "$KDC_DIR/kadmin-local.log" >&2; die "keytab $(kt "$k") was not written"; }
  chmod 0600 "$(kt "$k")"
done
if grep -qiE 'error|fail|unknown' "$KDC_DIR/kadmin-local.log"; then
  cat "$KDC_DIR/kadmin-local.log" >&2
  die "kadmin.local reported an error"
fi

# --- start the daemons -----------------------------------------------------------------------
log_tail() { # log_tail: the last lines of every daemon log, for a failure report
  local f
  for f in "$LOG" "$KADMIND_LOG" "$KDC_DIR/krb5kdc.out" "$KDC_DIR/kadmind.out"; do
    [ -s "$f" ] || continue
    log "last lines of $f:"
    tail -n 20 "$f" >&2
  done
}

# three distinct ports: the requested/free KDC port, and free ones for kadmind and kpasswd
pick_ports() {
  KDC_PORT=${REQ_PORT:-$(free_port)}
  KADMIN_PORT=$(free_port)
  while [ "$KADMIN_PORT" = "$KDC_PORT" ]; do KADMIN_PORT=$(free_port); done
  KPASSWD_PORT=$(free_port)
  while [ "$KPASSWD_PORT" = "$KDC_PORT" ] || [ "$KPASSWD_PORT" = "$KADMIN_PORT" ]; do
    KPASSWD_PORT=$(free_port)
  done
}

stop_started() {
  if [ -n "$KDC_PID" ]; then stop_pid "$KDC_PID" "-P $KDC_DIR/krb5kdc.pid" || true; fi
  if [ -n "$KADMIND_PID" ]; then stop_pid "$KADMIND_PID" "-P $KDC_DIR/kadmind.pid" || true; fi
  KDC_PID='' KADMIND_PID=''
}

# listening PID PORT: PID itself listens on 127.0.0.1:PORT (TCP). Asking only after that
# keeps kinit/kadmin from talking to some other program that holds the port.
listening() {
  ss -Hltnp "sport = :$2" 2>/dev/null | grep -q "pid=$1,"
}

# ready: a real AS exchange with the robot keytab (and, with kadmind, an authenticated
# kadmin query). Returns 0 when ready, 1 on timeout, 2 when a daemon died.
ready() {
  local deadline=$(( $(now_ms) + 10000 )) kdc_ok=0
  while :; do
    if [ "$kdc_ok" -eq 0 ] && listening "$KDC_PID" "$KDC_PORT" \
       && timeout 5 kinit -kt "$(kt robot)" "$ROBOT" >/dev/null 2>"$KDC_DIR/ready.err"; then
      kdc_ok=1
    fi
    if [ "$kdc_ok" -eq 1 ]; then
      [ "$WITH_KADMIND" = 0 ] && return 0
      if listening "$KADMIND_PID" "$KADMIN_PORT" \
         && timeout 5 kadmin -r "$REALM" -p "$ADMIN" -w "$ADMIN_PASSWORD" -q "getprinc $ROBOT" \
           >/dev/null 2>>"$KDC_DIR/ready.err"; then
        return 0
      fi
    fi
    pid_alive "$KDC_PID" || return 2
    [ -z "$KADMIND_PID" ] || pid_alive "$KADMIND_PID" || return 2
    [ "$(now_ms)" -ge "$deadline" ] && return 1
    sleep 0.05
  done
}

attempt=0
KDC_PID='' KADMIND_PID=''
while :; do
  attempt=$((attempt + 1))
  pick_ports
  write_configs "$KDC_PORT" "$KADMIN_PORT" "$KPASSWD_PORT"
  printf '%s start-kdc.sh: starting on port %s\n' "$(date -u +%FT%TZ)" "$KDC_PORT" >>"$LOG"
  # -n / -nofork: stay in the foreground so $! is the daemon itself; -P puts KDC_DIR into the
  # command line, which stop_pid matches against PID reuse.
  (exec nohup krb5kdc -n -r "$REALM" -P "$KDC_DIR/krb5kdc.pid" >>"$KDC_DIR/krb5kdc.out" 2>&1 </dev/null) &
  KDC_PID=$!
  if [ "$WITH_KADMIND" != 0 ]; then
    (exec nohup kadmind -nofork -r "$REALM" -P "$KDC_DIR/kadmind.pid" >>"$KDC_DIR/kadmind.out" 2>&1 </dev/null) &
    KADMIND_PID=$!
  fi
  rc=0
  ready || rc=$?
  [ "$rc" -eq 0 ] && break
  # a port picked by us may have been taken in between: try others
  if [ -z "$REQ_PORT" ] && [ "$attempt" -lt 3 ] \
     && cat "$LOG" "$KADMIND_LOG" "$KDC_DIR"/*.out 2>/dev/null | grep -qi 'address already in use'; then
    log "a port was taken, retrying"
    stop_started
    : >"$LOG"
    [ -f "$KADMIND_LOG" ] && : >"$KADMIND_LOG"
    continue
  fi
  log "KDC not ready on 127.0.0.1:$KDC_PORT (rc=$rc: $([ "$rc" -eq 2 ] && echo 'a daemon exited' || echo timeout))"
  if [ -s "$KDC_DIR/ready.err" ]; then
    log "last kinit/kadmin error: $(tail -n 3 "$KDC_DIR/ready.err" | tr '\n' ' ')"
  fi
  log_tail
  stop_started
  die "start-kdc.sh failed"
done
kdestroy -q 2>/dev/null || true
START_MS=$(( $(now_ms) - t0 ))

# --- env file --------------------------------------------------------------------------------
tmp_env=$(mktemp "$STATE/.kdc.env.XXXXXX")
{
  w() { env_write "$tmp_env" "$1" "$2"; }
  w KRB5_CONFIG "$KRB5_CONFIG"
  w KRB5_KDC_PROFILE "$KRB5_KDC_PROFILE"
  w KRB5RCACHEDIR "$KRB5RCACHEDIR"
  w KRB5_REALM "$REALM"
  w KDC_PORT "$KDC_PORT"
  w KDC_DIR "$KDC_DIR"
  w KDC_PID "$KDC_PID"
  w KADMIND_PID "${KADMIND_PID:-}"
  w KDC_KADMIN_PORT "$([ "$WITH_KADMIND" != 0 ] && echo "$KADMIN_PORT")"
  w KDC_KPASSWD_PORT "$([ "$WITH_KADMIND" != 0 ] && echo "$KPASSWD_PORT")"
  w KRB5_ROBOT_PRINCIPAL "$ROBOT"
  w KRB5_ROBOT_KEYTAB "$(kt robot)"
  w KRB5_ROBOT2_PRINCIPAL "$ROBOT2"
  w KRB5_ROBOT2_KEYTAB "$(kt robot2)"
  w KRB5_STRANGER_PRINCIPAL "$STRANGER"
  w KRB5_STRANGER_KEYTAB "$(kt stranger)"
  w KRB5_SERVICE_KEYTAB "$(kt service)"
  w KRB5_HTTP_KEYTAB "$(kt http)"
  w KRB5_HOST_KEYTAB "$(kt host)"
  w KRB5_USER_PRINCIPAL "$USER_PRINC"
  w KRB5_USER_PASSWORD "$USER_PASSWORD"
  w KRB5_ADMIN_PRINCIPAL "$ADMIN"
  w KRB5_ADMIN_PASSWORD "$ADMIN_PASSWORD"
  w KDC_LOG "$LOG"
  w KDC_INSTALL_MS "$INSTALL_MS"
  w KDC_START_MS "$START_MS"
}
mv -f "$tmp_env" "$ENV_FILE"
log "KDC ready: realm $REALM on 127.0.0.1:$KDC_PORT (krb5kdc pid $KDC_PID${KADMIND_PID:+, kadmind pid $KADMIND_PID on $KADMIN_PORT}, start ${START_MS} ms) -> $ENV_FILE"
echo "$ENV_FILE"
