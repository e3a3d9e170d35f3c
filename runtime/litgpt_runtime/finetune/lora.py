"""`litgpt finetune_lora` (= `litgpt finetune`): train low-rank updates, then merge them in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from litgpt_runtime.finetune.common import Method, OutputContext, Quantize, check_common, run, save_complete, write_template
from litgpt_runtime.train.outputs import hyperparameters, write_hparams
from litgpt_runtime.train.args import EvalArgs, Resume, TrainArgs
from litgpt_runtime.train.data import JSON, FinetuneData

LORA_FILE = "lit_lora.safetensors"


def method(merge: bool = True, **lora_settings) -> Method:
    def build_config(base):
        from litgpt_runtime.peft.lora import Config

        return Config.from_base(base, **lora_settings)

    def model_class() -> type:
        from litgpt_runtime.peft.lora import GPT

        return GPT

    def mark_trainable(model) -> None:
        from litgpt_runtime.peft.lora import mark_only_lora_as_trainable

        mark_only_lora_as_trainable(model)

    def write_output(ctx: OutputContext) -> None:
        from litgpt_runtime.peft.lora import lora_state_dict

        if merge:
            save_complete(ctx, merge_state_dict(ctx.variant_config, ctx.state_dict), "lora")
            return
        # Unmerged: only the LoRA weights and a pointer to the base; `litgpt merge_lora` completes it.
        from litgpt_runtime.safetensors_io import save_state_dict

        from litgpt_runtime.checkpoint import copy_tokenizer_files

        save_state_dict(ctx.final_dir / LORA_FILE, {k: v.contiguous() for k, v in lora_state_dict(ctx.state_dict).items()})
        ctx.base_config.save(ctx.final_dir)
        copy_tokenizer_files(ctx.base_dir, ctx.final_dir)
        write_template(ctx.final_dir, ctx.chat_template)
        write_hparams(ctx.final_dir, {**ctx.hparams, "base_checkpoint_dir": str(ctx.base_dir.resolve())})
        print(f"LoRA weights saved unmerged; run `litgpt merge_lora {ctx.final_dir}` to make it a usable checkpoint.")

    return Method("lora", build_config, model_class, mark_trainable, write_output, settings=lora_settings)


def merge_state_dict(lora_config, state_dict: dict) -> dict:
    """Base + LoRA state dict (LoRA keys) -> plain state dict with the updates folded in."""
    import torch

    from litgpt_runtime.peft.lora import GPT, merged_state_dict

    with torch.device("meta"):
        model = GPT(lora_config)
    model.load_state_dict(state_dict, strict=False, assign=True)
    return merged_state_dict(model)


def setup(
    repo_id: str,
    *,
    data: FinetuneData = JSON(),
    checkpoint_root_dir: Path = Path("checkpoints"),
    out_dir: Path = Path("out/finetune/lora"),
    precision: Optional[str] = None,
    devices: Union[int, str] = 1,
    num_nodes: Optional[int] = None,
    strategy: Literal["auto", "ddp", "fsdp"] = "auto",
    quantize: Quantize = None,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    lora_query: bool = True,
    lora_key: bool = False,
    lora_value: bool = True,
    lora_projection: bool = False,
    lora_mlp: bool = False,
    lora_head: bool = False,
    merge: bool = True,
    train: TrainArgs = TrainArgs(
        save_interval=1000, log_interval=1, global_batch_size=16, micro_batch_size=1, lr_warmup_steps=100,
        epochs=3, learning_rate=2e-4, weight_decay=0.0,
    ),
    eval: EvalArgs = EvalArgs(interval=100, max_iters=100),
    seed: int = 1337,
    resume: Resume = False,
    access_token: Optional[str] = None,
) -> None:
    """Finetune a model with LoRA: small low-rank updates on chosen projections train while the
    base weights stay frozen (memory: the weights plus little more), then they are merged in.

    The result, `<out_dir>/final`, is a complete checkpoint for generate, chat, serve and convert_to_hf.

    Args:
        repo_id: The base model: a Hugging Face repo id (downloaded on first use) or a checkpoint folder.
        data: Training data, e.g. `--data JSON --data.json_path train.json`.
        checkpoint_root_dir: Where downloaded checkpoints live.
        out_dir: Where checkpoints (`step-*`), logs and `final/` go.
        precision: 32-true, bf16-mixed, bf16-true or 16-mixed (default: bf16-mixed on GPUs and
            on CPUs with AMX, else 32-true).
        devices: Devices per node (or auto).
        num_nodes: Nodes (default: from the torch distributed environment, else 1).
        strategy: auto, ddp or fsdp.
        quantize: QLoRA: load the frozen base weights quantised (bitsandbytes, CUDA GPUs only).
        lora_r: Rank of the updates.
        lora_alpha: Updates are scaled by alpha / r.
        lora_dropout: Dropout on the LoRA path's input.
        lora_query: LoRA on the attention's query projection.
        lora_key: LoRA on the attention's key projection.
        lora_value: LoRA on the attention's value projection.
        lora_projection: LoRA on the attention's output projection.
        lora_mlp: LoRA on the MLP's linear layers.
        lora_head: LoRA on the output head (not for models whose head shares the embedding).
        merge: Merge the updates into the weights at the end (a plain checkpoint); false keeps
            `lit_lora.safetensors` for `litgpt merge_lora`.
        train: Training options.
        eval: Validation options.
        seed: Random seed (data order, initialisation, dropout).
        resume: Continue from a checkpoint in out_dir: auto (if there is one), true, false, or a step folder.
        access_token: Hugging Face token for gated models.
    """
    check_common(data, quantize, "lora")
    settings = dict(lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_query=lora_query,
                    lora_key=lora_key, lora_value=lora_value, lora_projection=lora_projection, lora_mlp=lora_mlp,
                    lora_head=lora_head)
    run(method(merge, **settings), repo_id=repo_id, checkpoint_root_dir=checkpoint_root_dir, out_dir=out_dir,
        precision=precision, devices=devices, num_nodes=num_nodes, strategy=strategy, data=data, train=train,
        eval=eval, seed=seed, resume=resume, access_token=access_token,
        hparams=hyperparameters(dict(method="lora", repo_id=repo_id, data=data, precision=precision, devices=devices,
                                     num_nodes=num_nodes, strategy=strategy, train=train, eval=eval, seed=seed,
                                     merge=merge, quantize=quantize, **settings)))
