"""The operator at scale: N LitGPTModels, FinetuneJobs and ModelServers on the local control plane.

    .venv/bin/python benchmarks/bench_operator.py                          # N = 100, 500; burst and steady
    .venv/bin/python benchmarks/bench_operator.py --sizes 1000 --modes burst
    .venv/bin/python benchmarks/bench_operator.py --sizes 6 --modes burst --no-floor   # a smoke run

Each run gets a fresh control plane (etcd, kube-apiserver with an audit log of the operator's
requests, controller-manager, scheduler) and simulated nodes (the node agent: pods are reported
Running, Job pods exit 0 after a second), and the operator as its own process
(`python -m litgpt_operator`) under a ServiceAccount bound to its generated ClusterRole. N objects
are created in groups of three (a LitGPTModel, a FinetuneJob on it, a ModelServer serving the
model or, every other group, the finetune) across `--namespaces` namespaces, all at once from
`--burst-threads` threads ("burst") or at `--rate` objects per second ("steady").

Measured, client-side clocks throughout (creationTimestamp has only seconds):
- child latency: from the moment an object could have its first child (the create call for a
  LitGPTModel; for a dependent the later of its create call and the watch seeing its model Ready
  or finetune Succeeded) to a watch on Jobs/Deployments seeing that child, p50 and p99;
- settle: from the first create call until every object is in its steady phase (models Ready,
  finetunes Succeeded, servers Ready);
- the operator process's peak RSS (VmHWM) and CPU seconds (utime + stime), from /proc;
- the operator's API requests (the audit log: its ServiceAccount's requests, by verb), per object,
  and its writes per phase transition (transitions: changes of status.phase a watch saw), and
  how many of those writes were status writes that changed only a running job's live progress
  (`status.progress`: writes that belong to no transition);
- the floor: the very children the operator made (read back, owner and generated fields stripped)
  created with the Python client into a fresh control plane on the same schedule; the latency of
  that create to the watch seeing it. Ours is reported as a ratio of it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
for _folder in ("operator", "devcluster", "runtime"):
    if str(REPO_ROOT / _folder) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / _folder))

import urllib3  # noqa: E402
from kubernetes import client, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from litgpt_devcluster.controlplane import ControlPlane  # noqa: E402
from litgpt_operator.api import GROUP, KINDS, VERSION  # noqa: E402
from litgpt_operator.builders.common import MANAGED_BY  # noqa: E402

API = f"{GROUP}/{VERSION}"
OPERATOR_NAMESPACE, OPERATOR_ACCOUNT = "litgpt-system", "litgpt-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
# Simulated nodes big enough for every pod of N = 1,000 (pods request 1 CPU, 2 GiB by default).
NODES = tuple(f"sim-{i}:cpu=2000,memory=8000Gi,pods=2000,nvidia.com/gpu=100" for i in range(2))
# Only the operator's requests are logged, one line per request (when its response completed).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}],
}
STEADY = {"LitGPTModel": "Ready", "FinetuneJob": "Succeeded", "ModelServer": "Ready"}
PLURAL = {k.kind: k.plural for k in KINDS}
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
MANAGED = f"app.kubernetes.io/managed-by={MANAGED_BY}"


# --- the objects -------------------------------------------------------------------------------

def parents(n: int, namespaces: list[str]) -> list[dict]:
    """N objects in groups of (model, finetune, server), namespaces round-robin by group."""
    objects = []
    for i in range(n):
        group, role = divmod(i, 3)
        ns, base = namespaces[group % len(namespaces)], f"g{group:04d}"
        meta = {"name": f"{base}-{['model', 'ft', 'server'][role]}", "namespace": ns}
        if role == 0:
            spec = {"repoId": "EleutherAI/pythia-14m", "checkpointRootPVC": {"claimName": "cache", "size": "1Gi"}}
            objects.append({"apiVersion": API, "kind": "LitGPTModel", "metadata": meta, "spec": spec})
        elif role == 1:
            spec = {"modelRef": {"name": f"{base}-model"}, "method": "lora", "gpusPerNode": 0,
                    "data": {"inline": '[{"instruction": "a", "output": "b"}]'},
                    "train": {"epochs": 1, "globalBatchSize": 2, "microBatchSize": 1}}
            objects.append({"apiVersion": API, "kind": "FinetuneJob", "metadata": meta, "spec": spec})
        else:
            source = {"finetuneRef": {"name": f"{base}-ft"}} if group % 2 else {"modelRef": {"name": f"{base}-model"}}
            objects.append({"apiVersion": API, "kind": "ModelServer", "metadata": meta,
                            "spec": {**source, "replicas": 1, "gpus": 0}})
    return objects


def dependency(obj: dict) -> Optional[tuple[str, str, str]]:
    """(kind, namespace, name) whose steady phase this object's first child waits for."""
    spec, ns = obj["spec"], obj["metadata"]["namespace"]
    if spec.get("finetuneRef"):
        return "FinetuneJob", ns, spec["finetuneRef"]["name"]
    if spec.get("modelRef"):
        return "LitGPTModel", ns, spec["modelRef"]["name"]
    return None


