#!/usr/bin/env bash
# validate-deploy.sh - check every file under deploy/ without a container engine or cluster.
#
#   Kubernetes   every manifest under deploy/kubernetes/ against the Kubernetes OpenAPI
#                schemas with kubernetes-validate --strict (PyPI, pinned below), for each
#                version in KUBE_VERSIONS; then what the manifests rely on: references
#                between them, the security contexts, the keytab's 0440 mode, the paths
#                in environment variables and broker.toml lying on mounted volumes.
#   Tasks        deploy/kubernetes/tasks/: the tasks.yaml and values.yaml inside the
#                ConfigMap parsed, the CronJob matching its task (schedule, deadline,
#                concurrency, exit status), the scheduler Deployment (one replica,
#                grace), definitions/secrets/JWT/state/XDG_RUNTIME_DIR on the right
#                volumes, the broker [[robot]] in serviceaccount.yaml covering what the
#                tasks ask for; `credkeeper tasks validate` on both files with the
#                binary given as $1 (the test command passes its build), else
#                target/debug/credkeeper when it exists.
#   Fleet        deploy/kubernetes/broker-fleet.yaml: replicas >= 2, rolling update with
#                maxUnavailable 0, a PodDisruptionBudget selecting its pods, anti-affinity
#                across nodes, readiness /readyz and liveness /healthz, [store] url a
#                verify-full PostgreSQL URL, its password, CA and sealing key files from
#                Secrets (mounted, or copied 0600 by the init container; none in the
#                environment), nothing persistent per replica.
#   Compose      deploy/compose.yaml parsed with PyYAML: services, user, read-only keytab,
#                token volume, the application reading the token read-only;
#                deploy/compose.fleet.yaml: postgres:15 with TLS, SCRAM-only pg_hba.conf
#                and a TCP healthcheck, >= 2 broker replicas started once it is healthy,
#                their broker.toml (compose-fleet/) pointing at it with secret files.
#   systemd      deploy/systemd/*: `systemd-analyze verify` (and `security --offline`)
#                when it runs here, and the keys the units rely on in any case
#                (credkeeper-tasks.service: reload, stop timeout > --grace, directories).
#   Dockerfile   multi-stage, build and runtime images, packages, non-root USER,
#                ENTRYPOINT credkeeper get, ENV defaults, argv0 links.
#   Any other    *.yaml / *.yml under deploy/ must at least parse.
#
# Installs kubernetes-validate into tests/testbed/venv-deploy on first use (pip, cache in
# tests/testbed/.cache/pip); later runs find the stamp file and start at once.
# Prints `ok NAME` / `FAIL NAME: why` and ends with "N passed, M failed"; exit 1 on failure.
#
# KUBE_VERSIONS  Kubernetes versions to validate against (default "1.30.0 1.37.0": a
#                version still widely run and the newest kubernetes-validate 1.37.0 ships).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ROOT=$(cd "$TESTBED_DIR/../.." && pwd)
KUBE_VERSIONS=${KUBE_VERSIONS:-1.30.0 1.37.0}

# --- the venv -----------------------------------------------------------------------------
PINS=(kubernetes-validate==1.37.0)
# What kubernetes-validate 1.37.0 pulls in, pinned so reruns install the same thing.
CONSTRAINTS=(
  attrs==26.1.0
  importlib_resources==7.1.0
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  packaging==26.4
  PyYAML==6.0.4
  referencing==0.37.0
  rpds-py==2026.9.1
  typing_extensions==4.16.0
)
VENV=$TESTBED_DIR/venv-deploy
VPY=$VENV/bin/python
STAMP=$VENV/.deploy-pins
CACHE=$TESTBED_DIR/.cache
pin_key() { printf '%s ' "${PINS[@]}" -- "${CONSTRAINTS[@]}"; }

venv_ok() { venv_stamp_ok "$VPY" "$STAMP" "$(pin_key)"; }

if ! venv_ok; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/venv-deploy.lock"
  flock -w 600 9 || die "timed out waiting for $CACHE/venv-deploy.lock"
  if ! venv_ok; then
    venv_prepare "$VENV" "$STAMP"
    # Not part of the repository (the way Python 3.13's venv does it by itself).
    echo '*' >"$VENV/.gitignore"
    log "installing ${PINS[*]} into $VENV"
    constraints=$(mktemp "$CACHE/deploy-constraints.XXXXXX")
    printf '%s\n' "${CONSTRAINTS[@]}" >"$constraints"
    PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$VPY" -m pip install -q \
      --cache-dir "$CACHE/pip" -c "$constraints" "${PINS[@]}" >&2
    rm -f "$constraints"
    "$VENV/bin/kubernetes-validate" --version >/dev/null || die "kubernetes-validate does not run"
    venv_stamp_write "$VPY" "$STAMP" "$(pin_key)"
  fi
  exec 9>&-
fi

# --- the checks (one Python process) --------------------------------------------------------
exec "$VPY" - "$ROOT" "$VENV/bin/kubernetes-validate" "$KUBE_VERSIONS" "${1:-}" <<'PY'
import base64, glob, json, os, re, shlex, shutil, subprocess, sys, tempfile, tomllib, urllib.parse
import yaml

root, kv, kube_versions = sys.argv[1], sys.argv[2], sys.argv[3].split()
# The binary named on the command line (the test command passes the one it built) must be
# there; without one, target/debug/credkeeper is used when it exists.
binary_given = sys.argv[4]
deploy = os.path.join(root, "deploy")
passed = failed = 0


def ok(name):
    global passed
    passed += 1
    print(f"ok   {name}")


def fail(name, why=""):
    global failed
    failed += 1
    print(f"FAIL {name}{': ' + why if why else ''}")


def check(name, cond, why=""):
    ok(name) if cond else fail(name, why)
    return cond


def rel(p):
    return os.path.relpath(p, root)


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


# ---------------------------------------------------------------- every YAML parses
yamls = sorted(glob.glob(f"{deploy}/**/*.yaml", recursive=True)
               + glob.glob(f"{deploy}/**/*.yml", recursive=True))
docs = {}
for f in yamls:
    try:
        with open(f) as fh:
            docs[f] = [d for d in yaml.safe_load_all(fh) if d is not None]
        ok(f"{rel(f)} parses as YAML")
    except Exception as e:
        fail(f"{rel(f)} parses as YAML", str(e).replace("\n", " "))

# ---------------------------------------------------------------- Kubernetes: schemas
kdir = os.path.join(deploy, "kubernetes")
kfiles = [f for f in yamls if under(f, kdir)]
check("deploy/kubernetes has manifests", len(kfiles) >= 10, f"{len(kfiles)} files")


def kube_validate(files):
    args = [kv, "--strict"]
    for v in kube_versions:
        args += ["-k", v]
    r = subprocess.run(args + files, capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).splitlines()


rc, lines = kube_validate(kfiles)
seen = 0
for line in lines:
    if line.startswith("INFO ") and " passed for resource " in line:
        seen += 1
        m = re.match(r"INFO (\S+) passed for resource (\S+) against version (\S+)", line)
        ok(f"kubernetes-validate --strict {rel(m.group(1))} {m.group(2)} (Kubernetes {m.group(3)})")
    elif line.strip():
        # ERROR (schema violation), WARN (unknown kind/apiVersion: no schema), FATAL.
        fail("kubernetes-validate --strict", line)
ndocs = sum(len(docs.get(f, [])) for f in kfiles)
check(f"every manifest validated against {', '.join(kube_versions)}",
      rc == 0 and seen == ndocs * len(kube_versions),
      f"rc {rc}, {seen} results for {ndocs} resources x {len(kube_versions)} versions")

# The validator is live: --strict rejects an unknown field, and an unknown kind is not
# silently waved through (kubernetes-validate only warns about those: counted as failure).
with tempfile.TemporaryDirectory() as t:
    bad = os.path.join(t, "bad.yaml")
    with open(bad, "w") as fh:
        yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "x", "bogusField": 1}, "data": {}}, fh)
    rc, out = kube_validate([bad])
    check("kubernetes-validate --strict rejects an unknown field", rc != 0
          and any(l.startswith("ERROR") for l in out), " / ".join(out))
    with open(bad, "w") as fh:
        yaml.safe_dump({"apiVersion": "batch/v1", "kind": "CronJobb",
                        "metadata": {"name": "x"}}, fh)
    rc, out = kube_validate([bad])
    check("an unknown kind is reported (WARN, failed here)",
          any(l.startswith("WARN") for l in out), " / ".join(out))

# ---------------------------------------------------------------- Kubernetes: what we rely on
resources = {}
for f in kfiles:
    for d in docs.get(f, []):
        if isinstance(d, dict) and "kind" in d:
            resources[(d["kind"], d.get("metadata", {}).get("name"))] = (f, d)


def res(kind, name):
    return resources.get((kind, name), (None, None))[1]


def pod_spec(d):
    if d["kind"] == "CronJob":
        return d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return d["spec"]["template"]["spec"]
    return None


def env_of(c):
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def mount_of(c, path):
    """The volumeMount whose mountPath holds path (the longest one)."""
    best = None
    for m in c.get("volumeMounts", []):
        if under(path, m["mountPath"]) and (best is None or len(m["mountPath"]) > len(best["mountPath"])):
            best = m
    return best


def volume(spec, name):
    return next((v for v in spec.get("volumes", []) if v["name"] == name), None)


