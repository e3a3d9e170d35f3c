"""LitGPT's recipes (its `config_hub` YAML files for finetune_* and pretrain) given to `--config`.

Most of a LitGPT recipe already means the same here: `out_dir`, `precision`, `devices`,
`num_nodes`, `seed`, `resume`, `quantize`, `lora_*`, `train.*`, `eval.*`. The rest is translated
into our options before jsonargparse reads the file:

- `checkpoint_dir` is the model, now the first argument (as on the command line);
- `optimizer` (AdamW, or `{class_path: torch.optim.AdamW, init_args: {lr, weight_decay, betas}}`)
  becomes `train.learning_rate`, `train.weight_decay`, `train.beta1`/`beta2`;
- `data` given as `litgpt.data.<Module>` becomes our module of that name where we have one
  (`JSON` for finetuning, `TextFiles` for pretraining), with its options renamed;
- a pretraining `model_config` given inline (LitGPT's Config fields) is read like LitGPT's
  `model_config.yaml`;
- options that only change what is printed (`eval.max_new_tokens`, `data.num_workers`, ...) are
  dropped with a one-line note; options at the value that switches them off are dropped silently.

Anything else we do not support stops with one line naming the option.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from litgpt_runtime.errors import UserError
from litgpt_runtime.methods import METHODS

FINETUNE_ACTIONS = ("finetune", *(f"finetune_{method}" for method in METHODS))
RECIPE_ACTIONS = FINETUNE_ACTIONS + ("pretrain",)

# LitGPT data modules and the one of ours that takes the same data (None: we have none).
DATA_MODULES = {"JSON": "JSON", "TextFiles": "TextFiles"}
LITGPT_DATA_MODULES = ("Alpaca", "Alpaca2k", "AlpacaGPT4", "Deita", "Dolly", "FLAN", "LIMA", "LongForm",
                       "OpenWebText", "TinyLlama", "TinyStories", "MicroLlama", "LitData")
# LitGPT option -> our option, per data module; None: dropped with a note (changes no result).
DATA_OPTIONS = {
    "JSON": {"json_path": "json_path", "mask_prompt": "mask_prompt", "val_split_fraction": "val_split_fraction",
             "prompt_style": "prompt_style", "seed": "seed", "num_workers": None},
    "TextFiles": {"train_data_path": "train_data_path", "val_data_path": "val_data_path", "num_workers": None},
}
# LitGPT's prompt styles that we render the same way (ours come from the chat template otherwise).
PROMPT_STYLES = {"alpaca": "alpaca"}

# Options whose value switches a feature off: dropped silently at that value.
NEUTRAL = {
    ("train", "tie_embeddings"): (None,), ("train", "lr_warmup_fraction"): (None,),
    ("data", "ignore_index"): (-100,), ("quantize",): (None,), ("eval", "max_new_tokens"): (None,),
    ("eval", "evaluate_example"): (None, "first"), ("logger_name",): ("csv", "tensorboard"),
    ("access_token",): (None,), ("initial_checkpoint_dir",): (None,), ("model_config",): (None,),
}
# Options that only change what is printed or how fast data loads: dropped with a note.
COSMETIC = {("eval", "max_new_tokens"): "we do not print a sample generation at each validation",
            ("eval", "evaluate_example"): "we do not print a sample generation at each validation"}


def _is_neutral(path: tuple[str, ...], value: Any) -> bool:
    return path in NEUTRAL and value in NEUTRAL[path]


def _unsupported(option: str, value: Any, why: str) -> UserError:
    return UserError(f"LitGPT recipe option {option}={value!r} is not supported here: {why}.")


def translate(action: str, recipe: dict[str, Any], params: set[str], model_given: bool,
              config_path: str = "") -> tuple[dict[str, Any], list[str]]:
    """Our options for a LitGPT recipe (a YAML mapping) and one-line notes about what was dropped.

    params: the action's option names; model_given: the model was passed as the first argument.
    """
    out: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in recipe.items():
        if key == "checkpoint_dir":
            if not model_given:
                raise UserError(
                    f"checkpoint_dir in {config_path or 'the recipe'} was removed: the model is now the first "
                    f"argument. Run `litgpt {action} {_as_model(value)} --config {config_path}` (and delete "
                    "checkpoint_dir from the file).")
            notes.append(f"checkpoint_dir: {value} in the recipe is ignored; the model is the first argument.")
        elif key == "optimizer":
            _optimizer(value, out)
        elif key == "data":
            out["data"] = _data(action, value, notes)
        elif key == "model_config" and isinstance(value, dict):
            out["model_config"] = _inline_model_config(value)
        elif key in ("train", "eval") and isinstance(value, dict):
            section = {}
            for name, item in value.items():
                if (key, name) in COSMETIC and not _is_neutral((key, name), item):
                    notes.append(f"{key}.{name}: {item!r} ignored ({COSMETIC[(key, name)]}).")
                elif _is_neutral((key, name), item):
                    continue
                elif (key, name) in NEUTRAL:
                    raise _unsupported(f"{key}.{name}", item, "only the default, "
                                       + " or ".join(repr(v) for v in NEUTRAL[(key, name)]))
                else:
                    section[name] = item
            out[key] = {**out.get(key, {}), **section}
        elif _is_neutral((key,), value):
            continue
        elif key == "logger_name":
            raise _unsupported(key, value, "training logs go to <out_dir>/logs as CSV (and TensorBoard when it is "
                               "installed): csv or tensorboard")
        elif key in params:
            out[key] = value
        else:
            raise _unsupported(key, value, f"`litgpt {action}` has no such option (`litgpt {action} --help`)")
    return out, notes


def _as_model(checkpoint_dir: Any) -> str:
    parts = Path(str(checkpoint_dir)).parts
    return "/".join(parts[1:]) if len(parts) == 3 and parts[0] == "checkpoints" else str(checkpoint_dir)


def _optimizer(value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, str):
        class_path, init_args = value, {}
    elif isinstance(value, dict):
        class_path, init_args = value.get("class_path", ""), dict(value.get("init_args") or {})
    else:
        raise _unsupported("optimizer", value, "AdamW")
    if class_path.rsplit(".", 1)[-1] != "AdamW":
        raise _unsupported("optimizer", class_path, "training uses AdamW (torch.optim.AdamW)")
    train = out.setdefault("train", {})
    for name, item in init_args.items():
        if name == "lr":
            train["learning_rate"] = item
        elif name == "weight_decay":
            train["weight_decay"] = item
        elif name == "betas":
            train["beta1"], train["beta2"] = (float(b) for b in item)
        else:
            raise _unsupported(f"optimizer.init_args.{name}", item, "AdamW's lr, weight_decay and betas")


def _data(action: str, value: Any, notes: list[str]) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        class_path, init_args = value, {}
    elif isinstance(value, dict) and "class_path" in value:
        class_path, init_args = value["class_path"], dict(value.get("init_args") or {})
    else:
        return value  # our own form (`data: {json_path: ...}` under the default module)
    name = class_path.rsplit(".", 1)[-1]
    ours = DATA_MODULES.get(name)
    wanted = "TextFiles" if action == "pretrain" else "JSON"
    if ours != wanted:
        have = "JSON (local .json/.jsonl files)" if action != "pretrain" else "TextFiles (a folder of .txt files)"
        known = name in LITGPT_DATA_MODULES or name in DATA_MODULES
        raise _unsupported("data", class_path, f"{'LitGPT' if known else 'an unknown'} data module we do not "
                           f"have; `litgpt {action}` reads {have}")
    args: dict[str, Any] = {}
    for option, item in init_args.items():
        if _is_neutral(("data", option), item):
            continue
        if option not in DATA_OPTIONS[ours]:
            raise _unsupported(f"data.{option}", item, f"our {ours} has {', '.join(o for o, t in DATA_OPTIONS[ours].items() if t)}")
        target = DATA_OPTIONS[ours][option]
        if target is None:
            notes.append(f"data.{option}: {item!r} ignored (data is tokenised up front, no loader workers).")
            continue
        if option == "prompt_style":
            if item not in PROMPT_STYLES:
                raise _unsupported("data.prompt_style", item, "alpaca, or leave it out to use the model's chat template")
            item = PROMPT_STYLES[item]
        args[target] = item
    if ours == "JSON":
        # LitGPT cuts samples longer than train.max_seq_length; ours stops unless told to cut
        args["long_samples"] = "truncate"
    return {"class_path": ours, "init_args": args}


def _temp_yaml(data: dict[str, Any], suffix: str) -> str:
    """A YAML file that lives as long as this process (jsonargparse reads it by name)."""
    import yaml

    handle = tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False)
    with handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    atexit.register(lambda: os.path.exists(handle.name) and os.unlink(handle.name))
    return handle.name


def _inline_model_config(fields: dict[str, Any]) -> str:
    """A model_config given inline in a pretraining recipe, written to a file `--model_config` reads
    (as LitGPT's model_config.yaml: its Config fields, LitGPT's defaults for the rest)."""
    from litgpt_runtime.litgpt_config import from_litgpt

    from_litgpt(fields)  # one-line errors for what we lack, before anything runs
    # padding_multiple marks the file as LitGPT's form (LitGPT's defaults for fields left out)
    return _temp_yaml({**fields, "padding_multiple": fields.get("padding_multiple", 512)}, "-model_config.yaml")


def rewrite_args(action: str, params: set[str], args: list[str]) -> list[str]:
    """`args` with each `--config <LitGPT recipe>` replaced by a translated copy; other config files
    (ours) pass through unchanged. Notes go to stderr, one line each."""
    import sys

    import yaml

    if action not in RECIPE_ACTIONS or "--config" not in " ".join(args):
        return args
    model_given = bool(args) and not args[0].startswith("-")
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        path: Optional[str] = None
        if arg == "--config" and i + 1 < len(args):
            path, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            path, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        try:
            recipe = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            out += ["--config", path]  # jsonargparse says what is wrong with it
            continue
        if not isinstance(recipe, dict) or not looks_like_litgpt_recipe(recipe):
            out += ["--config", path]
            continue
        translated, notes = translate(action, recipe, params, model_given, path)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        out += ["--config", _temp_yaml(translated, "-recipe.yaml")]
    return out


def looks_like_litgpt_recipe(recipe: dict[str, Any]) -> bool:
    """A file with an option only LitGPT recipes have (ours never do)."""
    if {"checkpoint_dir", "optimizer", "logger_name"} & set(recipe):
        return True
    data = recipe.get("data")
    if isinstance(data, dict) and str(data.get("class_path", "")).startswith("litgpt.data."):
        return True
    if isinstance(data, str) and data in LITGPT_DATA_MODULES:
        return True
    if isinstance(recipe.get("model_config"), dict):
        return True
    train = recipe.get("train")
    return isinstance(train, dict) and bool({"tie_embeddings", "lr_warmup_fraction"} & set(train)) or (
        isinstance(recipe.get("eval"), dict) and "max_new_tokens" in recipe["eval"])
