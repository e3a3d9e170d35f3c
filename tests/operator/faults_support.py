"""What the fault tests (test_faults_cluster.py) share: a control plane of their own, whose API
server, etcd and node agents they may stop, a ledger of every child ever created, and the
operator as a process they can SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kubernetes import client, watch

from tests.operator.helpers import OPERATOR_ENV, _free_port, wait_for

# Faults need timings shorter than a production cluster's, set on this control plane only:
# - watches without a timeout of their own are closed by the API server after 8-16 s (the
#   watch-break test; kopf's own watch timeout is left unset there);
# - a pod on a node that stopped reporting is evicted 2 s after the node is marked unreachable,
#   which the node lifecycle controller does 16 s after the node's last heartbeat.
FAULT_FLAGS = {
    "kube-apiserver": ("--min-request-timeout=8", "--default-not-ready-toleration-seconds=2",
                       "--default-unreachable-toleration-seconds=2"),
    "kube-controller-manager": ("--node-monitor-grace-period=16s", "--node-monitor-period=2s"),
}
SIM_NODES = ("sim-cpu-0:cpu=8,memory=32Gi,pods=110", "sim-gpu-0:cpu=16,memory=64Gi,pods=110,nvidia.com/gpu=8")
# The children the operator creates, by the API that lists them.
CHILD_KINDS = ("Job", "Deployment", "Service", "ReplicaSet", "Pod", "ConfigMap", "PersistentVolumeClaim",
               "HorizontalPodAutoscaler")


RESUMED = "Resuming operations after the pause"
PAUSED = "Pausing operations in favour of"


def watch_requests(kube, resource: str) -> int:
    """WATCH requests on `resource` the API server has finished (its own metrics): each one is a
    watch stream that ended, by the server's timeout or otherwise."""
    total = 0
    for line in kube.kubectl("get", "--raw", "/metrics").splitlines():
        if line.startswith("apiserver_request_total{") and 'verb="WATCH"' in line and f'resource="{resource}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


class ChildLedger:
    """Every object of CHILD_KINDS ever seen in a namespace, with all the uids each name had:
    a name with two uids was created twice. Lists every `interval_s` (a list after a restart
    of the API server sees what a broken watch would have missed); objects living shorter than
    that are not seen, which is fine for children that the operator never deletes."""

    def __init__(self, api_client, namespace: str, interval_s: float = 0.3):
        self.core, self.apps, self.batch = client.CoreV1Api(api_client), client.AppsV1Api(api_client), client.BatchV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.namespace, self.interval_s = namespace, interval_s
        self.uids: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.owners: dict[str, str] = {}  # child uid -> controller uid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-ledger", daemon=True)

    def _lists(self):
        ns = self.namespace
        return {"Job": lambda: self.batch.list_namespaced_job(ns), "Deployment": lambda: self.apps.list_namespaced_deployment(ns),
                "Service": lambda: self.core.list_namespaced_service(ns), "ReplicaSet": lambda: self.apps.list_namespaced_replica_set(ns),
                "Pod": lambda: self.core.list_namespaced_pod(ns), "ConfigMap": lambda: self.core.list_namespaced_config_map(ns),
                "PersistentVolumeClaim": lambda: self.core.list_namespaced_persistent_volume_claim(ns),
                "HorizontalPodAutoscaler": lambda: self.autoscaling.list_namespaced_horizontal_pod_autoscaler(ns)}

    def look(self) -> None:
        for kind, lister in self._lists().items():
            try:
                items = lister().items
            except Exception:  # the API server is down (on purpose): look again later
                continue
            for item in items:
                if kind == "ConfigMap" and item.metadata.name == "kube-root-ca.crt":
                    continue
                self.uids[(kind, item.metadata.name)].add(item.metadata.uid)
                owner = next((r for r in item.metadata.owner_references or [] if r.controller), None)
                if owner:
                    self.owners[item.metadata.uid] = owner.uid

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.look()

    def __enter__(self) -> "ChildLedger":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.look()

    def created_twice(self) -> dict[tuple[str, str], set[str]]:
        return {key: uids for key, uids in self.uids.items() if len(uids) > 1}

    def count(self, kind: str) -> int:
        return sum(len(uids) for (k, _), uids in self.uids.items() if k == kind)

    def children_of(self, owner_uid: str, kind: str) -> list[str]:
        return [name for (k, name), uids in self.uids.items() if k == kind and any(self.owners.get(u) == owner_uid for u in uids)]


@dataclass
class OperatorProcess:
    """`python -m litgpt_operator` in its own process, restartable, killable with SIGKILL."""

    kubeconfig: Path
    namespace: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()  # of the test settings (OPERATOR_ENV): kopf's default instead
    process: Optional[subprocess.Popen] = None
    health_port: int = 0
    starts: int = 0

    def start(self) -> "OperatorProcess":
        self.health_port = _free_port()
        env = {**os.environ, **OPERATOR_ENV, "KUBECONFIG": str(self.kubeconfig),
               "LITGPT_OPERATOR_NAMESPACES": self.namespace, "LITGPT_OPERATOR_HEALTH_PORT": str(self.health_port),
               "LITGPT_OPERATOR_LOG_FORMAT": "full",  # timestamps: when each step happened
               **self.env}
        for key in self.unset:
            env.pop(key, None)
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} at {time.time():.3f}\n".encode())
        self.process = subprocess.Popen([sys.executable, "-m", "litgpt_operator"], env=env,
                                        stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout_s: float = 60) -> None:
        wait_for(lambda: self.healthy() or self.process.poll() is not None, "the operator's /healthz", timeout_s=timeout_s)
        assert self.process.poll() is None, f"the operator exited:\n{self.tail()}"

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind (a crashed pod, an OOM kill, a lost node)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def working(self) -> bool:
        """With peering: kopf starts paused; it resumes when no peer of higher priority lives."""
        text = self.text()
        return self.process.poll() is None and text.rfind(RESUMED) > text.rfind(PAUSED)

    def handled(self, since: int = 0) -> bool:
        """Whether it ran a handler (after `since` characters of its log)."""
        return "Handler '" in self.text()[since:]

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return self.text()[-chars:]


def phases(k8s, kinds: dict[str, list[str]]) -> dict[str, Optional[str]]:
    return {f"{kind}/{name}": k8s.phase(kind, name) for kind, names in kinds.items() for name in names}


def job_runs(k8s, job: str) -> int:
    """Pods a Job has ever had (its status counts them: the pods themselves may be gone)."""
    status = (k8s.get("Job", job) or {}).get("status") or {}
    return int(status.get("succeeded") or 0) + int(status.get("failed") or 0) + int(status.get("active") or 0)


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)[:4000]
