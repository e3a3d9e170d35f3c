"""`litgpt finetune_full`: train every weight of the model."""

from __future__ import annotations

from litgpt_runtime.finetune.cli import command
from litgpt_runtime.finetune.common import Method, OutputContext, save_complete


def method() -> Method:
    def model_class() -> type:
        from litgpt_runtime.model import GPT

        return GPT

    def mark_trainable(model) -> None:
        for param in model.parameters():
            param.requires_grad = True

    def write_output(ctx: OutputContext) -> None:
        save_complete(ctx, ctx.state_dict, "full")

    return Method("full", lambda config: config, model_class, mark_trainable, write_output,
                  trainable_only_checkpoints=False)


setup = command("full", """
    Finetune all weights of a model on instruction data (needs the most memory: weights,
    gradients and two AdamW moments, ~16 bytes per parameter in float32).

    The result, `<out_dir>/final`, is a complete checkpoint for generate, chat, serve and convert_to_hf.
""")
