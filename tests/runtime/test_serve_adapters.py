"""Many LoRA finetunes on one base (`litgpt serve <base> --adapters name=path,...`): each row of a
batch that mixes adapters and the base decodes token for token as that adapter alone, the update
is LoRA's (the merged model's logits), and the `openai` client picks the adapter with "model"."""

from __future__ import annotations

import threading

import pytest
import torch

from litgpt_devcluster.hf_tiny import EOS_ID
from litgpt_devcluster.lora_tiny import make_lora_adapter
from serve_support import MODEL, build_checkpoint, running_server

PROMPTS = ["Hello world!", "What is a GPU?", "The quick brown fox", "Kubernetes runs", "thank you"]
# three finetunes with different ranks and targets (fused qkv parts, the projection, the MLP)
ADAPTERS = {
    "support": dict(lora_r=4, lora_query=True, lora_value=True),
    "legal": dict(lora_r=2, lora_alpha=4, lora_query=False, lora_key=True, lora_value=False, lora_projection=True),
    "chef": dict(lora_r=8, lora_alpha=16, lora_query=False, lora_value=False, lora_mlp=True),
}


@pytest.fixture(scope="module")
def base_and_adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    base = build_checkpoint(root)
    adapters = {name: make_lora_adapter(base, root / "out" / name / "final", seed=i, repo_id=MODEL, **settings)
                for i, (name, settings) in enumerate(ADAPTERS.items())}
    return base, adapters


def _run(engine, requests) -> dict[str, list[int]]:
    from litgpt_runtime.serve.engine import GenerationRequest

    for key, (prompt_ids, adapter) in requests.items():
        engine.submit(key, GenerationRequest(prompt_ids, 10, stop_ids=(EOS_ID,), adapter=adapter))
    got = {key: [] for key in requests}
    while engine.has_work():
        for event in engine.step():
            assert event.finish_reason != "error", event.error
            if event.token_id is not None:
                got[event.key].append(event.token_id)
    return got


def test_mixed_adapter_batch_equals_each_adapter_alone(base_and_adapters):
    from litgpt_runtime.checkpoint import load_model
    from litgpt_runtime.serve.adapters import attach_adapters
    from litgpt_runtime.serve.engine import BatchedGenerator
    from litgpt_runtime.tokenizer import Tokenizer

    base, adapters = base_and_adapters
    tokenizer = Tokenizer(base)
    model = load_model(base, dtype=torch.float32)
    rows = attach_adapters(model, list(adapters.items()), base)
    # every (prompt, adapter) pair: adapters 0 (base) .. 3, rows joining mid-flight in a 4-row batch
    requests = {f"{p}/{a}": (tokenizer.encode(PROMPTS[p]), a) for p in range(3) for a in range(4)}
    mixed = _run(BatchedGenerator(model, 4, 64, adapter_rows=rows, adapters=3), requests)
    alone = {}
    for key, request in requests.items():
        alone.update(_run(BatchedGenerator(model, 1, 64, adapter_rows=rows, adapters=3), {key: request}))
    assert mixed == alone
    # the adapters do change the answers (else this test would prove nothing)
    for p in range(3):
        assert len({tuple(alone[f"{p}/{a}"]) for a in range(4)}) >= 3


def test_the_batched_update_is_loras(base_and_adapters):
    """Logits of a row on adapter i equal the model with adapter i merged (litgpt merge_lora's math)."""
    import yaml

    from litgpt_runtime.checkpoint import WEIGHTS_FILE, load_model, load_state_dict
    from litgpt_runtime.finetune.lora import LORA_FILE, merge_state_dict
    from litgpt_runtime.model import GPT
    from litgpt_runtime.peft.lora import Config as LoRAConfig
    from litgpt_runtime.serve.adapters import attach_adapters

    base, adapters = base_and_adapters
    model = load_model(base, dtype=torch.float32)
    rows = attach_adapters(model, list(adapters.items()), base)
    idx = torch.randint(0, model.config.vocab_size, (4, 7), generator=torch.Generator().manual_seed(0))
    rows.index = torch.tensor([0, 1, 2, 3])
    with torch.inference_mode():
        got = model(idx)
    for number, folder in enumerate(adapters.values(), start=1):
        settings = {k: v for k, v in yaml.safe_load((folder / "hyperparameters.yaml").read_text()).items()
                    if k.startswith("lora_")}
        merged = merge_state_dict(LoRAConfig.from_base(model.config, **settings),
                                  {**load_state_dict(base / WEIGHTS_FILE), **load_state_dict(folder / LORA_FILE)})
        reference = GPT(model.config)
        reference.load_state_dict(merged)
        with torch.inference_mode():
            expected = reference(idx[number : number + 1])
        torch.testing.assert_close(got[number : number + 1], expected, rtol=1e-4, atol=1e-4)


