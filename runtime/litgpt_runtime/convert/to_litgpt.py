"""`litgpt convert_to_litgpt`: write a checkpoint of ours as a folder LitGPT 0.5.13 loads
(`litgpt generate <out_dir>`, `litgpt finetune_* <out_dir>`, `litgpt.GPT` + `lit_model.pth`).

The folder holds `lit_model.pth` (the state dict under the same keys; a tied head is written out
as its own `lm_head.weight`, since LitGPT has no tie), LitGPT's `model_config.yaml` with every
field (`litgpt_runtime.litgpt_config.to_litgpt`) and the tokenizer files.
"""

from __future__ import annotations

import os
from pathlib import Path

from litgpt_runtime.errors import UserError


def main(repo_id: str, *, out_dir: Path, checkpoint_root_dir: Path = Path("checkpoints")) -> None:
    """Write a checkpoint as a LitGPT 0.5.13 checkpoint folder.

    Args:
        repo_id: The model: a Hugging Face repo id under --checkpoint_root_dir, or a checkpoint folder
            (a finetune's `final/`, a converted folder, ...).
        out_dir: The LitGPT folder to write (lit_model.pth, model_config.yaml, tokenizer files).
        checkpoint_root_dir: Where downloaded checkpoints live.
    """
    from litgpt_runtime.checkpoint import resolve_checkpoint_dir

    folder = resolve_checkpoint_dir(repo_id, checkpoint_root_dir)
    convert_to_litgpt(folder, Path(out_dir))
    print(f"Wrote a LitGPT checkpoint folder to {out_dir} (e.g. `litgpt generate {out_dir}` with LitGPT).")


def convert_to_litgpt(folder: Path, out_dir: Path) -> Path:
    import torch
    import yaml

    from litgpt_runtime.checkpoint import WEIGHTS_FILE, copy_tokenizer_files, load_state_dict
    from litgpt_runtime.config import CONFIG_FILE, Config
    from litgpt_runtime.litgpt_format import LITGPT_WEIGHTS
    from litgpt_runtime.litgpt_config import to_litgpt
    from litgpt_runtime.peft import PEFT_FILE

    folder, out_dir = Path(folder), Path(out_dir)
    if (folder / PEFT_FILE).is_file():
        raise UserError(f"{str(folder)!r} holds an adapter model ({PEFT_FILE}); LitGPT keeps adapters as a separate "
                        "file beside a base model, which this converter does not write. Convert the base model, or "
                        "finetune with LoRA (merged) or full to get a plain checkpoint.")
    config = Config.from_checkpoint(folder)
    litgpt_config = to_litgpt(config)  # UserError for what LitGPT cannot express, before writing anything
    state = dict(load_state_dict(folder / WEIGHTS_FILE))
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    out_dir.mkdir(parents=True, exist_ok=True)
    # the weights go last-but-atomically: a half-written lit_model.pth never carries the name
    tmp = out_dir / f"{LITGPT_WEIGHTS}.tmp"
    torch.save({k: v.contiguous().clone() if k == "lm_head.weight" else v.contiguous() for k, v in state.items()}, tmp)
    copy_tokenizer_files(folder, out_dir)
    (out_dir / CONFIG_FILE).write_text(yaml.safe_dump(litgpt_config, sort_keys=False))
    os.replace(tmp, out_dir / LITGPT_WEIGHTS)
    return out_dir
