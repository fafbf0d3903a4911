#!/usr/bin/env bash
# bench/attacks.sh - what an unauthenticated peer does to `credkeeper serve`, measured
# (issue 17's Proof: fds and RSS under each attack, real requests' latency during it).
#
# Each attack gets a fresh release broker, started under `ulimit -n 1024` (soft and hard:
# the issue's reproduction; systemd's default is soft 1024 with a higher hard limit, which
# the broker raises itself to; one extra slowloris row runs that way). Every broker is
# `credkeeper serve --dev` (the robot `dev`, its secret file from the `get` line the broker
# prints, which is run once as a check); the Vault ones add a --config with the robot `dev`,
# `[vault] issuers = { igwn = "op" }` and a provider `op` at the test OpenID Provider
# (tests/testbed/start-op.sh, client device-client), [vault] limits left at their defaults.
#
# The real client ("probe", a small Python client, a new TCP connection per request as
# `credkeeper get` or curl make, 30 s timeout) round-robins its kinds:
#   vend     POST /api/v1/token, Basic dev:<secret>, {"provider":"local","scopes":"read:/data",
#            "minsecs":60}: a cached token after the first
#   healthz  GET /healthz
#   login    (auth_url attack) POST /api/v1/logins {"provider":"op"}: a robot's device login
#   user     (auth_url attack) POST /v1/auth/oidc-igwn/oidc/auth_url: a user's first login
# before each attack (200 of each kind), during it (as many as fit), and after it (200 each).
# A sampler reads the broker's fds (/proc/PID/fd) and VmRSS every 0.2 s; VmHWM at the end.
#
# Attacks:
#   slowloris  1,100 connections that each send half a request line ("GET /healthz HT") and
#              hold it; a connection the broker closes is opened again at once; 30 s.
#   auth_url   unauthenticated POST /v1/auth/oidc-igwn/oidc/auth_url, each with a new
#              client_nonce, at full speed (wrk, 16 connections) for 25 s; the OP's log says
#              how many device-authorization requests reached it.
#   labels     200,000 unauthenticated POST /api/v1/token, each with a new Basic user name
#              (wrk, 16 connections); /metrics size and RSS before and after.
#   garbage    100,000 malformed requests (8 Python processes, a new connection each): random
#              bytes, broken request lines and headers, bad Content-Length/chunking, and
#              mutated real requests (bodies, auth headers, bytes) to every API of a broker
#              with [vault]; answers counted by status class, every 5xx kept.
#
# No arguments. Knobs (environment): ATTACK_SLOW_CONNS (1100) ATTACK_SLOW_SECS (30)
#   ATTACK_FLOOD_SECS (25) ATTACK_LABELS (200000) ATTACK_GARBAGE (100000) ATTACK_PROBES (200)
#   ATTACK_NO_BUILD=1 (use target/release/credkeeper as it is) ATTACK_KEEP=1 (keep the work
#   directory) ATTACK_OUT (bench/attacks-results.md; "-" for none).
# Output: the table on stdout and in ATTACK_OUT with the command, date and machine; progress
# on stderr. Exit status 0 = measured; 1 = a step failed (named; the work directory is kept).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
TESTBED=$ROOT/tests/testbed
# shellcheck source=../tests/testbed/lib.sh
. "$TESTBED/lib.sh"
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

SLOW_CONNS=${ATTACK_SLOW_CONNS:-1100}
SLOW_SECS=${ATTACK_SLOW_SECS:-30}
FLOOD_SECS=${ATTACK_FLOOD_SECS:-25}
LABELS=${ATTACK_LABELS:-200000}
GARBAGE=${ATTACK_GARBAGE:-100000}
PROBES=${ATTACK_PROBES:-200}
OUT=${ATTACK_OUT:-$BENCH_DIR/attacks-results.md}
BROKER_NOFILE=1024
PY=$TESTBED_PYTHON

# shellcheck disable=SC2034 # TB_STEP: named by lib.sh's ERR trap
step() { TB_STEP=$1; log "== $1 =="; }
die() { log "error${TB_STEP:+ in step \"$TB_STEP\"}: $*"; exit 1; }

# --- tools and build -------------------------------------------------------------------------
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
step "tools and build"
apt_install wrk curl
for t in wrk curl; do command -v "$t" >/dev/null || die "$t not found after installing"; done
CK=$ROOT/target/release/credkeeper
if [ "${ATTACK_NO_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p credkeeper"
  (cd "$ROOT" && cargo build --release -p credkeeper >&2)
fi
[ -x "$CK" ] || die "$CK missing (build it, or unset ATTACK_NO_BUILD)"

# The attackers and the probe need more descriptors than the broker is given.
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -Sn)" -ge $((SLOW_CONNS + 200)) ] ||
  die "open-file limit $(ulimit -Sn) is too low for $SLOW_CONNS attacking connections"
HARD_NOFILE=$(ulimit -Hn)

