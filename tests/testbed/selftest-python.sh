#!/usr/bin/env bash
# selftest-python.sh - prove the Python peer works: set up the venv (setup-python.sh), start the
# test OP with OP_TOKEN_VER=scitoken:2.0 (once RS256, once ES256) in a fresh state dir, get a
# client_credentials token and check that verify_scitoken.py (scitokens 1.9.7) accepts it and
# rejects a wrong audience, an authorization the token lacks, a wrong issuer and a tampered token.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

T0=$(now_ms)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/selftest-python.XXXXXX")
ALGS=(RS256 ES256)
cleanup() {
  local alg
  for alg in "${ALGS[@]}"; do
    "$TESTBED_DIR/stop-op.sh" "$STATE/$alg" 2>/dev/null || true
  done
  rm -rf "$STATE"
}
trap cleanup EXIT

VERIFY=$TESTBED_DIR/verify_scitoken.py
SCOPE='storage.read:/ storage.create:/data'

load_env() {
  set -a
  # shellcheck disable=SC1090
  . "$1"
  set +a
}

# vs WANT_RC NAME STDERR_PATTERN VERIFY-ARGS...: run verify_scitoken.py; pass when it exits
# WANT_RC and, for failures, says exactly one line on stderr containing STDERR_PATTERN.
# Leaves stdout in OUT and stderr in ERR.
vs() {
  local want=$1 name=$2 pat=$3 rc=0 lines
  shift 3
  "$PY" "$VERIFY" "$@" >"$STATE/out" 2>"$STATE/err" </dev/null || rc=$?
  OUT=$(cat "$STATE/out")
  ERR=$(cat "$STATE/err")
  lines=$(grep -c '' "$STATE/err" || true)
  if [ "$rc" != "$want" ]; then
    fail "$name" "exit $rc, want $want; stderr: $ERR"
  elif [ "$want" != 0 ] && { [ "$lines" != 1 ] || ! grep -qF -- "$pat" <<<"$ERR"; }; then
    fail "$name" "want one stderr line with '$pat', got $lines: $ERR"
  else
    pass "$name${ERR:+ ($ERR)}"
  fi
}

# tamper TOKEN: same header and signature, payload with the scope widened to storage.create:/
tamper() {
  "$TESTBED_PYTHON" -c 'import base64, json, sys
h, p, s = sys.argv[1].split(".")
d = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
d["scope"] = "storage.read:/ storage.create:/"
p = base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=").decode()
print(".".join([h, p, s]))' "$1"
}

# ---------------------------------------------------------------------------------------------
echo "== setup-python.sh"
t0=$(now_ms)
if PY=$("$TESTBED_DIR/setup-python.sh"); then
  pass "setup-python.sh ($(( $(now_ms) - t0 )) ms)"
else
  fail "setup-python.sh"
  summary
  exit 1
fi
check_eq "scitokens version in the venv" 1.9.7 \
  "$("$PY" -c 'import scitokens; print(scitokens.__version__)' 2>&1)"
t0=$(now_ms)
"$TESTBED_DIR/setup-python.sh" --check >/dev/null && ms=$(( $(now_ms) - t0 )) || ms=-1
check "setup-python.sh --check: venv complete, under 1 s ($ms ms)" test "$ms" -ge 0 -a "$ms" -lt 1000

