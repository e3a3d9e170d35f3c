"""Adapter v2: the LLaMA-Adapter prompt and gate, plus a learned scale and bias on the output
of every Linear (attention, MLP, head) and trainable norms.

    y = s * (x W^T + b) + beta          s = 1, beta = 0 at start (step 0 equals the base)

`AdapterV2Linear` subclasses `nn.Linear` and shares the wrapped layer's weight, so base keys are
unchanged; it adds `adapter_scale` and `adapter_bias`. Trainable: the adapter's prompt and gates,
every `adapter_scale`/`adapter_bias`, and all norm weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt_runtime.model import GemmaMLP, GptNeoxMLP, LLaMAMLP, RMSNorm
from litgpt_runtime.peft import adapter
from litgpt_runtime.peft.adapter import Config  # noqa: F401  (same fields as the adapter's)


class AdapterV2Linear(nn.Linear):
    def __init__(self, linear: nn.Linear) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        device = linear.weight.device
        self.adapter_bias = nn.Parameter(torch.zeros(self.out_features, device=device))
        self.adapter_scale = nn.Parameter(torch.ones(self.out_features, device=device))

    def reset_parameters(self) -> None:
        # Never re-randomise the shared base weight; only the adapter's terms restart.
        if hasattr(self, "adapter_bias") and not self.adapter_bias.is_meta:
            nn.init.zeros_(self.adapter_bias)
            nn.init.ones_(self.adapter_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        return out * self.adapter_scale.to(out.dtype) + self.adapter_bias.to(out.dtype)


def _wrap_linears(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear:
            setattr(module, name, AdapterV2Linear(child))


class CausalSelfAttention(adapter.CausalSelfAttention):
    def __init__(self, config: adapter.Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
        _wrap_linears(self)  # qkv, proj


class _V2MLPMixin:
    def __init__(self, config: adapter.Config) -> None:
        super().__init__(config)  # type: ignore[call-arg]
        _wrap_linears(self)  # type: ignore[arg-type]


class AdapterV2GptNeoxMLP(_V2MLPMixin, GptNeoxMLP):
    pass


class AdapterV2LLaMAMLP(_V2MLPMixin, LLaMAMLP):
    pass


class AdapterV2GemmaMLP(_V2MLPMixin, GemmaMLP):
    pass


class Block(adapter.Block):
    attention_class = CausalSelfAttention
    mlp_classes = {"GptNeoxMLP": AdapterV2GptNeoxMLP, "LLaMAMLP": AdapterV2LLaMAMLP, "GemmaMLP": AdapterV2GemmaMLP}


class GPT(adapter.GPT):
    block_class = Block

    def __init__(self, config: adapter.Config) -> None:
        super().__init__(config)
        self.lm_head = AdapterV2Linear(self.lm_head)
        if config.tie_embeddings:  # keep sharing the embedding's weight
            self.lm_head.weight = self.transformer.wte.weight


def adapter_v2_filter(key: str, _value: Any = None) -> bool:
    return adapter.adapter_filter(key) or "adapter_bias" in key or "adapter_scale" in key


def mark_only_adapter_v2_as_trainable(model: nn.Module) -> None:
    norms = {name for name, m in model.named_modules() if isinstance(m, (RMSNorm, nn.LayerNorm))}
    for name, param in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        param.requires_grad = adapter_v2_filter(name) or owner in norms
