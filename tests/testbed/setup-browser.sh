#!/usr/bin/env bash
# setup-browser.sh - install what browser/web-login.mjs needs: Debian's chromium (the browser;
# playwright cannot download its own builds here) and playwright-core from
# browser/package-lock.json (npm ci, only when browser/node_modules is missing or older than
# the lock file).
#
# Idempotent and non-interactive; fast (~0.1 s) when everything is in place. Concurrent runs
# are serialised with flock. Prints the chromium executable on stdout; logs go to stderr.
# npm's cache lives in tests/testbed/.cache/npm (shared with start-op.sh).
#
# Inputs (environment, optional): TESTBED_CHROMIUM  chromium executable (default
# /usr/bin/chromium; when set to another path, no apt install is attempted).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 0 ] || die "usage: $0"

BROWSER_DIR=$TESTBED_DIR/browser
CACHE=$TESTBED_DIR/.cache
CHROMIUM=${TESTBED_CHROMIUM:-/usr/bin/chromium}
mkdir -p "$CACHE"

(
  flock -w 600 8 || die "timed out waiting for the browser setup lock"

  # --- chromium (Debian) + a font so pages and screenshots render text ----------------------
  if [ "$CHROMIUM" = /usr/bin/chromium ]; then
    apt_install chromium fonts-dejavu-core
  fi
  [ -x "$CHROMIUM" ] || die "no chromium executable at $CHROMIUM"

  # --- node + playwright-core ---------------------------------------------------------------
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
  fi
  # same lock as start-op.sh: both use the npm cache in $CACHE/npm
  (
    flock -w 300 9 || die "timed out waiting for the npm install lock"
    stamp=$BROWSER_DIR/node_modules/.package-lock.json
    if [ ! -f "$BROWSER_DIR/node_modules/playwright-core/package.json" ] || [ ! -f "$stamp" ] \
       || [ "$BROWSER_DIR/package-lock.json" -nt "$stamp" ]; then
      log "npm ci in $BROWSER_DIR"
      (cd "$BROWSER_DIR" && npm ci --cache "$CACHE/npm" --prefer-offline --no-audit --no-fund \
        --loglevel=error >&2)
    fi
  ) 9>"$CACHE/npm-install.lock"
) 8>"$CACHE/browser-setup.lock"

printf '%s\n' "$CHROMIUM"
