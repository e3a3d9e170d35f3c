"""`litgpt serve` stopped by SIGTERM while streaming: every request in progress gets its whole
answer, and so does one that arrives after the signal; /ready says 503 meanwhile, then every
process of the server is gone (what a rollout of a ModelServer relies on: the old pod finishes its
requests while the new one takes the traffic).

Both ways a signal arrives, with the same behaviour: to the main process only (a kubelet signals
the container's first process) and to the whole process group (the dev cluster's exec node). In the
second, uvicorn used to act on the signal itself and reset a request that was still connecting."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from serve_support import build_checkpoint, running_server

pytestmark = pytest.mark.slow

PROMPTS = ["Hello world!", "What is a GPU?", "The quick brown fox", "Kubernetes runs"]
MAX_TOKENS = 240


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("serve"))


def stream(url: str, prompt: str, results: dict, first_token: threading.Event) -> None:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    pieces, finish = [], None
    try:
        for chunk in client.completions.create(model="tiny/llama", prompt=prompt, max_tokens=MAX_TOKENS,
                                               temperature=0, stream=True):
            first_token.set()
            pieces.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        results[prompt] = ("".join(pieces), finish)
    except Exception as error:  # recorded: the test says which request was dropped and how
        results[prompt] = error


def answers(url: str) -> dict:
    results: dict = {}
    first = threading.Event()
    threads = [threading.Thread(target=stream, args=(url, p, results, first)) for p in PROMPTS]
    for t in threads:
        t.start()
    return {"results": results, "first": first, "threads": threads}


@pytest.mark.parametrize("to_group", [False, True], ids=["main-process", "process-group"])
def test_sigterm_finishes_the_requests_in_progress(checkpoint, tmp_path, to_group):
    log = tmp_path / "server.log"
    with running_server(checkpoint, log, tmp_path / "hf", "--max_batch_size", "4", "--max_seq_length", "256",
                        "--drain_timeout", "60", ready_path="/ready") as server:
        url, proc = server["url"], server["proc"]
        expected = answers(url)  # the same requests, undisturbed
        for t in expected["threads"]:
            t.join()
        assert all(isinstance(r, tuple) for r in expected["results"].values()), expected["results"]

        run = answers(url)
        assert run["first"].wait(60)
        if to_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        late: dict = {}
        late_thread = threading.Thread(target=stream, args=(url, PROMPTS[0], late, threading.Event()))
        late_thread.start()
        statuses = set()
        while any(t.is_alive() for t in run["threads"]):
            statuses.add(requests.get(url + "/ready", timeout=5).status_code)  # still listening
            time.sleep(0.05)
        late_thread.join(timeout=120)
        assert run["results"] == expected["results"], log.read_text()[-3000:]
        assert late == {PROMPTS[0]: expected["results"][PROMPTS[0]]}, log.read_text()[-3000:]
        assert 503 in statuses, statuses
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        deadline = time.time() + 15  # no child (API process, worker, manager) left behind
        while True:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            assert time.time() < deadline, "processes of the server outlived it"
            time.sleep(0.2)
    text = log.read_text()
    assert "Drained" in text and "Traceback" not in text, text[-3000:]
