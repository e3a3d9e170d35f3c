"""`litgpt verify`: re-hash a checkpoint's weights and check them against a digest.

The operator runs it before a LitGPTModel that points at a FinetuneJob's output becomes Ready:
the weights must be the ones the finetune recorded (FinetuneJob.status.output.weightsDigest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from litgpt_runtime.errors import IntegrityError, UserError
from litgpt_runtime.termination import write_termination_message


def main(checkpoint_dir: Path, digest: Optional[str] = None) -> None:
    """Re-hash every weight file of a complete checkpoint folder (reads the whole model) against the
    sha256 recorded when it was written and, with --digest, the whole against that digest; print
    the digest. Exit status 6 (ChecksumMismatch) when anything differs, 1 when the folder is not a
    complete checkpoint.

    Args:
        checkpoint_dir: The checkpoint folder.
        digest: The expected `sha256:<hex>` (as `litgpt download` and finetune lineage report it).
    """
    from litgpt_runtime.checkpoint import is_complete, verify, verify_digest
    from litgpt_runtime.download import report_digest

    try:
        if not is_complete(checkpoint_dir):
            raise UserError(f"{str(checkpoint_dir)!r} is not a complete checkpoint (missing, unfinished, or "
                            "a file was removed); finetune or download it again.")
        try:
            verify_digest(checkpoint_dir, digest) if digest else verify(checkpoint_dir)
        except UserError as exc:
            raise IntegrityError(str(exc)) from None
    except UserError as exc:  # the operator reads why from the termination log
        write_termination_message(f"{exc.reason}: {exc}")
        raise
    report_digest(Path(checkpoint_dir))  # what a download reports: the operator reads it the same way
