"""LoRA: low-rank updates on chosen Linear layers, zero-initialised (step 0 equals the base).

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T        A: (r, in)  B: (out, r), B = 0 at start

The attention's fused qkv Linear holds three projections in its output rows,
[q heads | k heads | v heads]. LoRA may target any subset of them; each targeted part gets its own
A/B pair (stacked in one `lora_A` / `lora_B` parameter), and its update is added to that part's
columns of the output only:

    x ──► W_qkv ─────────────────────────► [ q | k | v ]
    └──► A_q ─► B_q ─────────────────────►   +q
    └──► A_v ─► B_v ─────────────────────►           +v     (lora_key off)

`LoRALinear` subclasses `nn.Linear` and reuses the wrapped layer's weight tensors, so the base keys
(`...attn.qkv.weight`) do not change and `merge_lora_weights` leaves a plain model whose state dict
is a base checkpoint again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt_runtime.config import Config as BaseConfig
from litgpt_runtime.errors import UserError
from litgpt_runtime.methods import LORA
from litgpt_runtime.model import GPT as BaseGPT
from litgpt_runtime.model import Block as BaseBlock
from litgpt_runtime.model import CausalSelfAttention as BaseCausalSelfAttention
from litgpt_runtime.model import GemmaMLP, GptNeoxMLP, LLaMAMLP


@dataclass
class Config(BaseConfig):
    """A model config plus where LoRA goes (`litgpt_runtime.methods.LoRAOptions`, prefixed `lora_`)."""

    lora_r: int = LORA.r
    lora_alpha: int = LORA.alpha
    lora_dropout: float = LORA.dropout
    lora_query: bool = LORA.query
    lora_key: bool = LORA.key
    lora_value: bool = LORA.value
    lora_projection: bool = LORA.projection
    lora_mlp: bool = LORA.mlp
    lora_head: bool = LORA.head

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_r < 1:
            raise UserError(f"--lora_r must be at least 1 (got {self.lora_r}).")
        if not 0 <= self.lora_dropout < 1:
            raise UserError(f"--lora_dropout must lie in [0, 1) (got {self.lora_dropout}).")
        if not any((self.lora_query, self.lora_key, self.lora_value, self.lora_projection, self.lora_mlp, self.lora_head)):
            raise UserError("LoRA needs at least one target: --lora_query/key/value/projection/mlp/head true.")
        if self.lora_head and self.tie_embeddings:
            raise UserError("--lora_head true is not possible for this model: its output head shares weights with the token embedding.")

    @classmethod
    def from_base(cls, base: BaseConfig, **lora: Any) -> "Config":
        return cls(**{f.name: getattr(base, f.name) for f in fields(BaseConfig)}, **lora)

    def base(self) -> BaseConfig:
        return BaseConfig(**{f.name: getattr(self, f.name) for f in fields(BaseConfig)})


class LoRALinear(nn.Linear):
    """An `nn.Linear` (sharing the wrapped layer's weight and bias) plus LoRA on output parts.

    `parts`: (start, size) column ranges of the output that get an update; default all of it.
    """

    def __init__(self, linear: nn.Linear, r: int, alpha: float, dropout: float, parts: Optional[list[tuple[int, int]]] = None) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.r, self.scaling = r, alpha / r
        self.parts = parts or [(0, self.out_features)]
        self.whole = self.parts == [(0, self.out_features)]
        device = linear.weight.device
        self.lora_A = nn.Parameter(torch.empty(r * len(self.parts), self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.empty(sum(size for _, size in self.parts), r, device=device))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.base: Optional[nn.Module] = None  # QLoRA: a quantized layer in place of weight/bias
        self.reset_lora_parameters()

    def set_base(self, layer: nn.Module) -> None:
        """Compute the frozen part with `layer` (a bitsandbytes Linear, `litgpt_runtime.quantize`)
        instead of `weight` and `bias`, which go."""
        self.weight, self.bias = None, None
        self.base = layer

    def reset_lora_parameters(self) -> None:
        if self.lora_A.is_meta:
            return
        # A random (as nn.Linear's default init), B zero: the update starts at exactly 0.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def reset_parameters(self) -> None:
        # nn.Linear.reset_parameters would re-randomise the shared base weight.
        if hasattr(self, "lora_A"):
            self.reset_lora_parameters()

    def delta_weight(self) -> torch.Tensor:
        """The update as a full (out, in) matrix, zero outside the targeted parts."""
        return (self.up_matrix() @ self.lora_A) * self.scaling

    def up_matrix(self) -> torch.Tensor:
        """B as one (out, r * n_parts) matrix: part i's block sits in its output rows and its
        rank columns, zeros elsewhere. Tiny to build, and it turns the update of every part into
        a single matrix product over the whole output (no concatenation of activations)."""
        if self.whole:
            return self.lora_B
        up = self.lora_B.new_zeros(self.out_features, self.r * len(self.parts))
        row = 0
        for i, (start, size) in enumerate(self.parts):
            up[start : start + size, i * self.r : (i + 1) * self.r] = self.lora_B[row : row + size]
            row += size
        return up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return F.linear(x, self.weight, self.bias)
        out = self.base(x) if self.base is not None else F.linear(x, self.weight, self.bias)
        a = F.linear(self.lora_dropout(x), self.lora_A) * self.scaling  # (..., r * n_parts)
        # out + a @ up^T in one fused kernel (addmm) instead of a product and a separate add
        flat = torch.addmm(out.reshape(-1, self.out_features), a.reshape(-1, a.size(-1)), self.up_matrix().t())
        return flat.view(out.shape)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the weight (the output stays the same, the LoRA path goes quiet)."""
        if self.base is not None:
            raise RuntimeError("a LoRA layer over quantized weights cannot merge in place; merge into the "
                               "checkpoint's weights (finetune/lora.py merge_state_dict)")
        if not self.merged:
            self.weight.data += self.delta_weight().to(self.weight.dtype)
            self.merged = True


def _lora_linear(linear: nn.Linear, config: Config, parts: Optional[list[tuple[int, int]]] = None) -> LoRALinear:
    return LoRALinear(linear, config.lora_r, config.lora_alpha, config.lora_dropout, parts)


class CausalSelfAttention(BaseCausalSelfAttention):
    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
        hs = config.head_size
        q, kv = config.n_head * hs, config.n_query_groups * hs
        ranges = {"query": (0, q), "key": (q, kv), "value": (q + kv, kv)}
        wanted = [ranges[n] for n, on in (("query", config.lora_query), ("key", config.lora_key), ("value", config.lora_value)) if on]
        if wanted:
            self.qkv = _lora_linear(self.qkv, config, wanted)
        if config.lora_projection:
            self.proj = _lora_linear(self.proj, config)


class _LoRAMLPMixin:
    """Every Linear of the MLP gets LoRA when `lora_mlp` is on."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)  # type: ignore[call-arg]
        if config.lora_mlp:
            for name, child in list(self.named_children()):  # type: ignore[attr-defined]
                if type(child) is nn.Linear:
                    setattr(self, name, _lora_linear(child, config))


class LoRAGptNeoxMLP(_LoRAMLPMixin, GptNeoxMLP):
    pass


class LoRALLaMAMLP(_LoRAMLPMixin, LLaMAMLP):
    pass


class LoRAGemmaMLP(_LoRAMLPMixin, GemmaMLP):
    pass


class Block(BaseBlock):
    attention_class = CausalSelfAttention
    mlp_classes = {"GptNeoxMLP": LoRAGptNeoxMLP, "LLaMAMLP": LoRALLaMAMLP, "GemmaMLP": LoRAGemmaMLP}


class GPT(BaseGPT):
    block_class = Block

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if config.lora_head:
            self.lm_head = _lora_linear(self.lm_head, config)


def lora_modules(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def is_lora_key(name: str) -> bool:
    """A LoRA parameter (`lora_A`, `lora_B`): everything else is a base weight."""
    return "lora_" in name


def mark_only_lora_as_trainable(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        param.requires_grad = is_lora_key(name)


def lora_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The LoRA weights of a LoRA model's state dict (what an unmerged finetune saves)."""
    return {k: v for k, v in state_dict.items() if is_lora_key(k)}


def merge_lora_weights(model: nn.Module) -> None:
    """Fold every LoRA update into its base weight (idempotent)."""
    for module in lora_modules(model):
        module.merge()


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Merge, then return the base model's state dict (LoRA keys dropped)."""
    merge_lora_weights(model)
    return {k: v for k, v in model.state_dict().items() if not is_lora_key(k)}
