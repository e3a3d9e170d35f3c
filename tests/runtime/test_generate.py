"""Generation: token-for-token equal to transformers' greedy decoding, sampling rules, and the
`litgpt generate` CLI end to end (download from the local Hub, then generate)."""

from __future__ import annotations

import pytest
import torch

from litgpt_devcluster.hf_tiny import EOS_ID, make_hf_model_dir
from litgpt_devcluster.hub_server import make_repo
from litgpt_runtime.checkpoint import load_model, mark_complete
from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint
from litgpt_runtime.errors import UserError
from litgpt_runtime.generate import generate_tokens, sample
from litgpt_runtime.tokenizer import Tokenizer

REPO = "tiny-org/tiny-llama"
PROMPT = "What is a GPU?"


def _hf_greedy(hf_model, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None) -> list[int]:
    hf_model.generation_config.eos_token_id = eos_id
    hf_model.generation_config.pad_token_id = eos_id if eos_id is not None else 0
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                min_new_tokens=0)
    new = out[0, len(prompt_ids):].tolist()
    if eos_id is not None and eos_id in new:
        new = new[:new.index(eos_id)]  # we stop before the stop token; transformers includes it
    return new


def _convert(hf_dir, out_dir):
    convert_hf_checkpoint(hf_dir, out_dir)
    mark_complete(out_dir, repo_id="test/" + hf_dir.name)
    return out_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(hf folder, our checkpoint folder, transformers model) of the tiny llama."""
    import transformers

    base = tmp_path_factory.mktemp("tiny")
    hf_dir = make_hf_model_dir("llama", base / "tiny-llama")
    ours = _convert(hf_dir, base / "ours")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    return hf_dir, ours, hf_model


@pytest.mark.parametrize("family", ["llama", *(pytest.param(f, marks=pytest.mark.slow)
                                              for f in ("mistral", "gemma2", "qwen3", "gpt_neox"))])
def test_greedy_generation_matches_transformers_token_for_token(family, tmp_path):
    """40 new tokens: past Mistral's/Gemma's 6-7 token sliding windows, through the KV cache."""
    import transformers

    hf_dir = make_hf_model_dir(family, tmp_path / family, seed=1)
    model = load_model(_convert(hf_dir, tmp_path / "ours"))
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32,
                                                                 attn_implementation="eager").eval()
    prompt = Tokenizer(hf_dir).encode("Hello world! How are you today?")
    expected = _hf_greedy(hf_model, prompt, 40, eos_id=None)
    ours = list(generate_tokens(model, prompt, 40, temperature=0.0))
    assert ours == expected


def test_stops_before_the_stop_token(tiny):
    hf_dir, ours_dir, hf_model = tiny
    model = load_model(ours_dir)
    prompt = Tokenizer(hf_dir).encode(PROMPT)
    free = list(generate_tokens(model, prompt, 30, temperature=0.0))
    stop_at = free[5]
    stopped = list(generate_tokens(model, prompt, 30, temperature=0.0, stop_ids=[stop_at]))
    assert stopped == free[:free.index(stop_at)]


def test_kv_cache_decoding_equals_recomputing_everything(tiny):
    _, ours_dir, _ = tiny
    model = load_model(ours_dir)
    prompt = [5, 17, 42, 99, 3]
    cached = list(generate_tokens(model, prompt, 12, temperature=0.0))
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(12):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert cached == seq[len(prompt):]


def test_context_limit(tiny):
    _, ours_dir, _ = tiny
    model = load_model(ours_dir)
    block = model.config.block_size
    with pytest.raises(UserError, match="context"):
        list(generate_tokens(model, [7] * block, 5))
    assert len(list(generate_tokens(model, [7] * (block - 6), 50, temperature=0.0))) == 6  # stops when full
    assert len(list(generate_tokens(model, list(range(10)), 50, temperature=0.0, context_length=16))) == 6
    # a short request does not shrink the context of the next one
    assert len(list(generate_tokens(model, [7] * (block - 3), 50, temperature=0.0))) == 3


def test_sampling_rules():
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0, -1.0])
    g = torch.Generator().manual_seed(0)
    assert int(sample(logits, temperature=0.0)) == 0
    draws = [int(sample(logits, temperature=1.5, top_k=2, generator=g)) for _ in range(300)]
    assert set(draws) == {0, 1}
    probs = torch.softmax(logits, -1)
    draws = [int(sample(logits, temperature=1.0, top_p=float(probs[0] + probs[1] / 2), generator=g)) for _ in range(300)]
    assert set(draws) == {0, 1}  # the smallest head reaching top_p: tokens 0 and 1
    draws = [int(sample(logits, temperature=1.0, generator=g)) for _ in range(2000)]
    share = draws.count(0) / len(draws)
    assert abs(share - float(probs[0])) < 0.05  # plain sampling follows the softmax
    a = [int(sample(logits, 1.0, generator=torch.Generator().manual_seed(7))) for _ in range(5)]
    b = [int(sample(logits, 1.0, generator=torch.Generator().manual_seed(7))) for _ in range(5)]
    assert a == b


# --- the CLI, end to end --------------------------------------------------------------------
@pytest.mark.slow
def test_cli_downloads_on_first_use_then_generates_like_transformers(litgpt, hub, hub_env, tiny, tmp_path):
    hf_dir, _, hf_model = tiny
    make_repo(hub.root, REPO, hf_dir)
    root = tmp_path / "ck"
    result = litgpt("generate", REPO, "--prompt", PROMPT, "--temperature", "0", "--max_new_tokens", "24",
                    "--checkpoint_root_dir", str(root), env=hub_env)
    assert result.returncode == 0, result.stderr
    assert "downloading it first" in result.stderr
    assert "tokens/sec" in result.stderr

    tokenizer = Tokenizer(hf_dir)
    prompt_ids = tokenizer.encode_chat([{"role": "user", "content": PROMPT}])  # == transformers', see test_tokenizer
    expected_ids = _hf_greedy(hf_model, prompt_ids, 24, eos_id=EOS_ID)
    assert len(expected_ids) >= 5  # a real continuation, not an immediate stop
    assert result.stdout == tokenizer.decode(expected_ids) + "\n"

    # --raw skips the chat template; offline works once the checkpoint is there.
    before = len(hub.requests)
    raw = litgpt("generate", REPO, "--prompt", PROMPT, "--raw", "true", "--temperature", "0", "--max_new_tokens",
                 "24", "--checkpoint_root_dir", str(root), env={**hub_env, "HF_HUB_OFFLINE": "1"})
    assert raw.returncode == 0, raw.stderr
    expected_raw = _hf_greedy(hf_model, tokenizer.encode(PROMPT), 24, eos_id=EOS_ID)
    assert raw.stdout == tokenizer.decode(expected_raw) + "\n"
    assert len(hub.requests) == before


@pytest.mark.slow
def test_cli_generate_accepts_a_checkpoint_path(litgpt, tiny):
    _, ours_dir, _ = tiny
    result = litgpt("generate", str(ours_dir), "--prompt", "Hi", "--max_new_tokens", "5", "--temperature", "0.7",
                    "--top_k", "20", "--top_p", "0.9", "--device", "cpu", "--precision", "32-true")
    assert result.returncode == 0, result.stderr
    assert "tokens/sec" in result.stderr


def test_inference_mode_does_not_leak_into_the_callers_code(tiny):
    """Regression: a `with torch.inference_mode()` around the loop stayed on while the generator
    was suspended, so the caller's tensors between tokens became inference tensors."""
    _, ours_dir, _ = tiny
    model = load_model(ours_dir)
    for _ in generate_tokens(model, [5, 17, 42], 3, temperature=0.0):
        assert not torch.is_inference_mode_enabled()


@pytest.mark.slow
def test_compiled_model_is_not_recompiled_by_the_next_request(tiny):
    """The rope tables exist before the first compiled forward: a graph traced while they did not
    would guard on that and recompile on the second request (seconds each on a CPU)."""
    _, ours, _ = tiny
    model = torch.compile(load_model(ours))
    prompt = Tokenizer(ours).encode(PROMPT)
    first = list(generate_tokens(model, prompt, 6, temperature=0.0))  # compiles prefill and decode
    with torch._dynamo.config.patch(error_on_recompile=True):
        second = list(generate_tokens(model, prompt, 6, temperature=0.0))
    assert second == first
