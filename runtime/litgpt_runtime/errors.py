"""Errors a user can cause and fix.

`litgpt_runtime.__main__` prints a `UserError`'s message (one paragraph, no traceback) and exits non-zero.
Raise it for unknown models, missing checkpoints, bad options; let real bugs raise anything else.
"""


class UserError(Exception):
    """Something the user caused; the message says what to do next."""
