"""What a LitGPT 0.5.13 checkpoint folder looks like, so that any action can recognise one and
name the converter (`litgpt convert_from_litgpt`, in `litgpt_runtime.convert.from_litgpt`).

LitGPT keeps weights in `lit_model.pth` (a base model, a full finetune, or LoRA merged by LitGPT)
and a finetune's trained weights alone in `lit_model.pth.lora` / `.adapter` / `.adapter_v2`.
"""

from __future__ import annotations

from pathlib import Path

LITGPT_WEIGHTS = "lit_model.pth"
FINETUNE_KINDS = ("lora", "adapter", "adapter_v2")  # lit_model.pth.<kind>


def litgpt_weight_files(folder: Path) -> list[Path]:
    """LitGPT's weight files in a folder (empty when it is not a LitGPT checkpoint folder)."""
    names = [LITGPT_WEIGHTS] + [f"{LITGPT_WEIGHTS}.{kind}" for kind in FINETUNE_KINDS]
    return [Path(folder) / name for name in names if (Path(folder) / name).is_file()]


def is_litgpt_folder(folder: Path) -> bool:
    return Path(folder).is_dir() and bool(litgpt_weight_files(Path(folder)))


def convert_hint(folder: Path) -> str:
    """The message for a LitGPT folder given where a checkpoint of ours is expected."""
    return (f"{str(folder)!r} is a LitGPT checkpoint folder; run `litgpt convert_from_litgpt {folder}` once "
            "(it adds model.safetensors beside LitGPT's files, which LitGPT keeps using), then use the folder here.")
