"""What a training run writes besides its periodic checkpoints: the options it ran with
(`hyperparameters.yaml`) and the whole trained state dict for `<out_dir>/final`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

HPARAMS_FILE = "hyperparameters.yaml"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def hyperparameters(options: dict[str, Any]) -> dict[str, Any]:
    """The options a run was started with, as plain YAML-able data. `data` also records its class
    (`--data JSON`, `--data TextFiles`): the class is part of the choice."""
    out = {name: _plain(value) for name, value in options.items()}
    data = options.get("data")
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        out["data"] = {"class": type(data).__name__, **out["data"]}
    return out


def write_hparams(folder: Path, hparams: dict[str, Any]) -> None:
    import yaml

    (folder / HPARAMS_FILE).write_text(yaml.safe_dump(hparams, sort_keys=False))


def full_state_dict(fabric: Any, model: Any, out_dir: Path) -> dict[str, "torch.Tensor"]:
    """The whole trained state dict on rank 0 (FSDP gathers it through a temporary file)."""
    from lightning.fabric.strategies import FSDPStrategy

    if not isinstance(fabric.strategy, FSDPStrategy):
        module = getattr(model, "module", model)
        return {k: v.detach().cpu() for k, v in module.state_dict().items()} if fabric.global_rank == 0 else {}
    import torch

    tmp = out_dir / ".final_gather.pt"
    fabric.save(tmp, {"model": model})
    fabric.barrier()
    state: dict = {}
    if fabric.global_rank == 0:
        state = torch.load(tmp, map_location="cpu", weights_only=True)["model"]
        tmp.unlink(missing_ok=True)
    return state
