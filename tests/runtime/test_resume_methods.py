"""Auto-resume for every finetuning method: a run interrupted after a checkpoint and continued
with `--resume auto` ends with the weights of the uninterrupted run, having trained only the
steps that were left, at the data position it stopped at. (Pretraining: test_pretrain.py.)

The interrupted run is the uninterrupted one's own step-3 checkpoint in a fresh output folder:
what a pod stopped after that save leaves behind. float64 (64-true) is pinned, so the comparison
does not depend on the CPU's summation order."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from finetune_tiny import make_checkpoint, write_records
from litgpt_runtime.progress_record import PROGRESS_FILE_ENV, read_file
from litgpt_runtime.train.args import EvalArgs, TrainArgs
from litgpt_runtime.train.data import JSON
from litgpt_runtime.train.loop import STATE_FILE

pytestmark = pytest.mark.slow

METHODS = ("lora", "full", "adapter", "adapter_v2")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("base") / "tiny-llama")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return write_records(tmp_path_factory.mktemp("data") / "train.json")


def finetune(method: str, base_dir: Path, data_file: Path, out_dir: Path) -> None:
    from importlib import import_module

    extra = {"adapter_start_layer": 0} if method.startswith("adapter") else {}  # the tiny model has 2 layers

    setup = import_module(f"litgpt_runtime.finetune.{method}").setup
    # 8 records, 2 per step: 6 steps cross an epoch boundary, so the data position matters.
    train = TrainArgs(global_batch_size=2, micro_batch_size=1, max_steps=6, lr_warmup_steps=2, learning_rate=5e-3,
                      save_interval=3, log_interval=1)
    setup(str(base_dir), data=JSON(json_path=data_file, val_split_fraction=0.0), out_dir=out_dir, train=train,
          eval=EvalArgs(final_validation=False), precision="64-true", resume="auto", **extra)


def logged_steps(out_dir: Path) -> list[int]:
    with open(out_dir / "logs" / "metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("loss")]


def trained_weights(step_folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(step_folder / STATE_FILE, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("method", METHODS)
def test_resume_auto_reproduces_the_uninterrupted_run(method, base_dir, data_file, tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    finetune(method, base_dir, data_file, straight)

    shutil.copytree(straight / "step-000003", resumed / "step-000003")  # the interrupted run's output
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(tmp_path / "progress.json"))
    finetune(method, base_dir, data_file, resumed)

    assert logged_steps(resumed) == [4, 5, 6]  # only the steps that were left
    record = read_file(tmp_path / "progress.json")
    assert record.event == "finished" and record.resumed_from_step == 3
    assert record.last_checkpoint.step == 6 and Path(record.last_checkpoint.path) == resumed / "step-000006"

    expected, got = trained_weights(straight / "step-000006"), trained_weights(resumed / "step-000006")
    assert expected.keys() == got.keys() and expected
    assert all(v.dtype == torch.float64 for v in got.values() if v.is_floating_point())
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-9, atol=1e-12, msg=key)
    # ... and the weights differ from those at the checkpoint it resumed from: it did train.
    halfway = trained_weights(straight / "step-000003")
    assert any(not torch.equal(halfway[k], got[k]) for k in got if got[k].is_floating_point())
    # The output the method writes from them is the same checkpoint.
    from litgpt_runtime.checkpoint import load_state_dict

    a, b = load_state_dict(straight / "final" / "model.safetensors"), load_state_dict(resumed / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], msg=key)
    assert json.loads((resumed / "final" / ".litgpt_complete.json").read_text())["method"] == method
