"""`litgpt chat`: an interactive conversation using the model's own chat template.

The whole conversation is rendered with the template each turn (so the model sees exactly the
format it was trained on) and the answer streams to stdout. Reads stdin line by line, so it also
works with piped input: `printf 'Hi\n/quit\n' | litgpt chat <repo_id>`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, TextIO

from litgpt_runtime.generate import Device
from litgpt_runtime.quantize import Quantize

QUIT = {"/quit", "/exit", "!quit", "!exit", "quit", "exit"}
RESET = {"/reset", "!reset", "/clear"}
HELP = "Type /reset to start a new conversation; /quit, an empty line or Ctrl-D to leave."


def fit_to_context(tokenizer, messages: list[dict], max_prompt_tokens: int) -> tuple[list[dict], list[int]]:
    """Drop the oldest turns (never the system message or the last prompt) until the prompt fits."""
    while True:
        ids = tokenizer.encode_chat(messages)
        if len(ids) <= max_prompt_tokens:
            return messages, ids
        first = 1 if messages and messages[0]["role"] == "system" else 0
        if len(messages) - first <= 1:
            return messages, ids  # the last prompt alone is too long; generate_tokens says so
        messages = messages[:first] + messages[first + 1:]
        print("(the conversation outgrew the model's context; dropped the oldest turn)", file=sys.stderr)


def chat_loop(model, tokenizer, max_new_tokens: int, temperature: float, top_k: Optional[int], top_p: float,
              system: Optional[str] = None, stdin: Optional[TextIO] = None, stdout: Optional[TextIO] = None) -> None:
    from litgpt_runtime.generate import generate_tokens, stream_text

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty()
    start: list[dict] = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    print(HELP, file=sys.stderr)
    while True:
        if interactive:
            stdout.write(">> Prompt: ")
            stdout.flush()
        line = stdin.readline()
        if not line:  # Ctrl-D / end of piped input
            break
        prompt = line.rstrip("\n")
        command = prompt.strip().lower()
        if not command or command in QUIT:
            break
        if command in RESET:
            messages = list(start)
            print("(conversation reset)", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": prompt})
        messages, ids = fit_to_context(tokenizer, messages, max(1, model.config.block_size - max_new_tokens))
        if interactive:
            stdout.write(">> Reply: ")
        t0 = time.perf_counter()
        try:
            tokens = generate_tokens(model, ids, max_new_tokens, temperature, top_k, top_p, tokenizer.stop_ids)
            generated, text = stream_text(tokenizer, tokens, stdout)
        except KeyboardInterrupt:  # Ctrl-C stops this answer, not the chat
            stdout.write("\n")
            print("(interrupted)", file=sys.stderr)
            messages.pop()
            continue
        elapsed = time.perf_counter() - t0
        stdout.write("\n")
        stdout.flush()
        messages.append({"role": "assistant", "content": text})
        rate = len(generated) / elapsed if elapsed > 0 else float("inf")
        print(f"Time for inference: {elapsed:.02f} sec total, {len(generated)} tokens, {rate:.02f} tokens/sec",
              file=sys.stderr)


def main(
    repo_id: str,
    max_new_tokens: int = 256,
    temperature: float = 0.8,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    system: Optional[str] = None,
    precision: Optional[str] = None,
    device: Device = "auto",
    compile: bool = False,
    seed: Optional[int] = 1234,
    checkpoint_root_dir: Path = Path("checkpoints"),
    access_token: Optional[str] = None,
    quantize: Quantize = None,
) -> None:
    """Chat with a model interactively, using its chat template.

    Type a message and press Enter; the reply streams as it is generated. /reset starts a new
    conversation; /quit, an empty line or Ctrl-D leaves. Works with piped stdin too.

    Args:
        repo_id: Hugging Face repo id (resolved under --checkpoint_root_dir; downloaded on first
            use) or the path of a checkpoint folder.
        max_new_tokens: Longest reply, in tokens.
        temperature: 0 for greedy decoding; higher values sample more randomly.
        top_k: Sample only among the k most likely tokens (None: all).
        top_p: Sample only among the most likely tokens whose probabilities add up to top_p.
        system: A system message that starts every conversation.
        precision: 32-true, bf16-true or 16-true (default: bf16 on GPUs, 32-true on CPU).
        device: auto, cpu, cuda or mps.
        compile: Compile the model with torch.compile (slower start, faster steps).
        seed: Random seed for sampling (None: not seeded).
        checkpoint_root_dir: Where repo ids are looked up and downloaded to.
        access_token: Hugging Face token for gated models (default: $HF_TOKEN).
        quantize: Load the weights quantized with bitsandbytes (bnb.nf4, bnb.nf4-dq, bnb.fp4,
            bnb.fp4-dq, bnb.int8): less memory, a little less accuracy.
    """
    import torch

    from litgpt_runtime.generate import load_for_inference

    if seed is not None:
        torch.manual_seed(seed)
    model, tokenizer, _ = load_for_inference(repo_id, Path(checkpoint_root_dir), device, precision, compile,
                                             access_token, quantize)
    if not tokenizer.has_chat_template:
        print(f"({repo_id} has no chat template; using a plain 'User:/Assistant:' format)", file=sys.stderr)
    chat_loop(model, tokenizer, max_new_tokens, temperature, top_k, top_p, system)
