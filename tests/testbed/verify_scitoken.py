#!/usr/bin/env python3
"""verify_scitoken.py - verify a token the way a SciTokens resource server does (scitokens 1.9.7).

usage: verify_scitoken.py TOKEN|@FILE|- ISSUER [--insecure] [--audience A]
                          [--authz X --path P] [--cache-dir D] [--debug]

  TOKEN|@FILE|-  the compact JWT itself, a file holding it, or "-" for stdin (whitespace stripped)
  ISSUER         the expected issuer; the token's `iss` must equal it exactly
  --insecure     allow http:// discovery/jwks_uri (scitokens refuses them otherwise; loopback tests)
  --audience A   the token's `aud` must contain A (string or list; "ANY" in the token matches)
  --authz X      scitokens.Enforcer(ISSUER, A).test(token, X, P) must pass; needs --audience for
                 tokens that carry `aud` (all scitoken:2.0 tokens). `read`/`write` are also tried
                 as the WLCG scopes they stand for (storage.read / storage.create, storage.modify):
                 scitokens' own Enforcer compares the scope name literally.
  --path P       absolute path for --authz (required for read/write)
  --cache-dir D  scitokens' sqlite key cache lives in D/scitokens/ (default: a fresh temp dir, so
                 no negative cache entry of an earlier run - 300 s! - can leak in)
  --debug        let scitokens' logger write to stderr

Signature check: scitokens.SciToken.deserialize(token, insecure=...) (ISSUER/.well-known/
openid-configuration -> jwks_uri -> key by the header's kid; RS256 and ES256), which also checks
exp/nbf/iat. Exit 0 and the verified claims as JSON on stdout when valid; exit 1 and a one-line
reason on stderr otherwise; exit 2 on usage errors. Run it with tests/testbed/venv/bin/python, or
with any python3: it re-executes itself in that venv when scitokens is not importable.
"""

import argparse
import json
import os
import sys
import tempfile

VENV_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "venv", "bin", "python")

# WLCG scope names for the SciTokens authorizations (WLCG profile 1.0, section "Scope-based
# authorization"); tried after the literal authz.
WLCG_AUTHZ = {
    "read": ["storage.read"],
    "write": ["storage.create", "storage.modify"],
}


def fail(msg):
    print("verify_scitoken: " + " ".join(str(msg).split()), file=sys.stderr)
    sys.exit(1)


def parse_args():
    p = argparse.ArgumentParser(
        prog="verify_scitoken.py",
        description="Verify a SciToken / WLCG token with the scitokens library.",
    )
    p.add_argument("token", metavar="TOKEN|@FILE|-")
    p.add_argument("issuer", metavar="ISSUER")
    p.add_argument("--insecure", action="store_true", help="allow http:// discovery and jwks_uri")
    p.add_argument("--audience", metavar="A")
    p.add_argument("--authz", metavar="X")
    p.add_argument("--path", metavar="P")
    p.add_argument("--cache-dir", metavar="D")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    if args.path is not None and args.authz is None:
        p.error("--path needs --authz")
    return args


def read_token(arg):
    try:
        if arg == "-":
            tok = sys.stdin.read()
        elif arg.startswith("@"):
            with open(arg[1:], encoding="utf-8") as f:
                tok = f.read()
        else:
            tok = arg
    except OSError as e:
        fail(f"cannot read token: {e}")
    tok = tok.strip()
    if not tok:
        fail("empty token")
    return tok


def import_scitokens():
    try:
        import scitokens  # noqa: F401
    except ImportError:
        # not the testbed venv: re-execute there (once)
        if os.path.exists(VENV_PY) and not os.environ.get("VERIFY_SCITOKEN_REEXEC"):
            os.environ["VERIFY_SCITOKEN_REEXEC"] = "1"
            os.execv(VENV_PY, [VENV_PY, os.path.abspath(__file__)] + sys.argv[1:])
        fail("scitokens is not importable; run tests/testbed/setup-python.sh")
    return scitokens


