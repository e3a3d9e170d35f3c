"""What every finetuning method shares: validate, launch Fabric, load the base model into the
method's variant, train with `litgpt_runtime.train.loop.fit`, write the output checkpoint.

A method (`litgpt_runtime.finetune.{full,lora,adapter,adapter_v2}`) is a `Method`: how to build its model
from the base config, which parameters train, and how its output folder is written. Its command
(`litgpt_runtime.finetune.cli`) checks and records the options and calls `run`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, Union

from litgpt_runtime.errors import UserError
from litgpt_runtime.quantize import Quantize
from litgpt_runtime.train.args import EvalArgs, Resume, TrainArgs
from litgpt_runtime.train.data import FinetuneData

if TYPE_CHECKING:
    import torch

    from litgpt_runtime.config import Config



@dataclass
class Method:
    name: str
    build_config: Callable[["Config"], "Config"]
    """Base config -> the variant's config."""
    model_class: Callable[[], type]
    """The variant's GPT class (imported lazily: torch)."""
    mark_trainable: Callable[[Any], None]
    """Sets requires_grad on the parameters this method trains."""
    write_output: Callable[["OutputContext"], None]
    """Writes `<out_dir>/final` from the trained weights."""
    trainable_only_checkpoints: bool = True
    """Resumable checkpoints hold only the trained parameters (the base weights do not change)."""


@dataclass
class OutputContext:
    final_dir: Path
    base_dir: Path
    base_config: "Config"
    variant_config: "Config"
    state_dict: dict[str, "torch.Tensor"]
    """The trained model's full state dict (variant keys), on the CPU."""
    hparams: dict[str, Any]
    chat_template: Optional[str]
    """Set when training used a different template than the base's (it goes into the output)."""
    save_dtype: "torch.dtype"


def check_common(data: Optional[FinetuneData], quantize: Quantize, method: str) -> FinetuneData:
    if data is None or (hasattr(data, "json_path") and data.json_path is None):
        raise UserError(f"Give the training data: litgpt finetune_{method} <repo_id> --data JSON --data.json_path train.json")
    if quantize is not None:
        from litgpt_runtime.quantize import mode

        mode(quantize)  # a bad name fails before anything is loaded; the rest is checked in `run`
    return data




def run(
    method: Method,
    *,
    repo_id: str,
    checkpoint_root_dir: Path,
    out_dir: Path,
    precision: Optional[str],
    devices: Union[int, str],
    num_nodes: Optional[int],
    strategy: str,
    data: FinetuneData,
    train: TrainArgs,
    eval: EvalArgs,
    seed: int,
    resume: Resume,
    access_token: Optional[str],
    hparams: dict[str, Any],
    quantize: Quantize = None,
) -> None:
    """Validate, launch, train, write `<out_dir>/final`."""
    from litgpt_runtime.download import ensure_checkpoint
    from litgpt_runtime.train.launch import check_precision, make_fabric, parse_devices

    if quantize is not None:
        import torch

        from litgpt_runtime.quantize import check_quantize, default_precision

        precision = precision or default_precision("cuda" if torch.cuda.is_available() else "cpu")
        check_quantize(quantize, precision, strategy)
    precision = check_precision(precision)
    devices = parse_devices(devices)
    base_dir = ensure_checkpoint(repo_id, checkpoint_root_dir, access_token=access_token)
    if getattr(data, "json_path", None) is not None and not Path(data.json_path).exists():
        raise UserError(f"Data file {data.json_path} does not exist.")
    out_dir = Path(out_dir)
    fabric = make_fabric(
        devices=devices, num_nodes=num_nodes, precision=precision, strategy=strategy,  # type: ignore[arg-type]
        out_dir=out_dir, wrap_class=method.model_class().block_class,
    )
    fabric.launch(_main, method, base_dir, out_dir, data, train, eval, seed, resume, hparams, precision, quantize)


