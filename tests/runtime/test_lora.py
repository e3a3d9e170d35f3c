"""LoRA on the fused qkv and other Linears: step 0 equals the base, merging is exact, only the
targeted parts change, only LoRA parameters train."""

from __future__ import annotations

import pytest
import torch

from litgpt_runtime.config import Config
from litgpt_runtime.errors import UserError
from litgpt_runtime.model import GPT
from litgpt_runtime.peft import lora

BASE = dict(n_layer=2, n_embd=32, n_head=4, n_query_groups=2, block_size=32, vocab_size=64,
            norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48)
TARGETS = [
    dict(),  # defaults: query + value
    dict(lora_query=False, lora_key=True, lora_value=False),
    dict(lora_key=True, lora_projection=True, lora_mlp=True, lora_head=True),
    dict(lora_query=False, lora_value=False, lora_mlp=True),
]


def base_and_lora(**targets):
    torch.manual_seed(0)
    base_config = Config(**BASE)
    base = GPT(base_config).eval()
    model = lora.GPT(lora.Config.from_base(base_config, lora_dropout=0.0, **targets)).eval()
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all("lora_" in k for k in missing)
    return base, model


def randomize_lora(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)


@pytest.mark.parametrize("targets", TARGETS)
def test_step_zero_equals_base(targets):
    base, model = base_and_lora(**targets)
    x = torch.randint(0, 64, (2, 12))
    torch.testing.assert_close(model(x), base(x), rtol=0, atol=0)


@pytest.mark.parametrize("targets", TARGETS)
def test_merged_equals_unmerged(targets):
    base, model = base_and_lora(**targets)
    randomize_lora(model)
    x = torch.randint(0, 64, (2, 12))
    unmerged = model(x)
    assert not torch.allclose(unmerged, base(x), atol=1e-3)  # the update does something
    merged_state = lora.merged_state_dict(model)
    torch.testing.assert_close(model(x), unmerged, rtol=1e-5, atol=1e-5)
    plain = GPT(Config(**BASE)).eval()
    plain.load_state_dict(merged_state)  # strict: merged keys are exactly the base keys
    torch.testing.assert_close(plain(x), unmerged, rtol=1e-5, atol=1e-5)


def test_fused_qkv_updates_only_the_targeted_part():
    """Regression guard: with key-only LoRA on a GQA model, query and value columns of the fused
    qkv output must not move."""
    _, model = base_and_lora(lora_query=False, lora_key=True, lora_value=False)
    randomize_lora(model)
    qkv = model.transformer.h[0].attn.qkv
    x = torch.randn(3, 32)
    delta = qkv(x) - torch.nn.functional.linear(x, qkv.weight, qkv.bias)
    q, kv = 4 * 8, 2 * 8
    assert delta[:, :q].abs().max() == 0 and delta[:, q + kv:].abs().max() == 0
    assert delta[:, q : q + kv].abs().max() > 0


def test_only_lora_parameters_train():
    _, model = base_and_lora()  # query + value, r=8
    lora.mark_only_lora_as_trainable(model)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    r, n_embd, q, kv = 8, 32, 32, 16
    per_layer = 2 * r * n_embd + (q + kv) * r  # A: (2r, in); B: (q rows + v rows, r)
    assert sum(trainable.values()) == 2 * per_layer
    assert all("lora_" in n for n in trainable)


def test_lora_head_refused_for_tied_embeddings():
    with pytest.raises(UserError, match="shares weights"):
        lora.Config.from_base(Config(**BASE, tie_embeddings=True), lora_head=True)
    with pytest.raises(UserError, match="at least one target"):
        lora.Config.from_base(Config(**BASE), lora_query=False, lora_value=False)