def key(obj: dict) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]


def as_new(child: dict) -> dict:
    """A live child as a fresh manifest: no owner (it would be garbage-collected), no fields the
    API server generates (a Job's selector and controller-uid labels)."""
    meta = child["metadata"]
    fresh = {"apiVersion": child["apiVersion"], "kind": child["kind"],
             "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)},
             "spec": json.loads(json.dumps(child["spec"]))}
    if child["kind"] == "Job":
        fresh["spec"].pop("selector", None)
        labels = fresh["spec"]["template"]["metadata"].get("labels") or {}
        for generated in ("controller-uid", "batch.kubernetes.io/controller-uid", "job-name",
                          "batch.kubernetes.io/job-name"):
            labels.pop(generated, None)
    return fresh


# --- the cluster -------------------------------------------------------------------------------

@dataclass
class Cluster:
    cp: ControlPlane
    audit_log: Path
    api: client.ApiClient

    @classmethod
    def start(cls, state_dir: Path) -> "Cluster":
        (state_dir / "audit").mkdir(parents=True, exist_ok=True)
        policy, log = state_dir / "audit" / "policy.json", state_dir / "audit" / "audit.log"
        policy.write_text(json.dumps(AUDIT_POLICY))
        cp = ControlPlane(state_dir, nodes=NODES, tie_to_parent=True,
                          apiserver_args=(f"--audit-policy-file={policy}", f"--audit-log-path={log}",
                                          "--audit-log-maxsize=0"))
        cp.start()
        api = cp.api_client()
        api.configuration.connection_pool_maxsize = 32
        return cls(cp, log, api)

    def stop(self) -> None:
        self.cp.stop()

    def namespaces(self, names: list[str]) -> None:
        for name in names:
            self.cp.kubectl("create", "namespace", name)
        for name in names:
            _until(lambda: self.cp.kubectl("get", "sa", "default", "-n", name, "--ignore-not-found", "-o", "name"),
                   f"namespace {name}'s default ServiceAccount", 60)

    def install_operator_access(self) -> Path:
        """CRDs, and a kubeconfig of the operator's ServiceAccount bound to its ClusterRole."""
        kubectl = self.cp.kubectl
        kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{k.crd_name}" for k in KINDS])
        kubectl("apply", "-f", str(REPO_ROOT / "operator" / "rbac" / "clusterrole.yaml"))
        kubectl("create", "namespace", OPERATOR_NAMESPACE)
        kubectl("create", "serviceaccount", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE)
        kubectl("create", "clusterrolebinding", "litgpt-operator", "--clusterrole=litgpt-operator",
                f"--serviceaccount={OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}")
        token = kubectl("create", "token", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=6h").strip()
        admin = json.loads(self.cp.kubeconfig.read_text())
        path = self.cp.state_dir / "operator.kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"}}],
            "current-context": "operator"}))
        return path

    def create(self, obj: dict) -> None:
        ns, kind = obj["metadata"]["namespace"], obj["kind"]
        if kind in PLURAL:
            client.CustomObjectsApi(self.api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL[kind], obj)
        elif kind == "Job":
            client.BatchV1Api(self.api).create_namespaced_job(ns, obj)
        elif kind == "Deployment":
            client.AppsV1Api(self.api).create_namespaced_deployment(ns, obj)
        else:
            raise ValueError(kind)


