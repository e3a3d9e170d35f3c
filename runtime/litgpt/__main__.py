"""The `litgpt` console script: one table of actions, nothing else.

Each action is `"module:function"`; the function's signature is the action's CLI (jsonargparse
turns type hints into options, dataclasses into `--group.field` options) and its docstring is its
`--help`. Modules are imported only when their action runs, so `litgpt --help` never imports torch.
To add an action: add one line to ACTIONS. The machinery lives in `litgpt._cli`.
"""

from __future__ import annotations

# action -> (entry point, one-line summary for `litgpt --help`)
ACTIONS: dict[str, tuple[str, str]] = {
    "download": ("litgpt.download:main", "Download a model from the Hugging Face Hub and convert it into a checkpoint"),
    "chat": ("litgpt.chat:main", "Chat with a model interactively, using its chat template"),
    "generate": ("litgpt.generate:main", "Generate text from a prompt"),
    "finetune": ("litgpt.finetune:setup", "Finetune a model (LoRA by default; same as finetune_lora; --method full|adapter|adapter_v2)"),
    "finetune_full": ("litgpt.finetune.full:setup", "Finetune all weights of a model"),
    "finetune_lora": ("litgpt.finetune.lora:setup", "Finetune a model with LoRA"),
    "finetune_adapter": ("litgpt.finetune.adapter:setup", "Finetune a model with an adapter"),
    "finetune_adapter_v2": ("litgpt.finetune.adapter_v2:setup", "Finetune a model with adapter v2"),
    "pretrain": ("litgpt.pretrain:setup", "Pretrain a model from scratch or continue pretraining"),
    "serve": ("litgpt.serve.cli:main", "Serve a model over HTTP (OpenAI-compatible API)"),
    "merge_lora": ("litgpt.merge_lora:main", "Merge LoRA weights into the base model"),
    "convert_to_hf": ("litgpt.convert.litgpt_to_hf:main", "Convert a checkpoint back to the Hugging Face format"),
    "fit_check": ("litgpt.fit:main", "Estimate a finetuning run's GPU memory and say whether it fits"),
}


def main(argv: list[str] | None = None) -> None:
    from litgpt._cli import run

    run(ACTIONS, argv)


if __name__ == "__main__":
    main()
