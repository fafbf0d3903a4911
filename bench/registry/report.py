#!/usr/bin/env python3
"""report.py WORK SECTION GOAL_HELPER_MS GOAL_PROXY_P99_US INPUT_MODE - Markdown tables of
bench/registry.sh.

SECTION is one of:
  helper  the helper `get` table, from WORK/helper-rows.tsv (key, command), WORK/results/
          helper-KEY-ROUND.json (hyperfine) and WORK/rss/KEY.txt (/usr/bin/time %M, KiB)
  token   the token server table, from WORK/token.tsv (one wrk run per line), WORK/token-mem.tsv
          and WORK/token-size.tsv
  cri     the CRI proxy tables, from WORK/cri/status-{direct,proxy}-ROUND.json (cri.py
          bench-status) and WORK/cri/pulls.json (cri_pulls.py)
  goals   the goals table; its exit status is the script's: 0 = every goal measured and met,
          3 = a goal missed, 4 = none missed but one not measured (WORK/skips.tsv says why)
INPUT_MODE is 1 when hyperfine ran the helpers with --input (no wrapper, no baseline), else 0.
"""

import glob
import json
import os
import statistics
import sys

work, section = sys.argv[1], sys.argv[2]
goal_helper_ms, goal_proxy_us = float(sys.argv[3]), float(sys.argv[4])
input_mode = sys.argv[5] == "1"

LABELS = {
    "ck": "`docker-credential-credkeeper get`",
    "pass": "`docker-credential-pass get`",
    "base": "baseline: `sh -c 'printf HOST \\| cat'`",
    "version": "`credkeeper --version` (start-up alone)",
    "floor": "floor: `/bin/true`",
}


def path(*p):
    return os.path.join(work, *p)


def read_tsv(name):
    try:
        with open(path(name)) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except FileNotFoundError:
        return []


def skips():
    return {p: why for p, why in read_tsv("skips.tsv")}


# --- helper ------------------------------------------------------------------------------------
def helper_stats():
    rows = read_tsv("helper-rows.tsv")
    stats = {}
    for key, _cmd in rows:
        times, cpu, medians = [], 0.0, []
        for p in sorted(glob.glob(path("results", f"helper-{key}-*.json"))):
            with open(p) as f:
                r = json.load(f)["results"][0]
            times += r["times"]
            cpu += (r["user"] + r["system"]) * len(r["times"])
            medians.append(r["median"])
        if not times:
            sys.exit(f"report.py: no hyperfine results for {key}")
        stats[key] = {
            "median": statistics.median(times) * 1000,
            "mean": statistics.mean(times) * 1000,
            "stdev": (statistics.stdev(times) if len(times) > 1 else 0.0) * 1000,
            "min": min(times) * 1000,
            "cpu": cpu / len(times) * 1000,
            "n": len(times),
            "blocks": [m * 1000 for m in medians],
        }
    return rows, stats


def alone(stats, key):
    """The helper's own time: the raw median with --input; else minus the wrapper (the
    baseline's median) plus the floor (starting a trivial program, which the baseline has in
    the helper's place)."""
    s = stats[key]["median"]
    if input_mode or "base" not in stats:
        return s
    return s - stats["base"]["median"] + stats["floor"]["median"]


def rss(key):
    try:
        with open(path("rss", f"{key}.txt")) as f:
            values = [int(v) for v in f.read().split()]
    except FileNotFoundError:
        return None
    return max(values) if values else None


