"""Greedy generation speed: our `litgpt generate` side by side with the real `litgpt` package.

    .venv/bin/python benchmarks/bench_generate.py                    # SmolLM2-135M, CPU, 1 thread
    .venv/bin/python benchmarks/bench_generate.py --model pythia-70m --threads 4 --compile

What it does (everything under benchmarks/.work/, git-ignored):
1. Creates a virtual environment with the real litgpt (`pip install litgpt==<--litgpt_version>`,
   pinned) unless it exists.
2. Builds a Hugging Face folder with random weights for a config both tools know (the real
   architecture of SmolLM2-135M or pythia-70m) and a small byte-level BPE tokenizer, using this
   environment's transformers.
3. Converts it with each tool: the real litgpt's `convert_to_litgpt`, our `convert_hf_checkpoint`.
4. Runs the same workload through both CLIs, alternating (ours, theirs, ours, ...) so background
   load hits both alike: the same prompt (same tokens), greedy (`--temperature 0`),
   `--max_new_tokens`, float32, CPU, the same thread count (OMP_NUM_THREADS / MKL_NUM_THREADS).
   Each CLI generates `--samples + 1` times in one process and reports tokens/s per sample (both
   count prefill + decode, from the start of generation to the last token); the first sample is
   warm-up and dropped. It prints the median tokens/s of each tool and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
WORK = HERE / ".work"
OUR_LITGPT = Path(sys.executable).parent / "litgpt"

# HF configs of the real architectures (from the models' config.json); weights are random.
MODELS = {
    "SmolLM2-135M": dict(
        org="HuggingFaceTB",
        config=dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=49152, hidden_size=576,
                    intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
                    hidden_act="silu", bos_token_id=0, eos_token_id=0, torch_dtype="float32"),
    ),
    "pythia-14m": dict(
        org="EleutherAI",
        config=dict(architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", vocab_size=50304, hidden_size=128,
                    intermediate_size=512, num_hidden_layers=6, num_attention_heads=4, rotary_pct=0.25,
                    rotary_emb_base=10000, max_position_embeddings=2048, layer_norm_eps=1e-5,
                    use_parallel_residual=True, hidden_act="gelu", tie_word_embeddings=False, bos_token_id=0,
                    eos_token_id=0, torch_dtype="float32"),
    ),
    "pythia-70m": dict(
        org="EleutherAI",
        config=dict(architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", vocab_size=50304, hidden_size=512,
                    intermediate_size=2048, num_hidden_layers=6, num_attention_heads=8, rotary_pct=0.25,
                    rotary_emb_base=10000, max_position_embeddings=2048, layer_norm_eps=1e-5,
                    use_parallel_residual=True, hidden_act="gelu", tie_word_embeddings=False, bos_token_id=0,
                    eos_token_id=0, torch_dtype="float32"),
    ),
}
TOKENIZER_TEXT = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.",
    "Graphics processors run thousands of small computations at once, which suits matrix products.",
    "Large language models predict the next token from the tokens before it, one step at a time.",
    "Kubernetes schedules containers onto nodes; an operator reconciles custom resources into pods.",
]
TOKENIZER_VOCAB = 600
RATE = re.compile(r"([0-9.]+) tokens/sec")


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, text=True, **kwargs)


# --- 1. the real litgpt in its own venv -------------------------------------------------------
def real_litgpt_venv(version: str) -> Path:
    env_dir = WORK / f"venv-litgpt-{version}"
    python = env_dir / "bin" / "python"
    site = WORK / f"litgpt-{version}-site"
    if site.is_dir() and not (env_dir / "bin" / "litgpt").is_file():
        _site_shim(env_dir, site)
    if not (env_dir / "bin" / "litgpt").is_file():
        print(f"creating {env_dir} with litgpt=={version} (one-time; downloads torch)", flush=True)
        venv.create(env_dir, with_pip=True, clear=True)
        # requests: litgpt's CLI needs it but lists it only among its extras
        run([python, "-m", "pip", "install", "-q", f"litgpt=={version}", "requests"])
    return env_dir


def _site_shim(env_dir: Path, site: Path) -> None:
    """The real litgpt without a venv of its own (a whole torch): its package alone, installed with
    `pip install --no-deps --target benchmarks/.work/litgpt-<version>-site litgpt==<version> psutil`,
    run by this interpreter (our torch, lightning, litserve). Its pins may differ from ours (say so
    with the figures)."""
    bin_dir = env_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, tail in (("python", '"$@"'), ("litgpt", '-m litgpt "$@"')):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} {tail}\n')
        script.chmod(0o755)
    print(f"using litgpt from {site} with {sys.executable} (no venv of its own)", flush=True)


# --- 2. a random-weight HF folder ----------------------------------------------------------------
def build_hf_folder(model: str) -> Path:
    spec = MODELS[model]
    folder = WORK / "hf" / spec["org"] / model
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    print(f"building a random-weight {model} in {folder}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    config = transformers.AutoConfig.for_model(**spec["config"])
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Zero the output rows of ids the small tokenizer does not have, and of the end-of-text id:
    # greedy decoding then picks printable tokens and never stops early, so both tools do the
    # same amount of work and their texts can be compared. (Shapes, and so the cost, are unchanged.)
    with torch.no_grad():
        out_rows = hf_model.get_output_embeddings().weight
        out_rows[TOKENIZER_VOCAB:] = 0
        out_rows[0] = 0
    hf_model.save_pretrained(folder)

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TOKENIZER_TEXT * 8, trainer=trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
         "add_bos_token": False}))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 0}))
    return folder


# --- 3. convert with each tool -------------------------------------------------------------------
def convert_theirs(env_dir: Path, hf_dir: Path, model: str) -> Path:
    out = WORK / "theirs" / model
    if (out / "lit_model.pth").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(hf_dir, out)
    run([env_dir / "bin" / "litgpt", "convert_to_litgpt", out, "--model_name", model], stdout=subprocess.DEVNULL)
    return out


def convert_ours(hf_dir: Path, model: str) -> Path:
    out = WORK / "ours" / model
    from litgpt_runtime.checkpoint import is_complete, mark_complete
    from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint

    if not is_complete(out):
        shutil.rmtree(out, ignore_errors=True)
        convert_hf_checkpoint(hf_dir, out, repo_id=f"{MODELS[model]['org']}/{model}")
        mark_complete(out, repo_id=f"{MODELS[model]['org']}/{model}")
    return out


# --- 4. the workload -------------------------------------------------------------------------------
def prompt_of(hf_dir: Path, n_tokens: int) -> str:
    """A prompt that is exactly `n_tokens` tokens long with the benchmark tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    words = " ".join(TOKENIZER_TEXT * 50).split()
    text = ""
    for word in words:
        candidate = f"{text} {word}".strip()
        if len(tok.encode(candidate).ids) > n_tokens:
            break
        text = candidate
    assert len(tok.encode(text).ids) == n_tokens, "could not hit the exact prompt length"
    return text


