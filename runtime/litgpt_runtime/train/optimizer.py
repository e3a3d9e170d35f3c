"""The optimizer of every training run (finetuning and pretraining): AdamW from `--train.*`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litgpt_runtime.train.args import TrainArgs

if TYPE_CHECKING:
    import torch


def make_optimizer(params: list, train: TrainArgs, device: "torch.device") -> Any:
    import torch

    kwargs = dict(lr=train.learning_rate, weight_decay=train.weight_decay, betas=(train.beta1, train.beta2))
    try:
        # The fused kernel updates all parameters in one pass (CPU and CUDA): fewer, larger ops.
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, foreach=True, **kwargs)
