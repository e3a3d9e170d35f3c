"""Instruction data for finetuning: local JSON/JSONL files in Alpaca or chat form.

Accepted records (one JSON array of objects in a `.json` file, or one object per line in a
`.jsonl` file):

- Alpaca: `{"instruction": str, "input": str (optional), "output": str}`
- Chat: `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`

Each record becomes one conversation rendered with the model's chat template (the one
`litgpt generate`/`chat`/`serve` use, so the finetuned model is prompted as it was trained); a
model without a template (a base model) gets the classic Alpaca prompt as its template, and the
finetune output keeps it. Prompt tokens are masked out of the loss (target -100) unless
`mask_prompt` is false. Samples are stored pre-shifted: `targets[t]` is the token that should
follow `input_ids[t]`, so the loss needs no slicing and no position is wasted.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from litgpt_runtime.errors import UserError

if TYPE_CHECKING:
    import torch

    from litgpt_runtime.tokenizer import Tokenizer

IGNORE_INDEX = -100

# The classic Alpaca prompt as a chat template. Models without a template of their own (base
# models) are finetuned in this format, and the template is written into the output checkpoint,
# so `litgpt generate`/`chat`/`serve` (and transformers after export) prompt the finetuned model
# exactly as it was trained. `{bos}` is filled in for tokenizers that start text with BOS.
ALPACA_TEMPLATE = (
    "{bos}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' %}"
    "{{ 'Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\\n\\n### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}"
    "{%- elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)

PromptStyle = Literal["auto", "chat", "alpaca"]


class FinetuneData:
    """Base of the `--data` choices for finetuning (`--data JSON --data.json_path ...`)."""

    def load(self, tokenizer: "Tokenizer", max_seq_length: int) -> tuple[list[dict], list[dict]]:
        """Tokenised (train, validation) samples: dicts of 1-D `input_ids` and `targets`."""
        raise NotImplementedError


@dataclass
class JSON(FinetuneData):
    """Instruction data from a local JSON or JSONL file (Alpaca or chat `messages` records)."""

    json_path: Optional[Path] = None
    """A `.json` (array of records) or `.jsonl` (one record per line) file, or a folder holding
    `train.json[l]` and `val.json[l]`."""
    val_split_fraction: float = 0.05
    """Share of the records held out for validation (when json_path is a single file)."""
    prompt_style: PromptStyle = "auto"
    """How a record becomes text: `chat` uses the model's chat template, `alpaca` the classic
    Alpaca prompt (which then becomes the output's chat template); `auto` is `chat` when the model
    has a template, else `alpaca`."""
    mask_prompt: bool = True
    """Train only on the answers (prompt tokens are masked out of the loss)."""
    long_samples: Literal["error", "truncate"] = "error"
    """A sample longer than --train.max_seq_length: `error` stops with the record's position,
    `truncate` cuts it to the length."""
    seed: int = 42
    """Seed of the train/validation split."""

    def __post_init__(self) -> None:
        if not 0 <= self.val_split_fraction < 1:
            raise UserError(f"--data.val_split_fraction must lie in [0, 1) (got {self.val_split_fraction}).")

    def load(self, tokenizer: "Tokenizer", max_seq_length: int) -> tuple[list[dict], list[dict]]:
        if self.json_path is None:
            raise UserError("Give the training data: --data JSON --data.json_path <file.json|file.jsonl|folder>.")
        self.prepare_tokenizer(tokenizer)
        path = Path(self.json_path)
        if path.is_dir():
            train_file, val_file = _find_split_file(path, "train"), _find_split_file(path, "val")
            train = self._tokenize_file(train_file, tokenizer, max_seq_length)
            val = self._tokenize_file(val_file, tokenizer, max_seq_length)
            return train, val
        samples = self._tokenize_file(path, tokenizer, max_seq_length)
        return split_train_val(samples, self.val_split_fraction, self.seed)

    def prepare_tokenizer(self, tokenizer: "Tokenizer") -> bool:
        """Give the tokenizer the template the data is rendered with; True when it changed."""
        style = self.prompt_style
        if style == "chat" and not tokenizer.has_chat_template:
            raise UserError(
                f"--data.prompt_style chat needs a chat template, and the model in {tokenizer.checkpoint_dir} "
                "has none; use --data.prompt_style alpaca (or auto)."
            )
        if style == "alpaca" or (style == "auto" and not tokenizer.has_chat_template):
            tokenizer.chat_template = alpaca_template(tokenizer)
            return True
        return False

    def _tokenize_file(self, path: Path, tokenizer: "Tokenizer", max_seq_length: int) -> list[dict]:
        samples = []
        for where, record in read_records(path):
            segments = chat_segments(record_messages(record, where), where, tokenizer)
            sample = encode_segments(segments, tokenizer, self.mask_prompt)
            if len(sample["input_ids"]) > max_seq_length:
                if self.long_samples == "error":
                    raise UserError(
                        f"{where}: the sample has {len(sample['input_ids']) + 1} tokens, more than the "
                        f"maximum sequence length {max_seq_length}. Raise --train.max_seq_length (up to "
                        "the model's context), shorten the record, or pass --data.long_samples truncate."
                    )
                sample = {k: v[:max_seq_length] for k, v in sample.items()}
            samples.append(_as_tensors(sample))
        return samples


def alpaca_template(tokenizer: "Tokenizer") -> str:
    starts_with_bos = tokenizer.bos_id is not None and tokenizer.encode("a")[:1] == [tokenizer.bos_id]
    return ALPACA_TEMPLATE.replace("{bos}", "{{ bos_token }}" if starts_with_bos else "")


def _find_split_file(folder: Path, split: str) -> Path:
    for suffix in (".jsonl", ".json"):
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise UserError(f"{folder} is a folder, so it must hold {split}.json or {split}.jsonl.")


# --- reading -------------------------------------------------------------------------------


def read_records(path: Path) -> list[tuple[str, dict]]:
    """(position for messages, record) pairs; the position names the file and line/record."""
    if not path.is_file():
        raise UserError(f"Data file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    records: list[tuple[str, Any]] = []
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}, line {lineno}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}, line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}).") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = " (one record per line? name the file .jsonl)" if "Extra data" in exc.msg else ""
            raise UserError(
                f"{path}, line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}){hint}."
            ) from None
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON array of records, found {type(data).__name__}.")
        records = [(f"{path}, record {i + 1}", r) for i, r in enumerate(data)]
    if not records:
        raise UserError(f"{path} holds no records; the dataset is empty.")
    for where, record in records:
        if not isinstance(record, dict):
            raise UserError(f"{where}: a record must be a JSON object, found {type(record).__name__}.")
    return records


def _text_field(record: dict, key: str, where: str, required: bool = True) -> str:
    if key not in record:
        if required:
            raise UserError(
                f"{where}: missing field '{key}'. Records need 'instruction' and 'output' "
                "(optional 'input'), or 'messages'."
            )
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{key}' must be a string, found {type(value).__name__}.")
    return value


def record_messages(record: dict, where: str) -> list[dict]:
    """The record as a chat conversation (Alpaca records become one user and one assistant turn)."""
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise UserError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects.")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise UserError(f"{where}: message {i + 1} needs a 'role' of system, user or assistant.")
            if not isinstance(m.get("content"), str):
                raise UserError(f"{where}: message {i + 1} needs a string 'content'.")
        if not any(m["role"] == "assistant" for m in messages):
            raise UserError(f"{where}: the conversation has no assistant message to learn from.")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    instruction = _text_field(record, "instruction", where)
    extra = _text_field(record, "input", where, required=False)
    output = _text_field(record, "output", where)
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


# --- rendering -----------------------------------------------------------------------------

Segment = tuple[str, bool]  # (text, trained on)


def chat_segments(messages: list[dict], where: str, tokenizer: "Tokenizer") -> list[Segment]:
    """Render with the chat template; every assistant turn (with its end-of-turn marker) is trained.

    The template is rendered for growing prefixes of the conversation: the text up to a generation
    prompt is what the model is given, the rest up to the end of the assistant turn is what it must
    produce. Templates that rewrite earlier turns (so prefixes do not line up) train on the last
    answer only.
    """
    segments: list[Segment] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages[: i + 1], add_generation_prompt=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            break
        segments += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    else:
        return segments
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = tokenizer.apply_chat_template(messages[:last], add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages[: last + 1], add_generation_prompt=False)
    if not full.startswith(prompt):
        raise UserError(f"{where}: the model's chat template renders this conversation in a way that cannot be split into prompt and answer.")
    return [(prompt, False), (full[len(prompt):], True)]


def encode_segments(segments: list[Segment], tokenizer: "Tokenizer", mask_prompt: bool) -> dict[str, list[int]]:
    """Token ids and pre-shifted targets of the rendered segments.

    Encoded without an added BOS: the template writes its own, as `Tokenizer.encode_chat` does for
    inference. The answers end with the template's end-of-turn marker, so generation learns to stop.
    """
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments:
        part = tokenizer.encode(text, bos=False)
        ids += part
        labels += part if (trained or not mask_prompt) else [IGNORE_INDEX] * len(part)
    return {"input_ids": ids[:-1], "targets": labels[1:]}


def _as_tensors(sample: dict[str, list[int]]) -> dict:
    import torch

    return {k: torch.tensor(v, dtype=torch.long) for k, v in sample.items()}


# --- splitting and batching ----------------------------------------------------------------


def split_train_val(samples: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic shuffle-split; at least one validation sample when a fraction is asked for."""
    if val_fraction == 0:
        return samples, []
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, math.floor(len(samples) * val_fraction))
    if n_val >= len(samples):
        raise UserError(
            f"Only {len(samples)} record(s): too few to hold out {val_fraction:.0%} for validation. "
            "Add records or pass --data.val_split_fraction 0."
        )
    val = [samples[i] for i in sorted(order[:n_val])]
    train = [samples[i] for i in sorted(order[n_val:])]
    return train, val


def pad_collate(samples: list[dict]) -> dict[str, "torch.Tensor"]:
    """Right-pad to the longest sample; padding is never a target (causal attention keeps the real
    tokens blind to it)."""
    import torch

    length = max(len(s["input_ids"]) for s in samples)
    input_ids = torch.zeros((len(samples), length), dtype=torch.long)
    targets = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s["input_ids"])
        input_ids[row, :n] = s["input_ids"]
        targets[row, :n] = s["targets"]
    return {"input_ids": input_ids, "targets": targets}
