"""`litgpt finetune_lora` (= `litgpt finetune`): train low-rank updates, then merge them in."""

from __future__ import annotations

from typing import Any

from litgpt_runtime.finetune.cli import command
from litgpt_runtime.finetune.common import Method, OutputContext, save_complete, write_template
from litgpt_runtime.train.outputs import write_hparams

LORA_FILE = "lit_lora.safetensors"


def method(merge: bool = True, **lora_settings: Any) -> Method:
    def build_config(base):
        from litgpt_runtime.peft.lora import Config

        return Config.from_base(base, **lora_settings)

    def model_class() -> type:
        from litgpt_runtime.peft.lora import GPT

        return GPT

    def mark_trainable(model) -> None:
        from litgpt_runtime.peft.lora import mark_only_lora_as_trainable

        mark_only_lora_as_trainable(model)

    def write_output(ctx: OutputContext) -> None:
        from litgpt_runtime.peft.lora import lora_state_dict

        from litgpt_runtime.safetensors_io import save_state_dict

        def save_lora(folder) -> None:
            save_state_dict(folder / LORA_FILE, {k: v.contiguous() for k, v in lora_state_dict(ctx.state_dict).items()})

        if merge:
            # The LoRA weights stay beside the merged ones (a few MB): the same output then serves
            # alone or as one of many adapters on a shared base (`litgpt serve --adapters`).
            save_complete(ctx, merge_state_dict(ctx.variant_config, ctx.state_dict), "lora", extra_files=save_lora)
            return
        # Unmerged: only the LoRA weights and a pointer to the base; `litgpt merge_lora` completes it.
        from litgpt_runtime.checkpoint import copy_tokenizer_files

        save_lora(ctx.final_dir)
        ctx.base_config.save(ctx.final_dir)
        copy_tokenizer_files(ctx.base_dir, ctx.final_dir)
        write_template(ctx.final_dir, ctx.chat_template)
        write_hparams(ctx.final_dir, {**ctx.hparams, "base_checkpoint_dir": str(ctx.base_dir.resolve())})
        print(f"LoRA weights saved unmerged; run `litgpt merge_lora {ctx.final_dir}` to make it a usable checkpoint.")

    return Method("lora", build_config, model_class, mark_trainable, write_output)


def merge_state_dict(lora_config, state_dict: dict) -> dict:
    """Base + LoRA state dict (LoRA keys) -> plain state dict with the updates folded in."""
    import torch

    from litgpt_runtime.peft.lora import GPT, merged_state_dict

    with torch.device("meta"):
        model = GPT(lora_config)
    model.load_state_dict(state_dict, strict=False, assign=True)
    return merged_state_dict(model)


setup = command("lora", """
    Finetune a model with LoRA: small low-rank updates on chosen projections train while the
    base weights stay frozen (memory: the weights plus little more), then they are merged in.

    The result, `<out_dir>/final`, is a complete checkpoint for generate, chat, serve and convert_to_hf;
    it also keeps the LoRA weights (lit_lora.safetensors), so `litgpt serve <base> --adapters
    name=<out_dir>/final` can serve it beside other finetunes of the same base.
""")
