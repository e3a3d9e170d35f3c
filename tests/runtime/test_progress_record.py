"""The progress record: the declared format the training loop emits and the operator reads
(`litgpt_runtime.progress_record`). Contract: what the real loop writes parses back with the
reader the operator imports, torch-free."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from litgpt_runtime.progress_record import (
    LINE_PREFIX,
    PROGRESS_FILE_ENV,
    RECORD_VERSION,
    Checkpoint,
    ProgressRecord,
    latest,
    parse_line,
    read_file,
)


def test_round_trip_and_wire_keys():
    record = ProgressRecord(step=12, total_steps=100, epoch=1, loss=1.25, val_loss=1.5, learning_rate=2e-4,
                            tokens_per_second=5321.5, tokens_seen=40960, eta_seconds=88.0,
                            last_checkpoint=Checkpoint(10, "out/step-000010", "2026-12-03T15:00:00Z"),
                            resumed_from_step=8, time="2026-12-03T15:00:05Z")
    line = record.to_line()
    assert line.startswith(LINE_PREFIX) and "\n" not in line
    wire = json.loads(line[len(LINE_PREFIX):])
    assert wire == {"version": RECORD_VERSION, "event": "step", "time": "2026-12-03T15:00:05Z", "step": 12,
                    "totalSteps": 100, "epoch": 1, "loss": 1.25, "valLoss": 1.5, "learningRate": 2e-4,
                    "tokensPerSecond": 5321.5, "tokensSeen": 40960, "etaSeconds": 88.0,
                    "lastCheckpoint": {"step": 10, "path": "out/step-000010", "time": "2026-12-03T15:00:00Z"},
                    "resumedFromStep": 8}
    assert parse_line(line) == record
    assert parse_line("2026-12-03T15:00:05.1Z stdout F " + line) == record  # a log collector's prefix


def test_nan_loss_is_left_out_and_the_step_still_reported():
    wire = ProgressRecord(step=3, loss=math.nan).to_dict()
    assert "loss" not in wire and wire["step"] == 3


def test_reader_rejects_newer_versions_and_other_lines():
    newer = LINE_PREFIX + json.dumps({"version": RECORD_VERSION + 1, "step": 1})
    assert parse_line(newer) is None
    assert parse_line("step 120/1000 | loss 1.8 | ...") is None
    assert parse_line(LINE_PREFIX + "{not json") is None
    # unknown keys (a later optional field) are ignored
    assert parse_line(LINE_PREFIX + json.dumps({"version": 1, "step": 4, "futureField": 1})).step == 4
    with pytest.raises(ValueError):
        ProgressRecord(step=1, event="exploded")


def test_latest_takes_the_newest_record_in_a_log():
    log = "\n".join(["Training: ...", ProgressRecord(step=1).to_line(), "step 2/3 | loss 1.0",
                     ProgressRecord(step=2, loss=0.5).to_line(), "Saved checkpoint x"])
    assert latest(log).step == 2 and latest(log).loss == 0.5
    assert latest("") is None and latest(None) is None


def test_the_module_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from litgpt_runtime.progress_record import latest, ProgressRecord\n"
            "print(latest(ProgressRecord(step=5).to_line()).step)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "5", out.stderr


def test_the_training_loop_emits_records_the_reader_understands(tmp_path, monkeypatch, capsys):
    """Contract: the loop's log lines and file, read with the operator's reader."""
    from test_train_loop import train_tiny

    progress_file = tmp_path / "progress.json"
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(progress_file))
    _, state = train_tiny(tmp_path / "run", micro=2, global_batch=4, max_steps=4, save_interval=2)
    records = [r for r in map(parse_line, capsys.readouterr().out.splitlines()) if r is not None]
    steps = [r for r in records if r.event == "step"]
    assert [r.step for r in steps] == [1, 2, 3, 4]
    assert all(r.total_steps == 4 and r.loss is not None and r.learning_rate > 0 and r.tokens_per_second > 0
               for r in steps)
    assert [r.tokens_seen for r in steps] == sorted(r.tokens_seen for r in steps) and steps[-1].tokens_seen == state.tokens
    assert steps[0].eta_seconds is not None and steps[0].eta_seconds >= 0
    saved = [r for r in records if r.event == "checkpoint"]
    assert [r.last_checkpoint.step for r in saved] == [2, 4]
    assert saved[0].last_checkpoint.path.endswith("step-000002")
    assert steps[-1].last_checkpoint.step == 2  # step 4's record came before its checkpoint
    assert records[-1].event == "finished" and records[-1].eta_seconds == 0.0
    assert read_file(progress_file) == records[-1]

    # resuming says where it resumed, and the count of tokens continues
    from litgpt_runtime.train.loop import resume_checkpoint

    train_tiny(tmp_path / "run2", micro=2, global_batch=4, max_steps=4, save_interval=2,
               resume_from=resume_checkpoint(tmp_path / "run", tmp_path / "run" / "step-000002"))
    again = [r for r in map(parse_line, capsys.readouterr().out.splitlines()) if r is not None]
    assert again[0].event == "resumed" and again[0].resumed_from_step == 2 and again[0].step == 2
    assert again[0].last_checkpoint.step == 2
    assert all(r.resumed_from_step == 2 for r in again)


def test_the_operator_turns_the_loop_output_into_a_valid_status(tmp_path, capsys):
    """Contract, both sides: the training loop's real stdout, read by the operator's code path
    (the newest record of a log tail -> status.progress), fits the FinetuneJob status schema and
    fills the Step/Loss/ETA printer columns."""
    from test_train_loop import train_tiny

    from litgpt_operator import progress
    from litgpt_operator.api import FINETUNE_JOB

    train_tiny(tmp_path / "run", micro=2, global_batch=4, max_steps=3)
    log = capsys.readouterr().out
    mid_run = "\n".join(log.splitlines()[: next(i for i, line in enumerate(log.splitlines())
                                                  if parse_line(line) and parse_line(line).step == 2) + 1])
    status = FINETUNE_JOB.status.model_validate({"progress": progress.status_progress(latest(mid_run))}).to_wire()
    shown = status["progress"]
    assert shown["step"] == 2 and shown["totalSteps"] == 3 and shown["event"] == "step"
    assert math.isfinite(shown["loss"]) and shown["learningRate"] > 0 and shown["tokensPerSecond"] > 0
    assert shown["etaSeconds"] >= 0 and shown["eta"].endswith("s") and shown["updateTime"].endswith("Z")
    final = progress.status_progress(latest(log))
    assert final["event"] == "finished" and final["step"] == 3 and final["eta"] == "0s"
