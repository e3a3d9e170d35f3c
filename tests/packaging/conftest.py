"""Fixtures for the packaging tests: the chart's CRDs in the test API server, the helm binary."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from packaging_support import CHART


def crd_names(folder: Path) -> list[str]:
    return [doc["metadata"]["name"] for path in sorted(folder.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="session")
def chart_crds(kube) -> list[str]:
    """The chart's CRDs (ours + kopf's peering) installed and Established."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    names = crd_names(CHART / "crds")
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    return names


@pytest.fixture(scope="session")
def helm_bin() -> str:
    """helm from the control plane's bin folder (built by hack/control-plane.sh install)."""
    import os

    from tests.support import controlplane

    try:
        path = controlplane.binary("helm")
    except controlplane.ControlPlaneError as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{error} (CI builds helm with the control plane)", pytrace=False)
        pytest.skip(f"no helm binary: {controlplane.INSTALL_HINT}")
    return str(path)

