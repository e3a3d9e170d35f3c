"""The dev cluster's pinned Kubernetes version and its simulated nodes (Ready, the GPU node with
its `nvidia.com/gpu` capacity), as the operator tests expect them."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

pytestmark = pytest.mark.cluster


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
