#!/usr/bin/env bash
# The lines up to the closing quotes are bash: start venv-cri's python directly (a pyenv shim
# for python3 costs ~0.15 s per call), after setup-cri.sh when its READY stamp is missing or
# older than setup-cri.sh. For python they are a string; `python3 cri.py` works as well.
''':'
d=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$d/venv-cri/bin/python" ] || [ ! -e "$d/.cache/cri-py/READY" ] \
   || [ "$d/setup-cri.sh" -nt "$d/.cache/cri-py/READY" ]; then
  "$d/setup-cri.sh" >/dev/null || { echo "cri.py: $d/setup-cri.sh failed" >&2; exit 2; }
fi
exec "$d/venv-cri/bin/python" -I "$d/cri.py" "$@"
'''
__doc__ = """cri.py - a small CRI v1 client (runtime.v1 over gRPC) for the tests; it plays kubelet.

usage: cri.py [-e ENDPOINT] [--timeout S] COMMAND ...

  version [--wait S] [--wait-pid PID]   RuntimeService.Version -> JSON. --wait retries for up
                                        to S seconds until the runtime answers (readiness
                                        probe); --wait-pid gives up as soon as PID is gone.
  pull IMAGE [-u USER [-p PASS]] [--auth B64] [--identity-token T] [--registry-token T]
       [--server-address S] [--empty-auth] [--pod-name N --pod-namespace NS --pod-uid U]
                                        ImageService.PullImage -> prints image_ref. The
                                        password may come from CRI_PASSWORD instead of -p (not
                                        on the command line). No auth option: no AuthConfig at
                                        all (as kubelet does without credentials); --empty-auth
                                        sends an empty one. --pod-*: sandbox_config.metadata.
  images [--filter IMAGE] [-q]          ListImages -> JSON ({"images":[...]}, {} when there are
                                        none); -q: one line per repo tag (the image id when an
                                        image has none).
  status IMAGE [--verbose]              ImageStatus -> JSON; an absent image prints {} (CRI
                                        answers an empty response, not an error).
  rm IMAGE                              RemoveImage (removing an absent image succeeds).
  imagefsinfo                           ImageFsInfo -> JSON.
  bench-status IMAGE -n N [--warmup W]  N sequential ImageStatus calls on one channel after W
                                        untimed ones (default 1: the connect); prints JSON with
                                        n, found, min/mean/p50/p90/p99/max latency in
                                        microseconds (nearest-rank percentiles).

ENDPOINT: unix:///path, unix:path, /path (a unix socket) or host:port (plaintext TCP); default
CRI_ENDPOINT, else CONTAINERD_ENDPOINT (from start-containerd.sh's env file).

Exit status: 0 success; 1 the RPC failed - stderr then has one line
`cri.py: <Method>: <STATUS_CODE_NAME>: <message>` (e.g. UNKNOWN, NOT_FOUND, UNAVAILABLE) so a
test can check the status code and the runtime's message passed through a proxy unchanged;
2 usage errors; 3 anything else (a bug in cri.py). JSON goes to stdout on one line (proto
field names, uint64 as strings).

It runs in tests/testbed/venv-cri with the stubs compiled into tests/testbed/.cache/cri-py/ by
setup-cri.sh; started with any other python (or as a script, by the bash lines above) it runs
setup-cri.sh when needed (its READY stamp is missing or older than setup-cri.sh) and
re-executes itself with the venv's python.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, "venv-cri")
VPY = os.path.join(VENV, "bin", "python")
STUBS = os.path.join(HERE, ".cache", "cri-py")
SETUP = os.path.join(HERE, "setup-cri.sh")
PROG = "cri.py"


def bootstrap():
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    try:
        ok = os.stat(os.path.join(STUBS, "READY")).st_mtime >= os.stat(SETUP).st_mtime
    except FileNotFoundError:
        ok = False
    if not ok or not os.access(VPY, os.X_OK):
        r = subprocess.run([SETUP], stdout=subprocess.DEVNULL)
        if r.returncode != 0:
            sys.stderr.write("%s: %s failed (exit %d)\n" % (PROG, SETUP, r.returncode))
            sys.exit(2)
    os.execv(VPY, [VPY, "-I", os.path.abspath(__file__)] + sys.argv[1:])


bootstrap()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, STUBS)
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

import v1_pb2 as pb  # noqa: E402
import v1_pb2_grpc as pbg  # noqa: E402


class RpcFailed(Exception):
    def __init__(self, method, err):
        super().__init__(method)
        self.method = method
        self.err = err

    def line(self):
        code = self.err.code() if hasattr(self.err, "code") else None
        name = code.name if code is not None else "UNKNOWN"
        details = self.err.details() if hasattr(self.err, "details") else str(self.err)
        return "%s: %s: %s: %s" % (PROG, self.method, name, details)


def target(endpoint):
    if endpoint.startswith("unix:"):
        return endpoint
    if endpoint.startswith("/"):
        return "unix://" + endpoint
    return endpoint


def channel(args):
    return grpc.insecure_channel(
        target(args.endpoint),
        options=[
            ("grpc.enable_http_proxy", 0),
            ("grpc.max_receive_message_length", 64 << 20),
            # kubelet (grpc-go) sends :authority "localhost" on unix sockets; grpc's C core
            # would send the percent-encoded socket path, which strict HTTP/2 servers refuse.
            ("grpc.default_authority", "localhost"),
        ],
    )


def call(fn, method, req, timeout):
    try:
        return fn(req, timeout=timeout)
    except grpc.RpcError as e:
        raise RpcFailed(method, e)


def out_json(msg):
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    print(json.dumps(d, sort_keys=True, separators=(",", ":")))


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def cmd_version(args, ch):
    rt = pbg.RuntimeServiceStub(ch)
    req = pb.VersionRequest(version="v1")
    if not args.wait:
        out_json(call(rt.Version, "Version", req, args.timeout))
        return 0
    deadline = time.monotonic() + args.wait
    last = None
    while True:
        try:
            out_json(call(rt.Version, "Version", req, min(args.timeout, 2.0)))
            return 0
        except RpcFailed as e:
            last = e
        if args.wait_pid and not pid_alive(args.wait_pid):
            sys.stderr.write("%s: pid %d exited before the runtime answered; last: %s\n"
                             % (PROG, args.wait_pid, last.line()))
            return 1
        if time.monotonic() >= deadline:
            sys.stderr.write("%s: no answer within %s s; last: %s\n" % (PROG, args.wait, last.line()))
            return 1
        time.sleep(0.02)


def cmd_pull(args, ch):
    img = pbg.ImageServiceStub(ch)
    req = pb.PullImageRequest(image=pb.ImageSpec(image=args.image))
    password = args.password
    if password is None and args.username:
        password = os.environ.get("CRI_PASSWORD", "")
    fields = {
        "username": args.username,
        "password": password,
        "auth": args.auth,
        "server_address": args.server_address,
        "identity_token": args.identity_token,
        "registry_token": args.registry_token,
    }
    fields = {k: v for k, v in fields.items() if v}
    if fields or args.empty_auth:
        req.auth.CopyFrom(pb.AuthConfig(**fields))
    if args.pod_name or args.pod_namespace or args.pod_uid:
        req.sandbox_config.metadata.CopyFrom(pb.PodSandboxMetadata(
            name=args.pod_name or "", namespace=args.pod_namespace or "", uid=args.pod_uid or ""))
    resp = call(img.PullImage, "PullImage", req, args.timeout)
    print(resp.image_ref)
    return 0


def cmd_images(args, ch):
    img = pbg.ImageServiceStub(ch)
    req = pb.ListImagesRequest()
    if args.filter:
        req.filter.image.image = args.filter
    resp = call(img.ListImages, "ListImages", req, args.timeout)
    if args.quiet:
        for i in resp.images:
            for t in (i.repo_tags or [i.id]):
                print(t)
    else:
        out_json(resp)
    return 0


def cmd_status(args, ch):
    img = pbg.ImageServiceStub(ch)
    req = pb.ImageStatusRequest(image=pb.ImageSpec(image=args.image), verbose=args.verbose)
    out_json(call(img.ImageStatus, "ImageStatus", req, args.timeout))
    return 0


def cmd_rm(args, ch):
    img = pbg.ImageServiceStub(ch)
    call(img.RemoveImage, "RemoveImage", pb.RemoveImageRequest(image=pb.ImageSpec(image=args.image)),
         args.timeout)
    return 0


def cmd_imagefsinfo(args, ch):
    img = pbg.ImageServiceStub(ch)
    out_json(call(img.ImageFsInfo, "ImageFsInfo", pb.ImageFsInfoRequest(), args.timeout))
    return 0


def cmd_bench_status(args, ch):
    if args.n < 1 or args.warmup < 0:
        sys.stderr.write("%s: bench-status: -n must be >= 1 and --warmup >= 0\n" % PROG)
        return 2
    img = pbg.ImageServiceStub(ch)
    req = pb.ImageStatusRequest(image=pb.ImageSpec(image=args.image))
    fn = img.ImageStatus
    for _ in range(args.warmup):
        call(fn, "ImageStatus", req, args.timeout)
    lat = []
    found = None
    t_all = time.perf_counter_ns()
    for _ in range(args.n):
        t0 = time.perf_counter_ns()
        resp = call(fn, "ImageStatus", req, args.timeout)
        lat.append(time.perf_counter_ns() - t0)
        if found is None:
            found = resp.HasField("image")
    total_ns = time.perf_counter_ns() - t_all
    lat.sort()

    def pct(p):
        return lat[max(0, math.ceil(p / 100.0 * len(lat)) - 1)] / 1000.0

    print(json.dumps({
        "method": "ImageStatus",
        "image": args.image,
        "endpoint": args.endpoint,
        "n": len(lat),
        "warmup": args.warmup,
        "found": bool(found),
        "min_us": round(lat[0] / 1000.0, 1),
        "mean_us": round(sum(lat) / len(lat) / 1000.0, 1),
        "p50_us": round(pct(50), 1),
        "p90_us": round(pct(90), 1),
        "p99_us": round(pct(99), 1),
        "max_us": round(lat[-1] / 1000.0, 1),
        "total_ms": round(total_ns / 1e6, 1),
    }, separators=(",", ":")))
    return 0


def parser():
    default_ep = os.environ.get("CRI_ENDPOINT") or os.environ.get("CONTAINERD_ENDPOINT")
    p = argparse.ArgumentParser(prog=PROG, description="A small CRI v1 client for the tests.")
    p.add_argument("-e", "--endpoint", default=default_ep,
                   help="unix:///path, /path or host:port (default: CRI_ENDPOINT, CONTAINERD_ENDPOINT)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-call deadline in seconds (60)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("version")
    s.add_argument("--wait", type=float, default=0.0)
    s.add_argument("--wait-pid", type=int, default=0)
    s.set_defaults(fn=cmd_version)

    s = sub.add_parser("pull")
    s.add_argument("image")
    s.add_argument("-u", "--username")
    s.add_argument("-p", "--password")
    s.add_argument("--auth", help="base64(user:pass)")
    s.add_argument("--identity-token")
    s.add_argument("--registry-token")
    s.add_argument("--server-address")
    s.add_argument("--empty-auth", action="store_true")
    s.add_argument("--pod-name")
    s.add_argument("--pod-namespace")
    s.add_argument("--pod-uid")
    s.set_defaults(fn=cmd_pull)

    s = sub.add_parser("images")
    s.add_argument("--filter")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(fn=cmd_images)

    s = sub.add_parser("status")
    s.add_argument("image")
    s.add_argument("--verbose", action="store_true")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("rm")
    s.add_argument("image")
    s.set_defaults(fn=cmd_rm)

    s = sub.add_parser("imagefsinfo")
    s.set_defaults(fn=cmd_imagefsinfo)

    s = sub.add_parser("bench-status")
    s.add_argument("image")
    s.add_argument("-n", type=int, required=True)
    s.add_argument("--warmup", type=int, default=1)
    s.set_defaults(fn=cmd_bench_status)
    return p


def main():
    args = parser().parse_args()
    if not args.endpoint:
        sys.stderr.write("%s: no endpoint: pass -e or set CRI_ENDPOINT\n" % PROG)
        return 2
    ch = channel(args)
    try:
        return args.fn(args, ch)
    except RpcFailed as e:
        sys.stderr.write(e.line() + "\n")
        return 1
    except Exception:  # a bug here, not an RPC error: keep exit 1 for those
        import traceback
        traceback.print_exc()
        return 3
    finally:
        ch.close()


if __name__ == "__main__":
    sys.exit(main())