# --- work directory and cleanup --------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/credkeeper-attacks.XXXXXX")
BROKER_PIDS=()
BG_PIDS=()
OP_STATE=
OK=0
cleanup() {
  local pid
  for pid in "${BG_PIDS[@]}"; do
    if pid_alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "${BROKER_PIDS[@]}"; do stop_pid "$pid" "$CK" || true; done
  if [ -n "$OP_STATE" ]; then "$TESTBED/stop-op.sh" "$OP_STATE" >/dev/null 2>&1 || true; fi
  if [ "$OK" = 1 ] && [ "${ATTACK_KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
  else
    log "work directory kept: $WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the clients -----------------------------------------------------------------------------
cat >"$WORK/attack.py" <<'PY'
"""Clients for bench/attacks.sh: probe (a real client), slowloris, garbage."""
import base64, json, os, random, selectors, socket, sys, time
from multiprocessing import Pool


def http_once(host, port, raw, timeout):
    """Send one raw request on a new connection; (status or None, error or None)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        s.sendall(raw)
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return None, "closed" if not buf else "short"
            buf += chunk
        line = buf.split(b"\r\n", 1)[0]
        if not line.startswith(b"HTTP/"):
            return None, "not-http"
        status = int(line.split()[1])
        # read the rest of a small answer (its body tells a 5xx apart)
        head, _, body = buf.partition(b"\r\n\r\n")
        want = None
        for h in head.split(b"\r\n")[1:]:
            k, _, v = h.partition(b":")
            if k.strip().lower() == b"content-length":
                want = int(v.strip())
        if want is not None and want <= 65536:
            while len(body) < want:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        return status, body[:300]
    except socket.timeout:
        return None, "timeout"
    except ConnectionResetError:
        return None, "reset"
    except OSError as e:
        return None, "oserror-%s" % (e.errno,)
    finally:
        s.close()


def build(method, path, headers, body):
    h = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    for k, v in headers.items():
        h.append("%s: %s" % (k, v))
    body = body.encode() if isinstance(body, str) else body
    if body or method == "POST":
        h.append("Content-Length: %d" % len(body))
    h.append("Connection: close")
    return ("\r\n".join(h) + "\r\n\r\n").encode() + body


def pct(sorted_ms, p):
    if not sorted_ms:
        return float("nan")
    k = max(0, min(len(sorted_ms) - 1, int(round(p / 100.0 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def probe(args):
    """probe HOST PORT KINDS_JSON OUT (COUNT | --until FILE): round-robin the kinds."""
    host, port, kinds_file, out = args[0], int(args[1]), args[2], args[3]
    kinds = json.load(open(kinds_file))
    count, until = None, None
    if args[4] == "--until":
        until = args[5]
    else:
        count = int(args[4])
    res = {k["name"]: {"ms": [], "codes": {}, "errors": {}} for k in kinds}
    i = 0
    while True:
        if count is not None and i >= count * len(kinds):
            break
        if until is not None and os.path.exists(until):
            break
        k = kinds[i % len(kinds)]
        body = k.get("body", "").replace("{i}", str(i))
        raw = build(k["method"], k["path"], k.get("headers", {}), body)
        t0 = time.perf_counter()
        status, err = http_once(host, port, raw, 30)
        ms = (time.perf_counter() - t0) * 1000
        r = res[k["name"]]
        r["ms"].append(ms)
        if status is None:
            r["errors"][err] = r["errors"].get(err, 0) + 1
        else:
            r["codes"][str(status)] = r["codes"].get(str(status), 0) + 1
        i += 1
        if k.get("pause"):
            time.sleep(k["pause"])
    with open(out, "w") as f:
        for name, r in res.items():
            ms = sorted(r["ms"])
            ok = sum(v for c, v in r["codes"].items() if c.startswith("2"))
            codes = ",".join("%s:%d" % kv for kv in sorted(r["codes"].items())) or "-"
            errors = ",".join("%s:%d" % kv for kv in sorted(r["errors"].items())) or "-"
            f.write("%s n=%d ok=%d fail=%d p50=%.2f p99=%.2f max=%.2f codes=%s errors=%s\n" % (
                name, len(ms), ok, len(ms) - ok, pct(ms, 50), pct(ms, 99),
                ms[-1] if ms else float("nan"), codes, errors))


def slowloris(args):
    """slowloris HOST PORT CONNS SECS OUT: hold CONNS half-sent request lines for SECS."""
    host, port, conns, secs, out = args[0], int(args[1]), int(args[2]), float(args[3]), args[4]
    sel = selectors.DefaultSelector()
    payload = b"GET /healthz HT"
    st = {"opened": 0, "held": 0, "closed_by_server": 0, "connect_failed": 0, "answered": 0}
    timeline = []

    def open_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        st["opened"] += 1
        sel.register(s, selectors.EVENT_WRITE, "connecting")

    def drop(s, held):
        sel.unregister(s)
        s.close()
        if held:
            st["held"] -= 1

    for _ in range(conns):
        open_one()
    start = time.monotonic()
    end = start + secs
    next_tick = start + 1
    max_held = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for key, _ in sel.select(timeout=min(0.2, end - now)):
            s = key.fileobj
            if key.data == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    st["connect_failed"] += 1
                    drop(s, False)
                    open_one()
                    continue
                try:
                    s.send(payload)
                except OSError:
                    st["connect_failed"] += 1
                    drop(s, False)
                    open_one()
                    continue
                sel.modify(s, selectors.EVENT_READ, "held")
                st["held"] += 1
            else:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data:
                    st["answered"] += 1
                    continue
                st["closed_by_server"] += 1
                drop(s, True)
                open_one()
        max_held = max(max_held, st["held"])
        if time.monotonic() >= next_tick:
            timeline.append(st["held"])
            next_tick += 1
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    st["max_held"] = max_held
    st["held_per_second"] = timeline
    json.dump(st, open(out, "w"))


# --- garbage ---------------------------------------------------------------------------------
def templates(auth):
    b = "Basic " + auth
    j = {"Content-Type": "application/json"}
    f = {"Content-Type": "application/x-www-form-urlencoded"}
    return [
        ("GET", "/healthz", {}, ""),
        ("GET", "/readyz", {}, ""),
        ("GET", "/metrics", {}, ""),
        ("GET", "/jwks", {}, ""),
        ("GET", "/.well-known/openid-configuration", {}, ""),
        ("POST", "/api/v1/token", dict(j, Authorization=b),
         '{"provider":"local","scopes":"read:/data","audience":"https://x","minsecs":60,"lifetime":600}'),
        ("POST", "/api/v1/token", dict(j, Authorization="Basic c3RyYW5nZXI6eA=="), '{"scopes":"read:/"}'),
        ("POST", "/api/v1/token", dict(j, Authorization="Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"), "{}"),
        ("POST", "/api/v1/token", dict(j, Authorization="Negotiate YIIBhgYGKwYBBQUCoIIBejCCAXag"), "{}"),
        ("POST", "/api/v1/logins", dict(j, Authorization=b), '{"provider":"local"}'),
        ("POST", "/api/v1/logins/abcdef", dict(j, Authorization=b), ""),
        ("GET", "/registry/token?service=registry.example&scope=repository:r1/x:pull&scope=repository:r2:push",
         {"Authorization": b}, ""),
        ("POST", "/registry/token", f,
         "grant_type=password&username=dev&password=x&service=s&scope=repository:a/b:pull&scope=repository:c:push"),
        ("POST", "/v1/auth/oidc-igwn/oidc/auth_url", j,
         '{"role":"default","client_nonce":"abc","redirect_uri":"http://localhost:8250/oidc/callback"}'),
        ("POST", "/v1/auth/oidc-igwn/oidc/poll", j, '{"state":"st","client_nonce":"abc"}'),
        ("POST", "/v1/auth/kerberos-igwn_default/login", {"Authorization": "Negotiate YIIBhgYGKwYBBQUC"}, ""),
        ("POST", "/v1/auth/token/create", dict(j, **{"X-Vault-Token": "hvs.CAESIgarbage"}), '{"ttl":"1h"}'),
        ("GET", "/v1/auth/token/lookup-self", {"X-Vault-Token": "hvs.CAESIgarbage"}, ""),
        ("GET", "/v1/secret/oauth/creds/igwn/dev:default?minimum_seconds=60", {"X-Vault-Token": "hvs.x"}, ""),
        ("GET", "/v1/secret/oauth/sts/igwn/dev:default?scopes=read:/&audiences=x", {"X-Vault-Token": "hvs.x"}, ""),
    ]


JUNK_VALUES = ['', '"', '\\', '{', '}', '[', ']', 'null', 'true', '-1', '1e999', '99999999999999999999999',
               '"\\ud800"', '"\u202e"', '"%00"', '"' + 'A' * 5000 + '"', '[' * 500 + ']' * 500,
               '{"a":' * 300 + '1' + '}' * 300, '"../../etc/passwd"', '"\x00"', '{"scopes":null}']


def mutate_body(r, body):
    k = r.random()
    if not body or k < 0.25:
        return r.choice(JUNK_VALUES)
    if k < 0.5 and body.startswith("{"):
        try:
            obj = json.loads(body)
            key = r.choice(list(obj.keys()) + ["extra", "scopes", "provider"])
            obj[key] = json.loads(r.choice(['null', '1', '-5', '[]', '{}', '"x"', '1.5', 'true', '"' + 'a' * 3000 + '"']))
            if r.random() < 0.3:
                return json.dumps(obj) + json.dumps(obj)
            return json.dumps(obj)
        except ValueError:
            pass
    if k < 0.6 and "=" in body:
        parts = body.split("&")
        parts.append(r.choice(["scope=", "scope=repository:", "scope=repository:a/../b:pull", "grant_type=",
                               "%zz=%zz", "=", "&&&", "scope=" + "a" * 5000, "username=%00"]))
        r.shuffle(parts)
        return "&".join(parts)
    b = bytearray(body.encode("utf-8", "surrogatepass"))
    for _ in range(r.randint(1, 8)):
        if not b:
            break
        op, pos = r.random(), r.randrange(len(b))
        if op < 0.4:
            b[pos] = r.randrange(256)
        elif op < 0.7:
            del b[pos]
        else:
            b[pos:pos] = bytes([r.randrange(256)])
    return bytes(b)


def mutate_auth(r, headers):
    h = dict(headers)
    h["Authorization"] = r.choice([
        "Basic", "Basic ", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
        "Basic " + base64.b64encode(bytes(r.randrange(256) for _ in range(40))).decode(),
        "Basic " + base64.b64encode(b"dev:" + b"x" * 10000).decode(),
        "Bearer ", "Bearer a.b.c", "Bearer " + ".".join(base64.urlsafe_b64encode(
            bytes(r.randrange(256) for _ in range(r.randrange(1, 60)))).decode().rstrip("=") for _ in range(3)),
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJkZXYiLCJpc3MiOiJ4In0.",
        "Negotiate ", "Negotiate " + base64.b64encode(bytes(r.randrange(256) for _ in range(r.randrange(1, 300)))).decode(),
        "Digest x", "basic ZGV2Ong=", "Basic ZGV2Ong= extra",
    ])
    return h


def garbage_one(r, tpl):
    k = r.random()
    if k < 0.12:  # random bytes, terminated as a head
        return bytes(r.randrange(256) for _ in range(r.randrange(1, 400))) + b"\r\n\r\n"
    if k < 0.27:  # broken request line
        method = r.choice(["GET", "POST", "G\x00T", "", "PRI", "get", "CONNECT", "A" * 300, "DELETE", "TRACE"])
        path = r.choice(["/", "*", "", "/%", "/%zz/../..", "//" + "a" * 9000, "http://x/healthz",
                         "/api/v1/token?" + "a=&" * 2000, "/\x7f\x01", "/v1/secret/oauth/creds/%2e%2e/x:y",
                         "/healthz#frag", "/api/v1/logins/" + "%ff" * 100])
        ver = r.choice(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1x", "", "http/1.1", "HTTP/"])
        sep = r.choice([" ", "  ", "\t", " "])
        return ("%s%s%s%s%s\r\nHost: x\r\n\r\n" % (method, sep, path, sep, ver)).encode("latin-1", "replace")
    if k < 0.42:  # broken headers
        line = "POST /api/v1/token HTTP/1.1\r\nHost: x\r\n"
        body = b'{"scopes":"read:/"}'
        bad = r.choice([
            "Content-Length: -1\r\n", "Content-Length: abc\r\n", "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 99999999999999999999999\r\n", "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "no colon here\r\n", "Bad Name: x\r\n", ": empty name\r\n", "X-Fold: a\r\n b\r\n",
            "X-Big: " + "b" * 70000 + "\r\n", "".join("X-%d: y\r\n" % i for i in range(300)),
            "Authorization: Basic \xff\xfe\r\n", "Host: a\r\nHost: b\r\n", "Content-Type: application/json; charset=\x00\r\n",
            "Expect: 100-continue\r\n", "Connection: upgrade\r\nUpgrade: h2c\r\n",
        ])
        if "chunked" in bad:
            return (line + bad + "\r\n").encode("latin-1") + r.choice([b"zz\r\nabc\r\n0\r\n\r\n", b"-1\r\n\r\n",
                                                                          b"3\r\nabcdef\r\n0\r\n\r\n", b"0\r\n\r\n"])
        if "Content-Length" in bad:
            return (line + bad + "\r\n").encode("latin-1") + body
        return (line + bad + "Content-Length: %d\r\n\r\n" % len(body)).encode("latin-1") + body
    method, path, headers, body = tpl
    if k < 0.70:  # a real request with a malformed body
        return build(method if method == "POST" else r.choice([method, "POST"]), path, headers, mutate_body(r, body))
    if k < 0.85:  # a real request with malformed credentials
        return build(method, path, mutate_auth(r, headers), body)
    raw = bytearray(build(method, path, headers, body))  # bytes of a real head mutated
    head_len = raw.index(b"\r\n\r\n")
    for _ in range(r.randint(1, 6)):
        pos, op = r.randrange(head_len), r.random()
        if op < 0.5:
            raw[pos] = r.randrange(256)
        elif op < 0.75:
            raw[pos:pos] = bytes([r.randrange(256)])
            head_len += 1
        elif head_len > 2:
            del raw[pos]
            head_len -= 1
    raw = bytes(raw)
    if b"\r\n\r\n" not in raw:
        raw += b"\r\n\r\n"
    return raw


def garbage_worker(a):
    host, port, n, seed, auth = a
    r = random.Random(seed)
    tpls = templates(auth)
    classes, fives, errs, stuck = {}, [], {}, []
    for _ in range(n):
        raw = garbage_one(r, r.choice(tpls))
        status, detail = http_once(host, port, raw, 5)
        if status is None:
            errs[detail] = errs.get(detail, 0) + 1
            if detail == "timeout" and len(stuck) < 5:
                stuck.append(raw[:600].decode("latin-1"))
            continue
        c = "%dxx" % (status // 100)
        classes[c] = classes.get(c, 0) + 1
        if status >= 500:
            fives.append({"status": status, "answer": detail.decode("utf-8", "replace"),
                          "request": raw[:400].decode("latin-1")})
    return classes, errs, fives, stuck


def garbage(args):
    """garbage HOST PORT N WORKERS AUTH OUT"""
    host, port, n, workers, auth, out = args[0], int(args[1]), int(args[2]), int(args[3]), args[4], args[5]
    per = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    t0 = time.monotonic()
    with Pool(workers) as p:
        parts = p.map(garbage_worker, [(host, port, per[i], 1700 + i, auth) for i in range(workers)])
    secs = time.monotonic() - t0
    classes, errs, fives, stuck = {}, {}, [], []
    for c, e, f, t in parts:
        stuck += t
        for k, v in c.items():
            classes[k] = classes.get(k, 0) + v
        for k, v in e.items():
            errs[k] = errs.get(k, 0) + v
        fives += f
    json.dump({"sent": n, "secs": secs, "classes": classes, "errors": errs, "fives": fives, "stuck": stuck}, open(out, "w"), indent=1)


if __name__ == "__main__":
    {"probe": probe, "slowloris": slowloris, "garbage": garbage}[sys.argv[1]](sys.argv[2:])
PY

# A wrk script that POSTs a request built per call, counts statuses, and stops each thread
# after WRK_QUOTA answers (0: never). WRK_MODE=labels: /api/v1/token with a new Basic user
# name each time; WRK_MODE=auth_url: the Vault auth_url with a new client_nonce each time.
cat >"$WORK/flood.lua" <<'EOF'
local b64chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(data)
  return ((data:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end

local mode = os.getenv("WRK_MODE")
local quota = tonumber(os.getenv("WRK_QUOTA") or "0")
local path = os.getenv("WRK_PATH")
local threads = {}
local nthreads = 0
function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end
function init(args) sent = 0; got = 0; s200 = 0; s401 = 0; s503 = 0; s5xx = 0; other = 0 end
function request()
  sent = sent + 1
  if mode == "labels" then
    local name = string.format("stranger-%d-%d", tid, sent)
    return wrk.format("POST", path, {["Authorization"] = "Basic " .. b64(name .. ":guess"),
      ["Content-Type"] = "application/json"}, '{"scopes":"read:/"}')
  end
  return wrk.format("POST", path, {["Content-Type"] = "application/json"},
    string.format('{"role":"default","client_nonce":"flood-%d-%d"}', tid, sent))
end
function response(status, headers, body)
  got = got + 1
  if status == 200 then s200 = s200 + 1
  elseif status == 401 then s401 = s401 + 1
  elseif status == 503 then s503 = s503 + 1
  elseif status >= 500 then s5xx = s5xx + 1
  else other = other + 1 end
  if quota > 0 and got == quota then
    -- wrk sleeps its whole -d whatever the threads do: say so, and the script sends SIGINT
    local f = io.open(os.getenv("WRK_DONE_PREFIX") .. tid, "w")
    f:close()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local t = {sent = 0, got = 0, s200 = 0, s401 = 0, s503 = 0, s5xx = 0, other = 0}
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH sent=%d answered=%d s200=%d s401=%d s503=%d s5xx=%d other=%d secs=%.1f rps=%.0f p50_us=%d p99_us=%d sockerr=%d timeouts=%d\n",
    t.sent, t.got, t.s200, t.s401, t.s503, t.s5xx, t.other, summary.duration / 1e6,
    t.got / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write, e.timeout))
end
EOF

# --- broker helpers --------------------------------------------------------------------------
# start_broker NAME LIMIT [credkeeper global flags...]: `credkeeper serve --dev` on a free
# port, its descriptors limited (LIMIT strict: soft and hard 1024; soft: soft 1024 only, as
# systemd). Sets BROKER_PID, BROKER_URL, HOST, PORT, SECRET_FILE, AUTH (base64 dev:secret).
start_broker() {
  local name=$1 limit=$2 logf i getline
  shift 2
  logf=$WORK/$name.log
  (
    if [ "$limit" = strict ]; then ulimit -n $BROKER_NOFILE; else ulimit -Sn $BROKER_NOFILE; fi
    exec "$CK" "$@" serve --dev --listen 127.0.0.1:0 --state-dir "$WORK/$name" \
      >"$WORK/$name.out" 2>"$logf" </dev/null
  ) &
  BROKER_PID=$!
  BROKER_PIDS+=("$BROKER_PID")
  for ((i = 0; i < 300; i++)); do
    BROKER_URL=$(sed -n 's/^credkeeper broker listening on \([^ ]*\).*/\1/p' "$logf" 2>/dev/null | head -n 1) || true
    [ -n "$BROKER_URL" ] && [ -s "$WORK/$name.out" ] && break
    pid_alive "$BROKER_PID" || { cat "$logf" >&2; die "broker $name exited"; }
    sleep 0.1
  done
  [ -n "$BROKER_URL" ] || { cat "$logf" >&2; die "broker $name did not start"; }
  wait_for_http "$BROKER_URL/healthz" 30 "$BROKER_PID" || die "broker $name: /healthz does not answer"
  HOST=${BROKER_URL#http://}
  PORT=${HOST##*:}
  HOST=${HOST%:*}
  # The `get` line the broker printed, as a newcomer would copy it: a token must come out.
  getline=$(head -n 1 "$WORK/$name.out")
  SECRET_FILE=$(sed -n 's/.* --secret-file \([^ ]*\).*/\1/p' <<<"$getline")
  [ -s "$SECRET_FILE" ] || die "broker $name: no secret file in its get line: $getline"
  read -r -a getcmd <<<"$getline"
  "${getcmd[@]}" >/dev/null 2>"$WORK/$name.get.err" || { cat "$WORK/$name.get.err" >&2; die "broker $name: its get line failed"; }
  AUTH=$(printf 'dev:%s' "$(cat "$SECRET_FILE")" | base64 -w0)
  BROKER_LIMIT=$(awk '/^Max open files/ {print $4 "/" $5}' "/proc/$BROKER_PID/limits")
  log "broker $name: $BROKER_URL (pid $BROKER_PID, open files soft/hard $BROKER_LIMIT)"
}

stop_broker() { stop_pid "$1" "$CK" || true; }

fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# sampler_start PID FILE: "fds rss_kb" of PID every 0.2 s into FILE.
sampler_start() {
  (while pid_alive "$1"; do echo "$(fds "$1") $(mem_kb "$1" VmRSS)"; sleep 0.2; done) >"$2" &
  SAMPLER=$!
  BG_PIDS+=("$SAMPLER")
}
sampler_stop() { kill -TERM "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; }
peak() { awk -v c="$2" 'BEGIN {m = 0} $c > m {m = $c} END {print m}' "$1"; }

# kinds FILE [with-vault]: the probe's request kinds.
kinds() {
  local vault=${2:-}
  {
    printf '[{"name":"vend","method":"POST","path":"/api/v1/token","headers":{"Authorization":"Basic %s","Content-Type":"application/json"},"body":"{\\"provider\\":\\"local\\",\\"scopes\\":\\"read:/data\\",\\"minsecs\\":60}"}' "$AUTH"
    printf ',{"name":"healthz","method":"GET","path":"/healthz"}'
    if [ -n "$vault" ]; then
      printf ',{"name":"login","method":"POST","path":"/api/v1/logins","headers":{"Authorization":"Basic %s","Content-Type":"application/json"},"body":"{\\"provider\\":\\"op\\"}"}' "$AUTH"
      printf ',{"name":"user","method":"POST","path":"/v1/auth/oidc-igwn/oidc/auth_url","headers":{"Content-Type":"application/json"},"body":"{\\"role\\":\\"default\\",\\"client_nonce\\":\\"user-{i}\\"}"}'
    fi
    printf ']\n'
  } >"$1"
}

# probe_n NAME KINDS: PROBES sequential requests of each kind -> $WORK/NAME.probe
probe_n() { "$PY" "$WORK/attack.py" probe "$HOST" "$PORT" "$2" "$WORK/$1.probe" "$PROBES"; }
# probe_bg NAME KINDS: the probe until $WORK/NAME.stop exists; sets PROBE_PID
probe_bg() {
  rm -f "$WORK/$1.stop"
  "$PY" "$WORK/attack.py" probe "$HOST" "$PORT" "$2" "$WORK/$1.probe" --until "$WORK/$1.stop" &
  PROBE_PID=$!
  BG_PIDS+=("$PROBE_PID")
}
probe_stop() { touch "$WORK/$1.stop"; wait "$PROBE_PID" || die "probe $1 failed"; }
# pf NAME KIND FIELD: a field of a probe result line
pf() { awk -v k="$2" '$1 == k' "$WORK/$1.probe" | tr ' ' '\n' | sed -n "s/^$3=//p"; }
lat() { echo "$(pf "$1" "$2" p50) / $(pf "$1" "$2" p99)"; }
fails() {
  local name=$1 k n=0 f=0
  shift
  for k in "$@"; do n=$((n + $(pf "$name" "$k" n))); f=$((f + $(pf "$name" "$k" fail))); done
  echo "$f of $n"
}
mib() { kb_to_mb "$1"; }

ROWS=()
NOTES=()
# row ATTACK SIZE NAME: a table row from $WORK/NAME-{before,during,after}.probe, the sampler
# file $WORK/NAME.samples, the broker's VmHWM (HWM_KB) and the after figures (AFTER_FDS,
# AFTER_RSS_KB).
row() {
  local attack=$1 size=$2 n=$3 extra=${4:-}
  ROWS+=("| $attack | $size | $(lat "$n-during" vend) | $(lat "$n-during" healthz) | $(fails "$n-during" vend healthz)$extra | $(fds_before "$n") → $(peak "$WORK/$n.samples" 1) | $(mib "$RSS_BEFORE_KB") → $(mib "$(peak "$WORK/$n.samples" 2)") ($(mib "$HWM_KB")) | $AFTER_FDS fds, $(mib "$AFTER_RSS_KB") MiB, vend $(lat "$n-after" vend), $(fails "$n-after" vend healthz) failed |")
}
fds_before() { echo "$FDS_BEFORE"; }

# before NAME KINDS: the probe before the attack, then fds and RSS; starts the sampler.
before() {
  sleep 0.5
  probe_n "$1-before" "$2"
  FDS_BEFORE=$(fds "$BROKER_PID")
  RSS_BEFORE_KB=$(mem_kb "$BROKER_PID" VmRSS)
  sampler_start "$BROKER_PID" "$WORK/$1.samples"
}
# after NAME KINDS: the attack is over: let the broker settle, probe again, read fds and RSS.
after() {
  sampler_stop
  pid_alive "$BROKER_PID" || die "the broker died during $1"
  HWM_KB=$(mem_kb "$BROKER_PID" VmHWM)
  sleep 2
  probe_n "$1-after" "$2"
  AFTER_FDS=$(fds "$BROKER_PID")
  AFTER_RSS_KB=$(mem_kb "$BROKER_PID" VmRSS)
}

# --- 1. baseline -----------------------------------------------------------------------------
step "baseline"
start_broker baseline strict
kinds "$WORK/kinds.json"
sleep 0.5
FDS_BEFORE=$(fds "$BROKER_PID")
RSS_BEFORE_KB=$(mem_kb "$BROKER_PID" VmRSS)
sampler_start "$BROKER_PID" "$WORK/baseline.samples"
probe_n baseline-during "$WORK/kinds.json"
sampler_stop
HWM_KB=$(mem_kb "$BROKER_PID" VmHWM)
probe_n baseline-after "$WORK/kinds.json"
AFTER_FDS=$(fds "$BROKER_PID")
AFTER_RSS_KB=$(mem_kb "$BROKER_PID" VmRSS)
row "baseline (no attack)" "$PROBES × vend, $PROBES × healthz" baseline
BASELINE_LIMIT=$BROKER_LIMIT
stop_broker "$BROKER_PID"

# --- 2. slowloris ----------------------------------------------------------------------------
# slowloris_run NAME LIMIT LABEL
slowloris_run() {
  local name=$1 limit=$2 label=$3 cap_lines
  step "slowloris ($label)"
  start_broker "$name" "$limit"
  local lim=$BROKER_LIMIT
  kinds "$WORK/kinds.json"
  before "$name" "$WORK/kinds.json"
  "$PY" "$WORK/attack.py" slowloris "$HOST" "$PORT" "$SLOW_CONNS" "$SLOW_SECS" "$WORK/$name.slow" &
  local atk=$!
  BG_PIDS+=("$atk")
  sleep 2 # the connections are open before real requests are measured
  probe_bg "$name-during" "$WORK/kinds.json"
  wait "$atk" || die "slowloris client failed"
  probe_stop "$name-during"
  after "$name" "$WORK/kinds.json"
  local s=$WORK/$name.slow
  local st
  st=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); h=d["held_per_second"]; print("opened=%d max_held=%d held_median=%d closed_by_server=%d connect_failed=%d" % (d["opened"], d["max_held"], sorted(h)[len(h)//2] if h else 0, d["closed_by_server"], d["connect_failed"]))' "$s")
  cap_lines=$(grep -c 'connection limit' "$WORK/$name.log" || true)
  row "slowloris, $label" "$SLOW_CONNS half request lines held ${SLOW_SECS} s, reopened when closed" "$name"
  NOTES+=("- slowloris, $label (broker open files soft/hard after its own raise: $lim): attacker $st; broker log lines about the connection limit: $cap_lines; real requests during: vend $(pf "$name-during" vend n) (codes $(pf "$name-during" vend codes), errors $(pf "$name-during" vend errors), max $(pf "$name-during" vend max) ms), healthz $(pf "$name-during" healthz n) (codes $(pf "$name-during" healthz codes), errors $(pf "$name-during" healthz errors), max $(pf "$name-during" healthz max) ms).")
  stop_broker "$BROKER_PID"
}
slowloris_run slow-strict strict "ulimit -n 1024 (soft and hard)"
slowloris_run slow-soft soft "soft 1024, hard $HARD_NOFILE (as systemd)"

# --- the test OpenID Provider and a broker config with [vault] -------------------------------
step "test OpenID Provider"
OP_STATE=$WORK/op
# (once, on a loaded machine, node took more than start-op.sh's 30 s to listen: one retry)
if ! "$TESTBED/start-op.sh" "$OP_STATE" >&2; then
  log "the test OP did not start; trying once more"
  NOTES+=("- the test OP's first start failed (start-op.sh's 30 s); the second was used.")
  "$TESTBED/start-op.sh" "$OP_STATE" >&2 || die "the test OP did not start twice"
fi
OP_ISSUER=$(env_read "$OP_STATE/op.env" OP_ISSUER)
OP_LOG=$(env_read "$OP_STATE/op.env" OP_LOG)
OP_DEVICE_PATH=$(env_read "$OP_STATE/op.env" OP_DEVICE_AUTHORIZATION_ENDPOINT)
OP_DEVICE_PATH=/${OP_DEVICE_PATH#http://*/}
op_devices() { grep -c " POST $OP_DEVICE_PATH " "$OP_LOG" || true; }
cat >"$WORK/vault.toml" <<EOF
[vault]
issuers = { igwn = "op" }

[[provider]]
name = "op"
issuer = "$OP_ISSUER"
client_id = "device-client"
scopes = "read"

[[robot]]
name = "dev"
auth = { secret = true }
providers = ["local", "op"]
scopes = ["read:/", "write:/", "read"]
audiences = ["*"]
EOF

# --- 3. auth_url flood -----------------------------------------------------------------------
step "auth_url flood"
start_broker authurl strict --insecure-loopback --config "$WORK/vault.toml"
kinds "$WORK/kinds-vault.json" vault
code=$(curl -s -o "$WORK/authurl.check" -w '%{http_code}' -H 'Content-Type: application/json' \
  --data '{"role":"default","client_nonce":"check"}' "$BROKER_URL/v1/auth/oidc-igwn/oidc/auth_url")
[ "$code" = 200 ] || die "auth_url before the flood: HTTP $code: $(cat "$WORK/authurl.check")"
before authurl "$WORK/kinds-vault.json"
DEV_BEFORE=$(op_devices)
probe_bg authurl-during "$WORK/kinds-vault.json"
WRK_MODE=auth_url WRK_PATH=/v1/auth/oidc-igwn/oidc/auth_url \
  wrk -t2 -c16 -d"${FLOOD_SECS}s" --timeout 30s -s "$WORK/flood.lua" "$BROKER_URL" >"$WORK/authurl.wrk" 2>&1 ||
  { cat "$WORK/authurl.wrk" >&2; die "wrk (auth_url flood) failed"; }
probe_stop authurl-during
DEV_DURING=$(( $(op_devices) - DEV_BEFORE ))
after authurl "$WORK/kinds-vault.json"
W=$(grep '^BENCH' "$WORK/authurl.wrk") || die "no BENCH line from wrk: $(cat "$WORK/authurl.wrk")"
PROBE_DEVICES=$(( $(pf authurl-during login ok) + $(pf authurl-during user ok) ))
row "auth_url flood" "$(field "$W" answered) unauthenticated auth_url in $(field "$W" secs) s ($(field "$W" rps)/s)" authurl \
  "; robot logins $(fails authurl-during login) ($(lat authurl-during login) ms); user auth_url $(fails authurl-during user) ($(pf authurl-during user codes))"
NOTES+=("- auth_url flood: the flood's answers: 200 × $(field "$W" s200), 503 × $(field "$W" s503), other 5xx × $(field "$W" s5xx), other × $(field "$W" other), socket errors $(field "$W" sockerr); flood latency p50 $(us_to_ms "$(field "$W" p50_us)") / p99 $(us_to_ms "$(field "$W" p99_us)") ms. During it, a robot's POST /api/v1/logins: $(pf authurl-during login n) sent, codes $(pf authurl-during login codes), errors $(pf authurl-during login errors), p50/p99 $(lat authurl-during login) ms; a user's auth_url: $(pf authurl-during user n) sent, codes $(pf authurl-during user codes), errors $(pf authurl-during user errors), p50/p99 $(lat authurl-during user) ms. Device-authorization requests that reached the OP during the flood: $DEV_DURING, of which $PROBE_DEVICES for the probe's own logins (200 answers) and so $((DEV_DURING - PROBE_DEVICES)) for the flood (its 200s: $(field "$W" s200)). Before it ($PROBES each, which also used up the rate limit's burst): robot login codes $(pf authurl-before login codes), user auth_url codes $(pf authurl-before user codes); after it: robot login codes $(pf authurl-after login codes), user auth_url codes $(pf authurl-after user codes).")
stop_broker "$BROKER_PID"

# --- 4. metric-label flood -------------------------------------------------------------------
step "metric-label flood"
start_broker labels strict
kinds "$WORK/kinds.json"
curl -fsS --max-time 10 "$BROKER_URL/metrics" >"$WORK/labels.metrics.before" || die "/metrics before"
before labels "$WORK/kinds.json"
probe_bg labels-during "$WORK/kinds.json"
WRK_MODE=labels WRK_PATH=/api/v1/token WRK_QUOTA=$((LABELS / 2)) WRK_DONE_PREFIX=$WORK/labels.done. \
  wrk -t2 -c16 -d3600s --timeout 30s -s "$WORK/flood.lua" "$BROKER_URL" >"$WORK/labels.wrk" 2>&1 &
WRK_PID=$!
BG_PIDS+=("$WRK_PID")
while [ ! -e "$WORK/labels.done.1" ] || [ ! -e "$WORK/labels.done.2" ]; do
  pid_alive "$WRK_PID" || { cat "$WORK/labels.wrk" >&2; die "wrk (label flood) ended early"; }
  sleep 0.2
done
kill -INT "$WRK_PID"
wait "$WRK_PID" || { cat "$WORK/labels.wrk" >&2; die "wrk (label flood) failed"; }
probe_stop labels-during
RSS_AFTER_FLOOD_KB=$(mem_kb "$BROKER_PID" VmRSS)
curl -fsS --max-time 30 "$BROKER_URL/metrics" >"$WORK/labels.metrics.after" || die "/metrics after"
after labels "$WORK/kinds.json"
W=$(grep '^BENCH' "$WORK/labels.wrk") || die "no BENCH line from wrk: $(cat "$WORK/labels.wrk")"
DENIED_SERIES=$(grep -c '^credkeeper_tokens_denied_total{' "$WORK/labels.metrics.after" || true)
STRANGERS=$(grep -c 'stranger-' "$WORK/labels.metrics.after" || true)
UNKNOWN_LINE=$(grep '^credkeeper_tokens_denied_total{robot="unknown"' "$WORK/labels.metrics.after" || true)
row "metric-label flood" "$(field "$W" sent) new Basic user names in $(field "$W" secs) s ($(field "$W" rps)/s)" labels
NOTES+=("- metric-label flood: $(field "$W" sent) requests sent, $(field "$W" answered) answered (401 × $(field "$W" s401), other × $(($(field "$W" answered) - $(field "$W" s401)))); /metrics $(wc -c <"$WORK/labels.metrics.before") bytes before, $(wc -c <"$WORK/labels.metrics.after") bytes after, $DENIED_SERIES tokens_denied series, $STRANGERS lines naming a stranger; the one series: \`$UNKNOWN_LINE\`. RSS $(mib "$RSS_BEFORE_KB") MiB before, $(mib "$RSS_AFTER_FLOOD_KB") MiB right after the flood, $(mib "$AFTER_RSS_KB") MiB after the after-probe.")
stop_broker "$BROKER_PID"

# --- 5. garbage ------------------------------------------------------------------------------
step "garbage"
start_broker garbage strict --insecure-loopback --config "$WORK/vault.toml"
kinds "$WORK/kinds.json"
before garbage "$WORK/kinds.json"
probe_bg garbage-during "$WORK/kinds.json"
"$PY" "$WORK/attack.py" garbage "$HOST" "$PORT" "$GARBAGE" 8 "$AUTH" "$WORK/garbage.json" ||
  die "garbage client failed"
probe_stop garbage-during
after garbage "$WORK/kinds.json"
G=$("$PY" -c 'import json,sys
d = json.load(open(sys.argv[1]))
c, e = d["classes"], d["errors"]
busy = sum(1 for f in d["fives"] if f["status"] == 503 and "busy" in f["answer"])
print("secs=%.1f 2xx=%d 3xx=%d 4xx=%d 5xx=%d busy503=%d errors=%s" % (d["secs"], c.get("2xx", 0), c.get("3xx", 0),
      c.get("4xx", 0), c.get("5xx", 0), busy, ",".join("%s:%d" % kv for kv in sorted(e.items())) or "-"))' "$WORK/garbage.json")
G=" $G"
row "garbage" "$GARBAGE malformed requests in $(field "$G" secs) s: 5xx × $(field "$G" 5xx) ($(field "$G" busy503) of them 503 busy)" garbage
NOTES+=("- garbage: answers 2xx × $(field "$G" 2xx), 3xx × $(field "$G" 3xx), 4xx × $(field "$G" 4xx), **5xx × $(field "$G" 5xx)** (of which 503 busy from [vault] logins_per_minute: $(field "$G" busy503)); no status line: $(field "$G" errors) (closed: the connection closed without an answer; timeout: no answer within the client's 5 s, each listed below: a head that claims a longer body than was sent is waited on up to body_timeout_secs, 30 s).")
# every 5xx that is not the auth_url rate limit's 503 busy, with the request that caused it
"$PY" -c 'import json,sys
fives = [f for f in json.load(open(sys.argv[1]))["fives"] if not (f["status"] == 503 and "busy" in f["answer"])]
print("  - 5xx other than 503 busy: %d" % len(fives))
busy = [f for f in json.load(open(sys.argv[1]))["fives"] if f not in fives][:1]
for f in busy:
    print("  - e.g. 503 busy: %r <- %r" % (f["answer"][:120], f["request"][:120]))
for f in fives[:20]:
    print("  - %d %r <- %r" % (f["status"], f["answer"][:160], f["request"][:200]))
for t in json.load(open(sys.argv[1]))["stuck"]:
    print("  - no answer in 5 s to: %r" % t[:300])' "$WORK/garbage.json" >"$WORK/garbage.fives"
while IFS= read -r l; do NOTES+=("$l"); done <"$WORK/garbage.fives"
stop_broker "$BROKER_PID"

# --- report ----------------------------------------------------------------------------------
step "report"
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
REPORT=$WORK/report.md
{
  echo "# Attacks on \`credkeeper serve\` (issue 17)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($CPU), $(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo) GiB RAM, $(uname -sr), $(wrk -v 2>&1 | head -n 1 | cut -d" " -f1-2), Python $("$PY" -c "import platform; print(platform.python_version())"), load average $START_LOAD at the start and $(cut -d' ' -f1-3 /proc/loadavg) at the end (other engineers' builds share the machine); credkeeper $(git -C "$ROOT" rev-parse --short HEAD) release ($("$CK" --version 2>/dev/null | head -n 1))."
  echo "Command: \`bench/attacks.sh\` (no arguments; knobs at their defaults unless set: slowloris $SLOW_CONNS connections ${SLOW_SECS} s, auth_url flood ${FLOOD_SECS} s, $LABELS label requests, $GARBAGE garbage requests, $PROBES probe requests per kind before and after)."
  echo "Each attack has a fresh \`credkeeper serve --dev\` (the Vault rows with a --config: [vault] issuers = { igwn = \"op\" }, provider op at tests/testbed/start-op.sh, [vault] limits at their defaults), started under \`ulimit -n 1024\` (soft and hard: open files $BASELINE_LIMIT as the broker sees them) except the one row marked systemd-like. Attacker, probe and broker share the machine's 2 cores on loopback."
  echo
  echo "Real requests: a client opening a new connection per request, one at a time: vend = POST /api/v1/token as the dev robot (cached token), healthz = GET /healthz; latency p50 / p99 in ms, failures = no 2xx (error, timeout at 30 s, or another status). fds and RSS: the broker's /proc/PID/fd count and VmRSS sampled every 0.2 s (before → peak), VmHWM in brackets. After: 2 s after the attack stopped, then $PROBES vend + $PROBES healthz."
  echo
  echo "| attack | size | vend p50 / p99 ms during | healthz p50 / p99 ms during | real-request failures during | broker fds before → peak | RSS MiB before → peak (VmHWM) | after |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  for r in "${ROWS[@]}"; do echo "$r"; done
  echo
  echo "Notes from the same run:"
  echo
  for n in "${NOTES[@]}"; do echo "$n"; done
} >"$REPORT"
cat "$REPORT"
if [ "$OUT" != - ]; then
  cp "$REPORT" "$OUT"
  log "written to $OUT"
fi
OK=1
