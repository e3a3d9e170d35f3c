"""The chart's operator for real: its Deployment runs on the exec node (a real process) under the
chart's ServiceAccount and exactly the chart's RBAC, and reconciles the full example flow."""

from __future__ import annotations

from functools import partial
import json
import socket
import sys
from pathlib import Path

import pytest
import yaml
from packaging_support import CHART, REPO, run
from litgpt_devcluster.waiting import wait_for as poll_until

pytestmark = pytest.mark.slow

ON_EXEC_NODE = {
    "nodeSelector": {"node.litgpt.dev/mode": "exec"},
    "tolerations": [{"key": "node.litgpt.dev/exec", "operator": "Exists", "effect": "NoSchedule"}],
}
LAUNCH = ["-m", "litgpt_operator"]  # the operator's console script, as the image's entrypoint runs it
PLURAL = {"LitGPTModel": "litgptmodels", "FinetuneJob": "finetunejobs", "ModelServer": "modelservers",
          "PretrainJob": "pretrainjobs"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# This file's waits: the shared poller with a 90 s default.
wait_for = partial(poll_until, timeout_s=90, interval_s=0.5)


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
        "command": [sys.executable, *LAUNCH],
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
                     timeout_s=120)
        events = json.loads(kube.kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
        assert any(e["involvedObject"]["name"] == "flow-finetune" for e in events), "the operator posted no Event"

        logs = operator_logs(kube, namespace)
        assert logs, "no operator log found on the exec node"
        for denial in ("forbidden", "Forbidden", "403", "Not enough permissions"):
            assert denial not in logs, f"RBAC denial in the operator log: {denial}\n{logs[-3000:]}"
    finally:
        run(helm_bin, "uninstall", release, "-n", namespace, "--kubeconfig", str(kube.kubeconfig), "--wait")


# --- high availability: two replicas, one works ----------------------------------------------------

def service_account_kubeconfig(kube, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (a TokenRequest token)."""
    token = kube.kubectl("create", "token", account, "-n", namespace, "--duration=1h").strip()
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cluster = admin["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [cluster],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa", "namespace": namespace}}],
    }))
    return path


RESUMED = "Resuming operations after the pause"
PAUSED = "Pausing operations in favour of"


class Replica:
    """One operator replica as its own process, with the chart Deployment's environment."""

    def __init__(self, name: str, env: dict[str, str], log: Path):
        import os
        import subprocess

        self.name, self.log = name, log
        self.process = subprocess.Popen([sys.executable, *LAUNCH], env={**os.environ, **env},
                                        stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def working(self) -> bool:
        """kopf starts paused; peering resumes it, or pauses it again for a higher-priority peer."""
        text = self.text()
        return text.rfind(RESUMED) > text.rfind(PAUSED)

    def handled(self) -> bool:
        return "Handler '" in self.text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except Exception:
                self.process.kill()
                self.process.wait(10)


def deployment_env(kube, namespace: str, release: str) -> dict[str, str]:
    deployment = json.loads(kube.kubectl("get", "deployment", f"{release}-litgpt-operator", "-n", namespace, "-o", "json"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}




def peers(kube, namespace: str, name: str) -> dict:
    out = kube.kubectl("get", "kopfpeerings.kopf.dev", name, "-n", namespace, "-o", "json")
    return json.loads(out).get("status") or {}


def model_manifest(name: str, claim: str) -> str:
    return yaml.safe_dump({"apiVersion": "litgpt.dev/v1alpha1", "kind": "LitGPTModel", "metadata": {"name": name},
                           "spec": {"repoId": "EleutherAI/pythia-14m",
                                    "checkpointRootPVC": {"claimName": claim, "size": "1Gi"}}})


def test_two_replicas_with_peering_do_the_work_once_and_fail_over(kube, namespace, chart_crds, helm_bin, tmp_path):
    release = f"ha-{namespace}"
    values = {"replicaCount": 2, "peering": {"enabled": True, "name": f"peer-{namespace}"},
              "watch": {"namespaces": [namespace]}, "runtime": {"image": "litgpt-runtime:test"},
              "operator": {"retryDelaySeconds": 1},
              # The replicas run below as local processes (two on one host need two health ports);
              # the chart's own pods are kept off every node.
              "nodeSelector": {"litgpt.dev/nowhere": "true"}}
    path = tmp_path / "ha.yaml"
    path.write_text(yaml.safe_dump(values))
    result = run(helm_bin, "install", release, str(CHART), "-n", namespace, "--kubeconfig", str(kube.kubeconfig),
                 "-f", str(path))
    assert result.returncode == 0, result.stderr
    replicas: list[Replica] = []
    try:
        env = deployment_env(kube, namespace, release)
        assert env["LITGPT_OPERATOR_STANDALONE"] == "false"
        env["KUBECONFIG"] = str(service_account_kubeconfig(kube, namespace, f"{release}-litgpt-operator",
                                                           tmp_path / "sa.kubeconfig"))
        for name in ("a", "b"):
            ports = {"LITGPT_OPERATOR_HEALTH_PORT": str(free_port()), "LITGPT_OPERATOR_METRICS_PORT": str(free_port())}
            replicas.append(Replica(name, {**env, **ports},
                                    tmp_path / f"replica-{name}.log"))
        # Both replicas keep their keep-alive in the peering object; kopf starts paused and only the
        # replica with the highest priority resumes.
        wait_for(lambda: len(peers(kube, namespace, f"peer-{namespace}")) == 2, "both replicas in the peering object",
                 timeout_s=60)
        # A replica may resume before the other has registered; it pauses once it sees a higher one.
        wait_for(lambda: sorted(r.working() for r in replicas) == [False, True], "exactly one working replica",
                 timeout_s=60)
        leader = next(r for r in replicas if r.working())
        standby = next(r for r in replicas if r is not leader)

        bound_volume(kube, namespace, "cache")
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=model_manifest("m1", "cache"))
        wait_for(lambda: phase(kube, namespace, "LitGPTModel", "m1") == "Ready", "m1 Ready", timeout_s=90)
        assert leader.handled(), leader.text()[-2000:]
        assert not standby.handled(), f"the standby replica did work:\n{standby.text()[-2000:]}"

        leader.stop()  # the leader goes away (a drained node, a rollout)
        wait_for(standby.working, "the standby to take over", timeout_s=120)
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=model_manifest("m2", "cache"))
        wait_for(lambda: phase(kube, namespace, "LitGPTModel", "m2") == "Ready", "m2 Ready after fail-over", timeout_s=90)
        assert standby.handled()
        for replica in replicas:
            assert "forbidden" not in replica.text().lower(), replica.text()[-2000:]
    finally:
        for replica in replicas:
            replica.stop()
        run(helm_bin, "uninstall", release, "-n", namespace, "--kubeconfig", str(kube.kubeconfig))