def file_in_volume(spec, c, path):
    """Whether path names a file that the mounted Secret/ConfigMap/projected volume holds."""
    m = mount_of(c, path)
    if not m:
        return False
    v = volume(spec, m["name"])
    name = os.path.relpath(path, m["mountPath"])
    if "secret" in v or "configMap" in v:
        src = v.get("secret") or v.get("configMap")
        items = src.get("items")
        if items:
            return any(i["path"] == name for i in items)
        obj = res("Secret", src.get("secretName")) if "secret" in v else res("ConfigMap", src.get("name"))
        return obj is not None and name in {**obj.get("data", {}), **obj.get("stringData", {})}
    if "projected" in v:
        return any(s.get("serviceAccountToken", {}).get("path") == name for s in v["projected"]["sources"])
    return True  # PVC / emptyDir: any name


# References resolve: every Secret, ConfigMap (unless optional), PVC and ServiceAccount a
# pod names is one of the manifests.
for (kind, name), (f, d) in sorted(resources.items()):
    spec = pod_spec(d)
    if spec is None:
        continue
    for v in spec.get("volumes", []):
        if "secret" in v:
            check(f"{kind}/{name}: Secret {v['secret']['secretName']} is in deploy/kubernetes",
                  res("Secret", v["secret"]["secretName"]) is not None)
        if "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            check(f"{kind}/{name}: PersistentVolumeClaim {claim} is in deploy/kubernetes",
                  res("PersistentVolumeClaim", claim) is not None)
        if "configMap" in v and not v["configMap"].get("optional"):
            check(f"{kind}/{name}: ConfigMap {v['configMap']['name']} is in deploy/kubernetes",
                  res("ConfigMap", v["configMap"]["name"]) is not None)
    if spec.get("serviceAccountName"):
        check(f"{kind}/{name}: ServiceAccount {spec['serviceAccountName']} is in deploy/kubernetes",
              res("ServiceAccount", spec["serviceAccountName"]) is not None)
    # Hardened pods: non-root, no privilege escalation, read-only root file system with a
    # writable /tmp (the image's CREDKEEPER_STATE_DIR is /tmp/credkeeper).
    psc = spec.get("securityContext", {})
    check(f"{kind}/{name}: runAsNonRoot with runAsUser/runAsGroup",
          psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) > 0 and psc.get("runAsGroup", 0) > 0,
          json.dumps(psc))
    for c in spec.get("initContainers", []) + spec["containers"]:
        csc = c.get("securityContext", {})
        check(f"{kind}/{name}/{c['name']}: readOnlyRootFilesystem, no privilege escalation, no capabilities",
              csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
              and csc.get("capabilities", {}).get("drop") == ["ALL"], json.dumps(csc))
        if "credkeeper" in c["image"] and c in spec["containers"]:
            check(f"{kind}/{name}/{c['name']}: /tmp is a writable volume (CREDKEEPER_STATE_DIR)",
                  mount_of(c, "/tmp/credkeeper") is not None
                  and not mount_of(c, "/tmp/credkeeper").get("readOnly"))


def runs_tasks(c):
    """Whether a container runs `credkeeper tasks …` (checked in the tasks section)."""
    return c.get("command", [])[:2] == ["credkeeper", "tasks"]


robots = {}  # CronJob name -> (spec, container, env): the `credkeeper get` robots
for kind, name in resources:
    if kind != "CronJob":
        continue
    d = res(kind, name)
    spec = pod_spec(d)
    c = spec["containers"][0]
    if runs_tasks(c):
        continue
    env = env_of(c)
    robots[name] = (spec, c, env)
    psc = spec["securityContext"]
    check(f"CronJob/{name}: hourly, concurrencyPolicy Forbid",
          d["spec"]["schedule"].split()[:1] == ["0"] and d["spec"]["schedule"].split()[1:] == ["*"] * 4
          and d["spec"].get("concurrencyPolicy") == "Forbid",
          f"{d['spec']['schedule']!r} {d['spec'].get('concurrencyPolicy')}")
    check(f"CronJob/{name}: fsGroup set (group-readable secrets, group-writable token volume)",
          psc.get("fsGroup", 0) > 0)
    check(f"CronJob/{name}: the image's `credkeeper get` entrypoint, --minsecs in args",
          "command" not in c and "--minsecs" in c.get("args", []))
    check(f"CronJob/{name}: CREDKEEPER_SERVER is an https URL",
          (env.get("CREDKEEPER_SERVER") or "").startswith("https://"), str(env.get("CREDKEEPER_SERVER")))
    btf = env.get("BEARER_TOKEN_FILE") or "/tokens/bt"
    m = mount_of(c, btf)
    check(f"CronJob/{name}: BEARER_TOKEN_FILE {btf} is on the writable tokens PVC",
          m is not None and not m.get("readOnly")
          and "persistentVolumeClaim" in (volume(spec, m["name"]) or {}))
    if "CREDKEEPER_JWT_FILE" in env:
        jwt = env["CREDKEEPER_JWT_FILE"]
        check(f"CronJob/{name}: CREDKEEPER_JWT_FILE {jwt} is the projected service-account token",
              file_in_volume(spec, c, jwt))
        v = volume(spec, mount_of(c, jwt)["name"]) if mount_of(c, jwt) else {}
        sat = next((s["serviceAccountToken"] for s in v.get("projected", {}).get("sources", [])
                    if "serviceAccountToken" in s), {})
        check(f"CronJob/{name}: the projected token's audience is the broker URL",
              sat.get("audience") == env.get("CREDKEEPER_SERVER"), f"{sat.get('audience')} != {env.get('CREDKEEPER_SERVER')}")
        check(f"CronJob/{name}: the projected token lives at least 600 s (the API minimum)",
              sat.get("expirationSeconds", 3600) >= 600)
        check(f"CronJob/{name}: runs as its ServiceAccount, no API token mounted",
              bool(spec.get("serviceAccountName")) and spec.get("automountServiceAccountToken") is False)
    else:
        kt = env.get("KRB5_KTNAME") or "/keytab"
        check(f"CronJob/{name}: KRB5_KTNAME {kt} is a file of the mounted keytab Secret",
              file_in_volume(spec, c, kt))
        m = mount_of(c, kt)
        v = volume(spec, m["name"]) if m else {}
        check(f"CronJob/{name}: keytab mounted read-only", bool(m) and m.get("readOnly") is True)
        # credkeeper refuses keytabs others can read or the group can write; 0440 is the
        # mode that works with fsGroup for a non-root uid (and what the kubelet makes of
        # 0400 with fsGroup anyway).
        mode = v.get("secret", {}).get("defaultMode")
        check(f"CronJob/{name}: keytab Secret defaultMode 0440",
              mode == 0o440, f"{oct(mode) if isinstance(mode, int) else mode}")
        item_modes = [i.get("mode") for i in v.get("secret", {}).get("items", []) if "mode" in i]
        check(f"CronJob/{name}: no item mode overrides the keytab's 0440",
              all(x is not None and x & 0o027 == 0 for x in item_modes), str(item_modes))

# The application reads what the CronJobs write, as the same uid, read-only.
app = res("Deployment", "my-application")
if check("Deployment/my-application exists", app is not None):
    spec = pod_spec(app)
    c = spec["containers"][0]
    btf = env_of(c).get("BEARER_TOKEN_FILE")
    m = mount_of(c, btf or "/nonexistent")
    v = volume(spec, m["name"]) if m else {}
    check("Deployment/my-application: BEARER_TOKEN_FILE is on the tokens PVC, mounted read-only",
          m is not None and m.get("readOnly") is True and "persistentVolumeClaim" in v, str(btf))
    for name, (rspec, rc_, renv) in robots.items():
        rb = renv.get("BEARER_TOKEN_FILE") or "/tokens/bt"
        rm = mount_of(rc_, rb)
        same_claim = m and rm and v.get("persistentVolumeClaim", {}).get("claimName") == \
            volume(rspec, rm["name"])["persistentVolumeClaim"]["claimName"]
        check(f"Deployment/my-application reads CronJob/{name}'s token file",
              bool(same_claim) and os.path.relpath(btf, m["mountPath"]) == os.path.relpath(rb, rm["mountPath"]))
        check(f"Deployment/my-application runs as CronJob/{name}'s uid (the token is 0600)",
              spec["securityContext"].get("runAsUser") == rspec["securityContext"].get("runAsUser"))

# The token PVC can be shared across nodes.
pvc = res("PersistentVolumeClaim", "tokens")
check("PersistentVolumeClaim/tokens is ReadWriteMany",
      pvc is not None and "ReadWriteMany" in pvc["spec"]["accessModes"])

