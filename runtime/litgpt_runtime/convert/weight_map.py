"""Hugging Face <-> our state-dict keys, per family, as small tables plus the few fused tensors.

A *recipe* says how one of our tensors is made from Hugging Face tensors (or the reverse):
`(target_name, [source_names], combine)`. Converters run recipes one at a time, so no more than
one layer's worth of tensors is ever held in memory.

Fused tensors:
- our `attn.qkv` = cat(q_proj, k_proj, v_proj) (rows: all q heads, all k heads, all v heads);
- GPT-NeoX `query_key_value` interleaves per head ([q_h, k_h, v_h] for each head h);
- Phi-3 `qkv_proj` already is our layout; its `gate_up_proj` = cat(our fc_1, our fc_2).
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, NamedTuple

import torch

from litgpt_runtime.config import Config

Combine = Callable[[list[torch.Tensor]], torch.Tensor]


class Recipe(NamedTuple):
    target: str
    sources: list[str]
    combine: Combine


def _same(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0]


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(tensors, dim=0)


def _part(index: int, parts: int) -> Combine:
    return lambda tensors: tensors[0].chunk(parts, dim=0)[index]


def _rows(start: int, stop: int) -> Combine:
    return lambda tensors: tensors[0][start:stop]


def _neox_to_ours(n_head: int) -> Combine:
    # (H * 3 * hs, ...) as (H, 3, hs, ...) -> (3, H, hs, ...)
    def combine(tensors: list[torch.Tensor]) -> torch.Tensor:
        t = tensors[0]
        return t.reshape(n_head, 3, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)

    return combine


def _ours_to_neox(n_head: int) -> Combine:
    def combine(tensors: list[torch.Tensor]) -> torch.Tensor:
        t = tensors[0]
        return t.reshape(3, n_head, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)

    return combine


# --- per-layer tables: HF suffix -> our suffix (1:1 renames) -----------------------------------
_LLAMA_LAYER = {
    "input_layernorm.weight": "norm_1.weight",
    "post_attention_layernorm.weight": "norm_2.weight",
    "self_attn.o_proj.weight": "attn.proj.weight",
    "self_attn.q_norm.weight": "attn.norm_q.weight",
    "self_attn.k_norm.weight": "attn.norm_k.weight",
    "mlp.gate_proj.weight": "mlp.fc_1.weight",
    "mlp.up_proj.weight": "mlp.fc_2.weight",
    "mlp.down_proj.weight": "mlp.proj.weight",
}
_GEMMA_LAYER = {
    **_LLAMA_LAYER,
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "norm_2.weight",
    "post_feedforward_layernorm.weight": "post_mlp_norm.weight",
}
_PHI3_LAYER = {k: v for k, v in _LLAMA_LAYER.items() if not k.startswith("mlp.gate") and not k.startswith("mlp.up")}
_NEOX_LAYER = {
    f"{hf}.{p}": f"{ours}.{p}"
    for hf, ours in [
        ("input_layernorm", "norm_1"), ("post_attention_layernorm", "norm_2"), ("attention.dense", "attn.proj"),
        ("mlp.dense_h_to_4h", "mlp.fc"), ("mlp.dense_4h_to_h", "mlp.proj"),
    ]
    for p in ("weight", "bias")
}


def _tables(family: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(HF layer prefix, top-level renames, per-layer renames)."""
    if family == "gpt_neox":
        top = {
            "gpt_neox.embed_in.weight": "transformer.wte.weight",
            "gpt_neox.final_layer_norm.weight": "transformer.ln_f.weight",
            "gpt_neox.final_layer_norm.bias": "transformer.ln_f.bias",
            "embed_out.weight": "lm_head.weight",
        }
        return "gpt_neox.layers", top, _NEOX_LAYER
    top = {
        "model.embed_tokens.weight": "transformer.wte.weight",
        "model.norm.weight": "transformer.ln_f.weight",
        "lm_head.weight": "lm_head.weight",
    }
    layer = {"gemma2": _GEMMA_LAYER, "gemma3_text": _GEMMA_LAYER, "phi3": _PHI3_LAYER}.get(family, _LLAMA_LAYER)
    return "model.layers", top, layer


# Buffers and multimodal parts that carry no weights of the language model.
_IGNORED = re.compile(
    r"(rotary_emb\.inv_freq|attention\.bias$|attention\.masked_bias$|^vision_tower\.|^multi_modal_projector\.)"
)
_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."))


