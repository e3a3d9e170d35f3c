"""Bad clients do not hurt good ones: under a load of well-behaved `openai` clients, every bad
request gets an OpenAI-shaped 4xx, clients that leave free their rows, a full server says 503 with
Retry-After, and the good clients all get their full answers. A real `litgpt serve` on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from litgpt_devcluster.processes import group_rss_bytes
from serve_support import MODEL, build_checkpoint, metric, reference_greedy, running_server

GOOD_PROMPTS = ["Hello world!", "What is a GPU?", "The quick brown fox", "Kubernetes runs"]
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("robust"))


@pytest.fixture(scope="module")
def expected(checkpoint):
    from litgpt_runtime.checkpoint import load_model
    from litgpt_runtime.tokenizer import Tokenizer

    model, tokenizer = load_model(checkpoint), Tokenizer(checkpoint)
    return {p: tokenizer.decode(reference_greedy(model, tokenizer.encode(p), 16)) for p in GOOD_PROMPTS}


def _raw(port: int, path: str, body: bytes, stream_reads: int = 0, hold: float = 0.0) -> None:
    """A client on a bare socket: sends a POST, reads `stream_reads` chunks (0: none), then hangs up."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        for _ in range(stream_reads):
            if not sock.recv(4096):
                break
        time.sleep(hold)


def _bad_requests(window_prompt: str) -> list[tuple[str, str, bytes, int]]:
    def body(**fields) -> bytes:
        return json.dumps({"model": MODEL, "prompt": "hi", **fields}).encode()

    def chat(**fields) -> bytes:
        return json.dumps({"model": MODEL, "messages": CHAT, **fields}).encode()

    c, cc = "/v1/completions", "/v1/chat/completions"
    return [
        ("seed 2**70", cc, chat(seed=2**70), 400),
        ("seed -2**70", c, body(seed=-(2**70)), 400),
        ("temperature 5", c, body(temperature=5), 400),
        ("temperature -1", cc, chat(temperature=-1), 400),
        ("top_p 0", c, body(top_p=0), 400),
        ("top_k 0", c, body(top_k=0), 400),
        ("top_k 2**40", c, body(top_k=2**40), 400),
        ("max_tokens 0", c, body(max_tokens=0), 400),
        ("max_tokens -5", cc, chat(max_tokens=-5), 400),
        ("max_tokens 10**12", c, body(max_tokens=10**12), 400),
        ("n 2", cc, chat(n=2), 400),
        ("unknown field", c, body(max_token=3), 400),
        ("frequency_penalty 1", cc, chat(frequency_penalty=1), 400),
        ("logprobs", cc, chat(logprobs=True), 400),
        ("tools", cc, chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400),
        ("5 stop strings", c, body(stop=["a", "b", "c", "d", "e"]), 400),
        ("a 1000-char stop string", c, body(stop="x" * 1000), 400),
        ("a 5000-digit integer", c, b'{"model": "tiny/llama", "prompt": "hi", "max_tokens": ' + b"7" * 5000 + b"}", 400),
        ("NaN", c, b'{"model": "tiny/llama", "prompt": "hi", "temperature": NaN}', 400),
        ("invalid UTF-8", c, b'{"model": "tiny/llama", "prompt": "\xff\xfe\xfa"}', 400),
        ("a lone surrogate", cc, b'{"model": "tiny/llama", "messages": [{"role": "user", "content": "\\ud800"}]}', 400),
        ("malformed JSON", cc, b'{"model": "tiny/llama", "messages": [', 400),
        ("deep nesting", c, b"[" * 200_000 + b"]" * 200_000, 400),
        ("not an object", c, b"[1, 2]", 400),
        ("empty messages", cc, chat(messages=[]), 400),
        ("a bad role", cc, chat(messages=[{"role": "wizard", "content": "hi"}]), 400),
        ("a prompt longer than the context", c, body(prompt=window_prompt), 400),
        ("a 7 MiB prompt", c, body(prompt="hello world " * 600_000), 400),
        ("7 MiB of messages", cc, chat(messages=[{"role": "user", "content": "hi " * 1_200_000}] * 2), 400),
        ("a 9 MiB body", c, body(prompt="a" * (9 * 1024 * 1024)), 413),
        ("another model", cc, json.dumps({"model": "no/such", "messages": CHAT}).encode(), 404),
        ("predict with an unknown field", "/predict", json.dumps({"prompt": "hi", "seed": 1}).encode(), 400),
    ]


