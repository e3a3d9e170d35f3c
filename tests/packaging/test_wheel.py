"""The wheel installs our three import packages and nothing else: no `litgpt` (Lightning AI's
package has that name, and installing ours next to it must not replace it) and no stray folder
such as operator/rbac/ picked up as a top-level package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = {"litgpt_runtime", "litgpt_operator", "litgpt_devcluster"}


@pytest.mark.slow
def test_wheel_holds_exactly_our_top_level_packages(tmp_path):
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("runtime", "operator", "devcluster"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # No build isolation: the virtualenv's setuptools builds it, without going to the package index.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "dist").glob("litgpt_operator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == OURS
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "litgpt = litgpt_runtime.__main__:main" in scripts


def test_python_dash_m_runs_our_litgpt_whichever_litgpt_command_is_on_path():
    """README "Next to Lightning AI's litgpt": `python -m litgpt_runtime` is ours, explicitly."""
    result = subprocess.run([sys.executable, "-m", "litgpt_runtime", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: litgpt <action>") and "finetune_lora" in result.stdout
