"""The chart's operator for real: its Deployment runs on the exec node (a real process) under the
chart's ServiceAccount and exactly the chart's RBAC, and reconciles the full example flow."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml
from packaging_support import CHART, REPO, run

pytestmark = pytest.mark.slow

ON_EXEC_NODE = {
    "nodeSelector": {"node.litgpt.dev/mode": "exec"},
    "tolerations": [{"key": "node.litgpt.dev/exec", "operator": "Exists", "effect": "NoSchedule"}],
}
PLURAL = {"LitGPTModel": "litgptmodels", "FinetuneJob": "finetunejobs", "ModelServer": "modelservers",
          "PretrainJob": "pretrainjobs"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, what: str, timeout: float = 90, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def get(kube, namespace: str, kind: str, name: str) -> dict | None:
    out = kube.kubectl("get", f"{PLURAL[kind]}.litgpt.dev", name, "-n", namespace, "-o", "json", "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def phase(kube, namespace: str, kind: str, name: str) -> str | None:
    return ((get(kube, namespace, kind, name) or {}).get("status") or {}).get("phase")


def operator_logs(kube, namespace: str) -> str:
    """Logs of the operator pods, from the exec node's folders."""
    pods = kube.control_plane.state_dir / "node-agent" / "pods"
    return "\n".join(p.read_text(errors="replace") for p in sorted(pods.glob(f"{namespace}_*/logs/**/*")) if p.is_file())


def bound_volume(kube, namespace: str, claim: str) -> None:
    """A PersistentVolume pre-bound to `claim` (the operator creates the claim itself)."""
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-{claim}"},
          "spec": {"capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"],
                   "persistentVolumeReclaimPolicy": "Delete",
                   "hostPath": {"path": f"/tmp/litgpt-test-volumes/{namespace}/{claim}"},
                   "claimRef": {"namespace": namespace, "name": claim}}}
    kube.kubectl("apply", "-f", "-", input=json.dumps(pv))


def install(kube, helm_bin: str, tmp_path: Path, release: str, namespace: str, values: dict) -> None:
    path = tmp_path / f"{release}.yaml"
    path.write_text(yaml.safe_dump(values))
    result = run(helm_bin, "install", release, str(CHART), "-n", namespace, "--kubeconfig", str(kube.kubeconfig),
                 "-f", str(path), "--wait", "--timeout", "120s", timeout=180)
    assert result.returncode == 0, result.stderr


def test_chart_deployment_reconciles_the_full_flow_with_only_its_rbac(kube, namespace, chart_crds, helm_bin, tmp_path):
    release = f"op-{namespace}"
    values = {
        "replicaCount": 1, "peering": {"enabled": False},
        "command": [sys.executable, "-m", "litgpt_operator"],
        "watch": {"namespaces": [namespace]},
        "health": {"port": free_port()},
        "metrics": {"port": free_port()},
        "runtime": {"image": "litgpt-runtime:test"},
        "operator": {"retryDelaySeconds": 1, "logFormat": "plain"},
        **ON_EXEC_NODE,
    }
    install(kube, helm_bin, tmp_path, release, namespace, values)
    try:
        pod = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}",
                                      "-o", "json"))["items"][0]
        assert pod["spec"]["serviceAccountName"] == f"{release}-litgpt-operator"
        assert pod["spec"]["nodeName"] == "exec-0"

        bound_volume(kube, namespace, "flow-cache")
        kube.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "full-flow.yaml"))
        for kind, name, want in (("LitGPTModel", "flow-model", "Ready"), ("FinetuneJob", "flow-finetune", "Succeeded"),
                                 ("ModelServer", "flow-server", "Ready")):
            wait_for(lambda: phase(kube, namespace, kind, name) == want, f"{kind} {name} {want} "
                     f"(now {phase(kube, namespace, kind, name)}); operator log:\n{operator_logs(kube, namespace)[-3000:]}",
                     timeout=120)
        events = json.loads(kube.kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
        assert any(e["involvedObject"]["name"] == "flow-finetune" for e in events), "the operator posted no Event"

        logs = operator_logs(kube, namespace)
        assert logs, "no operator log found on the exec node"
        for denial in ("forbidden", "Forbidden", "403", "Not enough permissions"):
            assert denial not in logs, f"RBAC denial in the operator log: {denial}\n{logs[-3000:]}"
    finally:
        run(helm_bin, "uninstall", release, "-n", namespace, "--kubeconfig", str(kube.kubeconfig), "--wait")
