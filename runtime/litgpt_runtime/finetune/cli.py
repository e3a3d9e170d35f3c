"""The five `litgpt finetune*` commands, built from one definition of their options.

Every method takes the options in `COMMON`; LoRA and the adapters add their own, made from the
option dataclasses of `litgpt_runtime.methods` (`LoRAOptions.r` is `--lora_r`), plus the
`--quantize` and `--merge` of LoRA. `command(method, description)` turns that into a function whose signature is
the command's CLI (jsonargparse reads `__signature__` and the generated docstring, as it would for
a hand-written `setup`). `litgpt finetune` (method None) has every option: the method-specific
ones default to None, meaning "the method's default", and are refused for another method.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional, Union

from litgpt_runtime.finetune.common import Quantize, check_common, run
from litgpt_runtime.methods import METHODS, OPTIONS, TRAIN_DEFAULTS, MethodName
from litgpt_runtime.train.args import EvalArgs, Resume, TrainArgs
from litgpt_runtime.train.data import JSON, FinetuneData
from litgpt_runtime.train.launch import Strategy


@dataclass(frozen=True)
class Option:
    name: str
    annotation: Any
    default: Any
    help: str


COMMON = (
    Option("data", FinetuneData, JSON(), "Training data, e.g. `--data JSON --data.json_path train.json`."),
    Option("checkpoint_root_dir", Path, Path("checkpoints"), "Where downloaded checkpoints live."),
    Option("out_dir", Path, None, "Where checkpoints (`step-*`), logs and `final/` go."),
    Option("precision", Optional[str], None, "32-true, bf16-mixed, bf16-true or 16-mixed (default: bf16-mixed "
           "on GPUs and on CPUs with AMX, else 32-true)."),
    Option("devices", Union[int, str], 1, "Devices per node (or auto)."),
    Option("num_nodes", Optional[int], None, "Nodes (default: from the torch distributed environment, else 1)."),
    Option("strategy", Strategy, "auto", "auto, ddp or fsdp."),
    Option("train", TrainArgs, None, "Training options."),
    Option("eval", EvalArgs, None, "Validation options."),
    Option("seed", int, 1337, "Random seed (data order, initialisation, dropout)."),
    Option("resume", Resume, False, "Continue from a checkpoint in out_dir: auto (if there is one), true, false, "
           "or a step folder."),
    Option("access_token", Optional[str], None, "Hugging Face token for gated models."),
)
"""Options of every method. `out_dir`, `train` and `eval` default per method (see `_defaults`)."""

QUANTIZE = Option("quantize", Quantize, None, "QLoRA: the frozen base weights are quantized with bitsandbytes as "
                  "they load (nf4/fp4: 4-bit, -dq: double quantization, int8: LLM.int8); LoRA trains in --precision "
                  "(default then: bf16-true on bf16 GPUs, else 32-true). CPUs and GPUs.")
MERGE = Option("merge", bool, True, "Merge the updates into the weights at the end (a plain checkpoint); false keeps "
               "`lit_lora.safetensors` for `litgpt merge_lora`.")
REPO_ID_HELP = "The base model: a Hugging Face repo id (downloaded on first use) or a checkpoint folder."
NOT_RECORDED = ("checkpoint_root_dir", "out_dir", "resume", "access_token")
"""Options left out of hyperparameters.yaml: where things are and a secret, not what was trained."""


def _field_help(cls: type) -> dict[str, str]:
    """A dataclass's attribute docstrings (the same text `--help` shows for `--train.*`)."""
    import docstring_parser

    return {p.arg_name: " ".join((p.description or "").split()) for p in docstring_parser.parse_from_object(cls).params}


def method_options(method: str) -> tuple[Option, ...]:
    """The options only `method` has, with their defaults."""
    if method not in OPTIONS:
        return ()
    cls, prefix = OPTIONS[method]
    helps, types = _field_help(cls), typing.get_type_hints(cls)
    own = tuple(Option(prefix + f.name, types[f.name], f.default, helps[f.name]) for f in fields(cls))
    return (QUANTIZE, *own, MERGE) if method == "lora" else own


def every_method_option() -> list[Option]:
    """The method-specific options of all methods, each once (adapter and adapter_v2 share theirs)."""
    found: dict[str, Option] = {}
    for method in METHODS:
        for option in method_options(method):
            found.setdefault(option.name, option)
    return list(found.values())


def owners(name: str) -> list[str]:
    """The methods that have option `name`."""
    return [m for m in METHODS if any(o.name == name for o in method_options(m))]


