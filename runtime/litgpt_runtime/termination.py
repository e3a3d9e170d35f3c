"""The container's termination log: a few lines the operator reads from the pod's status.

Kubernetes copies the file at `terminationMessagePath` (default /dev/termination-log, at most
4096 bytes) into `status.containerStatuses[].state.terminated.message` when the container ends.
`litgpt download` leaves its digest or its failure reason there, `litgpt validate_data` its
summary. Outside a container nothing is written, unless $LITGPT_TERMINATION_LOG names a file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TERMINATION_LOG_ENV = "LITGPT_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")


def write_termination_message(text: str) -> None:
    """Replace the termination log's content with `text` (never fails the caller)."""
    target = os.environ.get(TERMINATION_LOG_ENV) or (
        str(DEFAULT_TERMINATION_LOG) if DEFAULT_TERMINATION_LOG.exists() and os.access(DEFAULT_TERMINATION_LOG, os.W_OK) else "")
    if target:
        try:
            Path(target).write_text(text.rstrip("\n") + "\n")
        except OSError as exc:  # a bonus: never fail (or mask a failure) over it
            print(f"Could not write to {target}: {exc.strerror}", file=sys.stderr, flush=True)
