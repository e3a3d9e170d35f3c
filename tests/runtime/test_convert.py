"""Hugging Face <-> ours conversion: shards, .bin fallback, dtype, export back to transformers."""

from __future__ import annotations

import json

import pytest
import torch

from litgpt_devcluster.hf_tiny import VOCAB_SIZE, make_hf_model, make_hf_model_dir
from litgpt_runtime.checkpoint import WEIGHTS_FILE, is_complete, load_model, load_state_dict
from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint
from litgpt_runtime.convert.litgpt_to_hf import convert_to_hf
from litgpt_runtime.errors import UserError


def _idx(length: int = 12) -> torch.Tensor:
    return torch.randint(3, VOCAB_SIZE, (1, length), generator=torch.Generator().manual_seed(7))


def test_multi_shard_checkpoint_converts_tensor_by_tensor(tmp_path):
    """q, k and v of a layer land in different shards; the result equals the single-file conversion
    and the converter never held more than one (fused) tensor at a time."""
    single = make_hf_model_dir("qwen2", tmp_path / "single")
    sharded = make_hf_model_dir("qwen2", tmp_path / "sharded", max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) > 3
    qkv_files = {index[f"model.layers.0.self_attn.{x}_proj.weight"] for x in "qkv"}
    assert len(qkv_files) > 1, "test wants a fused tensor whose parts sit in different shards"

    convert_hf_checkpoint(single, tmp_path / "a")
    convert_hf_checkpoint(sharded, tmp_path / "b")
    stats = convert_hf_checkpoint.last_stats
    a, b = load_state_dict(tmp_path / "a" / WEIGHTS_FILE), load_state_dict(tmp_path / "b" / WEIGHTS_FILE)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    total = sum(t.numel() * t.element_size() for t in b.values())
    largest = max(t.numel() * t.element_size() for t in b.values())
    assert stats["peak_tensor_bytes"] == largest < total / 4
    # tokenizer files and the original config travel along; the folder is not marked complete
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "model_config.yaml"):
        assert (tmp_path / "b" / name).is_file()
    assert not is_complete(tmp_path / "b")


def test_pytorch_bin_fallback_and_dtype(tmp_path):
    import transformers

    hf = make_hf_model("llama")
    folder = tmp_path / "bin"
    hf.config.save_pretrained(folder)
    torch.save(hf.state_dict(), folder / "pytorch_model.bin")
    config = convert_hf_checkpoint(folder, tmp_path / "ours", dtype="bfloat16")
    assert config.family == "llama"
    weights = load_state_dict(tmp_path / "ours" / WEIGHTS_FILE)
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    model = load_model(tmp_path / "ours", dtype=torch.float32)
    with torch.no_grad():
        expected = hf(_idx()).logits
        # bfloat16 storage rounds the weights: close, not equal
        torch.testing.assert_close(model(_idx()), expected, atol=0.15, rtol=0.05)
    assert isinstance(hf, transformers.PreTrainedModel)


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "phi3", "gemma2", "qwen3"])
def test_export_to_hf_round_trip(tmp_path, family):
    """ours -> HF folder that transformers loads and that gives the same logits."""
    import transformers

    hf_dir = make_hf_model_dir(family, tmp_path / "hf")
    convert_hf_checkpoint(hf_dir, tmp_path / "ours")
    (tmp_path / "ours" / "config.json").unlink()  # force a config.json generated from ours
    out = convert_to_hf(tmp_path / "ours", tmp_path / "export")
    assert (out / "tokenizer.json").is_file()
    original = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager")
    exported = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    assert type(exported) is type(original)
    with torch.no_grad():
        torch.testing.assert_close(exported(_idx()).logits, original(_idx()).logits, atol=1e-5, rtol=0)


