"""The controllers and the scheduler are real: a Deployment becomes a ReplicaSet and Pods that
are scheduled onto the simulated nodes and reported Running by the node agent."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from litgpt_devcluster.waiting import wait_for

pytestmark = pytest.mark.cluster


def _deployment(name: str, replicas: int, resources: dict | None = None) -> dict:
    container = {"name": "app", "image": "example.invalid/app:1", "command": ["sleep", "infinity"]}
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        },
    }


def test_server_reports_pinned_version(kube):
    version = json.loads(kube.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == "v1.36.3"
    assert version["clientVersion"]["gitVersion"] == "v1.36.3"


def test_simulated_nodes_are_ready_with_gpu_capacity(kube):
    core = client.CoreV1Api(kube.api_client())
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert set(nodes) == set(kube.node_names)
    for node in nodes.values():
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True"
    assert nodes["sim-gpu-0"].status.allocatable["nvidia.com/gpu"] == "4"
    assert "nvidia.com/gpu" not in nodes["sim-cpu-0"].status.allocatable


def test_deployment_pods_are_scheduled_and_running(kube, namespace):
    apps = client.AppsV1Api(kube.api_client())
    core = client.CoreV1Api(kube.api_client())
    apps.create_namespaced_deployment(namespace, _deployment("web", 2))

    def ready_replicas():
        return (apps.read_namespaced_deployment("web", namespace).status.ready_replicas or 0) == 2

    wait_for(ready_replicas, "2 ready replicas of deployment web")
    replica_sets = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(replica_sets) == 1
    assert replica_sets[0].metadata.owner_references[0].kind == "Deployment"
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.metadata.owner_references[0].name == replica_sets[0].metadata.name
        assert pod.spec.node_name in kube.node_names
        assert pod.status.phase == "Running"
        assert pod.status.container_statuses[0].state.running is not None
        assert pod.status.pod_ip.startswith("10.244.")


def _pod(name: str, gpus: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "main", "image": "example.invalid/trainer:1", "command": ["train"],
            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
        }]},
    }


def test_gpu_request_lands_on_gpu_node_and_excess_stays_pending(kube, namespace):
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_pod(namespace, _pod("fits", 1))
    core.create_namespaced_pod(namespace, _pod("too-big", 5))  # more than any node has

    def running_fit():
        pod = core.read_namespaced_pod("fits", namespace)
        return pod if pod.status.phase == "Running" else None

    assert wait_for(running_fit, "pod fits Running").spec.node_name == "sim-gpu-0"

    def unschedulable():
        pod = core.read_namespaced_pod("too-big", namespace)
        scheduled = [c for c in pod.status.conditions or [] if c.type == "PodScheduled"]
        return scheduled[0] if scheduled and scheduled[0].reason == "Unschedulable" else None

    condition = wait_for(unschedulable, "pod too-big Unschedulable")
    assert "nvidia.com/gpu" in condition.message
    assert core.read_namespaced_pod("too-big", namespace).spec.node_name is None
