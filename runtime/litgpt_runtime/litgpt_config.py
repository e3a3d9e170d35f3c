"""LitGPT's `model_config.yaml` <-> our `Config` (no torch import, no import of `config`).

LitGPT 0.5.13 writes every field of its `Config` dataclass into `model_config.yaml`, ~50 of them,
nearly all at values that switch a feature off. `from_litgpt` reads such a file: a field that
describes what our model does maps onto our field; a field at its neutral value is dropped
silently; a field asking for something our model does not implement (mixture of experts, latent
attention, interleaved RoPE, ...) stops with one line naming the field, its value and what is
supported. `to_litgpt` writes our config in LitGPT's form, every field present, so that
`litgpt.Config.from_file` of LitGPT 0.5.13 builds the same network.

Facts about LitGPT that matter here (litgpt/config.py and litgpt/model.py of 0.5.13):
- its defaults differ from ours (`bias`, `parallel_residual` true; `rotary_percentage` 0.25), so a
  hand-written LitGPT file that leaves them out means LitGPT's defaults;
- Gemma's RMSNorm adds 1 to its weight when "Gemma" is in `name`; there is no tie flag: LitGPT
  checkpoints always hold `lm_head.weight`;
- `rope_condense_ratio` r divides positions by r, which is linear RoPE scaling by r;
- `sliding_window_indices` / `rope_indices` (1 = sliding window / local RoPE base per layer) are
  our `layer_types`.
"""

from __future__ import annotations

from typing import Any, Optional

from litgpt_runtime.errors import UserError

# LitGPT 0.5.13's Config fields with their defaults (litgpt/config.py), in its order.
LITGPT_DEFAULTS: dict[str, Any] = {
    "name": "", "hf_config": {}, "block_size": 4096, "n_layer": 16, "n_embd": 4096, "vocab_size": 50254,
    "padding_multiple": 512, "padded_vocab_size": None, "norm_class_name": "LayerNorm", "norm_eps": 1e-5,
    "norm_qk": False, "norm_qk_type": "default", "post_attention_norm": False, "post_mlp_norm": False,
    "parallel_residual": True, "shared_attention_norm": False, "n_head": 32, "head_size": None,
    "n_query_groups": None, "attn_bias": False, "attention_scores_scalar": None, "sliding_window_size": None,
    "sliding_window_indices": None, "attention_logit_softcapping": None, "rope_base": 10000,
    "rotary_percentage": 0.25, "rope_condense_ratio": 1, "rope_adjustments": None, "rope_interleave": False,
    "intermediate_size": None, "moe_intermediate_size": None, "bias": True, "mlp_class_name": "GptNeoxMLP",
    "gelu_approximate": "none", "n_expert": 0, "n_shared_expert": None, "n_expert_groups": None,
    "n_topk_groups": None, "n_topk_scores_per_group": None, "n_expert_per_token": 0,
    "first_k_dense_replace": None, "routed_scaling_factor": 1.0, "norm_topk_prob": False,
    "scale_embeddings": False, "lm_head_bias": False, "final_logit_softcapping": None, "norm_1": True,
    "norm_2": True, "latent_attention": None, "rope_local_base_freq": None, "rope_indices": None,
}

# Fields that mean the same in both configs.
SAME = (
    "name", "block_size", "n_layer", "n_embd", "vocab_size", "padded_vocab_size", "norm_class_name", "norm_eps",
    "norm_qk", "post_attention_norm", "post_mlp_norm", "parallel_residual", "n_head", "head_size",
    "n_query_groups", "attn_bias", "attention_scores_scalar", "sliding_window_size",
    "attention_logit_softcapping", "rope_base", "rotary_percentage", "intermediate_size", "bias",
    "mlp_class_name", "gelu_approximate", "scale_embeddings", "lm_head_bias", "final_logit_softcapping",
)

# Fields only a mixture-of-experts MLP reads: with no experts they change nothing.
MOE_ONLY = ("moe_intermediate_size", "n_shared_expert", "n_expert_groups", "n_topk_groups",
            "n_topk_scores_per_group", "n_expert_per_token", "first_k_dense_replace", "routed_scaling_factor",
            "norm_topk_prob")

# Our fields that LitGPT's Config does not have: their presence says a file is ours.
OURS_ONLY = ("hf_repo_id", "family", "norm_unit_offset", "tie_embeddings", "rope_scaling", "rope_local_base",
             "layer_types")


def is_litgpt_config(data: dict[str, Any]) -> bool:
    """True for a file in LitGPT's form: a field only LitGPT has, and none only we have."""
    litgpt_only = set(LITGPT_DEFAULTS) - set(SAME)
    return bool(set(data) & litgpt_only) and not set(data) & set(OURS_ONLY)


