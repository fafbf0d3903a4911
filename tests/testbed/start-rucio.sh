#!/usr/bin/env bash
# start-rucio.sh STATE [PORT] - start a real Rucio 41.5.1 server (the Flask REST app of the PyPI
# package `rucio` under gunicorn, SQLite database) on 127.0.0.1 and write STATE/rucio.env once a
# real `rucio whoami` (userpass, account robot) answers.
#
# STATE   state directory (created); the server lives in STATE/rucio/ (rucio.cfg, alembic.ini,
#         rucio.db, idpsecrets.json, pki/, client configs, passwords, logs). A STATE/rucio/ left
#         by an earlier run is wiped (its recorded servers are stopped first): every start is a
#         fresh database with fresh passwords and certificates.
# PORT    optional port of the plain-HTTP server (RUCIO_URL); otherwise a free loopback port.
#
# Two gunicorn masters share the database:
#   * plain HTTP on PORT: userpass and OIDC bearer tokens (RUCIO_URL = RUCIO_AUTH_URL);
#   * HTTPS on a free port (RUCIO_TLS_URL): gunicorn terminates TLS with the test CA and asks for
#     an optional client certificate (--cert-reqs 1); a small WSGI wrapper (STATE/rucio/
#     x509_wsgi.py) puts the verified certificate's subject into SSL_CLIENT_S_DN (what Apache's
#     mod_ssl would set, RFC 2253 order: CN=robot,O=credkeeper-test,C=CH), which is the only
#     place Rucio's /auth/x509 reads a DN from. Userpass and bearer tokens work there too.
#
# Accounts: root (userpass root / generated password) and robot (type USER, scope user.robot)
# with the identities: USERPASS robot / generated password (STATE/rucio/robot.password, 0600);
# X509 of the client certificate STATE/rucio/pki/robot.pem; and, when RUCIO_OIDC_ISSUER is set,
# OIDC "SUB=<subject>, ISS=<issuer>" for every subject of RUCIO_OIDC_SUBJECT. The server then
# accepts that issuer's JWT access tokens (signature checked against the issuer's JWKS, fetched
# from its discovery document at the first JWT) sent as `X-Rucio-Auth-Token: <JWT>`.
# A second client certificate (pki/stranger.pem) is signed by the same CA but mapped to nothing.
#
# Inputs (environment, all optional):
#   RUCIO_OIDC_ISSUER    issuer URL of an OpenID Provider (e.g. OP_ISSUER of start-op.sh); must
#                        equal the tokens' "iss" exactly. Unset/empty: no OIDC (JWTs get 401).
#   RUCIO_OIDC_SUBJECT   comma-separated token subjects mapped to robot (default
#                        alice,robot-client: a device/browser login as alice at the test OP, and
#                        the OP's robot-client with client_credentials)
#   RUCIO_OIDC_AUDIENCE  audience the tokens must carry (default https://api.test.example)
#   RUCIO_OIDC_SCOPE     scope the tokens must carry (default read)
#   RUCIO_OIDC_CLIENT_ID / RUCIO_OIDC_CLIENT_SECRET  the issuer's client for Rucio's own
#                        (unused here) flows and introspection (default robot-client/robot-secret)
#   RUCIO_WORKERS (1) RUCIO_THREADS (4)  gunicorn workers/threads of the HTTP server
#   RUCIO_TLS_WORKERS (1)                gunicorn workers of the HTTPS server (RUCIO_THREADS threads)
# Outputs (STATE/rucio.env, also printed on stdout as its path) are never read back as inputs:
#   RUCIO_URL = RUCIO_AUTH_URL (http), RUCIO_TLS_URL (https), RUCIO_PORT, RUCIO_TLS_PORT,
#   RUCIO_PID, RUCIO_TLS_PID (the gunicorn masters), RUCIO_ACCOUNT=robot, RUCIO_SCOPE,
#   RUCIO_USERPASS_USER, RUCIO_PASSWORD_FILE, RUCIO_ROOT_{ACCOUNT,USERPASS_USER,PASSWORD_FILE},
#   RUCIO_CA_CERT, RUCIO_CLIENT_{CERT,KEY,DN}, RUCIO_STRANGER_{CERT,KEY,DN},
#   RUCIO_CLIENT_CONFIG (userpass over http), RUCIO_CLIENT_CONFIG_OIDC (auth_type oidc over http,
#   the token comes from BEARER_TOKEN / BEARER_TOKEN_FILE), RUCIO_CLIENT_CONFIG_X509 (x509 over
#   https), RUCIO_OIDC (1|0), RUCIO_OIDC_{TRUSTED_ISSUER,SUBJECTS,EXPECTED_AUDIENCE,EXPECTED_SCOPE},
#   RUCIO_BIN (the venv's `rucio`), RUCIO_PYTHON, RUCIO_DIR, RUCIO_SERVER_CONFIG, RUCIO_DB, logs
#   (RUCIO_SERVER_LOG, RUCIO_ACCESS_LOG, RUCIO_TLS_SERVER_LOG, RUCIO_TLS_ACCESS_LOG) and timings.
#   Careful: the Rucio client library itself reads RUCIO_ACCOUNT, RUCIO_CLIENT_CERT and
#   RUCIO_CLIENT_KEY (they beat [client] account / client_cert / client_key): a test that loads
#   this file into its environment must not pass those on to a client it did not mean them for.
# The OP must answer when the first JWT reaches a worker (discovery + JWKS are fetched then and
# kept); after the OP moves to another port or gets new keys, start Rucio again.
# Nothing system-wide is used: the server and every client run here get RUCIO_CONFIG inside
# STATE/rucio, TMPDIR=STATE/rucio/tmp (the client's token cache), and none of RUCIO_HOME,
# RUCIO_ACCOUNT, RUCIO_AUTH_TYPE, X509_CERT_DIR, BEARER_TOKEN*, ... from the caller.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

