"""Coming from LitGPT: its model_config.yaml files, checkpoint folders and finetune outputs.

Fixtures are written here in the form LitGPT 0.5.13 writes them (every field of its Config;
`lit_model.pth` as a torch.save'd state dict; `lit_model.pth.lora` as `{"model": lora weights}`
beside `hyperparameters.yaml`). test_litgpt_peer.py checks the same against the real package.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib

import pytest
import torch
import yaml

from litgpt_devcluster.hf_tiny import FAMILIES, hf_config, make_hf_model_dir
from litgpt_runtime.checkpoint import load_model, mark_complete, resolve_checkpoint_dir
from litgpt_runtime.config import Config
from litgpt_runtime.convert.from_litgpt import convert, load_litgpt_state_dict
from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint
from litgpt_runtime.litgpt_config import LITGPT_DEFAULTS, from_litgpt, to_litgpt
from litgpt_runtime.convert.to_litgpt import convert_to_litgpt
from litgpt_runtime.errors import UserError
from litgpt_runtime.generate import generate_tokens

PROMPT = [5, 17, 33, 60, 71]

# What LitGPT 0.5.13 writes for a small Llama-style model: all of its fields, in its order.
LITGPT_LLAMA_YAML = """\
name: tiny-llama
hf_config: {org: test, name: tiny-llama}
block_size: 256
n_layer: 2
n_embd: 64
vocab_size: 320
padding_multiple: 512
padded_vocab_size: 320
norm_class_name: RMSNorm
norm_eps: 1.0e-05
norm_qk: false
norm_qk_type: default
post_attention_norm: false
post_mlp_norm: false
parallel_residual: false
shared_attention_norm: false
n_head: 4
head_size: 16
n_query_groups: 2
attn_bias: false
attention_scores_scalar: null
sliding_window_size: null
sliding_window_indices: null
attention_logit_softcapping: null
rope_base: 10000
rotary_percentage: 1.0
rope_condense_ratio: 1
rope_adjustments: null
rope_interleave: false
intermediate_size: 96
moe_intermediate_size: null
bias: false
mlp_class_name: LLaMAMLP
gelu_approximate: none
n_expert: 0
n_shared_expert: null
n_expert_groups: null
n_topk_groups: null
n_topk_scores_per_group: null
n_expert_per_token: 0
first_k_dense_replace: null
routed_scaling_factor: 1.0
norm_topk_prob: false
scale_embeddings: false
lm_head_bias: false
final_logit_softcapping: null
norm_1: true
norm_2: true
latent_attention: null
rope_local_base_freq: null
rope_indices: null
"""


def _write(tmp_path, text: str, name: str = "model_config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- model_config.yaml ------------------------------------------------------------------------
def test_litgpt_model_config_with_every_field_loads(tmp_path):
    """Regression: `Unknown model config field(s): padding_multiple` for LitGPT's own files."""
    assert set(yaml.safe_load(LITGPT_LLAMA_YAML)) == set(LITGPT_DEFAULTS)
    config = Config.from_file(_write(tmp_path, LITGPT_LLAMA_YAML))
    assert (config.n_layer, config.n_embd, config.n_head, config.n_query_groups, config.head_size) == (2, 64, 4, 2, 16)
    assert config.mlp_class_name == "LLaMAMLP" and config.norm_class_name == "RMSNorm"
    assert not config.parallel_residual and not config.bias and config.rotary_percentage == 1.0
    assert config.hf_repo_id == "test/tiny-llama" and config.family == "llama"
    assert config.rope_scaling is None and config.layer_types == ["full_attention"] * 2
    assert not config.tie_embeddings and not config.norm_unit_offset


def test_a_short_litgpt_file_means_litgpt_defaults(tmp_path):
    """Fields left out take LitGPT's defaults (bias, parallel residual, 25% RoPE), not ours."""
    config = Config.from_file(_write(tmp_path, "n_layer: 2\nn_embd: 32\nn_head: 4\nvocab_size: 100\npadding_multiple: 64\n"))
    assert config.bias and config.parallel_residual and config.rotary_percentage == 0.25
    assert config.padded_vocab_size == 128 and config.family == "gpt_neox"


