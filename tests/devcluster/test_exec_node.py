"""The exec node really runs a pod's command: env from Secrets/ConfigMaps/fields, volumes
(a provisioned PVC, emptyDir, configMap) mapped to local folders, exit code and logs reported,
the process killed when the pod is deleted, and the pod's own service-account identity."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from litgpt_devcluster.node_agent.provisioner import PROVISIONER, claim_folder
from litgpt_devcluster.waiting import wait_for

pytestmark = pytest.mark.cluster

ON_EXEC_NODE = {
    "nodeSelector": {"node.litgpt.dev/mode": "exec"},
    "tolerations": [{"key": "node.litgpt.dev/exec", "operator": "Exists", "effect": "NoSchedule"}],
}


def _agent_dir(kube) -> Path:
    return kube.control_plane.state_dir / "node-agent"


def _finished(core, name, namespace):
    pod = core.read_namespaced_pod_status(name, namespace)
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


def test_command_runs_with_env_and_volumes(kube, namespace):
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "data": {"token": base64.b64encode(b"s3cret").decode()}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"greeting": "hello"}})
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    })
    script = 'echo "$GREETING $TOKEN $POD" > /data/out.txt; echo "$(cat /config/greeting)" >> /data/out.txt; pwd >> /data/out.txt; echo bye; exit 7'
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "worker"},
        "spec": {
            **ON_EXEC_NODE,
            "restartPolicy": "Never",
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "config", "configMap": {"name": "cfg"}},
            ],
            "containers": [{
                "name": "main", "image": "example.invalid/worker:1",
                "command": ["sh", "-c", script],
                "workingDir": "/scratch",
                "env": [
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "config", "mountPath": "/config"},
                ],
            }],
        },
    })

    pod = wait_for(lambda: _finished(core, "worker", namespace), "pod worker to finish")
    assert pod.spec.node_name == "exec-0"
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (7, "Error", "bye")

    claim = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert claim.status.phase == "Bound"
    volume = core.read_persistent_volume(claim.spec.volume_name)
    assert volume.metadata.annotations["pv.kubernetes.io/provisioned-by"] == PROVISIONER
    out = (claim_folder(_agent_dir(kube), namespace, "data") / "out.txt").read_text().splitlines()
    assert out[:2] == ["hello s3cret worker", "hello"]
    assert out[2].endswith(f"/volumes/scratch") and namespace in out[2]  # the pod's emptyDir folder
    logs = list((_agent_dir(kube) / "pods").glob(f"{namespace}_worker_*/logs/main.log"))
    assert len(logs) == 1 and logs[0].read_text() == "bye\n"
    # The apiserver fetches them from the agent as it would from a kubelet.
    assert kube.kubectl("logs", "worker", "-n", namespace) == "bye\n"


def _processes_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_deleting_the_pod_kills_its_process(kube, namespace):
    core = client.CoreV1Api(kube.api_client())
    marker = f"sleeper-{namespace}"
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "sleeper"},
        "spec": {**ON_EXEC_NODE, "terminationGracePeriodSeconds": 5,
                 "containers": [{"name": "main", "image": "x", "command": ["sh", "-c", f"sleep 300 # {marker}"]}]},
    })
    wait_for(lambda: core.read_namespaced_pod("sleeper", namespace).status.phase == "Running", "sleeper Running")
    assert _processes_with(marker)

    core.delete_namespaced_pod("sleeper", namespace)

    def gone():
        try:
            core.read_namespaced_pod("sleeper", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, "pod sleeper deleted", timeout_s=30)
    assert _processes_with(marker) == []


def test_process_acts_as_the_pods_service_account(kube, namespace):
    """The agent hands the process a kubeconfig for the pod's own token, so RBAC applies."""
    core = client.CoreV1Api(kube.api_client())
    probe = (
        "import os, kubernetes as k\n"
        "k.config.load_kube_config(os.environ['KUBECONFIG'])\n"
        "review = k.client.AuthenticationV1Api().create_self_subject_review({})\n"
        "print('user', review.status.user_info.username)\n"
        "try:\n"
        "    k.client.CoreV1Api().list_namespaced_secret(os.environ['NS'])\n"
        "    print('secrets allowed')\n"
        "except k.client.rest.ApiException as e:\n"
        "    print('secrets status', e.status)\n"
    )
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "probe"},
        "spec": {**ON_EXEC_NODE, "restartPolicy": "Never", "containers": [{
            "name": "main", "image": "x", "command": ["python", "-c", probe],
            "env": [{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        }]},
    })
    pod = wait_for(lambda: _finished(core, "probe", namespace), "pod probe to finish")
    logs = next((_agent_dir(kube) / "pods").glob(f"{namespace}_probe_*/logs/main.log")).read_text()
    assert pod.status.phase == "Succeeded", logs
    assert f"user system:serviceaccount:{namespace}:default" in logs  # not anonymous, not admin
    assert "secrets status 403" in logs  # and RBAC applies to it
    token_config = json.loads(next((_agent_dir(kube) / "pods").glob(f"{namespace}_probe_*/kubeconfig")).read_text())
    assert token_config["users"][0]["user"]["token"].count(".") == 2  # a JWT, inline for every client


def test_kubectl_logs_follow_streams_until_the_container_ends(kube, namespace):
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "talker"},
        "spec": {**ON_EXEC_NODE, "restartPolicy": "Never", "containers": [{
            "name": "main", "image": "x", "command": ["sh", "-c", "echo one; sleep 2; echo two"]}]},
    })
    wait_for(lambda: core.read_namespaced_pod("talker", namespace).status.phase != "Pending", "talker started")
    assert kube.kubectl("logs", "-f", "talker", "-n", namespace) == "one\ntwo\n"


def test_readiness_probe_gates_ready(kube, namespace):
    import socket

    with socket.socket() as sock:  # a free port for the pod's server (it shares our network)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "server"},
        "spec": {**ON_EXEC_NODE, "containers": [{
            "name": "main", "image": "x",
            "command": ["sh", "-c", f"sleep 2; exec python -m http.server {port} --bind 127.0.0.1"],
            "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
        }]},
    })
    seen = []

    def ready():
        pod = core.read_namespaced_pod_status("server", namespace)
        statuses = pod.status.container_statuses or []
        if pod.status.phase == "Running" and statuses:
            seen.append(statuses[0].ready)
        return seen and seen[-1]

    wait_for(ready, "pod server Ready", interval_s=0.1)
    assert seen[0] is False  # Running before the server listened, but not Ready
    conditions = {c.type: c.status for c in core.read_namespaced_pod_status("server", namespace).status.conditions}
    assert conditions["Ready"] == "True"
    core.delete_namespaced_pod("server", namespace, grace_period_seconds=1)