for alg in "${ALGS[@]}"; do
  echo "== $alg: OP with OP_TOKEN_VER=scitoken:2.0"
  S=$STATE/$alg
  if OP_TOKEN_VER=scitoken:2.0 OP_JWT_ALG=$alg "$TESTBED_DIR/start-op.sh" "$S"; then
    pass "start-op.sh ($alg)"
  else
    fail "start-op.sh ($alg)"
    continue
  fi
  load_env "$S/op.env"
  RESP=$(curl -sS --max-time 10 -u "$OP_ROBOT_CLIENT_ID:$OP_ROBOT_CLIENT_SECRET" \
    -d grant_type=client_credentials --data-urlencode "scope=$SCOPE" \
    --data-urlencode "resource=$OP_API_RESOURCE" "$OP_TOKEN_ENDPOINT" || true)
  AT=$(json_get access_token <<<"$RESP" || true)
  if [ -z "$AT" ]; then
    fail "client_credentials token ($alg)" "$RESP"
    "$TESTBED_DIR/stop-op.sh" "$S" || true
    continue
  fi
  check_eq "token: alg, ver, aud, scope" \
    "$alg scitoken:2.0 $OP_API_RESOURCE $SCOPE" \
    "$(jwt_header "$AT" | json_get alg) $(jwt_payload "$AT" | json_get ver) $(jwt_payload "$AT" | json_get aud) $(jwt_payload "$AT" | json_get scope)"

  echo "-- valid"
  vs 0 "$alg: read /any/path" "" --insecure --audience "$OP_API_RESOURCE" \
    --authz read --path /any/path "$AT" "$OP_ISSUER"
  check_eq "$alg: claims JSON on stdout (iss, sub, ver)" \
    "$OP_ISSUER $OP_ROBOT_CLIENT_ID scitoken:2.0" \
    "$(json_get iss <<<"$OUT") $(json_get sub <<<"$OUT") $(json_get ver <<<"$OUT")"
  vs 0 "$alg: write /data/new (storage.create:/data)" "" --insecure --audience "$OP_API_RESOURCE" \
    --authz write --path /data/new "$AT" "$OP_ISSUER"
  vs 0 "$alg: literal WLCG authz storage.read" "" --insecure --audience "$OP_API_RESOURCE" \
    --authz storage.read --path /x "$AT" "$OP_ISSUER"
  printf '%s\n' "$AT" >"$S/token"
  vs 0 "$alg: token from @file, signature + iss only" "" --insecure "@$S/token" "$OP_ISSUER"
  if "$PY" "$VERIFY" --insecure - "$OP_ISSUER" <"$S/token" >/dev/null 2>&1; then
    pass "$alg: token from stdin (-)"
  else
    fail "$alg: token from stdin (-)"
  fi

  echo "-- invalid"
  vs 1 "$alg: wrong audience" "audience mismatch" --insecure --audience https://other.test.example \
    --authz read --path /any/path "$AT" "$OP_ISSUER"
  vs 1 "$alg: write /other not granted" "not authorized" --insecure --audience "$OP_API_RESOURCE" \
    --authz write --path /other "$AT" "$OP_ISSUER"
  vs 1 "$alg: path traversal out of /data" "not authorized" --insecure --audience "$OP_API_RESOURCE" \
    --authz write --path /data/../etc "$AT" "$OP_ISSUER"
  vs 1 "$alg: wrong issuer" "issuer mismatch" --insecure --audience "$OP_API_RESOURCE" \
    --authz read --path /any/path "$AT" "http://127.0.0.1:1"
  vs 1 "$alg: tampered payload (scope widened)" "Signature verification failed" --insecure \
    --audience "$OP_API_RESOURCE" --authz write --path /other "$(tamper "$AT")" "$OP_ISSUER"
  vs 1 "$alg: http issuer without --insecure" "HTTPS" --audience "$OP_API_RESOURCE" "$AT" "$OP_ISSUER"
  # the 300 s negative key cache: a failed fetch poisons that cache dir for later calls
  "$PY" "$VERIFY" --cache-dir "$S/sci-cache" "$AT" "$OP_ISSUER" >/dev/null 2>&1 || true
  vs 1 "$alg: --insecure after a failed fetch in the same --cache-dir" "negative cache" \
    --insecure --cache-dir "$S/sci-cache" "$AT" "$OP_ISSUER"
  vs 0 "$alg: a fresh --cache-dir works again" "" --insecure --cache-dir "$S/sci-cache2" \
    --audience "$OP_API_RESOURCE" --authz read --path / "$AT" "$OP_ISSUER"

  "$TESTBED_DIR/stop-op.sh" "$S" || true
done

echo "== $(( $(now_ms) - T0 )) ms"
summary
