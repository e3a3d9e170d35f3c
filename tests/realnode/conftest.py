"""`real_cluster` (session): the control plane plus the real node (kubelet, containerd, runc,
CNI, kube-proxy) in the node's network namespace, with the project's images imported.

These tests run only inside that namespace: `make test-real-node` (or
`python -m litgpt_devcluster.realnode run -- python -m pytest tests/realnode`) puts them there.
Anywhere else they are skipped, saying so.
"""

from __future__ import annotations

import os

import pytest

from litgpt_devcluster.realnode import netns
from litgpt_devcluster.realnode.__main__ import default_state_dir
from litgpt_devcluster.realnode.node import RealCluster

HOW = "run them with `make test-real-node` (root; the real node lives in its own network namespace)"


def pytest_collection_modifyitems(items):
    for item in items:
        if "real_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realnode)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def real_cluster() -> RealCluster:
    name = os.environ.get(netns.ENV, netns.DEFAULT_NAME)
    if not netns.inside(name):
        pytest.skip(f"not inside the real node's network namespace {name}: {HOW}")
    cluster = RealCluster(default_state_dir(), tie_to_parent=True)
    previous = os.environ.get("KUBECONFIG")
    try:
        cluster.start()
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
