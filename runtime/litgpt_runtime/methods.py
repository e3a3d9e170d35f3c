"""The finetuning methods and their own options, as data: the one place their defaults live.

No torch import: `litgpt finetune*` builds its CLI from these (`litgpt_runtime.finetune.cli`),
the LoRA and adapter model configs (`litgpt_runtime.peft`) and the fit check (`litgpt_runtime.fit`)
take their defaults from them, and so do the operator's FinetuneJob API defaults (`spec.lora`).
tests/runtime/test_methods.py fails when one of those drifts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from litgpt_runtime.train.args import TrainArgs

MethodName = Literal["lora", "full", "adapter", "adapter_v2"]
METHODS: tuple[str, ...] = ("lora", "full", "adapter", "adapter_v2")
"""`--method` of `litgpt finetune`, in that order (lora is the default)."""


@dataclass(frozen=True)
class LoRAOptions:
    """Where LoRA goes and how strong it is (`--lora_<field>` on the command line)."""

    r: int = 8
    """Rank of the updates."""
    alpha: int = 16
    """Updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA path's input."""
    query: bool = True
    """LoRA on the attention's query projection."""
    key: bool = False
    """LoRA on the attention's key projection."""
    value: bool = True
    """LoRA on the attention's value projection."""
    projection: bool = False
    """LoRA on the attention's output projection."""
    mlp: bool = False
    """LoRA on the MLP's linear layers."""
    head: bool = False
    """LoRA on the output head (not for models whose head shares the embedding)."""


@dataclass(frozen=True)
class AdapterOptions:
    """The learned prompt of LLaMA-Adapter and Adapter v2 (`--adapter_<field>`)."""

    prompt_length: int = 10
    """Positions of the learned prompt."""
    start_layer: int = 2
    """First layer (0-based) that attends to the prompt."""


OPTIONS: dict[str, tuple[type, str]] = {
    "lora": (LoRAOptions, "lora_"),
    "adapter": (AdapterOptions, "adapter_"),
    "adapter_v2": (AdapterOptions, "adapter_"),
}
"""Method -> (its options class, the prefix of their names on the command line and in model configs)."""

LORA = LoRAOptions()
ADAPTER = AdapterOptions()


def flat(options: object, prefix: str) -> dict[str, object]:
    """`LoRAOptions(r=4)` -> {"lora_r": 4, "lora_alpha": 16, ...}: the names the CLI, the model
    configs and hyperparameters.yaml use."""
    return {prefix + f.name: getattr(options, f.name) for f in fields(options)}  # type: ignore[arg-type]


def _finetune_train(**settings: float) -> TrainArgs:
    return TrainArgs(save_interval=1000, log_interval=1, global_batch_size=16, micro_batch_size=1, epochs=3,
                     **settings)


TRAIN_DEFAULTS: dict[str, TrainArgs] = {
    "lora": _finetune_train(lr_warmup_steps=100, learning_rate=2e-4, weight_decay=0.0),
    "full": _finetune_train(lr_warmup_steps=100, learning_rate=2e-5, weight_decay=0.02),
    "adapter": _finetune_train(lr_warmup_steps=10, learning_rate=2e-3, weight_decay=0.02),
    "adapter_v2": _finetune_train(lr_warmup_steps=10, learning_rate=2e-3, weight_decay=0.02),
}
"""`--train.*` defaults of each method (the learning rate above all differs)."""
