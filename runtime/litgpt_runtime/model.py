"""The one GPT implementation behind every supported family.

Read top-down: norms, rotary embedding, KV cache, attention, MLPs, Block, GPT. Everything a family
does differently is a field of `litgpt_runtime.config.Config`; nothing here checks a family name.

Module names (= state-dict keys; LoRA and adapters target the Linear ones):

    transformer.wte                        Embedding(padded_vocab_size, n_embd)
    transformer.h.{i}.norm_1               RMSNorm | LayerNorm (n_embd)
    transformer.h.{i}.attn.qkv             Linear(n_embd, (n_head + 2 * n_query_groups) * head_size)
                                           output rows: [all q heads | all k heads | all v heads]
    transformer.h.{i}.attn.norm_q          RMSNorm(head_size)       only when config.norm_qk
    transformer.h.{i}.attn.norm_k          RMSNorm(head_size)       only when config.norm_qk
    transformer.h.{i}.attn.proj            Linear(n_head * head_size, n_embd)
    transformer.h.{i}.post_attention_norm  norm(n_embd)             only when config.post_attention_norm
    transformer.h.{i}.norm_2               norm(n_embd)
    transformer.h.{i}.mlp.fc               Linear(n_embd, intermediate)   GptNeoxMLP
    transformer.h.{i}.mlp.fc_1             Linear(n_embd, intermediate)   LLaMAMLP / GemmaMLP (gate)
    transformer.h.{i}.mlp.fc_2             Linear(n_embd, intermediate)   LLaMAMLP / GemmaMLP (up)
    transformer.h.{i}.mlp.proj             Linear(intermediate, n_embd)
    transformer.h.{i}.post_mlp_norm        norm(n_embd)             only when config.post_mlp_norm
    transformer.ln_f                       norm(n_embd)
    lm_head                                Linear(n_embd, padded_vocab_size)  (shares wte's weight when tied)

Buffers (rope cos/sin, KV cache) are not persistent: they never appear in a state dict.

Variants (LoRA, adapters) subclass instead of adding flags here: `GPT.block_class`,
`Block.attention_class` and `Block.mlp_classes` choose the classes to build.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt_runtime.config import Config

# F.scaled_dot_product_attention(enable_gqa=) arrived in torch 2.5
_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)

def _train_attention_in_float32(q: torch.Tensor) -> bool:
    """Whether causal attention should run in float32 (autocast off): when its gradient is needed on the CPU.

    ATen's CPU flash-attention backward is several times slower in bfloat16 than in float32 (tiny
    Llama, T=128: 15 vs 4 ms forward + backward per layer), while its forward is faster in half
    precision; so only training upcasts. Under bf16 autocast (`bf16-mixed`) the inputs may still be
    float32 here (rope promotes queries and keys) but autocast would run the kernel in bfloat16, so
    the check is on the device, not on the dtype; in plain float32 the upcast is a no-op, and
    float64 (`64-true`, used to compare code paths exactly) is never lowered."""
    return q.device.type == "cpu" and q.requires_grad and q.dtype != torch.float64


# (cos, sin), each (T, 1, rope_n_elem), or (B, T, 1, rope_n_elem) for per-row positions: they
# broadcast over the heads axis of (B, T, heads, head_size).
Rope = tuple[torch.Tensor, torch.Tensor]


# --- norms ---------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """x / rms(x) * w, computed in float32. Gemma stores w - 1 (`unit_offset`)."""

    def __init__(self, size: int, eps: float = 1e-6, unit_offset: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size) if unit_offset else torch.ones(size))
        self.eps = eps
        self.unit_offset = unit_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.float32 and not self.unit_offset:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # fused where the backend can
        x = F.rms_norm(x.float(), self.weight.shape, None, self.eps)
        if self.unit_offset:
            # Gemma scales in float32 before the cast back
            return (x * (1.0 + self.weight.float())).to(dtype)
        return self.weight * x.to(dtype)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight) if self.unit_offset else nn.init.ones_(self.weight)


def build_norm(config: Config, size: int) -> nn.Module:
    if config.norm_class_name == "RMSNorm":
        return RMSNorm(size, eps=config.norm_eps, unit_offset=config.norm_unit_offset)
    return nn.LayerNorm(size, eps=config.norm_eps)


# --- rotary position embedding ---------------------------------------------------------------
def rope_inv_freq(n_elem: int, base: float, scaling: Optional[dict], context_length: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (n_elem // 2,) and the factor cos/sin are multiplied by."""
    inv_freq = 1.0 / (base ** (torch.arange(0, n_elem, 2, dtype=torch.int64).float() / n_elem))
    if scaling is None:
        return inv_freq, 1.0
    kind = scaling["type"]
    if kind == "linear":
        return inv_freq / scaling["factor"], 1.0
    if kind == "llama3":
        # Llama 3.1: long wavelengths are slowed down by `factor`, short ones kept, a smooth ramp between.
        factor, orig = scaling["factor"], scaling["original_max_seq_len"]
        low_wavelen = orig / scaling["low_freq_factor"]
        high_wavelen = orig / scaling["high_freq_factor"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (orig / wavelen - scaling["low_freq_factor"]) / (scaling["high_freq_factor"] - scaling["low_freq_factor"])
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, smoothed, scaled), 1.0
    if kind == "longrope":
        # Phi-3/4 "LongRoPE": per-frequency stretch factors; the short set while the context fits
        # the original length, the long set beyond.
        orig = scaling["original_max_seq_len"]
        ext = scaling["long_factor"] if context_length > orig else scaling["short_factor"]
        ext = torch.tensor(ext, dtype=torch.float32)
        inv_freq = 1.0 / (ext * base ** (torch.arange(0, n_elem, 2, dtype=torch.int64).float() / n_elem))
        attention_factor = scaling.get("attention_factor")
        if attention_factor is None:
            factor = scaling.get("factor", 1.0)
            attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        return inv_freq, attention_factor
    raise ValueError(f"unknown rope scaling {kind!r}")


