#!/usr/bin/env python3
"""bench/credmon/check.py DIR N_OAUTH N_LOCAL - check a directory made by make_dir.py after
a credmon pass. Prints one JSON object and exits 0 when all of these hold, 1 otherwise:

  due users (even):   box.use holds an access token from token_server.js ("at-…", all
                      distinct), box.top a new refresh token ("rt-…"), both mode 0400
  idle users (odd):   box.use and box.top untouched ("idle-…", "rt0-…")
  local users:        scitokens.use holds {"access_token": JWT, "expires_in"} with
                      sub = the user, mode 0400
  the root:           no temporary files left behind (only the users, pid,
                      CREDMON_COMPLETE and credkeeper's .credkeeper-credmon.json)
"""
import base64
import json
import os
import stat
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    root, n_oauth, n_local = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    r = {"due": 0, "due_refreshed": 0, "due_not_refreshed": 0, "due_bad_mode": 0,
         "idle": 0, "idle_untouched": 0, "idle_changed": 0,
         "local": n_local, "local_signed": 0, "local_missing": 0, "local_bad": 0,
         "distinct_access_tokens": 0, "root_leftovers": 0}
    seen = set()
    examples = []
    for i in range(n_oauth):
        user = "user%06d" % i
        d = os.path.join(root, user)
        try:
            use = load(os.path.join(d, "box.use"))
            top = load(os.path.join(d, "box.top"))
        except (OSError, ValueError) as e:
            use, top = {}, {}
            if len(examples) < 5:
                examples.append("%s: %s" % (user, e))
        at, rt = str(use.get("access_token", "")), str(top.get("refresh_token", ""))
        if i % 2 == 0:
            r["due"] += 1
            if at.startswith("at-") and rt.startswith("rt-"):
                r["due_refreshed"] += 1
                seen.add(at)
                if mode(os.path.join(d, "box.use")) != 0o400 or mode(os.path.join(d, "box.top")) != 0o400:
                    r["due_bad_mode"] += 1
            else:
                r["due_not_refreshed"] += 1
                if len(examples) < 5:
                    examples.append("%s: access_token %r refresh_token %r" % (user, at[:20], rt[:20]))
        else:
            r["idle"] += 1
            if at == "idle-" + user and rt == "rt0-" + user:
                r["idle_untouched"] += 1
            else:
                r["idle_changed"] += 1
    r["distinct_access_tokens"] = len(seen)
    for i in range(n_local):
        user = "local%06d" % i
        p = os.path.join(root, user, "scitokens.use")
        try:
            use = load(p)
        except OSError:
            r["local_missing"] += 1
            continue
        except ValueError:
            r["local_bad"] += 1
            continue
        try:
            payload = use["access_token"].split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            ok = claims.get("sub") == user and int(use["expires_in"]) > 0 and mode(p) == 0o400
        except (KeyError, IndexError, ValueError, TypeError):
            ok = False
        if ok:
            r["local_signed"] += 1
        else:
            r["local_bad"] += 1
    allowed = {"pid", "CREDMON_COMPLETE", ".credkeeper-credmon.json"}
    for name in os.listdir(root):
        if name in allowed or os.path.isdir(os.path.join(root, name)):
            continue
        r["root_leftovers"] += 1
        if len(examples) < 5:
            examples.append("leftover in the root: " + name)
    r["ok"] = (r["due_refreshed"] == r["due"] and r["due_bad_mode"] == 0
               and r["distinct_access_tokens"] == r["due"]
               and r["idle_untouched"] == r["idle"]
               and r["local_signed"] == n_local and r["root_leftovers"] == 0)
    if examples:
        r["examples"] = examples
    print(json.dumps(r))
    sys.exit(0 if r["ok"] else 1)


if __name__ == "__main__":
    main()
