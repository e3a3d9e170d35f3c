"""`litgpt finetune_adapter_v2`: LLaMA-Adapter plus per-layer scale/bias terms and trainable norms."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from litgpt_runtime.finetune.adapter import run_adapter
from litgpt_runtime.train.args import Resume
from litgpt_runtime.train.args import EvalArgs, TrainArgs
from litgpt_runtime.train.data import JSON, FinetuneData


def setup(
    repo_id: str,
    *,
    data: FinetuneData = JSON(),
    checkpoint_root_dir: Path = Path("checkpoints"),
    out_dir: Path = Path("out/finetune/adapter_v2"),
    precision: Optional[str] = None,
    devices: Union[int, str] = 1,
    num_nodes: Optional[int] = None,
    strategy: Literal["auto", "ddp", "fsdp"] = "auto",
    adapter_prompt_length: int = 10,
    adapter_start_layer: int = 2,
    train: TrainArgs = TrainArgs(
        save_interval=1000, log_interval=1, global_batch_size=16, micro_batch_size=1, lr_warmup_steps=10,
        epochs=3, learning_rate=2e-3, weight_decay=0.02,
    ),
    eval: EvalArgs = EvalArgs(interval=100, max_iters=100),
    seed: int = 1337,
    resume: Resume = False,
    access_token: Optional[str] = None,
) -> None:
    """Finetune a model with Adapter v2: the LLaMA-Adapter prompt and gates, plus a learned scale
    and bias on every linear layer's output and trainable norms (more capacity than adapter, still
    a tiny fraction of the weights).

    The result, `<out_dir>/final`, is a complete checkpoint (base + adapter weights) for generate,
    chat and serve.

    Args:
        repo_id: The base model: a Hugging Face repo id (downloaded on first use) or a checkpoint folder.
        data: Training data, e.g. `--data JSON --data.json_path train.json`.
        checkpoint_root_dir: Where downloaded checkpoints live.
        out_dir: Where checkpoints (`step-*`), logs and `final/` go.
        precision: 32-true, bf16-mixed, bf16-true or 16-mixed (default: bf16-mixed on GPUs and
            on CPUs with AMX, else 32-true).
        devices: Devices per node (or auto).
        num_nodes: Nodes (default: from the torch distributed environment, else 1).
        strategy: auto, ddp or fsdp.
        adapter_prompt_length: Positions of the learned prompt.
        adapter_start_layer: First layer (0-based) that attends to the prompt.
        train: Training options.
        eval: Validation options.
        seed: Random seed (data order, initialisation).
        resume: Continue from a checkpoint in out_dir: auto (if there is one), true, false, or a step folder.
        access_token: Hugging Face token for gated models.
    """
    run_adapter("adapter_v2", **locals())
