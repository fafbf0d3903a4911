#!/usr/bin/env python3
"""report.py WORK GOAL_A GOAL_B - the Markdown tables of bench/robot.sh.

Reads what robot.sh left in WORK:
  rows.tsv     case, key, label, command (one line per measured command, in table order)
  results/     hyperfine JSON, one file per block: CASE-KEY-ROUND.json
  rss/         CASE-KEY.txt: /usr/bin/time "%M" values (KiB), one per run
  checks.tsv   case, key, round, runs, vended, kerberos, vault_token, signed, other, as, tgs
               (what the broker's audit log and the KDC's log saw during each block)
Prints the results table, the per-run request counts and the goals table on stdout.
Exit status: 0 = every goal met, 3 = a goal missed.
"""

import glob
import json
import os
import statistics
import sys

work, goal_a, goal_b = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
GOALS = {"a": goal_a, "b": goal_b}
CASES = {
    "a": "(a) keytab → token file, nothing cached client-side",
    "b": "(b) repeat call, a valid token in the out file",
}


def read_tsv(name):
    with open(os.path.join(work, name)) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


rows = read_tsv("rows.tsv")
checks = read_tsv("checks.tsv")


def load(case, key):
    """Merge the blocks of one command: all run times; CPU time weighted by runs."""
    times, cpu, medians = [], 0.0, []
    for path in sorted(glob.glob(os.path.join(work, "results", f"{case}-{key}-*.json"))):
        with open(path) as f:
            r = json.load(f)["results"][0]
        times += r["times"]
        cpu += (r["user"] + r["system"]) * len(r["times"])
        medians.append(r["median"])
    if not times:
        sys.exit(f"report.py: no hyperfine results for {case}-{key}")
    return {
        "median": statistics.median(times),
        "mean": statistics.mean(times),
        "stdev": statistics.stdev(times) if len(times) > 1 else 0.0,
        "min": min(times),
        "cpu": cpu / len(times),
        "n": len(times),
        "blocks": medians,
    }


def peak_rss(case, key):
    try:
        with open(os.path.join(work, "rss", f"{case}-{key}.txt")) as f:
            values = [int(v) for v in f.read().split()]
    except FileNotFoundError:
        return None, 0
    return (max(values) if values else None), len(values)


def ms(seconds):
    return seconds * 1000.0


def fmt_ms(seconds):
    v = ms(seconds)
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


stats = {(case, key): load(case, key) for case, key, _, _ in rows}
ck = {case: stats[(case, "ck")] for case in GOALS}

print("| tool | case | runs | median ms | mean ± σ ms | min ms | user+sys ms | block medians ms "
      "| ratio vs credkeeper (median) | peak RSS MB |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
ratios = {}
for case, key, label, _ in rows:
    s = stats[(case, key)]
    ratio = s["median"] / ck[case]["median"]
    if key != "ck":
        ratios[(case, label)] = ratio
    rss, nrss = peak_rss(case, key)
    rss_text = f"{rss / 1024:.1f}" if rss else "n/a"
    blocks = " / ".join(fmt_ms(m) for m in s["blocks"])
    ratio_text = "1" if key == "ck" else f"{ratio:.1f}×"
    print(f"| {label} | {case} | {s['n']} | {fmt_ms(s['median'])} "
          f"| {fmt_ms(s['mean'])} ± {fmt_ms(s['stdev'])} | {fmt_ms(s['min'])} "
          f"| {fmt_ms(s['cpu'])} | {blocks} | {ratio_text} | {rss_text} |")

# What each run cost the broker and the KDC, from their own logs (warmup runs included).
print()
print("Requests per run, counted in the broker's audit log and the KDC's log during the timed "
      "blocks (warmup runs included):")
print()
print("| tool | case | runs incl. warmup | token vends / run (auth) | of them freshly signed | "
      "KDC AS-REQ / run | KDC TGS-REQ / run |")
print("|---|---|--:|--:|--:|--:|--:|")
labels = {(case, key): label for case, key, label, _ in rows}
agg = {}
for case, key, _round, n, vended, kerb, vault, signed, other, as_req, tgs in checks:
    a = agg.setdefault((case, key), [0] * 8)
    for i, v in enumerate((n, vended, kerb, vault, signed, other, as_req, tgs)):
        a[i] += int(v)
for case, key, label, _ in rows:
    n, vended, kerb, vault, signed, other, as_req, tgs = agg[(case, key)]
    auth = []
    if kerb:
        auth.append(f"Kerberos {kerb / n:g}")
    if vault:
        auth.append(f"Vault token {vault / n:g}")
    if other:
        auth.append(f"other {other / n:g}")
    auth_text = f" ({', '.join(auth)})" if auth else ""
    print(f"| {label} | {case} | {n} | {vended / n:g}{auth_text} | {signed} "
          f"| {as_req / n:g} | {tgs / n:g} |")

print()
print("| goal | measured | |")
print("|---|---|---|")
ok = True
for (case, label), ratio in ratios.items():
    met = ratio >= GOALS[case]
    ok &= met
    print(f"| {CASES[case]}: credkeeper ≥ {GOALS[case]:g}× faster than {label} "
          f"| {ratio:.1f}× | {'met' if met else '**missed**'} |")
sys.exit(0 if ok else 3)
