"""Config: the registry of known models, HF config.json loading, serialisation."""

from __future__ import annotations

import json

import pytest
import torch

from litgpt_devcluster.hf_tiny import FAMILIES, hf_config
from litgpt_runtime.config import PRESETS, Config, known_repo_ids
from litgpt_runtime.errors import UserError
from litgpt_runtime.model import GPT


def param_count(config: Config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(config).parameters())


@pytest.mark.parametrize("repo_id", known_repo_ids())
def test_every_preset_builds_on_meta(repo_id):
    config = Config.from_name(repo_id)
    assert config.hf_repo_id == repo_id and config.family
    assert config.n_head % config.n_query_groups == 0 and len(config.layer_types) == config.n_layer
    assert param_count(config) > 10e6


@pytest.mark.parametrize(
    "name, expected",
    [  # published parameter counts (model cards / safetensors metadata)
        ("pythia-14m", 14.07e6), ("pythia-160m", 162.3e6), ("EleutherAI/pythia-1b", 1.012e9),
        ("SmolLM2-135M", 134.5e6), ("HuggingFaceTB/SmolLM2-360M-Instruct", 361.8e6),
        ("TinyLlama-1.1B-Chat-v1.0", 1.100e9), ("meta-llama/Llama-3.2-1B", 1.236e9),
        ("Llama-3.1-8B", 8.030e9), ("Llama-2-7b-hf", 6.738e9), ("Mistral-7B-Instruct-v0.3", 7.248e9),
        ("Qwen2.5-0.5B", 494.0e6), ("Qwen2.5-7B-Instruct", 7.616e9), ("Qwen3-0.6B", 596.0e6),
        ("Qwen3-8B", 8.191e9), ("Phi-3-mini-4k-instruct", 3.821e9), ("Phi-4-mini-instruct", 3.836e9),
        ("gemma-2-2b", 2.614e9), ("gemma-2-9b-it", 9.242e9), ("gemma-3-1b-it", 999.9e6),
    ],
)
def test_parameter_counts_match_published_sizes(name, expected):
    assert param_count(Config.from_name(name)) == pytest.approx(expected, rel=0.01)


def test_short_names_and_case_resolve_to_repo_ids():
    assert Config.from_name("pythia-160m").hf_repo_id == "EleutherAI/pythia-160m"
    assert Config.from_name("smollm2-135m-instruct").hf_repo_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert len(set(known_repo_ids())) == len(PRESETS)


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="Unknown model 'not-a/model'"):
        Config.from_name("not-a/model")


def test_family_traits_of_presets():
    gemma2 = Config.from_name("gemma-2-2b")
    assert gemma2.layer_types[:2] == ["sliding_attention", "full_attention"] and gemma2.final_logit_softcapping == 30.0
    gemma3 = Config.from_name("gemma-3-1b-it")
    assert gemma3.layer_types[5] == "full_attention" and gemma3.layer_types.count("full_attention") == 4
    assert Config.from_name("Llama-3.2-1B").rope_scaling["factor"] == 32.0
    assert Config.from_name("Qwen2.5-0.5B").attn_bias and Config.from_name("Qwen3-0.6B").norm_qk
    assert Config.from_name("pythia-160m").rope_n_elem == 16
    assert Config.from_name("Phi-4-mini-instruct").rope_n_elem == 96


@pytest.mark.parametrize("family", FAMILIES)
def test_from_hf_config_of_every_family(family):
    hf = hf_config(family).to_dict()
    config = Config.from_hf_config(hf, repo_id="org/tiny")
    assert (config.n_layer, config.n_embd, config.padded_vocab_size) == (
        hf["num_hidden_layers"], hf["hidden_size"], hf["vocab_size"])
    assert config.name == "tiny"


def test_from_hf_config_reads_the_published_form():
    """Hub config.json files spell RoPE as rope_theta/rope_scaling (not rope_parameters)."""
    published = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    }
    config = Config.from_hf_config(published, repo_id="meta-llama/Llama-3.2-1B")
    preset = Config.from_name("meta-llama/Llama-3.2-1B")
    assert config.to_dict() == preset.to_dict()