def test_unsupported_architecture_names_supported_families(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"}))
    with pytest.raises(UserError, match=r"Unsupported architecture BertForMaskedLM.*Llama.*Gemma.*GPT-NeoX"):
        convert_hf_checkpoint(folder, tmp_path / "out")


def test_missing_weights_is_a_user_error(tmp_path):
    hf_dir = make_hf_model_dir("llama", tmp_path / "hf")
    (hf_dir / "model.safetensors").unlink()
    with pytest.raises(UserError, match="No \\*.safetensors or \\*.bin"):
        convert_hf_checkpoint(hf_dir, tmp_path / "out")


def test_gemma3_multimodal_checkpoint_converts_its_language_model(tmp_path):
    """gemma-3-4b+ are Gemma3ForConditionalGeneration: text weights under a prefix, a vision tower
    to leave out, hyperparameters under text_config."""
    import transformers

    from litgpt_devcluster.hf_tiny import hf_config

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=56,
                  patch_size=14)
    config = transformers.Gemma3Config(text_config=hf_config("gemma3").to_dict(), vision_config=vision,
                                       mm_tokens_per_image=4, image_token_index=300, boi_token_index=301,
                                       eoi_token_index=302)
    torch.manual_seed(0)
    hf = transformers.Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    ours_config = convert_hf_checkpoint(tmp_path / "hf", tmp_path / "ours")
    assert ours_config.family == "gemma3_text" and ours_config.norm_qk
    model = load_model(tmp_path / "ours")
    expected = hf(input_ids=_idx()).logits.detach()
    with torch.no_grad():
        torch.testing.assert_close(model(_idx()), expected, atol=1e-4, rtol=0)
    # exported back, it is a text-only Gemma3ForCausalLM with the same logits
    exported = transformers.AutoModelForCausalLM.from_pretrained(convert_to_hf(tmp_path / "ours", tmp_path / "export"))
    assert type(exported).__name__ == "Gemma3ForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(exported(_idx()).logits, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_conversion_memory_stays_below_two_copies(tmp_path):
    """Peak memory of converting a ~300 MB two-shard checkpoint, measured in a fresh process:
    holding the converted model while the source is mapped would need about twice the size."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    layers, n, inter, vocab = 8, 768, 2048, 16000
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=n, intermediate_size=inter,
                  num_hidden_layers=layers, num_attention_heads=12, num_key_value_heads=4, vocab_size=vocab,
                  max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps(config))
    weight_map, total = {}, 0
    for shard, layer_ids in enumerate((range(0, layers // 2), range(layers // 2, layers))):
        name = f"model-0000{shard + 1}-of-00002.safetensors"
        tensors = {}
        if shard == 0:
            tensors["model.embed_tokens.weight"] = torch.randn(vocab, n)
        else:
            tensors["model.norm.weight"] = torch.ones(n)
            tensors["lm_head.weight"] = torch.randn(vocab, n)
        for i in layer_ids:
            p = f"model.layers.{i}."
            tensors[p + "input_layernorm.weight"] = torch.ones(n)
            tensors[p + "post_attention_layernorm.weight"] = torch.ones(n)
            for proj, rows in (("q", n), ("k", n // 3), ("v", n // 3), ("o", n)):
                tensors[f"{p}self_attn.{proj}_proj.weight"] = torch.randn(rows, n)
            for proj, shape in (("gate", (inter, n)), ("up", (inter, n)), ("down", (n, inter))):
                tensors[f"{p}mlp.{proj}_proj.weight"] = torch.randn(shape)
        save_file(tensors, hf / name)
        total += sum(t.numel() * 4 for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, name))
        del tensors
    (hf / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    code = (
        "import resource, sys, torch\n"
        "from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "convert_hf_checkpoint(sys.argv[1], sys.argv[2])\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(hf), str(tmp_path / "ours")], capture_output=True,
                         text=True, check=True)
    grown = int(out.stdout.strip().splitlines()[-1])
    print(f"converted {total / 1e6:.0f} MB, peak RSS grew {grown / 1e6:.0f} MB")
    assert total > 250e6
    assert grown < 1.5 * total, f"conversion grew memory by {grown / 1e6:.0f} MB for {total / 1e6:.0f} MB of weights"
    assert (tmp_path / "ours" / WEIGHTS_FILE).stat().st_size > total
