"""`litgpt serve`: the batched engine in-process, then a real server process on 127.0.0.1 driven by
the official `openai` client (plain + streaming), concurrency, errors, disconnects and SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from litgpt_devcluster.hf_tiny import EOS_ID, make_hf_model
from serve_support import MODEL, build_checkpoint, metric, reference_greedy, running_server

PROMPTS = ["Hello world!", "What is a GPU?", "The quick brown fox", "Kubernetes runs", "Large language models",
           "How are you today?", "an operator reconciles", "thank you"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def model(checkpoint):
    from litgpt_runtime.checkpoint import load_model

    return load_model(checkpoint)


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    from litgpt_runtime.tokenizer import Tokenizer

    return Tokenizer(checkpoint)


# --- the engine, in-process ----------------------------------------------------------------
def test_batched_greedy_equals_sequential_generate(model, tokenizer):
    """Rows that join mid-flight (more prompts than slots, different lengths) decode exactly as alone."""
    from litgpt_runtime.serve.engine import BatchedGenerator, GenerationRequest

    prompts = [tokenizer.encode(p) for p in PROMPTS[:5]]
    expected = [reference_greedy(model, p, 12) for p in prompts]
    engine = BatchedGenerator(model, max_batch_size=3, max_seq_length=64)
    for i, p in enumerate(prompts):
        engine.submit(str(i), GenerationRequest(p, 12, stop_ids=(EOS_ID,)))
    got = {str(i): [] for i in range(len(prompts))}
    batch_sizes = set()
    while engine.has_work():
        for event in engine.step():
            batch_sizes.add(event.batch_size)
            if event.token_id is not None:
                got[event.key].append(event.token_id)
    assert [got[str(i)] for i in range(len(prompts))] == expected
    assert max(batch_sizes) == 3


def test_rows_stay_packed_as_requests_end_and_a_lone_request_runs_alone(model, tokenizer):
    """Requests that end early (or are cancelled) hand their row to the last busy one, cache and
    all: everyone still decodes exactly as alone, and the steps shrink to the busy rows."""
    from litgpt_runtime.serve.engine import BatchedGenerator, GenerationRequest

    lengths = [3, 14, 5, 9, 2, 7, 11]
    prompts = [tokenizer.encode(PROMPTS[i % len(PROMPTS)]) for i in range(len(lengths))]
    expected = {str(i): reference_greedy(model, p, n) for i, (p, n) in enumerate(zip(prompts, lengths))}
    engine = BatchedGenerator(model, max_batch_size=3, max_seq_length=64)
    for i, (p, n) in enumerate(zip(prompts, lengths)):
        engine.submit(str(i), GenerationRequest(p, n, stop_ids=(EOS_ID,)))
    got = {key: [] for key in expected}
    sizes = []
    cancelled = False
    while engine.has_work():
        events = engine.step()
        sizes.append(events[0].batch_size)
        for event in events:
            if event.token_id is not None:
                got[event.key].append(event.token_id)
        if not cancelled and len(got["3"]) == 2:  # a row in the middle goes away mid-flight
            assert engine.cancel("3")
            cancelled = True
    assert cancelled and got.pop("3") == expected.pop("3")[:2]
    assert got == expected
    assert max(sizes) == 3 and sizes[-1] == 1  # the longest request finishes alone
    assert all(s is None for s in engine.slots)


def test_a_row_that_cannot_run_fails_alone(model, tokenizer):
    """Regression: a request with "seed": 2**70 failed every in-flight request with a 500 (the
    generator raised after the row had left the waiting line, and the engine reset the batch), and
    "temperature": 1e-40 made the probabilities inf/NaN. Now only the bad row ends ("error")."""
    from litgpt_runtime.serve.engine import BatchedGenerator, GenerationRequest
    from litgpt_runtime.serve.sampling import SamplingParams

    prompts = [tokenizer.encode(p) for p in PROMPTS[:3]]
    expected = [reference_greedy(model, p, 10) for p in prompts]
    engine = BatchedGenerator(model, max_batch_size=4, max_seq_length=64)
    engine.submit("0", GenerationRequest(prompts[0], 10, stop_ids=(EOS_ID,)))
    engine.step()  # "0" is decoding when the bad request arrives
    engine.submit("bad", GenerationRequest(prompts[1], 10, sampling=SamplingParams(1.0), seed=2**70))
    engine.submit("1", GenerationRequest(prompts[1], 10, sampling=SamplingParams(1e-40), stop_ids=(EOS_ID,)))
    engine.submit("2", GenerationRequest(prompts[2], 10, stop_ids=(EOS_ID,)))
    got: dict[str, list] = {"0": [expected[0][0]], "1": [], "2": []}
    errors = []
    while engine.has_work():
        for event in engine.step():
            if event.finish_reason == "error":
                errors.append((event.key, event.error))
            elif event.token_id is not None:
                got[event.key].append(event.token_id)
    assert [key for key, _ in errors] == ["bad"] and "seed" in errors[0][1]
    assert [got[str(i)] for i in range(3)] == expected


def test_tokenizing_without_the_gil_gives_the_same_ids(tokenizer):
    """What the server tokenises prompts with (on a thread, so other requests go on meanwhile)."""
    text = " ".join(PROMPTS) * 20
    assert tokenizer.encode(text, release_gil=True) == tokenizer.encode(text)
    messages = [{"role": "user", "content": text}]
    assert tokenizer.encode_chat(messages, release_gil=True) == tokenizer.encode_chat(messages)


def test_output_index_computes_only_each_rows_last_logits(model):
    """What the engine asks for when a new row's prompt is padded next to decoding rows."""
    idx = torch.randint(0, model.config.vocab_size, (3, 5))
    last = torch.tensor([4, 0, 2])
    with torch.inference_mode():
        full = model(idx)  # (3, 5, V)
        picked = model(idx, output_index=last)
    assert picked.shape == (3, 1, full.size(-1))
    torch.testing.assert_close(picked[:, 0], full[torch.arange(3), last], rtol=1e-5, atol=1e-5)


