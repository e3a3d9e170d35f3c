"""Lineage: what a finetuned checkpoint was made from, written beside it.

A finetune writes `<out_dir>/final/lineage.json` once the checkpoint is complete, and the same
record (with its hyperparameters left out when they would not fit) to the container's termination
log as `litgpt-lineage {json}`, where the operator reads it into FinetuneJob.status.output. The
JSON object, version 1 (camelCase, as the operator's status):

    version          int   LINEAGE_VERSION
    path             str   the checkpoint folder (as the process saw it)
    method           str   lora | full | adapter | adapter_v2
    baseRepoId       str   the Hub repo the weights come from (through any earlier finetunes)
    baseRevision     str   its commit (or the revision asked), when known
    baseDigest       str   the base checkpoint's digest (`checkpoint.checkpoint_digest`)
    datasetDigest    str   the training data's digest (`dataset_digest`)
    weightsDigest    str   the output's digest (`checkpoint.checkpoint_digest`)
    hyperparameters  dict  the options of the run (hyperparameters.yaml)

Every digest is `sha256:<hex>` computed by `checkpoint.digest_of`, the one definition: over the
sorted `name:sha256` lines of the files it covers. Stdlib only: the operator imports the reader.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

LINEAGE_FILE = "lineage.json"
LINEAGE_VERSION = 1
TERMINATION_PREFIX = "litgpt-lineage "
# The termination log holds 4096 bytes; the record without hyperparameters is well under that.
TERMINATION_LIMIT = 4096
FIELDS = ("version", "path", "method", "baseRepoId", "baseRevision", "baseDigest", "datasetDigest",
          "weightsDigest", "hyperparameters")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def dataset_digest(path: str | Path) -> str:
    """The digest of a dataset: its file, or every file of its folder (relative names), as
    `checkpoint.digest_of` defines digests."""
    from litgpt_runtime.checkpoint import digest_of

    path = Path(path)
    if path.is_dir():
        files = {p.relative_to(path).as_posix(): _sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}
    else:
        files = {path.name: _sha256(path)}
    return digest_of(files)


def base_origin(base_dir: Path) -> tuple[str, Optional[str]]:
    """(repo id, revision) the base checkpoint comes from: its marker's, or, for a finetuned base,
    the origin its own lineage recorded."""
    from litgpt_runtime.checkpoint import read_marker

    earlier = read_lineage(base_dir)
    if earlier is not None and earlier.get("baseRepoId"):
        return earlier["baseRepoId"], earlier.get("baseRevision")
    marker = read_marker(base_dir) or {}
    return str(marker.get("repo_id") or ""), marker.get("revision") or marker.get("requested_revision")


def build(final_dir: Path, base_dir: Path, method: str, data_path: Optional[str | Path],
          hparams: dict[str, Any]) -> dict[str, Any]:
    from litgpt_runtime.checkpoint import checkpoint_digest, read_marker

    repo_id, revision = base_origin(base_dir)
    record = {
        "version": LINEAGE_VERSION,
        "path": str(final_dir),
        "method": method,
        "baseRepoId": repo_id,
        "baseRevision": revision,
        "baseDigest": checkpoint_digest(base_dir),
        "datasetDigest": dataset_digest(data_path) if data_path is not None else None,
        # An unmerged LoRA output is not a checkpoint of its own (merge_lora makes it one): no digest.
        "weightsDigest": checkpoint_digest(final_dir) if read_marker(final_dir) is not None else None,
        "hyperparameters": json.loads(json.dumps(hparams, default=str)),
    }
    return {k: v for k, v in record.items() if v is not None}


def write(final_dir: Path, record: dict[str, Any]) -> None:
    """`lineage.json` in the (complete) checkpoint folder, atomically, and the termination log."""
    from litgpt_runtime.termination import write_termination_message

    path = final_dir / LINEAGE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    write_termination_message(termination_line(record))


def termination_line(record: dict[str, Any]) -> str:
    line = TERMINATION_PREFIX + json.dumps(record, separators=(",", ":"))
    if len(line.encode()) > TERMINATION_LIMIT:  # the full record stays in lineage.json
        line = TERMINATION_PREFIX + json.dumps({k: v for k, v in record.items() if k != "hyperparameters"},
                                               separators=(",", ":"))
    return line


def read_lineage(checkpoint_dir: str | Path) -> Optional[dict[str, Any]]:
    try:
        record = json.loads((Path(checkpoint_dir) / LINEAGE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def parse_termination(message: Optional[str]) -> Optional[dict[str, Any]]:
    """The lineage record in a termination message, or None (none there, unreadable, or of a
    newer version than this reader)."""
    for line in reversed((message or "").splitlines()):
        start = line.find(TERMINATION_PREFIX)
        if start < 0:
            continue
        try:
            record = json.loads(line[start + len(TERMINATION_PREFIX):])
        except ValueError:
            return None
        if not isinstance(record, dict) or not isinstance(record.get("version"), int) \
                or record["version"] > LINEAGE_VERSION:
            return None
        return {k: record[k] for k in FIELDS if k in record}
    return None
