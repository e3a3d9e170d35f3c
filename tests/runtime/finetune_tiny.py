"""Helpers for the finetuning tests: a tiny complete checkpoint and memorisation data."""

from __future__ import annotations

import json
from pathlib import Path

RECORDS = [
    {"instruction": "Name the animal.", "output": "fox"},
    {"instruction": "Name the device.", "output": "GPU"},
    {"instruction": "Name the lazy one.", "output": "dog"},
    {"instruction": "Greet me.", "input": "politely", "output": "Hello world!"},
    {"instruction": "What runs containers?", "output": "Kubernetes"},
    {"instruction": "What do models predict?", "output": "the next token"},
    {"instruction": "How are you?", "output": "I am fine, thank you."},
    {"instruction": "What jumps?", "output": "The quick brown fox"},
]


def make_checkpoint(path: Path, family: str = "llama", **overrides) -> Path:
    """A tiny random model of `family`, converted and marked complete (what `litgpt download` leaves)."""
    from litgpt_devcluster.hf_tiny import make_hf_model_dir

    from litgpt_runtime.checkpoint import is_complete, mark_complete
    from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint

    hf_dir = make_hf_model_dir(family, path.parent / f"{path.name}-hf", **overrides)
    convert_hf_checkpoint(hf_dir, path)
    if not is_complete(path):
        mark_complete(path, repo_id=f"tiny/{family}")
    return path


def write_records(path: Path, records=RECORDS, jsonl: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))
    return path