def test_cancel_frees_the_slot(model, tokenizer):
    from litgpt_runtime.serve.engine import BatchedGenerator, GenerationRequest

    engine = BatchedGenerator(model, max_batch_size=1, max_seq_length=64)
    engine.submit("a", GenerationRequest(tokenizer.encode("Hello"), 40))
    engine.submit("b", GenerationRequest(tokenizer.encode("What"), 3))
    assert {e.key for e in engine.step()} == {"a"}  # b waits: one slot
    assert engine.cancel("a")
    keys = [e.key for _ in range(3) for e in engine.step()]
    assert keys == ["b", "b", "b"] and not engine.has_work()


def test_per_row_sampling_options(model, tokenizer):
    """top_k=1 is greedy whatever the temperature; a seeded row is reproducible in any batch."""
    from litgpt_runtime.serve.sampling import SamplingParams, sample_rows

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    greedy = logits.argmax(-1).tolist()
    params = [SamplingParams(1.5, top_k=1), SamplingParams(0.0), SamplingParams(1.0, top_p=1e-6)]
    assert sample_rows(logits, params, [None, None, None]) == greedy
    seeded = [SamplingParams(1.0), SamplingParams(1.0)]
    draws_a = sample_rows(logits[:2], seeded, [torch.Generator().manual_seed(7), None])[0]
    draws_b = sample_rows(logits[:2], seeded, [torch.Generator().manual_seed(7), None])[0]
    assert draws_a == draws_b


# --- a real server process -----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    with running_server(checkpoint, log, tmp_path_factory.mktemp("hf"), "--max_batch_size", "8", "--temperature", "0",
                        "--max_new_tokens", "16", "--max_seq_length", "256") as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.mark.slow
def test_models_and_greedy_chat_match_transformers(server, client, tokenizer):
    assert [m.id for m in client.models.list().data] == [MODEL]
    messages = [{"role": "user", "content": "What is a GPU?"}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)

    hf = make_hf_model("llama")  # the same weights the checkpoint was converted from
    prompt_ids = tokenizer.encode_chat(messages)
    out = hf.generate(torch.tensor([prompt_ids]), max_new_tokens=12, do_sample=False, eos_token_id=EOS_ID,
                      pad_token_id=EOS_ID)[0, len(prompt_ids):].tolist()
    expected = out[: out.index(EOS_ID)] if EOS_ID in out else out
    assert reply.choices[0].message.content == tokenizer.decode(expected)
    assert reply.usage.prompt_tokens == len(prompt_ids) and reply.usage.completion_tokens == len(expected)
    assert reply.choices[0].finish_reason == ("stop" if EOS_ID in out else "length")


