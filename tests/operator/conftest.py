"""Fixtures for operator tests against the real API server (`kube`, `namespace`: tests/conftest.py).

`crds` installs the generated CRDs once per session; `k8s` is a small client bound to the test's
namespace; `operator` runs the kopf handlers in-process (kopf.testing.KopfRunner) watching only
that namespace, with short retry delays and watch timeouts. Helpers live in `helpers.py`.
"""

from __future__ import annotations

import pytest

from litgpt_operator import kube as operator_kube
from litgpt_operator.api import KINDS
from litgpt_devcluster.hf_tiny import make_hf_model_dir
from litgpt_devcluster.hub_server import HubServer, make_repo
from tests.operator.helpers import OPERATOR_ENV, REPO_ROOT, TINY_REPO_ID, K8s, OperatorRunner
from tests.packaging.packaging_support import install_chart_crds


@pytest.fixture(scope="session")
def crds(kube):
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{k.crd_name}" for k in KINDS])
    return [k.crd_name for k in KINDS]


@pytest.fixture(scope="session")
def chart_crds(kube) -> list[str]:
    """The chart's CRDs (ours + kopf's peering), for the operator run as its console script."""
    return install_chart_crds(kube)


@pytest.fixture
def k8s(kube, namespace, crds) -> K8s:
    operator_kube.configure(kube.api_client())
    return K8s(kube, namespace)


@pytest.fixture
def operator(k8s, monkeypatch):
    for key, value in OPERATOR_ENV.items():
        monkeypatch.setenv(key, value)
    runner = OperatorRunner(k8s.namespace).start()
    try:
        yield runner
    finally:
        runner.stop()
    # A handler that crashed (rather than reporting a condition) is a bug even if the test's
    # assertions passed: kopf would only have retried it later.
    assert not runner.crashes(), "\n".join(runner.crashes())


@pytest.fixture
def hub(tmp_path):
    """The local Hub file server holding TINY_REPO_ID (a tiny random Llama), for the tests whose
    pods download for real (exec node)."""
    root = tmp_path / "hub"
    make_repo(root, TINY_REPO_ID, make_hf_model_dir("llama", tmp_path / "hf-model"))
    with HubServer(root) as server:
        yield server
