"""`litgpt finetune_adapter_v2`: LLaMA-Adapter plus per-layer scale/bias terms and trainable norms."""

from __future__ import annotations

from typing import Any

from litgpt_runtime.finetune import adapter
from litgpt_runtime.finetune.cli import command
from litgpt_runtime.finetune.common import Method


def method(**settings: Any) -> Method:
    return adapter.method(variant="adapter_v2", **settings)


setup = command("adapter_v2", """
    Finetune a model with Adapter v2: the LLaMA-Adapter prompt and gates, plus a learned scale
    and bias on every linear layer's output and trainable norms (more capacity than adapter, still
    a tiny fraction of the weights).

    The result, `<out_dir>/final`, is a complete checkpoint (base + adapter weights) for generate,
    chat and serve.
""")
