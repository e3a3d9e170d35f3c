"""Flags that older LitGPT versions had and we removed, and the new form of the user's command.

Checked before jsonargparse sees the arguments, so that a user typing an old command gets the
exact command to type now (exit status 2) instead of a generic "unrecognized argument" error.
"""

from __future__ import annotations

import shlex
from pathlib import PurePath

REMOVED_FLAGS = ("--repo_id", "--checkpoint_dir")
DEFAULT_ROOT = "checkpoints"


def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def removed_flags_in(args: list[str]) -> list[str]:
    """The removed flags the user passed, in order of appearance."""
    found = []
    for arg in args:
        name = _flag_name(arg)
        if name in REMOVED_FLAGS and name not in found:
            found.append(name)
    return found


def _option_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _as_repo_id(checkpoint_dir: str, root: str) -> str:
    """`checkpoints/org/name` -> `org/name`; any other path stays a path (also accepted)."""
    path, root_path = PurePath(checkpoint_dir), PurePath(root)
    try:
        relative = path.relative_to(root_path)
    except ValueError:
        return checkpoint_dir
    return relative.as_posix() if len(relative.parts) == 2 else checkpoint_dir


def rewrite(action: str, args: list[str]) -> list[str]:
    """The arguments of `action` with removed flags replaced by the positional repo id."""
    root = _option_value(args, "--checkpoint_root_dir") or DEFAULT_ROOT
    positional: str | None = None
    from_repo_id = False
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = _flag_name(arg)
        if name in REMOVED_FLAGS:
            if "=" in arg:
                value: str | None = arg.split("=", 1)[1]
            elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                value = args[i + 1]
                i += 1
            else:
                value = None
            if value:
                if name == "--repo_id":
                    positional, from_repo_id = value, True
                elif not from_repo_id:
                    positional = _as_repo_id(value, root)
            i += 1
            continue
        rest.append(arg)
        i += 1
    already_positional = bool(rest) and not rest[0].startswith("-")
    if positional is not None and not already_positional:
        rest.insert(0, positional)
    return rest


def removed_flags_message(action: str, args: list[str]) -> str:
    flags = removed_flags_in(args)
    new_command = shlex.join(["litgpt", action, *rewrite(action, args)])
    what = " and ".join(flags)
    verb = "were" if len(flags) > 1 else "was"
    return (
        f"litgpt {action}: {what} {verb} removed. The model is now the first argument: a Hugging Face "
        f"repo id (looked up under --checkpoint_root_dir, default '{DEFAULT_ROOT}') or the path "
        f"of a checkpoint folder. Run instead:\n\n    {new_command}\n"
    )