@pytest.mark.parametrize("field, value, supported", [
    ("n_expert", 8, "dense MLPs only"),
    ("mlp_class_name", "LLaMAMoE", "dense MLPs only"),
    ("latent_attention", {"q_lora_rank": 8, "kv_lora_rank": 8}, "grouped-query attention only"),
    ("rope_interleave", True, "rotate-half"),
    ("norm_qk_type", "olmo2", "per-head"),
    ("shared_attention_norm", True, "a norm per attention and MLP"),
    ("norm_1", False, "a norm before attention"),
    ("rope_adjustments", {"factor": 4.0, "beta_fast": 32, "beta_slow": 1, "original_max_seq_len": 64}, "not YaRN"),
])
def test_a_field_asking_for_what_we_lack_stops_with_one_line(tmp_path, field, value, supported):
    data = {**yaml.safe_load(LITGPT_LLAMA_YAML), field: value}
    with pytest.raises(UserError) as info:
        Config.from_file(_write(tmp_path, yaml.safe_dump(data, sort_keys=False)))
    message = str(info.value)
    assert "\n" not in message and f"{field}={value!r}" in message and supported in message


def test_neutral_moe_fields_and_finetune_fields_are_accepted(tmp_path):
    data = {**yaml.safe_load(LITGPT_LLAMA_YAML), "routed_scaling_factor": 2.5, "lora_r": 8, "adapter_start_layer": 1}
    assert Config.from_file(_write(tmp_path, yaml.safe_dump(data))).n_layer == 2
    with pytest.raises(UserError, match="Unknown model config field.*n_experts"):
        Config.from_file(_write(tmp_path, yaml.safe_dump({**data, "n_experts": 2})))


def test_sliding_windows_local_rope_and_llama3_scaling_map_onto_ours():
    lit = {**yaml.safe_load(LITGPT_LLAMA_YAML), "n_layer": 3, "name": "Gemma-3-tiny", "sliding_window_size": 6,
           "sliding_window_indices": [1, 1, 0, 1, 1, 0], "rope_local_base_freq": 1000.0,
           "rope_indices": [1, 1, 0, 1, 1, 0], "rope_adjustments": {"factor": 4.0}}
    config = Config(**from_litgpt(lit))
    assert config.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    assert config.rope_local_base == 1000.0 and config.rope_scaling == {"type": "linear", "factor": 4.0}
    assert config.norm_unit_offset  # LitGPT's RMSNorm adds 1 for Gemma by name
    condensed = Config(**from_litgpt({**yaml.safe_load(LITGPT_LLAMA_YAML), "rope_condense_ratio": 2}))
    assert condensed.rope_scaling == {"type": "linear", "factor": 2.0}
    llama3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_seq_len": 32}
    config = Config(**from_litgpt({**yaml.safe_load(LITGPT_LLAMA_YAML), "rope_adjustments": llama3}))
    assert config.rope_scaling == {"type": "llama3", **llama3}
    with pytest.raises(UserError, match="rope_indices"):
        from_litgpt({**lit, "rope_indices": [0, 0, 1]})


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "phi4mini"])
def test_round_trip_ours_to_litgpt_and_back(family):
    ours = Config.from_hf_config(hf_config(family).to_dict(), repo_id=f"test/tiny-{family}")
    written = to_litgpt(ours)
    assert list(written) == list(LITGPT_DEFAULTS)  # every LitGPT field, nothing else
    back = Config(**from_litgpt(yaml.safe_load(yaml.safe_dump(written))))
    differ = {f.name for f in dataclasses.fields(Config) if getattr(back, f.name) != getattr(ours, f.name)}
    # LitGPT has no tie flag (its checkpoints hold lm_head.weight); Gemma needs "Gemma" in its name
    assert differ <= {"tie_embeddings", "name"}
    assert back.family == ours.family


def test_longrope_cannot_be_written_for_litgpt():
    ours = Config.from_hf_config(hf_config("phi4mini").to_dict())
    with pytest.raises(UserError, match="longrope"):
        to_litgpt(ours)


# --- checkpoints ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(our tiny Llama checkpoint, its greedy tokens)."""
    base = tmp_path_factory.mktemp("tiny")
    ours = base / "ours"
    convert_hf_checkpoint(make_hf_model_dir("llama", base / "hf", seed=1), ours)
    mark_complete(ours, repo_id="test/tiny-llama")
    return ours, list(generate_tokens(load_model(ours), PROMPT, 12, temperature=0.0))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_convert_to_litgpt_writes_litgpt_files(tiny, tmp_path):
    ours, _ = tiny
    lit = convert_to_litgpt(ours, tmp_path / "lit")
    assert set(yaml.safe_load((lit / "model_config.yaml").read_text())) == set(LITGPT_DEFAULTS)
    state = load_litgpt_state_dict(lit / "lit_model.pth")
    assert "lm_head.weight" in state and "transformer.h.1.attn.qkv.weight" in state
    assert (lit / "tokenizer.json").is_file() and not list(lit.glob("*.tmp"))


