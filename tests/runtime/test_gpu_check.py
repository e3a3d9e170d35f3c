"""benchmarks/gpu_check.py (`make gpu-check`): on a machine without a GPU every check is skipped
with its reason and the exit status is 0; a check that fails makes it 1; the finetune command the
GPU checks run trains for real (here on the CPU)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_every_check_is_skipped_with_its_reason(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", str(tmp_path / "r.json")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name in ("parity", "lora", "qlora", "bf16-generate", "ddp"):
        line = next(line for line in lines if line.split(":")[0] == f"SKIP {name}")
        assert "no CUDA GPU" in line, line
    assert lines[-1] == "gpu-check: 0 passed, 5 skipped, 0 failed"
    import json

    assert [r["status"] for r in json.loads((tmp_path / "r.json").read_text())] == ["SKIP"] * 5


def test_a_failing_check_fails_the_run(monkeypatch, tmp_path, capsys):
    gpu_check = load_gpu_check()

    def broken(_ws):
        raise AssertionError("logits differ")

    monkeypatch.setitem(gpu_check.CHECKS, "parity", broken)
    assert gpu_check.main(["--only", "parity"]) == 1
    assert "FAIL parity: AssertionError: logits differ" in capsys.readouterr().out


@pytest.mark.slow
def test_the_checks_finetune_command_trains(tmp_path):
    """The one-step finetune the lora/qlora/ddp checks run, here in float32 on the CPU."""
    gpu_check = load_gpu_check()
    figures = gpu_check.Workspace(tmp_path).make().finetune("cpu", "--precision", "32-true", "--devices", "1")
    assert figures["step_line"].startswith("step 1/1 | loss ")