def build_rope_cache(
    seq_len: int,
    n_elem: int,
    base: float,
    scaling: Optional[dict],
    device: Optional[torch.device] = None,
    context_length: Optional[int] = None,
) -> Rope:
    """cos, sin of shape (seq_len, n_elem) in float32; halves repeated (the rotate-half layout HF
    checkpoints use: no weight permutation needed).

    context_length: the length LongRoPE picks its factor set by (default seq_len).
    """
    inv_freq, attention_factor = rope_inv_freq(n_elem, base, scaling, seq_len if context_length is None else context_length)
    positions = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(positions, inv_freq.to(device))  # (seq_len, n_elem // 2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (seq_len, n_elem)
    return emb.cos() * attention_factor, emb.sin() * attention_factor


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.size(-1)` dims of x (B, T, heads, hs); the rest pass through."""
    n_elem = cos.size(-1)
    if n_elem < x.size(-1):
        return torch.cat((apply_rope(x[..., :n_elem], cos, sin), x[..., n_elem:]), dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


# --- KV cache --------------------------------------------------------------------------------
class KVCache(nn.Module):
    """Static per-layer cache of keys and values: (B, n_query_groups, max_seq_length, head_size)."""

    def __init__(self, k_shape: tuple[int, ...], v_shape: tuple[int, ...], device=None, dtype=None) -> None:
        super().__init__()
        self.register_buffer("k", torch.zeros(k_shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(v_shape, device=device, dtype=dtype), persistent=False)

    def forward(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, G, T, hs) at input_pos ((T,) or (B, T)); return the cache's first B rows.

        B may be less than the cache's rows: a batched server packs its busy requests into the
        first rows and runs only those (a view, no copy).
        """
        cache_k, cache_v = self.k, self.v
        if k.size(0) != cache_k.size(0):
            cache_k, cache_v = cache_k[: k.size(0)], cache_v[: k.size(0)]
        if input_pos.dim() == 1:
            cache_k.index_copy_(2, input_pos, k)
            cache_v.index_copy_(2, input_pos, v)
        else:
            index = input_pos[:, None, :, None].expand(-1, k.size(1), -1, k.size(3))
            cache_k.scatter_(2, index, k)
            cache_v.scatter_(2, index, v)
        return cache_k, cache_v

    def reset_parameters(self) -> None:
        self.k.zero_()
        self.v.zero_()


# --- attention -------------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    """Multi-head attention with grouped keys/values.

    GQA with n_head=8, n_query_groups=2: query heads 0-3 read kv group 0, heads 4-7 group 1.

        qkv(x) -> [ q0 q1 q2 q3 q4 q5 q6 q7 | k0 k1 | v0 v1 ]   (head_size columns each)
    """

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__()
        self.config = config
        self.block_idx = block_idx
        hs = config.head_size
        self.qkv = nn.Linear(
            config.n_embd, (config.n_head + 2 * config.n_query_groups) * hs, bias=config.bias or config.attn_bias
        )
        self.proj = nn.Linear(config.n_head * hs, config.n_embd, bias=config.bias)
        if config.norm_qk:
            self.norm_q = RMSNorm(hs, eps=config.norm_eps, unit_offset=config.norm_unit_offset)
            self.norm_k = RMSNorm(hs, eps=config.norm_eps, unit_offset=config.norm_unit_offset)
        self.kv_cache: Optional[KVCache] = None
        self.sliding_window = config.sliding_window_size if config.is_sliding(block_idx) else None
        scalar = config.attention_scores_scalar or hs
        self.scale = 1.0 / math.sqrt(scalar)

    def forward(
        self,
        x: torch.Tensor,
        rope: Rope,
        mask: Optional[torch.Tensor],
        input_pos: Optional[torch.Tensor] = None,
        input_pos_maxp1: Optional[int] = None,
    ) -> torch.Tensor:
        """x (B, T, n_embd); mask None (= causal over T) or bool (B|1, 1, T, S), True = attend."""
        B, T, _ = x.shape
        cfg = self.config
        hs, H, G = cfg.head_size, cfg.n_head, cfg.n_query_groups
        qkv = self.qkv(x).view(B, T, H + 2 * G, hs)  # heads: [q * H | k * G | v * G]
        if cfg.norm_qk:
            q, k, v = qkv.split((H, G, G), dim=2)
            qk = torch.cat((self.norm_q(q), self.norm_k(k)), dim=2)
        else:
            qk, v = qkv.split((H + G, G), dim=2)
        cos, sin = rope
        qk = apply_rope(qk, cos, sin)  # queries and keys in one go: (B, T, H + G, hs)
        q, k = qk.split((H, G), dim=2)
        q = q.transpose(1, 2)  # (B, H, T, hs)
        k = k.transpose(1, 2)  # (B, G, T, hs)
        v = v.transpose(1, 2)  # (B, G, T, hs)

        if input_pos is not None:
            if self.kv_cache is None:
                raise RuntimeError("input_pos needs a KV cache: call model.set_kv_cache(batch_size) first")
            k, v = self.kv_cache(input_pos, k, v)  # (B, G, max_seq_length, hs)
            if input_pos_maxp1 is not None:  # keys past the furthest position are still empty
                start = 0
                if self.sliding_window is not None and T == 1 and input_pos.dim() == 1:
                    # one token, one position: the window is a slice, no mask needed (see GPT._mask)
                    start = max(0, input_pos_maxp1 - self.sliding_window)
                k, v = k[:, :, start:input_pos_maxp1], v[:, :, start:input_pos_maxp1]

        y = self.scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, hs)
        y = y.transpose(1, 2).reshape(B, T, H * hs)
        return self.proj(y)

    def scaled_dot_product_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """q (B, H, T, hs), k/v (B, G, S, hs), mask None (causal over T) or (B|1, 1, T, S) -> (B, H, T, hs)."""
        B, H, T, hs = q.shape
        G, S = k.size(1), k.size(2)
        cap = self.config.attention_logit_softcapping
        if mask is None and T > 1:
            if cap is None:  # causal prefill / training: the fused causal kernel
                if H != G and not _SDPA_GQA:
                    k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
                gqa = {"enable_gqa": True} if H != G else {}
                if _train_attention_in_float32(q):
                    with torch.autocast("cpu", enabled=False):
                        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True,
                                                           scale=self.scale, **gqa)
                    return y.to(v.dtype)
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, **gqa)
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)[None, None]
        # (mask None with T == 1: one new token sees every key it is given.)
        R = H // G
        if R > 1:
            # GQA without copying the cache: the R query heads sharing a kv group become R * T rows
            # of one "head" per group.   q (B, H, T, hs) -> (B, G, R*T, hs);  mask -> (b, 1, R*T, S)
            q = q.reshape(B, G, R * T, hs)
            if mask is not None:
                b = mask.size(0)
                mask = mask.unsqueeze(2).expand(b, 1, R, T, S).reshape(b, 1, R * T, S)
        if cap is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        else:
            # Gemma 2 squashes the scores with tanh before the softmax: no fused kernel does that.
            scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, G, R*T, S)
            scores = torch.tanh(scores / cap) * cap
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            y = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v
        return y.view(B, H, T, hs)


# --- MLPs ------------------------------------------------------------------------------------
class GptNeoxMLP(nn.Module):
    """proj(gelu(fc(x)))"""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)
        self.approximate = config.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class LLaMAMLP(nn.Module):
    """proj(silu(fc_1(x)) * fc_2(x)) -- SwiGLU."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.fc_2 = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.silu(self.fc_1(x)) * self.fc_2(x))


class GemmaMLP(LLaMAMLP):
    """proj(gelu_tanh(fc_1(x)) * fc_2(x)) -- GeGLU."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.approximate = config.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc_1(x), approximate=self.approximate) * self.fc_2(x))


# --- block -----------------------------------------------------------------------------------
class Block(nn.Module):
    """One transformer layer.

    sequential:  x = x + post_attention_norm(attn(norm_1(x)));  x = x + post_mlp_norm(mlp(norm_2(x)))
    parallel:    x = x + attn(norm_1(x)) + mlp(norm_2(x))          (GPT-NeoX)
    """

    attention_class: type[CausalSelfAttention] = CausalSelfAttention
    mlp_classes: dict[str, type[nn.Module]] = {"GptNeoxMLP": GptNeoxMLP, "LLaMAMLP": LLaMAMLP, "GemmaMLP": GemmaMLP}

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_type = config.layer_types[block_idx]
        self.norm_1 = build_norm(config, config.n_embd)
        self.attn = self.attention_class(config, block_idx)
        self.post_attention_norm = build_norm(config, config.n_embd) if config.post_attention_norm else None
        self.norm_2 = build_norm(config, config.n_embd)
        self.mlp = self.mlp_classes[config.mlp_class_name](config)
        self.post_mlp_norm = build_norm(config, config.n_embd) if config.post_mlp_norm else None

    def forward(
        self,
        x: torch.Tensor,
        rope: Rope,
        mask: Optional[torch.Tensor],
        input_pos: Optional[torch.Tensor] = None,
        input_pos_maxp1: Optional[int] = None,
    ) -> torch.Tensor:
        h = self.attn(self.norm_1(x), rope, mask, input_pos, input_pos_maxp1)
        if self.post_attention_norm is not None:
            h = self.post_attention_norm(h)
        if self.config.parallel_residual:
            return x + h + self.mlp(self.norm_2(x))
        x = x + h
        h = self.mlp(self.norm_2(x))
        if self.post_mlp_norm is not None:
            h = self.post_mlp_norm(h)
        return x + h


# --- the model -------------------------------------------------------------------------------
class GPT(nn.Module):
    block_class: type[Block] = Block

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=config.lm_head_bias)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                h=nn.ModuleList(self.block_class(config, i) for i in range(config.n_layer)),
                ln_f=build_norm(config, config.n_embd),
            )
        )
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self._max_seq_length = config.block_size
        self._rope_device: Optional[torch.device] = None
        self._ropes: dict[str, dict[str, Rope]] = {}

    # -- sequence length and caches --
    @property
    def max_seq_length(self) -> int:
        """Longest sequence the rope cache (and a new KV cache) covers; at most block_size."""
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if value > self.config.block_size:
            raise ValueError(f"max_seq_length {value} exceeds the model's block_size {self.config.block_size}")
        self._max_seq_length = value
        self._ropes = {}  # rebuilt lazily on the next forward, on the input's device

    def _rope_caches(self, device: torch.device, seq_len: int) -> dict[str, Rope]:
        """cos/sin per layer type, (max_seq_length, rope_n_elem) float32; built once per device/length.

        LongRoPE (Phi-3/4) has two sets of frequencies; like transformers we use the short set while
        the sequence (1 + the largest position) fits the original context and the long one beyond.
        """
        cfg = self.config
        variant = "short"
        if cfg.rope_scaling and cfg.rope_scaling["type"] == "longrope" and seq_len > cfg.rope_scaling["original_max_seq_len"]:
            variant = "long"
        if self._rope_device != device:
            self._ropes, self._rope_device = {}, device
        if variant not in self._ropes:
            n = self._max_seq_length
            # rope_inv_freq picks the LongRoPE set from the length it is given
            length_for_factors = n if variant == "long" else 0
            full = build_rope_cache(n, cfg.rope_n_elem, cfg.rope_base, cfg.rope_scaling, device, length_for_factors)
            ropes = {"full_attention": full, "sliding_attention": full}
            if cfg.rope_local_base is not None:
                ropes["sliding_attention"] = build_rope_cache(n, cfg.rope_n_elem, cfg.rope_local_base, None, device)
            # (S, n) -> (S, 1, n): indexing by positions then broadcasts over heads
            ropes = {kind: (cos.unsqueeze(1), sin.unsqueeze(1)) for kind, (cos, sin) in ropes.items()}
            self._ropes[variant] = ropes
        return self._ropes[variant]

    def set_kv_cache(
        self,
        batch_size: int,
        max_seq_length: Optional[int] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        """Allocate a static KV cache per layer (zeros); needed before calling with input_pos."""
        if max_seq_length is not None and max_seq_length != self._max_seq_length:
            self.max_seq_length = max_seq_length
        param = self.transformer.wte.weight  # (lm_head may hold quantized weights: --quantize)
        device = device or param.device
        dtype = dtype or param.dtype
        cfg = self.config
        shape = (batch_size, cfg.n_query_groups, self._max_seq_length, cfg.head_size)
        for block in self.transformer.h:
            block.attn.kv_cache = KVCache(shape, shape, device=device, dtype=dtype)
        # Build the rope tables now rather than lazily in the first forward: under torch.compile a
        # graph traced while they did not exist yet guards on that and is recompiled on the next
        # request (seconds per request on a CPU).
        self._rope_caches(torch.device(device), 0)

    def clear_kv_cache(self) -> None:
        for block in self.transformer.h:
            block.attn.kv_cache = None

    # -- weights --
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Like nn.Module's; a tied lm_head may be absent (it is wte) and stays tied after `assign`."""
        if self.config.tie_embeddings and "lm_head.weight" not in state_dict and "transformer.wte.weight" in state_dict:
            state_dict = {**state_dict, "lm_head.weight": state_dict["transformer.wte.weight"]}
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        return result

    def _init_weights(self, module: nn.Module) -> None:
        """Small normal init (std 0.02) for Linear/Embedding, as GPT-2 and LitGPT do; for pretraining."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (RMSNorm, nn.LayerNorm)):
            module.reset_parameters()

    def reset_parameters(self) -> None:
        self.apply(self._init_weights)

    # -- forward --
    def forward(
        self,
        idx: torch.Tensor,
        input_pos: Optional[torch.Tensor] = None,
        input_pos_maxp1: Optional[int] = None,
        last_token_only: bool = False,
        output_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, padded_vocab_size).

        input_pos: None for a plain causal pass over idx (training), else the positions of the T
        tokens -- (T,) shared by all rows (ascending), or (B, T) per row -- with a KV cache.
        input_pos_maxp1: 1 + the largest position, if the caller knows it (saves a device sync).
        last_token_only: compute logits for the last position only (B, 1, V) -- what decoding needs.
        output_index: (B,) the one position per row to compute logits for (B, 1, V): each row's
            last real token when rows are right-padded to different lengths (batched serving).
        """
        B, T = idx.shape
        cfg = self.config
        if input_pos is None:
            if T > self._max_seq_length:
                raise ValueError(f"sequence of length {T} exceeds max_seq_length {self._max_seq_length}")
            positions = torch.arange(T, device=idx.device)
            per_row, maxp1, prefill = False, T, True
        else:
            positions = input_pos
            per_row = input_pos.dim() == 2
            maxp1 = input_pos_maxp1 if input_pos_maxp1 is not None else int(input_pos.max()) + 1
            # positions 0..T-1 with nothing cached before: plain causal attention over idx
            prefill = not per_row and maxp1 == T

        ropes = self._rope_caches(idx.device, maxp1)
        layer_ropes, masks = {}, {}
        for kind in set(cfg.layer_types):
            cos, sin = ropes[kind]
            if per_row:  # (B, T, 1, n)
                cos, sin = cos[positions], sin[positions]
            elif prefill:
                cos, sin = cos[:T], sin[:T]
            else:
                cos, sin = cos.index_select(0, positions), sin.index_select(0, positions)
            dtype = self.transformer.wte.weight.dtype  # the model's dtype (lm_head's may be quantized)
            layer_ropes[kind] = (cos.to(dtype), sin.to(dtype))
            masks[kind] = self._mask(kind, positions, maxp1, prefill)

        x = self.transformer.wte(idx)  # (B, T, n_embd)
        if cfg.scale_embeddings:
            x = x * torch.tensor(cfg.n_embd**0.5, dtype=x.dtype)
        for block in self.transformer.h:
            kind = block.layer_type
            x = block(x, layer_ropes[kind], masks[kind], input_pos, maxp1 if input_pos is not None else None)
        if last_token_only:
            x = x[:, -1:]
        elif output_index is not None:
            x = x[torch.arange(B, device=x.device), output_index].unsqueeze(1)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, padded_vocab_size)
        if cfg.final_logit_softcapping is not None:
            cap = cfg.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _mask(self, kind: str, positions: torch.Tensor, maxp1: int, prefill: bool) -> Optional[torch.Tensor]:
        """Bool mask (1|B, 1, T, maxp1), True = may attend; None = plain causal (SDPA's is_causal)."""
        window = self.config.sliding_window_size if kind == "sliding_attention" else None
        if window is not None and window >= maxp1:
            window = None  # the window never cuts anything off
        T = positions.size(-1)
        if T == 1 and positions.dim() == 1:
            return None  # one new token sees every key the attention passes it (sliding: a slice)
        if window is None and prefill:
            return None
        key_pos = torch.arange(maxp1, device=positions.device)
        query_pos = positions.unsqueeze(-1)  # (T, 1) or (B, T, 1)
        mask = key_pos <= query_pos  # (T, S) or (B, T, S)
        if window is not None:
            mask &= query_pos - key_pos < window
        return mask.unsqueeze(-3) if mask.dim() == 3 else mask[None, None]
