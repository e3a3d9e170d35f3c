"""Parameter-efficient model variants: LoRA (`lora`), LLaMA-Adapter (`adapter`) and Adapter v2
(`adapter_v2`).

Each subclasses the model's classes (`GPT.block_class`, `Block.attention_class`,
`Block.mlp_classes`) and keeps the base state-dict keys unchanged: the variant Linear layers *are*
`nn.Linear`s (same `weight`/`bias`) with extra parameters beside them, so a base checkpoint loads
into a variant with `strict=False` and only the variant's own keys are missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litgpt_runtime.config import Config

PEFT_FILE = "peft.yaml"
"""In a checkpoint folder whose weights belong to a variant model (adapter, adapter_v2): the
method and its settings, so that loading builds the right classes."""


def write_peft_file(checkpoint_dir: str | Path, method: str, **settings: Any) -> None:
    import yaml

    (Path(checkpoint_dir) / PEFT_FILE).write_text(yaml.safe_dump({"method": method, **settings}, sort_keys=False))


def model_class_for(checkpoint_dir: str | Path, config: "Config") -> tuple[type, "Config"]:
    """(model class, config) that the weights in `checkpoint_dir` need: the plain GPT, or the
    variant named in its peft.yaml."""
    from litgpt_runtime.model import GPT

    path = Path(checkpoint_dir) / PEFT_FILE
    if not path.is_file():
        return GPT, config
    import yaml

    from litgpt_runtime.errors import UserError

    settings = dict(yaml.safe_load(path.read_text()) or {})
    method = settings.pop("method", None)
    if method == "adapter":
        from litgpt_runtime.peft import adapter as variant
    elif method == "adapter_v2":
        from litgpt_runtime.peft import adapter_v2 as variant
    else:
        raise UserError(f"{path} names an unknown method {method!r}; expected adapter or adapter_v2.")
    return variant.GPT, variant.Config.from_base(config, **settings)