# The broker: its configuration parses, and every path in it is where a volume puts it.
cm = res("ConfigMap", "credkeeper-broker-config")
broker = res("Deployment", "credkeeper-broker")
if check("broker: ConfigMap and Deployment exist", cm is not None and broker is not None):
    try:
        conf = tomllib.loads(cm["data"]["broker.toml"])
        ok("broker: broker.toml parses as TOML")
    except Exception as e:
        conf = {}
        fail("broker: broker.toml parses as TOML", str(e))
    spec = pod_spec(broker)
    c = next(c for c in spec["containers"] if c["name"] == "broker")
    check("broker: runs `credkeeper serve --config` with the ConfigMap's broker.toml",
          c.get("command", [])[:2] == ["credkeeper", "serve"]
          and file_in_volume(spec, c, c["command"][c["command"].index("--config") + 1]))
    check("broker: one replica, Recreate (one SQLite store, one refresher)",
          broker["spec"].get("replicas") == 1 and broker["spec"].get("strategy", {}).get("type") == "Recreate")
    server = conf.get("server", {})
    listen_port = int(server.get("listen", ":0").rsplit(":", 1)[1])
    check("broker: the container port is the listen port",
          any(p["containerPort"] == listen_port for p in c.get("ports", [])))
    svc = res("Service", "credkeeper-broker")
    check("broker: the Service selects the broker's pods",
          svc is not None and all(broker["spec"]["template"]["metadata"]["labels"].get(k) == val
                                  for k, val in svc["spec"]["selector"].items()))
    sd = server.get("state_dir", "")
    m = mount_of(c, sd)
    check(f"broker: state_dir {sd} is a subdirectory of the state PVC (the broker chmods it 0700)",
          m is not None and sd != m["mountPath"] and not m.get("readOnly")
          and "persistentVolumeClaim" in volume(spec, m["name"]))
    check("broker: kerberos_keytab is a file of the mounted keytab Secret (0440)",
          file_in_volume(spec, c, server.get("kerberos_keytab", "-"))
          and volume(spec, mount_of(c, server["kerberos_keytab"])["name"])["secret"].get("defaultMode") == 0o440)
    # tls_key must be 0600: not a Secret volume (root's, 0440 with fsGroup) but the
    # memory volume the init container copies it to.
    key = server.get("tls_key", "-")
    mk = mount_of(c, key)
    vk = volume(spec, mk["name"]) if mk else {}
    init = " ".join(" ".join(i.get("command", []) + i.get("args", [])) for i in spec.get("initContainers", []))
    check("broker: tls_key is copied 0600 to an emptyDir by an init container",
          "emptyDir" in vk and f"install -m 0600" in init and key in init, key)
    check("broker: tls_cert is where the init container puts it",
          mount_of(c, server.get("tls_cert", "-")) == mk and server.get("tls_cert", "-") in init)
    for r in conf.get("robot", []):
        a = r.get("auth", {})
        if "jwt_subject" in a:
            m_ = re.match(r"system:serviceaccount:[^:]+:(.+)$", a["jwt_subject"])
            check(f"broker: robot {r['name']}'s jwt_subject is serviceaccount.yaml's ServiceAccount",
                  bool(m_) and res("ServiceAccount", m_.group(1)) is not None, a["jwt_subject"])
            auds = {renv.get("CREDKEEPER_SERVER") for n, (_, _, renv) in robots.items() if "CREDKEEPER_JWT_FILE" in renv}
            check(f"broker: robot {r['name']}'s jwt_audience is the projected token's audience",
                  a.get("jwt_audience", conf.get("issuer", {}).get("url")) in auds, str(auds))
        for key_ in ("scopes", "audiences", "providers"):
            check(f"broker: robot {r['name']} has {key_}", bool(r.get(key_)))
    check("broker: a Kerberos robot and a JWT robot are configured",
          any("kerberos_principal" in r.get("auth", {}) for r in conf.get("robot", []))
          and any("jwt_issuer" in r.get("auth", {}) for r in conf.get("robot", [])))
    lifetime = conf.get("issuer", {}).get("lifetime", 1200)
    check("broker: tokens outlive --minsecs 3600 plus the hourly schedule",
          lifetime > 3600 and all(r.get("max_lifetime", lifetime) > 3600 for r in conf.get("robot", [])),
          f"lifetime {lifetime}")

# ---------------------------------------------------------------- Kubernetes: the broker fleet
# broker-fleet.yaml: several `credkeeper serve` on one PostgreSQL store. What a fleet relies
# on: enough replicas that never all go at once (rolling update, PDB, spread over nodes),
# readiness that follows the database, the shared secrets as mounted files, nothing kept
# per replica.


def ports_of(c):
    return {p.get("name"): p["containerPort"] for p in c.get("ports", [])}


def probe_port(c, probe):
    """The container port a httpGet probe (or a Service's targetPort) names."""
    p = probe.get("port") if isinstance(probe, dict) else probe
    return ports_of(c).get(p) if isinstance(p, str) else p


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def secret_item(spec, c, path):
    """(Secret name, key) of the file `path` when a mounted Secret volume holds it."""
    m = mount_of(c, path)
    v = volume(spec, m["name"]) if m else None
    if not v or "secret" not in v or not file_in_volume(spec, c, path):
        return None
    name = os.path.relpath(path, m["mountPath"])
    key = next((i["key"] for i in v["secret"].get("items") or [] if i["path"] == name), name)
    return v["secret"]["secretName"], key


def from_secret(spec, c, path):
    """(Secret name, key) the file `path` comes from: a file of a mounted Secret volume, or
    the 0600 copy an init container makes of one (`install -m 0600 SRC path` into the
    same memory volume)."""
    direct = secret_item(spec, c, path)
    if direct:
        return direct
    m = mount_of(c, path)
    v = volume(spec, m["name"]) if m else None
    if not v or "emptyDir" not in v:
        return None
    for ic in spec.get("initContainers", []):
        script = " ".join(ic.get("command", []) + ic.get("args", []))
        for src, dst in re.findall(r"install -m 0?600 (\S+) (\S+)", script):
            im = mount_of(ic, dst)
            if dst == path and im and im["name"] == m["name"] and im["mountPath"] == m["mountPath"]:
                return secret_item(spec, ic, src)
    return None


def keys_of(obj):
    return set((obj or {}).get("data", {})) | set((obj or {}).get("stringData", {}))


