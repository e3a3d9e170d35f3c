"""`litgpt validate_data`: check finetuning data against a model before any GPU is taken.

It reads the data exactly as `litgpt finetune_*` will (`litgpt_runtime.train.data`), renders each
record with the prompt style training would use, and tokenizes it with the model's tokenizer --
without torch, in seconds on a CPU -- then reports:

- the first record that does not fit the schema (file and line/record number), or invalid JSON;
- the prompt style (`chat`: the model's template; `alpaca`: the classic prompt for base models);
- empty records (nothing to learn from) and duplicates (the same conversation again);
- a histogram of the token lengths against the maximum sequence length, and how many samples
  would be cut (`--data.long_samples truncate`) or stop training (`error`, the default).

Failures end with exit status 7 (`errors.InvalidData`) and one line; warnings (duplicates) pass
unless `--strict true`. Either way the last line on stdout is the summary as one JSON object
(`SUMMARY_FIELDS`), also left in the container's termination log for the operator.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from litgpt_runtime.errors import InvalidData, UserError
from litgpt_runtime.train.data import JSON, FinetuneData

SUMMARY_VERSION = 1
SUMMARY_FIELDS = ("version", "valid", "message", "files", "records", "promptStyle", "maxSeqLength", "longest",
                  "truncated", "empty", "duplicates", "histogram")
"""The summary's keys (a contract: the operator turns it into the DataValidated condition)."""


@dataclass
class Report:
    files: list[str] = field(default_factory=list)
    records: int = 0
    prompt_style: str = ""
    max_seq_length: int = 0
    lengths: list[int] = field(default_factory=list)
    longest_at: str = ""
    empty: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (where, where it first appeared)

    @property
    def truncated(self) -> int:
        return sum(1 for n in self.lengths if n > self.max_seq_length)

    def histogram(self) -> dict[str, int]:
        """Samples per token-length bucket: powers of two up to the maximum sequence length, then
        one bucket for everything longer."""
        edges, edge = [], 64
        while edge < self.max_seq_length:
            edges.append(edge)
            edge *= 2
        edges.append(self.max_seq_length)
        counts = {f"<={e}": 0 for e in edges}
        counts[f">{self.max_seq_length}"] = 0
        for n in self.lengths:
            key = next((f"<={e}" for e in edges if n <= e), f">{self.max_seq_length}")
            counts[key] += 1
        return counts

    def summary(self, valid: bool, message: str) -> dict:
        return {"version": SUMMARY_VERSION, "valid": valid, "message": message, "files": self.files,
                "records": self.records, "promptStyle": self.prompt_style, "maxSeqLength": self.max_seq_length,
                "longest": max(self.lengths, default=0), "truncated": self.truncated, "empty": len(self.empty),
                "duplicates": len(self.duplicates), "histogram": self.histogram()}


def data_files(data: JSON) -> list[Path]:
    """The files `data` stands for, as training reads them (a folder: train + val)."""
    from litgpt_runtime.train.data import _find_split_file

    if data.json_path is None:
        raise UserError("Give the data to check: --data JSON --data.json_path <file.json|file.jsonl|folder>.")
    path = Path(data.json_path)
    if path.is_dir():
        return [_find_split_file(path, "train"), _find_split_file(path, "val")]
    if not path.is_file():
        raise UserError(f"Data file {path} does not exist.")
    return [path]


def check(data: JSON, tokenizer, max_seq_length: int) -> Report:
    """Read, render and tokenize every record; raises UserError at the first one that training
    would refuse (schema, invalid JSON)."""
    from litgpt_runtime.train.data import chat_segments, encode_segments, read_records, record_messages

    changed = data.prepare_tokenizer(tokenizer)  # raises for `chat` without a template
    report = Report(prompt_style="alpaca" if changed else "chat", max_seq_length=max_seq_length)
    seen: dict[str, str] = {}
    for path in data_files(data):
        report.files.append(str(path))
        for where, record in read_records(path):
            messages = record_messages(record, where)
            report.records += 1
            if not any(m["content"].strip() for m in messages if m["role"] == "assistant") or \
                    not any(m["content"].strip() for m in messages if m["role"] != "assistant"):
                report.empty.append(where)
            key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
            if key in seen:
                report.duplicates.append((where, seen[key]))
            else:
                seen[key] = where
            sample = encode_segments(chat_segments(messages, where, tokenizer), tokenizer, data.mask_prompt)
            n_tokens = len(sample["input_ids"]) + 1  # the record's tokens (samples are stored pre-shifted)
            if n_tokens > max(report.lengths, default=0):
                report.longest_at = where
            report.lengths.append(n_tokens)
    return report


