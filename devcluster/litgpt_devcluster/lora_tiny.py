"""Random LoRA finetunes of a checkpoint, in the layout `litgpt finetune_lora --merge false` writes:
for the serving tests and benchmarks of `litgpt serve --adapters` (training one would take minutes
and would teach the tests nothing more)."""

from __future__ import annotations

from pathlib import Path


def make_lora_adapter(base: Path, out: Path, seed: int, repo_id: str = "", **lora) -> Path:
    """What `litgpt finetune_lora --merge false` leaves in final/ (LoRA weights, its settings, the
    base's config and tokenizer), with random non-zero updates so each adapter answers differently."""
    import shutil

    import torch
    import yaml

    from litgpt_runtime.checkpoint import WEIGHTS_FILE
    from litgpt_runtime.config import Config
    from litgpt_runtime.finetune.lora import LORA_FILE
    from litgpt_runtime.peft.lora import GPT, Config as LoRAConfig, lora_state_dict
    from litgpt_runtime.safetensors_io import save_state_dict

    out.mkdir(parents=True)
    for f in base.iterdir():
        if f.is_file() and f.name != WEIGHTS_FILE and not f.name.startswith(".litgpt"):
            shutil.copy(f, out / f.name)
    settings = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, **lora}
    with torch.device("meta"):  # only the names and shapes of the LoRA weights are needed
        model = GPT(LoRAConfig.from_base(Config.from_checkpoint(base), **settings))
    generator = torch.Generator().manual_seed(seed)
    weights = {k: torch.randn(v.shape, generator=generator) * 0.3 for k, v in lora_state_dict(model.state_dict()).items()}
    save_state_dict(out / LORA_FILE, weights)
    (out / "hyperparameters.yaml").write_text(yaml.safe_dump(
        {"method": "lora", "repo_id": repo_id, **settings, "base_checkpoint_dir": str(base.resolve())}))
    return out
