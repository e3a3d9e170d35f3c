"""Column-major Linear weights for CPU inference (litgpt_runtime.cpu_layout): the same model, the same
greedy tokens as transformers, tied weights still tied."""

from __future__ import annotations

import pytest
import torch

from litgpt_devcluster.hf_tiny import make_hf_model_dir
from litgpt_runtime.checkpoint import load_model, mark_complete
from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint
from litgpt_runtime.cpu_layout import column_major_helps, use_column_major_weights
from litgpt_runtime.generate import generate_tokens
from litgpt_runtime.tokenizer import Tokenizer


def _linear_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("family", ["llama", "qwen2"])  # untied and tied output head
def test_column_major_model_generates_like_transformers(family, tmp_path):
    import transformers

    hf_dir = make_hf_model_dir(family, tmp_path / family, seed=3)
    ours_dir = tmp_path / "ours"
    convert_hf_checkpoint(hf_dir, ours_dir)
    mark_complete(ours_dir, repo_id="test/" + family)
    row_major = load_model(ours_dir)
    model = load_model(ours_dir)
    tied = model.lm_head.weight is model.transformer.wte.weight
    assert tied == (family == "qwen2")

    changed = use_column_major_weights(model)

    weights = _linear_weights(model)
    assert changed == len({id(w) for w in weights}) > 0
    for w in weights:
        assert w.stride() == (1, w.shape[0])  # (out, in) tensor over (in, out) memory
    assert (model.lm_head.weight is model.transformer.wte.weight) == tied
    assert use_column_major_weights(model) == 0  # idempotent

    ids = torch.tensor([Tokenizer(hf_dir).encode("Hello world! How are you today?")])
    with torch.inference_mode():
        torch.testing.assert_close(model(ids), row_major(ids), rtol=1e-5, atol=1e-5)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf_model.generate(ids, max_new_tokens=30, do_sample=False, min_new_tokens=30,
                                     pad_token_id=0)[0, ids.shape[1]:].tolist()
    assert list(generate_tokens(model, ids[0].tolist(), 30, temperature=0.0)) == expected


def test_only_float32_on_cpu_with_mkl_is_relaid():
    assert column_major_helps(torch.device("cpu"), torch.float32) == torch.backends.mkl.is_available()
    assert not column_major_helps(torch.device("cpu"), torch.bfloat16)  # measured slower there
    assert not column_major_helps(torch.device("cuda"), torch.float32)
    assert not column_major_helps(torch.device("meta"), torch.float32)
