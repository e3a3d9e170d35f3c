"""`litgpt finetune_full`: train every weight of the model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from litgpt_runtime.finetune.common import Method, OutputContext, check_common, run, save_complete
from litgpt_runtime.train.outputs import hyperparameters
from litgpt_runtime.train.args import EvalArgs, Resume, TrainArgs
from litgpt_runtime.train.data import JSON, FinetuneData


def method() -> Method:
    def model_class() -> type:
        from litgpt_runtime.model import GPT

        return GPT

    def mark_trainable(model) -> None:
        for param in model.parameters():
            param.requires_grad = True

    def write_output(ctx: OutputContext) -> None:
        save_complete(ctx, ctx.state_dict, "full")

    return Method("full", lambda config: config, model_class, mark_trainable, write_output,
                  trainable_only_checkpoints=False)


def setup(
    repo_id: str,
    *,
    data: FinetuneData = JSON(),
    checkpoint_root_dir: Path = Path("checkpoints"),
    out_dir: Path = Path("out/finetune/full"),
    precision: Optional[str] = None,
    devices: Union[int, str] = 1,
    num_nodes: Optional[int] = None,
    strategy: Literal["auto", "ddp", "fsdp"] = "auto",
    train: TrainArgs = TrainArgs(
        save_interval=1000, log_interval=1, global_batch_size=16, micro_batch_size=1, lr_warmup_steps=100,
        epochs=3, learning_rate=2e-5, weight_decay=0.02,
    ),
    eval: EvalArgs = EvalArgs(interval=100, max_iters=100),
    seed: int = 1337,
    resume: Resume = False,
    access_token: Optional[str] = None,
) -> None:
    """Finetune all weights of a model on instruction data (needs the most memory: weights,
    gradients and two AdamW moments, ~16 bytes per parameter in float32).

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
        train: Training options.
        eval: Validation options.
        seed: Random seed (data order, initialisation).
        resume: Continue from a checkpoint in out_dir: auto (if there is one), true, false, or a step folder.
        access_token: Hugging Face token for gated models.
    """
    check_common(data, None, "full")
    run(method(), repo_id=repo_id, checkpoint_root_dir=checkpoint_root_dir, out_dir=out_dir, precision=precision,
        devices=devices, num_nodes=num_nodes, strategy=strategy, data=data, train=train, eval=eval, seed=seed,
        resume=resume, access_token=access_token,
        hparams=hyperparameters(dict(method="full", repo_id=repo_id, data=data, precision=precision, devices=devices,
                                     num_nodes=num_nodes, strategy=strategy, train=train, eval=eval, seed=seed)))