fcm = res("ConfigMap", "credkeeper-broker-fleet-config")
fleet = res("Deployment", "credkeeper-broker-fleet")
if check("fleet: ConfigMap credkeeper-broker-fleet-config and Deployment credkeeper-broker-fleet exist",
         fcm is not None and fleet is not None):
    try:
        fconf = tomllib.loads(fcm["data"]["broker.toml"])
        ok("fleet: broker.toml parses as TOML")
    except Exception as e:
        fconf = {}
        fail("fleet: broker.toml parses as TOML", str(e))
    fspec = pod_spec(fleet)
    fc = next((c for c in fspec["containers"] if c["name"] == "broker"), fspec["containers"][0])
    labels = fleet["spec"]["template"]["metadata"].get("labels", {})
    argv = fc.get("command", [])
    cfg = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    cm_ = mount_of(fc, cfg or "/nonexistent")
    check("fleet: runs `credkeeper serve --config` with the ConfigMap's broker.toml",
          argv[:2] == ["credkeeper", "serve"] and cfg is not None and file_in_volume(fspec, fc, cfg)
          and (volume(fspec, cm_["name"]) or {}).get("configMap", {}).get("name") == "credkeeper-broker-fleet-config",
          str(argv))
    check("fleet: the Deployment's selector matches its pods",
          labels_match(fleet["spec"]["selector"].get("matchLabels"), labels))
    replicas = fleet["spec"].get("replicas", 1)
    check(f"fleet: at least 2 replicas ({replicas})", isinstance(replicas, int) and replicas >= 2)
    strat = fleet["spec"].get("strategy", {})
    ru = strat.get("rollingUpdate", {})
    surge = ru.get("maxSurge", "25%")
    check("fleet: rolling update, maxUnavailable 0, maxSurge at least 1 (a new pod ready before an old one goes)",
          strat.get("type", "RollingUpdate") == "RollingUpdate" and str(ru.get("maxUnavailable")) in ("0", "0%")
          and (surge >= 1 if isinstance(surge, int) else str(surge).rstrip("%") not in ("0", "")), json.dumps(strat))

    # The store: PostgreSQL, TLS verified, its secrets as files from Secrets.
    server = fconf.get("server", {})
    store = fconf.get("store", {})
    url = urllib.parse.urlsplit(store.get("url", ""))
    q = urllib.parse.parse_qs(url.query)
    check("fleet: [store] url is a PostgreSQL URL with sslmode=verify-full and no password in it",
          url.scheme in ("postgres", "postgresql") and bool(url.hostname) and q.get("sslmode") == ["verify-full"]
          and url.password is None, store.get("url", "(none)"))
    check("fleet: no SQLite settings in [store] (path, backend sqlite)",
          "path" not in store and store.get("backend", "postgres") == "postgres", json.dumps(store))
    pw = store.get("password_file")
    src = from_secret(fspec, fc, pw or "/nonexistent")
    check(f"fleet: [store] password_file {pw} is a Secret's file (mounted, or copied 0600 by an init container)",
          src is not None and src[1] in keys_of(res("Secret", src[0])), str(src))
    kf = store.get("key_file")
    ksrc = from_secret(fspec, fc, kf or "/nonexistent")
    check(f"fleet: [store] key_file {kf} is a Secret's file (mounted, or copied 0600 by an init container): "
          "the same on every replica", ksrc is not None and ksrc[1] in keys_of(res("Secret", ksrc[0])), str(ksrc))
    kv_ = next((v for v in fspec.get("volumes", []) if ksrc and v.get("secret", {}).get("secretName") == ksrc[0]), {})
    kmodes = [kv_.get("secret", {}).get("defaultMode", 0o644)] + \
        [i["mode"] for i in kv_.get("secret", {}).get("items") or [] if "mode" in i]
    check("fleet: the sealing key's mode is 0600, 0400 or 0440 (0440: group read through fsGroup)",
          all(m_ in (0o600, 0o400, 0o440) for m_ in kmodes), str([oct(m_) for m_ in kmodes]))
    check("fleet: the sealing key is not under state_dir (each replica's own)",
          bool(kf) and not under(kf, server.get("state_dir", "/nonexistent")))
    ca = store.get("ca_file")
    cam = mount_of(fc, ca or "/nonexistent")
    check(f"fleet: [store] ca_file {ca} is a file of a mounted Secret or ConfigMap",
          ca is not None and file_in_volume(fspec, fc, ca)
          and any(k_ in (volume(fspec, cam["name"]) or {}) for k_ in ("secret", "configMap")), str(ca))
    pool = store.get("pool_size", 8)
    surge_n = surge if isinstance(surge, int) else 1
    check(f"fleet: (replicas + maxSurge) x pool_size = {(replicas + surge_n) * pool} connections fit "
          "PostgreSQL's default max_connections (100)", (replicas + surge_n) * pool <= 100)
    secret_env = []
    for c in fspec.get("initContainers", []) + fspec["containers"]:
        for e in c.get("env", []):
            if "secretKeyRef" in e.get("valueFrom", {}) or re.search(r"PASSWORD|SECRET|_KEY$", e["name"]) \
                    and "_FILE" not in e["name"]:
                secret_env.append(f"{c['name']}:{e['name']}")
        secret_env += [f"{c['name']}:envFrom" for e in c.get("envFrom", []) if "secretRef" in e]
    check("fleet: no secret reaches a container through its environment (files only)", not secret_env,
          str(secret_env))
    tls_key = server.get("tls_key", "-")
    check("fleet: tls_key is copied 0600 from the TLS Secret by the init container",
          from_secret(fspec, fc, tls_key) is not None and secret_item(fspec, fc, tls_key) is None, tls_key)

    # Nothing per replica to keep.
    sd = server.get("state_dir", "")
    sm = mount_of(fc, sd or "/nonexistent")
    check(f"fleet: state_dir {sd} is inside a writable emptyDir (scratch, per replica)",
          sm is not None and sd != sm["mountPath"] and not sm.get("readOnly")
          and "emptyDir" in (volume(fspec, sm["name"]) or {}))
    check("fleet: no PersistentVolumeClaim (replicas share nothing but the database and the Secrets)",
          not any("persistentVolumeClaim" in v for v in fspec.get("volumes", [])))
    check("fleet: audit_log is standard output (a replica's files go with it)", server.get("audit_log") == "-",
          str(server.get("audit_log")))

    # Probes and port.
    listen_port = int(server.get("listen", ":0").rsplit(":", 1)[1])
    check("fleet: the container port is the listen port", listen_port in ports_of(fc).values())
    scheme = "HTTPS" if server.get("tls_cert") else "HTTP"
    rp = fc.get("readinessProbe", {}).get("httpGet", {})
    lp = fc.get("livenessProbe", {}).get("httpGet", {})
    check(f"fleet: readinessProbe GET /readyz ({scheme}) on the listen port (out of the Service while the database is away)",
          rp.get("path") == "/readyz" and probe_port(fc, rp) == listen_port and rp.get("scheme", "HTTP") == scheme,
          json.dumps(rp))
    check(f"fleet: livenessProbe GET /healthz ({scheme}), not /readyz (a database outage restarts nothing)",
          lp.get("path") == "/healthz" and probe_port(fc, lp) == listen_port and lp.get("scheme", "HTTP") == scheme,
          json.dumps(lp))
    rs = fc.get("resources", {})
    check("fleet: resource requests (cpu, memory) and a memory limit",
          {"cpu", "memory"} <= set(rs.get("requests", {})) and "memory" in rs.get("limits", {}), json.dumps(rs))

    # Spread and disruptions.
    terms = fspec.get("affinity", {}).get("podAntiAffinity", {}) \
        .get("preferredDuringSchedulingIgnoredDuringExecution", [])
    check("fleet: preferred pod anti-affinity across nodes (kubernetes.io/hostname) for its own pods",
          any(t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname"
              and labels_match(t["podAffinityTerm"].get("labelSelector", {}).get("matchLabels"), labels)
              for t in terms), json.dumps(terms))
    pdbs = [d for (k, n), (f, d) in resources.items() if k == "PodDisruptionBudget"
            and labels_match(d["spec"].get("selector", {}).get("matchLabels"), labels)]
    if check("fleet: a PodDisruptionBudget selects the fleet's pods", len(pdbs) == 1, str(len(pdbs))):
        ps = pdbs[0]["spec"]
        mu, ma = ps.get("maxUnavailable"), ps.get("minAvailable")
        check("fleet: the PDB lets a drain take one replica and keeps the others "
              f"(maxUnavailable {mu}, minAvailable {ma}, replicas {replicas})",
              (isinstance(mu, int) and 1 <= mu < replicas and ma is None)
              or (isinstance(ma, int) and 1 <= ma < replicas and mu is None))
    fsvc = [d for (k, n), (f, d) in resources.items() if k == "Service"
            and labels_match(d["spec"].get("selector"), labels)]
    check("fleet: a Service selects the fleet's pods, its targetPort the listen port",
          len(fsvc) == 1 and all(probe_port(fc, p_.get("targetPort", p_["port"])) == listen_port
                                 for p_ in fsvc[0]["spec"]["ports"]), str(len(fsvc)))
    single = res("Deployment", "credkeeper-broker")
    if single is not None:
        slabels = single["spec"]["template"]["metadata"].get("labels", {})
        check("fleet: its pods and the single broker's are told apart (neither selector matches the other's pods)",
              not labels_match(single["spec"]["selector"].get("matchLabels"), labels)
              and not labels_match(fleet["spec"]["selector"].get("matchLabels"), slabels))
        sc_ = next(c for c in pod_spec(single)["containers"] if c["name"] == "broker")
        check("fleet: the single broker's image", fc["image"] == sc_["image"], fc["image"])
        names = sorted(r_.get("name") for r_ in fconf.get("robot", []))
        snames = sorted(r_.get("name") for r_ in (globals().get("conf") or {}).get("robot", []))
        check("fleet: the robots of broker/configmap.yaml", names == snames, f"{names} != {snames}")

# ---------------------------------------------------------------- Kubernetes: scheduled tasks
# deploy/kubernetes/tasks/: the definitions inside the ConfigMap, and every pod that runs
# `credkeeper tasks run|serve` on them.
TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def protect(text):
    """{{ NAME }} -> a placeholder scalar, as credkeeper does before reading the YAML (the
    seed's values file has it unquoted, which plain YAML reads as a flow mapping)."""
    return TEMPLATE.sub(lambda m: f"\u27e6ck:{m.group(1)}\u27e7", text)


def duration(text, default=None):
    """credkeeper's durations: 30s, 10m, 2h, 1d or plain seconds."""
    if text is None:
        return default
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(text))
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)] if m else None


