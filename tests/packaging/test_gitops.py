"""Specs are safe to keep in Git: applying the same manifest again changes nothing, and what the
API server stores (defaults filled in) does not show as drift to `kubectl diff` (what Argo CD
and Flux compare)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from packaging_support import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_reapplying_an_example_is_a_no_op(kube, namespace, chart_crds, example):
    first = kube.kubectl("apply", "-n", namespace, "-f", str(example))
    assert "created" in first
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    before = {d["metadata"]["name"]: json.loads(kube.kubectl("get", f"{d['kind'].lower()}s.litgpt.dev",
                                                             d["metadata"]["name"], "-n", namespace, "-o", "json"))
              for d in docs}
    again = kube.kubectl("apply", "-n", namespace, "-f", str(example))
    assert again.strip().splitlines() and all(line.endswith(" unchanged") for line in again.strip().splitlines()), again
    for d in docs:
        after = json.loads(kube.kubectl("get", f"{d['kind'].lower()}s.litgpt.dev", d["metadata"]["name"],
                                        "-n", namespace, "-o", "json"))
        old = before[d["metadata"]["name"]]
        assert after["metadata"]["generation"] == old["metadata"]["generation"] == 1
        assert after["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"]
    # `kubectl diff` (a server-side dry run merged with the live object): nothing to report (exit 0)
    diff = subprocess.run([str(kube.control_plane.bin_dir / "kubectl"), f"--kubeconfig={kube.kubeconfig}", "diff",
                           "-n", namespace, "-f", str(example)], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout + diff.stderr