def measure(cmd: list, threads: int) -> tuple[list[float], str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(map(str, cmd))}\n{result.stderr[-3000:]}")
    rates = [float(x) for x in RATE.findall(result.stderr)]
    return rates[1:] or rates, result.stdout


# The decode step alone, best of many, in each tool's own environment: on a loaded machine the
# minimum is far steadier than end-to-end rates. Both use a KV cache of 200 and the cache length.
THEIR_STEP = """
import sys, time, torch
from litgpt.model import GPT
from litgpt.config import Config
d = sys.argv[1]
m = GPT(Config.from_file(d + "/model_config.yaml"))
m.load_state_dict(torch.load(d + "/lit_model.pth", mmap=True, weights_only=True)); m.eval()
m.max_seq_length = 200; m.set_kv_cache(batch_size=1)
step = lambda i: m(torch.tensor([[5]]), torch.tensor([40 + i]), input_pos_maxp1=41 + i)
with torch.inference_mode():
    m(torch.arange(1, 33)[None], torch.arange(32))
    print(min(__import__("timeit").repeat(lambda: [step(i) for i in range(10)], number=1, repeat=15)) * 100)
"""
OUR_STEP = """
import sys, time, torch
from litgpt_runtime.checkpoint import load_model
from litgpt_runtime.cpu_layout import prepare_for_cpu_inference
m = load_model(sys.argv[1]); m.set_kv_cache(1, 200); prepare_for_cpu_inference(m)  # as generate does
step = lambda i: m(torch.tensor([[5]]), input_pos=torch.tensor([40 + i]), input_pos_maxp1=41 + i, last_token_only=True)
with torch.inference_mode():
    m(torch.arange(1, 33)[None], input_pos=torch.arange(32), input_pos_maxp1=32, last_token_only=True)
    print(min(__import__("timeit").repeat(lambda: [step(i) for i in range(10)], number=1, repeat=15)) * 100)
"""


