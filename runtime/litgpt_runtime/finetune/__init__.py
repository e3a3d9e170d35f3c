"""Finetuning methods (`full`, `lora`, `adapter`, `adapter_v2`) and `litgpt finetune --method`.

Each method's module has a `setup` whose signature is its CLI (`litgpt finetune_<method>`).
`setup` here is `litgpt finetune`: LoRA by default, another method with `--method`, forwarding
only the options that method has. An option of a different method is an error that names the
method it belongs to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from litgpt_runtime.errors import UserError
from litgpt_runtime.finetune.common import Quantize
from litgpt_runtime.train.args import EvalArgs, Resume, TrainArgs
from litgpt_runtime.train.data import JSON, FinetuneData

METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "lora": ("quantize", "lora_r", "lora_alpha", "lora_dropout", "lora_query", "lora_key", "lora_value",
             "lora_projection", "lora_mlp", "lora_head", "merge"),
    "adapter": ("adapter_prompt_length", "adapter_start_layer"),
    "adapter_v2": ("adapter_prompt_length", "adapter_start_layer"),
    "full": (),
}


def _method_setup(method: str):
    from importlib import import_module

    return import_module(f"litgpt_runtime.finetune.{method}").setup


def setup(
    repo_id: str,
    *,
    method: Literal["lora", "full", "adapter", "adapter_v2"] = "lora",
    data: FinetuneData = JSON(),
    checkpoint_root_dir: Path = Path("checkpoints"),
    out_dir: Optional[Path] = None,
    precision: Optional[str] = None,
    devices: Union[int, str] = 1,
    num_nodes: Optional[int] = None,
    strategy: Literal["auto", "ddp", "fsdp"] = "auto",
    train: Optional[TrainArgs] = None,
    eval: Optional[EvalArgs] = None,
    seed: int = 1337,
    resume: Resume = False,
    access_token: Optional[str] = None,
    quantize: Quantize = None,
    lora_r: Optional[int] = None,
    lora_alpha: Optional[int] = None,
    lora_dropout: Optional[float] = None,
    lora_query: Optional[bool] = None,
    lora_key: Optional[bool] = None,
    lora_value: Optional[bool] = None,
    lora_projection: Optional[bool] = None,
    lora_mlp: Optional[bool] = None,
    lora_head: Optional[bool] = None,
    merge: Optional[bool] = None,
    adapter_prompt_length: Optional[int] = None,
    adapter_start_layer: Optional[int] = None,
) -> None:
    """Finetune a model on instruction data: LoRA by default (same as finetune_lora), or
    `--method full|adapter|adapter_v2`. `litgpt finetune_<method> --help` lists each method's
    options with their defaults; see docs/finetune.md for which to pick.

    Args:
        repo_id: The base model: a Hugging Face repo id (downloaded on first use) or a checkpoint folder.
        method: lora, full, adapter or adapter_v2.
        data: Training data, e.g. `--data JSON --data.json_path train.json`.
        checkpoint_root_dir: Where downloaded checkpoints live.
        out_dir: Where checkpoints, logs and `final/` go (default out/finetune/<method>).
        precision: 32-true, bf16-mixed, bf16-true or 16-mixed (default: bf16-mixed on GPUs and
            on CPUs with AMX, else 32-true).
        devices: Devices per node (or auto).
        num_nodes: Nodes (default: from the torch distributed environment, else 1).
        strategy: auto, ddp or fsdp.
        train: Training options (defaults per method).
        eval: Validation options.
        seed: Random seed.
        resume: Continue from a checkpoint in out_dir: auto, true, false, or a step folder.
        access_token: Hugging Face token for gated models.
        quantize: (lora) QLoRA with bitsandbytes on CUDA GPUs.
        lora_r: (lora) Rank of the updates (default 8).
        lora_alpha: (lora) Scale numerator, updates are scaled by alpha / r (default 16).
        lora_dropout: (lora) Dropout on the LoRA path (default 0.05).
        lora_query: (lora) LoRA on queries (default true).
        lora_key: (lora) LoRA on keys (default false).
        lora_value: (lora) LoRA on values (default true).
        lora_projection: (lora) LoRA on the attention output projection (default false).
        lora_mlp: (lora) LoRA on the MLP (default false).
        lora_head: (lora) LoRA on the output head (default false).
        merge: (lora) Merge the updates into the weights at the end (default true).
        adapter_prompt_length: (adapter, adapter_v2) Learned prompt positions (default 10).
        adapter_start_layer: (adapter, adapter_v2) First layer with the prompt (default 2).
    """
    given = {name: value for name, value in locals().items() if name in _ALL_METHOD_OPTIONS and value is not None}
    for name in given:
        if name not in METHOD_OPTIONS[method]:
            owners = [m for m, options in METHOD_OPTIONS.items() if name in options]
            raise UserError(
                f"--{name} belongs to --method {' / '.join(owners)}, not --method {method}; "
                f"drop it or choose --method {owners[0]}."
            )
    common = dict(data=data, checkpoint_root_dir=checkpoint_root_dir, precision=precision, devices=devices,
                  num_nodes=num_nodes, strategy=strategy, seed=seed, resume=resume, access_token=access_token)
    if out_dir is not None:
        common["out_dir"] = out_dir
    if train is not None:
        common["train"] = train
    if eval is not None:
        common["eval"] = eval
    _method_setup(method)(repo_id, **common, **given)


_ALL_METHOD_OPTIONS = {name for options in METHOD_OPTIONS.values() for name in options}