T_START=$(now_ms)
if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: $0 STATE [PORT]"; fi
mkdir -p "$1"
STATE=$(cd "$1" && pwd)
REQ_PORT=${2:-}
[ -z "$REQ_PORT" ] || [[ $REQ_PORT =~ ^[0-9]+$ ]] || die "PORT must be a number"

OIDC_ISSUER=${RUCIO_OIDC_ISSUER:-}
OIDC_SUBJECTS=${RUCIO_OIDC_SUBJECT:-alice,robot-client}
OIDC_AUDIENCE=${RUCIO_OIDC_AUDIENCE:-https://api.test.example}
OIDC_SCOPE=${RUCIO_OIDC_SCOPE:-read}
OIDC_CLIENT_ID=${RUCIO_OIDC_CLIENT_ID:-robot-client}
OIDC_CLIENT_SECRET=${RUCIO_OIDC_CLIENT_SECRET:-robot-secret}
WORKERS=${RUCIO_WORKERS:-1}
THREADS=${RUCIO_THREADS:-4}
TLS_WORKERS=${RUCIO_TLS_WORKERS:-1}
for n in "$WORKERS" "$THREADS" "$TLS_WORKERS"; do
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "RUCIO_WORKERS, RUCIO_THREADS, RUCIO_TLS_WORKERS must be 1..99"
done
[ -z "$OIDC_ISSUER" ] || [[ $OIDC_ISSUER =~ ^https?://[^[:space:]\"\'\$\\]+$ ]] \
  || die "RUCIO_OIDC_ISSUER must be an http(s) URL without whitespace, quotes, \$ or \\"
[[ $OIDC_SUBJECTS =~ ^[A-Za-z0-9@._:/+-]+(,[A-Za-z0-9@._:/+-]+)*$ ]] \
  || die "RUCIO_OIDC_SUBJECT must be comma-separated subjects (letters, digits, @._:/+-)"
[[ $OIDC_AUDIENCE$OIDC_SCOPE =~ ^[^[:space:]\"\'\$\\]+$ ]] \
  || die "RUCIO_OIDC_AUDIENCE and RUCIO_OIDC_SCOPE: one word each, no quotes, \$ or \\"

RDIR=$STATE/rucio
ENV_FILE=$STATE/rucio.env
PKI=$RDIR/pki
SERVER_CFG=$RDIR/rucio.cfg
ALEMBIC_INI=$RDIR/alembic.ini
DB=$RDIR/rucio.db
IDPSECRETS=$RDIR/idpsecrets.json
CLIENT_CFG=$RDIR/client-userpass.cfg
CLIENT_CFG_OIDC=$RDIR/client-oidc.cfg
CLIENT_CFG_X509=$RDIR/client-x509.cfg
HTTP_PIDFILE=$RDIR/gunicorn-http.pid
TLS_PIDFILE=$RDIR/gunicorn-tls.pid
HTTP_LOG=$RDIR/server-http.log
HTTP_ACCESS=$RDIR/access-http.log
TLS_LOG=$RDIR/server-tls.log
TLS_ACCESS=$RDIR/access-tls.log
ROBOT=robot
ROBOT_DN=CN=robot,O=credkeeper-test,C=CH
STRANGER_DN=CN=stranger,O=credkeeper-test,C=CH

# --- install (venv-rucio; the check path is fast when it is complete) -------------------------
t0=$(now_ms)
VPY=$("$TESTBED_DIR/setup-rucio.sh") || die "setup-rucio.sh failed"
VENV=$(dirname "$(dirname "$VPY")")
RUCIO_BIN=$VENV/bin/rucio
GUNICORN=$VENV/bin/gunicorn
command -v openssl >/dev/null || apt_install openssl
INSTALL_MS=$(( $(now_ms) - t0 ))

# --- stop and wipe what an earlier run left in STATE/rucio ------------------------------------
t0=$(now_ms)
if [ -f "$ENV_FILE" ]; then
  # both at once: a gunicorn master takes about 1.5 s to stop with its worker
  stoppers=()
  for pair in RUCIO_PID:"$HTTP_PIDFILE" RUCIO_TLS_PID:"$TLS_PIDFILE"; do
    pid=$(env_read "$ENV_FILE" "${pair%%:*}" || true)
    if [ -n "$pid" ]; then
      stop_pid "$pid" "--pid ${pair#*:}" &
      stoppers+=("$!")
    fi
  done
  for j in "${stoppers[@]}"; do wait "$j" || true; done
fi
rm -f "$ENV_FILE"
rm -rf "$RDIR"
mkdir -p "$PKI" "$RDIR/tmp"
chmod 0700 "$RDIR" "$PKI" "$RDIR/tmp"

# Every Rucio process started here (bootstrap, servers, the readiness client) sees only our
# configuration: nothing from the caller that the library reads, and a private TMPDIR.
RUCIO_CLEAN_ENV=(env -u RUCIO_HOME -u RUCIO_CONFIG -u RUCIO_ACCOUNT -u RUCIO_AUTH_TYPE -u RUCIO_VO
  -u RUCIO_CLIENT_MODE -u RUCIO_CLIENT_CERT -u RUCIO_CLIENT_KEY -u RUCIO_CLIENT_PROXY
  -u X509_USER_PROXY -u X509_CERT_DIR -u BEARER_TOKEN -u BEARER_TOKEN_FILE -u XDG_RUNTIME_DIR
  -u VIRTUAL_ENV -u CONDA_PREFIX -u TMP -u TEMP -u PYTHONPATH -u REQUESTS_CA_BUNDLE
  -u CURL_CA_BUNDLE -u SSL_CERT_FILE -u SSL_CERT_DIR TMPDIR="$RDIR/tmp")

random_hex() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
ROOT_PASSWORD=$(random_hex)
ROBOT_PASSWORD=$(random_hex)
(umask 077 && printf '%s' "$ROOT_PASSWORD" >"$RDIR/root.password" \
  && printf '%s' "$ROBOT_PASSWORD" >"$RDIR/robot.password")

# --- server configuration and database ---------------------------------------------------------
SITE=$("$VPY" -I -c 'import os, rucio; print(os.path.dirname(os.path.dirname(rucio.__file__)))')
cat >"$ALEMBIC_INI" <<EOF
# alembic configuration of the test Rucio server (written by start-rucio.sh). build_database()
# stamps the schema version with it; the logging sections are required by migrate_repo/env.py.
[alembic]
script_location = $SITE/rucio/db/sqla/migrate_repo
sqlalchemy.url = sqlite:///$DB

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = WARN
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
EOF

{
  cat <<EOF
# Server configuration of the test Rucio server (written by start-rucio.sh; loopback only).
# Found by the server through RUCIO_CONFIG. A [database] section makes the library run in
# server mode: never give this file to a client.
[common]
loglevel = INFO
logdir = $RDIR

[database]
default = sqlite:///$DB
pool_reset_on_return = rollback
echo = 0

[alembic]
cfg = $ALEMBIC_INI

[bootstrap]
# plain text: create_root_account() salts and hashes it itself
userpass_identity = root
userpass_pwd = $ROOT_PASSWORD
userpass_email = root@localhost
# empty: no default CERN identities for root
x509_identity =
gss_identity =
ssh_identity =

[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = hash

[monitor]
enable_metrics = False
carbon_server = 127.0.0.1
EOF
  if [ -n "$OIDC_ISSUER" ]; then
    cat <<EOF

[oidc]
# JWT access tokens of the issuer in idpsecrets.json are accepted when their signature checks
# out against its JWKS and they carry every word of expected_scope and expected_audience.
idpsecrets = $IDPSECRETS
admin_issuer = testop
expected_audience = $OIDC_AUDIENCE
expected_scope = $OIDC_SCOPE
EOF
  fi
} >"$SERVER_CFG"
chmod 0600 "$SERVER_CFG" # holds root's password

# Schema, base VO, root, robot (+ identities, scope). Core functions need an explicit session.
# It runs in the background while the PKI is made and the servers boot (their workers only
# look up optional settings in the database while importing the app, and do without).
cat >"$RDIR/bootstrap.py" <<'PY'
"""Database of the test Rucio server (written and run by start-rucio.sh, RUCIO_CONFIG=rucio.cfg)."""
import sys
import time

t0 = time.monotonic()
from rucio.common.types import InternalAccount, InternalScope  # noqa: E402
from rucio.core.account import add_account  # noqa: E402
from rucio.core.identity import add_account_identity  # noqa: E402
from rucio.core.scope import add_scope  # noqa: E402
from rucio.db.sqla.constants import AccountType, DatabaseOperationType, IdentityType  # noqa: E402
from rucio.db.sqla.session import db_session  # noqa: E402
from rucio.db.sqla.util import build_database, create_base_vo, create_root_account  # noqa: E402

robot, password, dn, *oidc = sys.argv[1:]
build_database()       # tables, alembic stamp (alembic.ini)
create_base_vo()       # VO "def"
create_root_account()  # root + the [bootstrap] userpass identity
acc = InternalAccount(robot)
email = robot + "@localhost"
with db_session(DatabaseOperationType.WRITE) as session:
    add_account(acc, AccountType.USER, email, session=session)
    add_account_identity(robot, IdentityType.USERPASS, acc, email, default=True, password=password, session=session)
    add_account_identity(dn, IdentityType.X509, acc, email, default=True, session=session)
    for ident in oidc:  # "SUB=<sub>, ISS=<issuer>"
        add_account_identity(ident, IdentityType.OIDC, acc, email, default=True, session=session)
    add_scope(InternalScope("user." + robot), acc, session=session)
print("bootstrap ok %d" % ((time.monotonic() - t0) * 1000))
PY
OIDC_IDENTITIES=()
if [ -n "$OIDC_ISSUER" ]; then
  IFS=, read -r -a subs <<<"$OIDC_SUBJECTS"
  for s in "${subs[@]}"; do OIDC_IDENTITIES+=("SUB=$s, ISS=$OIDC_ISSUER"); done
fi
("${RUCIO_CLEAN_ENV[@]}" RUCIO_CONFIG="$SERVER_CFG" "$VPY" -I "$RDIR/bootstrap.py" "$ROBOT" "$ROBOT_PASSWORD" \
  "$ROBOT_DN" "${OIDC_IDENTITIES[@]}" >"$RDIR/bootstrap.log" 2>&1 </dev/null) &
BOOT_PID=$!

# --- test PKI: CA, server certificate (127.0.0.1/localhost), client certificates --------------
t0=$(now_ms)
# EC P-256 keys (fast to make); the key files are 0600 (Rucio's client refuses looser ones).
pki() {
  local out
  out=$(cd "$PKI" && umask 077 && "$@" 2>&1) || { printf '%s\n' "$out" >&2; die "openssl failed: $*"; }
}
mkkey() { pki openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"; }
# sign NAME SUBJECT EXTFILE-CONTENT
sign() {
  printf '%s\n' "$3" >"$PKI/$1.ext"
  mkkey "$1"
  pki openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  pki openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -sha256 \
    -extfile "$1.ext" -out "$1.pem"
  rm -f "$PKI/$1.csr" "$PKI/$1.ext"
}
# openssl -subj wants /C=../O=../CN=..; Rucio and mod_ssl write the RFC 2253 order CN=..,O=..,C=..
subj_of() { printf '/%s' "$(tr ',' '\n' <<<"$1" | tac | paste -sd/)"; }
mkkey ca
pki openssl req -x509 -new -key ca.key -subj "/C=CH/O=credkeeper-test/CN=credkeeper test CA" -days 30 \
  -sha256 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -out ca.pem
sign server "/C=CH/O=credkeeper-test/CN=localhost" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
for who in robot:"$ROBOT_DN" stranger:"$STRANGER_DN"; do
  sign "${who%%:*}" "$(subj_of "${who#*:}")" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
done
rm -f "$PKI/ca.srl"
chmod 0600 "$PKI"/*.key
chmod 0644 "$PKI"/*.pem
got_dn=$(openssl x509 -in "$PKI/robot.pem" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
[ "$got_dn" = "$ROBOT_DN" ] || die "robot certificate subject is '$got_dn', want '$ROBOT_DN'"
PKI_MS=$(( $(now_ms) - t0 ))

# DN of a verified client certificate -> SSL_CLIENT_S_DN, as mod_ssl would set it.
cat >"$RDIR/x509_wsgi.py" <<'PY'
"""WSGI wrapper for the TLS instance of the test Rucio server (written by start-rucio.sh).

gunicorn terminates TLS and verifies an optional client certificate against the test CA
(--ca-certs, --cert-reqs 1). Rucio's /auth/x509 reads the client's DN only from the WSGI
environ key SSL_CLIENT_S_DN (set by Apache's mod_ssl), so this puts the verified peer
certificate's subject there, in RFC 2253 order (CN=...,O=...,C=...) like mod_ssl does.
"""
from rucio.web.rest.flaskapi.v1.main import application as rucio_application


def _dn(cert):
    rdns = []
    for rdn in reversed(cert.get("subject", ())):
        rdns.append("+".join("%s=%s" % (_SHORT.get(k, k), v) for k, v in rdn))
    return ",".join(rdns)


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
          "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST",
          "emailAddress": "emailAddress", "domainComponent": "DC"}


def application(environ, start_response):
    environ.pop("SSL_CLIENT_S_DN", None)
    sock = environ.get("gunicorn.socket")
    cert = None
    try:
        cert = sock.getpeercert() if sock is not None and hasattr(sock, "getpeercert") else None
    except Exception:
        cert = None
    if cert:
        environ["SSL_CLIENT_S_DN"] = _dn(cert)
        environ["HTTPS"] = "on"
    return rucio_application(environ, start_response)
PY

# --- start the servers ---------------------------------------------------------------------------
write_client_configs() { # PORT TLS_PORT
  local url=http://127.0.0.1:$1 tls_url=https://127.0.0.1:$2
  (
    umask 077
    cat >"$CLIENT_CFG" <<EOF
# Client configuration for account robot with username/password (written by start-rucio.sh).
# Use it with RUCIO_CONFIG=<this file> and a private TMPDIR (the token cache lives under it).
[client]
rucio_host = $url
auth_host = $url
auth_type = userpass
account = $ROBOT
username = $ROBOT
password = $ROBOT_PASSWORD
request_retries = 1
EOF
    cat >"$CLIENT_CFG_OIDC" <<EOF
# Client configuration for account robot with an OIDC bearer token (written by start-rucio.sh).
# The token comes from BEARER_TOKEN, else the file named by BEARER_TOKEN_FILE, else
# \$XDG_RUNTIME_DIR/bt_u<uid>, else /tmp/bt_u<uid>, else the token cache file (or a file named
# by an added "auth_token_file_path = /abs/path"). It is sent as X-Rucio-Auth-Token.
[client]
rucio_host = $url
auth_host = $url
auth_type = oidc
account = $ROBOT
request_retries = 1
EOF
    cat >"$CLIENT_CFG_X509" <<EOF
# Client configuration for account robot with an X.509 client certificate over TLS (written by
# start-rucio.sh). X509_CERT_DIR in the environment would override ca_cert; RUCIO_CLIENT_CERT
# and RUCIO_CLIENT_KEY would override client_cert and client_key.
[client]
rucio_host = $tls_url
auth_host = $tls_url
auth_type = x509
account = $ROBOT
client_cert = $PKI/robot.pem
client_key = $PKI/robot.key
ca_cert = $PKI/ca.pem
request_retries = 1
EOF
  )
}

write_idpsecrets() { # PORT
  [ -n "$OIDC_ISSUER" ] || return 0
  "$VPY" -I -c 'import json, sys
iss, cid, sec, port, out = sys.argv[1:]
json.dump({"testop": {"issuer": iss, "client_id": cid, "client_secret": sec,
                      "redirect_uris": ["http://127.0.0.1:%s/auth/oidc_token" % port],
                      "SCIM": {"client_id": cid, "client_secret": sec}}}, open(out, "w"), indent=2)
' "$OIDC_ISSUER" "$OIDC_CLIENT_ID" "$OIDC_CLIENT_SECRET" "$1" "$IDPSECRETS"
  chmod 0600 "$IDPSECRETS"
}

# start_gunicorn PIDFILE LOG ACCESS_LOG WORKERS BIND APP [EXTRA...]: prints the master's PID
start_gunicorn() {
  local pidfile=$1 log=$2 access=$3 workers=$4 bind=$5 app=$6
  shift 6
  (cd "$RDIR" && exec "${RUCIO_CLEAN_ENV[@]}" RUCIO_CONFIG="$SERVER_CFG" nohup "$GUNICORN" \
    --workers "$workers" --threads "$THREADS" --bind "$bind" --pid "$pidfile" --no-control-socket \
    --timeout 120 --graceful-timeout 5 --access-logfile "$access" --error-logfile "$log" \
    --pythonpath "$RDIR" "$@" "$app" >>"$log" 2>&1 </dev/null) &
  echo $!
}

listening() { # PID PORT: PID itself listens on 127.0.0.1:PORT
  ss -Hltnp "sport = :$2" 2>/dev/null | grep -q "pid=$1,"
}

ping_ok() { # URL [CURL-ARGS...]: /ping answers 200 with this Rucio version
  curl -fsS --max-time 2 "${@:2}" "$1/ping" 2>/dev/null | grep -q '"version": *"41\.5\.1"'
}

# wait_bootstrap: wait for the database bootstrap (once); non-zero when it failed.
DB_MS=
wait_bootstrap() {
  [ -n "$DB_MS" ] && return 0
  local rc=0
  wait "$BOOT_PID" || rc=$?
  DB_MS=$(sed -n 's/^bootstrap ok //p' "$RDIR/bootstrap.log")
  [ "$rc" -eq 0 ] && [ -n "$DB_MS" ] && return 0
  DB_MS=
  return 1
}

# ready: both /pings, both masters listening, the database bootstrapped, then a real
# `rucio whoami` with userpass. Returns 0 when ready, 1 on timeout, 2 when a master died,
# 3 when the bootstrap failed.
ready() {
  local deadline=$(( $(now_ms) + 60000 )) http_ok=0 tls_ok=0
  while :; do
    if [ "$http_ok" -eq 0 ] && listening "$HTTP_PID" "$PORT" && ping_ok "$URL"; then http_ok=1; fi
    if [ "$tls_ok" -eq 0 ] && listening "$TLS_PID" "$TLS_PORT" && ping_ok "$TLS_URL" --cacert "$PKI/ca.pem"; then
      tls_ok=1
    fi
    if [ "$http_ok" -eq 1 ] && [ "$tls_ok" -eq 1 ] && [ -z "$DB_MS" ] && ! pid_alive "$BOOT_PID"; then
      wait_bootstrap || return 3
    fi
    if [ "$http_ok" -eq 1 ] && [ "$tls_ok" -eq 1 ] && [ -n "$DB_MS" ]; then
      if "${RUCIO_CLEAN_ENV[@]}" RUCIO_CONFIG="$CLIENT_CFG" timeout 30 "$RUCIO_BIN" whoami \
        >"$RDIR/ready.out" 2>&1 </dev/null && grep -qE "^account +: +$ROBOT\$" "$RDIR/ready.out"; then
        return 0
      fi
    fi
    pid_alive "$HTTP_PID" && pid_alive "$TLS_PID" || return 2
    [ "$(now_ms)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

stop_started() { # both at once: a gunicorn master takes about 1.5 s to stop with its worker
  local stoppers=() j
  if [ -n "$HTTP_PID" ]; then stop_pid "$HTTP_PID" "--pid $HTTP_PIDFILE" & stoppers+=("$!"); fi
  if [ -n "$TLS_PID" ]; then stop_pid "$TLS_PID" "--pid $TLS_PIDFILE" & stoppers+=("$!"); fi
  for j in "${stoppers[@]}"; do wait "$j" || true; done
  HTTP_PID='' TLS_PID=''
  # A master that could not bind exits from gunicorn's start-up without removing its pid
  # file, and a master stopped by KILL cannot; left, the file makes the next master with
  # that file refuse to start ("Already running on PID …") while that PID still exists (a
  # zombie nobody reaps, in a container whose PID 1 does not). Ours are stopped now.
  rm -f "$HTTP_PIDFILE" "$TLS_PIDFILE"
}

t0=$(now_ms)
attempt=0
HTTP_PID='' TLS_PID=''
# whatever ends this script before the env file is written (an error, a signal, a closed
# stderr pipe) stops the servers it started
trap 'stop_started' EXIT
trap 'exit 1' HUP INT TERM PIPE
while :; do
  attempt=$((attempt + 1))
  PORT=${REQ_PORT:-$(free_port)}
  TLS_PORT=$(free_port)
  while [ "$TLS_PORT" = "$PORT" ]; do TLS_PORT=$(free_port); done
  URL=http://127.0.0.1:$PORT
  TLS_URL=https://127.0.0.1:$TLS_PORT
  write_client_configs "$PORT" "$TLS_PORT"
  write_idpsecrets "$PORT"
  for f in "$HTTP_LOG" "$TLS_LOG"; do
    printf '%s start-rucio.sh: starting (attempt %s)\n' "$(date -u +%FT%TZ)" "$attempt" >>"$f"
  done
  HTTP_PID=$(start_gunicorn "$HTTP_PIDFILE" "$HTTP_LOG" "$HTTP_ACCESS" "$WORKERS" "127.0.0.1:$PORT" \
    rucio.web.rest.flaskapi.v1.main:application)
  TLS_PID=$(start_gunicorn "$TLS_PIDFILE" "$TLS_LOG" "$TLS_ACCESS" "$TLS_WORKERS" "127.0.0.1:$TLS_PORT" \
    x509_wsgi:application --certfile "$PKI/server.pem" --keyfile "$PKI/server.key" \
    --ca-certs "$PKI/ca.pem" --cert-reqs 1)
  rc=0
  ready || rc=$?
  [ "$rc" -eq 0 ] && break
  # a port picked by us may have been taken in between: try others
  if [ -z "$REQ_PORT" ] && [ "$attempt" -lt 3 ] \
     && cat "$HTTP_LOG" "$TLS_LOG" 2>/dev/null | grep -qiE 'connection in use|address already in use'; then
    log "a port was taken, retrying"
    stop_started
    : >"$HTTP_LOG"
    : >"$TLS_LOG"
    continue
  fi
  case $rc in
    2) why='a server exited' ;;
    3) why='the database bootstrap failed' ;;
    *) why=timeout ;;
  esac
  stop_started
  log "Rucio not ready on $URL / $TLS_URL (rc=$rc: $why)"
  for f in "$RDIR/bootstrap.log" "$RDIR/ready.out" "$HTTP_LOG" "$TLS_LOG"; do
    [ -s "$f" ] || continue
    log "last lines of $f:"
    tail -n 30 "$f" >&2
  done
  die "start-rucio.sh failed"
done
START_MS=$(( $(now_ms) - t0 ))
rm -rf "$RDIR/tmp"/* # the readiness client's token cache

# --- env file ----------------------------------------------------------------------------------
tmp_env=$(mktemp "$STATE/.rucio.env.XXXXXX")
{
  w() { env_write "$tmp_env" "$1" "$2"; }
  w RUCIO_URL "$URL"
  w RUCIO_AUTH_URL "$URL"
  w RUCIO_TLS_URL "$TLS_URL"
  w RUCIO_PORT "$PORT"
  w RUCIO_TLS_PORT "$TLS_PORT"
  w RUCIO_PID "$HTTP_PID"
  w RUCIO_TLS_PID "$TLS_PID"
  w RUCIO_VERSION 41.5.1
  w RUCIO_ACCOUNT "$ROBOT"
  w RUCIO_SCOPE "user.$ROBOT"
  w RUCIO_USERPASS_USER "$ROBOT"
  w RUCIO_PASSWORD_FILE "$RDIR/robot.password"
  w RUCIO_ROOT_ACCOUNT root
  w RUCIO_ROOT_USERPASS_USER root
  w RUCIO_ROOT_PASSWORD_FILE "$RDIR/root.password"
  w RUCIO_CA_CERT "$PKI/ca.pem"
  w RUCIO_CLIENT_CERT "$PKI/robot.pem"
  w RUCIO_CLIENT_KEY "$PKI/robot.key"
  w RUCIO_CLIENT_DN "$ROBOT_DN"
  w RUCIO_STRANGER_CERT "$PKI/stranger.pem"
  w RUCIO_STRANGER_KEY "$PKI/stranger.key"
  w RUCIO_STRANGER_DN "$STRANGER_DN"
  w RUCIO_CLIENT_CONFIG "$CLIENT_CFG"
  w RUCIO_CLIENT_CONFIG_OIDC "$CLIENT_CFG_OIDC"
  w RUCIO_CLIENT_CONFIG_X509 "$CLIENT_CFG_X509"
  w RUCIO_OIDC "$([ -n "$OIDC_ISSUER" ] && echo 1 || echo 0)"
  w RUCIO_OIDC_TRUSTED_ISSUER "$OIDC_ISSUER"
  w RUCIO_OIDC_SUBJECTS "$([ -n "$OIDC_ISSUER" ] && echo "$OIDC_SUBJECTS")"
  w RUCIO_OIDC_EXPECTED_AUDIENCE "$([ -n "$OIDC_ISSUER" ] && echo "$OIDC_AUDIENCE")"
  w RUCIO_OIDC_EXPECTED_SCOPE "$([ -n "$OIDC_ISSUER" ] && echo "$OIDC_SCOPE")"
  w RUCIO_BIN "$RUCIO_BIN"
  w RUCIO_PYTHON "$VPY"
  w RUCIO_DIR "$RDIR"
  w RUCIO_SERVER_CONFIG "$SERVER_CFG"
  w RUCIO_DB "$DB"
  w RUCIO_SERVER_LOG "$HTTP_LOG"
  w RUCIO_ACCESS_LOG "$HTTP_ACCESS"
  w RUCIO_TLS_SERVER_LOG "$TLS_LOG"
  w RUCIO_TLS_ACCESS_LOG "$TLS_ACCESS"
  w RUCIO_INSTALL_MS "$INSTALL_MS"
  w RUCIO_PKI_MS "$PKI_MS"
  w RUCIO_DB_MS "$DB_MS"
  w RUCIO_START_MS "$START_MS"
  w RUCIO_TOTAL_MS "$(( $(now_ms) - T_START ))"
}
mv -f "$tmp_env" "$ENV_FILE"
trap - EXIT HUP INT TERM PIPE
log "Rucio ready: $URL and $TLS_URL (pids $HTTP_PID, $TLS_PID; pki ${PKI_MS} ms, db ${DB_MS} ms, servers ${START_MS} ms, total $(( $(now_ms) - T_START )) ms) -> $ENV_FILE"
echo "$ENV_FILE"