def fmt(v):
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def section_helper():
    rows, stats = helper_stats()
    wrapped = not input_mode and "base" in stats
    head = "| command | runs | median ms | mean ± σ ms | min ms | user+sys ms | block medians ms "
    sep = "|---|--:|--:|--:|--:|--:|--:"
    if wrapped:
        head += "| − baseline ms | estimate alone ms (− baseline + floor) "
        sep += "|--:|--:"
    head += "| peak RSS MB |"
    sep += "|--:|"
    print(head)
    print(sep)
    for key, cmd in rows:
        s = stats[key]
        line = (f"| {LABELS.get(key, key)} | {s['n']} | {fmt(s['median'])} | {fmt(s['mean'])} ± "
                f"{fmt(s['stdev'])} | {fmt(s['min'])} | {fmt(s['cpu'])} | "
                f"{' / '.join(fmt(m) for m in s['blocks'])} ")
        if wrapped:
            if key in ("ck", "pass"):
                line += f"| {fmt(s['median'] - stats['base']['median'])} | {fmt(alone(stats, key))} "
            else:
                line += "| | "
        r = rss(key)
        line += f"| {r / 1024:.1f} |" if r else "| |"
        print(line)
    print()
    ck, pw = stats["ck"]["median"], stats["pass"]["median"]
    text = f"Ratio docker-credential-pass / docker-credential-credkeeper (medians): {pw / ck:.1f}× raw"
    if wrapped:
        text += (f", {(pw - stats['base']['median']) / (ck - stats['base']['median']):.1f}× beyond the "
                 f"baseline, {alone(stats, 'pass') / alone(stats, 'ck'):.1f}× estimated alone")
        if ck - stats["base"]["median"] <= 0:
            text += " (credkeeper's median is within the baseline's: that ratio means nothing)"
    print(text + ".")
    if "version" in stats:
        over = stats["version"]["median"] - stats["floor"]["median"]
        print()
        print(f"Start-up: `credkeeper --version` is {fmt(over)} ms above `/bin/true` (goal ≤ 0.5 ms: "
              f"{'met' if over <= 0.5 else 'missed'}).")
    fl = stats["floor"]["blocks"]
    if max(fl) > 1.5 * min(fl):
        print()
        print(f"**Note:** the floor's block medians differ by more than 50 % "
              f"({' / '.join(fmt(m) for m in fl)} ms): the machine's load changed during the runs.")


