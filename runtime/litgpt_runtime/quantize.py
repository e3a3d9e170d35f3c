"""Quantized base weights with bitsandbytes (`--quantize`): QLoRA training and inference.

The frozen Linear layers of the transformer blocks (attention qkv and projection, the MLP; the
output head too when it has weights of its own and no LoRA) become bitsandbytes layers -- 4-bit
NF4/FP4 (`-dq`: the per-block scales quantized again, ~0.4 bit per weight less) or 8-bit
LLM.int8. Each weight is read from the memory-mapped checkpoint, quantized on the training
device and its pages handed back to the kernel before the next one is read, so the whole model
never exists in full precision in memory. Embeddings, norms and LoRA weights stay in the
training dtype; LoRA weights are what trains.

bitsandbytes 0.49+ runs all five modes on the CPU as well as on CUDA GPUs (measured with 0.50:
quantize, forward and backward); an older bitsandbytes works on CUDA only, and says so here.

This module imports neither torch nor bitsandbytes at import time: the mode list is read by the
CLI and the fit check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Literal, Optional

from litgpt_runtime.errors import UserError

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

QUANTIZE_MODES = ("bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq", "bnb.int8")
Quantize = Optional[Literal["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq", "bnb.int8"]]
MIN_CPU_BITSANDBYTES = (0, 49)


@dataclass(frozen=True)
class Mode:
    name: str
    bits: int
    quant_type: Optional[str] = None  # "nf4" | "fp4" (4-bit only)
    double_quant: bool = False

    @property
    def bytes_per_weight(self) -> float:
        """Memory of one quantized weight, scales included (blocks of 64; double quantization
        stores the fp32 block scales as 8 bits in blocks of 256)."""
        if self.bits == 8:
            return 1.0 + 4 / 4096  # one fp32 scale per row of a (typical) 4096-wide layer
        scales = (1 + 4 / 256) / 64 if self.double_quant else 4 / 64
        return 0.5 + scales


def mode(name: str) -> Mode:
    if name not in QUANTIZE_MODES:
        raise UserError(f"--quantize {name!r} is not a mode; choose one of {', '.join(QUANTIZE_MODES)}.")
    if name == "bnb.int8":
        return Mode(name, 8)
    kind = name.split(".")[1]
    return Mode(name, 4, kind.removesuffix("-dq"), kind.endswith("-dq"))


def check_quantize(name: str, precision: Optional[str] = None, strategy: str = "auto") -> Mode:
    """What `--quantize` needs, checked before anything is loaded (one paragraph per problem)."""
    import importlib.metadata
    import importlib.util

    import torch

    chosen = mode(name)
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"--quantize {name} needs the bitsandbytes package: pip install bitsandbytes")
    if precision is not None and precision.endswith("-mixed"):
        raise UserError(f"--quantize {name} does not combine with --precision {precision} (the quantized layers "
                        "compute in one dtype): use --precision bf16-true on GPUs with bfloat16, 16-true, or 32-true.")
    if strategy == "fsdp":
        raise UserError(f"--quantize {name} does not work with --strategy fsdp (bitsandbytes weights cannot be "
                        "sharded); use --strategy ddp or a single device.")
    if not torch.cuda.is_available():
        version = importlib.metadata.version("bitsandbytes")
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parts < MIN_CPU_BITSANDBYTES:
            raise UserError(f"--quantize {name} on the CPU needs bitsandbytes 0.49 or later (installed: {version}; "
                            "older releases quantize on CUDA GPUs only): pip install -U bitsandbytes")
    return chosen


def default_precision(device_type: str) -> str:
    """The precision a quantized run uses when none is given: bf16-true where the GPU has
    bfloat16, else 32-true (the mixed precisions do not apply to quantized layers)."""
    import torch

    if device_type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16-true"
    return "32-true"


def quantized_layer_names(model: "nn.Module") -> list[str]:
    """The Linear layers that hold frozen base weights: those of the transformer blocks, and the
    output head when it is a plain Linear with weights of its own."""
    import torch.nn as nn

    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if name.startswith("transformer.h.") or (name == "lm_head" and type(module) is nn.Linear
                                                  and not getattr(model.config, "tie_embeddings", False)):
            names.append(name)
    return names


def _import_bitsandbytes():
    import logging

    # On CPUs with AVX512-BF16, bitsandbytes looks for an optional faster 4-bit kernel that it would
    # fetch from the Hugging Face Hub with the `kernels` package, and warns when it is absent; its
    # built-in CPU kernels are what we use, so the warning only confuses.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes


def _bnb_layer(chosen: Mode, weight: "torch.Tensor", bias: Optional["torch.Tensor"], compute_dtype: "torch.dtype",
               device: "torch.device") -> "nn.Module":
    """A bitsandbytes Linear holding `weight` quantized on `device` (the source is read once)."""
    import torch

    bnb = _import_bitsandbytes()

    out_features, in_features = weight.shape
    if chosen.bits == 4:
        layer = bnb.nn.Linear4bit(in_features, out_features, bias=bias is not None, compute_dtype=compute_dtype,
                                  compress_statistics=chosen.double_quant, quant_type=chosen.quant_type,
                                  device="meta")
        layer.weight = bnb.nn.Params4bit(weight.to(compute_dtype), requires_grad=False,
                                         compress_statistics=chosen.double_quant,
                                         quant_type=chosen.quant_type).to(device)
    else:
        layer = bnb.nn.Linear8bitLt(in_features, out_features, bias=bias is not None, has_fp16_weights=False,
                                    device="meta")
        layer.weight = bnb.nn.Int8Params(weight.to(compute_dtype), requires_grad=False,
                                         has_fp16_weights=False).to(device)
    if bias is not None:
        layer.bias = torch.nn.Parameter(bias.to(device=device, dtype=compute_dtype), requires_grad=False)
    return layer


def quantize_into(model: "nn.Module", state_dict: dict[str, "torch.Tensor"], name: str,
                  compute_dtype: "torch.dtype", device: "torch.device | str") -> list[str]:
    """Replace `model`'s base Linear layers (still on the meta device) by quantized ones built
    from `state_dict` (memory-mapped checkpoint tensors, one read at a time); their keys are
    removed from `state_dict`, so that the caller loads the rest. Returns the layers' names.

    A LoRA layer keeps its LoRA weights and gets the quantized layer as its `base`
    (`litgpt_runtime.peft.lora.LoRALinear`)."""
    import torch

    from litgpt_runtime.safetensors_io import page_out

    chosen = mode(name)
    device = torch.device(device)
    done = []
    for layer_name in quantized_layer_names(model):
        module = model.get_submodule(layer_name)
        weight = state_dict.pop(f"{layer_name}.weight")
        bias = state_dict.pop(f"{layer_name}.bias", None)
        quantized = _bnb_layer(chosen, weight, bias, compute_dtype, device)
        page_out([weight] + ([bias] if bias is not None else []))  # the source's pages go back now
        if hasattr(module, "lora_A"):
            module.set_base(quantized)
        else:
            parent_name, _, child = layer_name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, quantized)
        done.append(layer_name)
    return done


def is_quantized_tensor(tensor: Any) -> bool:
    """A bitsandbytes weight (or part of its quantization state) rather than an ordinary tensor."""
    return type(tensor).__module__.startswith("bitsandbytes")


def plain_parameters(model: "nn.Module") -> Iterable["torch.nn.Parameter"]:
    """The parameters that are not bitsandbytes weights (embeddings, norms, LoRA)."""
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not is_quantized_tensor(param):
                yield param


def load_quantized_model(checkpoint_dir: Any, name: str, device: "torch.device | str",
                         dtype: "torch.dtype") -> "nn.Module":
    """A checkpoint for inference with its base Linear layers quantized as they load (what
    `litgpt generate/chat --quantize` use); the rest in `dtype` on `device`. Eval mode."""
    from pathlib import Path

    import torch

    from litgpt_runtime.checkpoint import WEIGHTS_FILE, load_state_dict
    from litgpt_runtime.config import Config
    from litgpt_runtime.peft import model_class_for

    checkpoint_dir = Path(checkpoint_dir)
    config = Config.from_checkpoint(checkpoint_dir)
    model_class, config = model_class_for(checkpoint_dir, config)
    with torch.device("meta"):
        model = model_class(config)
    state_dict = load_state_dict(checkpoint_dir / WEIGHTS_FILE)
    layers = quantize_into(model, state_dict, name, dtype, device)
    state_dict = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in state_dict.items()}
    result = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not any(k.startswith(layer + ".") for layer in layers)]
    if missing or result.unexpected_keys:
        raise UserError(f"{str(checkpoint_dir)!r} does not match its model_config.yaml "
                        f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}); convert it again.")
    return model.eval()
