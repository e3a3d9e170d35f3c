"""`litgpt finetune` as a user runs it (subprocesses): train, generate from the result, resume,
clear errors for bad data; and two CPU processes with DDP (gloo) training together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune_tiny import RECORDS, make_checkpoint, write_records

pytestmark = pytest.mark.slow

# float32 pinned: the default precision is bf16-mixed only on CPUs with AMX (a later --precision wins)
COMMON = ["--train.global_batch_size", "4", "--train.micro_batch_size", "2", "--train.lr_warmup_steps", "1",
          "--train.learning_rate", "1e-2", "--eval.final_validation", "false", "--precision", "32-true"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("base") / "tiny-llama")


def test_finetune_then_generate_then_resume(litgpt, base_dir, tmp_path):
    data = write_records(tmp_path / "train.jsonl", RECORDS, jsonl=True)
    out = tmp_path / "out"
    run = litgpt("finetune", str(base_dir), "--data", "JSON", "--data.json_path", str(data), "--out_dir", str(out),
                 "--train.max_steps", "3", "--train.save_interval", "2", *COMMON)
    assert run.returncode == 0, run.stderr
    assert "step 3/3" in run.stdout and (out / "final" / ".litgpt_complete.json").is_file()
    assert sorted(p.name for p in out.glob("step-*")) == ["step-000002", "step-000003"]
    hparams = (out / "final" / "hyperparameters.yaml").read_text()
    assert "method: lora" in hparams and "json_path:" in hparams

    gen = litgpt("generate", str(out / "final"), "--prompt", "Name the animal.", "--max_new_tokens", "5")
    assert gen.returncode == 0, gen.stderr
    export = litgpt("convert_to_hf", str(out / "final"), "--out_dir", str(tmp_path / "hf"))
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "model.safetensors").is_file()

    # --resume auto continues from the newest checkpoint (step 3) up to the new limit
    again = litgpt("finetune", str(base_dir), "--data.json_path", str(data), "--out_dir", str(out),
                   "--train.max_steps", "5", "--resume", "auto", *COMMON)
    assert again.returncode == 0, again.stderr
    assert "Resuming from" in again.stdout and "step-000003" in again.stdout
    assert "step 4/5" in again.stdout and "step 1/" not in again.stdout


def test_malformed_data_is_one_clear_message(litgpt, base_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n" + '{"instruction": "x", "output": }\n')
    run = litgpt("finetune_full", str(base_dir), "--data.json_path", str(bad), "--out_dir", str(tmp_path / "o"))
    assert run.returncode == 1
    assert "bad.jsonl, line 2: not valid JSON" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "o" / "final").exists()

    wrong = litgpt("finetune", str(base_dir), "--method", "full", "--lora_r", "4", "--data.json_path", str(bad))
    assert wrong.returncode == 1 and "--lora_r belongs to --method lora" in wrong.stderr


def test_two_cpu_processes_with_ddp_match_one_process(litgpt, base_dir, tmp_path):
    """DDP (gloo) over 2 processes with micro-batches of 2 takes the same steps as one process
    accumulating 2 micro-batches of 2 (same samples per step, loss normalised per token), so both
    runs end with the same weights -- which also shows the two processes agreed."""
    from litgpt_runtime.checkpoint import load_state_dict

    records = RECORDS + [{"instruction": "One more?", "output": "yes"}]  # 9: 8 train + 1 val
    data = write_records(tmp_path / "train.json", records)
    # float64: the runs differ only in summation order (gradients all-reduced vs accumulated, 1 vs 2
    # threads), which AdamW's division by sqrt(v) amplifies for near-zero gradients; in float32
    # that reached 1.3e-4 on AMD EPYC, in float64 it is far below the float32 rounding of the output.
    args = ["--data.json_path", str(data), "--data.val_split_fraction", "0.12", "--train.max_steps", "2",
            "--train.save_interval", "2", *COMMON, "--precision", "64-true"]
    ddp = litgpt("finetune_full", str(base_dir), "--devices", "2", "--strategy", "ddp", "--out_dir", str(tmp_path / "ddp"), *args,
                 env={"OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "on each of 2 process(es)" in ddp.stdout
    single = litgpt("finetune_full", str(base_dir), "--out_dir", str(tmp_path / "one"), *args)
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_state_dict(tmp_path / "ddp" / "final" / "model.safetensors")
    b = load_state_dict(tmp_path / "one" / "final" / "model.safetensors")
    base = load_state_dict(base_dir / "model.safetensors")
    for key in b:
        assert not torch.equal(b[key], base[key])
        # the output is written in the base's float32: at most a rounding step apart
        torch.testing.assert_close(a[key], b[key], rtol=2e-7, atol=1e-9)


def test_sigterm_saves_a_checkpoint_and_resume_auto_continues(litgpt, base_dir, tmp_path):
    """A pod being evicted gets SIGTERM: the run stops at a step boundary with a checkpoint (and
    without a `final` folder), and `--resume auto` continues from it."""
    import signal
    import subprocess

    from conftest import clean_env, litgpt_command

    data = write_records(tmp_path / "train.json", RECORDS)
    out = tmp_path / "out"
    args = [str(base_dir), "--data.json_path", str(data), "--out_dir", str(out), "--train.save_interval", "1000",
            "--adapter_start_layer", "0", *COMMON]
    proc = subprocess.Popen([*litgpt_command(), "finetune_adapter", *args, "--train.max_steps", "500"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(tmp_path / "hf"))
    for line in proc.stdout:
        if line.startswith("step 2/"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 143, rest
    assert "Stopped by SIGTERM" in rest and not (out / "final").exists()
    saved = sorted(p.name for p in out.glob("step-*"))
    assert len(saved) == 1
    step = int(saved[0].split("-")[1])
    again = litgpt("finetune_adapter", *args, "--train.max_steps", str(step + 2), "--resume", "auto")
    assert again.returncode == 0, again.stderr
    assert f"at step {step}" in again.stdout and f"step {step + 2}/" in again.stdout
    assert (out / "final" / ".litgpt_complete.json").is_file()
