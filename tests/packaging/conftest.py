"""Fixtures for the packaging tests: the chart's CRDs in the test API server, the helm binary."""

from __future__ import annotations

import pytest
from packaging_support import install_chart_crds


@pytest.fixture(scope="session")
def chart_crds(kube) -> list[str]:
    return install_chart_crds(kube)


@pytest.fixture(scope="session")
def helm_bin() -> str:
    """helm from the control plane's bin folder (built by hack/control-plane.sh install)."""
    import os

    from litgpt_devcluster import controlplane

    try:
        path = controlplane.binary("helm")
    except controlplane.ControlPlaneError as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{error} (CI builds helm with the control plane)", pytrace=False)
        pytest.skip(f"no helm binary: {controlplane.INSTALL_HINT}")
    return str(path)

