"""Which training precision is faster on this CPU: bf16-mixed against float32, ours only.

    .venv/bin/python benchmarks/bench_precision.py                      # this CPU as it is
    .venv/bin/python benchmarks/bench_precision.py --isa avx512_bf16    # as a CPU without AMX
    .venv/bin/python benchmarks/bench_precision.py --workloads pretrain,lora --rounds 3

The default training precision (`litgpt_runtime.train.launch.default_precision`) is chosen per CPU
from these figures. Workloads: `pretrain` (bench_pretrain.py's tiny Llama from scratch, 128-token
sequences) and `lora`, `full`, `adapter`, `adapter_v2` (bench_finetune.py's pythia-70m data and
options). Runs of the two precisions alternate, so load on the machine hits both alike; the figure is
tokens per CPU-second of the process (user + system time between step lines), which other load on a
shared machine disturbs far less than wall time.

`--isa avx512_bf16` caps oneDNN (which runs torch's bfloat16 matrix products on the CPU) at
AVX512_CORE_BF16: the bfloat16 dot-product instructions of AMD Zen 4/5 and Intel Cooper Lake, no
AMX tiles. float32 products go through MKL, which uses AVX-512 and never AMX, so they are unchanged.
This approximates such a CPU on an AMX machine (same cores, caches and memory); the probe printed
first shows which oneDNN kernel the capped run really uses. `--isa avx512_bf16-mkl_avx2` also holds
MKL to AVX2, the worst case for float32 should MKL take its AVX2 path on a non-Intel CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_finetune import OUR_STEP, commands, make_data, timed_run  # noqa: E402
from bench_generate import OUR_LITGPT, WORK, build_hf_folder, convert_ours  # noqa: E402
from bench_pretrain import CONFIG, tokens_file  # noqa: E402

ISA_ENV = {"native": {}, "avx512_bf16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"},
           # the same, with MKL's float32 products held to AVX2: the worst case for float32 should MKL
           # not use AVX-512 on a non-Intel CPU
           "avx512_bf16-mkl_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
PROBE = ("import torch; a = torch.randn(256, 256, dtype=torch.bfloat16); "
         "[torch.mm(a, a) for _ in range(2)]")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def onednn_kernel(env: dict) -> str:
    """The oneDNN implementation a bfloat16 product picks under `env` (from ONEDNN_VERBOSE)."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, **env, "ONEDNN_VERBOSE": "1"}).stdout
    # onednn_verbose,v1,primitive,exec,cpu,<kind>,<implementation>,...
    impls = {fields[6] for line in out.splitlines() if (fields := line.split(","))[0] == "onednn_verbose"
             and len(fields) > 6 and fields[3] == "exec"}
    return ", ".join(sorted(impls)) or "no oneDNN call (bf16 product not routed through oneDNN)"


def pretrain_command(precision: str, steps: int) -> list:
    import yaml

    hf_dir = build_hf_folder("pythia-70m")  # only its tokenizer is used (as in bench_pretrain.py)
    _, shards = tokens_file(hf_dir)
    config_file = WORK / "precision" / "bench-tiny.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(dict(CONFIG, block_size=128)))
    block, micro, global_batch = 128, 4, 8
    return [OUR_LITGPT, "pretrain", "--model_config", config_file, "--tokenizer_dir", hf_dir,
            "--data", "TokenShards", "--data.path", shards, "--out_dir", WORK / "out" / "precision" / "pretrain",
            "--precision", precision, "--devices", 1, "--train.max_tokens", steps * global_batch * block,
            "--train.global_batch_size", global_batch, "--train.micro_batch_size", micro,
            "--train.max_seq_length", block, "--train.log_interval", 1, "--train.lr_warmup_steps", 2,
            "--train.save_interval", "null", "--eval.interval", 10**6, "--eval.max_iters", 1,
            "--eval.final_validation", "false"], global_batch * block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="pretrain,lora,full,adapter,adapter_v2")
    parser.add_argument("--isa", default="native", choices=sorted(ISA_ENV))
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each precision per workload")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first interval is warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    isa_env = ISA_ENV[args.isa]
    os.environ.update(isa_env)  # timed_run passes os.environ on to the runs
    print(f"{cpu_name()}; --isa {args.isa}: bf16 products run oneDNN's {onednn_kernel(isa_env)}", flush=True)
    (WORK / "logs").mkdir(parents=True, exist_ok=True)

    hf_dir = build_hf_folder("pythia-70m")
    ours_dir = convert_ours(hf_dir, "pythia-70m")
    data, length = make_data(hf_dir, 128, records=64)
    rows = []
    for workload in args.workloads.split(","):
        per_cpu_s: dict[str, list[float]] = {"32-true": [], "bf16-mixed": []}
        for r in range(args.rounds):
            for precision in per_cpu_s:
                if workload == "pretrain":
                    cmd, tokens_per_step = pretrain_command(precision, args.steps)
                else:
                    options = SimpleNamespace(global_batch_size=4, micro_batch_size=2, steps=args.steps, length=length,
                                              precision=precision)
                    cmd, _ = commands(workload, Path("unused"), ours_dir, Path("unused"), data, options)
                    tokens_per_step = 4 * length
                log = WORK / "logs" / f"precision_{workload}_{precision}_{args.isa}_{r}.log"
                _, cpu, _ = timed_run(cmd, args.threads, OUR_STEP, log)
                if len(cpu) < 2:
                    raise SystemExit(f"{workload} {precision}: too few step lines to time (see {log})")
                rate = tokens_per_step / statistics.median(cpu[1:])
                per_cpu_s[precision].append(rate)
                print(f"  {workload:10s} {precision:10s} round {r + 1}: {rate:7.0f} tokens per CPU-second", flush=True)
        rows.append((workload, {p: statistics.median(v) for p, v in per_cpu_s.items()}))

    print(f"\n{cpu_name()}, --isa {args.isa}, {args.threads} thread(s), median over {args.rounds} round(s)")
    print(f"{'workload':10s} | {'32-true':>12s} | {'bf16-mixed':>12s} | bf16-mixed / 32-true")
    for workload, rate in rows:
        print(f"{workload:10s} | {rate['32-true']:12.0f} | {rate['bf16-mixed']:12.0f} | "
              f"{rate['bf16-mixed'] / rate['32-true']:.2f}x")


if __name__ == "__main__":
    main()
