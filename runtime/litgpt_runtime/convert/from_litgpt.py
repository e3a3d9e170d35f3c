"""`litgpt convert_from_litgpt`: make a LitGPT 0.5.13 checkpoint folder usable here.

What LitGPT writes, and what becomes of it:

| LitGPT folder holds                                   | it is                       | here it becomes          |
| ----------------------------------------------------- | --------------------------- | ------------------------ |
| `lit_model.pth` (state dict, or `{"model": ...}`)     | a base model / full finetune | the same weights         |
| `lit_model.pth.lora` (+ merged `lit_model.pth`)       | `finetune_lora` output      | the merged weights       |
| `lit_model.pth.lora` alone (a `step-*` folder)        | unmerged LoRA               | base + LoRA, merged      |
| `lit_model.pth.adapter` / `.adapter_v2`               | adapter finetunes           | base + adapter, our variant model (peft.yaml) |

Key names are the same in both tools (same module tree); what differs is folded in here:
LitGPT's adapter gate is (1, 1, n_head, 1) where ours is (1, n_head, 1, 1); its adapter v2
Linear computes `scale * (W x + b + bias)` where ours computes `scale * (W x + b) + bias`;
and its adapter reads the prompt's keys/values as if qkv were grouped per query group
(`adapter_kv_grouped` in peft.yaml keeps that reading). Files are read with
`torch.load(weights_only=True)`: tensors only, no code runs.

The base of an adapter or unmerged-LoRA output is the folder named by `checkpoint_dir` in its
`hyperparameters.yaml` (a LitGPT folder or one of ours), or `--base_checkpoint_dir`.

By default the folder is converted in place: `model.safetensors` and our completeness marker are
added beside LitGPT's files and nothing of LitGPT's is changed, so both tools keep using it (our
loader reads LitGPT's `model_config.yaml`). With `--out_dir`, a separate folder of ours is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from litgpt_runtime.errors import UserError
from litgpt_runtime.litgpt_format import LITGPT_WEIGHTS, litgpt_weight_files

if TYPE_CHECKING:
    import torch

HPARAMS_FILE = "hyperparameters.yaml"
PROMPT_STYLE_FILE = "prompt_style.yaml"


def load_litgpt_state_dict(path: Path) -> dict[str, "torch.Tensor"]:
    """Tensors of a LitGPT `.pth` file (a state dict, or `{"model": state dict}`), memory-mapped."""
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{str(path)!r} cannot be read as a tensor checkpoint with torch.load(weights_only=True) "
                        f"({first}). Is it a complete LitGPT checkpoint file?") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{str(path)!r} holds no state dict of tensors (nor {{'model': state dict}}).")
    return state


def main(
    checkpoint_dir: Path,
    *,
    out_dir: Optional[Path] = None,
    base_checkpoint_dir: Optional[Path] = None,
) -> None:
    """Convert a LitGPT checkpoint folder (lit_model.pth + model_config.yaml + tokenizer files),
    or a LitGPT finetune output (lit_model.pth.lora / .adapter / .adapter_v2 with its
    hyperparameters.yaml), into a checkpoint every action here accepts.

    Args:
        checkpoint_dir: The LitGPT folder, e.g. checkpoints/org/name or out/finetune/lora/final.
        out_dir: Write a separate folder of ours here; default: convert in place (adds
            model.safetensors beside LitGPT's files, which stay usable by LitGPT).
        base_checkpoint_dir: The base model of an adapter or unmerged LoRA output (default: the
            checkpoint_dir in its hyperparameters.yaml).
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise UserError(f"{str(folder)!r} is not a folder.")
    files = litgpt_weight_files(folder)
    if not files:
        raise UserError(f"{str(folder)!r} holds none of {LITGPT_WEIGHTS}, {LITGPT_WEIGHTS}.lora, .adapter or "
                        ".adapter_v2; is it a LitGPT checkpoint folder?")
    result = convert(folder, out_dir=out_dir, base_checkpoint_dir=base_checkpoint_dir)
    print(f"Converted {folder} -> {result}; e.g. `litgpt generate {result} --prompt ...`.")


def convert(folder: Path, out_dir: Optional[Path] = None, base_checkpoint_dir: Optional[Path] = None) -> Path:
    """Convert (see the module docstring); returns the checkpoint folder to use here."""
    from litgpt_runtime.checkpoint import mark_complete, save_checkpoint, unmark_complete
    from litgpt_runtime.config import CONFIG_FILE, Config

    folder = Path(folder)
    in_place = out_dir is None or Path(out_dir).resolve() == folder.resolve()
    target = folder if in_place else Path(out_dir)
    if not (folder / CONFIG_FILE).is_file():
        raise UserError(f"{str(folder)!r} holds no {CONFIG_FILE}; LitGPT writes one into every checkpoint folder.")
    config = Config.from_file(folder / CONFIG_FILE)
    kind = _kind(folder)
    peft: dict[str, Any] = {}
    if kind in ("base", "lora_merged"):
        state = load_litgpt_state_dict(folder / LITGPT_WEIGHTS)
    elif kind == "lora":
        state = _merge_lora(folder, config, _base_state(folder, base_checkpoint_dir))
    else:
        state, peft = _adapter_state(folder, kind, config, _base_state(folder, base_checkpoint_dir))
    _check_loads(config, state, peft, folder)

    if not in_place and _tied(state, config):
        import dataclasses

        config = dataclasses.replace(config, tie_embeddings=True)
    unmark_complete(target)
    if in_place:
        # LitGPT's model_config.yaml stays: our loader reads it, and LitGPT still needs it.
        from litgpt_runtime.checkpoint import WEIGHTS_FILE
        from litgpt_runtime.safetensors_io import save_state_dict

        save_state_dict(target / WEIGHTS_FILE, {k: v.contiguous() for k, v in state.items()})
    else:
        save_checkpoint(target, {k: v.contiguous() for k, v in state.items()}, config, copy_tokenizer_from=folder)
    if peft:
        from litgpt_runtime.peft import write_peft_file

        write_peft_file(target, kind, **peft)
    _carry_prompt_style(folder, target)
    mark_complete(target, repo_id="", converted_from=str(folder.resolve()), litgpt_kind=kind)
    return target


def _kind(folder: Path) -> str:
    have = {p.name for p in litgpt_weight_files(folder)}
    adapters = [k for k in ("adapter", "adapter_v2") if f"{LITGPT_WEIGHTS}.{k}" in have]
    if adapters:
        return adapters[-1]
    if f"{LITGPT_WEIGHTS}.lora" in have:
        return "lora_merged" if LITGPT_WEIGHTS in have else "lora"
    return "base"


def _hparams(folder: Path) -> dict[str, Any]:
    import yaml

    path = folder / HPARAMS_FILE
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return data if isinstance(data, dict) else {}


def _base_state(folder: Path, base_checkpoint_dir: Optional[Path]) -> dict[str, "torch.Tensor"]:
    """The base model's weights for an adapter / unmerged LoRA output (LitGPT's folder or ours)."""
    from litgpt_runtime.checkpoint import WEIGHTS_FILE, is_complete, load_state_dict

    named = base_checkpoint_dir or _hparams(folder).get("checkpoint_dir")
    if not named:
        raise UserError(f"{str(folder)!r} is a LitGPT finetune output without a base model: its {HPARAMS_FILE} names "
                        "no checkpoint_dir. Pass --base_checkpoint_dir <the base model's folder>.")
    base = Path(named)
    if (base / LITGPT_WEIGHTS).is_file():
        return load_litgpt_state_dict(base / LITGPT_WEIGHTS)
    if is_complete(base):
        state = dict(load_state_dict(base / WEIGHTS_FILE))
        state.setdefault("lm_head.weight", state["transformer.wte.weight"])  # ours stores a tied head once
        return state
    raise UserError(f"The base model {str(base)!r} of {str(folder)!r} is not there (neither {LITGPT_WEIGHTS} nor a "
                    "complete checkpoint of ours). Pass --base_checkpoint_dir <the base model's folder>.")


def _merge_lora(folder: Path, config: Any, base: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Base + LitGPT's LoRA weights, merged. LitGPT's lora_A/lora_B of the fused qkv stack the
    enabled q/k/v parts exactly as ours do, so the keys load as they are."""
    import torch

    from litgpt_runtime.peft.lora import GPT as LoRAGPT
    from litgpt_runtime.peft.lora import Config as LoRAConfig
    from litgpt_runtime.peft.lora import merged_state_dict

    hparams = _hparams(folder)
    settings = {k: hparams[k] for k in ("lora_r", "lora_alpha", "lora_query", "lora_key", "lora_value",
                                        "lora_projection", "lora_mlp", "lora_head") if k in hparams}
    lora = load_litgpt_state_dict(folder / f"{LITGPT_WEIGHTS}.lora")
    dtype = next(iter(base.values())).dtype
    lora_config = LoRAConfig.from_base(config, lora_dropout=0.0, **settings)
    with torch.device("meta"):
        model = LoRAGPT(lora_config)
    model.load_state_dict({**base, **{k: v.to(dtype) for k, v in lora.items()}}, strict=True, assign=True)
    return merged_state_dict(model)


def _adapter_state(
    folder: Path, kind: str, config: Any, base: dict[str, "torch.Tensor"]
) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    """Base + adapter weights under our conventions, and the variant's settings for peft.yaml."""
    adapter = dict(load_litgpt_state_dict(folder / f"{LITGPT_WEIGHTS}.{kind}"))
    layers = sorted(int(k.split(".")[2]) for k in adapter if k.endswith("attn.adapter_wte.weight"))
    if not layers:
        # adapter_start_layer >= n_layer (LitGPT's default 2 on a 2-layer model): no prompt anywhere
        if kind == "adapter":
            return dict(base), {}  # nothing trained: the base model is the whole result
        raise UserError(f"{str(folder / f'{LITGPT_WEIGHTS}.{kind}')!r} has no adapter prompt in any layer "
                        "(adapter_start_layer >= n_layer); our adapter v2 needs at least one adapter layer.")
    prompt_length = adapter[f"transformer.h.{layers[0]}.attn.adapter_wte.weight"].shape[0]
    out = dict(base)
    for key, value in adapter.items():
        if key.endswith("gating_factor"):
            value = value.permute(0, 2, 1, 3).contiguous()  # LitGPT (1, 1, H, 1) -> ours (1, H, 1, 1)
        elif key.endswith("adapter_bias"):
            # LitGPT: scale * (Wx + b + bias); ours: scale * (Wx + b) + bias  =>  ours = scale * LitGPT's
            value = value * adapter[key[: -len("adapter_bias")] + "adapter_scale"]
        out[key] = value
    dtype = next(iter(base.values())).dtype
    out = {k: v.to(dtype) if v.is_floating_point() else v for k, v in out.items()}
    return out, {"adapter_prompt_length": int(prompt_length), "adapter_start_layer": layers[0],
                 "adapter_kv_grouped": True}


def _check_loads(config: Any, state: dict[str, "torch.Tensor"], peft: dict[str, Any], folder: Path) -> None:
    """Build the model on the meta device and load the weights strictly: a LitGPT checkpoint of
    an architecture we read differently fails here, naming the keys, not later."""
    import torch

    from litgpt_runtime.model import GPT

    model_class, model_config = GPT, config
    if peft:
        from litgpt_runtime.peft import adapter, adapter_v2

        variant = adapter_v2 if "adapter_scale" in " ".join(state) else adapter
        model_class, model_config = variant.GPT, variant.Config.from_base(config, **peft)
    with torch.device("meta"):
        model = model_class(model_config)
    expected = set(model.state_dict())
    if config.tie_embeddings:
        expected.add("lm_head.weight")
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise UserError(f"The weights in {str(folder)!r} do not fit its model_config.yaml: "
                        + (f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}" if missing else "")
                        + ("; " if missing and extra else "")
                        + (f"unexpected {', '.join(extra[:4])}{' ...' if len(extra) > 4 else ''}" if extra else "")
                        + ".")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in shapes.items():
        if tuple(state[key].shape) != shape:
            raise UserError(f"{key} in {str(folder)!r} has shape {tuple(state[key].shape)}, its model_config.yaml "
                            f"says {shape}.")


def _tied(state: dict[str, "torch.Tensor"], config: Any) -> bool:
    import torch

    head, wte = state.get("lm_head.weight"), state.get("transformer.wte.weight")
    return (head is not None and wte is not None and not config.lm_head_bias and head.shape == wte.shape
            and torch.equal(head, wte))


def _carry_prompt_style(folder: Path, target: Path) -> None:
    """A LitGPT finetune trained on the Alpaca prompt (its prompt_style.yaml) is prompted with it
    by LitGPT's generate; here the prompt comes from the chat template, so write the Alpaca one."""
    import yaml

    path = folder / PROMPT_STYLE_FILE
    if not path.is_file():
        return
    style = (yaml.safe_load(path.read_text()) or {}).get("class_path", "")
    if style.rsplit(".", 1)[-1] != "Alpaca":
        return
    from litgpt_runtime.tokenizer import Tokenizer, write_chat_template
    from litgpt_runtime.train.data import alpaca_template

    write_chat_template(target, alpaca_template(Tokenizer(folder)))
