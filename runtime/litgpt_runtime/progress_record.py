"""The training progress record: one declared, versioned format for "how far is this run".

The training loop (`litgpt_runtime.train.loop`) emits a record at every log interval, after every
checkpoint it saves, when it resumes and when it ends. A record travels two ways, both written
by `emit`:

- as one line on stdout: `litgpt-progress {json}` (`LINE_PREFIX`), so anything that reads the
  pod's log (the operator, `kubectl logs | grep`) can take the newest one (`latest`);
- as a small JSON file, replaced atomically, when $LITGPT_PROGRESS_FILE names one (for a reader
  that shares the pod's volume rather than its log).

The JSON object (keys in the operator's camelCase; `None` fields are omitted):

    version          int    RECORD_VERSION; a reader rejects a newer major version
    event            str    "step" | "checkpoint" | "resumed" | "finished"
    time             str    ISO 8601 UTC, when the record was made
    step             int    optimizer steps done
    totalSteps       int    steps the run will make (absent when only a token budget bounds it)
    epoch            int    epochs completed over the training data
    loss             float  training loss per target token, mean over the log interval (absent if not finite)
    valLoss          float  the latest validation loss
    learningRate     float
    tokensPerSecond  float  over the log interval, all processes together
    tokensSeen       int    tokens processed since step 0 (a resumed run continues the count)
    etaSeconds       float  time left at this run's average pace (absent without totalSteps)
    lastCheckpoint   {step: int, path: str, time: str}   the newest resumable checkpoint
    resumedFromStep  int    the step this process resumed at, when it did

This module is the one source of that format for both sides: it imports only the standard
library, so the operator (which has no torch) imports it to read records, and the runtime to
write them. Adding an optional field keeps the version; renaming or removing one raises it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

RECORD_VERSION = 1
LINE_PREFIX = "litgpt-progress "
PROGRESS_FILE_ENV = "LITGPT_PROGRESS_FILE"
EVENTS = ("step", "checkpoint", "resumed", "finished")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: str
    time: str


@dataclass(frozen=True)
class ProgressRecord:
    step: int
    event: str = "step"
    total_steps: Optional[int] = None
    epoch: int = 0
    loss: Optional[float] = None
    val_loss: Optional[float] = None
    learning_rate: Optional[float] = None
    tokens_per_second: Optional[float] = None
    tokens_seen: int = 0
    eta_seconds: Optional[float] = None
    last_checkpoint: Optional[Checkpoint] = None
    resumed_from_step: Optional[int] = None
    time: str = field(default_factory=now_iso)
    version: int = RECORD_VERSION

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"event {self.event!r} is not one of {EVENTS}")

    # --- the wire format ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON object (camelCase keys, None and non-finite numbers left out)."""
        out: dict[str, Any] = {"version": self.version, "event": self.event, "time": self.time, "step": self.step}
        for key, attr in _FIELDS:
            value = getattr(self, attr)
            if isinstance(value, float) and not math.isfinite(value):
                value = None  # a diverged loss (NaN) still reports its step; JSON has no NaN
            if value is None:
                continue
            out[key] = {"step": value.step, "path": value.path, "time": value.time} if isinstance(value, Checkpoint) else value
        return out

    def to_line(self) -> str:
        return LINE_PREFIX + json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProgressRecord":
        """Read a record; ValueError for a newer version or a malformed one (unknown keys are
        ignored: a newer minor addition)."""
        version = data.get("version")
        if not isinstance(version, int) or version > RECORD_VERSION:
            raise ValueError(f"progress record version {version!r} is not supported (this reader: {RECORD_VERSION})")
        if not isinstance(data.get("step"), int):
            raise ValueError("progress record without an integer step")
        kwargs: dict[str, Any] = {attr: data[key] for key, attr in _FIELDS if data.get(key) is not None}
        if "last_checkpoint" in kwargs:
            ckpt = kwargs["last_checkpoint"]
            kwargs["last_checkpoint"] = Checkpoint(int(ckpt["step"]), str(ckpt["path"]), str(ckpt["time"]))
        return cls(step=data["step"], event=data.get("event", "step"), time=data.get("time", ""),
                   version=version, **kwargs)


_FIELDS = (  # (JSON key, attribute) of the optional fields, in the order they are written
    ("totalSteps", "total_steps"), ("epoch", "epoch"), ("loss", "loss"), ("valLoss", "val_loss"),
    ("learningRate", "learning_rate"), ("tokensPerSecond", "tokens_per_second"), ("tokensSeen", "tokens_seen"),
    ("etaSeconds", "eta_seconds"), ("lastCheckpoint", "last_checkpoint"), ("resumedFromStep", "resumed_from_step"),
)


def parse_line(line: str) -> Optional[ProgressRecord]:
    """The record on a log line, or None when the line is not one (or not readable)."""
    text = line.strip()
    start = text.find(LINE_PREFIX)  # a log collector may put a timestamp in front
    if start < 0:
        return None
    try:
        return ProgressRecord.from_dict(json.loads(text[start + len(LINE_PREFIX):]))
    except (ValueError, TypeError, KeyError):
        return None


def latest(log: Optional[str]) -> Optional[ProgressRecord]:
    """The newest record in a log text (e.g. the tail of a pod's log)."""
    for line in reversed((log or "").splitlines()):
        record = parse_line(line)
        if record is not None:
            return record
    return None


def read_file(path: str | Path) -> Optional[ProgressRecord]:
    try:
        return ProgressRecord.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def emit(record: ProgressRecord, print_line=print) -> None:
    """Write the record as a log line (through `print_line`) and to $LITGPT_PROGRESS_FILE."""
    print_line(record.to_line())
    target = os.environ.get(PROGRESS_FILE_ENV)
    if target:
        path = Path(target)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(json.dumps(record.to_dict()))
            os.replace(tmp, path)  # a reader never sees half a record
        except OSError:
            pass  # progress is a report: never fail training over it