def decode_step_ms(python: Path, script: str, checkpoint: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([str(python), "-c", script, str(checkpoint)], capture_output=True, text=True, env=env,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="SmolLM2-135M")
    parser.add_argument("--litgpt_version", default="0.5.13")
    parser.add_argument("--prompt_tokens", type=int, default=32)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=3, help="timed samples per run (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each tool")
    parser.add_argument("--compile", action="store_true", help="torch.compile in both tools")
    args = parser.parse_args()

    env_dir = real_litgpt_venv(args.litgpt_version)
    hf_dir = build_hf_folder(args.model)
    theirs_dir = convert_theirs(env_dir, hf_dir, args.model)
    ours_dir = convert_ours(hf_dir, args.model)
    prompt = prompt_of(hf_dir, args.prompt_tokens)

    common = ["--prompt", prompt, "--max_new_tokens", args.max_new_tokens, "--temperature", "0",
              "--num_samples", args.samples + 1]
    compile_flag = ["--compile", "true"] if args.compile else []
    ours_cmd = [OUR_LITGPT, "generate", ours_dir, *common, "--raw", "true", "--device", "cpu",
                "--precision", "32-true", *compile_flag]
    theirs_cmd = [env_dir / "bin" / "litgpt", "generate", theirs_dir, *common, "--precision", "32-true",
                  *compile_flag]

    ours, theirs, round_ratios = [], [], []
    outputs = {}
    for _ in range(args.rounds):
        ours_rates, outputs["ours"] = measure(ours_cmd, args.threads)
        theirs_rates, outputs["theirs"] = measure(theirs_cmd, args.threads)
        ours += ours_rates
        theirs += theirs_rates
        # back-to-back runs share the machine's load of the moment: their ratio is the steadier figure
        round_ratios.append(statistics.median(ours_rates) / statistics.median(theirs_rates))
    ours_rate, theirs_rate = statistics.median(ours), statistics.median(theirs)
    print(f"\nmodel {args.model} (random weights), CPU, {args.threads} threads, float32, greedy, prompt "
          f"{args.prompt_tokens} tokens, {args.max_new_tokens} new tokens{', --compile' if args.compile else ''}")
    print(f"  litgpt {args.litgpt_version:<8} {theirs_rate:8.2f} tokens/s   (samples: {', '.join(f'{r:.1f}' for r in theirs)})")
    print(f"  ours            {ours_rate:8.2f} tokens/s   (samples: {', '.join(f'{r:.1f}' for r in ours)})")
    print(f"  ratio (ours / litgpt): {ours_rate / theirs_rate:.2f}x   (per round: "
          f"{', '.join(f'{r:.2f}x' for r in round_ratios)}; median {statistics.median(round_ratios):.2f}x)")
    ours_step = decode_step_ms(Path(sys.executable), OUR_STEP, ours_dir, args.threads)
    theirs_step = decode_step_ms(env_dir / "bin" / "python", THEIR_STEP, theirs_dir, args.threads)
    print(f"  one decode step, best of 15x10: litgpt {theirs_step:.2f} ms, ours {ours_step:.2f} ms, "
          f"ratio {theirs_step / ours_step:.2f}x")
    # Same work? The real litgpt prints prompt + continuation per sample, we print the continuation.
    first_ours = outputs["ours"].split("\n")[0].strip()
    print(f"  same greedy text from both: {'yes' if first_ours and first_ours in outputs['theirs'] else 'NO'}")


if __name__ == "__main__":
    main()
