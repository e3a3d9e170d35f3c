"""Many LoRA finetunes on one server: 8 clients spread over 4 adapters vs 8 clients on the base vs
4 separate single-adapter servers, throughput and memory as ratios.

    .venv/bin/python benchmarks/bench_serve_adapters.py                      # pythia-14m, CPU, 1 thread
    .venv/bin/python benchmarks/bench_serve_adapters.py --model pythia-70m --lora_r 16

Our `litgpt serve` only (the real litgpt serves no adapters). The base is bench_generate's
random-weight model; the adapters are random LoRA finetunes in `finetune_lora --merge false`'s
layout (litgpt_devcluster.lora_tiny), rank --lora_r on the query and value projections. Three
set-ups, each loaded with --clients threads sending --requests requests one after another to
/v1/completions (greedy, --max_new_tokens, all at once after a warm-up):

    shared, base      one server with --adapters (all 4 loaded), every client asks for the base
    shared, adapters  the same server, client i asks for adapter i % 4
    separate          4 servers with one adapter each, client i on server i % 4

Reports generated tokens/s (from the responses' usage), p50 latency and the resident memory of the
server processes (all of LitServe's processes, summed), each as a ratio to `shared, base`. Each
server gets --threads threads, so `separate` uses 4x the threads of the others.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import threading
import time
from pathlib import Path

import requests

from bench_serve import MODELS, OUR_LITGPT, WORK, build_hf_folder, convert_ours, free_port, percentile, start, stop
from litgpt_devcluster.lora_tiny import make_lora_adapter
from litgpt_devcluster.processes import group_rss_bytes

PROMPTS = ["The quick brown fox", "What is a GPU?", "Kubernetes runs containers", "Large language models",
           "Hello world, this is", "An operator reconciles", "Thank you for", "In the beginning"]


def load(targets: list[tuple[int, str]], requests_per_client: int, max_new_tokens: int) -> tuple[list[float], int, float]:
    """Client i sends its requests to targets[i] = (port, model). (latencies, tokens, wall)."""
    latencies: list[float] = []
    tokens = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(len(targets))

    def client(i: int) -> None:
        port, model = targets[i]
        session = requests.Session()
        barrier.wait()
        for r in range(requests_per_client):
            t0 = time.perf_counter()
            response = session.post(f"http://127.0.0.1:{port}/v1/completions", timeout=600, json={
                "model": model, "prompt": PROMPTS[(i + r) % len(PROMPTS)], "max_tokens": max_new_tokens,
                "temperature": 0})
            response.raise_for_status()
            with lock:
                latencies.append(time.perf_counter() - t0)
                tokens[0] += response.json()["usage"]["completion_tokens"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(targets))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, tokens[0], time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="pythia-14m")
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3, help="requests per client")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="per server")
    args = parser.parse_args()

    base = convert_ours(build_hf_folder(args.model), args.model)
    root = WORK / "adapters" / args.model
    shutil.rmtree(root, ignore_errors=True)
    names = [f"tenant{i}" for i in range(args.adapters)]
    folders = {name: make_lora_adapter(base, root / name / "final", seed=i, lora_r=args.lora_r,
                                       lora_alpha=2 * args.lora_r, lora_dropout=0.0)
               for i, name in enumerate(names)}
    logs = WORK / "serve_logs"
    logs.mkdir(parents=True, exist_ok=True)
    common = ["--accelerator", "cpu", "--precision", "32-true", "--temperature", "0", "--max_seq_length", 512,
              "--max_batch_size", args.clients]

    def serve(adapters: dict[str, Path], log: str) -> tuple[int, object]:
        port = free_port()
        spec = ",".join(f"{n}={f}" for n, f in adapters.items())
        proc = start([OUR_LITGPT, "serve", base, "--port", port, "--adapters", spec, *common], port, args.threads,
                     logs / log)
        return port, proc

    results = {}

    def measure(label: str, targets: list[tuple[int, str]], procs: list) -> None:
        load(targets, 1, args.max_new_tokens)  # warm-up
        latencies, tokens, wall = load(targets, args.requests, args.max_new_tokens)
        rss = sum(group_rss_bytes(p.pid) for p in procs)
        results[label] = (tokens / wall, statistics.median(latencies), rss)
        print(f"{label:18} {tokens / wall:7.1f} tokens/s  p50 {percentile(latencies, 0.5):.2f} s  "
              f"RSS {rss / 2**20:.0f} MiB  ({tokens} tokens, {wall:.1f} s)", flush=True)

    port, proc = serve(folders, "adapters-shared.log")
    try:
        measure("shared, base", [(port, str(base))] * args.clients, [proc])
        measure("shared, adapters", [(port, names[i % len(names)]) for i in range(args.clients)], [proc])
    finally:
        stop(proc)
    servers = [serve({name: folders[name]}, f"adapters-{name}.log") for name in names]
    try:
        measure("separate", [(servers[i % len(names)][0], names[i % len(names)]) for i in range(args.clients)],
                [p for _, p in servers])
    finally:
        for _, p in servers:
            stop(p)

    rate0, p50_0, rss0 = results["shared, base"]
    print(f"\nmodel {args.model} (random weights), CPU, {args.threads} thread(s) per server, float32, greedy, "
          f"{args.max_new_tokens} new tokens, {args.clients} clients x {args.requests} requests, "
          f"{args.adapters} adapters of rank {args.lora_r} (query, value)")
    for label, (rate, p50, rss) in results.items():
        print(f"  {label:18} throughput {rate / rate0:.2f}x   p50 {p50 / p50_0:.2f}x   memory {rss / rss0:.2f}x")


if __name__ == "__main__":
    main()
