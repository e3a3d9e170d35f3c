"""Precision names, the one list of them (no torch import: the operator's API and the fit check
read it too).

Training takes Lightning Fabric's names; inference (generate, chat, serve) loads the weights in one
dtype, so only the `-true` names apply there.
"""

from __future__ import annotations

from typing import Optional

from litgpt_runtime.errors import UserError

TRAINING_PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
"""What `--precision` of finetune*/pretrain, the fit check and the FinetuneJob/PretrainJob API accept
(in this order, which is also the CRDs' enum order)."""
TEST_PRECISION = "64-true"
"""float64 throughout: slow, but summation order no longer shows in the results, so two ways of
computing one step (DDP vs one process) can be compared tightly on any CPU. The training CLI
accepts it; the fit check and the operator's API do not offer it."""
TRAINING_ALIASES = {"32": "32-true"}

INFERENCE_DTYPES = {"32-true": "float32", "bf16-true": "bfloat16", "16-true": "float16"}
"""What `--precision` of generate, chat and serve (and the ModelServer API) accept -> the torch dtype."""
INFERENCE_ALIASES = {"32": "32-true", "bf16": "bf16-true", "16": "16-true"}


def training_precision(precision: str, allow_test: bool = True) -> str:
    """The canonical training name of `precision`, or a UserError listing the choices."""
    precision = TRAINING_ALIASES.get(precision, precision)
    choices = TRAINING_PRECISIONS + ((TEST_PRECISION,) if allow_test else ())
    if precision not in choices:
        raise UserError(f"--precision {precision!r} is not supported; choose one of {', '.join(choices)}.")
    return precision


def inference_dtype_name(precision: str) -> str:
    """The torch dtype name (float32, bfloat16, float16) of an inference precision."""
    name = INFERENCE_DTYPES.get(INFERENCE_ALIASES.get(precision, precision))
    if name is None:
        raise UserError(f"Unknown precision {precision!r}; choose one of {', '.join(INFERENCE_DTYPES)}.")
    return name


def training_dtype_name(precision: str) -> str:
    """The dtype a training model is built in: 16-bit under the 16-bit `-true` precisions, else float32
    (under `-mixed` the float32 weights are the master copy; Fabric casts for 64-true itself)."""
    return {"bf16-true": "bfloat16", "16-true": "float16"}.get(precision, "float32")


def check_inference_precision(precision: Optional[str]) -> None:
    if precision is not None:
        inference_dtype_name(precision)
