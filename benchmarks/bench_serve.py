"""Serving: our `litgpt serve` side by side with the real `litgpt serve`, 8 concurrent clients.

    .venv/bin/python benchmarks/bench_serve.py                      # pythia-14m, CPU, 1 thread
    .venv/bin/python benchmarks/bench_serve.py --model SmolLM2-135M --clients 8 --requests 4

Shares its setup with bench_generate.py (same venv with the pinned real litgpt, same random-weight
Hugging Face folder and tokenizer, each tool's own conversion); installs LitServe into that venv
when missing (the real `litgpt serve` needs it). Then, alternating rounds (ours, theirs, ...):
start the server, wait for /health, let `--clients` threads each POST `--requests` prompts to
/predict ({"prompt": ...}, the endpoint both servers have) one after another, all at once, and
stop the server. Both servers: greedy (--temperature 0), the same --max_new_tokens, float32,
CPU, the same thread count; ours with --max_batch_size = clients (the real one has no batching),
or `--max_batch_size N` (e.g. our default 8 with 1 client: a server sized for more than its load).
Reports p50/p95 request latency and generated tokens/s of each tool, and the ratios. Random
weights produce ids the small benchmark tokenizer cannot spell, so tokens are not counted from
the text: ours reports them exactly (/metrics, litgpt_serve_generated_tokens_total); for the real
server, which generates the same greedy continuations, the same count is used when the answers
are identical (checked and printed), else requests x max_new_tokens (an upper bound, flattering
it).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_generate import (MODELS, OUR_LITGPT, TOKENIZER_TEXT, WORK, build_hf_folder, convert_ours,  # noqa: E402
                            convert_theirs, real_litgpt_venv, run)


# pythia-14m's real architecture (its config.json), random weights; added to bench_generate's models.
MODELS.setdefault("pythia-14m", dict(
    org="EleutherAI",
    config=dict(architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", vocab_size=50304, hidden_size=128,
                intermediate_size=512, num_hidden_layers=6, num_attention_heads=4, rotary_pct=0.25,
                rotary_emb_base=10000, max_position_embeddings=2048, layer_norm_eps=1e-5, use_parallel_residual=True,
                hidden_act="gelu", tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, torch_dtype="float32"),
))


def ensure_litserve(env_dir: Path) -> None:
    python = env_dir / "bin" / "python"
    if subprocess.run([str(python), "-c", "import litserve"], capture_output=True).returncode != 0:
        import litserve

        print(f"installing litserve=={litserve.__version__} into {env_dir} (the real `litgpt serve` needs it)",
              flush=True)
        run([python, "-m", "pip", "install", "-q", f"litserve=={litserve.__version__}"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list, port: int, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([str(c) for c in cmd], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                            cwd=WORK, start_new_session=True)
    deadline = time.time() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {' '.join(map(str, cmd))}\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        if time.time() > deadline:
            raise SystemExit(f"server did not become healthy\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def load(port: int, prompts: list[str], clients: int, requests_per_client: int) -> tuple[list[float], list[str], float]:
    """All clients at once; each sends its requests one after another. (latencies, answers, wall)."""
    latencies: list[float] = []
    answers: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        session = requests.Session()
        barrier.wait()
        for r in range(requests_per_client):
            prompt = prompts[(i * requests_per_client + r) % len(prompts)]
            t0 = time.perf_counter()
            response = session.post(f"http://127.0.0.1:{port}/predict", json={"prompt": prompt}, timeout=600)
            response.raise_for_status()
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                answers.append(response.json()["output"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, answers, time.perf_counter() - t0


def generated_tokens(port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text  # summed over the model label
    return sum(float(v) for v in re.findall(r"^litgpt_serve_generated_tokens_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="pythia-14m")
    parser.add_argument("--litgpt_version", default="0.5.13")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max_batch_size", type=int, default=None, help="ours (default: --clients)")
    parser.add_argument("--requests", type=int, default=3, help="requests per client per round")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each server")
    args = parser.parse_args()

    env_dir = real_litgpt_venv(args.litgpt_version)
    ensure_litserve(env_dir)
    hf_dir = build_hf_folder(args.model)
    theirs_dir = convert_theirs(env_dir, hf_dir, args.model)
    ours_dir = convert_ours(hf_dir, args.model)
    sentences = " ".join(TOKENIZER_TEXT).split(". ")
    prompts = [" ".join(sentences[i % len(sentences)].split()[: 6 + i % 7]) for i in range(64)]

    common = ["--max_new_tokens", args.max_new_tokens, "--temperature", "0", "--precision", "32-true"]
    results: dict[str, dict[str, list]] = {"ours": {"lat": [], "rate": []}, "theirs": {"lat": [], "rate": []}}
    answer_sets: dict[str, list[str]] = {}
    ours_tokens, same_answers = 0, True
    logs = WORK / "serve_logs"
    logs.mkdir(parents=True, exist_ok=True)
    for round_ in range(args.rounds):
        for name in ("ours", "theirs"):
            port = free_port()
            if name == "ours":
                cmd = [OUR_LITGPT, "serve", ours_dir, "--port", port, "--accelerator", "cpu",
                       "--max_batch_size", args.max_batch_size or args.clients, "--max_seq_length", 512, *common]
            else:
                cmd = [env_dir / "bin" / "litgpt", "serve", theirs_dir, "--port", port, "--accelerator", "cpu",
                       *common]
            proc = start(cmd, port, args.threads, logs / f"{name}-{round_}.log")
            try:
                load(port, prompts, args.clients, 1)  # warm-up: one request per client
                before = generated_tokens(port) if name == "ours" else 0.0
                latencies, answers, wall = load(port, prompts, args.clients, args.requests)
                after = generated_tokens(port) if name == "ours" else 0.0
            finally:
                stop(proc)
            answer_sets[name] = sorted(answers)
            if name == "ours":
                tokens = int(after - before)
                ours_tokens = tokens
            elif answer_sets["theirs"] == answer_sets["ours"]:
                tokens = ours_tokens
            else:
                tokens = len(answers) * args.max_new_tokens
                same_answers = False
            results[name]["lat"] += latencies
            results[name]["rate"].append(tokens / wall)
            print(f"round {round_ + 1} {name:6}: {tokens / wall:7.1f} tokens/s, p50 {percentile(latencies, 0.5):.2f} s, "
                  f"p95 {percentile(latencies, 0.95):.2f} s ({len(answers)} requests, {tokens} tokens, {wall:.1f} s)",
                  flush=True)

    summary = {}
    for name, r in results.items():
        summary[name] = (statistics.median(r["rate"]), percentile(r["lat"], 0.5), percentile(r["lat"], 0.95))
    print(f"\nmodel {args.model} (random weights), CPU, {args.threads} thread(s), float32, greedy, "
          f"{args.max_new_tokens} new tokens, {args.clients} concurrent clients x {args.requests} requests")
    for name, label in (("theirs", f"litgpt {args.litgpt_version}"), ("ours", "ours")):
        rate, p50, p95 = summary[name]
        print(f"  {label:<14} {rate:8.1f} tokens/s   p50 {p50:6.2f} s   p95 {p95:6.2f} s")
    print(f"  same answers from both servers: {'yes' if same_answers else 'NO (their tokens = upper bound)'}")
    print(f"  throughput ratio (ours / litgpt): {summary['ours'][0] / summary['theirs'][0]:.2f}x   "
          f"p50 ratio: {summary['ours'][1] / summary['theirs'][1]:.2f}   p95 ratio: {summary['ours'][2] / summary['theirs'][2]:.2f}")


if __name__ == "__main__":
    main()