def test_litgpt_folder_is_refused_naming_the_converter_then_converted_in_place(tiny, tmp_path, litgpt):
    ours, expected = tiny
    lit = convert_to_litgpt(ours, tmp_path / "checkpoints" / "test" / "tiny-llama")
    before = {name: _digest(lit / name) for name in ("lit_model.pth", "model_config.yaml")}
    for model in (str(lit), "test/tiny-llama"):
        result = litgpt("generate", model, "--prompt", "Hi", "--max_new_tokens", "3", cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert f"litgpt convert_from_litgpt {lit if model == str(lit) else 'checkpoints/test/tiny-llama'}" in result.stderr
    result = litgpt("convert_from_litgpt", str(lit))
    assert result.returncode == 0, result.stderr
    assert resolve_checkpoint_dir(lit) == lit
    assert {name: _digest(lit / name) for name in before} == before  # LitGPT's files untouched
    assert list(generate_tokens(load_model(lit), PROMPT, 12, temperature=0.0)) == expected
    result = litgpt("generate", "test/tiny-llama", "--prompt", "Hi", "--max_new_tokens", "3", "--temperature", "0",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_unmerged_litgpt_lora_output_is_merged_onto_its_base(tiny, tmp_path):
    """A LitGPT `step-*` LoRA folder: only `lit_model.pth.lora` ({"model": ...}) and the base
    named in hyperparameters.yaml."""
    from litgpt_runtime.peft.lora import GPT as LoRAGPT, Config as LoRAConfig, lora_state_dict, merged_state_dict

    ours, _ = tiny
    base = convert_to_litgpt(ours, tmp_path / "base")
    settings = dict(lora_r=2, lora_alpha=4, lora_query=True, lora_key=True, lora_value=False, lora_mlp=True)
    model = LoRAGPT(LoRAConfig.from_base(Config.from_checkpoint(ours), lora_dropout=0.0, **settings))
    model.load_state_dict(load_model(ours).state_dict(), strict=False)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = torch.randn_like(p) * 0.3
    step = tmp_path / "out" / "step-000010"
    step.mkdir(parents=True)
    torch.save({"model": lora_state_dict(model.state_dict())}, step / "lit_model.pth.lora")
    (step / "model_config.yaml").write_text((base / "model_config.yaml").read_text())
    (step / "hyperparameters.yaml").write_text(yaml.safe_dump({"checkpoint_dir": str(base), **settings}))
    (step / "tokenizer.json").write_text((base / "tokenizer.json").read_text())
    expected = merged_state_dict(model)
    result = convert(step, out_dir=tmp_path / "converted")
    converted = load_model(result).state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(converted[key], value)
    (step / "hyperparameters.yaml").write_text(yaml.safe_dump({"checkpoint_dir": str(tmp_path / "gone"), **settings}))
    with pytest.raises(UserError, match="--base_checkpoint_dir"):
        convert(step, out_dir=tmp_path / "again")


def test_pickled_code_is_refused(tmp_path):
    """torch.load(weights_only=True): a .pth that would run code on load is rejected, not executed."""
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"model": {"w": torch.zeros(1)}, "extra": argparse.Namespace(step=1)}, folder / "lit_model.pth")
    (folder / "model_config.yaml").write_text(LITGPT_LLAMA_YAML)
    with pytest.raises(UserError, match="weights_only=True"):
        convert(folder)


@pytest.mark.parametrize("action", ["convert_to_hf", "pretrain --initial_checkpoint_dir", *(
    pytest.param(a, marks=pytest.mark.slow) for a in ("merge_lora", "chat", "serve", "finetune_lora", "convert_to_litgpt"))])
def test_every_action_names_the_converter_for_a_litgpt_folder(tiny, tmp_path_factory, litgpt, action):
    ours, _ = tiny
    lit = convert_to_litgpt(ours, tmp_path_factory.mktemp("lit") / "lit")
    name, *flag = action.split()
    args = [name, *flag, str(lit)]
    if name == "pretrain":
        args += ["--tokenizer_dir", str(lit)]
    if name == "convert_to_litgpt":
        args += ["--out_dir", str(lit.parent / "again")]
    if name == "finetune_lora":
        (lit.parent / "train.json").write_text('[{"instruction": "Hi", "output": "Hello"}]')
        args += ["--data.json_path", str(lit.parent / "train.json")]
    result = litgpt(*args, input="", timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"litgpt convert_from_litgpt {lit}" in result.stderr
