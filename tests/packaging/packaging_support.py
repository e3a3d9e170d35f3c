"""Paths and a subprocess helper shared by the packaging tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from litgpt_devcluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "litgpt-operator"


def run(*argv: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=timeout)


def crd_names(folder: Path) -> list[str]:
    import yaml

    return [doc["metadata"]["name"] for path in sorted(folder.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def install_chart_crds(kube) -> list[str]:
    """The chart's CRDs (ours + kopf's peering) applied and Established; their names."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    names = crd_names(CHART / "crds")
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    # Established is not yet servable: for a moment lists answer 429 "storage is (re)initializing".
    # An operator started then retries its first list, and kopf does not abort a list in flight
    # when peering pauses it, so a standby could still handle what that late list returns.
    for name in names:
        wait_for(lambda: _lists(kube, name), f"the API server to serve {name}", timeout_s=60)
    return names


def _lists(kube, crd_name: str) -> bool:
    try:
        kube.kubectl("get", crd_name, "--all-namespaces", "-o", "name")
        return True
    except subprocess.CalledProcessError:
        return False
