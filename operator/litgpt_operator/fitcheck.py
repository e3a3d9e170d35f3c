"""The ResourcesFit condition: estimate a training run's GPU memory before its Job exists.

Uses `litgpt_runtime.fit` (the same estimator as `litgpt fit_check`; pure Python, no torch, shipped in
the operator image with the torch-free `litgpt` package). The GPU size comes from the object's
`litgpt.dev/gpu-memory-gb` annotation, else the operator's `gpu_memory_gb` setting; without
either, or for a model whose size the operator cannot know, the condition is Unknown and the run
goes ahead. `litgpt.dev/skip-fit-check: "true"` skips the check (the estimate errs towards "does
not fit").
"""

from __future__ import annotations

from typing import Any, Optional

from litgpt_operator.status import FALSE, TRUE, UNKNOWN, Cond

CONDITION = "ResourcesFit"
GPU_MEMORY_ANNOTATION = "litgpt.dev/gpu-memory-gb"
SKIP_ANNOTATION = "litgpt.dev/skip-fit-check"
# What the runtime picks on a GPU when the object sets no precision (litgpt_runtime.train.launch).
RUNTIME_DEFAULT_PRECISION = "bf16-mixed"


def gpu_memory_gb(body: dict, default: Optional[float]) -> Optional[float]:
    raw = ((body.get("metadata") or {}).get("annotations") or {}).get(GPU_MEMORY_ANNOTATION)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def _skipped(body: dict) -> bool:
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(SKIP_ANNOTATION, "")
    return value.lower() in ("true", "1", "yes")


def training_setup(method: str, spec: Any, lora: Any = None):
    """A `litgpt_runtime.fit.TrainingSetup` from a FinetuneJob/PretrainJob spec (typed API models)."""
    from litgpt_runtime.methods import LORA, LoRAOptions

    # The API's LoRA fields are LoRAOptions' (tests/runtime/test_methods.py keeps them so).
    targets = LORA if lora is None else LoRAOptions(**lora.model_dump())
    return dict(
        method=method,
        # With --quantize and no precision the runtime trains LoRA in bf16-true on a GPU (mixed precision
        # does not combine with quantized weights).
        precision=spec.precision or ("bf16-true" if getattr(spec, "quantize", None) else RUNTIME_DEFAULT_PRECISION),
        micro_batch_size=spec.train.micro_batch_size,
        devices=max(1, spec.gpus_per_node),
        num_nodes=spec.nodes,
        lora=targets,
        quantize=getattr(spec, "quantize", None),  # FinetuneJob only
    ), spec.train.max_seq_length


def model_config(model: Any):
    """A `litgpt_runtime.config.Config` from a known repo id / short name or an inline config dict; None
    when the operator cannot know the model's size (a custom checkpoint it cannot read)."""
    from litgpt_runtime.config import Config, find_preset
    from litgpt_runtime.errors import UserError

    if isinstance(model, dict):
        try:
            return Config(**model)
        except (TypeError, ValueError, UserError):
            return None
    if isinstance(model, str) and find_preset(model) is not None:
        return Config.from_name(model)
    return None


def resources_fit(body: dict, model: Any, method: str, spec: Any, lora: Any = None,
                  default_gpu_memory_gb: Optional[float] = None) -> Optional[Cond]:
    """The condition for one training object, or None when there is nothing to check (CPU run).

    `model`: the model trained: a known repo id or short name, or an inline model config (dict).
    """
    if spec.gpus_per_node == 0:
        return None
    if _skipped(body):
        return Cond(CONDITION, UNKNOWN, "CheckSkipped", f"{SKIP_ANNOTATION} is set: memory not estimated.")
    budget = gpu_memory_gb(body, default_gpu_memory_gb)
    if budget is None:
        return Cond(CONDITION, UNKNOWN, "GPUMemoryUnknown",
                    f"Set the {GPU_MEMORY_ANNOTATION} annotation (GiB per GPU) to check that the run fits "
                    "before it starts.")
    from litgpt_runtime import fit
    from litgpt_runtime.errors import UserError

    config = model_config(model)
    if config is None:
        name = model if isinstance(model, str) else "this model"
        return Cond(CONDITION, UNKNOWN, "ModelSizeUnknown",
                    f"The size of {name} is not known to the operator; memory not estimated.")
    kwargs, max_seq_length = training_setup(method, spec, lora)
    kwargs["max_seq_length"] = max_seq_length or min(config.block_size, fit.DEFAULT_SEQ_LENGTH)
    try:
        report = fit.check(config, fit.TrainingSetup(**kwargs), budget)
    except UserError as error:
        return Cond(CONDITION, UNKNOWN, "EstimateFailed", str(error))
    if report.fits:
        return Cond(CONDITION, TRUE, "EstimatedToFit", report.message)
    return Cond(CONDITION, FALSE, "InsufficientGPUMemory", report.message, warning=True)
