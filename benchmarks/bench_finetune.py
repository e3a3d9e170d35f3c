"""Finetuning speed and memory: our `litgpt finetune_*` side by side with the real `litgpt` package.

    .venv/bin/python benchmarks/bench_finetune.py                       # pythia-70m, CPU, lora/full/adapter
    .venv/bin/python benchmarks/bench_finetune.py --model SmolLM2-135M
    .venv/bin/python benchmarks/bench_finetune.py --methods lora --steps 10 --threads 2

Shares the real litgpt's venv, the random-weight Hugging Face folder and both conversions with
bench_generate.py (everything under benchmarks/.work/, git-ignored). The workload is the same for
both tools: one Alpaca JSON file whose records all have the same token length (so every step
processes exactly global_batch_size x length tokens in both, whatever the shuffling), prompts
masked, the same micro/global batch sizes (gradient accumulation included), the same precision
(float32 unless --precision) on the CPU, the same thread count, no validation in between, LoRA on
query+value with r=8 / adapter prompt 10 from layer 2 (both tools' defaults).

Measured per run: wall-clock seconds between consecutive optimizer-step log lines (stamped as each
line arrives; the first interval is warm-up and dropped), tokens/s = tokens per step / median
seconds per step, and the process's peak resident memory (wait4's ru_maxrss). Runs of the two tools
alternate so background load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import OUR_LITGPT, TOKENIZER_TEXT, WORK, build_hf_folder, convert_ours, convert_theirs, real_litgpt_venv  # noqa: E402

OUR_STEP = re.compile(r"^step \d+/")
THEIR_STEP = re.compile(r"iter time: .*\(step\)")
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def make_data(hf_dir: Path, length: int, records: int) -> tuple[Path, int]:
    """`records` identical-length Alpaca records whose rendered prompt + answer + EOS is about
    `length` tokens (the Alpaca prompt text alone is ~90 tokens with the benchmark tokenizer; the
    answer fills the rest)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    words = " ".join(TOKENIZER_TEXT * 40).split()

    def n_tokens(instruction: str, output: str) -> int:
        return len(tok.encode(ALPACA.format(instruction=instruction)).ids) + len(tok.encode(output).ids) + 1

    instruction = " ".join(words[:4])
    output, j = "", 4
    while True:
        candidate = (output + " " + words[j]).strip()
        if n_tokens(instruction, candidate) > length:
            break
        output, j = candidate, j + 1
    actual = n_tokens(instruction, output)
    path = WORK / f"finetune_data_{length}.json"
    path.write_text(json.dumps([{"instruction": instruction, "output": output}] * records))
    return path, actual


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_run(cmd: list, threads: int, step_line: re.Pattern, log: Path) -> tuple[list[float], list[float], float]:
    """(wall seconds between consecutive step lines, CPU seconds of the process between them,
    peak RSS in GiB) of one run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    stamps, cpu = [], []
    with open(log, "w") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in proc.stdout:
            if step_line.search(line):
                stamps.append(time.perf_counter())
                cpu.append(cpu_seconds(proc.pid))
            out.write(line)
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"command failed (see {log}): {' '.join(map(str, cmd))}")
    diffs = lambda xs: [b - a for a, b in zip(xs, xs[1:])]  # noqa: E731
    return diffs(stamps), diffs(cpu), usage.ru_maxrss / 2**20


def commands(method: str, env_dir: Path, ours_dir: Path, theirs_dir: Path, data: Path, args) -> tuple[list, list]:
    shared = ["--data", "JSON", "--data.json_path", data, "--data.val_split_fraction", "0.05", "--data.mask_prompt", "true",
              "--train.global_batch_size", args.global_batch_size, "--train.micro_batch_size", args.micro_batch_size,
              "--train.max_steps", args.steps, "--train.max_seq_length", args.length + 16, "--train.save_interval", 100000,
              "--train.log_interval", 1, "--train.lr_warmup_steps", 1, "--eval.interval", 100000, "--eval.max_iters", 1,
              "--precision", args.precision, "--devices", 1]
    ours = [OUR_LITGPT, f"finetune_{method}", ours_dir, *shared, "--out_dir", WORK / "out" / "ours" / method,
            "--eval.final_validation", "false", "--train.max_norm", "null"]
    theirs = [env_dir / "bin" / "litgpt", f"finetune_{method}", theirs_dir, *shared,
              "--out_dir", WORK / "out" / "theirs" / method, "--eval.final_validation", "false",
              "--eval.max_new_tokens", 1]
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pythia-70m", help="SmolLM2-135M or pythia-70m (the default: a loaded 2-core machine)")
    parser.add_argument("--litgpt_version", default="0.5.13")
    parser.add_argument("--methods", default="lora,full,adapter")
    parser.add_argument("--length", type=int, default=128, help="tokens per sample")
    parser.add_argument("--global_batch_size", type=int, default=4)
    parser.add_argument("--micro_batch_size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per run (the first interval is warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of each tool per method")
    parser.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed", "bf16-true"),
                        help="the same for both tools (litgpt's own default on a CPU is bf16-mixed)")
    args = parser.parse_args()

    env_dir = real_litgpt_venv(args.litgpt_version)
    hf_dir = build_hf_folder(args.model)
    theirs_dir = convert_theirs(env_dir, hf_dir, args.model)
    ours_dir = convert_ours(hf_dir, args.model)
    data, length = make_data(hf_dir, args.length, records=64)
    tokens_per_step = args.global_batch_size * length
    (WORK / "logs").mkdir(parents=True, exist_ok=True)

    rows = []
    for method in args.methods.split(","):
        ours_cmd, theirs_cmd = commands(method, env_dir, ours_dir, theirs_dir, data, args)
        times: dict[str, list[float]] = {"ours": [], "theirs": []}
        cpu_times: dict[str, list[float]] = {"ours": [], "theirs": []}
        peak: dict[str, float] = {"ours": 0.0, "theirs": 0.0}
        for r in range(args.rounds):
            for who, cmd, pattern in (("theirs", theirs_cmd, THEIR_STEP), ("ours", ours_cmd, OUR_STEP)):
                steps, cpu, rss = timed_run(cmd, args.threads, pattern, WORK / "logs" / f"finetune_{method}_{who}_{r}.log")
                if len(steps) < 2:
                    raise SystemExit(f"{who} {method}: too few step lines to time (see benchmarks/.work/logs)")
                times[who] += steps[1:]
                cpu_times[who] += cpu[1:]
                peak[who] = max(peak[who], rss)
                print(f"  {method:8s} {who:6s} round {r + 1}: {statistics.median(steps[1:]):.3f} s/step wall, "
                      f"{statistics.median(cpu[1:]):.3f} CPU-s/step, peak RSS {rss:.2f} GiB", flush=True)
        spt = {who: statistics.median(t) for who, t in times.items()}
        cpt = {who: statistics.median(t) for who, t in cpu_times.items()}
        rows.append((method, spt, cpt, peak))

    print(f"\n{args.model} (random weights), CPU, {args.threads} threads, {args.precision}, {length}-token samples "
          f"(prompt masked), global batch {args.global_batch_size} = {args.global_batch_size // args.micro_batch_size} "
          f"x micro {args.micro_batch_size}, {args.steps} steps (median of the step intervals after the first)")
    print("wall: seconds per step and tokens/s by the clock; cpu: CPU-seconds the process used per step, and")
    print(f"tokens per CPU-second x {args.threads} threads (robust to other load on the machine)")
    print(f"{'method':8s} | {'':4s} | {'litgpt ' + args.litgpt_version:>22s} | {'ours':>22s} | tokens/s ratio | peak memory")
    for method, spt, cpt, peak in rows:
        for label, table in (("wall", spt), ("cpu", cpt)):
            tps = {who: tokens_per_step * (args.threads if label == "cpu" else 1) / s for who, s in table.items()}
            memory = (f"{peak['ours'] / peak['theirs']:.2f}x ({peak['ours']:.2f} vs {peak['theirs']:.2f} GiB)"
                      if label == "wall" else "")
            print(f"{method:8s} | {label:4s} | {table['theirs']:6.2f} s {tps['theirs']:7.0f} tok/s | {table['ours']:6.2f} s "
                  f"{tps['ours']:7.0f} tok/s | {tps['ours'] / tps['theirs']:13.2f}x | {memory}")


if __name__ == "__main__":
    main()
