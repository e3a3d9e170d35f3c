"""Lineage of a finetune: `final/lineage.json` and the termination log say what the checkpoint
was made from (base, data, method, options) with digests a reader can check; a finetune of a
finetune keeps the Hub origin; `litgpt verify` checks weights against a digest (exit 6 if not)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_tiny import make_checkpoint, write_records
from litgpt_runtime import lineage
from litgpt_runtime.checkpoint import WEIGHTS_FILE, checkpoint_digest, digest_of, sha256_file
from litgpt_runtime.termination import TERMINATION_LOG_ENV
from litgpt_runtime.train.args import EvalArgs, TrainArgs
from litgpt_runtime.train.data import JSON

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("base") / "tiny-llama")


def finetune(method: str, base: Path, data_file: Path, out_dir: Path) -> Path:
    from importlib import import_module

    extra = {"adapter_start_layer": 0} if method.startswith("adapter") else {}
    import_module(f"litgpt_runtime.finetune.{method}").setup(
        str(base), data=JSON(json_path=data_file, val_split_fraction=0.0), out_dir=out_dir,
        train=TrainArgs(global_batch_size=2, micro_batch_size=1, max_steps=2, learning_rate=1e-3),
        eval=EvalArgs(final_validation=False), precision="32-true", **extra)
    return out_dir / "final"


def test_a_finetune_records_its_lineage_and_a_refinetune_keeps_the_origin(base_dir, tmp_path, monkeypatch):
    data_file = write_records(tmp_path / "train.json")
    log = tmp_path / "termination-log"
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(log))
    final = finetune("lora", base_dir, data_file, tmp_path / "first")

    record = lineage.read_lineage(final)
    assert record["version"] == 1 and record["method"] == "lora" and record["path"] == str(final)
    assert record["baseRepoId"] == "tiny/llama"  # the base's completeness marker
    assert record["baseDigest"] == checkpoint_digest(base_dir)
    assert record["weightsDigest"] == checkpoint_digest(final)
    # the digest of the data: the one definition (sha256 over sorted name:sha256 lines)
    assert record["datasetDigest"] == digest_of({"train.json": sha256_file(data_file)})
    assert record["hyperparameters"]["train"]["max_steps"] == 2 and record["hyperparameters"]["method"] == "lora"
    # the operator's reader finds the same record in the termination log (it fits: 4096 bytes)
    message = log.read_text()
    assert len(message.encode()) <= lineage.TERMINATION_LIMIT
    assert lineage.parse_termination("some output\n" + message) == record

    # A finetune of the finetune: its base is the first output; the Hub origin carries over.
    other_data = write_records(tmp_path / "more" / "train.json", [{"instruction": "Say yes.", "output": "yes"}] * 4)
    second = finetune("full", final, other_data, tmp_path / "second")
    again = lineage.read_lineage(second)
    assert again["baseRepoId"] == "tiny/llama" and again["method"] == "full"
    assert again["baseDigest"] == record["weightsDigest"] and again["datasetDigest"] != record["datasetDigest"]


def test_termination_record_drops_hyperparameters_rather_than_overflow():
    record = {"version": 1, "path": "/o/final", "method": "lora", "weightsDigest": "sha256:" + "0" * 64,
              "hyperparameters": {"notes": "x" * 5000}}
    line = lineage.termination_line(record)
    assert len(line.encode()) <= lineage.TERMINATION_LIMIT
    parsed = lineage.parse_termination(line)
    assert "hyperparameters" not in parsed and parsed["weightsDigest"] == record["weightsDigest"]
    assert lineage.parse_termination("weights digest: sha256:00") is None
    assert lineage.parse_termination(lineage.TERMINATION_PREFIX + '{"version": 99}') is None


def _litgpt(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "litgpt_runtime", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_verify_checks_weights_against_a_digest(base_dir, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(base_dir, folder)
    digest = checkpoint_digest(folder)
    log = tmp_path / "log"
    ok = _litgpt("verify", str(folder), "--digest", digest, env={TERMINATION_LOG_ENV: str(log)})
    assert ok.returncode == 0, ok.stderr
    assert f"weights digest: {digest}" in ok.stdout and log.read_text().strip() == f"weights digest: {digest}"

    other = _litgpt("verify", str(folder), "--digest", "sha256:" + "0" * 64, env={TERMINATION_LOG_ENV: str(log)})
    assert other.returncode == 6 and "Traceback" not in other.stderr
    assert "not the expected" in other.stderr and log.read_text().startswith("ChecksumMismatch:")

    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    flipped = _litgpt("verify", str(folder), "--digest", digest, env={TERMINATION_LOG_ENV: str(log)})
    assert flipped.returncode == 6 and "model.safetensors" in flipped.stderr and "corrupted" in flipped.stderr
