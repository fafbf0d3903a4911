#!/usr/bin/env python3
"""cri_pulls.py - full image pulls through CRI, timed in one process, for bench/registry.sh.

usage: cri_pulls.py IMAGE -n N [--warmup W] [--expect-ref REF] NAME=ENDPOINT [NAME=ENDPOINT ...]

For each of W untimed and then N timed iterations, and for each endpoint (the order rotates
every iteration, so a change of machine load hits all of them): RemoveImage IMAGE, then
PullImage IMAGE with AuthConfig username = $CRI_USERNAME, password = $CRI_PASSWORD (the
same credentials kubelet would pass); only the PullImage call is timed. Removing first makes
every pull a full one: containerd's CRI deletes the image synchronously and its content is
garbage-collected, so the next pull fetches manifest, config and layers again. One gRPC
channel per endpoint, connected before the first call (a kubelet keeps its channel open).
The image is removed at the end.

Prints one JSON object: {"NAME": {"endpoint", "n", "times_ms": [...], "median_ms",
"mean_ms", "min_ms", "max_ms"}, ...}. Exit 1 when a call fails or a pull answers another
image_ref than --expect-ref (or than the first pull). Runs with tests/testbed/venv-cri's
python (the stubs compiled by tests/testbed/setup-cri.sh).
"""
import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "testbed", ".cache", "cri-py"))

import grpc  # noqa: E402

import v1_pb2 as pb  # noqa: E402
import v1_pb2_grpc as pbg  # noqa: E402


def target(endpoint):
    if endpoint.startswith("unix:"):
        return endpoint
    if endpoint.startswith("/"):
        return "unix://" + endpoint
    return endpoint


def main():
    p = argparse.ArgumentParser(prog="cri_pulls.py")
    p.add_argument("image")
    p.add_argument("-n", type=int, required=True)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--expect-ref")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("endpoints", nargs="+", metavar="NAME=ENDPOINT")
    args = p.parse_args()
    if args.n < 1 or args.warmup < 0:
        p.error("-n must be >= 1 and --warmup >= 0")

    user = os.environ.get("CRI_USERNAME", "")
    password = os.environ.get("CRI_PASSWORD", "")
    auth = pb.AuthConfig(username=user, password=password) if user else None

    eps = []
    for item in args.endpoints:
        name, sep, ep = item.partition("=")
        if not sep or not name or not ep:
            p.error("endpoints are NAME=ENDPOINT")
        # :authority "localhost", as kubelet (grpc-go) sends on unix sockets.
        ch = grpc.insecure_channel(
            target(ep),
            options=[("grpc.enable_http_proxy", 0), ("grpc.default_authority", "localhost")],
        )
        grpc.channel_ready_future(ch).result(timeout=30)
        eps.append((name, ep, ch, pbg.ImageServiceStub(ch)))

    spec = pb.ImageSpec(image=args.image)
    expect = args.expect_ref
    times = {name: [] for name, _, _, _ in eps}

    def one(name, stub):
        nonlocal expect
        stub.RemoveImage(pb.RemoveImageRequest(image=spec), timeout=args.timeout)
        req = pb.PullImageRequest(image=spec)
        if auth is not None:
            req.auth.CopyFrom(auth)
        t0 = time.perf_counter_ns()
        resp = stub.PullImage(req, timeout=args.timeout)
        dt = (time.perf_counter_ns() - t0) / 1e6
        if expect is None:
            expect = resp.image_ref
        elif resp.image_ref != expect:
            raise SystemExit("cri_pulls.py: %s: PullImage answered image_ref %s, expected %s"
                             % (name, resp.image_ref, expect))
        return dt

    try:
        for i in range(args.warmup + args.n):
            k = i % len(eps)
            for name, _, _, stub in eps[k:] + eps[:k]:
                dt = one(name, stub)
                if i >= args.warmup:
                    times[name].append(dt)
        eps[0][3].RemoveImage(pb.RemoveImageRequest(image=spec), timeout=args.timeout)
    except grpc.RpcError as e:
        sys.stderr.write("cri_pulls.py: %s: %s\n" % (e.code().name, e.details()))
        return 1
    finally:
        for _, _, ch, _ in eps:
            ch.close()

    out = {}
    for name, ep, _, _ in eps:
        t = times[name]
        out[name] = {
            "endpoint": ep,
            "n": len(t),
            "image_ref": expect,
            "times_ms": [round(x, 3) for x in t],
            "median_ms": round(statistics.median(t), 3),
            "mean_ms": round(statistics.mean(t), 3),
            "min_ms": round(min(t), 3),
            "max_ms": round(max(t), 3),
        }
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