def arg_after(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def secret_keys(obj):
    return set((obj or {}).get("data", {})) | set((obj or {}).get("stringData", {}))


tcm = res("ConfigMap", "credkeeper-tasks")
tasks_text = values_text = None
own_tasks = {}
if check("tasks: ConfigMap credkeeper-tasks holds tasks.yaml and values.yaml",
         tcm is not None and {"tasks.yaml", "values.yaml"} <= set(tcm.get("data", {}))):
    tasks_text, values_text = tcm["data"]["tasks.yaml"], tcm["data"]["values.yaml"]
    try:
        tdoc = yaml.safe_load(protect(tasks_text))
        ok("tasks: tasks.yaml parses as YAML")
    except Exception as e:
        tdoc = {}
        fail("tasks: tasks.yaml parses as YAML", str(e).replace("\n", " "))
    tlist = tdoc.get("tasks") if isinstance(tdoc, dict) else None
    if check("tasks: tasks.yaml is credkeeper's format (a `tasks` list of name/schedule/command)",
             isinstance(tlist, list) and tlist and all(isinstance(t, dict) and {"name", "schedule", "command"} <= set(t)
                                                       for t in tlist)):
        own_tasks = {t["name"]: t for t in tlist}
        check("tasks: task names are unique", len(own_tasks) == len(tlist))
    for n, t in own_tasks.items():
        check(f"tasks: task {n}: a 5-field schedule or a macro",
              str(t["schedule"]).startswith("@") or len(str(t["schedule"]).split()) == 5, str(t["schedule"]))
        for k_ in ("timeout", "backoff", "jitter"):
            if k_ in t:
                check(f"tasks: task {n}: {k_} {t[k_]!r} is a duration", duration(t[k_]) is not None)
    oidc = [n for n, t in own_tasks.items() if (t.get("env") or {}).get("RUCIO_CFG_AUTH_TYPE") == "oidc"]
    check("tasks: an oidc Rucio task takes its token from credentials.bearer (with an audience)",
          bool(oidc) and all((own_tasks[n].get("credentials") or {}).get("bearer", {}).get("audience") for n in oidc),
          str(oidc))
    up = [n for n, t in own_tasks.items() if (t.get("env") or {}).get("RUCIO_CFG_AUTH_TYPE") == "userpass"]
    check("tasks: a userpass Rucio task reads its password from {{ RUCIO_PASSWORD }}",
          bool(up) and all(own_tasks[n]["env"].get("RUCIO_CFG_PASSWORD") == protect("{{ RUCIO_PASSWORD }}")
                           for n in up), str(up))
    try:
        vdoc = yaml.safe_load(protect(values_text))
        ok("tasks: values.yaml parses as YAML (with {{ }} unquoted, as the chart has it)")
    except Exception as e:
        vdoc = {}
        fail("tasks: values.yaml parses as YAML", str(e).replace("\n", " "))
    vdoc = vdoc if isinstance(vdoc, dict) else {}
    check("tasks: values.yaml is rucio-task-manager's (config, secrets, cronjobs)",
          {"config", "secrets", "cronjobs"} <= set(vdoc))
    for s_ in vdoc.get("secrets") or []:
        check(f"tasks: values.yaml secret {s_.get('name')}: name, fromSecretName, fromSecretKey",
              {"name", "fromSecretName", "fromSecretKey"} <= set(s_))
    for j in vdoc.get("cronjobs") or []:
        check(f"tasks: values.yaml cronjob {j.get('name')}: schedule fields and a task file",
              all(" " not in str(j.get(f, "*")).strip() for f in ("minute", "hour", "day", "month", "weekday"))
              and ("task_file_yaml" in j or "task_file_path" in j))

# The pods running `credkeeper tasks`.
task_pods = {}  # "Kind/name" -> (d, spec, container, env)
for (kind, name), (f, d) in sorted(resources.items()):
    spec = pod_spec(d)
    if spec is None:
        continue
    for c in spec["containers"]:
        if runs_tasks(c):
            task_pods[f"{kind}/{name}"] = (d, spec, c, env_of(c))
check("tasks: a CronJob runs `credkeeper tasks run` and a Deployment `credkeeper tasks serve`",
      any(k.startswith("CronJob/") and v[2]["command"][2] == "run" for k, v in task_pods.items())
      and any(k.startswith("Deployment/") and v[2]["command"][2] == "serve" for k, v in task_pods.items()),
      str(sorted(task_pods)))
used_names = set(TEMPLATE.findall(tasks_text or ""))
bearer_tasks = {n: t["credentials"]["bearer"] for n, t in own_tasks.items()
                if (t.get("credentials") or {}).get("bearer") is not None}
servers = set()
for pod, (d, spec, c, env) in task_pods.items():
    argv = c["command"]
    files = [a for a in argv[3:] if not a.startswith("-") and argv[argv.index(a) - 1] not in
             ("--task", "--secret-dir", "--grace", "--runner", "--server", "-k", "--keytab", "--jwt-file",
              "--robot", "--secret-file", "--state-dir", "--config", "--cafile")]
    check(f"{pod}: definitions {' '.join(files)} are files of the mounted ConfigMap",
          bool(files) and all(file_in_volume(spec, c, x) for x in files))
    for x in files:
        m = mount_of(c, x)
        v = volume(spec, m["name"]) if m else {}
        check(f"{pod}: the ConfigMap is mounted as a directory (no subPath: updates reach it)",
              m is not None and "subPath" not in m and "configMap" in v and m.get("readOnly") is True)
    sd = arg_after(argv, "--secret-dir")
    m = mount_of(c, sd or "/nonexistent")
    v = volume(spec, m["name"]) if m else {}
    sec = res("Secret", v.get("secret", {}).get("secretName"))
    check(f"{pod}: --secret-dir {sd} is a read-only Secret volume",
          m is not None and m["mountPath"] == sd and m.get("readOnly") is True and sec is not None)
    check(f"{pod}: every {{{{ NAME }}}} of tasks.yaml is in its environment or that Secret",
          used_names <= secret_keys(sec) | set(env), str(sorted(used_names - secret_keys(sec) - set(env))))
    server = env.get("CREDKEEPER_SERVER") or ""
    servers.add(server)
    check(f"{pod}: CREDKEEPER_SERVER is an https URL (the tasks' bearer tokens)", server.startswith("https://"), server)
    jwt = env.get("CREDKEEPER_JWT_FILE")
    check(f"{pod}: CREDKEEPER_JWT_FILE {jwt} is the projected service-account token",
          bool(jwt) and file_in_volume(spec, c, jwt))
    mj = mount_of(c, jwt or "/nonexistent")
    vj = volume(spec, mj["name"]) if mj else {}
    sat = next((s_["serviceAccountToken"] for s_ in vj.get("projected", {}).get("sources", [])
                if "serviceAccountToken" in s_), {})
    check(f"{pod}: the projected token's audience is the broker URL, lifetime >= 600 s",
          sat.get("audience") == server and sat.get("expirationSeconds", 3600) >= 600,
          f"{sat.get('audience')} != {server}")
    check(f"{pod}: runs as its ServiceAccount, no API token mounted",
          bool(spec.get("serviceAccountName")) and spec.get("automountServiceAccountToken") is False)
    st = env.get("CREDKEEPER_STATE_DIR") or ""
    m = mount_of(c, st or "/nonexistent")
    v = volume(spec, m["name"]) if m else {}
    check(f"{pod}: CREDKEEPER_STATE_DIR {st} (run history) is a subdirectory of a writable volume",
          m is not None and st != m["mountPath"] and not m.get("readOnly")
          and ("emptyDir" in v or "persistentVolumeClaim" in v))
    xr = env.get("XDG_RUNTIME_DIR") or ""
    m = mount_of(c, xr or "/nonexistent")
    v = volume(spec, m["name"]) if m else {}
    check(f"{pod}: XDG_RUNTIME_DIR {xr} (each run's credentials) is a writable memory emptyDir",
          m is not None and m["mountPath"] == xr and not m.get("readOnly")
          and v.get("emptyDir", {}).get("medium") == "Memory")
    check(f"{pod}: fsGroup set (group-readable Secret and projected token)",
          spec.get("securityContext", {}).get("fsGroup", 0) > 0)
    if argv[2] == "run":
        task = arg_after(argv, "--task")
        t = own_tasks.get(task)
        if check(f"{pod}: --task {task} is a task of tasks.yaml", t is not None):
            js = d["spec"]
            check(f"{pod}: the schedule is task {task}'s", js["schedule"] == t["schedule"],
                  f"{js['schedule']!r} != {t['schedule']!r}")
            check(f"{pod}: the time zone is task {task}'s",
                  js.get("timeZone", "Etc/UTC") in ({t["timezone"]} if t.get("timezone") else {"Etc/UTC", "UTC"}))
            check(f"{pod}: concurrencyPolicy is task {task}'s concurrency (Forbid)",
                  js.get("concurrencyPolicy") == t.get("concurrency", "Allow") == "Forbid",
                  f"{js.get('concurrencyPolicy')} / {t.get('concurrency')}")
            check(f"{pod}: startingDeadlineSeconds is task {task}'s",
                  js.get("startingDeadlineSeconds") == t.get("startingDeadlineSeconds") is not None)
            jt = js["jobTemplate"]["spec"]
            check(f"{pod}: the Job's status is the task's (backoffLimit 0, restartPolicy Never)",
                  jt.get("backoffLimit") == 0 and spec.get("restartPolicy") == "Never")
            tries = t.get("retries", 0) + 1
            bo = duration(t.get("backoff"), 30)
            longest = tries * ((duration(t.get("timeout")) or 0) + 5) + sum(bo * 2 ** i for i in range(tries - 1))
            check(f"{pod}: activeDeadlineSeconds outlasts task {task}'s attempts ({longest} s)",
                  "timeout" in t and jt.get("activeDeadlineSeconds", 0) > longest,
                  str(jt.get("activeDeadlineSeconds")))
    else:
        grace = int(arg_after(argv, "--grace") or 30)
        check(f"{pod}: one replica, Recreate (one scheduler, one history store)",
              d["spec"].get("replicas") == 1 and d["spec"].get("strategy", {}).get("type") == "Recreate")
        check(f"{pod}: terminationGracePeriodSeconds > --grace {grace} + 5 s to stop a task",
              spec.get("terminationGracePeriodSeconds", 30) > grace + 5, str(spec.get("terminationGracePeriodSeconds")))
        m = mount_of(c, env.get("CREDKEEPER_STATE_DIR", "/nonexistent"))
        check(f"{pod}: the run history is on a PersistentVolumeClaim",
              m is not None and "persistentVolumeClaim" in volume(spec, m["name"]))

# The broker robot the tasks' service account maps to: serviceaccount.yaml's comment
# gives the [[robot]] to add to broker.toml; it must parse with it and cover the tasks.
saf = os.path.join(kdir, "tasks", "serviceaccount.yaml")
robot = {}
if check("tasks: serviceaccount.yaml exists", os.path.isfile(saf)):
    with open(saf) as fh:
        lines = [l[4:].rstrip("\n") for l in fh if l.startswith("#   ")]
    snippet = "\n".join(l for l in lines if re.match(r"\[\[robot\]\]|\w+ = ", l))
    try:
        robot = tomllib.loads(snippet).get("robot", [{}])[0]
        base = tomllib.loads((cm or {}).get("data", {}).get("broker.toml", "") + "\n" + snippet)
        ok("tasks: the [[robot]] in serviceaccount.yaml parses, appended to broker.toml too")
    except Exception as e:
        base = {}
        fail("tasks: the [[robot]] in serviceaccount.yaml parses, appended to broker.toml too", str(e))
    names = [r.get("name") for r in base.get("robot", [])]
    check("tasks: the tasks' robot name is new to broker.toml", bool(robot) and names.count(robot.get("name")) == 1,
          str(names))
    a = robot.get("auth", {})
    sas = {spec.get("serviceAccountName") for _, spec, _, _ in task_pods.values()}
    m_ = re.match(r"system:serviceaccount:[^:]+:(.+)$", a.get("jwt_subject", ""))
    check("tasks: the robot's jwt_subject is the task pods' ServiceAccount",
          bool(m_) and sas == {m_.group(1)} and res("ServiceAccount", m_.group(1)) is not None, f"{a} {sas}")
    check("tasks: the robot's jwt_audience is the pods' broker URL (their token's audience)",
          a.get("jwt_audience", (globals().get("conf") or {}).get("issuer", {}).get("url")) in servers
          and len(servers) == 1,
          str(servers))
    allowed = set(" ".join(robot.get("scopes", [])).split())
    for n, b in bearer_tasks.items():
        check(f"tasks: the robot may give task {n} its scopes and audience",
              set(str(b.get("scopes", "")).split()) <= allowed
              and (b.get("audience") in robot.get("audiences", []) or "*" in robot.get("audiences", [])),
              f"{b} vs {robot.get('scopes')} {robot.get('audiences')}")

# The binary's own check of both files, if it is built: every {{ NAME }} and mounted
# secret defined (the Secret's keys as files of a --secret-dir, the values file's
# secrets at <dir>/<fromSecretName>/<fromSecretKey>), schedules and formats.
binary = os.path.abspath(binary_given) if binary_given else os.path.join(root, "target", "debug", "credkeeper")
if tasks_text is None:
    pass
elif not os.access(binary, os.X_OK):
    if binary_given:
        check(f"the credkeeper binary {binary_given} exists", False, "not an executable file")
    else:
        print("skip tasks: `credkeeper tasks validate` (target/debug/credkeeper not built)")
else:
    with tempfile.TemporaryDirectory() as t:
        clean = {"PATH": "/usr/bin:/bin", "HOME": t, "CREDKEEPER_STATE_DIR": os.path.join(t, "state")}

        def ck(*args):
            r = subprocess.run([binary, *args], capture_output=True, text=True, env=clean, cwd=t)
            return r.returncode, (r.stdout + r.stderr).strip().replace("\n", " / ")

        for n_, text in (("tasks.yaml", tasks_text), ("values.yaml", values_text)):
            with open(os.path.join(t, n_), "w") as out:
                out.write(text)
        sdir_ = os.path.join(t, "secrets")
        os.mkdir(sdir_)
        sec = res("Secret", "credkeeper-tasks-rucio") or {}
        for k_, v_ in {**{k: base64.b64decode(x).decode() for k, x in sec.get("data", {}).items()},
                       **sec.get("stringData", {})}.items():
            with open(os.path.join(sdir_, k_), "w") as out:
                out.write(v_)
        tf = os.path.join(t, "tasks.yaml")
        rc, out = ck("tasks", "validate", tf, "--secret-dir", sdir_)
        check("credkeeper tasks validate tasks.yaml --secret-dir <the Secret's keys>", rc == 0, out)
        rc, out = ck("tasks", "list", tf)
        check("credkeeper tasks list tasks.yaml: every task scheduled, none disabled",
              rc == 0 and all(re.search(rf"^{re.escape(n)}\s.*\senabled\s", out.replace(" / ", "\n"), re.M)
                              for n in own_tasks), out)
        rc, out = ck("tasks", "validate", tf, "--secret-dir", os.path.join(t, "empty"))
        check("credkeeper tasks validate refuses tasks.yaml without the Secret (the check is live)",
              rc != 0 and "RUCIO_PASSWORD" in out, out)
        vdir = os.path.join(t, "rtm")
        for s_ in (vdoc or {}).get("secrets") or []:
            os.makedirs(os.path.join(vdir, s_["fromSecretName"]), exist_ok=True)
            with open(os.path.join(vdir, s_["fromSecretName"], s_["fromSecretKey"]), "w") as out:
                out.write("placeholder\n")
        vf = os.path.join(t, "values.yaml")
        rc, out = ck("tasks", "validate", vf, "--runner", "/bin/true", "--secret-dir", vdir)
        check("credkeeper tasks validate values.yaml --runner … --secret-dir <dir>/<secret>/<key>", rc == 0, out)
        rc, out = ck("tasks", "validate", vf, "--secret-dir", vdir)
        check("credkeeper tasks validate values.yaml without --runner (rucio-task-manager's entry point by default)", rc == 0, out)

# ---------------------------------------------------------------- Compose
cf = os.path.join(deploy, "compose.yaml")
compose = (docs.get(cf) or [None])[0]
if check("deploy/compose.yaml exists and parses", isinstance(compose, dict)):
    check("compose: no obsolete top-level `version`", "version" not in compose)
    services = compose.get("services", {})
    check("compose: services token-generator and my-app", {"token-generator", "my-app"} <= set(services))

    def vols(s):
        out = []
        for v in s.get("volumes", []):
            if isinstance(v, str):
                parts = v.split(":")
                out.append({"source": parts[0], "target": parts[1], "read_only": "ro" in parts[2:]})
            else:
                out.append({"source": v.get("source"), "target": v["target"], "read_only": bool(v.get("read_only"))})
        return out

    def env(s):
        e = s.get("environment", {})
        if isinstance(e, list):
            e = dict(x.split("=", 1) for x in e)
        return e

    gens = [n for n, s in services.items() if n != "my-app"]
    for n in gens:
        s = services[n]
        e, vs = env(s), vols(s)
        check(f"compose {n}: runs as the host user (user: \"${{UID}}:${{GID}}\")",
              re.fullmatch(r"\$\{UID[^}]*\}:\$\{GID[^}]*\}", str(s.get("user", ""))) is not None, str(s.get("user")))
        kt = e.get("KRB5_KTNAME", "/keytab")
        check(f"compose {n}: the keytab ({kt}) is mounted read-only",
              any(v["target"] == kt and v["read_only"] for v in vs)
              or any(kt == f"/run/secrets/{x if isinstance(x, str) else x.get('source')}" for x in s.get("secrets", [])))
        btf = e.get("BEARER_TOKEN_FILE", "/tokens/bt")
        check(f"compose {n}: BEARER_TOKEN_FILE {btf} is on a writable volume",
              any(under(btf, v["target"]) and not v["read_only"] for v in vs))
        check(f"compose {n}: CREDKEEPER_SERVER is set", bool(e.get("CREDKEEPER_SERVER")))
        cmd = s.get("command", [])
        cmd = shlex.split(cmd) if isinstance(cmd, str) else cmd
        check(f"compose {n}: --minsecs is passed to credkeeper get", "--minsecs" in cmd)
        check(f"compose {n}: in a profile (started on purpose, by cron or by hand)", bool(s.get("profiles")))
    tg = services.get("token-generator", {})
    check("compose token-generator: the seed's one-shot service (restart \"no\", profile token-gen)",
          tg.get("restart") == "no" and "token-gen" in tg.get("profiles", []) and "entrypoint" not in tg)
    loop = services.get("token-refresher")
    if loop is not None:
        ep = loop.get("entrypoint", [])
        check("compose token-refresher: a shell loop around credkeeper get, with init",
              ep[:2] == ["/bin/sh", "-c"] and "credkeeper get" in ep[2] and "sleep" in ep[2] and loop.get("init") is True)
    appv = services.get("my-app", {})
    btf = env(appv).get("BEARER_TOKEN_FILE", "")
    tv = [v for v in vols(appv) if btf and under(btf, v["target"])]
    gen_tokens = [v for v in vols(tg) if under(env(tg).get("BEARER_TOKEN_FILE", "/tokens/bt"), v["target"])]
    check("compose my-app: BEARER_TOKEN_FILE on the generator's token volume, read-only",
          len(tv) == 1 and tv[0]["read_only"] and gen_tokens and tv[0]["source"] == gen_tokens[0]["source"]
          and os.path.relpath(btf, tv[0]["target"]) ==
          os.path.relpath(env(tg).get("BEARER_TOKEN_FILE", "/tokens/bt"), gen_tokens[0]["target"]), btf)
    check("compose my-app: runs as the same user as the generator (the token is 0600)",
          appv.get("user") == tg.get("user"))
    check("compose my-app: no depends_on a service in an inactive profile",
          not any(services.get(x, {}).get("profiles") for x in
                  (appv.get("depends_on") or [])))
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        r = subprocess.run(["docker", "compose", "-f", cf, "config", "-q"], capture_output=True, text=True,
                           env={**os.environ, "UID": "1000", "GID": "1000"})
        check("compose: `docker compose config` accepts it", r.returncode == 0, r.stderr.strip())
    else:
        print("skip compose: `docker compose config` (no Compose plugin here)")

# ---------------------------------------------------------------- Compose: the broker fleet
cff = os.path.join(deploy, "compose.fleet.yaml")
cfl = (docs.get(cff) or [None])[0]
if check("deploy/compose.fleet.yaml exists and parses", isinstance(cfl, dict)):
    services = cfl.get("services", {})
    top_secrets = cfl.get("secrets", {})
    top_configs = cfl.get("configs", {})

    def listed(s, kind):
        """{target path: top-level name} of a service's secrets or configs."""
        out = {}
        for x in s.get(kind, []):
            name = x if isinstance(x, str) else x["source"]
            target = x.get("target") if isinstance(x, dict) else None
            if kind == "secrets" and (not target or not target.startswith("/")):
                target = f"/run/secrets/{target or name}"
            out[target or f"/{name}"] = name
        return out

    def top_file(kind_map, name):
        """The host file of a top-level secret/config (file:), relative to deploy/."""
        f_ = (kind_map.get(name) or {}).get("file")
        return os.path.normpath(os.path.join(deploy, f_)) if f_ else None

    def env(s):
        e = s.get("environment", {})
        if isinstance(e, list):
            e = dict(x.split("=", 1) for x in e)
        return e

    def argv_of(s):
        a = (s.get("entrypoint") or []) + (s.get("command") or [])
        return shlex.split(a) if isinstance(a, str) else a

    db = services.get("db", {})
    check("compose fleet: service db runs postgres:15", str(db.get("image", "")).startswith("postgres:15"),
          str(db.get("image")))
    hc = db.get("healthcheck", {}).get("test", [])
    hc = shlex.split(hc) if isinstance(hc, str) else hc
    check("compose fleet: db's healthcheck is pg_isready over TCP (not the first-start socket-only server)",
          "pg_isready" in hc and "-h" in hc and hc[hc.index("-h") + 1] in ("127.0.0.1", "localhost"), str(hc))
    denv = env(db)
    dsec = listed(db, "secrets")
    check("compose fleet: db's password from a secret file (POSTGRES_PASSWORD_FILE), never POSTGRES_PASSWORD",
          "POSTGRES_PASSWORD" not in denv and denv.get("POSTGRES_PASSWORD_FILE") in dsec, json.dumps(denv))
    dargv = argv_of(db)
    dset = dict(dargv[i + 1].split("=", 1) for i, a in enumerate(dargv[:-1]) if a == "-c" and "=" in dargv[i + 1])
    check("compose fleet: db serves TLS with its certificate and key from secrets",
          dset.get("ssl") == "on" and dset.get("ssl_cert_file") in dsec and dset.get("ssl_key_file") in dsec,
          json.dumps(dset))
    hba_path = top_file(top_configs, listed(db, "configs").get(dset.get("hba_file", "-"), ""))
    hba_lines = []
    if check("compose fleet: db's hba_file is a config file that exists", bool(hba_path) and os.path.isfile(hba_path),
             str(hba_path)):
        with open(hba_path) as fh:
            hba_lines = [l.split() for l in fh if l.strip() and not l.lstrip().startswith("#")]
        check("compose fleet: pg_hba.conf: no trust; TCP only hostssl + scram-sha-256, the rest rejected",
              hba_lines and not any(l[-1] == "trust" for l in hba_lines)
              and all(l[0] == "local" or l[-1] == "reject" or (l[0] == "hostssl" and l[-1] == "scram-sha-256")
                      for l in hba_lines)
              and any(l[0] == "hostssl" for l in hba_lines), str(hba_lines))
    check("compose fleet: db's data on a bind-mounted directory of the user's (./pgdata)",
          any(str(v).split(":")[:2] == ["./pgdata", "/var/lib/postgresql/data"] for v in db.get("volumes", [])))

    brokers = {n: s for n, s in services.items() if argv_of(s)[:2] == ["credkeeper", "serve"]}
    count = sum((s.get("deploy") or {}).get("replicas", 1) for s in brokers.values())
    check(f"compose fleet: at least 2 broker replicas ({count})", count >= 2)
    for n, s in sorted(brokers.items()):
        check(f"compose fleet {n}: starts once db is healthy",
              (s.get("depends_on") or {}).get("db", {}).get("condition") == "service_healthy")
        check(f"compose fleet {n}: read-only root, no capabilities, no-new-privileges, the same user as db",
              s.get("read_only") is True and s.get("cap_drop") == ["ALL"]
              and "no-new-privileges:true" in s.get("security_opt", []) and s.get("user") == db.get("user")
              and bool(s.get("user")))
        argv = argv_of(s)
        cfg = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
        tf = top_file(top_configs, listed(s, "configs").get(cfg, ""))
        bconf = {}
        if check(f"compose fleet {n}: --config {cfg} is a config file that exists", bool(tf) and os.path.isfile(tf),
                 str(tf)):
            try:
                with open(tf, "rb") as fh:
                    bconf = tomllib.load(fh)
                ok(f"compose fleet {n}: {rel(tf)} parses as TOML")
            except Exception as e:
                fail(f"compose fleet {n}: {rel(tf)} parses as TOML", str(e))
        st, sv = bconf.get("store", {}), bconf.get("server", {})
        u = urllib.parse.urlsplit(st.get("url", ""))
        check(f"compose fleet {n}: [store] url is the db service over TLS (verify-full), no password in it",
              u.scheme in ("postgres", "postgresql") and u.hostname == "db" and (u.port or 5432) == 5432
              and urllib.parse.parse_qs(u.query).get("sslmode") == ["verify-full"] and u.password is None,
              st.get("url", "(none)"))
        bsec = listed(s, "secrets")
        for k_ in ("password_file", "key_file", "ca_file"):
            path = st.get(k_)
            check(f"compose fleet {n}: [store] {k_} {path} is a secret file",
                  path in bsec and top_file(top_secrets, bsec[path]) is not None)
        for k_ in ("tls_cert", "tls_key"):
            if k_ in sv:
                check(f"compose fleet {n}: [server] {k_} is a secret file",
                      sv[k_] in bsec and top_file(top_secrets, bsec[sv[k_]]) is not None)
        check(f"compose fleet {n}: the same password as db (one secret)",
              top_file(top_secrets, bsec.get(st.get("password_file"), "")) is not None
              and top_file(top_secrets, bsec.get(st.get("password_file"), "")) ==
              top_file(top_secrets, dsec.get(denv.get("POSTGRES_PASSWORD_FILE"), "")))
        check(f"compose fleet {n}: state_dir on the tmpfs, audit log to standard output",
              any(under(sv.get("state_dir", "/nonexistent"), t.split(":")[0]) for t in s.get("tmpfs", []))
              and sv.get("audit_log") == "-", f"{sv.get('state_dir')} {sv.get('audit_log')}")
        check(f"compose fleet {n}: no password or key in its environment",
              not any(re.search(r"PASSWORD|SECRET|_KEY$", k) and not k.endswith("_FILE") for k in env(s)),
              str(sorted(env(s))))
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        r = subprocess.run(["docker", "compose", "-f", cff, "config", "-q"], capture_output=True, text=True,
                           env={**os.environ, "UID": "1000", "GID": "1000"})
        check("compose fleet: `docker compose config` accepts it", r.returncode == 0, r.stderr.strip())
    else:
        print("skip compose fleet: `docker compose config` (no Compose plugin here)")

# ---------------------------------------------------------------- systemd


def unit_keys(path):
    """systemd's INI: sections, repeated keys kept in order, comments and blanks skipped."""
    sections, cur = {}, None
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                cur = sections.setdefault(line[1:-1], {})
                continue
            if cur is None or "=" not in line:
                raise ValueError(f"line {n}: {line!r}")
            k, v = line.split("=", 1)
            cur.setdefault(k.strip(), []).append(v.strip())
    return sections


sdir = os.path.join(deploy, "systemd")
units = {os.path.basename(p): p for p in glob.glob(f"{sdir}/*") if not p.endswith(".md")}
need = {"credkeeper-get@.service", "credkeeper-get@.timer", "credkeeper-serve.service",
        "credkeeper-tasks.service"}
check("deploy/systemd has the four units", need <= set(units), str(sorted(units)))
parsed = {}
for n, p in sorted(units.items()):
    try:
        parsed[n] = unit_keys(p)
        ok(f"systemd {n} parses")
    except Exception as e:
        fail(f"systemd {n} parses", str(e))


def key(unit, section, k):
    return parsed.get(unit, {}).get(section, {}).get(k, [])


def one(unit, section, k):
    v = key(unit, section, k)
    return v[-1] if v else None


HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
             "ProtectHome": "yes", "DynamicUser": "no"}