def load_variant(method: Method, base_dir: Path, dtype: "torch.dtype", quantize: Quantize = None,
                 device: "torch.device | str" = "cpu") -> tuple[Any, "Config", "Config"]:
    """The variant model with the base weights (memory-mapped until touched) and fresh variant
    parameters, in `dtype`; plus (base config, variant config). With `quantize`, the frozen
    Linear weights are quantized onto `device` one at a time as they load (`litgpt_runtime.quantize`)."""
    import torch

    from litgpt_runtime.checkpoint import WEIGHTS_FILE, load_state_dict
    from litgpt_runtime.config import Config

    base_config = Config.from_checkpoint(base_dir)
    variant_config = method.build_config(base_config)
    with torch.device("meta"):
        model = method.model_class()(variant_config)
    state_dict = load_state_dict(base_dir / WEIGHTS_FILE)
    if quantize is None:
        model.load_state_dict(state_dict, strict=False, assign=True)
        materialize_new_parameters(model)
        return model.to(dtype), base_config, variant_config
    from litgpt_runtime.quantize import plain_parameters, quantize_into

    quantize_into(model, state_dict, quantize, dtype, device)
    model.load_state_dict(state_dict, strict=False, assign=True)
    materialize_new_parameters(model)
    for param in plain_parameters(model):  # (Module.to would also touch the bitsandbytes weights)
        param.data = param.data.to(dtype)
    for buffer_owner in model.modules():
        for key, buffer in list(buffer_owner.named_buffers(recurse=False)):
            if buffer.is_floating_point():
                setattr(buffer_owner, key, buffer.to(dtype))
    return model, base_config, variant_config


def materialize_new_parameters(model: Any) -> None:
    """Allocate the parameters the base checkpoint did not have (still on the meta device) and
    initialise them with their module's own `reset_parameters` (children first, so a parent's
    init, e.g. the adapter's 0.02 std prompt, has the last word)."""
    import torch
    import torch.nn as nn

    fresh = []
    for module in model.modules():
        had_meta = False
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                setattr(module, name, nn.Parameter(torch.empty_like(param, device="cpu"), requires_grad=param.requires_grad))
                had_meta = True
        if had_meta:
            fresh.append(module)
    for module in reversed(fresh):
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f"parameters not initialised: {left[:5]}")


