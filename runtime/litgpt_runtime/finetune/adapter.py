"""`litgpt finetune_adapter`: LLaMA-Adapter (a learned, gated prompt in the upper layers)."""

from __future__ import annotations

from typing import Any

from litgpt_runtime.finetune.cli import command
from litgpt_runtime.finetune.common import Method, OutputContext, save_complete


def method(variant: str = "adapter", **settings: Any) -> Method:
    """Adapter and adapter v2 differ only in their module (classes and trainable filter)."""

    def module():
        if variant == "adapter":
            from litgpt_runtime.peft import adapter as m
        else:
            from litgpt_runtime.peft import adapter_v2 as m
        return m

    def build_config(base):
        return module().Config.from_base(base, **settings)

    def mark_trainable(model) -> None:
        m = module()
        (m.mark_only_adapter_as_trainable if variant == "adapter" else m.mark_only_adapter_v2_as_trainable)(model)

    def write_output(ctx: OutputContext) -> None:
        from litgpt_runtime.peft import write_peft_file

        # The adapter cannot be folded into the base weights: the folder holds the variant's
        # weights and peft.yaml tells `load_model` which classes to build.
        save_complete(ctx, ctx.state_dict, variant, lambda folder: write_peft_file(folder, variant, **settings))

    # adapter v2 trains the norms too, which are base weights: checkpoints hold all trained parameters.
    return Method(variant, build_config, lambda: module().GPT, mark_trainable, write_output)


setup = command("adapter", """
    Finetune a model with LLaMA-Adapter: a short learned prompt that the upper layers attend to
    through zero-initialised gates; the base weights stay frozen (fewest trained parameters).

    The result, `<out_dir>/final`, is a complete checkpoint (base + adapter weights) for generate,
    chat and serve.
""")
