"""LLaMA-Adapter: a learned prompt that layers >= `adapter_start_layer` attend to, through a
zero-initialised per-head gate (so step 0 equals the base model).

    y = attn(q, k, v)  +  gate[h] * attn(q, k_p, v_p)       k_p, v_p = qkv(prompt) of this layer

The prompt (`adapter_wte`, P x n_embd) is projected by the layer's own (frozen) qkv weights;
prompt keys get no rotary embedding and every query may see every prompt position. Only
`adapter_wte` and `gating_factor` train. Base state-dict keys are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

import torch
import torch.nn as nn

from litgpt_runtime.config import Config as BaseConfig
from litgpt_runtime.errors import UserError
from litgpt_runtime.methods import ADAPTER
from litgpt_runtime.model import GPT as BaseGPT
from litgpt_runtime.model import Block as BaseBlock
from litgpt_runtime.model import CausalSelfAttention as BaseCausalSelfAttention


@dataclass
class Config(BaseConfig):
    """A model config plus the adapter's size and placement."""

    adapter_prompt_length: int = ADAPTER.prompt_length
    adapter_start_layer: int = ADAPTER.start_layer
    adapter_kv_grouped: bool = False
    """Read the prompt's keys and values out of qkv's output as LitGPT 0.5.13 does: as if it
    were laid out per query group ([q.. k v] for each group), although its qkv, like ours, is
    [all q | all k | all v], and without the key norm. Adapters LitGPT trained learned their
    prompt through that reading, so `convert_from_litgpt` sets this to keep their outputs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adapter_prompt_length < 1:
            raise UserError(f"--adapter_prompt_length must be at least 1 (got {self.adapter_prompt_length}).")
        if not 0 <= self.adapter_start_layer < self.n_layer:
            raise UserError(
                f"--adapter_start_layer must lie in [0, {self.n_layer - 1}] for this {self.n_layer}-layer model "
                f"(got {self.adapter_start_layer})."
            )

    @classmethod
    def from_base(cls, base: BaseConfig, **extra: Any) -> "Config":
        return cls(**{f.name: getattr(base, f.name) for f in fields(BaseConfig)}, **extra)

    def base(self) -> BaseConfig:
        return BaseConfig(**{f.name: getattr(self, f.name) for f in fields(BaseConfig)})


class CausalSelfAttention(BaseCausalSelfAttention):
    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
        self.has_adapter = block_idx >= config.adapter_start_layer
        if self.has_adapter:
            device = self.qkv.weight.device
            self.adapter_wte = nn.Embedding(config.adapter_prompt_length, config.n_embd, device=device)
            self.gating_factor = nn.Parameter(torch.zeros(1, config.n_head, 1, 1, device=device))
            self.reset_adapter_parameters()

    def reset_adapter_parameters(self) -> None:
        if self.has_adapter and not self.gating_factor.is_meta:
            nn.init.normal_(self.adapter_wte.weight, std=0.02)
            nn.init.zeros_(self.gating_factor)

    def reset_parameters(self) -> None:
        self.reset_adapter_parameters()

    def adapter_kv(self, batch_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the prompt: (B, G, P, hs) each."""
        cfg = self.config
        hs, H, G = cfg.head_size, cfg.n_head, cfg.n_query_groups
        prompt = self.adapter_wte.weight.to(dtype)  # (P, n_embd)
        P = prompt.size(0)
        if cfg.adapter_kv_grouped:
            # LitGPT's reading: per group g, chunks [g*(R+2) .. g*(R+2)+R-1] are "q", then one k, one v
            R = H // G
            grouped = self.qkv(prompt).view(P, G, R + 2, hs)
            k = grouped[:, :, R].unsqueeze(0).transpose(1, 2)  # (1, G, P, hs)
            v = grouped[:, :, R + 1].unsqueeze(0).transpose(1, 2)
            return k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)
        _, k, v = self.qkv(prompt).split((H * hs, G * hs, G * hs), dim=-1)
        k = k.view(1, P, G, hs).transpose(1, 2)
        v = v.view(1, P, G, hs).transpose(1, 2)
        if cfg.norm_qk:
            k = self.norm_k(k)
        return k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)

    def scaled_dot_product_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        y = super().scaled_dot_product_attention(q, k, v, mask)
        if not self.has_adapter:
            return y
        B, _, T, _ = q.shape
        ak, av = self.adapter_kv(B, q.dtype)
        # every query sees the whole prompt: an all-true mask (None would mean "causal")
        see_all = torch.ones(1, 1, T, ak.size(2), dtype=torch.bool, device=q.device)
        ay = super().scaled_dot_product_attention(q, ak, av, see_all)
        return y + self.gating_factor.to(y.dtype) * ay


class Block(BaseBlock):
    attention_class = CausalSelfAttention


class GPT(BaseGPT):
    block_class = Block


def adapter_filter(key: str, _value: Any = None) -> bool:
    return "adapter_wte" in key or "gating_factor" in key


def mark_only_adapter_as_trainable(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        param.requires_grad = adapter_filter(name)