g, t, s = "credkeeper-get@.service", "credkeeper-get@.timer", "credkeeper-serve.service"
ts = "credkeeper-tasks.service"
if g in parsed:
    check(f"{g}: Type=oneshot running `credkeeper get`",
          one(g, "Service", "Type") == "oneshot" and "credkeeper get" in (one(g, "Service", "ExecStart") or ""))
    check(f"{g}: EnvironmentFile=/etc/credkeeper/%i.env",
          "/etc/credkeeper/%i.env" in key(g, "Service", "EnvironmentFile"))
    check(f"{g}: runs as a named User", bool(one(g, "Service", "User")))
    for k_, v_ in HARDENING.items():
        check(f"{g}: {k_}={v_}", one(g, "Service", k_) == v_, str(one(g, "Service", k_)))
    envs = dict(e.split("=", 1) for x in key(g, "Service", "Environment") for e in shlex.split(x))
    btf = envs.get("BEARER_TOKEN_FILE", "")
    rw = " ".join(key(g, "Service", "ReadWritePaths")).split()
    check(f"{g}: ReadWritePaths holds the token file's directory ({os.path.dirname(btf)})",
          bool(btf) and any(under(os.path.dirname(btf), p.lstrip("-")) for p in rw), str(rw))
    check(f"{g}: state (direct-issuer logins) is writable too",
          any(under(envs.get("CREDKEEPER_STATE_DIR", "/nonexistent"), p.lstrip("-")) for p in rw))