def test_adapters_option_checks_its_input(base_and_adapters, tmp_path):
    from litgpt_runtime.errors import UserError
    from litgpt_runtime.serve.adapters import parse_adapters

    _, adapters = base_and_adapters
    with pytest.raises(UserError, match="name=path"):
        parse_adapters("support", {MODEL})
    with pytest.raises(UserError, match="used twice"):
        parse_adapters(f"a={adapters['support']},a={adapters['legal']}", {MODEL})
    with pytest.raises(UserError, match="base model's name"):
        parse_adapters(f"{MODEL}={adapters['support']}", {MODEL})
    with pytest.raises(UserError, match="--merge false"):
        parse_adapters(f"x={tmp_path}", {MODEL})
    assert list(parse_adapters(f" s={adapters['support']}, l={adapters['legal']} ", {MODEL})) == ["s", "l"]


@pytest.mark.slow
def test_one_server_answers_for_each_adapter(base_and_adapters, tmp_path):
    import openai
    import requests

    base, adapters = base_and_adapters
    spec = ",".join(f"{name}={folder}" for name, folder in adapters.items())
    with running_server(base, tmp_path / "server.log", tmp_path / "hf", "--adapters", spec, "--max_batch_size", "8",
                        "--max_seq_length", "128", "--temperature", "0", ready_path="/ready") as server:
        client = openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == [MODEL, *adapters]
        names = [MODEL, *adapters]

        def ask(name: str, prompt: str) -> str:
            return client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompt}],
                                                  max_tokens=12).choices[0].message.content

        alone = {(n, p): ask(n, p) for n in names for p in PROMPTS[:2]}
        mixed: dict = {}
        threads = [threading.Thread(target=lambda n=n, p=p: mixed.__setitem__((n, p), ask(n, p)))
                   for n in names for p in PROMPTS[:2]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert mixed == alone
        assert len({alone[(n, PROMPTS[0])] for n in names}) >= 3  # "model" picks different weights
        with pytest.raises(openai.NotFoundError):
            ask("no-such-adapter", "hi")
        metrics = requests.get(server["url"] + "/metrics").text
        assert 'litgpt_serve_generated_tokens_total{model="chef"}' in metrics
        assert "litgpt_serve_kv_cache_rows 8.0" in metrics  # set before LitServe forks the API process


def test_an_adapter_of_another_model_is_refused_before_serving(base_and_adapters, tmp_path):
    import dataclasses

    from litgpt_runtime.config import Config
    from litgpt_runtime.errors import UserError
    from litgpt_runtime.serve.cli import check_adapters

    base, adapters = base_and_adapters
    config = Config.from_checkpoint(base)
    check_adapters(config, adapters, base)  # the right base: fine
    deeper = dataclasses.replace(config, n_layer=config.n_layer + 1)
    with pytest.raises(UserError, match="trained on a different model.*n_layer"):
        check_adapters(deeper, {"support": adapters["support"]}, base)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for f in adapters["legal"].iterdir():
        (truncated / f.name).write_bytes(f.read_bytes())
    from litgpt_runtime.checkpoint import load_state_dict
    from litgpt_runtime.finetune.lora import LORA_FILE
    from litgpt_runtime.safetensors_io import save_state_dict

    weights = load_state_dict(truncated / LORA_FILE)
    weights.pop(next(iter(weights)))
    save_state_dict(truncated / LORA_FILE, weights)
    with pytest.raises(UserError, match="incomplete"):
        check_adapters(config, {"legal": truncated}, base)
