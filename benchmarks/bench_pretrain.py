"""Pretraining throughput: our `litgpt pretrain` side by side with the real litgpt's, same config,
same tokens, same batches.

    .venv/bin/python benchmarks/bench_pretrain.py                    # tiny Llama, CPU, 1 thread
    .venv/bin/python benchmarks/bench_pretrain.py --steps 60 --threads 2
    .venv/bin/python benchmarks/bench_pretrain.py --compile --precision bf16-mixed   # litgpt's CPU default

Shares the venv with the pinned real litgpt and the benchmark tokenizer with bench_generate.py.
The text (the tokenizer's sentences, shuffled into documents) is tokenised once with that
tokenizer; ours reads the ids as a token shard folder (`--data TokenShards`), the real one through
a minimal DataModule over the very same ids. Both train the same tiny Llama-style config from
scratch: the same precision (float32 unless --precision), CPU, one device, the same micro/global
batch and sequence length, no validation. Both tools run at once, each in its own process, but never compute at the same time:
they pass a baton (two named pipes) at every micro-batch fetch, so each trains one micro-batch
(forward, backward and, every few, the optimizer step) while the other waits blocked. Each keeps
the time it held the baton; tokens/s = tokens / that time, over the micro-batches after the
warm-up (the real litgpt compiles its model during its first steps). Interleaving at this grain
cancels the slow swings in speed of a shared virtual machine, which otherwise dominate the
figure; neither tool competes with the other for a core or for memory bandwidth. Prints the median
tokens/s of each over the rounds and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_generate import TOKENIZER_TEXT, WORK, build_hf_folder, real_litgpt_venv  # noqa: E402

CONFIG = dict(name="bench-tiny", block_size=256, vocab_size=600, padded_vocab_size=640, n_layer=4, n_embd=256,
              n_head=8, n_query_groups=8, head_size=32, rotary_percentage=1.0, parallel_residual=False, bias=False,
              norm_class_name="RMSNorm", norm_eps=1e-5, mlp_class_name="LLaMAMLP", intermediate_size=688,
              rope_base=10000)

# Runs inside the real litgpt's venv.
THEIRS = r'''
import json, sys, time
import numpy as np, torch
from torch.utils.data import DataLoader, Dataset
from litgpt.args import EvalArgs, TrainArgs
from litgpt.config import Config
from litgpt.data import DataModule
from litgpt.pretrain import setup

a = json.loads(sys.argv[1])
exec(a["baton_code"])
ids = np.load(a["tokens"])
stamps = []

class Chunks(Dataset):
    def __init__(self, block):
        self.block = block
    def __len__(self):
        return (len(ids) - 1) // self.block
    def __getitem__(self, i):
        return torch.from_numpy(ids[i * self.block: i * self.block + self.block + 1].astype(np.int64))

def stamped(batch):
    pass_baton(a, stamps)
    return torch.stack(batch)

class Data(DataModule):
    def connect(self, tokenizer=None, batch_size=1, max_seq_length=-1):
        self.batch_size, self.block = batch_size, max_seq_length
    def train_dataloader(self):
        g = torch.Generator().manual_seed(a["seed"])
        return DataLoader(Chunks(self.block), batch_size=self.batch_size, shuffle=True, generator=g,
                          collate_fn=stamped, drop_last=True)
    def val_dataloader(self):
        return DataLoader(Chunks(self.block), batch_size=self.batch_size, collate_fn=torch.stack)

setup("bench-tiny", model_config=Config(**a["config"]), out_dir=__import__("pathlib").Path(a["out_dir"]),
      precision=a["precision"], data=Data(), devices=1, tokenizer_dir=__import__("pathlib").Path(a["tokenizer_dir"]),
      logger_name="csv", seed=a["seed"],
      train=TrainArgs(save_interval=None, log_interval=1, global_batch_size=a["global_batch_size"],
                      micro_batch_size=a["micro_batch_size"], max_tokens=a["max_tokens"], max_seq_length=a["block"],
                      lr_warmup_steps=2, max_norm=1.0, min_lr=4e-5, tie_embeddings=False),
      eval=EvalArgs(interval=10**6, max_iters=1, initial_validation=False, final_validation=False))
release_baton(a)
json.dump(stamps, open(a["stamps"], "w"))
'''

# Runs in this venv with our runtime.
OURS = r'''
import json, sys, time
from pathlib import Path
import litgpt_runtime.train.text_data as text_data
from litgpt_runtime.pretrain import setup
from litgpt_runtime.train.args import EvalArgs, TrainArgs

a = json.loads(sys.argv[1])
exec(a["baton_code"])
stamps = []
plain = text_data.stack_collate
def stamped(samples):
    pass_baton(a, stamps)
    return plain(samples)
text_data.stack_collate = stamped  # what pretrain.main collates training micro-batches with

setup(model_config=Path(a["config_file"]), tokenizer_dir=Path(a["tokenizer_dir"]),
      data=text_data.TokenShards(path=Path(a["shards"])), out_dir=Path(a["out_dir"]), precision=a["precision"],
      devices=1, seed=a["seed"], compile=a["compile"],
      train=TrainArgs(save_interval=None, log_interval=1, global_batch_size=a["global_batch_size"],
                      micro_batch_size=a["micro_batch_size"], max_tokens=a["max_tokens"], max_seq_length=a["block"],
                      lr_warmup_steps=2, learning_rate=4e-4, weight_decay=0.1, max_norm=1.0, min_lr=4e-5),
      eval=EvalArgs(interval=10**6, max_iters=1, initial_validation=False, final_validation=False))
release_baton(a)
json.dump(stamps, open(a["stamps"], "w"))
'''


# Lock-step: at each micro-batch fetch a tool ends its turn (records the span it held the baton),
# hands the baton over and blocks until it comes back. A tool that finishes hands it over for good
# ("done"), after which the other never waits again.
BATON = r'''
import atexit, os, time
def _turn(a):
    if a.get("_other_done"):
        return
    if a.get("_in") is None:  # first fetch: O_RDWR opens a FIFO without waiting for the other end
        a["_in"], a["_out"] = os.open(a["baton_in"], os.O_RDWR), os.open(a["baton_out"], os.O_RDWR)
        atexit.register(release_baton, a)
        if a["starts"]:
            return
    else:
        os.write(a["_out"], b"t")
    if os.read(a["_in"], 1) == b"d":
        a["_other_done"] = True
def pass_baton(a, spans):
    if a.get("_since") is not None:
        spans.append(time.perf_counter() - a["_since"])
    _turn(a)
    a["_since"] = time.perf_counter()
def release_baton(a):
    # The span still open (the last micro-batch, then saving) is not counted.
    if a.get("_out") is not None and not a.get("_released"):
        a["_released"] = True
        os.write(a["_out"], b"d")
'''


def tokens_file(hf_dir: Path) -> tuple[Path, Path]:
    """The benchmark text as token ids: a .npy (theirs) and a shard folder (ours)."""
    import numpy as np
    from tokenizers import Tokenizer

    npy, shards = WORK / "pretrain" / "tokens.npy", WORK / "pretrain" / "shards"
    if npy.is_file() and (shards / "index.json").is_file():
        return npy, shards
    from litgpt_runtime.train.text_data import write_token_shards

    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    rng = random.Random(0)
    sentences = " ".join(TOKENIZER_TEXT).split(". ")
    documents = [tok.encode(" ".join(rng.choice(sentences) for _ in range(40))).ids + [0] for _ in range(400)]
    ids = np.asarray([t for d in documents for t in d], dtype=np.uint16)
    npy.parent.mkdir(parents=True, exist_ok=True)
    np.save(npy, ids)
    write_token_shards(documents, shards, vocab_size=tok.get_vocab_size())
    return npy, shards


def rate(spans: list[float], warmup: int, tokens_per_micro: int) -> float:
    """tokens/s over the micro-batches after the warm-up (each span: one micro-batch's work)."""
    timed = spans[warmup:]
    return len(timed) * tokens_per_micro / sum(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--litgpt_version", default="0.5.13")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup_steps", type=int, default=5)
    parser.add_argument("--global_batch_size", type=int, default=8)
    parser.add_argument("--micro_batch_size", type=int, default=4)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed", "bf16-true"),
                        help="the same for both tools (litgpt's own default on a CPU is bf16-mixed)")
    parser.add_argument("--compile", action="store_true", help="torch.compile ours too (the real one always does)")
    args = parser.parse_args()

    env_dir = real_litgpt_venv(args.litgpt_version)
    hf_dir = build_hf_folder("pythia-70m")  # only its tokenizer is used
    npy, shards = tokens_file(hf_dir)
    work = WORK / "pretrain"
    config_file = work / "bench-tiny.yaml"
    import yaml

    config = dict(CONFIG, block_size=max(CONFIG["block_size"], args.block))  # longer --block: a longer context
    config_file.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    micro_per_step = args.global_batch_size // args.micro_batch_size
    warmup = args.warmup_steps * micro_per_step
    tokens_per_micro = args.micro_batch_size * args.block
    rates: dict[str, list[float]] = {"ours": [], "theirs": []}
    for round_ in range(args.rounds):
        pipes = {name: work / f"baton-{name}" for name in ("ours", "theirs")}
        for path in pipes.values():
            path.unlink(missing_ok=True)
            os.mkfifo(path)
        first = ("ours", "theirs")[round_ % 2]
        procs, stamp_files, logs = {}, {}, {}
        for name, other in (("ours", "theirs"), ("theirs", "ours")):
            out_dir = work / f"out-{name}"
            stamp_files[name] = work / f"stamps-{name}.json"
            common = dict(seed=42, max_tokens=args.steps * args.global_batch_size * args.block,
                          global_batch_size=args.global_batch_size, micro_batch_size=args.micro_batch_size,
                          block=args.block, precision=args.precision, out_dir=str(out_dir), stamps=str(stamp_files[name]),
                          tokenizer_dir=str(hf_dir), baton_code=BATON, baton_in=str(pipes[name]),
                          baton_out=str(pipes[other]), starts=name == first)
            if name == "ours":
                payload = dict(common, config_file=str(config_file), shards=str(shards), compile=args.compile)
                cmd = [sys.executable, "-c", OURS, json.dumps(payload)]
                env_run = {**env, "PYTHONPATH": str(HERE.parent / "runtime")}
            else:
                payload = dict(common, config=config, tokens=str(npy))
                cmd = [str(env_dir / "bin" / "python"), "-c", THEIRS, json.dumps(payload)]
                env_run = env
            logs[name] = work / f"log-{name}.txt"
            with open(logs[name], "w") as log:
                procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env_run, cwd=work)
        # A tool that dies never hands the baton back: stop the other instead of waiting forever.
        while any(p.poll() is None for p in procs.values()):
            failed = [n for n, p in procs.items() if p.poll() not in (None, 0)]
            if failed:
                for p in procs.values():
                    p.kill()
                raise SystemExit(f"{failed[0]} failed:\n{logs[failed[0]].read_text()[-4000:]}")
            time.sleep(0.5)
        measured = {n: rate(json.loads(f.read_text()), warmup, tokens_per_micro) for n, f in stamp_files.items()}
        for name, r in measured.items():
            rates[name].append(r)
        print(f"round {round_ + 1}: ours {measured['ours']:8.1f} tokens/s, litgpt {measured['theirs']:8.1f} tokens/s, "
              f"ratio {measured['ours'] / measured['theirs']:.2f}x", flush=True)
    ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["theirs"])
    print(f"\ntiny Llama ({CONFIG['n_layer']} layers, {CONFIG['n_embd']} wide) from scratch, CPU, {args.threads} "
          f"thread(s), {args.precision}, micro-batch {args.micro_batch_size} x {args.block} tokens, global batch "
          f"{args.global_batch_size}, {args.steps} steps ({args.warmup_steps} warm-up not timed)"
          f"{', ours compiled' if args.compile else ''}")
    print(f"  litgpt {args.litgpt_version:<8} {theirs:9.1f} tokens/s  (rounds: {', '.join(f'{r:.0f}' for r in rates['theirs'])})")
    print(f"  ours            {ours:9.1f} tokens/s  (rounds: {', '.join(f'{r:.0f}' for r in rates['ours'])})")
    print(f"  ratio (ours / litgpt): {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
