"""LLaMA-Adapter and Adapter v2: zero-initialised, so step 0 equals the base; only their own
parameters train; the gate really opens the prompt path in the layers from adapter_start_layer."""

from __future__ import annotations

import pytest
import torch

from litgpt_runtime.config import Config
from litgpt_runtime.model import GPT
from litgpt_runtime.peft import adapter, adapter_v2

BASE = dict(n_layer=3, n_embd=32, n_head=4, n_query_groups=2, block_size=32, vocab_size=64,
            norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48)


def pair(module, family_overrides=None, **settings):
    torch.manual_seed(0)
    base_config = Config(**{**BASE, **(family_overrides or {})})
    base = GPT(base_config).eval()
    model = module.GPT(module.Config.from_base(base_config, **settings)).eval()
    _, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected
    return base, model


@pytest.mark.parametrize("module", [adapter, adapter_v2])
@pytest.mark.parametrize("overrides", [None, dict(norm_class_name="LayerNorm", mlp_class_name="GptNeoxMLP", bias=True, tie_embeddings=True)])
def test_step_zero_equals_base(module, overrides):
    base, model = pair(module, overrides, adapter_prompt_length=4, adapter_start_layer=1)
    x = torch.randint(0, 64, (2, 10))
    torch.testing.assert_close(model(x), base(x), rtol=0, atol=0)


def test_adapter_trains_prompt_and_gates_of_upper_layers_only():
    _, model = pair(adapter, adapter_prompt_length=4, adapter_start_layer=1)
    adapter.mark_only_adapter_as_trainable(model)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == {f"transformer.h.{i}.attn.{k}" for i in (1, 2) for k in ("adapter_wte.weight", "gating_factor")}
    assert sum(trainable.values()) == 2 * (4 * 32 + 4)


def test_open_gate_changes_output_only_from_start_layer():
    base, model = pair(adapter, adapter_prompt_length=4, adapter_start_layer=2)
    x = torch.randint(0, 64, (1, 6))
    hidden = {}
    for i, block in enumerate(model.transformer.h):
        block.register_forward_hook(lambda m, a, out, i=i: hidden.__setitem__(i, out))
    model(x)
    closed = dict(hidden)
    with torch.no_grad():
        model.transformer.h[2].attn.gating_factor.fill_(1.0)
    out = model(x)
    torch.testing.assert_close(hidden[1], closed[1], rtol=0, atol=0)
    assert not torch.allclose(out, base(x), atol=1e-4)


def test_adapter_v2_trains_its_terms_and_norms():
    _, model = pair(adapter_v2, adapter_prompt_length=4, adapter_start_layer=1)
    adapter_v2.mark_only_adapter_v2_as_trainable(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(("adapter" in n) or ("gating" in n) or ("norm" in n) or n.startswith("transformer.ln_f") for n in names)
    assert "transformer.h.0.attn.qkv.adapter_scale" in names and "lm_head.adapter_bias" in names
    assert "transformer.h.0.norm_1.weight" in names and "transformer.ln_f.weight" in names
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert "transformer.h.0.attn.qkv.weight" in frozen and "transformer.wte.weight" in frozen
    # per Linear: scale + bias of its output size
    n_linear_out = 3 * ((4 + 2 * 2) * 8 + 32 + 48 * 2 + 32) + 64
    n_norms = 3 * 2 * 32 + 32
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * n_linear_out + n_norms + 2 * (4 * 32 + 4)


def test_start_layer_must_exist():
    from litgpt_runtime.errors import UserError

    with pytest.raises(UserError, match="adapter_start_layer"):
        adapter.Config.from_base(Config(**BASE), adapter_start_layer=3)