def aud_matches(aud, want):
    values = aud if isinstance(aud, list) else [aud]
    return want in values or "ANY" in values


def main():
    args = parse_args()
    # may re-execute in the venv: before reading stdin and before anything to clean up
    scitokens = import_scitokens()
    token = read_token(args.token)

    # Private key cache. scitokens picks it when the KeyCache singleton is first created (in the
    # first key look-up, not at import): config cache_location, else $XDG_CACHE_HOME, else
    # ~/.cache. Set both before that.
    tmp = None
    cache_dir = args.cache_dir
    if not cache_dir:
        tmp = tempfile.TemporaryDirectory(prefix="verify-scitoken-")
        cache_dir = tmp.name
    cache_dir = os.path.abspath(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    os.environ["XDG_CACHE_HOME"] = cache_dir

    import logging
    import scitokens.utils.config as sconfig
    from scitokens.utils import keycache

    if not sconfig.configuration.has_section("scitokens"):
        sconfig.configuration.add_section("scitokens")
    sconfig.configuration.set("scitokens", "cache_location", cache_dir)

    # scitokens logs fetch errors itself (and Python's last-resort handler would print them):
    # keep stderr to our one line unless --debug.
    slog = logging.getLogger("scitokens")
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    else:
        slog.addHandler(logging.NullHandler())
        slog.propagate = False

    try:
        import jwt

        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except Exception as e:
        fail(f"not a JWT: {type(e).__name__}: {e}")
    iss = unverified.get("iss")
    if iss != args.issuer:
        fail(f"issuer mismatch: token iss {iss!r}, expected {args.issuer!r}")

    # Fetch the key first so a failure has a clear message (deserialize() would then only say
    # "Expecting a PEM-formatted key" for a negative cache entry). The key is cached in sqlite,
    # so deserialize() below does not fetch it again.
    kid = header.get("kid")
    try:
        key = keycache.KeyCache.getinstance().getkeyinfo(iss, key_id=kid, insecure=args.insecure)
    except Exception as e:
        cause = e.args[0] if e.args and isinstance(e.args[0], Exception) else e
        fail(f"no signing key for kid {kid!r} from {iss}: {type(cause).__name__}: {cause}")
    if key is None:
        fail(f"no signing key for kid {kid!r} from {iss}: negative cache entry in "
             f"{cache_dir}/scitokens (a failed fetch is not retried for 300 s; use a fresh --cache-dir)")

    try:
        tok = scitokens.SciToken.deserialize(token, insecure=args.insecure)
    except Exception as e:
        fail(f"invalid token: {type(e).__name__}: {e}")
    claims = dict(tok.claims())
    if claims.get("iss") != args.issuer:  # verified claims this time
        fail(f"issuer mismatch: token iss {claims.get('iss')!r}, expected {args.issuer!r}")

    if args.audience is not None:
        if "aud" not in claims:
            fail(f"token has no aud claim (expected {args.audience!r})")
        if not aud_matches(claims["aud"], args.audience):
            fail(f"audience mismatch: token aud {claims['aud']!r}, expected {args.audience!r}")

    if args.authz is not None:
        enforcer = scitokens.Enforcer(args.issuer, audience=args.audience)
        tried = [args.authz] + WLCG_AUTHZ.get(args.authz, [])
        first_failure = None
        granted = None
        for authz in tried:
            try:
                ok = enforcer.test(tok, authz, args.path)
            except Exception as e:  # InvalidPathError etc.
                fail(f"enforcer: {type(e).__name__}: {e}")
            if ok:
                granted = authz
                break
            if first_failure is None:
                first_failure = enforcer.last_failure
        if granted is None:
            fail(f"not authorized: {' / '.join(tried)} on {args.path!r} "
                 f"(scope {claims.get('scope', claims.get('scp'))!r}): {first_failure}")

    json.dump(claims, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