def _until(check: Callable[[], Any], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


# --- watching ----------------------------------------------------------------------------------

class Watcher:
    """Watches (all namespaces) that stamp events with this process's clock: when each Job or
    Deployment first appeared, and each phase change of our objects."""

    def __init__(self, api: client.ApiClient, kinds: tuple[str, ...] = tuple(STEADY)):
        self.api = api
        self.kinds = kinds
        self.children: dict[tuple[str, str, str], float] = {}  # (kind, ns, name) -> first seen
        self.child_bodies: dict[tuple[str, str, str], dict] = {}
        self.phases: dict[tuple[str, str, str], list[tuple[str, float]]] = {}
        # status updates that changed only status.progress (a running job's live progress: writes
        # without a phase transition), and the last progress seen per object
        self.progress_writes = 0
        self._progress: dict[tuple[str, str, str], object] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ready = threading.Barrier(1 + 2 + len(kinds))
        self.threads = []

    def start(self, keep_children: bool = False) -> "Watcher":
        batch, apps, custom = client.BatchV1Api(self.api), client.AppsV1Api(self.api), client.CustomObjectsApi(self.api)
        streams = [(batch.list_job_for_all_namespaces, {"label_selector": MANAGED}, None),
                   (apps.list_deployment_for_all_namespaces, {"label_selector": MANAGED}, None)]
        streams += [(custom.list_cluster_custom_object, {"group": GROUP, "version": VERSION, "plural": PLURAL[kind]},
                     kind) for kind in self.kinds]
        for lister, kwargs, kind in streams:
            thread = threading.Thread(target=self._watch, args=(lister, kwargs, kind, keep_children), daemon=True)
            thread.start()
            self.threads.append(thread)
        self.ready.wait(timeout=60)
        return self

    def _watch(self, lister, kwargs, kind, keep_children) -> None:
        first = lister(**kwargs)
        version = first["metadata"]["resourceVersion"] if isinstance(first, dict) else first.metadata.resource_version
        self.ready.wait(timeout=60)
        while not self.stopping.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(lister, resource_version=version, timeout_seconds=30,
                                           allow_watch_bookmarks=True, **kwargs):
                    seen = time.monotonic()
                    obj = event["raw_object"]
                    version = obj["metadata"].get("resourceVersion", version)
                    if event["type"] == "BOOKMARK":
                        continue
                    self._record(obj, kind, seen, keep_children)
                    if self.stopping.is_set():
                        break
            except ApiException as error:
                if error.status != 410:
                    raise
                version = None  # expired: start over from now (not expected within a run)
            except (urllib3.exceptions.HTTPError, OSError):
                if self.stopping.is_set():  # the cluster is going away
                    return
                # a broken stream: resume from the last version seen

    def _record(self, obj: dict, kind: Optional[str], seen: float, keep_children: bool) -> None:
        meta = obj["metadata"]
        with self.lock:
            if kind is None:
                name = (obj["kind"], meta["namespace"], meta["name"])
                self.children.setdefault(name, seen)
                if keep_children:
                    self.child_bodies.setdefault(name, obj)
                return
            status = obj.get("status") or {}
            phase, name = status.get("phase"), (kind, meta["namespace"], meta["name"])
            history = self.phases.setdefault(name, [])
            if phase and (not history or history[-1][0] != phase):
                history.append((phase, seen))
            elif name in self._progress and status.get("progress") != self._progress[name]:
                self.progress_writes += 1
            self._progress[name] = status.get("progress")

    def reached(self, name: tuple[str, str, str], phase: str) -> Optional[float]:
        with self.lock:
            return next((t for p, t in self.phases.get(name, ()) if p == phase), None)

    def stop(self) -> None:
        self.stopping.set()


# --- the operator process ----------------------------------------------------------------------

def _die_with_parent() -> None:
    # In the child before exec: a benchmark stopped outright takes its operator along.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log: Path, extra_env: dict[str, str]):
        self.health = _free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "LITGPT_OPERATOR_HEALTH_PORT": str(self.health),
               "LITGPT_OPERATOR_RUNTIME_IMAGE": "litgpt-runtime:bench", "LITGPT_OPERATOR_HF_ENDPOINT": "http://127.0.0.1:9",
               "PYTHONPATH": os.pathsep.join(str(REPO_ROOT / f) for f in ("runtime", "operator", "devcluster")),
               **extra_env}
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "litgpt_operator"], env=env, stdout=log.open("ab"),
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.peak_rss_kib = 0
        self.cpu_s = 0.0
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def wait_ready(self, timeout_s: float = 90) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/healthz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        _until(healthy, "the operator's /healthz", timeout_s)
        self._sampler.start()

    def _read_proc(self) -> None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return
        hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        fields = stat.rsplit(")", 1)[1].split()
        self.peak_rss_kib = max(self.peak_rss_kib, hwm)
        self.cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        while self.proc.poll() is None:
            self._read_proc()
            time.sleep(0.5)

    def stop(self) -> None:
        self._read_proc()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- a run -------------------------------------------------------------------------------------

