"""The `litgpt` console script: one table of actions, nothing else.

Each action is `"module:function"`; the function's signature is the action's CLI (jsonargparse
turns type hints into options, dataclasses into `--group.field` options) and its docstring is its
`--help`. Modules are imported only when their action runs, so `litgpt --help` never imports torch.
To add an action: add one line to ACTIONS. The machinery lives in `litgpt_runtime._cli`.
"""

from __future__ import annotations

# action -> (entry point, one-line summary for `litgpt --help`)
ACTIONS: dict[str, tuple[str, str]] = {
    "download": ("litgpt_runtime.download:main", "Download a model from the Hugging Face Hub and convert it into a checkpoint"),
    "chat": ("litgpt_runtime.chat:main", "Chat with a model interactively, using its chat template"),
    "generate": ("litgpt_runtime.generate:main", "Generate text from a prompt"),
    "finetune": ("litgpt_runtime.finetune:setup", "Finetune a model (LoRA by default; same as finetune_lora; --method full|adapter|adapter_v2)"),
    "finetune_full": ("litgpt_runtime.finetune.full:setup", "Finetune all weights of a model"),
    "finetune_lora": ("litgpt_runtime.finetune.lora:setup", "Finetune a model with LoRA"),
    "finetune_adapter": ("litgpt_runtime.finetune.adapter:setup", "Finetune a model with an adapter"),
    "finetune_adapter_v2": ("litgpt_runtime.finetune.adapter_v2:setup", "Finetune a model with adapter v2"),
    "pretrain": ("litgpt_runtime.pretrain:setup", "Pretrain a model from scratch or continue pretraining"),
    "serve": ("litgpt_runtime.serve.cli:main", "Serve a model over HTTP (OpenAI-compatible API)"),
    "merge_lora": ("litgpt_runtime.merge_lora:main", "Merge LoRA weights into the base model"),
    "convert_to_hf": ("litgpt_runtime.convert.litgpt_to_hf:main", "Convert a checkpoint back to the Hugging Face format"),
    "convert_from_litgpt": ("litgpt_runtime.convert.from_litgpt:main", "Make a LitGPT checkpoint folder (lit_model.pth, or a LitGPT finetune output) usable here"),
    "convert_to_litgpt": ("litgpt_runtime.convert.to_litgpt:main", "Write a checkpoint as a folder LitGPT loads (lit_model.pth + its model_config.yaml)"),
    "fit_check": ("litgpt_runtime.fit:main", "Estimate a finetuning run's GPU memory and say whether it fits"),
    "verify": ("litgpt_runtime.verify:main", "Re-hash a checkpoint's weights and check them against a digest"),
    "validate_data": ("litgpt_runtime.validate_data:main", "Check finetuning data against a model's tokenizer and context (no GPU)"),
}


def main(argv: list[str] | None = None) -> None:
    from litgpt_runtime._cli import run

    run(ACTIONS, argv)


if __name__ == "__main__":
    main()
