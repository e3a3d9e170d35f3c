"""benchmarks/bench_operator.py runs end to end at a tiny N and prints its table (the figures
themselves are measured by hand: benchmarks/README.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import require_control_plane
from tests.operator.helpers import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_the_benchmark_runs_at_n_6_and_prints_the_table(tmp_path):
    require_control_plane()
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_operator.py"), "--sizes", "6", "--modes", "burst",
         "--timeout", "240", "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=540,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO_ROOT / f) for f in ("runtime", "operator", "devcluster"))},
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| N | mode | child p50 | child p99 | floor p50 |"), result.stdout
    row = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert row[:2] == ["6", "burst"], lines[2]
    number = re.compile(r"^\d+(\.\d+)? ?(ms|s|MiB|x)$")
    for cell in row[2:10]:  # latencies, floor, ratio, settle time, RSS, CPU: all measured
        assert number.match(cell), (cell, lines[2])
    requests_per_object, writes_per_transition, progress_writes = float(row[10]), float(row[11]), int(row[12])
    assert requests_per_object > 1 and 0 < writes_per_transition < 10 and progress_writes >= 0, lines[2]
    # The audit log counted the operator's own client by its user agent, and kopf's.
    assert "agent:litgpt-operator" in result.stdout and "agent:kopf" in result.stdout, result.stdout
    assert "LitGPTModel p50" in result.stdout and "ModelServer p50" in result.stdout, result.stdout
