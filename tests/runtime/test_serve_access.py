"""`litgpt serve` access and readiness, against a real server on 127.0.0.1: the API key guards
every route but the probes and the metrics (and never shows up in the logs or the process list),
and /ready means a real 1-token answer -- a model with corrupt weights loads (/health 200) but is
never ready, and its clients get a 500 without the worker's error text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve_support import MODEL, build_checkpoint, running_server

KEY = "sk-test-5f0d2c9e8b7a6d4c"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("access"))


def _process_texts(pgid: int) -> str:
    """The command lines of the server's processes (what `ps` shows anyone on the machine)."""
    texts = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    texts.append((entry / "cmdline").read_bytes().decode(errors="replace"))
            except (OSError, ProcessLookupError):
                continue
    return "\n".join(texts)


@pytest.mark.slow
def test_api_key_guards_every_route_but_probes_and_metrics(checkpoint, tmp_path):
    import openai
    import requests

    with running_server(checkpoint, tmp_path / "server.log", tmp_path / "hf", "--max_seq_length", "128",
                        env={"LITGPT_API_KEY": KEY}, ready_path="/ready") as server:
        url = server["url"]
        good = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        assert good.completions.create(model=MODEL, prompt="hi", max_tokens=3).usage.completion_tokens >= 1
        assert [m.id for m in good.models.list().data] == [MODEL]

        wrong = openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            wrong.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"
        for method, path in [("post", "/v1/chat/completions"), ("post", "/v1/completions"), ("get", "/v1/models"),
                             ("post", "/predict"), ("get", "/info"), ("get", "/"), ("get", "/docs")]:
            response = getattr(requests, method)(url + path, json={"prompt": "hi"})
            assert response.status_code == 401, path
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
            assert "Authorization: Bearer" in response.json()["error"]["message"]
        basic = requests.post(url + "/predict", json={"prompt": "hi"}, headers={"Authorization": f"Basic {KEY}"})
        assert basic.status_code == 401
        assert requests.post(url + "/predict", json={"prompt": "hi", "max_new_tokens": 2},
                             headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        for path in ("/health", "/ready", "/metrics"):
            assert requests.get(url + path).status_code == 200, path
        metrics = requests.get(url + "/metrics").text
        assert 'litgpt_serve_requests_total{endpoint="/v1/completions",status="401"}' in metrics

        assert KEY not in _process_texts(server["proc"].pid)
    assert KEY not in server["log"].read_text()


@pytest.mark.slow
def test_a_model_with_corrupt_weights_is_never_ready(checkpoint, tmp_path):
    import requests
    from safetensors.torch import load_file, save_file

    from litgpt_runtime.checkpoint import WEIGHTS_FILE, mark_complete

    broken = tmp_path / "checkpoints" / MODEL
    broken.mkdir(parents=True)
    for f in checkpoint.iterdir():
        if f.is_file() and f.name != WEIGHTS_FILE:
            (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(checkpoint / WEIGHTS_FILE)
    name = next(k for k in weights if k.endswith("norm_2.weight"))
    weights[name] = weights[name] * float("nan")  # one layer norm gone bad: every logit is NaN
    save_file(weights, broken / WEIGHTS_FILE)
    mark_complete(broken, repo_id=MODEL, revision="test")

    with running_server(broken, tmp_path / "server.log", tmp_path / "hf", "--max_seq_length", "128") as server:
        url = server["url"]
        ready = requests.get(url + "/ready", timeout=60)
        assert ready.status_code == 503 and "non-finite" in ready.text
        reply = requests.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 3})
        assert reply.status_code == 500 and reply.json()["error"]["code"] == "generation_failed"
        assert "non-finite" not in reply.text and "Traceback" not in reply.text
        assert requests.get(url + "/health").status_code == 200  # loaded, but not ready
    assert "non-finite" in server["log"].read_text()  # the operator finds the reason in the log
