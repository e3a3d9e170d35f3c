"""Hugging Face `config.json` -> our `Config`, for every supported family.

Reads both the published form (`rope_theta`, `rope_scaling`) and the one newer `transformers`
writes (`rope_parameters`, per layer type for Gemma 3).
"""

from __future__ import annotations

from typing import Any, Optional

from litgpt_runtime.errors import UserError

# model_type -> (family traits). Architectures map onto these model types.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Phi3ForCausalLM": "phi3",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3_text",
    "Gemma3ForConditionalGeneration": "gemma3",  # text weights only
    "GPTNeoXForCausalLM": "gpt_neox",
}
SUPPORTED_FAMILIES = (
    "Llama 2/3.x (incl. SmolLM2, TinyLlama), Mistral, Qwen2.5, Qwen3, Phi-3/Phi-4-mini, Gemma 2, Gemma 3, "
    "Pythia/GPT-NeoX"
)
_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "phi3"}


def family_of(hf_config: dict[str, Any]) -> str:
    """Our family name (HF model_type of the text model) or UserError naming what is supported."""
    model_type = hf_config.get("model_type")
    for arch in hf_config.get("architectures") or []:
        if arch in ARCHITECTURES:
            model_type = ARCHITECTURES[arch]
            break
    if model_type == "gemma3":
        model_type = "gemma3_text"
    if model_type not in set(ARCHITECTURES.values()) | {"gemma3_text"}:
        archs = ", ".join(hf_config.get("architectures") or []) or str(model_type)
        raise UserError(f"Unsupported architecture {archs}. Supported families: {SUPPORTED_FAMILIES}.")
    return model_type


