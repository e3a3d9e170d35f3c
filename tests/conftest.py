"""Fixtures shared by every test folder: the local Kubernetes control plane.

`kube` (session): a real etcd + kube-apiserver + controller-manager + scheduler with two
simulated nodes (`sim-cpu-0`, `sim-gpu-0` with 4 `nvidia.com/gpu`), started once per session.
`namespace` (function): a fresh namespace, ready for pods, deleted afterwards.
Tests using either get the `cluster` marker automatically. See docs/CONTRACTS.md.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from litgpt_devcluster import controlplane
from litgpt_devcluster.controlplane import BinariesMissing, ControlPlane


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "kube" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@dataclass
class Kube:
    """What a test gets from the `kube` fixture."""

    control_plane: ControlPlane

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def server(self) -> str:
        return self.control_plane.server

    @property
    def logs_dir(self) -> Path:
        """Each component's log (`kube-apiserver.log`, `node-agent.log`, ...)."""
        return self.control_plane.state_dir / "logs"

    @property
    def node_names(self) -> list[str]:
        return [spec.split(":", 1)[0] for spec in self.control_plane.nodes]

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
        """`kubectl <args>` against this cluster; returns stdout, raises CalledProcessError."""
        return self.control_plane.kubectl(*args, input=input, check=check, timeout=timeout)

    def api_client(self):
        """A new `kubernetes.client.ApiClient` (admin) — wrap it in `client.CoreV1Api(...)` etc."""
        return self.control_plane.api_client()

    def create_namespace(self, prefix: str = "test", timeout_s: float = 30) -> str:
        """Create `<prefix>-<random>` and wait for its `default` ServiceAccount (pods are refused
        until the controller-manager has made it)."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        deadline = time.monotonic() + timeout_s
        while self.kubectl("get", "serviceaccount", "default", "-n", name, "--ignore-not-found", "-o", "name").strip() == "":
            if time.monotonic() > deadline:
                raise TimeoutError(f"namespace {name}: no default ServiceAccount after {timeout_s}s")
            time.sleep(0.2)
        return name


def require_control_plane() -> None:
    """Skip without the locally built binaries; in CI (CI=true) their absence is a failure."""
    try:
        controlplane.installed_bin_dir()
    except BinariesMissing as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{error} (CI must build the control plane before the tests)", pytrace=False)
        pytest.skip(f"no local control plane: {controlplane.INSTALL_HINT}")


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> Kube:
    require_control_plane()
    cp = ControlPlane(state_dir=tmp_path_factory.mktemp("control-plane"), tie_to_parent=True)
    previous = os.environ.get("KUBECONFIG")
    try:
        cp.start()
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        yield Kube(cp)
    finally:
        cp.stop()
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous


@pytest.fixture
def namespace(kube: Kube) -> str:
    """A fresh namespace for one test; deleted (without waiting) afterwards."""
    name = kube.create_namespace()
    yield name
    try:
        kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
    except subprocess.CalledProcessError:
        pass
