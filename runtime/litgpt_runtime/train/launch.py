"""Lightning Fabric for training: devices, nodes, precision and strategy decided once, here.

Multi-node runs use the standard torch distributed environment: under `torchrun` (or a
Kubernetes Indexed Job that sets the same variables) `MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`,
`NODE_RANK`/`RANK` are read by Fabric's cluster environments; we only derive the node count from
them when `--num_nodes` is not given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from litgpt_runtime.errors import UserError
from litgpt_runtime.precision import training_dtype_name, training_precision

if TYPE_CHECKING:
    import torch

Strategy = Literal["auto", "ddp", "fsdp"]
Devices = Union[int, Literal["auto"]]


def default_precision() -> str:
    """bf16-mixed where the hardware has bfloat16 matrix units (master weights stay float32):
    GPUs that support bf16, and CPUs with AMX; float16-mixed on older GPUs; float32 on other CPUs
    (litgpt picks bf16-mixed on every CPU). CPUs with AVX512_BF16 dot products but no AMX (AMD Zen
    4/5, Intel Cooper Lake) stay in float32: there bf16-mixed measured 0.63-0.76x of float32's
    tokens per CPU-second for pretraining and every finetune method (benchmarks/bench_precision.py,
    benchmarks/README.md "Training precision by CPU")."""
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_bf16_matrix_units() else "32-true"


def cpu_has_bf16_matrix_units() -> bool:
    """AMX (Intel Sapphire Rapids and later): bfloat16 matrix products run several times faster than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def check_precision(precision: Optional[str]) -> str:
    import torch

    on_cpu = not torch.cuda.is_available()
    if precision is None:
        precision = default_precision()
        if precision == "bf16-mixed" and on_cpu and os.environ.get("LOCAL_RANK", "0") == "0":
            # Say so: the same command gives float32 results on a CPU without AMX.
            print("Training in bf16-mixed: this CPU has AMX bfloat16 units (float32 master weights, bfloat16 "
                  "matrix products; --precision 32-true for float32 throughout).", file=sys.stderr)
    precision = training_precision(precision)
    if on_cpu and precision == "16-mixed":
        raise UserError("--precision 16-mixed needs a CUDA GPU; on the CPU use 32-true or bf16-mixed.")
    return precision


def training_dtype(precision: str) -> "torch.dtype":
    """The dtype the model is built in before Fabric sets it up (see `training_dtype_name`)."""
    import torch

    return getattr(torch, training_dtype_name(precision))


def parse_devices(devices: Union[int, str]) -> Devices:
    """`--devices 2`, `--devices auto` (the CLI hands numbers over as strings too)."""
    if isinstance(devices, str) and devices != "auto":
        try:
            return int(devices)
        except ValueError:
            raise UserError(f"--devices must be a number or 'auto' (got {devices!r}).") from None
    return devices  # type: ignore[return-value]


def resolve_num_nodes(devices: Devices, num_nodes: Optional[int]) -> int:
    """--num_nodes, else what the torch distributed environment implies, else 1."""
    if num_nodes is not None:
        if num_nodes < 1:
            raise UserError(f"--num_nodes must be at least 1 (got {num_nodes}).")
        return num_nodes
    world = os.environ.get("WORLD_SIZE")
    if not world:
        return 1
    local = os.environ.get("LOCAL_WORLD_SIZE") or (str(devices) if isinstance(devices, int) else None)
    if not local or int(local) < 1:
        return 1
    return max(1, int(world) // int(local))


def make_fabric(
    *,
    devices: Devices = 1,
    num_nodes: Optional[int] = None,
    precision: Optional[str] = None,
    strategy: Strategy = "auto",
    accelerator: str = "auto",
    out_dir: Optional[Path] = None,
    wrap_class: Optional[type] = None,
) -> Any:
    """A configured (not yet launched) Fabric.

    `wrap_class` is the transformer block class FSDP shards one by one (a variant's own block
    class, so LoRA/adapter blocks are wrapped too).
    """
    import lightning as L
    from lightning.fabric.strategies import FSDPStrategy

    precision = check_precision(precision)
    num_nodes = resolve_num_nodes(devices, num_nodes)
    if strategy not in ("auto", "ddp", "fsdp"):
        raise UserError(f"--strategy {strategy!r} is not supported; choose auto, ddp or fsdp.")
    chosen: Any = strategy
    if strategy == "fsdp":
        policy = {wrap_class} if wrap_class is not None else None
        # Full state dicts: checkpoints are one file that any process count can load.
        # use_orig_params: LoRA/adapters mix frozen and trainable parameters in one block.
        chosen = FSDPStrategy(auto_wrap_policy=policy, state_dict_type="full", use_orig_params=True)
    elif strategy == "auto" and (num_nodes > 1 or (isinstance(devices, int) and devices > 1)):
        chosen = "ddp"
    loggers = make_loggers(out_dir) if out_dir is not None else []
    return L.Fabric(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, precision=precision,
        strategy=chosen, loggers=loggers,
    )


def make_loggers(out_dir: Path) -> list:
    """CSV always (out_dir/logs/metrics.csv); TensorBoard when it is installed."""
    from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

    loggers: list = [CSVLogger(root_dir=str(out_dir), name="logs", version="")]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            return loggers
    loggers.append(TensorBoardLogger(root_dir=str(out_dir), name="logs", version="tensorboard"))
    return loggers