if t in parsed:
    check(f"{t}: hourly, Persistent=true, RandomizedDelaySec=60",
          one(t, "Timer", "OnCalendar") == "hourly" and one(t, "Timer", "Persistent") == "true"
          and one(t, "Timer", "RandomizedDelaySec") == "60")
    check(f"{t}: WantedBy=timers.target", "timers.target" in key(t, "Install", "WantedBy"))
if s in parsed:
    check(f"{s}: Type=simple running `credkeeper serve --config`",
          one(s, "Service", "Type") == "simple" and "credkeeper serve --config" in (one(s, "Service", "ExecStart") or ""))
    check(f"{s}: StateDirectory=credkeeper", one(s, "Service", "StateDirectory") == "credkeeper")
    for k_, v_ in HARDENING.items():
        check(f"{s}: {k_}={v_}", one(s, "Service", k_) == v_, str(one(s, "Service", k_)))
    check(f"{s}: WantedBy=multi-user.target", "multi-user.target" in key(s, "Install", "WantedBy"))


def seconds(v):
    """A systemd time span (45, 45s, 1min 30s) in seconds; None if not understood."""
    total, units_ = 0, {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    for n_, u_ in re.findall(r"(\d+)\s*([a-z]*)", v or ""):
        if u_ not in units_:
            return None
        total += int(n_) * units_[u_]
    return total if v else None


if ts in parsed:
    argv = shlex.split(one(ts, "Service", "ExecStart") or "")
    check(f"{ts}: Type=simple running `credkeeper tasks serve` on a definitions file",
          one(ts, "Service", "Type") == "simple" and argv[1:3] == ["tasks", "serve"]
          and argv[0].endswith("/credkeeper") and len(argv) > 3 and argv[3].startswith("/etc/"), str(argv))
    check(f"{ts}: runs as a named User", bool(one(ts, "Service", "User")))
    check(f"{ts}: --secret-dir under /etc/credkeeper", (arg_after(argv, "--secret-dir") or "").startswith("/etc/credkeeper/"))
    grace = int(arg_after(argv, "--grace") or 30)
    stop = seconds(one(ts, "Service", "TimeoutStopSec"))
    check(f"{ts}: TimeoutStopSec ({stop} s) > --grace {grace} + 5 s to stop a task",
          stop is not None and stop > grace + 5)
    check(f"{ts}: KillMode=mixed, KillSignal=SIGTERM (credkeeper stops the tasks, not systemd first)",
          one(ts, "Service", "KillMode") == "mixed" and one(ts, "Service", "KillSignal") in (None, "SIGTERM"))
    check(f"{ts}: ExecReload=/bin/kill -HUP $MAINPID (reload the definitions)",
          one(ts, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID")
    envs = dict(e.split("=", 1) for x in key(ts, "Service", "Environment") for e in shlex.split(x))
    sdn = one(ts, "Service", "StateDirectory")
    check(f"{ts}: CREDKEEPER_STATE_DIR is its StateDirectory (0700), the run history",
          bool(sdn) and envs.get("CREDKEEPER_STATE_DIR") == f"/var/lib/{sdn}"
          and one(ts, "Service", "StateDirectoryMode") == "0700", f"{sdn} {envs.get('CREDKEEPER_STATE_DIR')}")
    rdn = one(ts, "Service", "RuntimeDirectory")
    check(f"{ts}: XDG_RUNTIME_DIR is its RuntimeDirectory, 0700 (each run's credentials)",
          bool(rdn) and envs.get("XDG_RUNTIME_DIR") == f"/run/{rdn}"
          and one(ts, "Service", "RuntimeDirectoryMode") == "0700", f"{rdn} {envs.get('XDG_RUNTIME_DIR')}")
    check(f"{ts}: settings from an optional EnvironmentFile",
          any(x.startswith("-/etc/credkeeper/") for x in key(ts, "Service", "EnvironmentFile")))
    check(f"{ts}: UMask=0077", one(ts, "Service", "UMask") == "0077")
    for k_, v_ in HARDENING.items():
        check(f"{ts}: {k_}={v_}", one(ts, "Service", k_) == v_, str(one(ts, "Service", k_)))
    for k_ in ("SystemCallFilter", "RestrictAddressFamilies", "CapabilityBoundingSet", "MemoryDenyWriteExecute"):
        check(f"{ts}: {k_} as credkeeper-serve.service", key(ts, "Service", k_) == key(s, "Service", k_),
              f"{key(ts, 'Service', k_)} != {key(s, 'Service', k_)}")
    check(f"{ts}: WantedBy=multi-user.target", "multi-user.target" in key(ts, "Install", "WantedBy"))

sa = shutil.which("systemd-analyze")
if sa:
    with tempfile.TemporaryDirectory() as tmp:
        # The units as installed, with a stand-in for /usr/bin/credkeeper (verify checks
        # that ExecStart is executable) and an instance of the template.
        for n, p in units.items():
            with open(p) as fh:
                text = fh.read().replace("/usr/bin/credkeeper", "/bin/true")
            names = [n] + ([n.replace("@.", "@robot.")] if "@." in n else [])
            for nn in names:
                with open(os.path.join(tmp, nn), "w") as out:
                    out.write(text)
        # Whether systemd-analyze works in this container at all: a trivial unit must pass.
        with open(os.path.join(tmp, "probe.service"), "w") as out:
            out.write("[Service]\nType=oneshot\nExecStart=/bin/true\n")
        probe = subprocess.run([sa, "verify", "--man=no", os.path.join(tmp, "probe.service")],
                               capture_output=True, text=True)
        offline = subprocess.run([sa, "security", "--offline=true", os.path.join(tmp, "probe.service")],
                                 capture_output=True, text=True)
        if probe.returncode != 0:
            why = (probe.stderr.strip().splitlines() or ["?"])[-1]
            print(f"skip systemd-analyze verify (cannot run here: {why}): INI checks only")
        else:
            for n in ("credkeeper-get@robot.service", "credkeeper-get@robot.timer", "credkeeper-serve.service",
                      "credkeeper-tasks.service"):
                r = subprocess.run([sa, "verify", "--man=no", os.path.join(tmp, n)], capture_output=True, text=True)
                check(f"systemd-analyze verify {n}", r.returncode == 0 and not r.stderr.strip(), r.stderr.strip())
            for n in ("credkeeper-get@robot.service", "credkeeper-serve.service",
                      "credkeeper-tasks.service") if offline.returncode == 0 else ():
                r = subprocess.run([sa, "security", "--offline=true", "--threshold=20", os.path.join(tmp, n)],
                                   capture_output=True, text=True)
                level = re.search(r"Overall exposure level for \S+: (\S+ \S+)", r.stdout)
                check(f"systemd-analyze security {n}: exposure at most 2.0",
                      r.returncode == 0, level.group(1) if level else r.stderr.strip())
            if offline.returncode != 0:
                print("skip systemd-analyze security --offline (needs systemd 250 or later)")
else:
    print("skip systemd-analyze (not installed): INI checks only")

# ---------------------------------------------------------------- Dockerfile
df = os.path.join(deploy, "Dockerfile")
if check("deploy/Dockerfile exists", os.path.isfile(df)):
    instr = []
    buf = ""
    with open(df) as fh:
        for line in fh:
            s_ = line.rstrip("\n")
            if not buf and (not s_.strip() or s_.lstrip().startswith("#")):
                continue
            if buf and s_.lstrip().startswith("#"):
                continue  # comment inside a continued instruction
            if s_.endswith("\\"):
                buf += s_[:-1] + " "
                continue
            buf += s_
            kw, _, rest = buf.strip().partition(" ")
            instr.append((kw.upper(), rest.strip()))
            buf = ""
    froms = [(i, r) for i, (k, r) in enumerate(instr) if k == "FROM"]
    check("Dockerfile: multi-stage (two FROMs)", len(froms) >= 2, str(froms))
    check("Dockerfile: build stage FROM rust:1-bookworm AS build",
          froms and re.fullmatch(r"rust:1-bookworm\s+AS\s+build", froms[0][1], re.I) is not None)
    check("Dockerfile: runtime stage FROM debian:bookworm-slim",
          froms and froms[-1][1].split()[0] == "debian:bookworm-slim")
    build = instr[froms[0][0]:froms[-1][0]] if len(froms) >= 2 else []
    runtime = instr[froms[-1][0]:] if froms else []
    build_runs = " ".join(r for k, r in build if k == "RUN")
    # Kerberos is opened at run time: the build needs nothing beyond the Rust image.
    check("Dockerfile: build stage installs no system packages (no Kerberos headers, no libclang)",
          "apt-get" not in build_runs, build_runs)
    check("Dockerfile: cargo build --release --locked -p credkeeper",
          "cargo build --release --locked -p credkeeper" in build_runs)
    for k, r in build:
        if k == "COPY" and "--from" not in r:
            srcs = [x for x in r.split()[:-1] if not x.startswith("--")]
            check(f"Dockerfile: COPY source {' '.join(srcs)} exists in the repository",
                  all(os.path.exists(os.path.join(root, x)) for x in srcs))
    rt_runs = [r for k, r in runtime if k == "RUN"]
    pkgs = set()
    for r in rt_runs:
        for m in re.finditer(r"apt-get install ([^&;]*)", r):
            pkgs |= {w for w in m.group(1).split() if not w.startswith("-")}
    check("Dockerfile: runtime installs only libgssapi-krb5-2 ca-certificates",
          pkgs == {"libgssapi-krb5-2", "ca-certificates"}, str(sorted(pkgs)))
    check("Dockerfile: runtime copies the binary from the build stage",
          any(k == "COPY" and "--from=build" in r and "/usr/local/bin/credkeeper" in r for k, r in runtime))
    links = " ".join(rt_runs)
    for name in ("igwn-robot-get", "htgettoken", "docker-credential-credkeeper"):
        check(f"Dockerfile: /usr/local/bin/{name} -> credkeeper",
              re.search(rf"ln -s credkeeper /usr/local/bin/{name}\b", links) is not None)
    users = [r for k, r in runtime if k == "USER"]
    uid = users[-1].split(":")[0] if users else "root"
    check("Dockerfile: runs as a non-root USER by default",
          bool(users) and uid not in ("0", "root") and uid.isdigit(), str(users))
    eps = [r for k, r in runtime if k == "ENTRYPOINT"]
    try:
        ep = json.loads(eps[-1]) if eps else None
    except Exception:
        ep = eps[-1]
    check("Dockerfile: ENTRYPOINT [\"credkeeper\", \"get\"] (exec form)", ep == ["credkeeper", "get"], str(ep))
    envs = {}
    for k, r in runtime:
        if k == "ENV":
            for kv_ in shlex.split(r):
                if "=" in kv_:
                    a, b = kv_.split("=", 1)
                    envs[a] = b
    for k_, v_ in {"KRB5_KTNAME": "/keytab", "BEARER_TOKEN_FILE": "/tokens/bt",
                   "CREDKEEPER_MINSECS": "3600"}.items():
        check(f"Dockerfile: ENV {k_}={v_}", envs.get(k_) == v_, str(envs.get(k_)))
    check("Dockerfile: ENV CREDKEEPER_STATE_DIR under /tmp (any --user, no HOME)",
          under(envs.get("CREDKEEPER_STATE_DIR", ""), "/tmp"), str(envs.get("CREDKEEPER_STATE_DIR")))
    check("Dockerfile: no ADD from URLs, no `curl | sh`",
          not any(k == "ADD" for k, _ in instr) and not re.search(r"(curl|wget)[^|]*\|\s*(ba)?sh", " ".join(r for _, r in instr)))

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