@pytest.mark.slow
def test_bad_clients_do_not_hurt_good_ones(checkpoint, expected, tmp_path):
    import openai
    import requests

    args = ("--max_batch_size", "4", "--max_waiting", "60", "--temperature", "0", "--max_new_tokens", "16",
            "--max_seq_length", "128")
    with running_server(checkpoint, tmp_path / "server.log", tmp_path / "hf", *args) as server:
        url, port = server["url"], server["port"]
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        failures: list[str] = []
        answered = [0]
        stop = threading.Event()

        def good_client(i: int) -> None:
            while not stop.is_set():
                prompt = GOOD_PROMPTS[answered[0] % len(GOOD_PROMPTS)]
                try:
                    if i % 2:
                        text = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16,
                                                         temperature=0).choices[0].text
                    else:
                        text = "".join(c.choices[0].text for c in client.completions.create(
                            model=MODEL, prompt=prompt, max_tokens=16, temperature=0, stream=True))
                except Exception as error:  # noqa: BLE001 - any failure of a good client is the finding
                    failures.append(f"{prompt!r}: {error!r}")
                    continue
                if text != expected[prompt]:
                    failures.append(f"{prompt!r}: {text!r} != {expected[prompt]!r}")
                answered[0] += 1

        def disconnect_wave(n: int) -> None:
            body = json.dumps({"model": MODEL, "prompt": "Hello", "max_tokens": 100, "stream": True}).encode()
            wave = [threading.Thread(target=_raw, args=(port, "/v1/completions", body, 2)) for _ in range(n)]
            for t in wave:
                t.start()
            for t in wave:
                t.join(120)

        def run_load(bad: bool, disconnects: int) -> None:
            stop.clear()
            good = [threading.Thread(target=good_client, args=(i,)) for i in range(4)]
            for t in good:
                t.start()
            # a client that never reads its stream, and a plain request whose client leaves early
            never_reads = threading.Thread(target=_raw, args=(port, "/v1/completions", json.dumps(
                {"model": MODEL, "prompt": "Hello", "max_tokens": 100, "stream": True}).encode(), 0, 3.0))
            leaves = threading.Thread(target=_raw, args=(port, "/v1/completions", json.dumps(
                {"model": MODEL, "prompt": "Hello", "max_tokens": 100}).encode(), 0, 0.3))
            never_reads.start()
            leaves.start()
            if bad:
                window_prompt = "hello " * 400
                for name, path, body, status in _bad_requests(window_prompt):
                    response = requests.post(url + path, data=body, headers={"Content-Type": "application/json"})
                    assert response.status_code == status, (name, response.status_code, response.text[:300])
                    error = response.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"} and error["message"], name
                    assert "Traceback" not in response.text, name
                # edge values that are fine: an tiny temperature is greedy; 64-bit seeds work
                tiny = client.completions.create(model=MODEL, prompt=GOOD_PROMPTS[0], max_tokens=16,
                                                 temperature=1e-40)
                assert tiny.choices[0].text == expected[GOOD_PROMPTS[0]]
                seeded = [client.completions.create(model=MODEL, prompt="hi", max_tokens=8, temperature=1.0,
                                                    seed=2**63 - 1).choices[0].text for _ in range(2)]
                assert seeded[0] == seeded[1]
                assert client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2, frequency_penalty=0,
                                                      logprobs=False).usage.completion_tokens >= 1
            for _ in range(disconnects // 20):
                disconnect_wave(20)
            stop.set()
            for t in [*good, never_reads, leaves]:
                t.join(120)

        def settled() -> str:
            deadline = time.time() + 10
            while True:
                text = requests.get(url + "/metrics").text
                busy = sum(metric(text, name) for name in ("litgpt_serve_requests_running",
                                                           "litgpt_serve_requests_waiting",
                                                           "litgpt_serve_kv_cache_rows_in_use"))
                if busy == 0:
                    return text
                assert time.time() < deadline, "rows or requests still held after the load ended:\n" + "\n".join(
                    line for line in text.splitlines() if "running" in line or "waiting" in line or "in_use" in line)
                time.sleep(0.1)

        # a huge prompt is refused without stalling the server (regression: tokenising 7 MB on the
        # event loop, or on a thread holding the GIL, kept /health from answering for 30 s)
        huge = threading.Thread(target=requests.post, args=(url + "/v1/chat/completions",), kwargs={
            "json": {"model": MODEL, "messages": [{"role": "user", "content": "hello world " * 600_000}]}})
        huge.start()
        worst = 0.0
        while huge.is_alive():
            started = time.perf_counter()
            assert requests.get(url + "/health", timeout=10).status_code == 200
            worst = max(worst, time.perf_counter() - started)
        huge.join()
        assert worst < 2.0, worst

        run_load(bad=False, disconnects=20)  # warm-up: allocator pools, threads, code paths
        before = group_rss_bytes(server["proc"].pid)
        cancelled_before = metric(settled(), "litgpt_serve_cancelled_requests_total")
        run_load(bad=True, disconnects=200)
        after_metrics = settled()
        after = group_rss_bytes(server["proc"].pid)

        assert not failures, failures[:5]
        assert answered[0] >= 8
        # most of the 200 hung up mid-generation (the others before theirs started: nothing to stop)
        assert metric(after_metrics, "litgpt_serve_cancelled_requests_total") - cancelled_before >= 100
        print(f"server RSS before {before / 2**20:.0f} MiB, after {after / 2**20:.0f} MiB "
              f"({after / before:.3f}x), {answered[0]} good answers")
        assert after <= before * 1.05

        # alone on the server, a plain (non-streaming) request whose client leaves stops generating
        _raw(port, "/v1/completions", json.dumps({"model": MODEL, "prompt": "Hello", "max_tokens": 110}).encode(),
             0, 0.05)
        time.sleep(1.0)
        text = settled()
        cancelled = "litgpt_serve_cancelled_requests_total"
        generated = "litgpt_serve_generated_tokens_total"
        assert metric(text, cancelled) == metric(after_metrics, cancelled) + 1
        assert metric(text, generated) - metric(after_metrics, generated) < 110
        assert "Traceback" not in server["log"].read_text()


@pytest.mark.slow
def test_a_full_server_answers_503_with_retry_after(checkpoint, tmp_path):
    import requests

    with running_server(checkpoint, tmp_path / "server.log", tmp_path / "hf", "--max_batch_size", "1",
                        "--max_waiting", "1", "--max_seq_length", "256", "--temperature", "0") as server:
        responses: list = []

        def ask() -> None:
            responses.append(requests.post(server["url"] + "/v1/completions",
                                           json={"model": MODEL, "prompt": "Hello", "max_tokens": 200}))

        clients = [threading.Thread(target=ask) for _ in range(12)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(120)
        busy = [r for r in responses if r.status_code == 503]
        assert busy and all(r.headers["Retry-After"] == "1" and r.json()["error"]["code"] == "server_overloaded"
                            for r in busy)
        assert all(r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
                   for r in responses if r not in busy)
        # every place was given back: a server at rest takes a request again
        assert requests.post(server["url"] + "/v1/completions",
                             json={"model": MODEL, "prompt": "hi", "max_tokens": 2}).status_code == 200
