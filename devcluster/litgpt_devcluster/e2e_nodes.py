"""Where the end-to-end flow's pods run: what differs between the two kinds of node.

`ExecNode`: the node agent's exec node `exec-0` (pods are local processes of this virtualenv,
no images; the fast path, and the fallback where the real node cannot run).
`RealNode`: the real node of `litgpt_devcluster.realnode` (kubelet, containerd, runc, CNI,
kube-proxy): pods run the project's images, reached at their pod IPs and Service ClusterIPs
inside the node's network namespace (where the flow itself then runs too).

Each says where pods go (placement), how the chart is configured, where the Hub listens, how
to read pod logs, where a Service is reached and what would count as left behind.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ExecNode:
    description = "the node agent's exec node exec-0 (pods are local processes, no images)"
    node_name = "exec-0"
    hub_host = "127.0.0.1"
    # Runtime pods must land on the exec node (the only one that really runs commands).
    placement: dict = {
        "nodeSelector": {"node.litgpt.dev/mode": "exec"},
        "tolerations": [{"key": "node.litgpt.dev/exec", "operator": "Exists", "effect": "NoSchedule"}],
    }
    master_addr_note = "MASTER_ADDR is 127.0.0.1 on the exec node"

    def __init__(self, cp: Any):
        self.cp = cp

    @property
    def agent_dir(self) -> Path:
        return self.cp.state_dir / "node-agent"

    def chart_values(self) -> dict:
        return {
            # The exec node has no image: the pod runs this virtualenv's operator.
            "command": [sys.executable, "-m", "litgpt_operator"],
            # Every exec pod shares this host's network: give the operator's ports free numbers.
            "health": {"port": free_port()},
            "metrics": {"port": free_port()},
            "runtime": {"image": "litgpt-runtime:local"},
        }

    def logs(self, namespaces: tuple[str, ...], lines: int = 30) -> str:
        out = []
        for ns in namespaces:
            for log in sorted((self.agent_dir / "pods").glob(f"{ns}_*/logs/*.log")):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.parent.parent.name}/{log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def full_log(self, namespace: str) -> str:
        logs = sorted((self.agent_dir / "pods").glob(f"{namespace}_*/logs/*.log"))
        return "\n".join(p.read_text(errors="replace") for p in logs)

    def service_url(self, service: dict, endpoint_port: int) -> str:
        """The exec node runs pods on the host network: the Service's target port on an
        endpoint is a port on 127.0.0.1."""
        return f"http://127.0.0.1:{endpoint_port}"

    def show_pods(self, names: Any, server: str) -> list[str]:
        return []  # local processes: nothing more to show than the flow prints

    def leftovers(self, namespace: str) -> dict[str, list[str]]:
        left: dict[str, list[str]] = {}
        claim_folders = self.agent_dir / "pvc" / namespace  # the provisioner's; removed with their volumes
        if claim_folders.is_dir() and any(claim_folders.iterdir()):
            left["claim folders"] = [p.name for p in claim_folders.iterdir()]
        processes = pod_processes(self.agent_dir, namespace)
        if processes:
            left["processes"] = processes
        return left


def pod_processes(agent_dir: Path, namespace: str) -> list[str]:
    """Local processes whose command line names one of the namespace's pod or claim folders."""
    marks = (f"{agent_dir}/pods/{namespace}_", f"{agent_dir}/pvc/{namespace}/")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in argv for mark in marks):
            found.append(f"{proc.name}: {argv[:160]}")
    return found


class RealNode:
    description = "the real node realnode-0 (kubelet, containerd, runc: the project's images)"
    master_addr_note = "MASTER_ADDR resolves through the cluster DNS to rank 0's pod IP"
    placement: dict = {}  # the only node: the scheduler places everything there

    def __init__(self, cluster: Any):
        from litgpt_devcluster.realnode.config import NODE_IP, NODE_NAME

        self.cluster = cluster
        self.cp = cluster.cp
        self.hub_host = NODE_IP  # pods reach the Hub at the node's address
        self.node_name = NODE_NAME

    def chart_values(self) -> dict:
        operator = self.cluster.image("litgpt-operator")
        repository, tag = operator.rsplit(":", 1)
        return {
            # Imported into containerd by the node, never pulled.
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "runtime": {"image": self.cluster.image("litgpt-runtime"), "imagePullPolicy": "Never"},
        }

    def _pods(self, namespace: str) -> list[dict]:
        out = self.cp.kubectl("get", "pods", "-n", namespace, "-o", "json", check=False)
        return json.loads(out)["items"] if out.strip() else []

    def logs(self, namespaces: tuple[str, ...], lines: int = 30) -> str:
        out = []
        for ns in namespaces:
            for pod in self._pods(ns):
                name = pod["metadata"]["name"]
                text = self.cp.kubectl("logs", name, "-n", ns, "--all-containers", f"--tail={lines}", check=False)
                out.append(f"--- {ns}/{name}\n{text.rstrip()}")
        return "\n".join(out)

    def full_log(self, namespace: str) -> str:
        return "\n".join(self.cp.kubectl("logs", p["metadata"]["name"], "-n", namespace, "--all-containers",
                                         check=False) for p in self._pods(namespace))

    def service_url(self, service: dict, endpoint_port: int) -> str:
        """Through the Service's ClusterIP: kube-proxy's rules in the node's namespace."""
        port = service["spec"]["ports"][0]["port"]
        return f"http://{service['spec']['clusterIP']}:{port}"

    def show_pods(self, names: Any, server: str) -> list[str]:
        """`kubectl get pods -o wide` (pod IPs, the node), the image of each pod (-o wide leaves
        it out for pods) and `kubectl exec` into the server: what proves the pods are real."""
        lines = ["$ kubectl get pods -A -o wide"]
        lines += self.cp.kubectl("get", "pods", "-A", "-o", "wide").rstrip().splitlines()
        columns = "NAMESPACE:.metadata.namespace,NAME:.metadata.name,IP:.status.podIP,IMAGE:.spec.containers[0].image"
        lines += ["$ kubectl get pods -A -o custom-columns=NAMESPACE,NAME,IP,IMAGE"]
        lines += self.cp.kubectl("get", "pods", "-A", "-o", f"custom-columns={columns}").rstrip().splitlines()
        pods = [p for p in self._pods(names.namespace)
                if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") == server
                and p["status"].get("phase") == "Running"]
        if pods:
            pod = pods[0]["metadata"]["name"]
            lines += [f"$ kubectl exec {pod} -- id",
                      self.cp.kubectl("exec", pod, "-n", names.namespace, "--", "id", check=False).strip()]
        return lines

    def leftovers(self, namespace: str) -> dict[str, list[str]]:
        left: dict[str, list[str]] = {}
        claim_folders = self.cluster.node.layout.volumes / "pvc" / namespace
        if claim_folders.is_dir() and any(claim_folders.iterdir()):
            left["claim folders"] = [p.name for p in claim_folders.iterdir()]
        running = running_containers(self.cluster.node.layout.containerd_socket, namespace)
        if running:
            left["containers"] = running
        return left


def running_containers(socket_path: Path, namespace: str) -> list[str]:
    """Containers of pods in `namespace` that containerd still runs."""
    def ctr(*args: str) -> str:
        return subprocess.run(["ctr", "--address", str(socket_path), "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, timeout=30).stdout

    running = {line.split()[0] for line in ctr("tasks", "list").splitlines()[1:] if "RUNNING" in line}
    ours = set(ctr("containers", "list", "--quiet", f'labels."io.kubernetes.pod.namespace"=={namespace}').split())
    return sorted(running & ours)
