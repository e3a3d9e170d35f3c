"""`litgpt serve --quantize`: the server loads the base weights quantized with bitsandbytes (as
generate and chat do) and answers greedy requests with the tokens the quantized model gives."""

from __future__ import annotations

import pytest
import torch

from finetune_tiny import make_checkpoint
from serve_support import MODEL, reference_greedy, running_server

pytestmark = pytest.mark.slow
pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # Wide enough for bitsandbytes' 4-bit blocks of 64 weights (as test_qlora's model).
    root = tmp_path_factory.mktemp("serve_quantize")
    return make_checkpoint(root / "checkpoints" / MODEL, hidden_size=128, intermediate_size=256)


def test_served_quantized_model_answers_as_the_quantized_model(checkpoint, tmp_path):
    import openai

    from litgpt_runtime.quantize import load_quantized_model
    from litgpt_runtime.tokenizer import Tokenizer

    tokenizer = Tokenizer(checkpoint)
    prompt = "The quick brown fox"
    quantized = load_quantized_model(checkpoint, "bnb.nf4", "cpu", torch.float32)
    expected = tokenizer.decode(reference_greedy(quantized, tokenizer.encode(prompt), 8))

    log = tmp_path / "server.log"
    with running_server(checkpoint, log, tmp_path / "hf", "--quantize", "bnb.nf4", "--precision", "32-true",
                        "--temperature", "0", "--max_seq_length", "128") as server:
        client = openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0, timeout=120)
        completion = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0)
    assert completion.choices[0].text == expected
    assert "quantized with bnb.nf4" in log.read_text()


def test_bad_or_unsupported_quantize_is_one_message(litgpt, checkpoint):
    bad = litgpt("serve", str(checkpoint), "--quantize", "bnb.nf2", timeout=120)
    assert bad.returncode == 2 and "bnb.nf4" in bad.stderr
    both = litgpt("serve", str(checkpoint), "--quantize", "bnb.nf4", "--adapters", f"a={checkpoint}", timeout=120)
    assert both.returncode == 1 and "--adapters does not combine with --quantize" in both.stderr
    assert "Traceback" not in both.stderr
