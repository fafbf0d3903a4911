#!/usr/bin/env bash
# setup-python.sh [--check] - create/refresh tests/testbed/venv with the pinned Python peers.
#
# Idempotent and non-interactive. When the venv already holds exactly the pinned versions
# (and every dependency recorded at install time) nothing else runs: the check-only path
# takes well under a second. Concurrent runs are serialised with flock.
#
# --check  only check; exit 0 when the venv is complete, 1 otherwise (never installs).
# Prints the venv's python on stdout when the venv is ready; logs go to stderr.
#
# pip's cache lives in tests/testbed/.cache/pip, the venv in tests/testbed/venv (both ignored).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# Top-level pins: one requirement per line. Add further peers here.
PY_PINS=(
  scitokens==1.9.7
  htgettoken==2.2        # Vault token client (Kerberos/OIDC login, bearer token from a secret)
  igwn-robot-auth==0.3.3 # igwn-robot-get: keytab kinit + htgettoken for a robot principal
  gssapi==1.12.0         # python-gssapi (no wheel for this platform: compiled against MIT krb5)
)
# Versions of the dependencies the pins pull in (pip constraints: they only pin what is
# installed anyway, they install nothing by themselves). Keeps reruns reproducible.
PY_CONSTRAINTS=(
  # scitokens 1.9.7
  cryptography==50.0.2
  cffi==2.1.1
  pycparser==3.12
  PyJWT==2.15.1
  requests==2.34.2
  certifi==2026.10.19.post1
  charset-normalizer==3.5.2
  idna==3.20
  urllib3==2.8.0
  # htgettoken 2.2 (also needs gssapi, urllib3)
  paramiko==5.1.0
  bcrypt==5.0.0
  invoke==3.0.3
  PyNaCl==1.6.2
  # gssapi 1.12.0
  decorator==5.3.1
  # igwn-robot-auth 0.3.3 (igwn-auth-utils[gettoken,kerberos]: also htgettoken, gssapi, scitokens)
  igwn-auth-utils==1.4.0
  safe-netrc==1.0.1
)

VENV=$TESTBED_DIR/venv
VPY=$VENV/bin/python
STAMP=$VENV/.testbed-pins
CACHE=$TESTBED_DIR/.cache
LOCK=$CACHE/python-setup.lock

CHECK_ONLY=0
case ${1:-} in
  --check) CHECK_ONLY=1 ;;
  "") ;;
  *) die "usage: $0 [--check]" ;;
esac

# The stamp: see venv_stamp_ok in lib.sh.
pin_key() { printf '%s ' "${PY_PINS[@]}" "--" "${PY_CONSTRAINTS[@]}"; }

venv_ok() { venv_stamp_ok "$VPY" "$STAMP" "$(pin_key)"; }

setup_once venv_ok "$LOCK" "$CHECK_ONLY"

t0=$(now_ms)
venv_prepare "$VENV" "$STAMP"

# gssapi is built from its sdist: it needs krb5-config (libkrb5-dev), a C compiler and the
# interpreter's headers (python3-dev, for a Debian python3 without them).
apt_install libkrb5-dev gcc
if ! "$BASE_PY" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  apt_install python3-dev
fi

constraints=$(mktemp "$CACHE/python-constraints.XXXXXX")
trap 'rm -f "$constraints"' EXIT
printf '%s\n' "${PY_CONSTRAINTS[@]}" >"$constraints"
log "pip install ${PY_PINS[*]}"
PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$VPY" -m pip install -q \
  --cache-dir "$CACHE/pip" -c "$constraints" "${PY_PINS[@]}" >&2

# The command-line peers must run (entry points, imports of gssapi/paramiko, ...).
"$VENV/bin/htgettoken" --version >/dev/null 2>&1 || die "venv/bin/htgettoken --version failed"
"$VENV/bin/igwn-robot-get" --help >/dev/null 2>&1 || die "venv/bin/igwn-robot-get --help failed"

venv_stamp_write "$VPY" "$STAMP" "$(pin_key)"
venv_ok || die "venv incomplete after install (see $STAMP)"
log "venv ready in $(( $(now_ms) - t0 )) ms: $(sed -n '2,$p' "$STAMP" | tr '\n' ' ')"
echo "$VPY"
