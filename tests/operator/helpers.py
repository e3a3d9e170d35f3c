"""Helpers of the operator tests against the real API server: a namespaced client, a polling
`wait_for`, the operator in-process (KopfRunner) or as its own process, small manifests."""


from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from litgpt_operator import kube as operator_kube
from litgpt_devcluster.waiting import wait_for  # noqa: F401  (re-exported for the tests)

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_ENV = {
    "LITGPT_OPERATOR_RETRY_DELAY_SECONDS": "1",
    "LITGPT_OPERATOR_WATCH_SERVER_TIMEOUT_SECONDS": "20",
    "LITGPT_OPERATOR_RUNTIME_IMAGE": "litgpt-runtime:test",
    "LITGPT_OPERATOR_LOG_TAIL_LINES": "5",
    # Download pods that really run (exec nodes) must never reach the internet: a closed port.
    "LITGPT_OPERATOR_HF_ENDPOINT": "http://127.0.0.1:9",
}
# Pods that really run their command as a local process (the node agent's exec node).
ON_EXEC_NODE = {"nodeSelector": {"node.litgpt.dev/mode": "exec"},
                "tolerations": [{"key": "node.litgpt.dev/exec", "operator": "Exists"}]}


def condition(obj: Optional[dict], type_: str) -> Optional[dict]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond
    return None


@dataclass
class K8s:
    """Reads and writes in one namespace (through the operator's own REST helper)."""

    kube: Any
    namespace: str

    def apply(self, manifest: str | dict | list, check: bool = True) -> str:
        if not isinstance(manifest, str):
            docs = manifest if isinstance(manifest, list) else [manifest]
            manifest = "\n---\n".join(yaml.safe_dump(d) for d in docs)
        return self.kube.kubectl("apply", "--server-side", "-n", self.namespace, "-f", "-", input=manifest, check=check)

    def get(self, kind: str, name: str) -> Optional[dict]:
        return operator_kube.get(kind, self.namespace, name)

    def list(self, kind: str, labels: Optional[dict] = None) -> list[dict]:
        return operator_kube.list_objects(kind, self.namespace, labels)

    def phase(self, kind: str, name: str) -> Optional[str]:
        return ((self.get(kind, name) or {}).get("status") or {}).get("phase")

    def wait_phase(self, kind: str, name: str, phase: str, timeout: float = 60) -> dict:
        try:
            wait_for(lambda: self.phase(kind, name) == phase, f"{kind} {name} phase {phase}", timeout_s=timeout)
        except AssertionError as error:
            status = (self.get(kind, name) or {}).get("status")
            raise AssertionError(f"{error}; its status: {status}") from None
        return self.get(kind, name)

    def events(self, name: str) -> list[dict]:
        items = json.loads(self.kube.kubectl("get", "events", "-n", self.namespace, "-o", "json"))["items"]
        return [e for e in items if e["involvedObject"]["name"] == name]

    def event_reasons(self, name: str) -> set[str]:
        return {e["reason"] for e in self.events(name)}

    def wait_events(self, names: list[str], reasons: set[str], timeout: float = 30) -> set[str]:
        """Wait until Events with all `reasons` exist about the objects `names` (they are posted
        right after the status write a test may have seen first)."""
        def seen() -> set[str]:
            return set().union(*(self.event_reasons(n) for n in names))

        wait_for(lambda: reasons <= seen(), f"events {sorted(reasons)} on {names}", timeout_s=timeout)
        return seen()

    def delete(self, kind: str, name: str) -> None:
        operator_kube.delete(kind, self.namespace, name)

    def claim(self, name: str, size: str = "1Gi") -> None:
        """A claim of our own (e.g. a dataset); the node agent's provisioner binds it."""
        self.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}})


