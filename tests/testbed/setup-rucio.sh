#!/usr/bin/env bash
# setup-rucio.sh [--check] - create/refresh tests/testbed/venv-rucio: the Rucio server package
# from PyPI (rucio==41.5.1, which also holds the client and the `rucio` command) and gunicorn
# to serve its Flask REST app (start-rucio.sh).
#
# Idempotent and non-interactive; concurrent runs are serialised with flock. When the venv holds
# exactly the pinned versions (every distribution recorded at install time) nothing else runs:
# the check-only path takes well under a second.
#
# --check  only check; exit 0 when the venv is complete, 1 otherwise (never installs).
# Prints the venv's python on stdout when the venv is ready; logs go to stderr.
#
# Only wheels: nothing is compiled and no Debian package is needed (SQLite is Python's own).
# The venv is separate from tests/testbed/venv: rucio pins urllib3<2 and its own requests, which
# would clash with the SciTokens/htgettoken peers there. Never install `rucio-clients` next to
# `rucio`: both ship the same `rucio/` package paths.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

RUCIO_PINS=(
  rucio==41.5.1   # "Rucio server package": server, daemons' libraries, client and CLI
  gunicorn==27.0.1 # WSGI server for rucio.web.rest.flaskapi.v1.main:application (plain and TLS)
)
# Versions of everything the pins pull in (pip constraints: they only pin what is installed
# anyway, they install nothing by themselves). Keeps reruns reproducible.
RUCIO_CONSTRAINTS=(
  aiohappyeyeballs==2.7.1
  aiohttp==3.14.5
  aiosignal==1.4.0
  alembic==1.16.5
  annotated-types==0.8.0
  argcomplete==3.7.0
  attrs==26.1.0
  bcrypt==5.0.0
  blinker==1.9.0
  boto==2.49.0
  boto3==1.42.97
  botocore==1.42.97
  certifi==2026.10.19.post1
  cffi==2.1.1
  charset-normalizer==3.5.3
  click==8.5.1
  cryptography==50.0.2
  decorator==5.3.1
  defusedxml==0.7.1
  dogpile.cache==1.2.2
  Flask==3.1.3
  frozenlist==1.8.0
  future==1.0.0
  geoip2==5.1.0
  google-auth==2.50.0
  greenlet==3.5.6
  idna==3.20
  invoke==3.0.3
  itsdangerous==2.2.0
  Jinja2==3.1.6
  jmespath==1.1.0
  jsonschema==4.25.1
  jsonschema-specifications==2025.9.1
  Mako==1.4.3
  markdown-it-py==4.3.0
  MarkupSafe==3.0.4
  maxminddb==2.8.2
  mdurl==0.1.2
  multidict==7.2.1
  oic==1.7.0
  packaging==26.2
  paramiko==5.0.0
  prometheus_client==0.25.0
  propcache==0.5.4
  pyasn1==0.6.5
  pyasn1_modules==0.4.2
  pycparser==3.12
  pycryptodomex==3.24.2
  pydantic==2.14.4
  pydantic-settings==2.16.3
  pydantic_core==2.50.5
  Pygments==2.21.0
  pyjwkest==1.4.4
  pymemcache==4.0.0
  PyNaCl==1.6.2
  python-dateutil==2.9.0.post0
  python-dotenv==1.2.4
  python-magic==0.4.27
  redis==7.0.1
  referencing==0.37.0
  requests==2.32.5
  rich==15.0.0
  rpds-py==2026.9.1
  s3transfer==0.16.1
  six==1.17.0
  SQLAlchemy==2.0.51
  statsd==4.0.1
  stevedore==5.10.0
  stomp.py==4.1.15
  tabulate==0.9.0
  typing-inspection==0.4.5
  typing_extensions==4.16.0
  urllib3==1.26.19
  Werkzeug==3.1.9
  yarl==1.25.1
)

VENV=$TESTBED_DIR/venv-rucio
VPY=$VENV/bin/python
STAMP=$VENV/.testbed-pins
CACHE=$TESTBED_DIR/.cache
LOCK=$CACHE/rucio-setup.lock

CHECK_ONLY=0
case ${1:-} in
  --check) CHECK_ONLY=1 ;;
  "") ;;
  *) die "usage: $0 [--check]" ;;
esac

# The stamp: see venv_stamp_ok in lib.sh.
pin_key() { printf '%s ' "${RUCIO_PINS[@]}" "--" "${RUCIO_CONSTRAINTS[@]}"; }

venv_ok() {
  [ -x "$VENV/bin/rucio" ] && [ -x "$VENV/bin/gunicorn" ] && venv_stamp_ok "$VPY" "$STAMP" "$(pin_key)"
}

setup_once venv_ok "$LOCK" "$CHECK_ONLY"

t0=$(now_ms)
venv_prepare "$VENV" "$STAMP"
"$BASE_PY" -c 'import sqlite3' 2>/dev/null || die "$BASE_PY has no sqlite3 module (the server's database)"

constraints=$(mktemp "$CACHE/rucio-constraints.XXXXXX")
trap 'rm -f "$constraints"' EXIT
printf '%s\n' "${RUCIO_CONSTRAINTS[@]}" | sed 's/[[:space:]]*#.*//; /^$/d' >"$constraints"
log "pip install ${RUCIO_PINS[*]}"
PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$VPY" -m pip install -q --only-binary=:all: \
  --cache-dir "$CACHE/pip" -c "$constraints" "${RUCIO_PINS[@]}" >&2

# The server app and the client must be there, and the commands must run. (Importing the app
# needs a server rucio.cfg; start-rucio.sh does that.)
"$VPY" -I -c 'import importlib.util as u, sys
mods = ("rucio.web.rest.flaskapi.v1.main", "rucio.client", "rucio.db.sqla.util", "flask", "oic", "jwkest")
sys.exit(any(u.find_spec(m) is None for m in mods))' >&2 \
  || die "venv-rucio: rucio server modules missing"
[ "$("$VENV/bin/rucio" --version 2>&1)" = "rucio 41.5.1" ] || die "venv-rucio/bin/rucio --version is not 'rucio 41.5.1'"
"$VENV/bin/gunicorn" --version >/dev/null 2>&1 || die "venv-rucio/bin/gunicorn --version failed"

venv_stamp_write "$VPY" "$STAMP" "$(pin_key)"
venv_ok || die "venv-rucio incomplete after install (see $STAMP)"
log "venv-rucio ready in $(( $(now_ms) - t0 )) ms: $(sed -n '2,$p' "$STAMP" | tr '\n' ' ')"
echo "$VPY"
