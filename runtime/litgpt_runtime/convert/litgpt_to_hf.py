"""Export our checkpoint folder as a Hugging Face one (`transformers` loads it).

Weights are streamed tensor by tensor into `model.safetensors` under HF names; `config.json` is
the original one kept at download time when present, else generated from our config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from litgpt_runtime.checkpoint import WEIGHTS_FILE, copy_tokenizer_files, load_state_dict
from litgpt_runtime.config import Config
from litgpt_runtime import safetensors_io
from litgpt_runtime.hf_config import ARCHITECTURES
from litgpt_runtime.convert.weight_map import ours_to_hf
from litgpt_runtime.errors import UserError


def convert_to_hf(ckpt_dir: str | Path, out_dir: str | Path, state_dict_file: str = WEIGHTS_FILE) -> Path:
    """Write `out_dir/model.safetensors` + `config.json` + tokenizer files from our checkpoint."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    weights = ckpt_dir / state_dict_file
    if not weights.is_file():
        raise UserError(f"{str(ckpt_dir)!r} holds no {state_dict_file}; is it a checkpoint folder?")
    config = Config.from_checkpoint(ckpt_dir)
    state_dict = load_state_dict(weights)
    recipes = ours_to_hf(config, state_dict.keys())
    specs = []
    for r in recipes:
        planned = r.combine([state_dict[s].to("meta") for s in r.sources])
        specs.append((r.target, tuple(planned.shape), planned.dtype))
    by_target = {r.target: r for r in recipes}
    out_dir.mkdir(parents=True, exist_ok=True)
    safetensors_io.write_streaming(
        out_dir / "model.safetensors", specs,
        lambda name: by_target[name].combine([state_dict[s] for s in by_target[name].sources]),
        metadata={"format": "pt"},
    )
    copy_tokenizer_files(ckpt_dir, out_dir)
    hf_config = hf_config_from_ours(config)
    # token ids: from generation_config.json when present (family defaults may not fit the vocab)
    generation = ckpt_dir / "generation_config.json"
    ids = json.loads(generation.read_text()) if generation.is_file() else {}
    hf_config.update({k: ids.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")})
    original = ckpt_dir / "config.json"
    published = json.loads(original.read_text()) if original.is_file() else {}
    if published and "text_config" not in published:
        # keep what the publisher wrote (token ids, extra fields), with our sizes; a multimodal
        # original (Gemma 3 4B+) is not kept: we export its language model alone
        hf_config = {**published, **_sizes_only(hf_config)}
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2))
    return out_dir


def _sizes_only(hf_config: dict[str, Any]) -> dict[str, Any]:
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "head_dim", "tie_word_embeddings")
    return {k: hf_config[k] for k in keys if k in hf_config}


def hf_config_from_ours(config: Config) -> dict[str, Any]:
    """A `config.json` that `transformers` reads as the same model."""
    family = config.family
    arch = next((a for a, f in ARCHITECTURES.items() if f == family), None)
    if arch is None:
        raise UserError(f"Cannot export a model of family {family!r} to Hugging Face format.")
    hf: dict[str, Any] = {
        "architectures": [arch], "model_type": family, "vocab_size": config.padded_vocab_size,
        "hidden_size": config.n_embd, "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_query_groups, "head_dim": config.head_size,
        "intermediate_size": config.intermediate_size, "max_position_embeddings": config.block_size,
        "tie_word_embeddings": config.tie_embeddings, "rope_theta": config.rope_base, "torch_dtype": "float32",
    }
    scaling = dict(config.rope_scaling or {})
    if scaling:
        kind = scaling.pop("type")
        orig = scaling.pop("original_max_seq_len", None)
        hf["rope_scaling"] = {"rope_type": kind, "type": kind, **scaling}
        if orig is not None:
            key = "original_max_position_embeddings"
            (hf if kind == "longrope" else hf["rope_scaling"]).__setitem__(key, orig)
    if family == "gpt_neox":
        hf.update(layer_norm_eps=config.norm_eps, hidden_act="gelu" if config.gelu_approximate == "none" else "gelu_new",
                  rotary_pct=config.rotary_percentage, rotary_emb_base=config.rope_base,
                  use_parallel_residual=config.parallel_residual, attention_bias=config.bias)
        return hf
    hf.update(rms_norm_eps=config.norm_eps, sliding_window=config.sliding_window_size)
    if family in ("gemma2", "gemma3_text"):
        hf.update(hidden_activation="gelu_pytorch_tanh" if config.gelu_approximate == "tanh" else "gelu",
                  query_pre_attn_scalar=config.attention_scores_scalar or config.head_size,
                  attn_logit_softcapping=config.attention_logit_softcapping,
                  final_logit_softcapping=config.final_logit_softcapping, layer_types=config.layer_types)
        if family == "gemma3_text":
            hf["rope_local_base_freq"] = config.rope_local_base
        return hf
    hf.update(hidden_act="silu" if config.mlp_class_name == "LLaMAMLP" else "gelu_pytorch_tanh",
              partial_rotary_factor=config.rotary_percentage)
    if family in ("qwen2", "qwen3"):
        sliding = config.sliding_window_size is not None
        hf.update(use_sliding_window=sliding, layer_types=config.layer_types)
        if sliding:
            hf["max_window_layers"] = config.layer_types.index("sliding_attention")
    if family == "qwen2":
        hf["attention_bias"] = True
    return hf


def main(checkpoint_dir: Path, out_dir: Path | None = None) -> None:
    """Export a checkpoint (downloaded or finetuned) as a Hugging Face folder that transformers,
    vLLM, TGI and KServe load.

    Args:
        checkpoint_dir: A complete checkpoint folder (e.g. out/finetune/lora/final).
        out_dir: Where to write the Hugging Face folder (default: <checkpoint_dir>/hf).
    """
    from litgpt_runtime.checkpoint import is_complete, refuse_litgpt_folder

    checkpoint_dir = Path(checkpoint_dir)
    # A merged LoRA output keeps its LoRA weights beside the merged ones (to serve as an adapter):
    # only a LoRA file in a folder not yet complete is an unmerged finetune.
    if (checkpoint_dir / "lit_lora.safetensors").is_file() and not is_complete(checkpoint_dir):
        raise UserError(f"{checkpoint_dir} holds unmerged LoRA weights; run `litgpt merge_lora {checkpoint_dir}` first.")
    if (checkpoint_dir / "peft.yaml").is_file():
        raise UserError(
            f"{checkpoint_dir} is an adapter finetune: its extra layers have no Hugging Face equivalent. "
            "Finetune with LoRA (merged) or full to export."
        )
    if not is_complete(checkpoint_dir):
        refuse_litgpt_folder(checkpoint_dir)
        raise UserError(f"{checkpoint_dir} is not a complete checkpoint (no .litgpt_complete.json).")
    out = convert_to_hf(checkpoint_dir, out_dir or checkpoint_dir / "hf")
    print(f"Wrote the Hugging Face model to {out}")