@dataclass
class Result:
    n: int
    mode: str
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    by_kind_audit: dict[str, list[float]] = field(default_factory=dict)  # objects without a dependency
    settle_s: Optional[float] = None
    unsettled: int = 0
    peak_rss_mib: float = 0.0
    cpu_s: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    transitions: int = 0
    progress_writes: int = 0  # status writes of live progress alone (no transition)
    floor: list[float] = field(default_factory=list)
    load: str = ""


def schedule(objects: list[dict], create: Callable[[dict], None], mode: str, rate: float, threads: int,
             started: dict[tuple[str, str, str], float]) -> None:
    """Create `objects` all at once (`threads` at a time) or at `rate` per second, stamping each
    create call's start."""
    def one(obj: dict) -> None:
        started[key(obj)] = time.monotonic()
        create(obj)

    if mode == "burst":
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, objects))
        return
    begin = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = []
        for i, obj in enumerate(objects):
            time.sleep(max(0.0, begin + i / rate - time.monotonic()))
            futures.append(pool.submit(one, obj))
        for future in futures:
            future.result()


def audit_child_creates(path: Path) -> dict[tuple[str, str, str], float]:
    """(kind, namespace, name) -> when the API server received the operator's successful create
    of that Job or Deployment (wall clock, microseconds): when the child existed, without the lag
    of this process's watch, which a burst of the operator's events can delay by seconds."""
    kinds = {"jobs": "Job", "deployments": "Deployment"}
    created: dict[tuple[str, str, str], float] = {}
    with path.open() as log:
        for line in log:
            entry = json.loads(line)
            ref = entry.get("objectRef") or {}
            if (entry.get("user", {}).get("username") != OPERATOR_USER or entry.get("verb") != "create"
                    or ref.get("resource") not in kinds or (entry.get("responseStatus") or {}).get("code") != 201):
                continue
            stamp = datetime.datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00"))
            created[(kinds[ref["resource"]], ref.get("namespace"), ref.get("name"))] = stamp.timestamp()
    return created


def audit_counts(path: Path) -> dict[str, int]:
    """The operator's requests by verb (and by user agent family) from the audit log."""
    counts: dict[str, int] = {}
    with path.open() as log:
        for line in log:
            entry = json.loads(line)
            if entry.get("user", {}).get("username") != OPERATOR_USER:
                continue
            verb = entry.get("verb", "?")
            resource = (entry.get("objectRef") or {}).get("resource", "-")
            sub = (entry.get("objectRef") or {}).get("subresource")
            for name in (f"verb:{verb}", f"{verb} {resource}{'/' + sub if sub else ''}",
                         "agent:" + (entry.get("userAgent") or "?").split("/")[0]):
                counts[name] = counts.get(name, 0) + 1
    return counts