def _unsupported(field: str, value: Any, supported: str) -> UserError:
    return UserError(f"LitGPT model config field {field}={value!r} is not supported here ({supported}).")


def _indicators(values: Optional[list[int]], n_layer: int, field: str) -> list[int]:
    """LitGPT's per-layer 0/1 lists: all 1 when absent, the first n_layer entries when longer."""
    if values is None:
        return [1] * n_layer
    if len(values) < n_layer or any(v not in (0, 1) for v in values):
        raise _unsupported(field, values, f"a list of at least n_layer={n_layer} zeros and ones")
    return [int(v) for v in values[:n_layer]]


def from_litgpt(data: dict[str, Any]) -> dict[str, Any]:
    """Our Config's keyword arguments for the fields of a LitGPT `model_config.yaml`."""
    # LitGPT's LoRA/adapter Config subclasses add lora_* / adapter_* fields; the weights and
    # hyperparameters.yaml say what a finetune holds, so the base architecture is all we read.
    data = {k: v for k, v in data.items() if not k.startswith(("lora_", "adapter_"))}
    unknown = sorted(set(data) - set(LITGPT_DEFAULTS))
    if unknown:
        raise UserError(f"Unknown model config field(s): {', '.join(unknown)} (neither ours nor LitGPT 0.5.13's).")
    lit = {**LITGPT_DEFAULTS, **data}
    _check_supported(lit)

    out = {key: lit[key] for key in SAME}
    n_layer = lit["n_layer"]
    hf = lit["hf_config"] or {}
    if not out["name"]:
        out["name"] = hf.get("name", "")
    if hf.get("org") and hf.get("name"):
        out["hf_repo_id"] = f"{hf['org']}/{hf['name']}"
    if out["padded_vocab_size"] is None:
        multiple = lit["padding_multiple"]
        out["padded_vocab_size"] = -(-lit["vocab_size"] // multiple) * multiple
    else:  # LitGPT never keeps more vocabulary than rows
        out["vocab_size"] = min(out["vocab_size"], out["padded_vocab_size"])
    if out["intermediate_size"] is None and out["mlp_class_name"] != "GptNeoxMLP":
        raise UserError(f"LitGPT model config field intermediate_size is required for {out['mlp_class_name']}.")
    out["norm_unit_offset"] = out["norm_class_name"] == "RMSNorm" and "Gemma" in (lit["name"] or "")
    out["tie_embeddings"] = False  # LitGPT checkpoints hold lm_head.weight; a converter may tie them

    out["rope_scaling"] = _rope_scaling(lit)
    sliding = _indicators(lit["sliding_window_indices"], n_layer, "sliding_window_indices") \
        if lit["sliding_window_size"] is not None else [0] * n_layer
    out["layer_types"] = ["sliding_attention" if s else "full_attention" for s in sliding]
    if lit["rope_local_base_freq"] is not None:
        local = _indicators(lit["rope_indices"], n_layer, "rope_indices")
        if local != sliding:
            raise _unsupported("rope_indices", lit["rope_indices"],
                               "the local RoPE base only on the sliding-window layers, as in Gemma 3")
        out["rope_local_base"] = float(lit["rope_local_base_freq"])
    out["family"] = guess_family(out, lit["name"] or "")
    return out


def _check_supported(lit: dict[str, Any]) -> None:
    if lit["n_expert"] or lit["mlp_class_name"] == "LLaMAMoE":
        field = "n_expert" if lit["n_expert"] else "mlp_class_name"
        raise _unsupported(field, lit[field], "dense MLPs only: n_expert=0 with GptNeoxMLP, LLaMAMLP or GemmaMLP")
    if lit["latent_attention"]:
        raise _unsupported("latent_attention", lit["latent_attention"], "grouped-query attention only: null")
    for field, neutral, supported in (
        ("norm_qk_type", "default", "per-head query/key norms only: default"),
        ("shared_attention_norm", False, "a norm per attention and MLP: false"),
        ("norm_1", True, "a norm before attention: true"),
        ("norm_2", True, "a norm before the MLP: true"),
        ("rope_interleave", False, "rotate-half RoPE only: false"),
    ):
        if lit[field] != neutral:
            raise _unsupported(field, lit[field], supported)
    if lit["norm_class_name"] == "LayerNorm" and "OLMo" in (lit["name"] or ""):
        raise _unsupported("name", lit["name"], "LitGPT gives OLMo a LayerNorm without weights, which we lack")
    if lit["norm_class_name"] not in ("LayerNorm", "RMSNorm"):
        raise _unsupported("norm_class_name", lit["norm_class_name"], "LayerNorm or RMSNorm")
    if lit["gelu_approximate"] not in ("none", "tanh"):
        raise _unsupported("gelu_approximate", lit["gelu_approximate"], "none or tanh")


def _rope_scaling(lit: dict[str, Any]) -> Optional[dict[str, Any]]:
    adjust = lit["rope_adjustments"] or {}
    ratio = lit["rope_condense_ratio"]
    if ratio <= 0:
        raise _unsupported("rope_condense_ratio", ratio, "a positive number")
    if "beta_fast" in adjust or "beta_slow" in adjust:
        raise _unsupported("rope_adjustments", adjust, "Llama 3 ({factor, low_freq_factor, high_freq_factor, "
                           "original_max_seq_len}) or linear ({factor}) RoPE scaling; not YaRN")
    if "low_freq_factor" in adjust or "high_freq_factor" in adjust:
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_seq_len")
        missing = [k for k in keys if k not in adjust]
        if missing:
            raise _unsupported("rope_adjustments", adjust, f"Llama 3 scaling needs {', '.join(missing)} too")
        if ratio != 1:
            raise _unsupported("rope_condense_ratio", ratio, "1 together with Llama 3 RoPE scaling")
        if lit["rope_local_base_freq"] is not None:
            raise _unsupported("rope_local_base_freq", lit["rope_local_base_freq"], "null with Llama 3 RoPE scaling")
        return {"type": "llama3", **{k: adjust[k] for k in keys}}
    factor = float(adjust.get("factor", 1.0)) * ratio  # linear: positions / r == frequencies / r
    if factor == 1.0:
        return None
    if ratio != 1 and lit["rope_local_base_freq"] is not None:
        # LitGPT condenses the local layers' positions too; our local layers are never scaled
        raise _unsupported("rope_condense_ratio", ratio, "1 when rope_local_base_freq is set")
    return {"type": "linear", "factor": factor}


def guess_family(config: dict[str, Any], name: str) -> str:
    """Which Hugging Face layout the weights follow (used only by `convert_to_hf`), judged from
    the architecture and name; `Config.from_file` prefers a known preset's family."""
    lowered = name.lower()
    if config["mlp_class_name"] == "GemmaMLP":
        return "gemma3_text" if config["norm_qk"] else "gemma2"
    if config["mlp_class_name"] == "GptNeoxMLP":
        return "gpt_neox"
    if any(tag in lowered for tag in ("phi-3", "phi3", "phi-4", "phi4")):
        return "phi3"
    if "mistral" in lowered:
        return "mistral"
    if config["norm_qk"]:
        return "qwen3"
    if config["attn_bias"]:
        return "qwen2"
    return "llama"


def to_litgpt(config: Any) -> dict[str, Any]:
    """Every LitGPT 0.5.13 `model_config.yaml` field for our `Config` (UserError for what LitGPT
    cannot express)."""
    out = dict(LITGPT_DEFAULTS)
    out.update({key: getattr(config, key) for key in SAME})
    name = config.name or (config.hf_repo_id.split("/")[-1] if config.hf_repo_id else "")
    if config.norm_unit_offset and config.norm_class_name == "RMSNorm" and "Gemma" not in name:
        # LitGPT decides the +1 of Gemma's RMSNorm by the name alone
        name = name.replace("gemma", "Gemma", 1) if "gemma" in name else f"Gemma-{name}"
    elif not config.norm_unit_offset and "Gemma" in name and config.norm_class_name == "RMSNorm":
        name = name.replace("Gemma", "gemma")
    out["name"] = name
    if config.hf_repo_id:
        org, _, repo = config.hf_repo_id.partition("/")
        out["hf_config"] = {"org": org, "name": repo}
    # LitGPT types these as int; keep integral values integral so the file reads naturally
    for key in ("rope_base", "attention_scores_scalar"):
        if isinstance(out[key], float) and out[key].is_integer():
            out[key] = int(out[key])
    scaling = config.rope_scaling
    if scaling is not None:
        kind = scaling.get("type")
        if kind == "llama3":
            out["rope_adjustments"] = {k: scaling[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                                               "original_max_seq_len")}
        elif kind == "linear":
            out["rope_adjustments"] = {"factor": scaling["factor"]}
        else:
            raise UserError(f"LitGPT 0.5.13 has no {kind!r} RoPE scaling (rope_scaling={scaling}); this model "
                            "cannot be written in LitGPT's format.")
    sliding = [1 if t == "sliding_attention" else 0 for t in config.layer_types]
    if config.sliding_window_size is not None:
        out["sliding_window_indices"] = sliding
    else:
        out["sliding_window_size"] = None
    if config.rope_local_base is not None:
        out["rope_local_base_freq"] = config.rope_local_base
        out["rope_indices"] = sliding
    return out
