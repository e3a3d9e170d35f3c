"""`litgpt finetune_adapter`: LLaMA-Adapter (a learned, gated prompt in the upper layers)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from litgpt_runtime.finetune.common import Method, OutputContext, check_common, run, save_complete
from litgpt_runtime.train.outputs import hyperparameters
from litgpt_runtime.train.args import EvalArgs, Resume, TrainArgs
from litgpt_runtime.train.data import JSON, FinetuneData


def method(variant: str = "adapter", **settings) -> Method:
    """Adapter and adapter v2 differ only in their module (classes and trainable filter)."""

    def module():
        if variant == "adapter":
            from litgpt_runtime.peft import adapter as m
        else:
            from litgpt_runtime.peft import adapter_v2 as m
        return m

    def build_config(base):
        return module().Config.from_base(base, **settings)

    def mark_trainable(model) -> None:
        m = module()
        (m.mark_only_adapter_as_trainable if variant == "adapter" else m.mark_only_adapter_v2_as_trainable)(model)

    def write_output(ctx: OutputContext) -> None:
        from litgpt_runtime.peft import write_peft_file

        # The adapter cannot be folded into the base weights: the folder holds the variant's
        # weights and peft.yaml tells `load_model` which classes to build.
        save_complete(ctx, ctx.state_dict, variant, lambda folder: write_peft_file(folder, variant, **settings))

    # adapter v2 trains the norms too, which are base weights: checkpoints hold all trained parameters.
    return Method(variant, build_config, lambda: module().GPT, mark_trainable, write_output, settings=settings)


def setup(
    repo_id: str,
    *,
    data: FinetuneData = JSON(),
    checkpoint_root_dir: Path = Path("checkpoints"),
    out_dir: Path = Path("out/finetune/adapter"),
    precision: Optional[str] = None,
    devices: Union[int, str] = 1,
    num_nodes: Optional[int] = None,
    strategy: Literal["auto", "ddp", "fsdp"] = "auto",
    adapter_prompt_length: int = 10,
    adapter_start_layer: int = 2,
    train: TrainArgs = TrainArgs(
        save_interval=1000, log_interval=1, global_batch_size=16, micro_batch_size=1, lr_warmup_steps=10,
        epochs=3, learning_rate=2e-3, weight_decay=0.02,
    ),
    eval: EvalArgs = EvalArgs(interval=100, max_iters=100),
    seed: int = 1337,
    resume: Resume = False,
    access_token: Optional[str] = None,
) -> None:
    """Finetune a model with LLaMA-Adapter: a short learned prompt that the upper layers attend to
    through zero-initialised gates; the base weights stay frozen (fewest trained parameters).

    The result, `<out_dir>/final`, is a complete checkpoint (base + adapter weights) for generate,
    chat and serve.

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
        adapter_prompt_length: Positions of the learned prompt.
        adapter_start_layer: First layer (0-based) that attends to the prompt.
        train: Training options.
        eval: Validation options.
        seed: Random seed (data order, initialisation).
        resume: Continue from a checkpoint in out_dir: auto (if there is one), true, false, or a step folder.
        access_token: Hugging Face token for gated models.
    """
    run_adapter("adapter", **locals())


def run_adapter(variant: str, **args) -> None:
    check_common(args["data"], None, variant)
    settings = dict(adapter_prompt_length=args.pop("adapter_prompt_length"), adapter_start_layer=args.pop("adapter_start_layer"))
    hparams = hyperparameters({"method": variant, **{k: v for k, v in args.items() if k not in ("access_token", "resume", "checkpoint_root_dir", "out_dir")}, **settings})
    run(method(variant, **settings), hparams=hparams, **args)
