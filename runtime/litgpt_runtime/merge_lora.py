"""`litgpt merge_lora`: fold the LoRA weights of an unmerged finetune (`--merge false`) into its
base model, making the folder a complete checkpoint."""

from __future__ import annotations

from pathlib import Path

from litgpt_runtime.errors import UserError


def main(checkpoint_dir: Path) -> None:
    """Merge `lit_lora.safetensors` in a LoRA finetune output into the base weights named in its
    hyperparameters.yaml; writes model.safetensors there and marks the folder complete.

    Args:
        checkpoint_dir: The LoRA output folder (e.g. out/finetune/lora/final).
    """
    import yaml

    from litgpt_runtime.checkpoint import WEIGHTS_FILE, is_complete, load_state_dict, mark_complete
    from litgpt_runtime.config import Config
    from litgpt_runtime.safetensors_io import save_state_dict
    from litgpt_runtime.train.outputs import HPARAMS_FILE
    from litgpt_runtime.finetune.lora import LORA_FILE, merge_state_dict
    from litgpt_runtime.peft.lora import Config as LoRAConfig

    checkpoint_dir = Path(checkpoint_dir)
    lora_file = checkpoint_dir / LORA_FILE
    if is_complete(checkpoint_dir):  # merged already (a merged finetune keeps its LoRA weights beside)
        print(f"{checkpoint_dir} is already a complete (merged) checkpoint.")
        return
    if not lora_file.is_file():
        from litgpt_runtime.checkpoint import refuse_litgpt_folder

        refuse_litgpt_folder(checkpoint_dir)  # LitGPT's lit_model.pth.lora: convert_from_litgpt merges it
        raise UserError(f"{checkpoint_dir} holds no {LORA_FILE}; pass the output folder of `litgpt finetune_lora --merge false`.")
    hparams_path = checkpoint_dir / HPARAMS_FILE
    if not hparams_path.is_file():
        raise UserError(f"{checkpoint_dir} holds no {HPARAMS_FILE}, which names the base checkpoint and the LoRA settings.")
    hparams = yaml.safe_load(hparams_path.read_text()) or {}
    base_dir = Path(hparams.get("base_checkpoint_dir", ""))
    if not (base_dir / WEIGHTS_FILE).is_file():
        raise UserError(f"The base checkpoint {base_dir} named in {hparams_path} is gone; download it again (`litgpt download`).")
    base_config = Config.from_checkpoint(checkpoint_dir)
    lora_settings = {k: v for k, v in hparams.items() if k.startswith("lora_")}
    lora_config = LoRAConfig.from_base(base_config, **lora_settings)
    base = load_state_dict(base_dir / WEIGHTS_FILE)
    save_dtype = next(iter(base.values())).dtype
    lora = {k: v.to(save_dtype) for k, v in load_state_dict(lora_file).items()}
    merged = merge_state_dict(lora_config, {**base, **lora})
    if base_config.tie_embeddings:
        merged.pop("lm_head.weight", None)
    save_state_dict(checkpoint_dir / WEIGHTS_FILE, {k: v.to(save_dtype).contiguous() for k, v in merged.items()})
    lora_file.unlink()
    mark_complete(checkpoint_dir, repo_id="", finetuned_from=str(base_dir), method="lora")
    print(f"Merged the LoRA weights into {checkpoint_dir / WEIGHTS_FILE}.")
