"""The real node itself: a real kubelet registers it, containerd and runc run the project's image
as user 1000 on a read-only root filesystem, the pod serves on its pod IP and through its
Service's ClusterIP (kube-proxy), the cluster DNS resolves it, `kubectl exec`/`logs` work, the
scheduler counts nvidia.com/gpu, and everything lives in the node's network namespace.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
import yaml

from litgpt_devcluster import processes
from litgpt_devcluster.binaries import binary_version
from litgpt_devcluster.realnode import netns
from litgpt_devcluster.realnode.config import NODE_NAME, POD_CIDR
from litgpt_devcluster.waiting import wait_for

# The first test of a session also starts the node, which imports a new image tag (~6 GB: minutes).
pytestmark = pytest.mark.timeout(1200)

# The chart's security context for the operator and runtime containers.
LOCKED_DOWN = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
               "capabilities": {"drop": ["ALL"]}}


@pytest.fixture
def ns(real_cluster):
    name = f"node-{os.urandom(3).hex()}"
    real_cluster.kubectl("create", "namespace", name)
    wait_for(lambda: real_cluster.kubectl("get", "serviceaccount", "default", "-n", name, "--ignore-not-found",
                                          "-o", "name").strip(), f"namespace {name}", 30)
    yield name
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply(cluster, ns: str, *objects: dict) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(objects))


def pod_json(cluster, ns: str, name: str) -> dict:
    return json.loads(cluster.kubectl("get", "pod", name, "-n", ns, "-o", "json"))


def running(cluster, ns: str, name: str) -> dict | None:
    pod = pod_json(cluster, ns, name)
    statuses = pod["status"].get("containerStatuses") or []
    return pod if statuses and all(s.get("ready") for s in statuses) else None


def web_server(image: str) -> dict:
    """A pod of the operator image serving its own folder with Python's http.server, locked
    down as the chart locks down its pods."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
            "containers": [{
                "name": "web", "image": image, "imagePullPolicy": "Never",
                "command": ["python", "-m", "http.server", "8000", "--directory", "/tmp"],
                "ports": [{"containerPort": 8000}],
                "securityContext": LOCKED_DOWN,
                "readinessProbe": {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def test_the_kubelet_registered_a_real_node(real_cluster):
    node = json.loads(real_cluster.kubectl("get", "node", NODE_NAME, "-o", "json"))
    info = node["status"]["nodeInfo"]
    # the kubelet built with the control plane, from the same pin
    assert info["kubeletVersion"] == binary_version().split("-")[0]
    assert info["containerRuntimeVersion"].startswith("containerd://")
    # The extended resource the node patch advertises: the scheduler counts it.
    assert node["status"]["capacity"]["nvidia.com/gpu"] == str(real_cluster.gpus)
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(real_cluster.gpus)


def test_everything_runs_inside_the_node_network_namespace(real_cluster):
    ours = os.stat(netns.path(os.environ.get(netns.ENV, netns.DEFAULT_NAME)))
    daemons = processes.from_pid_files(real_cluster.cp.state_dir) + processes.from_pid_files(
        real_cluster.node.state_dir)
    assert {p.name for p in daemons} >= {"etcd", "kube-apiserver", "kubelet", "kube-proxy", "containerd", "dns"}
    for proc in daemons:
        there = os.stat(f"/proc/{proc.pid}/ns/net")
        assert (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino), f"{proc.name} is not in the namespace"
    # The namespace has no way out: no default route, only the node's link and the pod bridge.
    routes = Path("/proc/net/route").read_text().splitlines()[1:]
    assert not [r for r in routes if r.split()[1] == "00000000"], routes


def test_a_pod_serves_on_its_pod_ip_and_through_its_service(real_cluster, ns):
    image = real_cluster.image("litgpt-operator")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8000}]}}
    apply(real_cluster, ns, web_server(image), service)
    pod = wait_for(lambda: running(real_cluster, ns, "web"), "the web pod to be ready", 120, 0.5)
    assert pod["spec"]["containers"][0]["image"] == image
    pod_ip = pod["status"]["podIP"]
    assert pod_ip.startswith(POD_CIDR.rsplit(".", 2)[0] + ".")

    # the pod's own address, then the Service's ClusterIP (kube-proxy's rules)
    with urllib.request.urlopen(f"http://{pod_ip}:8000/", timeout=10) as response:
        assert response.status == 200
    cluster_ip = json.loads(real_cluster.kubectl("get", "service", "web", "-n", ns, "-o", "json"))["spec"]["clusterIP"]

    def through_service():
        try:
            with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(through_service, f"the Service's ClusterIP {cluster_ip}", 30, 0.5)
    # kubectl logs through the kubelet: http.server logged both requests
    logs = real_cluster.kubectl("logs", "web", "-n", ns)
    assert logs.count('"GET / HTTP/1.1" 200') >= 2, logs

    # kubectl exec through the kubelet's streaming server: the user, the read-only root
    exec_ = lambda *argv: real_cluster.kubectl("exec", "web", "-n", ns, "--", *argv, check=False)  # noqa: E731
    assert exec_("id", "-u").strip() == "1000"
    probe = ("import os\n"
             "for path in ('/probe', '/opt/probe', '/home/probe', '/tmp/probe'):\n"
             "    try:\n"
             "        open(path, 'w').close(); print(path, 'written')\n"
             "    except OSError as error:\n"
             "        print(path, error.strerror)\n")
    report = exec_("python", "-c", probe)
    assert "/tmp/probe written" in report, report  # the volume is writable
    for path in ("/probe", "/opt/probe", "/home/probe"):
        assert f"{path} Read-only file system" in report or f"{path} Permission denied" in report, report
    assert "/probe Read-only file system" in report, report

    # the cluster DNS: the Service's name resolves to its ClusterIP inside the pod
    resolved = exec_("python", "-c", f"import socket; print(socket.gethostbyname('web.{ns}.svc.cluster.local'))")
    assert resolved.strip() == cluster_ip


def test_the_scheduler_counts_the_advertised_gpus(real_cluster, ns):
    image = real_cluster.image("pause")

    def asking(name: str, gpus: int) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                                         "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}

    apply(real_cluster, ns, asking("fits", 1), asking("too-many", real_cluster.gpus + 1))
    wait_for(lambda: pod_json(real_cluster, ns, "fits")["spec"].get("nodeName") == NODE_NAME,
             "the pod asking for one GPU to be scheduled", 60, 0.5)

    def unschedulable():
        conditions = pod_json(real_cluster, ns, "too-many")["status"].get("conditions") or []
        return next((c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), None)

    condition = wait_for(unschedulable, "the pod asking for too many GPUs to be refused", 60, 0.5)
    assert "Insufficient nvidia.com/gpu" in condition["message"], condition