# --- token -------------------------------------------------------------------------------------
def section_token():
    rows = read_tsv("token.tsv")
    mem = {alg: (int(r), int(h)) for alg, r, h in read_tsv("token-mem.tsv")}
    size = {alg: int(n) for alg, n in read_tsv("token-size.tsv")}
    print("| algorithm | connections | wrk threads | tokens/s | p50 ms | p99 ms | max ms | 2xx | non-2xx "
          "| socket errors/timeouts | signed (metrics) | audit lines | broker CPU |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for alg, conns, threads, rps, p50, p99, mx, ok, bad, sockerr, timeouts, signed, audit, cpu in rows:
        print(f"| {alg} | {conns} | {threads} | {float(rps):,.0f} | {int(p50) / 1000:.2f} | "
              f"{int(p99) / 1000:.2f} | {int(mx) / 1000:.2f} | {int(ok):,} | {bad} | {sockerr}/{timeouts} "
              f"| {int(signed):,} | {int(audit):,} | {cpu}% |")
    print()
    parts = []
    for alg, (r, h) in mem.items():
        parts.append(f"{alg}: VmRSS {r / 1024:.1f} MB, VmHWM {h / 1024:.1f} MB after its runs"
                     + (f", token {size[alg]} bytes (with the x5c certificate)" if alg in size else ""))
    if parts:
        print("Broker memory and token size — " + "; ".join(parts) + ".")


# --- cri ---------------------------------------------------------------------------------------
def load_status(key):
    out = {}
    for p in glob.glob(path("cri", f"status-{key}-*.json")):
        r = int(os.path.basename(p).rsplit("-", 1)[1].split(".")[0])
        with open(p) as f:
            out[r] = json.load(f)
    return out


def cri_numbers():
    d, p = load_status("direct"), load_status("proxy")
    rounds = sorted(set(d) & set(p))
    if not rounds:
        return None
    add50 = [p[r]["p50_us"] - d[r]["p50_us"] for r in rounds]
    add99 = [p[r]["p99_us"] - d[r]["p99_us"] for r in rounds]
    return d, p, rounds, add50, add99


def section_cri():
    nums = cri_numbers()
    if nums is None:
        print("No ImageStatus results.")
        return
    d, p, rounds, add50, add99 = nums
    print("ImageStatus latency, µs:")
    print()
    print("| round | order | direct p50 | proxy p50 | + p50 | direct p99 | proxy p99 | + p99 "
          "| direct mean | proxy mean | direct max | proxy max |")
    print("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for i, r in enumerate(rounds):
        order = "direct, proxy" if r % 2 == 0 else "proxy, direct"
        print(f"| {r + 1} | {order} | {d[r]['p50_us']:.0f} | {p[r]['p50_us']:.0f} | {add50[i]:+.0f} "
              f"| {d[r]['p99_us']:.0f} | {p[r]['p99_us']:.0f} | {add99[i]:+.0f} "
              f"| {d[r]['mean_us']:.0f} | {p[r]['mean_us']:.0f} | {d[r]['max_us']:.0f} | {p[r]['max_us']:.0f} |")
    med = statistics.median
    print(f"| median | | {med(d[r]['p50_us'] for r in rounds):.0f} | {med(p[r]['p50_us'] for r in rounds):.0f} "
          f"| **{med(add50):+.0f}** | {med(d[r]['p99_us'] for r in rounds):.0f} "
          f"| {med(p[r]['p99_us'] for r in rounds):.0f} | **{med(add99):+.0f}** | | | | |")
    print()
    try:
        with open(path("cri", "pulls.json")) as f:
            pulls = json.load(f)
    except FileNotFoundError:
        print("No pull results.")
        return
    print("Full pulls (RemoveImage, then PullImage with username/password), ms:")
    print()
    print("| path | pulls | median | mean | min | max |")
    print("|---|--:|--:|--:|--:|--:|")
    for key in ("direct", "proxy"):
        s = pulls[key]
        print(f"| {key} | {s['n']} | {s['median_ms']:.1f} | {s['mean_ms']:.1f} | {s['min_ms']:.1f} "
              f"| {s['max_ms']:.1f} |")
    paired = [b - a for a, b in zip(pulls["direct"]["times_ms"], pulls["proxy"]["times_ms"])]
    print()
    print(f"The proxy adds {pulls['proxy']['median_ms'] - pulls['direct']['median_ms']:+.2f} ms to the "
          f"median pull (median of the {len(paired)} paired differences, pull i through the proxy "
          f"minus pull i directly: {statistics.median(paired):+.2f} ms).")


# --- goals -------------------------------------------------------------------------------------
def section_goals():
    sk = skips()
    print("| goal | measured | |")
    print("|---|---|---|")
    verdicts = []
    if "helper" in sk:
        print(f"| helper `get` < {goal_helper_ms:g} ms | not measured: {sk['helper']} | — |")
        verdicts.append(None)
    else:
        _, stats = helper_stats()
        v = alone(stats, "ck")
        met = v < goal_helper_ms
        verdicts.append(met)
        how = "median" if input_mode else (
            f"median estimate alone (raw under `sh -c 'printf … \\| …'`: "
            f"{fmt(stats['ck']['median'])} ms)")
        print(f"| helper `get` < {goal_helper_ms:g} ms (docker-credential-credkeeper, cold process) "
              f"| {fmt(v)} ms {how}; docker-credential-pass {fmt(alone(stats, 'pass'))} ms "
              f"| {'met' if met else '**missed**'} |")
    nums = None if "cri" in sk else cri_numbers()
    if nums is None:
        why = sk.get("cri", "no results")
        print(f"| the CRI proxy adds < {goal_proxy_us / 1000:g} ms p99 per call (ImageStatus) "
              f"| not measured: {why} | — |")
        verdicts.append(None)
    else:
        add99 = statistics.median(nums[4])
        met = add99 < goal_proxy_us
        verdicts.append(met)
        print(f"| the CRI proxy adds < {goal_proxy_us / 1000:g} ms p99 per call (ImageStatus) "
              f"| {add99:+.0f} µs (median over {len(nums[2])} rounds; p50 {statistics.median(nums[3]):+.0f} µs) "
              f"| {'met' if met else '**missed**'} |")
    if "token" not in sk:
        rows = read_tsv("token.tsv")
        best = {}
        for r in rows:
            best[r[0]] = max(best.get(r[0], 0.0), float(r[3]))
        text = ", ".join(f"{alg} {rps:,.0f}/s" for alg, rps in best.items())
        print(f"| token server tokens per second (no goal set) | best of the connection counts: {text} | — |")
    if any(v is False for v in verdicts):
        return 3
    if any(v is None for v in verdicts):
        return 4
    return 0


if section == "helper":
    section_helper()
elif section == "token":
    section_token()
elif section == "cri":
    section_cri()
elif section == "goals":
    sys.exit(section_goals())
else:
    sys.exit(f"report.py: unknown section {section}")