def _defaults(method: str) -> dict[str, Any]:
    return {"out_dir": Path(f"out/finetune/{method}"), "train": TRAIN_DEFAULTS[method], "eval": EvalArgs()}


def _parameter(option: Option, default: Any = inspect.Parameter.empty, annotation: Any = None) -> inspect.Parameter:
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY,
                             default=option.default if default is inspect.Parameter.empty else default,
                             annotation=option.annotation if annotation is None else annotation)


def signature(method: Optional[str]) -> inspect.Signature:
    """`litgpt finetune_<method>` (or `litgpt finetune` for None) as a function signature."""
    params = [inspect.Parameter("repo_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)]
    if method is None:
        params.append(inspect.Parameter("method", inspect.Parameter.KEYWORD_ONLY, default="lora", annotation=MethodName))
        for option in COMMON:  # out_dir, train, eval: None = the chosen method's
            optional = option.name in ("out_dir", "train", "eval")
            params.append(_parameter(option, None if optional else inspect.Parameter.empty,
                                     Optional[option.annotation] if optional else None))
        params += [_parameter(option, None, Optional[option.annotation]) for option in every_method_option()]
    else:
        defaults = _defaults(method)
        for option in COMMON:
            params.append(_parameter(option, defaults.get(option.name, inspect.Parameter.empty)))
            if option.name == "strategy":  # the method's own options after the scale, as --help groups them
                params += [_parameter(o) for o in method_options(method)]
    return inspect.Signature(params, return_annotation=None)


def docstring(method: Optional[str], description: str) -> str:
    lines = [inspect.cleandoc(description), "", "Args:", f"    repo_id: {REPO_ID_HELP}"]
    if method is None:
        lines.append(f"    method: {', '.join(METHODS[:-1])} or {METHODS[-1]}.")
    extra = {"out_dir": " (default out/finetune/<method>)", "train": " (defaults per method)"}
    for option in COMMON:
        help = option.help[:-1] + extra[option.name] + "." if method is None and option.name in extra else option.help
        lines.append(f"    {option.name}: {help}")
        if method is not None and option.name == "strategy":
            lines += [f"    {o.name}: {o.help}" for o in method_options(method)]
    if method is None:
        for option in every_method_option():
            default = "none" if option.default is None else str(option.default).lower()
            lines.append(f"    {option.name}: ({' / '.join(owners(option.name))}) {option.help.rstrip('.')} "
                         f"(default {default}).")
    return "\n".join(lines)


def command(method: Optional[str], description: str) -> Callable[..., None]:
    """The entry function of `litgpt finetune_<method>` (or `litgpt finetune`)."""
    sig = signature(method)

    def setup(*args: Any, **kwargs: Any) -> None:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        options = dict(bound.arguments)
        chosen = options.pop("method") if method is None else method
        launch(chosen, resolve(chosen, options))

    setup.__signature__ = sig  # type: ignore[attr-defined]
    setup.__doc__ = docstring(method, description)
    setup.__module__ = "litgpt_runtime.finetune" + (f".{method}" if method else "")
    return setup


def launch(method: str, options: dict[str, Any]) -> None:
    """Check, record and run one finetune (`options` as `resolve` returns them)."""
    from importlib import import_module

    from litgpt_runtime.train.outputs import hyperparameters

    check_common(options["data"], options.get("quantize"), method)
    # quantize is checked above and is not a setting of the model variant
    settings = {o.name: options[o.name] for o in method_options(method) if o.name != "quantize"}
    variant = import_module(f"litgpt_runtime.finetune.{method}").method(**settings)
    hparams = hyperparameters({"method": method, **{k: v for k, v in options.items() if k not in NOT_RECORDED}})
    common = {k: v for k, v in options.items() if k not in settings and k != "quantize"}
    run(variant, hparams=hparams, quantize=options.get("quantize"), **common)


def resolve(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of one run: another method's option given is an error naming its method;
    what was left to the method (None) gets the method's default."""
    from litgpt_runtime.errors import UserError

    own = {o.name: o.default for o in method_options(method)}
    shared = {"repo_id", *(o.name for o in COMMON)}
    resolved = {}
    for name, value in options.items():
        if name in own or name in shared:
            resolved[name] = value
        elif value is not None:
            holders = owners(name)
            raise UserError(f"--{name} belongs to --method {' / '.join(holders)}, not --method {method}; "
                            f"drop it or choose --method {holders[0]}.")
    for name, default in {**own, **_defaults(method)}.items():
        if resolved.get(name) is None:
            resolved[name] = default
    return resolved
