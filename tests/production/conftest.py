"""Fixtures for the production-feature tests (helpers shared with tests/packaging)."""

from __future__ import annotations

import pytest

from tests.packaging.packaging_support import install_chart_crds


@pytest.fixture(scope="session")
def chart_crds(kube) -> list[str]:
    return install_chart_crds(kube)
