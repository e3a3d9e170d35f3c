"""Dispatch for the `litgpt` console script (the table itself is in `litgpt_runtime.__main__`).

Order matters: removed flags are caught before parsing (so the user sees the new form of their
command), the action's module is imported only then (so `litgpt --help` stays instant), and a
`UserError` raised anywhere becomes one message and its exit status (1, or the distinct status of
`litgpt_runtime.errors.EXIT_REASONS`), never a traceback.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from typing import Callable, NoReturn

from litgpt_runtime import __version__
from litgpt_runtime._cli_removed import removed_flags_in, removed_flags_message

Actions = dict[str, tuple[str, str]]

EXIT_USER_ERROR = 1
EXIT_USAGE = 2


def top_level_help(actions: Actions) -> str:
    width = max(len(name) for name in actions)
    lines = [
        "usage: litgpt <action> <repo_id> [--options]",
        "",
        "LitGPT-style LLM workflows. `litgpt <action> --help` shows an action's options.",
        "",
        "actions:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in actions.items()]
    lines += [
        "",
        "Every action takes the model as its first argument: a Hugging Face repo id (resolved under",
        "--checkpoint_root_dir, default 'checkpoints') or the path of a checkpoint folder.",
        "Options can also come from a YAML file (--config file.yaml); --print_config shows them.",
    ]
    return "\n".join(lines)


def _fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def load_entry_point(action: str, target: str) -> Callable:
    """Import `module:function` (only now: `litgpt --help` must not pay for torch)."""
    module_name, function_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # A missing third-party package is an installation problem: say which one and how to get it.
        if exc.name and exc.name.split(".")[0] != "litgpt_runtime":
            _fail(
                f"`litgpt {action}` needs the Python package '{exc.name}', which is not installed. "
                "Install the runtime extras: pip install -e '.[runtime]'",
                EXIT_USER_ERROR,
            )
        raise
    return getattr(module, function_name)


def _description(function: Callable) -> str:
    """The docstring without its `Args:` section (jsonargparse shows those per option)."""
    doc = inspect.getdoc(function) or ""
    head = []
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            break
        head.append(line)
    return "\n".join(head).strip()


def build_parser(action: str, function: Callable):
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog=f"litgpt {action}",
        description=_description(function),
        exit_on_error=True,
        default_env=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="Path to a YAML file with options.")
    optional = _optional_positional(function)
    parser.add_function_arguments(function, as_positional=True, fail_untyped=False,
                                  skip={optional} if optional else None)
    if optional:
        # e.g. `litgpt pretrain [model_name] --model_config ...`: jsonargparse would make a
        # parameter with a default an option, so the optional first positional is added by hand.
        import typing

        parser.add_argument(optional, nargs="?", type=typing.get_type_hints(function)[optional], default=None,
                            help=f"(optional) see `{optional}` below")
    return parser


def _optional_positional(function: Callable) -> str | None:
    """The first parameter, when it is positional and defaults to None."""
    params = list(inspect.signature(function).parameters.values())
    if params and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and params[0].default is None:
        return params[0].name
    return None


def call_action(action: str, function: Callable, args: list[str]) -> object:
    from litgpt_runtime.litgpt_recipe import rewrite_args

    # a LitGPT recipe given to --config is translated into our options first
    args = rewrite_args(action, set(inspect.signature(function).parameters), args)
    parser = build_parser(action, function)
    cfg = parser.parse_args(args)
    init = parser.instantiate_classes(cfg)
    kwargs = {name: init[name] for name in inspect.signature(function).parameters if name in init}
    return function(**kwargs)


def run(actions: Actions, argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(top_level_help(actions))
        raise SystemExit(0)
    if args[0] in ("-V", "--version"):
        print(f"litgpt {__version__}")
        raise SystemExit(0)

    action, rest = args[0], args[1:]
    if action not in actions:
        close = difflib.get_close_matches(action, actions, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        _fail(f"unknown action '{action}'.{hint} Actions: {', '.join(actions)}.", EXIT_USAGE)

    if removed_flags_in(rest):
        print(removed_flags_message(action, rest), file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    from litgpt_runtime.errors import UserError

    try:
        function = load_entry_point(action, actions[action][0])
        call_action(action, function, rest)
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        # Exit now: waiting for worker threads (downloads) to finish would make Ctrl-C feel ignored.
        # Nothing half-written is marked complete, so there is nothing to clean up.
        print("\ninterrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
