"""Finetuning methods (`full`, `lora`, `adapter`, `adapter_v2`) and `litgpt finetune --method`.

Each method's module has a `setup` (= `litgpt finetune_<method>`); `setup` here is `litgpt
finetune`: LoRA by default, another method with `--method`. Their options are defined once, in
`litgpt_runtime.finetune.cli` and `litgpt_runtime.methods`.
"""

from __future__ import annotations

from litgpt_runtime.finetune.cli import command

setup = command(None, """
    Finetune a model on instruction data: LoRA by default (same as finetune_lora), or
    `--method full|adapter|adapter_v2`. `litgpt finetune_<method> --help` lists each method's
    options with their defaults; see docs/finetune.md for which to pick.
""")
