"""What only a GPU can show, in one run: `make gpu-check` (or `python benchmarks/gpu_check.py`).

Checks, each on a tiny random model made here (nothing downloaded):

  parity      our GPT against `transformers` on the GPU, float32 logits (TF32 off)
  lora        one LoRA finetuning step (`litgpt finetune_lora`, bf16-true)
  qlora       one QLoRA step (`--quantize bnb.nf4`, bitsandbytes)
  bf16-generate  greedy generation in bf16-true; tokens/s
  ddp         one LoRA step on 2 GPUs (DDP, `--devices 2`)

A check the hardware cannot run is skipped with the reason printed (no CUDA GPU, no bfloat16,
fewer than 2 GPUs, bitsandbytes missing); on a CPU-only machine every check is skipped and the
exit status is 0. A check that runs and fails makes the exit status 1. `--json FILE` also writes
the results (with the figures) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORDS = [{"instruction": f"Repeat {w}.", "output": w} for w in ("red", "green", "blue", "cyan")]


@dataclass
class Result:
    name: str
    status: str  # PASS | SKIP | FAIL
    detail: str
    figures: dict = field(default_factory=dict)


class Skip(Exception):
    """The hardware (or an optional package) cannot run this check."""


# --- what the machine has ----------------------------------------------------------------------
def gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def need_gpus(count: int = 1) -> None:
    have = gpus()
    if have == 0:
        raise Skip("no CUDA GPU (torch.cuda.is_available() is False)")
    if have < count:
        raise Skip(f"needs {count} GPUs, this machine has {have}")


def need_bf16() -> None:
    import torch

    need_gpus()
    if not torch.cuda.is_bf16_supported():
        raise Skip(f"{torch.cuda.get_device_name(0)} has no bfloat16 support")


def need_bitsandbytes() -> None:
    need_gpus()
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise Skip("bitsandbytes is not installed (pip install bitsandbytes)") from None


# --- the tiny model -----------------------------------------------------------------------------
class Workspace:
    """A tiny random Llama as a Hugging Face folder and as our checkpoint, plus training data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made = False

    def make(self) -> "Workspace":
        if not self._made:
            from litgpt_devcluster.hf_tiny import make_hf_model_dir
            from litgpt_runtime.checkpoint import is_complete, mark_complete
            from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint

            self.hf_dir = make_hf_model_dir("llama", self.root / "hf")
            self.checkpoint = self.root / "tiny" / "llama"
            convert_hf_checkpoint(self.hf_dir, self.checkpoint)
            if not is_complete(self.checkpoint):
                mark_complete(self.checkpoint, repo_id="tiny/llama")
            self.data = self.root / "train.json"
            self.data.write_text(json.dumps(RECORDS))
            self._made = True
        return self

    def finetune(self, out: str, *extra: str) -> dict:
        """One optimizer step of `litgpt finetune_lora`; its wall time and peak memory line."""
        command = [sys.executable, "-m", "litgpt_runtime", "finetune_lora", str(self.checkpoint),
                   "--data", "JSON", "--data.json_path", str(self.data), "--data.val_split_fraction", "0",
                   "--out_dir", str(self.root / out), "--train.max_steps", "1", "--train.global_batch_size", "2",
                   "--train.micro_batch_size", "1", "--eval.final_validation", "false", *extra]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=self.root)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise AssertionError(f"exit {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
        if not (self.root / out / "final" / ".litgpt_complete.json").is_file():
            raise AssertionError(f"no complete output in {self.root / out / 'final'}")
        step = next((line for line in done.stdout.splitlines() if line.startswith("step 1")), "")
        return {"seconds": round(seconds, 1), "step_line": step}


# --- the checks ---------------------------------------------------------------------------------
def check_parity(ws: Workspace) -> dict:
    need_gpus()
    import torch
    import transformers

    from litgpt_runtime.checkpoint import load_model

    ws.make()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    hf = transformers.AutoModelForCausalLM.from_pretrained(ws.hf_dir, attn_implementation="eager",
                                                           dtype=torch.float32).to(device).eval()
    ours = load_model(ws.checkpoint, device=device)
    idx = torch.randint(3, 200, (2, 24), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        expected, got = hf(idx).logits, ours(idx)
    diff = float((got - expected).abs().max())
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)
    return {"max_abs_diff": diff, "device": torch.cuda.get_device_name(0)}


def check_lora(ws: Workspace) -> dict:
    need_bf16()
    return ws.make().finetune("lora", "--precision", "bf16-true", "--devices", "1")


def check_qlora(ws: Workspace) -> dict:
    need_bitsandbytes()
    need_bf16()
    return ws.make().finetune("qlora", "--precision", "bf16-true", "--devices", "1", "--quantize", "bnb.nf4")


def check_bf16_generate(ws: Workspace) -> dict:
    need_bf16()
    import torch

    from litgpt_runtime.checkpoint import load_model
    from litgpt_runtime.generate import generate_tokens

    ws.make()
    model = load_model(ws.checkpoint, device="cuda", dtype=torch.bfloat16)
    start = time.perf_counter()
    tokens = list(generate_tokens(model, [5, 6, 7, 8], max_new_tokens=32, temperature=0.0, top_k=None, top_p=1.0,
                                  stop_ids=()))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if len(tokens) != 32:
        raise AssertionError(f"generated {len(tokens)} tokens, expected 32")
    return {"tokens_per_second": round(len(tokens) / seconds, 1)}


def check_ddp(ws: Workspace) -> dict:
    need_gpus(2)
    need_bf16()
    return ws.make().finetune("ddp", "--precision", "bf16-true", "--devices", "2")


CHECKS: dict[str, Callable[[Workspace], dict]] = {
    "parity": check_parity,
    "lora": check_lora,
    "qlora": check_qlora,
    "bf16-generate": check_bf16_generate,
    "ddp": check_ddp,
}


def run(names: list[str], root: Path) -> list[Result]:
    ws = Workspace(root)
    results = []
    for name in names:
        try:
            figures = CHECKS[name](ws)
            result = Result(name, "PASS", "", figures)
        except Skip as reason:
            result = Result(name, "SKIP", str(reason))
        except Exception as error:  # a check that ran and failed: say what, go on with the others
            result = Result(name, "FAIL", f"{type(error).__name__}: {error}")
        line = f"{result.status} {name}" + (f": {result.detail}" if result.detail else "")
        if result.figures:
            line += " " + json.dumps(result.figures)
        print(line, flush=True)
        results.append(result)
    return results


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(CHECKS), default=list(CHECKS), help="checks to run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="litgpt-gpu-check-") as tmp:
        results = run(args.only, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "SKIP", "FAIL")}
    print(f"gpu-check: {counts['PASS']} passed, {counts['SKIP']} skipped, {counts['FAIL']} failed")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