@pytest.mark.slow
def test_streaming_and_completions_agree_with_generate(server, client, model, tokenizer):
    messages = [{"role": "user", "content": "Hello world!"}]
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    prompt = "The quick brown fox"
    expected = tokenizer.decode(reference_greedy(model, tokenizer.encode(prompt), 9))
    completion = client.completions.create(model=MODEL, prompt=prompt, max_tokens=9, temperature=0)
    assert completion.choices[0].text == expected
    pieces = [c.choices[0].text for c in client.completions.create(model=MODEL, prompt=prompt, max_tokens=9,
                                                                   temperature=0, stream=True)]
    assert "".join(pieces) == expected and len(pieces) > 2
    stop = expected[len(expected) // 2:][:2]  # a stop string ends the answer just before it
    stopped = client.completions.create(model=MODEL, prompt=prompt, max_tokens=9, temperature=0, stop=[stop])
    assert stopped.choices[0].text == expected[: expected.find(stop)] and stopped.choices[0].finish_reason == "stop"

    import requests

    out = requests.post(server["url"] + "/predict", json={"prompt": "Hello world!", "max_new_tokens": 10}).json()
    assert out == {"output": plain.choices[0].message.content}


@pytest.mark.slow
def test_eight_concurrent_clients_are_batched(server, client, model, tokenizer):
    import requests

    expected = [tokenizer.decode(reference_greedy(model, tokenizer.encode(p), 24)) for p in PROMPTS]
    before = requests.get(server["url"] + "/metrics").text
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        answers[i] = client.completions.create(model=MODEL, prompt=PROMPTS[i], max_tokens=24, temperature=0,
                                               stream=i % 2 == 0).choices[0].text if i % 2 else "".join(
            c.choices[0].text for c in client.completions.create(model=MODEL, prompt=PROMPTS[i], max_tokens=24,
                                                                 temperature=0, stream=True))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [answers.get(i) for i in range(8)] == expected
    after = requests.get(server["url"] + "/metrics").text
    tokens = metric(after, "litgpt_serve_batch_size_count") - metric(before, "litgpt_serve_batch_size_count")
    alone = (metric(after, "litgpt_serve_batch_size_bucket", 'le="1.0"')
             - metric(before, "litgpt_serve_batch_size_bucket", 'le="1.0"'))
    assert tokens > 0 and alone < tokens / 2, (alone, tokens)  # most tokens came from batched forwards


@pytest.mark.slow
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, client):
    import openai
    import requests

    url = server["url"]
    bad_json = requests.post(url + "/v1/chat/completions", data="{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and set(bad_json.json()["error"]) == {"message", "type", "param", "code"}
    unknown = requests.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_token": 3})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "max_token"
    with pytest.raises(openai.NotFoundError) as wrong_model:
        client.chat.completions.create(model="no/such-model", messages=[{"role": "user", "content": "hi"}])
    assert wrong_model.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model=MODEL, prompt="hello " * 400, max_tokens=5)
    assert too_long.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.completions.create(model=MODEL, prompt="hello", max_tokens=1000)
    assert too_many.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hello", max_tokens=3, n=2)
    assert client.completions.create(model=MODEL, prompt="hello", max_tokens=3).usage.completion_tokens >= 1


@pytest.mark.slow
def test_client_disconnect_mid_stream_frees_its_slot(server, client):
    import requests

    url = server["url"]
    stream = client.completions.create(model=MODEL, prompt="Hello", max_tokens=240, temperature=0, stream=True)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    deadline = time.time() + 30
    while metric(requests.get(url + "/metrics").text, "litgpt_serve_cancelled_requests_total") < 1:
        assert time.time() < deadline, "the server never noticed the disconnect"
        time.sleep(0.05)
    before = requests.get(url + "/metrics").text
    reply = client.completions.create(model=MODEL, prompt="What", max_tokens=6, temperature=0)
    after = requests.get(url + "/metrics").text
    new = metric(after, "litgpt_serve_batch_size_count") - metric(before, "litgpt_serve_batch_size_count")
    alone = (metric(after, "litgpt_serve_batch_size_bucket", 'le="1.0"')
             - metric(before, "litgpt_serve_batch_size_bucket", 'le="1.0"'))
    # had the abandoned request kept its slot (240 tokens to go), this one would share every step
    assert new == reply.usage.completion_tokens and alone == new


@pytest.mark.slow
def test_sigterm_shuts_down_cleanly(server):
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)  # to the main process only, as Kubernetes does
    assert proc.wait(timeout=60) == 0, server["log"].read_text()[-3000:]
    deadline = time.time() + 15  # no child (API process, worker, manager, resource tracker) left behind
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.time() < deadline, "processes of the server outlived it"
        time.sleep(0.2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server["port"]), timeout=2).close()
    assert "Traceback" not in server["log"].read_text()
