"""Text generation: the token loop (`generate_tokens`) and the `litgpt generate` action.

The loop fills the KV cache with the whole prompt once (prefill), then feeds one token per step
(decode). Greedy when temperature == 0, as in LitGPT; otherwise temperature / top-k / top-p
sampling. torch is imported inside functions so that importing this module (for `--help`) is cheap.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal, Optional, Sequence

from litgpt_runtime.errors import UserError
from litgpt_runtime.quantize import Quantize

if TYPE_CHECKING:
    import torch

Device = Literal["auto", "cpu", "cuda", "mps"]


# --- sampling -------------------------------------------------------------------------------
def sample(logits: "torch.Tensor", temperature: float = 0.0, top_k: Optional[int] = None,
           top_p: float = 1.0, generator: Optional["torch.Generator"] = None) -> "torch.Tensor":
    """Next token id from `logits` [V] (a 0-dim long tensor)."""
    import torch

    if temperature <= 0.0:
        return torch.argmax(logits, dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        # Keep the smallest set of most likely tokens whose mass reaches top_p (always >= 1 token).
        sorted_probs, sorted_idx = torch.sort(probs, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, sorted_idx, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator)[0]


def _ensure_kv_cache(model, length: int, device) -> None:
    """A batch-1 KV cache of at least `length` positions: the model's current one when it is big
    enough (stale entries past the prompt are overwritten before attention reads them, since it
    reads only positions < input_pos_maxp1), else a new one. Reusing it saves the allocation per
    request and, under torch.compile, a recompilation per request (new cache modules fail guards)."""
    cache = getattr(model.transformer.h[0].attn, "kv_cache", None)
    if cache is None or cache.k.size(0) != 1 or cache.k.size(2) < length or cache.k.device != device:
        model.set_kv_cache(batch_size=1, max_seq_length=length, device=device)


def generate_tokens(model, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0,
                    top_k: Optional[int] = None, top_p: float = 1.0, stop_ids: Sequence[int] = (),
                    generator: Optional["torch.Generator"] = None,
                    context_length: Optional[int] = None) -> Iterator[int]:
    """Yield up to `max_new_tokens` new token ids after `prompt_ids`.

    Stops early at any of `stop_ids` (the stop token itself is not yielded) or when the context
    (`context_length`, default the model's `block_size`) is full. Uses the model's KV cache when
    it is long enough, else sets one sized for this request (and `max_seq_length` to match: a
    cache as long as the whole context would not fit in memory for long-context models).
    """
    import torch

    if max_new_tokens <= 0:
        return
    prompt_len = len(prompt_ids)
    if prompt_len == 0:
        raise UserError("The prompt is empty; give some text to continue.")
    limit = context_length or model.config.block_size
    if prompt_len >= limit:
        raise UserError(f"The prompt has {prompt_len} tokens but the model's context holds {limit}; shorten it.")
    total = min(prompt_len + max_new_tokens, limit)
    device = next(model.parameters()).device
    stop = set(int(s) for s in stop_ids)

    # inference_mode around each model call, not around the loop: a generator suspended inside
    # the `with` would leave the mode switched on for the caller's code between tokens.
    with torch.inference_mode():
        _ensure_kv_cache(model, total, device)
        idx = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
        # input_pos_maxp1 saves a device sync per call; last_token_only skips the vocabulary
        # projection for all prompt positions but the last.
        logits = model(idx, input_pos=torch.arange(prompt_len, device=device), input_pos_maxp1=prompt_len,
                       last_token_only=True)[0, -1]
        # Positions of decode steps, made once: building a tensor per step costs more than the
        # step's attention on small models.
        positions = torch.arange(prompt_len, total, device=device)
    for step in range(total - prompt_len):
        with torch.inference_mode():
            token = sample(logits, temperature, top_k, top_p, generator)
            token_id = int(token)
        if token_id in stop:
            return
        yield token_id
        if step + 1 >= total - prompt_len:
            return
        with torch.inference_mode():
            logits = model(token.view(1, 1), input_pos=positions[step:step + 1],
                           input_pos_maxp1=prompt_len + step + 1, last_token_only=True)[0, -1]


# --- device / precision -----------------------------------------------------------------------
def pick_device(device: str) -> "torch.device":
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA GPU is available; use --device cpu or auto.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for, but MPS is not available; use --device cpu or auto.")
    if device not in ("cpu", "cuda", "mps"):
        raise UserError(f"Unknown device {device!r}; choose auto, cpu, cuda or mps.")
    return torch.device(device)


def pick_dtype(precision: Optional[str], device: "torch.device") -> "torch.dtype":
    """LitGPT's precision names; by default bf16 on GPUs that support it, fp32 elsewhere."""
    import torch

    if precision is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    from litgpt_runtime.precision import inference_dtype_name

    return getattr(torch, inference_dtype_name(precision))


def load_inference_model(checkpoint_dir: Path, device: "torch.device", precision: Optional[str]):
    """A checkpoint's model for generation (generate, chat, and each serve worker): on `device`, in
    the precision's dtype, in eval mode, its weights laid out for fast CPU decoding."""
    from litgpt_runtime.checkpoint import load_model
    from litgpt_runtime.cpu_layout import prepare_for_cpu_inference

    model = load_model(checkpoint_dir, device=device, dtype=pick_dtype(precision, device))
    prepare_for_cpu_inference(model)  # batched decoding gains most: see litgpt_runtime.cpu_layout
    return model


def load_for_inference(repo_id: str, checkpoint_root_dir: Path, device: str, precision: Optional[str],
                       compile: bool, access_token: Optional[str] = None, quantize: Quantize = None):
    """(model, tokenizer, device) for `repo_id`, downloading the checkpoint on first use; with
    `quantize`, its Linear weights quantized as they load (`litgpt_runtime.quantize`)."""
    import torch

    from litgpt_runtime.download import ensure_checkpoint
    from litgpt_runtime.tokenizer import Tokenizer

    if quantize is not None:
        from litgpt_runtime.quantize import check_quantize

        check_quantize(quantize)
    checkpoint_dir = ensure_checkpoint(repo_id, checkpoint_root_dir, access_token=access_token)
    torch_device = pick_device(device)
    tokenizer = Tokenizer(checkpoint_dir)
    if quantize is not None:
        from litgpt_runtime.quantize import load_quantized_model

        model = load_quantized_model(checkpoint_dir, quantize, torch_device, pick_dtype(precision, torch_device))
    else:
        model = load_inference_model(checkpoint_dir, torch_device, precision)
    if compile:
        # Default (automatic) dynamic shapes: the cache length grows by one each step, so after the
        # first recompilation that length is symbolic instead of a new graph per token.
        model = torch.compile(model)
    return model, tokenizer, torch_device


def prompt_ids_for(tokenizer, prompt: str, raw: bool, system: Optional[str] = None) -> list[int]:
    if raw or not tokenizer.has_chat_template:
        return tokenizer.encode(prompt)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.encode_chat(messages)


def stream_text(tokenizer, tokens: Iterator[int], out=None) -> tuple[list[int], str]:
    """Write decoded text of `tokens` to `out` as it arrives; returns (ids, full text)."""
    from litgpt_runtime.tokenizer import StreamDecoder

    out = out or sys.stdout
    decoder = StreamDecoder(tokenizer)
    ids: list[int] = []
    pieces: list[str] = []
    for token_id in tokens:
        ids.append(token_id)
        piece = decoder.push(token_id)
        if piece:
            pieces.append(piece)
            out.write(piece)
            out.flush()
    tail = decoder.flush()
    if tail:
        pieces.append(tail)
        out.write(tail)
    out.flush()
    return ids, "".join(pieces)


def main(
    repo_id: str,
    prompt: str = "What food do llamas eat?",
    max_new_tokens: int = 50,
    temperature: float = 0.8,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    raw: bool = False,
    system: Optional[str] = None,
    num_samples: int = 1,
    precision: Optional[str] = None,
    device: Device = "auto",
    compile: bool = False,
    seed: Optional[int] = 1234,
    checkpoint_root_dir: Path = Path("checkpoints"),
    access_token: Optional[str] = None,
    quantize: Quantize = None,
) -> None:
    """Generate text from a prompt, streaming it to the terminal.

    The prompt is wrapped in the model's chat template when it has one (use --raw to send it as
    is). Speed (tokens/s) is printed to stderr.

    Args:
        repo_id: Hugging Face repo id (resolved under --checkpoint_root_dir; downloaded on first
            use) or the path of a checkpoint folder.
        prompt: The prompt text.
        max_new_tokens: How many tokens to generate at most.
        temperature: 0 for greedy decoding; higher values sample more randomly.
        top_k: Sample only among the k most likely tokens (None: all).
        top_p: Sample only among the most likely tokens whose probabilities add up to top_p.
        raw: Send the prompt as is, without the chat template.
        system: A system message to put before the prompt (chat template only).
        num_samples: How many times to generate (each one timed).
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

    if seed is not None:
        torch.manual_seed(seed)
    model, tokenizer, torch_device = load_for_inference(repo_id, Path(checkpoint_root_dir), device, precision,
                                                        compile, access_token, quantize)
    ids = prompt_ids_for(tokenizer, prompt, raw, system)
    for i in range(num_samples):
        t0 = time.perf_counter()
        tokens = generate_tokens(model, ids, max_new_tokens, temperature, top_k, top_p, tokenizer.stop_ids)
        generated, _ = stream_text(tokenizer, tokens)
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        sys.stdout.write("\n")
        sys.stdout.flush()
        rate = len(generated) / elapsed if elapsed > 0 else float("inf")
        label = f" {i + 1}" if num_samples > 1 else ""
        print(f"Time for inference{label}: {elapsed:.02f} sec total, {len(generated)} tokens, {rate:.02f} tokens/sec",
              file=sys.stderr)