class OperatorRunner:
    """The operator in this process (KopfRunner), watching one namespace; restartable."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self.runner = None
        self.output = ""

    def start(self) -> "OperatorRunner":
        from kopf.testing import KopfRunner

        self.runner = KopfRunner(
            ["run", "--standalone", "--namespace", self.namespace, "-m", "litgpt_operator.handlers", "--verbose"],
            timeout=60,
        )
        self.runner.__enter__()
        return self

    def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            runner.__exit__(None, None, None)
            self.output += runner.output

    @property
    def running(self) -> bool:
        return self.runner is not None

    def crashes(self) -> list[str]:
        """Log lines of handlers that raised (rather than reporting a condition) since start."""
        return [line for line in self.output.splitlines() if "failed with an exception" in line]


def service_account_kubeconfig(k8s: K8s, path: Path) -> Path:
    """A kubeconfig for a ServiceAccount bound to exactly the operator's generated ClusterRole
    (operator/rbac/clusterrole.yaml): the operator run with it proves the role is enough."""
    kubectl = k8s.kube.kubectl
    kubectl("apply", "-f", str(REPO_ROOT / "operator" / "rbac" / "clusterrole.yaml"))
    kubectl("create", "serviceaccount", "litgpt-operator", "-n", k8s.namespace)
    kubectl("create", "clusterrolebinding", f"litgpt-operator-{k8s.namespace}", "--clusterrole=litgpt-operator",
            f"--serviceaccount={k8s.namespace}:litgpt-operator")
    token = kubectl("create", "token", "litgpt-operator", "-n", k8s.namespace, "--duration=1h").strip()
    admin = json.loads(Path(k8s.kube.kubeconfig).read_text())
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    return path


def operator_process(kubeconfig: Path, namespace: str, log: Path) -> subprocess.Popen:
    """The operator as its console script (`litgpt-operator`), in its own process: killable."""
    import os
    import sys

    env = {**os.environ, **OPERATOR_ENV, "KUBECONFIG": str(kubeconfig), "LITGPT_OPERATOR_NAMESPACES": namespace,
           "LITGPT_OPERATOR_HEALTH_PORT": str(_free_port())}
    return subprocess.Popen([sys.executable, "-m", "litgpt_operator"], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- small manifests --------------------------------------------------------------------------

API = "litgpt.dev/v1alpha1"
TINY_REPO_ID = "tiny-org/tiny-llama"  # the `hub` fixture's repo (tests/operator/conftest.py)
EXIT_CODE = "node-agent.litgpt.dev/exit-code"
RUN_SECONDS = "node-agent.litgpt.dev/run-seconds"


def model(name: str = "pythia", claim: str = "cache", **spec) -> dict:
    return {"apiVersion": API, "kind": "LitGPTModel", "metadata": {"name": name},
            "spec": {"repoId": "EleutherAI/pythia-14m", "checkpointRootPVC": {"claimName": claim, "size": "1Gi"}, **spec}}


INLINE_DATA = '[{"instruction": "a", "output": "b"}]'
# For tests scripting the training pod with pod annotations, which the data check's pod would carry too.
INLINE_DATA_UNCHECKED = {"inline": INLINE_DATA, "validation": "off"}


def finetune(name: str = "ft", model_name: str = "pythia", **spec) -> dict:
    return {"apiVersion": API, "kind": "FinetuneJob", "metadata": {"name": name},
            "spec": {"modelRef": {"name": model_name}, "data": {"inline": INLINE_DATA},
                     "gpusPerNode": 1, "train": {"epochs": 2, "globalBatchSize": 4, "microBatchSize": 2}, **spec}}


def command(workload: dict) -> list[str]:
    return workload["spec"]["template"]["spec"]["containers"][0]["command"]


def built_command(k8s: K8s, kind: str, name: str) -> list[str]:
    """The command line the builders give the live object's workload (its golden form is in
    test_builders.py: the cluster tests check that the operator ran the builders, not the form)."""
    from litgpt_operator.api import BY_KIND
    from litgpt_operator.builders import finetune as ft, model as md, server as sv
    from litgpt_operator.builders.common import Parent
    from litgpt_operator.builders.sources import ModelCheckpoint
    from litgpt_operator.settings import Settings

    body = k8s.get(kind, name)
    parent, spec, settings = Parent.from_body(body), BY_KIND[kind].parse_spec(body), Settings.from_env(OPERATOR_ENV)
    if kind == "LitGPTModel":
        return command(md.build_download_job(parent, spec, settings))
    checkpoint = ModelCheckpoint.from_body(k8s.get("LitGPTModel", spec.model_ref.name))
    if kind == "FinetuneJob":
        return command(ft.build_finetune_children(parent, spec, checkpoint, settings)[-1])
    return command(sv.build_deployment(parent, spec, sv.ServeSource(checkpoint), settings))


def ready_model(k8s: K8s, name: str = "pythia", claim: str = "cache") -> dict:
    k8s.apply(model(name, claim))
    return k8s.wait_phase("LitGPTModel", name, "Ready")