def verdict(report: Report, data: JSON, strict: bool) -> tuple[bool, str]:
    """(valid, one line saying why)."""
    problems = []
    if report.empty:
        problems.append(f"{len(report.empty)} empty record(s), the first at {report.empty[0]} (no prompt or no "
                        "answer to learn from)")
    if report.truncated and (data.long_samples == "error" or strict):
        problems.append(f"{report.truncated} sample(s) longer than the maximum sequence length {report.max_seq_length} "
                        f"(the longest, {max(report.lengths)} tokens, at {report.longest_at}); training "
                        + ("would stop on them: raise --train.max_seq_length, shorten them, or pass "
                           "--data.long_samples truncate" if data.long_samples == "error" else "would cut them"))
    if report.duplicates and strict:
        where, first = report.duplicates[0]
        problems.append(f"{len(report.duplicates)} duplicate record(s), the first at {where} (same as {first})")
    if problems:
        return False, "The data is not ready for training: " + "; ".join(problems) + "."
    notes = []
    if report.duplicates:
        where, first = report.duplicates[0]
        notes.append(f"{len(report.duplicates)} duplicate(s) (first: {where} = {first})")
    if report.truncated:
        notes.append(f"{report.truncated} sample(s) will be cut to {report.max_seq_length} tokens")
    return True, (f"{report.records} records OK ({report.prompt_style} prompt style, longest "
                  f"{max(report.lengths, default=0)} of {report.max_seq_length} tokens)"
                  + (": " + "; ".join(notes) if notes else "") + ".")


def main(
    repo_id: str,
    data: FinetuneData = JSON(),
    max_seq_length: Optional[int] = None,
    strict: bool = False,
    checkpoint_root_dir: Path = Path("checkpoints"),
) -> None:
    """Check finetuning data against a model's tokenizer and context before training (no GPU, no torch).

    Every record is read, rendered in the prompt style training would use and tokenized. Exits 7
    with one line when training would fail on the data (a bad record, empty records, samples
    longer than the maximum sequence length under --data.long_samples error); the last line on
    stdout is a JSON summary (records, prompt style, longest, truncated, empty, duplicates, token
    length histogram).

    Args:
        repo_id: The model: a repo id downloaded under --checkpoint_root_dir, or a checkpoint folder.
        data: The data, as finetuning takes it: `--data JSON --data.json_path train.json`.
        max_seq_length: The --train.max_seq_length training will use (default: the model's context length).
        strict: Fail on warnings too: duplicate records, and samples that would be cut.
        checkpoint_root_dir: Where downloaded checkpoints live.
    """
    from litgpt_runtime.checkpoint import resolve_checkpoint_dir
    from litgpt_runtime.config import Config
    from litgpt_runtime.termination import write_termination_message
    from litgpt_runtime.tokenizer import Tokenizer

    if not isinstance(data, JSON):
        raise UserError("validate_data checks --data JSON files.")
    report = Report()
    try:
        checkpoint_dir = resolve_checkpoint_dir(repo_id, checkpoint_root_dir)
        block_size = Config.from_checkpoint(checkpoint_dir).block_size
        length = max_seq_length or block_size
        if length < 1 or length > block_size:
            raise UserError(f"--max_seq_length must lie in 1..{block_size} (the model's context length), got {length}.")
        report = check(data, Tokenizer(checkpoint_dir), length)
        valid, message = verdict(report, data, strict)
    except UserError as exc:
        valid, message = False, str(exc)
    summary = report.summary(valid, message)
    line = json.dumps(summary, separators=(",", ":"))
    if report.lengths:
        print(f"{report.records} records in {', '.join(report.files)}; prompt style {report.prompt_style}; "
              f"token lengths (max_seq_length {report.max_seq_length}):", file=sys.stderr)
        for bucket, count in summary["histogram"].items():
            print(f"  {bucket:>8s} {count:7d}", file=sys.stderr)
    print(line, flush=True)
    write_termination_message(line)
    if not valid:
        raise InvalidData(message)
    print(message, file=sys.stderr)
