"""The generated files (CRDs, docs/api.md, the RBAC role) match the pydantic models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from litgpt_operator.api import KINDS
from litgpt_operator.generate import REPO_ROOT, main, rendered

FILES = rendered()


@pytest.mark.parametrize("relative", sorted(FILES))
def test_generated_file_is_current(relative):
    path = REPO_ROOT / relative
    assert path.exists(), f"{relative} missing: run python -m litgpt_operator.generate"
    assert path.read_text() == FILES[relative], f"{relative} is stale: run python -m litgpt_operator.generate"


def test_one_crd_file_per_kind():
    crds = sorted((REPO_ROOT / "crds").glob("*.yaml"))
    assert [yaml.safe_load(p.read_text())["spec"]["names"]["kind"] for p in crds] == sorted(k.kind for k in KINDS)


def test_check_mode_reports_drift(tmp_path: Path, capsys):
    assert main(["--root", str(tmp_path)]) == 0  # writes everything
    assert main(["--root", str(tmp_path), "--check"]) == 0
    (tmp_path / "docs" / "api.md").write_text("edited by hand\n")
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert "docs/api.md" in capsys.readouterr().err
