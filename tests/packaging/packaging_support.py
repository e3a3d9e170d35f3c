"""Paths and a subprocess helper shared by the packaging tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
    return names
