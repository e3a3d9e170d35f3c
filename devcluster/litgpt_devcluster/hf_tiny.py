"""Tiny random Hugging Face models per family, saved as a Hub-style folder (test helper).

    from litgpt_devcluster.hf_tiny import make_hf_model_dir, FAMILIES
    folder = make_hf_model_dir("llama", tmp_path / "tiny-llama")            # config.json, model.safetensors,
                                                                            # tokenizer.json, tokenizer_config.json, ...
    folder = make_hf_model_dir("gemma2", tmp_path / "g", num_hidden_layers=3)   # overrides go to the HF config

Each model has 2 layers, 64-dim hidden states and a 320-token vocabulary, shared with a tiny
byte-level BPE tokenizer trained on a few sentences (`tokenizer.json`) whose
`tokenizer_config.json` carries a ChatML-style Jinja `chat_template`. Weights are drawn larger
than the HF default init so that logits are far from uniform and greedy decoding is decisive.
`transformers` is needed (test-only dependency); nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VOCAB_SIZE = 320
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BOS_ID, IM_START_ID, EOS_ID = 0, 1, 2  # ids the trainer gives the special tokens, in order
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SENTENCES = [
    "What is a GPU? A GPU is a processor built for many small computations at once.",
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes runs containers; an operator reconciles custom resources.",
    "Large language models predict the next token from the tokens before it.",
    "Hello world! How are you today? I am fine, thank you.",
]

_COMMON = dict(vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256,
               bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=None)

# family -> (transformers config class, model class, config kwargs). The kwargs pick the traits
# that make each family different, at sizes where they matter (e.g. sliding windows shorter
# than the test sequences).
FAMILY_SPECS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(rope_theta=10000.0)),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=True, num_key_value_heads=1, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=32))),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=7, head_dim=16)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_theta=1000000.0, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=24, rope_theta=1000000.0)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(num_key_value_heads=4, original_max_position_embeddings=256)),
    "phi4mini": ("Phi3Config", "Phi3ForCausalLM", dict(
        partial_rotary_factor=0.75, tie_word_embeddings=True, original_max_position_embeddings=64,
        rope_scaling=dict(type="longrope", short_factor=[1.0 + 0.05 * i for i in range(6)],
                          long_factor=[2.0 + 0.1 * i for i in range(6)]))),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(
        head_dim=32, sliding_window=6, query_pre_attn_scalar=24, attn_logit_softcapping=5.0,
        final_logit_softcapping=10.0)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        head_dim=32, sliding_window=6, query_pre_attn_scalar=24, num_hidden_layers=3,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1000.0}})),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(
        num_attention_heads=4, rotary_pct=0.25, rope_theta=10000.0, intermediate_size=256)),
}
FAMILY_SPECS["smollm2"] = FAMILY_SPECS["llama"][:2] + (dict(tie_word_embeddings=True, rope_theta=100000.0),)
FAMILIES = tuple(FAMILY_SPECS)


def hf_config(family: str, **overrides: Any):
    """The transformers config object of a tiny model of `family`."""
    import transformers

    config_cls, _, kwargs = FAMILY_SPECS[family]
    kwargs = {**_COMMON, **kwargs, **overrides}
    if family == "gpt_neox":
        kwargs.pop("num_key_value_heads")
    return getattr(transformers, config_cls)(**kwargs)


def make_hf_model(family: str, seed: int = 2, **overrides: Any):
    """A tiny random `transformers` model (eval mode, float32, eager attention)."""
    import torch
    import transformers

    _, model_cls, _ = FAMILY_SPECS[family]
    config = hf_config(family, **overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)._from_config(config, attn_implementation="eager", dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.dim() >= 2:
                p.copy_(noise * 0.15)
            elif name.endswith("bias"):
                p.copy_(noise * 0.1)
            else:  # norm weights around their neutral value (0 for Gemma's 1 + w)
                p.add_(noise * 0.1)
        if family.startswith("gemma"):
            # Gemma multiplies embeddings by sqrt(hidden_size); undo it so the residual stream is
            # not all embedding (else every greedy step repeats one token).
            model.get_input_embeddings().weight.div_(config.hidden_size**0.5)
    return model.eval()


def make_tokenizer_files(path: str | Path) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (a 320-token BPE)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SENTENCES * 4, trainer=trainer)
    assert tokenizer.token_to_id("<|im_end|>") == EOS_ID and tokenizer.get_vocab_size() <= VOCAB_SIZE
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>",
        "unk_token": None, "pad_token": None, "model_max_length": 256, "add_bos_token": False,
        "chat_template": CHAT_TEMPLATE,
    }, indent=2))
    (path / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}, indent=2))
    return path


def make_hf_model_dir(
    family: str, path: str | Path, *, seed: int = 2, max_shard_size: str | None = None, tokenizer: bool = True,
    **overrides: Any,
) -> Path:
    """Save a tiny random model of `family` as a Hugging Face folder at `path` and return it.

    family: one of FAMILIES (llama, llama3, smollm2, mistral, qwen2, qwen3, phi3, phi4mini, gemma2,
    gemma3, gpt_neox). overrides: HF config fields (e.g. num_hidden_layers=3).
    max_shard_size: e.g. "40KB" to write several `model-0000x-of-0000y.safetensors` shards + index.
    """
    path = Path(path)
    model = make_hf_model(family, seed=seed, **overrides)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    if tokenizer:
        make_tokenizer_files(path)
    return path
