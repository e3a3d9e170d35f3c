"""Model configuration: plain, serialisable data (no torch import).

One `Config` describes every supported family; the model (`litgpt_runtime.model`) reads only these fields.
Class choices are stored as strings (`norm_class_name`, `mlp_class_name`) so a config round-trips
through YAML unchanged. Derived fields are filled in `__post_init__`.

Known sizes (`PRESETS`, at the end) are data keyed by Hugging Face repo id; `Config.from_name`
accepts the repo id or its short name (`pythia-160m`). Any `config.json` of a supported family
loads with `Config.from_hf_config` (see `litgpt_runtime.hf_config`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from litgpt_runtime.errors import UserError
from litgpt_runtime.hf_config import config_from_hf

CONFIG_FILE = "model_config.yaml"

NormName = Literal["RMSNorm", "LayerNorm"]
MLPName = Literal["GptNeoxMLP", "LLaMAMLP", "GemmaMLP"]
LayerType = Literal["full_attention", "sliding_attention"]


@dataclass
class Config:
    """Hyperparameters of one decoder-only transformer.

    Shapes: `n_embd` is the residual width; attention has `n_head` query heads and
    `n_query_groups` key/value heads (GQA; 1 = MQA) of `head_size` each, which need not equal
    `n_embd // n_head` (Gemma, Qwen3).
    """

    name: str = ""
    """Short name, e.g. `pythia-160m`."""
    hf_repo_id: str = ""
    """`org/name` on the Hugging Face Hub, when known."""
    family: str = ""
    """Hugging Face `model_type` the weights follow (llama, mistral, qwen2, qwen3, phi3, gemma2,
    gemma3_text, gpt_neox); the converters pick their weight map from it."""

    # --- sizes -----------------------------------------------------------------------------
    block_size: int = 4096
    """Longest context the model was trained for (default `max_seq_length`)."""
    vocab_size: int = 50254
    """Tokens the tokenizer knows."""
    padded_vocab_size: Optional[int] = None
    """Rows of the embedding / columns of the logits (>= vocab_size)."""
    n_layer: int = 16
    n_embd: int = 4096
    n_head: int = 32
    n_query_groups: Optional[int] = None
    head_size: Optional[int] = None
    intermediate_size: Optional[int] = None

    # --- layer choices ---------------------------------------------------------------------
    norm_class_name: NormName = "LayerNorm"
    norm_eps: float = 1e-5
    norm_unit_offset: bool = False
    """Gemma stores RMSNorm weights as `w` and scales by `1 + w`."""
    mlp_class_name: MLPName = "GptNeoxMLP"
    gelu_approximate: Literal["none", "tanh"] = "none"
    bias: bool = False
    """Bias on every Linear of attention and MLP (GPT-NeoX)."""
    attn_bias: bool = False
    """Bias on the fused qkv Linear only (Qwen2)."""
    lm_head_bias: bool = False
    tie_embeddings: bool = False
    parallel_residual: bool = False
    """x + attn(norm_1(x)) + mlp(norm_2(x)) (GPT-NeoX) instead of two sequential residuals."""
    post_attention_norm: bool = False
    """Norm on the attention output before the residual add (Gemma 2/3)."""
    post_mlp_norm: bool = False
    """Norm on the MLP output before the residual add (Gemma 2/3)."""
    norm_qk: bool = False
    """RMSNorm over each head's queries and keys before RoPE (Qwen3, Gemma 3)."""
    scale_embeddings: bool = False
    """Multiply token embeddings by sqrt(n_embd) (Gemma)."""

    # --- attention -------------------------------------------------------------------------
    rotary_percentage: float = 1.0
    """Fraction of each head's dims that get RoPE (GPT-NeoX 0.25, Phi-4-mini 0.75)."""
    rope_base: float = 10000.0
    rope_scaling: Optional[dict[str, Any]] = None
    """None, {"type": "llama3", factor, low_freq_factor, high_freq_factor,
    original_max_seq_len}, {"type": "linear", "factor"} or {"type": "longrope", short_factor,
    long_factor, original_max_seq_len[, attention_factor]}."""
    rope_local_base: Optional[float] = None
    """RoPE base of sliding-window layers when it differs (Gemma 3); they get no scaling."""
    sliding_window_size: Optional[int] = None
    """A query sees at most this many keys, itself included (Mistral, Gemma)."""
    layer_types: Optional[list[str]] = None
    """Per layer "full_attention" or "sliding_attention"; derived when None."""
    attention_scores_scalar: Optional[float] = None
    """Queries are scaled by scalar**-0.5 instead of head_size**-0.5 (Gemma)."""
    attention_logit_softcapping: Optional[float] = None
    final_logit_softcapping: Optional[float] = None

    def __post_init__(self) -> None:
        if self.padded_vocab_size is None:
            self.padded_vocab_size = self.vocab_size
        if self.n_query_groups is None:
            self.n_query_groups = self.n_head
        if self.head_size is None:
            self.head_size = self.n_embd // self.n_head
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd
        if self.n_head % self.n_query_groups:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_query_groups={self.n_query_groups}")
        if self.layer_types is None:
            kind = "sliding_attention" if self.sliding_window_size else "full_attention"
            self.layer_types = [kind] * self.n_layer
        if len(self.layer_types) != self.n_layer:
            # n_layer overridden on a preset (a smaller debug model): keep the periodic pattern
            self.layer_types = [self.layer_types[i % len(self.layer_types)] for i in range(self.n_layer)]
        if self.rope_scaling is not None and self.rope_scaling.get("type") not in ("llama3", "linear", "longrope"):
            raise UserError(
                f"RoPE scaling {self.rope_scaling.get('type')!r} is not supported "
                "(supported: llama3, linear, longrope)."
            )

    # --- derived ---------------------------------------------------------------------------
    @property
    def rope_n_elem(self) -> int:
        """How many of each head's dims are rotated."""
        return int(self.rotary_percentage * self.head_size)

    def is_sliding(self, layer_idx: int) -> bool:
        return self.sliding_window_size is not None and self.layer_types[layer_idx] == "sliding_attention"

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "Config":
        """A known model by Hugging Face repo id (`EleutherAI/pythia-160m`) or short name."""
        preset = find_preset(name)
        if preset is None:
            raise UserError(
                f"Unknown model {name!r}. Built-in configs: {', '.join(known_repo_ids()[:8])}, ... "
                f"({len(PRESETS)} in all); any other Hugging Face repo of a supported family works by its "
                "repo id (org/name), its config.json is read at download time."
            )
        return cls(**{**preset, **overrides})

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "Config":
        """A YAML (or JSON) file holding `to_dict()`."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise UserError(f"Model config file {str(path)!r} does not exist.")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise UserError(f"Model config file {str(path)!r} does not hold a mapping of fields.")
        from litgpt_runtime.litgpt_config import from_litgpt, is_litgpt_config

        if is_litgpt_config(data):  # a model_config.yaml that LitGPT wrote
            data = from_litgpt(data)
            known = data.get("hf_repo_id") or data["name"]
            preset = find_preset(known) if known else None
            if preset is not None:  # a known model: its family for sure, not judged from the shapes
                data["family"] = preset["family"]
        return cls(**{**_known_fields(cls, data), **overrides})

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | Path, **overrides: Any) -> "Config":
        """The config of a checkpoint folder: our `model_config.yaml`, else HF `config.json`."""
        checkpoint_dir = Path(checkpoint_dir)
        if (checkpoint_dir / CONFIG_FILE).is_file():
            return cls.from_file(checkpoint_dir / CONFIG_FILE, **overrides)
        if (checkpoint_dir / "config.json").is_file():
            data = json.loads((checkpoint_dir / "config.json").read_text())
            config = cls.from_hf_config(data)
            return dataclasses.replace(config, **overrides) if overrides else config
        raise UserError(
            f"{str(checkpoint_dir)!r} holds no {CONFIG_FILE} or config.json; is it a checkpoint folder?"
        )

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any], repo_id: str = "") -> "Config":
        """Any Hugging Face `config.json` of a supported family."""
        return config_from_hf(cls, hf_config, repo_id=repo_id)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, directory: str | Path) -> Path:
        import yaml

        path = Path(directory) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UserError(f"Unknown model config field(s): {', '.join(sorted(unknown))}.")
    return data


def known_repo_ids() -> list[str]:
    """Every Hugging Face repo id with a built-in preset, in registry order."""
    return [p["hf_repo_id"] for p in PRESETS]


def find_preset(name: str) -> Optional[dict[str, Any]]:
    """The preset for a repo id or short name (case-insensitive), or None."""
    key = name.strip().strip("/").lower()
    for preset in PRESETS:
        if key in (preset["hf_repo_id"].lower(), preset["name"].lower()):
            return dict(preset)
    return None


def sliding_every(n_layer: int, pattern: int) -> list[str]:
    """Layer types where every `pattern`-th layer is global and the rest slide (Gemma 2: 2, Gemma 3: 6)."""
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layer)]


# --- registry ------------------------------------------------------------------------------
# Facts from each model's config.json / model card. One line per size; family traits first.

_LLAMA = dict(family="llama", norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP")
_LLAMA3_ROPE = dict(type="llama3", low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192)
_MISTRAL = dict(_LLAMA, family="mistral")
_QWEN2 = dict(_LLAMA, family="qwen2", attn_bias=True, norm_eps=1e-6, rope_base=1000000.0)
_QWEN3 = dict(_LLAMA, family="qwen3", norm_qk=True, norm_eps=1e-6, rope_base=1000000.0, head_size=128)
_PHI3 = dict(_LLAMA, family="phi3")
_GEMMA = dict(
    norm_class_name="RMSNorm", norm_unit_offset=True, norm_eps=1e-6, mlp_class_name="GemmaMLP",
    gelu_approximate="tanh", tie_embeddings=True, scale_embeddings=True, post_attention_norm=True,
    post_mlp_norm=True, head_size=256, attention_scores_scalar=256,
)
_GEMMA2 = dict(_GEMMA, family="gemma2", attention_logit_softcapping=50.0, final_logit_softcapping=30.0,
               sliding_window_size=4096, block_size=8192, vocab_size=256000)
_GEMMA3 = dict(_GEMMA, family="gemma3_text", norm_qk=True, rope_base=1000000.0, rope_local_base=10000.0)
_NEOX = dict(family="gpt_neox", norm_class_name="LayerNorm", mlp_class_name="GptNeoxMLP", bias=True,
             parallel_residual=True, rotary_percentage=0.25, block_size=2048, vocab_size=50304)


def _p(repo_id: str, traits: dict[str, Any], **sizes: Any) -> dict[str, Any]:
    preset = {**traits, **sizes, "hf_repo_id": repo_id, "name": repo_id.split("/")[-1]}
    if preset.get("family", "").startswith("gemma") and "layer_types" not in preset:
        pattern = 2 if preset["family"] == "gemma2" else 6
        preset["layer_types"] = sliding_every(preset["n_layer"], pattern)
    return preset


def _both(repo_id: str, traits: dict[str, Any], **sizes: Any) -> list[dict[str, Any]]:
    """A base model and its `-Instruct` sibling (same architecture)."""
    return [_p(repo_id, traits, **sizes), _p(repo_id + "-Instruct", traits, **sizes)]


PRESETS: list[dict[str, Any]] = [
    # SmolLM2 (Llama architecture, tied embeddings)
    *_both("HuggingFaceTB/SmolLM2-135M", _LLAMA, block_size=8192, vocab_size=49152, n_layer=30, n_embd=576,
           n_head=9, n_query_groups=3, intermediate_size=1536, rope_base=100000.0, tie_embeddings=True),
    *_both("HuggingFaceTB/SmolLM2-360M", _LLAMA, block_size=8192, vocab_size=49152, n_layer=32, n_embd=960,
           n_head=15, n_query_groups=5, intermediate_size=2560, rope_base=100000.0, tie_embeddings=True),
    *_both("HuggingFaceTB/SmolLM2-1.7B", _LLAMA, block_size=8192, vocab_size=49152, n_layer=24, n_embd=2048,
           n_head=32, n_query_groups=32, intermediate_size=8192, rope_base=130000.0, tie_embeddings=True),
    # TinyLlama
    _p("TinyLlama/TinyLlama-1.1B-Chat-v1.0", _LLAMA, block_size=2048, vocab_size=32000, n_layer=22, n_embd=2048,
       n_head=32, n_query_groups=4, intermediate_size=5632),
    _p("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", _LLAMA, block_size=2048, vocab_size=32000,
       n_layer=22, n_embd=2048, n_head=32, n_query_groups=4, intermediate_size=5632),
    # Pythia (GPT-NeoX)
    _p("EleutherAI/pythia-14m", _NEOX, n_layer=6, n_embd=128, n_head=4),
    _p("EleutherAI/pythia-31m", _NEOX, n_layer=6, n_embd=256, n_head=8),
    _p("EleutherAI/pythia-70m", _NEOX, n_layer=6, n_embd=512, n_head=8),
    _p("EleutherAI/pythia-160m", _NEOX, n_layer=12, n_embd=768, n_head=12),
    _p("EleutherAI/pythia-410m", _NEOX, n_layer=24, n_embd=1024, n_head=16),
    _p("EleutherAI/pythia-1b", _NEOX, n_layer=16, n_embd=2048, n_head=8),
    _p("EleutherAI/pythia-1.4b", _NEOX, n_layer=24, n_embd=2048, n_head=16),
    _p("EleutherAI/pythia-2.8b", _NEOX, n_layer=32, n_embd=2560, n_head=32, vocab_size=50304),
    _p("EleutherAI/pythia-6.9b", _NEOX, n_layer=32, n_embd=4096, n_head=32, vocab_size=50432),
    _p("EleutherAI/pythia-12b", _NEOX, n_layer=36, n_embd=5120, n_head=40, vocab_size=50688),
    # Llama 2 / 3.x
    _p("meta-llama/Llama-2-7b-hf", _LLAMA, block_size=4096, vocab_size=32000, n_layer=32, n_embd=4096, n_head=32,
       intermediate_size=11008),
    _p("meta-llama/Llama-2-7b-chat-hf", _LLAMA, block_size=4096, vocab_size=32000, n_layer=32, n_embd=4096,
       n_head=32, intermediate_size=11008),
    _p("meta-llama/Llama-2-13b-hf", _LLAMA, block_size=4096, vocab_size=32000, n_layer=40, n_embd=5120, n_head=40,
       intermediate_size=13824),
    *_both("meta-llama/Llama-3.2-1B", _LLAMA, block_size=131072, vocab_size=128256, n_layer=16, n_embd=2048,
           n_head=32, n_query_groups=8, intermediate_size=8192, rope_base=500000.0, tie_embeddings=True,
           rope_scaling=dict(_LLAMA3_ROPE, factor=32.0)),
    *_both("meta-llama/Llama-3.2-3B", _LLAMA, block_size=131072, vocab_size=128256, n_layer=28, n_embd=3072,
           n_head=24, n_query_groups=8, intermediate_size=8192, rope_base=500000.0, tie_embeddings=True,
           rope_scaling=dict(_LLAMA3_ROPE, factor=32.0)),
    *_both("meta-llama/Llama-3.1-8B", _LLAMA, block_size=131072, vocab_size=128256, n_layer=32, n_embd=4096,
           n_head=32, n_query_groups=8, intermediate_size=14336, rope_base=500000.0,
           rope_scaling=dict(_LLAMA3_ROPE, factor=8.0)),
    *_both("meta-llama/Llama-3.1-70B", _LLAMA, block_size=131072, vocab_size=128256, n_layer=80, n_embd=8192,
           n_head=64, n_query_groups=8, intermediate_size=28672, rope_base=500000.0,
           rope_scaling=dict(_LLAMA3_ROPE, factor=8.0)),
    _p("meta-llama/Meta-Llama-3-8B", _LLAMA, block_size=8192, vocab_size=128256, n_layer=32, n_embd=4096,
       n_head=32, n_query_groups=8, intermediate_size=14336, rope_base=500000.0),
    _p("meta-llama/Meta-Llama-3-8B-Instruct", _LLAMA, block_size=8192, vocab_size=128256, n_layer=32,
       n_embd=4096, n_head=32, n_query_groups=8, intermediate_size=14336, rope_base=500000.0),
    # Mistral
    _p("mistralai/Mistral-7B-v0.1", _MISTRAL, block_size=32768, vocab_size=32000, n_layer=32, n_embd=4096,
       n_head=32, n_query_groups=8, intermediate_size=14336, sliding_window_size=4096),
    _p("mistralai/Mistral-7B-Instruct-v0.1", _MISTRAL, block_size=32768, vocab_size=32000, n_layer=32,
       n_embd=4096, n_head=32, n_query_groups=8, intermediate_size=14336, sliding_window_size=4096),
    _p("mistralai/Mistral-7B-v0.3", _MISTRAL, block_size=32768, vocab_size=32768, n_layer=32, n_embd=4096,
       n_head=32, n_query_groups=8, intermediate_size=14336, rope_base=1000000.0),
    _p("mistralai/Mistral-7B-Instruct-v0.3", _MISTRAL, block_size=32768, vocab_size=32768, n_layer=32,
       n_embd=4096, n_head=32, n_query_groups=8, intermediate_size=14336, rope_base=1000000.0),
    # Qwen2.5
    *_both("Qwen/Qwen2.5-0.5B", _QWEN2, block_size=32768, vocab_size=151936, n_layer=24, n_embd=896, n_head=14,
           n_query_groups=2, intermediate_size=4864, tie_embeddings=True),
    *_both("Qwen/Qwen2.5-1.5B", _QWEN2, block_size=32768, vocab_size=151936, n_layer=28, n_embd=1536, n_head=12,
           n_query_groups=2, intermediate_size=8960, tie_embeddings=True),
    *_both("Qwen/Qwen2.5-3B", _QWEN2, block_size=32768, vocab_size=151936, n_layer=36, n_embd=2048, n_head=16,
           n_query_groups=2, intermediate_size=11008, tie_embeddings=True),
    *_both("Qwen/Qwen2.5-7B", _QWEN2, block_size=32768, vocab_size=152064, n_layer=28, n_embd=3584, n_head=28,
           n_query_groups=4, intermediate_size=18944),
    # Qwen3 (explicit head_dim 128, QK-norm)
    _p("Qwen/Qwen3-0.6B", _QWEN3, block_size=40960, vocab_size=151936, n_layer=28, n_embd=1024, n_head=16,
       n_query_groups=8, intermediate_size=3072, tie_embeddings=True),
    _p("Qwen/Qwen3-1.7B", _QWEN3, block_size=40960, vocab_size=151936, n_layer=28, n_embd=2048, n_head=16,
       n_query_groups=8, intermediate_size=6144, tie_embeddings=True),
    _p("Qwen/Qwen3-4B", _QWEN3, block_size=40960, vocab_size=151936, n_layer=36, n_embd=2560, n_head=32,
       n_query_groups=8, intermediate_size=9728, tie_embeddings=True),
    _p("Qwen/Qwen3-8B", _QWEN3, block_size=40960, vocab_size=151936, n_layer=36, n_embd=4096, n_head=32,
       n_query_groups=8, intermediate_size=12288),
    # Phi-3 / Phi-4-mini (HF fuses qkv and gate/up; we keep qkv fused and split gate/up)
    _p("microsoft/Phi-3-mini-4k-instruct", _PHI3, block_size=4096, vocab_size=32064, n_layer=32, n_embd=3072,
       n_head=32, intermediate_size=8192, sliding_window_size=2047),
    _p("microsoft/Phi-4-mini-instruct", _PHI3, block_size=131072, vocab_size=200064, n_layer=32, n_embd=3072,
       n_head=24, n_query_groups=8, intermediate_size=8192, rotary_percentage=0.75, tie_embeddings=True),
    # Gemma 2 / 3 (head_dim 256, post-norms, soft-capping in Gemma 2, QK-norm in Gemma 3)
    _p("google/gemma-2-2b", _GEMMA2, n_layer=26, n_embd=2304, n_head=8, n_query_groups=4, intermediate_size=9216),
    _p("google/gemma-2-2b-it", _GEMMA2, n_layer=26, n_embd=2304, n_head=8, n_query_groups=4,
       intermediate_size=9216),
    _p("google/gemma-2-9b", _GEMMA2, n_layer=42, n_embd=3584, n_head=16, n_query_groups=8,
       intermediate_size=14336),
    _p("google/gemma-2-9b-it", _GEMMA2, n_layer=42, n_embd=3584, n_head=16, n_query_groups=8,
       intermediate_size=14336),
    _p("google/gemma-2-27b-it", _GEMMA2, n_layer=46, n_embd=4608, n_head=32, n_query_groups=16, head_size=128,
       intermediate_size=36864, attention_scores_scalar=144),
    _p("google/gemma-3-1b-it", _GEMMA3, block_size=32768, vocab_size=262144, n_layer=26, n_embd=1152, n_head=4,
       n_query_groups=1, intermediate_size=6912, sliding_window_size=512),
    _p("google/gemma-3-1b-pt", _GEMMA3, block_size=32768, vocab_size=262144, n_layer=26, n_embd=1152, n_head=4,
       n_query_groups=1, intermediate_size=6912, sliding_window_size=512),
    _p("google/gemma-3-4b-it", _GEMMA3, block_size=131072, vocab_size=262208, n_layer=34, n_embd=2560, n_head=8,
       n_query_groups=4, intermediate_size=10240, sliding_window_size=1024,
       rope_scaling=dict(type="linear", factor=8.0)),
    _p("google/gemma-3-12b-it", _GEMMA3, block_size=131072, vocab_size=262208, n_layer=48, n_embd=3840,
       n_head=16, n_query_groups=8, intermediate_size=15360, sliding_window_size=1024,
       rope_scaling=dict(type="linear", factor=8.0)),
]