PUBLISHED = {  # abridged config.json files as published on the Hub
    "Qwen/Qwen3-0.6B": dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=128, hidden_size=1024, intermediate_size=3072,
        max_position_embeddings=40960, num_attention_heads=16, num_hidden_layers=28, num_key_value_heads=8,
        rms_norm_eps=1e-6, rope_scaling=None, rope_theta=1000000, sliding_window=None, tie_word_embeddings=True,
        use_sliding_window=False, max_window_layers=28, vocab_size=151936, hidden_act="silu", attention_bias=False),
    "EleutherAI/pythia-160m": dict(
        architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", hidden_act="gelu", hidden_size=768,
        intermediate_size=3072, layer_norm_eps=1e-5, max_position_embeddings=2048, num_attention_heads=12,
        num_hidden_layers=12, rotary_emb_base=10000, rotary_pct=0.25, tie_word_embeddings=False,
        use_parallel_residual=True, vocab_size=50304),
    "google/gemma-2-2b": dict(
        architectures=["Gemma2ForCausalLM"], model_type="gemma2", attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0, head_dim=256, hidden_activation="gelu_pytorch_tanh", hidden_size=2304,
        intermediate_size=9216, max_position_embeddings=8192, num_attention_heads=8, num_hidden_layers=26,
        num_key_value_heads=4, query_pre_attn_scalar=256, rms_norm_eps=1e-6, rope_theta=10000.0, sliding_window=4096,
        vocab_size=256000),
    "google/gemma-3-1b-it": dict(
        architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", hidden_size=1152, intermediate_size=6912,
        head_dim=256, num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=26,
        max_position_embeddings=32768, rope_theta=1000000, rope_local_base_freq=10000, rope_scaling=None,
        sliding_window=512, sliding_window_pattern=6, query_pre_attn_scalar=256, vocab_size=262144,
        final_logit_softcapping=None, attn_logit_softcapping=None, rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh"),
    "mistralai/Mistral-7B-v0.1": dict(
        architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=4096, intermediate_size=14336,
        max_position_embeddings=32768, num_attention_heads=32, num_hidden_layers=32, num_key_value_heads=8,
        rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=4096, tie_word_embeddings=False, vocab_size=32000,
        hidden_act="silu"),
}


@pytest.mark.parametrize("repo_id", PUBLISHED)
def test_published_config_json_equals_preset(repo_id):
    assert Config.from_hf_config(PUBLISHED[repo_id], repo_id=repo_id) == Config.from_name(repo_id)


def test_unsupported_architecture_and_rope_type():
    with pytest.raises(UserError, match="Unsupported architecture FalconForCausalLM. Supported families"):
        Config.from_hf_config({"architectures": ["FalconForCausalLM"], "model_type": "falcon"})
    hf = hf_config("llama").to_dict()
    hf["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    with pytest.raises(UserError, match="'yarn' is not supported"):
        Config.from_hf_config(hf)


def test_yaml_round_trip_and_from_checkpoint(tmp_path):
    config = Config.from_name("gemma-3-4b-it")
    path = config.save(tmp_path)
    assert Config.from_file(path) == config
    assert Config.from_checkpoint(tmp_path) == config
    assert Config.from_file(path, n_layer=2).n_layer == 2
    # a folder with only the HF config.json works too
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(hf_config("qwen3").to_dict()))
    assert Config.from_checkpoint(tmp_path / "hf").norm_qk
    with pytest.raises(UserError, match="Unknown model config field"):
        (tmp_path / "bad.yaml").write_text("n_layer: 2\nnot_a_field: 1\n")
        Config.from_file(tmp_path / "bad.yaml")


def test_config_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, litgpt_runtime.config; c = litgpt_runtime.config.Config.from_name('pythia-14m'); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