def _main(fabric: Any, method: Method, base_dir: Path, out_dir: Path, data: FinetuneData, train: TrainArgs,
          eval: EvalArgs, seed: int, resume: Resume, hparams: dict[str, Any], precision: str,
          quantize: Quantize = None) -> None:
    from litgpt_runtime.tokenizer import Tokenizer
    from litgpt_runtime.train.batches import IndexedBatches
    from litgpt_runtime.train.data import pad_collate
    from litgpt_runtime.train.launch import training_dtype
    from litgpt_runtime.train.loop import TargetOnlyLoss, fit, resume_checkpoint
    from litgpt_runtime.train.optimizer import make_optimizer
    from litgpt_runtime.train.outputs import full_state_dict, write_hparams

    fabric.seed_everything(seed)
    tokenizer = Tokenizer(base_dir)
    original_template = tokenizer.chat_template
    model, base_config, variant_config = load_variant(method, base_dir, training_dtype(precision), quantize,
                                                      fabric.device)
    max_seq_length = train.max_seq_length or base_config.block_size
    if max_seq_length > base_config.block_size:
        raise UserError(f"--train.max_seq_length {max_seq_length} exceeds the model's context length ({base_config.block_size}).")
    train_samples, val_samples = data.load(tokenizer, max_seq_length)
    if len(train_samples) < fabric.world_size * train.micro_batch_size:
        fabric.print(f"Note: only {len(train_samples)} training sample(s) for {fabric.world_size} process(es) x micro-batches of {train.micro_batch_size}.")
    if len(train_samples) < fabric.world_size:
        raise UserError(f"{len(train_samples)} training sample(s) cannot be shared by {fabric.world_size} processes; add data.")
    longest = max(len(s["input_ids"]) for s in train_samples + val_samples)
    model.max_seq_length = longest  # rope cache only as long as the data needs

    method.mark_trainable(model)
    loss_fn = TargetOnlyLoss(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(_logical_numel(p) for p in {id(p): p for p in model.parameters()}.values())
    fabric.print(f"{method.name}: training {n_trainable:,} of {n_total:,} parameters on {len(train_samples)} samples "
                 f"({len(val_samples)} for validation)" + (f"; base weights quantized with {quantize}." if quantize else "."))

    model = fabric.setup_module(model)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], train, fabric.device)
    optimizer = fabric.setup_optimizers(optimizer)

    batches = IndexedBatches(train_samples, train.micro_batch_size, pad_collate, seed=seed,
                             rank=fabric.global_rank, world_size=fabric.world_size)
    val = (IndexedBatches(val_samples, train.micro_batch_size, pad_collate, shuffle=False,
                          rank=fabric.global_rank, world_size=fabric.world_size)
           if len(val_samples) >= fabric.world_size else None)
    resume_from = resume_checkpoint(out_dir, resume)
    fit(fabric, model, optimizer, batches, val, train, eval, out_dir, resume_from=resume_from, seed=seed,
        batches_per_epoch=batches.batches_per_epoch(), trainable_only_checkpoints=method.trainable_only_checkpoints,
        checkpoint_files=lambda folder: write_hparams(folder, hparams), loss_fn=loss_fn)

    del optimizer  # its moments are no longer needed: free them before writing the output
    state_dict = full_state_dict(fabric, model, out_dir)
    if quantize is not None and fabric.global_rank == 0:
        # The output is an ordinary checkpoint: the trained weights over the checkpoint's own
        # full-precision base weights (not their quantized approximation).
        from litgpt_runtime.checkpoint import WEIGHTS_FILE, load_state_dict

        trained = {k for k, p in getattr(model, "module", model).named_parameters() if p.requires_grad}
        state_dict = {**load_state_dict(base_dir / WEIGHTS_FILE),
                      **{k: v for k, v in state_dict.items() if k in trained}}
    if fabric.global_rank == 0:
        from litgpt_runtime.checkpoint import WEIGHTS_FILE, load_state_dict
        from litgpt_runtime.safetensors_io import page_out

        # Writing reads each base weight once more (all of the embedding, not just the rows the
        # data used): start from a small resident set rather than adding that to the training peak.
        page_out(state_dict.values())

        base_dtype = next(iter(load_state_dict(base_dir / WEIGHTS_FILE).values())).dtype
        final_dir = out_dir / "final"
        shutil.rmtree(final_dir, ignore_errors=True)
        final_dir.mkdir(parents=True)
        template = tokenizer.chat_template if tokenizer.chat_template != original_template else None
        method.write_output(OutputContext(final_dir, base_dir, base_config, variant_config, state_dict, hparams,
                                          template, base_dtype))
        from litgpt_runtime import lineage

        # What the complete checkpoint was made from (the operator reads it into status.output).
        lineage.write(final_dir, lineage.build(final_dir, base_dir, method.name, getattr(data, "json_path", None),
                                               hparams))
        fabric.print(f"Saved the finetuned model to {final_dir}")
    fabric.barrier()


def _logical_numel(param: Any) -> int:
    """Weights a parameter stands for (a 4-bit one packs two per byte)."""
    shape = getattr(getattr(param, "quant_state", None), "shape", None)
    return int(__import__("math").prod(shape)) if shape is not None else param.numel()


def save_complete(ctx: OutputContext, state_dict: dict[str, "torch.Tensor"], method: str, extra_files: Callable[[Path], None] = lambda _: None) -> None:
    """A complete checkpoint every action accepts: weights in the base dtype, config, tokenizer
    (+ the training template), hyperparameters, then the completeness marker."""
    from litgpt_runtime.checkpoint import mark_complete, save_checkpoint
    from litgpt_runtime.train.outputs import write_hparams

    weights = {k: (v.to(ctx.save_dtype) if v.is_floating_point() else v) for k, v in state_dict.items()}
    save_checkpoint(ctx.final_dir, weights, ctx.base_config, copy_tokenizer_from=ctx.base_dir)
    write_template(ctx.final_dir, ctx.chat_template)
    write_hparams(ctx.final_dir, ctx.hparams)
    extra_files(ctx.final_dir)
    mark_complete(ctx.final_dir, repo_id="", finetuned_from=str(ctx.base_dir), method=method)


def write_template(folder: Path, template: Optional[str]) -> None:
    """Make `template` the folder's chat template (tokenizer_config.json), when training used one
    the base did not have."""
    from litgpt_runtime.tokenizer import write_chat_template

    if template is not None:
        write_chat_template(folder, template)
