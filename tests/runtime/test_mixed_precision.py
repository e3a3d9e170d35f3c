"""Training in bf16-mixed on the CPU: attention's gradient is computed in float32, the rest in bf16.

ATen's CPU flash-attention backward is several times slower in bfloat16 than in float32, so the
model runs causal attention in float32 whenever a gradient will flow through it on the CPU (and
keeps the faster bfloat16 forward for inference). These tests pin down both halves and that the
gradients of a bf16-mixed step stay close to float32's.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import litgpt_runtime.model as model_module
from litgpt_runtime.config import Config
from litgpt_runtime.model import GPT

TINY = dict(n_layer=2, n_embd=64, n_head=4, n_query_groups=2, block_size=32, vocab_size=96, padded_vocab_size=96,
            norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=96, bias=False)


@pytest.fixture
def attention_dtypes(monkeypatch):
    """The dtype each causal attention call computed in (what autocast would hand the kernel)."""
    seen: list[torch.dtype] = []
    real = F.scaled_dot_product_attention

    def recording(q, k, v, *args, **kwargs):
        autocast = torch.is_autocast_enabled("cpu")
        seen.append(torch.get_autocast_dtype("cpu") if autocast else q.dtype)
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", recording)
    return seen


def tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(Config(**TINY))


def loss_and_grads(model: GPT, ids: torch.Tensor, autocast: bool) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_bf16_mixed_training_runs_attention_in_float32_and_keeps_gradients_close(attention_dtypes):
    model = tiny()
    ids = torch.randint(0, 96, (3, 25), generator=torch.Generator().manual_seed(1))
    exact_loss, exact = loss_and_grads(model, ids, autocast=False)
    assert attention_dtypes == [torch.float32] * 2
    attention_dtypes.clear()

    mixed_loss, mixed = loss_and_grads(model, ids, autocast=True)
    assert attention_dtypes == [torch.float32] * 2  # not bfloat16, though autocast is on
    assert mixed_loss != exact_loss  # the projections really ran in bfloat16
    assert abs(mixed_loss - exact_loss) < 0.02
    for name, grad in exact.items():
        # bf16 matmuls: ~3 significant digits per product; relative to the gradient's own scale
        error = (mixed[name] - grad).norm() / grad.norm()
        assert error < 0.05, (name, float(error))


def test_inference_keeps_the_bfloat16_attention_forward(attention_dtypes):
    model = tiny()
    ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids)
    assert attention_dtypes == [torch.bfloat16] * 2
    attention_dtypes.clear()
    bf16_model = tiny().to(torch.bfloat16)
    with torch.no_grad():
        out = bf16_model(ids)
    assert out.dtype == torch.bfloat16 and attention_dtypes == [torch.bfloat16] * 2


def test_bf16_true_training_returns_bfloat16_activations(attention_dtypes):
    """Weights in bfloat16, no autocast: attention computes in float32 and hands bfloat16 back."""
    model = tiny().to(torch.bfloat16)
    ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(3))
    logits = model(ids)
    assert logits.dtype == torch.bfloat16 and attention_dtypes == [torch.float32] * 2
    logits.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in model.parameters())
