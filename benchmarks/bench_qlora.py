"""QLoRA: peak memory and speed of `litgpt finetune_lora` with and without `--quantize`.

    .venv/bin/python benchmarks/bench_qlora.py                                  # SmolLM2-135M, CPU
    .venv/bin/python benchmarks/bench_qlora.py --modes bnb.nf4,bnb.int8 --model pythia-70m

The workload is bench_finetune.py's (same random-weight model folder, same equal-length Alpaca
records, same options; float32 LoRA at --precision 32-true), run once per mode. Measured per run:
the process's peak resident memory (wait4's ru_maxrss) and the median seconds per optimizer step
after the first. Memory is what QLoRA is for; the CPU's bitsandbytes kernels are not fast.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune import OUR_STEP, commands, make_data, timed_run  # noqa: E402
from bench_generate import WORK, build_hf_folder, convert_ours  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M")
    parser.add_argument("--modes", default="none,bnb.nf4,bnb.nf4-dq,bnb.int8")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--global_batch_size", type=int, default=4)
    parser.add_argument("--micro_batch_size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.precision = "32-true"

    hf_dir = build_hf_folder(args.model)
    ours_dir = convert_ours(hf_dir, args.model)
    data, length = make_data(hf_dir, args.length, records=64)
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    rows = []
    for mode in args.modes.split(","):
        ours, _ = commands("lora", Path("unused"), ours_dir, Path("unused"), data, args)
        if mode != "none":
            ours += ["--quantize", mode]
        steps, _, rss = timed_run(ours, args.threads, OUR_STEP, WORK / "logs" / f"qlora_{mode}.log")
        seconds = statistics.median(steps[1:]) if len(steps) > 1 else float("nan")
        print(f"  {mode:10s} peak RSS {rss:.2f} GiB, {seconds:.2f} s/step", flush=True)
        rows.append((mode, rss, seconds))

    base = rows[0][1]
    print(f"\n{args.model} (random weights), CPU, {args.threads} threads, LoRA at 32-true, {length}-token samples, "
          f"global batch {args.global_batch_size} = {args.global_batch_size // args.micro_batch_size} x micro "
          f"{args.micro_batch_size}")
    print(f"{'base weights':12s} | {'peak memory':>12s} | {'vs ' + rows[0][0]:>8s} | s/step")
    for mode, rss, seconds in rows:
        print(f"{mode:12s} | {rss:9.2f} GiB | {rss / base:7.2f}x | {seconds:.2f}")


if __name__ == "__main__":
    main()
