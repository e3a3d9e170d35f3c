"""Errors a user can cause and fix, and the exit status each one ends the process with.

`litgpt_runtime.__main__` prints a `UserError`'s message (one paragraph, no traceback) and exits
with its `exit_code`. Raise it for unknown models, missing checkpoints, bad options; let real bugs
raise anything else.

A few failures have their own exit status and `reason`, so that a caller that cannot read
sentences -- a Kubernetes Job's `podFailurePolicy`, the operator turning a pod's exit into a
condition -- can tell "retrying cannot help" (no access, no such repo) from the rest. The table
`EXIT_REASONS` is the contract (torch-free: the operator imports it); docs/CONTRACTS.md lists it.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user caused; the message says what to do next."""

    exit_code = 1
    reason = "Error"


class AccessDenied(UserError):
    """The Hub refused the token or its access (401/403): retrying with the same token cannot help."""

    exit_code = 3
    reason = "AccessDenied"


class NotFound(UserError):
    """No such repo, revision or file on the Hub (404): retrying cannot help."""

    exit_code = 4
    reason = "NotFound"


class TransferStalled(UserError):
    """A transfer sent no byte for the stall timeout, every time it was retried."""

    exit_code = 5
    reason = "DownloadStalled"


class IntegrityError(UserError):
    """A downloaded file differs from what the Hub publishes for it (size or SHA-256)."""

    exit_code = 6
    reason = "ChecksumMismatch"


class InvalidData(UserError):
    """`litgpt validate_data` found data that training would refuse (or, with --strict, warnings)."""

    exit_code = 7
    reason = "DataInvalid"


# exit status -> reason, for callers that only see the exit status (1 = any other UserError,
# 2 = bad command line, 130 = interrupted).
EXIT_REASONS: dict[int, str] = {cls.exit_code: cls.reason for cls in (AccessDenied, NotFound, TransferStalled,
                                                                    IntegrityError, InvalidData)}
