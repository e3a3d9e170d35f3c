"""Node objects: parse `name:resource=qty,...`, register them, keep them alive with leases."""

from __future__ import annotations

from dataclasses import dataclass, field

from litgpt_devcluster.node_agent.clock import now_micro, now_rfc3339

KUBELET_VERSION = "v1.36.3"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40


# Exec nodes really run pod commands, so only pods that ask for it (by tolerating this taint)
# land there; the rest of the suite's pods stay on the simulated nodes.
EXEC_TAINT = {"key": "node.litgpt.dev/exec", "value": "true", "effect": "NoSchedule"}
MODES = ("simulate", "exec")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    capacity: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    mode: str = "simulate"

    @property
    def taints(self) -> list[dict]:
        return [EXEC_TAINT] if self.mode == "exec" else []

    @classmethod
    def parse(cls, spec: str, default_mode: str = "simulate") -> "NodeSpec":
        """`sim-gpu-0:cpu=16,memory=64Gi,nvidia.com/gpu=4` (a resource missing gets a default);
        `mode=exec` among them makes an exec node."""
        name, _, resources = spec.partition(":")
        if not name:
            raise ValueError(f"node spec {spec!r} has no name (expected name:resource=qty,...)")
        capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        mode = default_mode
        for item in filter(None, resources.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"node spec {spec!r}: {item!r} is not resource=quantity")
            if key.strip() == "mode":
                mode = value.strip()
            else:
                capacity[key.strip()] = value.strip()
        if mode not in MODES:
            raise ValueError(f"node spec {spec!r}: mode must be one of {', '.join(MODES)}")
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.litgpt.dev/simulated": "true",
        }
        if "nvidia.com/gpu" in capacity:
            labels["nvidia.com/gpu.present"] = "true"
        labels["node.litgpt.dev/mode"] = mode
        return cls(name, capacity, labels, mode)


def node_object(spec: NodeSpec) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": spec.name, "labels": spec.labels},
            "spec": {"taints": spec.taints}}


def node_status(spec: NodeSpec, port: int) -> dict:
    now = now_rfc3339()

    def condition(type_: str, status: str, reason: str, message: str) -> dict:
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": now}

    return {
        "capacity": spec.capacity,
        "allocatable": spec.capacity,
        "conditions": [
            condition("Ready", "True", "KubeletReady", "node agent is posting ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "simulated"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "simulated"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "simulated"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": spec.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": "amd64", "containerRuntimeVersion": "litgpt-node-agent://0.1",
            "osImage": "litgpt node agent", "kernelVersion": "", "machineID": spec.name,
            "systemUUID": spec.name, "bootID": spec.name,
        },
    }


def lease_object(name: str) -> dict:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_S, "renewTime": now_micro()},
    }