def _rope(hf: dict[str, Any], layer_type: str = "full_attention") -> tuple[float, Optional[dict], float]:
    """(base, our rope_scaling, partial rotary factor) from either config form."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict) and layer_type in params and isinstance(params[layer_type], dict):
        params = params[layer_type]  # Gemma 3 in newer transformers: one entry per layer type
    params = dict(params or hf.get("rope_scaling") or {})
    base = params.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", 1.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    orig = params.get("original_max_position_embeddings", hf.get("original_max_position_embeddings"))
    if kind in ("default", None):
        scaling = None
    elif kind == "llama3":
        scaling = {
            "type": "llama3", "factor": float(params["factor"]), "low_freq_factor": float(params["low_freq_factor"]),
            "high_freq_factor": float(params["high_freq_factor"]), "original_max_seq_len": int(orig),
        }
    elif kind == "linear":
        scaling = {"type": "linear", "factor": float(params["factor"])}
        if scaling["factor"] == 1.0:
            scaling = None
    elif kind == "longrope":
        orig = int(orig or hf["max_position_embeddings"])
        scaling = {
            "type": "longrope", "short_factor": [float(x) for x in params["short_factor"]],
            "long_factor": [float(x) for x in params["long_factor"]], "original_max_seq_len": orig,
            "factor": float(params.get("factor") or hf["max_position_embeddings"] / orig),
        }
        if params.get("attention_factor") is not None:
            scaling["attention_factor"] = float(params["attention_factor"])
    else:
        raise UserError(f"RoPE scaling type {kind!r} is not supported (supported: llama3, linear, longrope).")
    return float(base), scaling, float(partial)


def _gelu_approximate(act: str) -> str:
    if act in ("gelu", "gelu_python"):
        return "none"
    if act in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
        return "tanh"
    raise UserError(f"Activation {act!r} is not supported.")


def config_from_hf(cls: type, hf_config: dict[str, Any], repo_id: str = "") -> Any:
    family = family_of(hf_config)
    hf = hf_config.get("text_config") or hf_config if hf_config.get("model_type") == "gemma3" else hf_config
    if hf is not hf_config:  # multimodal wrapper: hyperparameters live in text_config
        hf = {**hf, "tie_word_embeddings": hf.get("tie_word_embeddings", hf_config.get("tie_word_embeddings", True))}
    n_layer = hf["num_hidden_layers"]
    n_head = hf["num_attention_heads"]
    n_embd = hf["hidden_size"]
    base, scaling, partial = _rope(hf)
    name = repo_id.split("/")[-1] if repo_id else str(hf_config.get("_name_or_path") or family).rstrip("/").split("/")[-1]
    kw: dict[str, Any] = dict(
        name=name, hf_repo_id=repo_id, family=family,
        block_size=hf.get("max_position_embeddings", 2048), vocab_size=hf["vocab_size"], n_layer=n_layer,
        n_embd=n_embd, n_head=n_head, n_query_groups=hf.get("num_key_value_heads") or n_head,
        head_size=hf.get("head_dim") or n_embd // n_head, intermediate_size=hf.get("intermediate_size"),
        rope_base=base, rope_scaling=scaling, rotary_percentage=partial,
    )
    layer_types = hf.get("layer_types")

    if family in _LLAMA_LIKE:
        act = hf.get("hidden_act", "silu")
        if hf.get("mlp_bias") or (family != "qwen2" and hf.get("attention_bias")):
            raise UserError("Linear biases outside q/k/v (attention_bias / mlp_bias) are not supported.")
        kw.update(
            norm_class_name="RMSNorm", norm_eps=hf.get("rms_norm_eps", 1e-6),
            mlp_class_name="LLaMAMLP" if act == "silu" else "GemmaMLP",
            gelu_approximate="none" if act == "silu" else _gelu_approximate(act),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attn_bias=family == "qwen2" or bool(hf.get("attention_bias", False)),
            norm_qk=family == "qwen3",
        )
        window = hf.get("sliding_window")
        if family in ("qwen2", "qwen3"):
            if hf.get("use_sliding_window") and window:
                start = hf.get("max_window_layers", n_layer)
                layer_types = layer_types or ["sliding_attention" if i >= start else "full_attention" for i in range(n_layer)]
            else:
                window, layer_types = None, None
        kw.update(sliding_window_size=window or None)
    elif family in ("gemma2", "gemma3_text"):
        act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
        window = hf.get("sliding_window")
        if layer_types is None and window:
            pattern = 2 if family == "gemma2" else hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6))
            layer_types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layer)]
        kw.update(
            norm_class_name="RMSNorm", norm_unit_offset=True, norm_eps=hf.get("rms_norm_eps", 1e-6),
            mlp_class_name="GemmaMLP", gelu_approximate=_gelu_approximate(act),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)), scale_embeddings=True,
            post_attention_norm=True, post_mlp_norm=True, norm_qk=family == "gemma3_text",
            attn_bias=bool(hf.get("attention_bias", False)),
            attention_scores_scalar=hf.get("query_pre_attn_scalar"),
            attention_logit_softcapping=hf.get("attn_logit_softcapping"),
            final_logit_softcapping=hf.get("final_logit_softcapping"), sliding_window_size=window or None,
        )
        if family == "gemma3_text":
            local_base = hf.get("rope_local_base_freq")
            if local_base is None:
                local_base, _, _ = _rope(hf, "sliding_attention")
            kw.update(rope_local_base=float(local_base))
    elif family == "gpt_neox":
        kw.update(
            norm_class_name="LayerNorm", norm_eps=hf.get("layer_norm_eps", 1e-5), mlp_class_name="GptNeoxMLP",
            gelu_approximate=_gelu_approximate(hf.get("hidden_act", "gelu")),
            bias=bool(hf.get("attention_bias", True)), parallel_residual=bool(hf.get("use_parallel_residual", True)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            intermediate_size=hf.get("intermediate_size") or 4 * n_embd,
        )
        if not kw["bias"]:
            raise UserError("GPT-NeoX models without attention biases are not supported.")
    if kw.get("sliding_window_size") is None:
        layer_types = None
    kw["layer_types"] = list(layer_types) if layer_types else None
    return cls(**kw)