def run_operator(n: int, mode: str, args, work: Path) -> tuple[Result, list[dict]]:
    result = Result(n, mode)
    cluster = Cluster.start(work / f"cp-{n}-{mode}")
    try:
        namespaces = [f"bench-{i}" for i in range(args.namespaces)]
        cluster.namespaces(namespaces)
        kubeconfig = cluster.install_operator_access()
        watcher = Watcher(cluster.api).start(keep_children=True)
        extra = dict(kv.split("=", 1) for kv in args.operator_env)
        operator = OperatorProcess(kubeconfig, cluster.cp.state_dir / "logs" / "operator.log", extra)
        operator.wait_ready()
        time.sleep(1.0)  # its watches are opened right after /healthz answers
        objects = parents(n, namespaces)
        started: dict[tuple[str, str, str], float] = {}
        load_before = os.getloadavg()
        t0 = time.monotonic()
        schedule(objects, cluster.create, mode, args.rate, args.burst_threads, started)

        def settled() -> int:
            return sum(1 for o in objects if watcher.reached(key(o), STEADY[o["kind"]]) is None)

        deadline = time.monotonic() + args.timeout
        while (left := settled()) and time.monotonic() < deadline:
            time.sleep(0.5)
        result.unsettled = left
        if not left:
            result.settle_s = max(watcher.reached(key(o), STEADY[o["kind"]]) for o in objects) - t0
        time.sleep(2.0)  # what the operator does once all is settled belongs to the run too
        load_after = os.getloadavg()
        operator.stop()
        watcher.stop()
        result.peak_rss_mib = operator.peak_rss_kib / 1024
        result.cpu_s = operator.cpu_s
        result.load = f"{load_before[0]:.1f} -> {load_after[0]:.1f}"
        for obj in objects:
            child = first_child(obj, watcher)
            ready_at = started[key(obj)]
            dep = dependency(obj)
            if dep:
                reached = watcher.reached(dep, STEADY[dep[0]])
                if reached is None:
                    continue
                ready_at = max(ready_at, reached)
            if child is not None:
                result.latencies.append(max(0.0, child - ready_at))
                result.by_kind.setdefault(obj["kind"], []).append(result.latencies[-1])
        # The models' latency again, to the API server receiving the create of the child (its
        # clock is this machine's: wall time, turned into this process's monotonic clock).
        creates = audit_child_creates(cluster.audit_log)
        offset = time.time() - time.monotonic()
        for obj in objects:
            child = audit_first_child(obj, creates)
            if dependency(obj) is None and child is not None:
                result.by_kind_audit.setdefault(obj["kind"], []).append(child - offset - started[key(obj)])
        result.transitions = sum(len(watcher.phases.get(key(o), ())) for o in objects)
        result.progress_writes = watcher.progress_writes
        result.requests = audit_counts(cluster.audit_log)
        children = [as_new(body) for body in watcher.child_bodies.values()]
        # Creation order of the floor: the order the operator made them.
        children.sort(key=lambda c: watcher.children[(c["kind"], c["metadata"]["namespace"], c["metadata"]["name"])])
        return result, children
    finally:
        cluster.stop()


def child_candidates(obj: dict) -> list[tuple[str, str, str]]:
    """The (kind, namespace, name) its first child may have."""
    from litgpt_operator.builders.common import child_name  # the names the builders give

    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    candidates = {"LitGPTModel": [("Job", child_name(name, "download"))],
                  "FinetuneJob": [("Job", child_name(name, "validate")), ("Job", child_name(name, "finetune"))],
                  "ModelServer": [("Deployment", child_name(name))]}[obj["kind"]]
    return [(kind, ns, child) for kind, child in candidates]


def first_child(obj: dict, watcher: Watcher) -> Optional[float]:
    seen = [watcher.children.get(c) for c in child_candidates(obj)]
    seen = [t for t in seen if t is not None]
    return min(seen) if seen else None


def audit_first_child(obj: dict, creates: dict[tuple[str, str, str], float]) -> Optional[float]:
    seen = [creates[c] for c in child_candidates(obj) if c in creates]
    return min(seen) if seen else None


