#!/usr/bin/env python3
"""bench/credmon/make_dir.py DIR N_OAUTH N_LOCAL TOKEN_URL - build a credential directory in
the scitokens-credmon layout for bench/credmon.sh.

  DIR (mode 2770)
    user000000/box.top   {"refresh_token": "rt0-user000000"}
    user000000/box.use   even users, due:  {"access_token": "stale-…", "expires_in": 0}
                         odd users, idle:  a fresh token response, expires_in 3600
                         (due 1800 s after the file's ctime, upstream's half-life rule)
    user000000/box.meta  {"client_id", "client_secret", "token_url": TOKEN_URL,
                          "use_refresh_token": true}
    local000000/scitokens.top   local mode (no .meta, no .use yet: signed on the first pass)

Every file is mode 0400, every user directory 0700, as the CredD and the credmon's web app
leave them. The ctime rule means a copy (cp -a sets a new ctime) starts its own 1800 s window
in which the idle users stay idle.
"""
import json
import os
import sys
import time


def write(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    root, n_oauth, n_local, token_url = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    os.umask(0o077)
    os.makedirs(root)
    os.chmod(root, 0o2770)
    meta = json.dumps({
        "client_id": os.environ.get("BENCH_CLIENT_ID", "bench-client"),
        "client_secret": os.environ.get("BENCH_CLIENT_SECRET", "bench-secret"),
        "token_url": token_url,
        "use_refresh_token": True,
    })
    now = int(time.time())
    for i in range(n_oauth):
        user = "user%06d" % i
        d = os.path.join(root, user)
        os.mkdir(d, 0o700)
        write(os.path.join(d, "box.top"), json.dumps({"refresh_token": "rt0-" + user}))
        if i % 2 == 0:
            use = {"access_token": "stale-" + user, "expires_in": 0}
        else:
            use = {"access_token": "idle-" + user, "token_type": "Bearer", "expires_in": 3600,
                   "scope": ["openid", "offline_access", "read"], "expires_at": now + 3600}
        write(os.path.join(d, "box.use"), json.dumps(use))
        write(os.path.join(d, "box.meta"), meta)
    for i in range(n_local):
        user = "local%06d" % i
        d = os.path.join(root, user)
        os.mkdir(d, 0o700)
        write(os.path.join(d, "scitokens.top"), user)


if __name__ == "__main__":
    main()