def normalize_hf_key(key: str) -> str:
    """Strip the multimodal wrappers' prefixes (Gemma 3 4B+) so text weights look like a CausalLM's."""
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    if key.startswith("model.vision_tower.") or key.startswith("model.multi_modal_projector."):
        return key[len("model."):]
    return key


def hf_to_ours(config: Config, hf_keys: Iterable[str]) -> list[Recipe]:
    """Recipes building each of our tensors from normalized HF keys (raises on unknown keys)."""
    hf_keys = [k for k in hf_keys if not _IGNORED.search(k)]
    present = set(hf_keys)
    layer_prefix, top, layer = _tables(config.family)
    recipes: list[Recipe] = []
    used: set[str] = set()

    def add(target: str, sources: list[str], combine: Combine = _same) -> None:
        missing = [s for s in sources if s not in present]
        if missing:
            raise KeyError(f"checkpoint lacks {', '.join(missing)} (needed for {target})")
        recipes.append(Recipe(target, sources, combine))
        used.update(sources)

    for hf_name, ours in top.items():
        if ours == "lm_head.weight" and config.tie_embeddings:
            used.add(hf_name)  # some tied checkpoints store a copy; ours keeps wte only
            continue
        if hf_name in present or not hf_name.startswith("lm_head"):
            add(ours, [hf_name])
        elif ours == "lm_head.weight":
            add(ours, ["model.embed_tokens.weight"])  # untied config but no lm_head stored
    for i in range(config.n_layer):
        src, dst = f"{layer_prefix}.{i}.", f"transformer.h.{i}."
        for hf_suffix, our_suffix in layer.items():
            if src + hf_suffix in present:
                add(dst + our_suffix, [src + hf_suffix])
        if config.family == "gpt_neox":
            for p in ("weight", "bias"):
                add(f"{dst}attn.qkv.{p}", [f"{src}attention.query_key_value.{p}"], _neox_to_ours(config.n_head))
        elif config.family == "phi3":
            add(f"{dst}attn.qkv.weight", [f"{src}self_attn.qkv_proj.weight"])
            add(f"{dst}mlp.fc_1.weight", [f"{src}mlp.gate_up_proj.weight"], _part(0, 2))
            add(f"{dst}mlp.fc_2.weight", [f"{src}mlp.gate_up_proj.weight"], _part(1, 2))
        else:
            for p in ("weight", "bias"):
                names = [f"{src}self_attn.{x}_proj.{p}" for x in "qkv"]
                if p == "weight" or names[0] in present:
                    add(f"{dst}attn.qkv.{p}", names, _cat)
    unknown = sorted(present - used)
    if unknown:
        raise KeyError(f"unexpected weights for a {config.family} model: {', '.join(unknown[:5])}")
    return recipes


def ours_to_hf(config: Config, our_keys: Iterable[str]) -> list[Recipe]:
    """Recipes building each HF tensor (CausalLM key names) from our state-dict keys."""
    present = set(our_keys)
    if config.tie_embeddings:
        present.discard("lm_head.weight")
    layer_prefix, top, layer = _tables(config.family)
    recipes: list[Recipe] = []
    for hf_name, ours in top.items():
        if ours in present:
            recipes.append(Recipe(hf_name, [ours], _same))
    hs, H, G = config.head_size, config.n_head, config.n_query_groups
    q_rows, kv_rows = H * hs, G * hs
    for i in range(config.n_layer):
        src, dst = f"transformer.h.{i}.", f"{layer_prefix}.{i}."
        for hf_suffix, our_suffix in layer.items():
            if src + our_suffix in present:
                recipes.append(Recipe(dst + hf_suffix, [src + our_suffix], _same))
        for p in ("weight", "bias"):
            qkv = f"{src}attn.qkv.{p}"
            if qkv not in present:
                continue
            if config.family == "gpt_neox":
                recipes.append(Recipe(f"{dst}attention.query_key_value.{p}", [qkv], _ours_to_neox(H)))
            elif config.family == "phi3":
                recipes.append(Recipe(f"{dst}self_attn.qkv_proj.{p}", [qkv], _same))
            else:
                bounds = {"q": (0, q_rows), "k": (q_rows, q_rows + kv_rows), "v": (q_rows + kv_rows, q_rows + 2 * kv_rows)}
                for x, (a, b) in bounds.items():
                    recipes.append(Recipe(f"{dst}self_attn.{x}_proj.{p}", [qkv], _rows(a, b)))
        if config.family == "phi3":
            recipes.append(Recipe(f"{dst}mlp.gate_up_proj.weight", [f"{src}mlp.fc_1.weight", f"{src}mlp.fc_2.weight"], _cat))
    return recipes