def run_floor(children: list[dict], mode: str, args, work: Path, result: Result) -> None:
    cluster = Cluster.start(work / f"cp-floor-{result.n}-{mode}")
    try:
        cluster.namespaces(sorted({c["metadata"]["namespace"] for c in children}))
        watcher = Watcher(cluster.api, kinds=()).start()  # no CRDs here
        started: dict[tuple[str, str, str], float] = {}
        schedule(children, cluster.create, mode, args.rate, args.burst_threads, started)
        _until(lambda: all(k in watcher.children for k in started), "the floor's children in the watch", 120)
        watcher.stop()
        result.floor = [watcher.children[k] - t for k, t in started.items()]
    finally:
        cluster.stop()


# --- the table ---------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def table(results: list[Result]) -> str:
    head = ("| N | mode | child p50 | child p99 | floor p50 | floor p99 | p99 / floor | settle | "
            "RSS peak | CPU | requests / object | writes / transition | progress-only writes | load 1m |")
    rows = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in results:
        writes = sum(v for k, v in r.requests.items() if k.startswith("verb:") and k[5:] in WRITES)
        total = sum(v for k, v in r.requests.items() if k.startswith("verb:"))
        ratio = pct(r.latencies, 0.99) / pct(r.floor, 0.99) if r.floor else float("nan")
        settle = f"{r.settle_s:.1f} s" if r.settle_s is not None else f"{r.unsettled} unsettled"
        rows.append(
            f"| {r.n} | {r.mode} | {pct(r.latencies, 0.5) * 1000:.0f} ms | {pct(r.latencies, 0.99) * 1000:.0f} ms | "
            f"{pct(r.floor, 0.5) * 1000:.0f} ms | {pct(r.floor, 0.99) * 1000:.0f} ms | {ratio:.1f}x | {settle} | "
            f"{r.peak_rss_mib:.0f} MiB | {r.cpu_s:.1f} s | {total / r.n:.1f} | "
            f"{writes / max(1, r.transitions):.2f} | {r.progress_writes} | {r.load} |")
    return "\n".join(rows)


def breakdown(r: Result) -> str:
    parts = sorted(((v, k) for k, v in r.requests.items() if not k.startswith("verb:")), reverse=True)
    kinds = ", ".join(f"{kind} p50 {pct(v, 0.5) * 1000:.0f} ms p99 {pct(v, 0.99) * 1000:.0f} ms"
                      for kind, v in sorted(r.by_kind.items()))
    audit = ", ".join(f"{kind} p50 {pct(v, 0.5) * 1000:.0f} ms p99 {pct(v, 0.99) * 1000:.0f} ms"
                      for kind, v in sorted(r.by_kind_audit.items()))
    return (f"N={r.n} {r.mode}: child latency: {kinds}\n  to the API server receiving the child's create (audit "
            f"log): {audit}\n  requests: " + ", ".join(f"{k} {v}" for v, k in parts))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500", help="comma-separated N (objects per run)")
    parser.add_argument("--modes", default="burst,steady", help="burst and/or steady")
    parser.add_argument("--rate", type=float, default=20.0, help="steady: objects per second")
    parser.add_argument("--burst-threads", type=int, default=8, help="concurrent create calls")
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every object to settle")
    parser.add_argument("--no-floor", action="store_true", help="skip the direct-creation floor runs")
    parser.add_argument("--operator-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the operator (e.g. LITGPT_OPERATOR_LOG_LEVEL=WARNING)")
    parser.add_argument("--work-dir", type=Path, help="control planes' state (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-operator-"))
    results = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            for mode in args.modes.split(","):
                print(f"N={n} {mode}: operator run...", file=sys.stderr, flush=True)
                result, children = run_operator(n, mode, args, work)
                if not args.no_floor:
                    print(f"N={n} {mode}: floor run ({len(children)} children)...", file=sys.stderr, flush=True)
                    run_floor(children, mode, args, work, result)
                results.append(result)
                print(table([result]).splitlines()[-1], file=sys.stderr, flush=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    for r in results:
        print(breakdown(r))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0 if all(r.unsettled == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
