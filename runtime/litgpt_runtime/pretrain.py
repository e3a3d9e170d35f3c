"""`litgpt pretrain`: train a model from scratch (or continue pretraining) on raw text.

`setup` validates and launches Fabric; `main` builds the model (random init, or the weights of
--initial_checkpoint_dir), tokenises/maps the data, and hands everything to the one training loop
(`litgpt_runtime.train.loop.fit`, shared with finetuning). `<out_dir>/final` is a complete checkpoint
that generate, chat and serve accept.

Multi-node: start one `litgpt pretrain ... --devices G` per node with the standard torch
distributed environment -- `MASTER_ADDR`, `MASTER_PORT` (of node 0), `WORLD_SIZE` (processes in
total, nodes x G) and the node's index in `NODE_RANK`; where that is missing, `RANK` is read as
the global rank of the node's first process (node = RANK // G; with G = 1 simply the pod index)
and then `JOB_COMPLETION_INDEX` (what a Kubernetes Indexed Job sets in each pod). Fabric then
starts the G local processes itself. Under `torchrun` (which sets LOCAL_RANK, RANK, ... per
process) Fabric takes everything from torchrun instead. `--num_nodes` defaults to
WORLD_SIZE / G. Every node needs the data and out_dir on a shared filesystem (checkpoints and
`final/` are written by global rank 0; the token cache by each node's local rank 0).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from litgpt_runtime.errors import UserError
from litgpt_runtime.train.args import EvalArgs, Resume, TrainArgs
from litgpt_runtime.train.launch import Strategy
from litgpt_runtime.train.text_data import PretrainData, TextFiles, TokenShards  # noqa: F401  (--data choices)

if TYPE_CHECKING:
    import torch

    from litgpt_runtime.config import Config

# Dense bf16/fp16 tensor-core peaks (FLOP/s) for the MFU estimate, by substring of the GPU name.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 125e12,
              "A10": 125e12, "V100": 125e12, "T4": 65e12, "RTX 4090": 165e12, "RTX 3090": 71e12}


def setup(
    model_name: Optional[str] = None,
    *,
    model_config: Optional[Path] = None,
    initial_checkpoint_dir: Optional[Path] = None,
    tokenizer_dir: Optional[Path] = None,
    data: Optional[PretrainData] = None,
    out_dir: Optional[Path] = None,
    precision: Optional[str] = None,
    devices: Union[int, str] = 1,
    num_nodes: Optional[int] = None,
    strategy: Strategy = "auto",
    train: TrainArgs = TrainArgs(
        save_interval=1000, log_interval=1, global_batch_size=512, micro_batch_size=4, lr_warmup_steps=2000,
        max_tokens=int(3e12), learning_rate=4e-4, weight_decay=0.1, beta1=0.9, beta2=0.95, max_norm=1.0,
        min_lr=4e-5,
    ),
    eval: EvalArgs = EvalArgs(interval=1000, max_iters=100),
    seed: int = 42,
    resume: Resume = False,
    compile: bool = False,
) -> None:
    """Pretrain a model from scratch, or continue pretraining one, on plain text.

    The model name (a registry name or repo id, e.g. pythia-160m) picks the architecture and
    means *from scratch*: weights are randomly initialised even when a checkpoint of that name
    exists. Continue pretraining with --initial_checkpoint_dir. The result, `<out_dir>/final`,
    is a complete checkpoint for generate, chat and serve. Logs tokens/s (and MFU on known GPUs).

    Args:
        model_name: Architecture from the registry (name or repo id); omit with --model_config
            or --initial_checkpoint_dir.
        model_config: A model_config.yaml describing the architecture instead of a name.
        initial_checkpoint_dir: Start from this complete checkpoint's weights (continued
            pretraining); its architecture must match.
        tokenizer_dir: Folder with the tokenizer files (a checkpoint folder); default: the
            initial checkpoint's. Copied into the output.
        data: `--data TextFiles --data.train_data_path corpus/` (folder of .txt files, tokenised
            once) or `--data TokenShards --data.path shards/` (pre-tokenised shards).
        out_dir: Where checkpoints (`step-*`), logs, the token cache and `final/` go
            (default: out/pretrain/<name>).
        precision: 32-true, bf16-mixed, bf16-true or 16-mixed (default: bf16-mixed on GPUs and
            on CPUs with AMX, else 32-true).
        devices: Devices per node (or auto).
        num_nodes: Nodes (default: from the torch distributed environment, else 1).
        strategy: auto, ddp or fsdp.
        train: Training options (--train.max_tokens, --train.global_batch_size, ...).
        eval: Validation options.
        seed: Random seed (initialisation, data order).
        resume: Continue from a checkpoint in out_dir: auto (if there is one), true, false, or a step folder.
        compile: Compile the model with torch.compile (slower start, faster steps).
    """
    from litgpt_runtime.train.launch import check_precision, make_fabric, parse_devices
    from litgpt_runtime.train.outputs import hyperparameters

    config = resolve_config(model_name, model_config, initial_checkpoint_dir)
    initial_checkpoint_dir = _check_initial(initial_checkpoint_dir)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else initial_checkpoint_dir
    if tokenizer_dir is None:
        raise UserError("Give --tokenizer_dir (a folder with tokenizer.json or tokenizer.model, e.g. a downloaded "
                        "checkpoint): pretraining needs it to tokenise the data and to ship it with the model.")
    if not tokenizer_dir.is_dir():
        raise UserError(f"--tokenizer_dir {str(tokenizer_dir)!r} is not a folder.")
    if data is None:
        raise UserError("Give the training data: --data TextFiles --data.train_data_path <folder of .txt files> "
                        "(or --data TokenShards --data.path <shard folder>).")
    out_dir = Path(out_dir) if out_dir is not None else Path("out/pretrain") / (config.name or "model")
    precision = check_precision(precision)
    devices = parse_devices(devices)
    adopt_cluster_env(devices)
    from litgpt_runtime.model import GPT

    fabric = make_fabric(devices=devices, num_nodes=num_nodes, precision=precision, strategy=strategy,
                         out_dir=out_dir, wrap_class=GPT.block_class)
    hparams = hyperparameters(dict(model_name=model_name, model_config=model_config,
                            initial_checkpoint_dir=initial_checkpoint_dir, tokenizer_dir=tokenizer_dir, data=data,
                            out_dir=out_dir, precision=precision, devices=devices, num_nodes=num_nodes,
                            strategy=strategy, train=train, eval=eval, seed=seed, compile=compile))
    fabric.launch(main, config, initial_checkpoint_dir, tokenizer_dir, data, out_dir, train, eval, seed, resume,
                  hparams, compile)


# --- setup helpers ---------------------------------------------------------------------------
def resolve_config(model_name: Optional[str], model_config: Optional[Path],
                   initial_checkpoint_dir: Optional[Path]) -> "Config":
    from litgpt_runtime.config import Config

    if model_name is not None and model_config is not None:
        raise UserError("Give either a model name or --model_config, not both.")
    if model_config is not None:
        if not Path(model_config).is_file():
            raise UserError(f"--model_config {str(model_config)!r} does not exist.")
        return Config.from_file(model_config)
    if model_name is not None:
        try:
            return Config.from_name(model_name)
        except UserError:
            raise
        except (KeyError, ValueError) as error:
            raise UserError(f"Unknown model {model_name!r}: {error}. Use a registry name or repo id, or "
                            "--model_config my_model.yaml.") from None
    if initial_checkpoint_dir is not None:
        return Config.from_checkpoint(_check_initial(initial_checkpoint_dir))
    raise UserError("Say which model to pretrain: a registry name (e.g. `litgpt pretrain pythia-160m ...`), "
                    "--model_config my_model.yaml, or --initial_checkpoint_dir to continue pretraining.")


def _check_initial(initial_checkpoint_dir: Optional[Path]) -> Optional[Path]:
    from litgpt_runtime.checkpoint import is_complete, refuse_litgpt_folder

    if initial_checkpoint_dir is None:
        return None
    path = Path(initial_checkpoint_dir)
    if not is_complete(path):
        refuse_litgpt_folder(path)
        raise UserError(f"--initial_checkpoint_dir {str(path)!r} is not a complete checkpoint folder "
                        "(it needs model.safetensors, model_config.yaml and .litgpt_complete.json).")
    from litgpt_runtime.checkpoint import verify_expected

    verify_expected(path)  # with $LITGPT_EXPECTED_DIGEST (set by the operator): the weights are intact
    return path


def adopt_cluster_env(devices: Union[int, str]) -> None:
    """Give Fabric the node rank of a launcher that only sets RANK or JOB_COMPLETION_INDEX.

    Fabric's default environment reads NODE_RANK; torchrun is detected separately (it sets
    TORCHELASTIC_RUN_ID and LOCAL_RANK itself), so this only fills in NODE_RANK when one
    process per node was started by something else, e.g. a Kubernetes Indexed Job.
    """
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or "LOCAL_RANK" in env or "NODE_RANK" in env or "GROUP_RANK" in env:
        return
    per_node = devices if isinstance(devices, int) else 1
    if "RANK" in env:
        env["NODE_RANK"] = str(int(env["RANK"]) // max(per_node, 1))
    elif "JOB_COMPLETION_INDEX" in env and "WORLD_SIZE" in env:
        env["NODE_RANK"] = env["JOB_COMPLETION_INDEX"]


# --- the work --------------------------------------------------------------------------------
def init_weights(model: "torch.nn.Module", config: "Config") -> None:
    """Random initialisation for training from scratch.

    Normal(0, sqrt(2 / (5 d))) for embeddings and linears ("small init", Nguyen & Salazar 2019),
    and the output projections of attention and MLP scaled down by the depth, 1 / (sqrt(d) n_layer),
    so the residual stream does not grow with the number of layers; norms and biases as new.
    """
    import torch
    import torch.nn as nn

    std = math.sqrt(2.0 / (5 * config.n_embd))
    proj_std = 1.0 / math.sqrt(config.n_embd) / config.n_layer
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, nn.Linear):
                is_proj = name.endswith("attn.proj") or name.endswith("mlp.proj")
                nn.init.normal_(module.weight, 0.0, proj_std if is_proj else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif type(module).__name__ == "RMSNorm":
                module.reset_parameters()
        if config.tie_embeddings:
            model.lm_head.weight = model.transformer.wte.weight


def build_model(config: "Config", initial_checkpoint_dir: Optional[Path], seed: int, dtype: "torch.dtype"):
    """Random init (seeded: the same on every process) or the initial checkpoint's weights."""
    import torch

    from litgpt_runtime.checkpoint import WEIGHTS_FILE, load_state_dict
    from litgpt_runtime.model import GPT

    if initial_checkpoint_dir is None:
        torch.manual_seed(seed)
        model = GPT(config)
        init_weights(model, config)
        return model.to(dtype)
    with torch.device("meta"):
        model = GPT(config)
    try:
        model.load_state_dict(load_state_dict(initial_checkpoint_dir / WEIGHTS_FILE), strict=True, assign=True)
    except RuntimeError as error:
        raise UserError(f"The weights in {initial_checkpoint_dir} do not fit the chosen architecture "
                        f"({config.name or 'model'}): {str(error).splitlines()[0]} Omit the model name to use "
                        "the checkpoint's own architecture.") from None
    return model.to(dtype)


def flops_per_token(config: "Config", n_params: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 N for the weights plus 12 L d T for attention scores (PaLM, App. B)."""
    return 6 * n_params + 12 * config.n_layer * config.n_head * config.head_size * seq_len


def peak_flops(device: "torch.device") -> Optional[float]:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    return None


def main(fabric: Any, config: "Config", initial_checkpoint_dir: Optional[Path], tokenizer_dir: Path,
         data: PretrainData, out_dir: Path, train: TrainArgs, eval: EvalArgs, seed: int, resume: Resume,
         hparams: dict[str, Any], compile: bool = False) -> None:
    from litgpt_runtime.tokenizer import Tokenizer
    from litgpt_runtime.train.batches import IndexedBatches
    from litgpt_runtime.train.launch import training_dtype
    from litgpt_runtime.train.loop import fit, resume_checkpoint
    from litgpt_runtime.train.optimizer import make_optimizer
    from litgpt_runtime.train.outputs import full_state_dict, write_hparams
    from litgpt_runtime.train.text_data import TokenChunks, split_every, stack_collate

    tokenizer = Tokenizer(tokenizer_dir)
    if tokenizer.vocab_size > config.padded_vocab_size:
        raise UserError(f"The tokenizer in {tokenizer_dir} has {tokenizer.vocab_size} tokens but the model's "
                        f"vocabulary holds {config.padded_vocab_size}; pick a matching tokenizer or model.")
    block = train.max_seq_length or config.block_size
    if block > config.block_size:
        raise UserError(f"--train.max_seq_length {block} exceeds the model's context length ({config.block_size}).")

    # Tokenise (once per node; the cache is keyed by the files and the tokenizer), then map.
    if fabric.local_rank == 0:
        data.prepare(tokenizer, out_dir / "token_cache")
    fabric.barrier()
    train_dir, val_dir = data.prepare(tokenizer, out_dir / "token_cache")
    train_set = TokenChunks(train_dir, block)
    val_set = TokenChunks(val_dir, block) if val_dir is not None else None
    if val_set is None:
        train_set, val_set = split_every(train_set, data.val_split_fraction)
    if len(train_set) < fabric.world_size * train.micro_batch_size:
        raise UserError(f"The training data makes only {len(train_set)} sequence(s) of {block + 1} tokens, fewer "
                        f"than {fabric.world_size} process(es) x --train.micro_batch_size {train.micro_batch_size}; "
                        "add text or lower --train.max_seq_length.")

    model = build_model(config, initial_checkpoint_dir, seed, training_dtype(hparams["precision"]))
    model.max_seq_length = block
    n_params = sum(p.numel() for p in model.parameters())
    origin = f"weights of {initial_checkpoint_dir}" if initial_checkpoint_dir else "random initialisation"
    fabric.print(f"Pretraining {config.name or 'model'} ({n_params:,} parameters, {origin}) on "
                 f"{len(train_set):,} sequences of {block} tokens ({len(val_set) if val_set else 0:,} for validation).")

    fabric.seed_everything(seed)
    if compile:
        import torch

        model = torch.compile(model)
    model = fabric.setup_module(model)
    optimizer = fabric.setup_optimizers(make_optimizer(list(model.parameters()), train, fabric.device))
    batches = IndexedBatches(train_set, train.micro_batch_size, stack_collate, seed=seed,
                             rank=fabric.global_rank, world_size=fabric.world_size)
    val = (IndexedBatches(val_set, train.micro_batch_size, stack_collate, shuffle=False,
                          rank=fabric.global_rank, world_size=fabric.world_size)
           if val_set is not None and len(val_set) >= fabric.world_size else None)
    per_token = flops_per_token(config, n_params, block)
    started = time.perf_counter()
    state = fit(fabric, model, optimizer, batches, val, train, eval, out_dir, resume_from=resume_checkpoint(out_dir, resume),
                seed=seed, batches_per_epoch=batches.batches_per_epoch(), tokens_per_step=train.global_batch_size * block,
                trainable_only_checkpoints=False, checkpoint_files=lambda folder: write_hparams(folder, hparams),
                flops_per_token=per_token)
    elapsed = time.perf_counter() - started
    _report_throughput(fabric, state.tokens, elapsed, per_token)

    state_dict = full_state_dict(fabric, model, out_dir)
    if fabric.global_rank == 0:
        save_final(out_dir / "final", state_dict, config, tokenizer_dir, initial_checkpoint_dir, hparams, state)
        fabric.print(f"Saved the pretrained model to {out_dir / 'final'}")
    fabric.barrier()


def _report_throughput(fabric: Any, tokens: int, elapsed: float, per_token: float) -> None:
    if elapsed <= 0 or tokens <= 0:
        return
    rate = tokens / elapsed
    line = f"Throughput: {rate:,.0f} tokens/s over {tokens:,} tokens, {per_token * rate / 1e12:.3f} TFLOP/s"
    peak = peak_flops(fabric.device)
    if peak is not None:
        line += f", MFU {100 * per_token * rate / (peak * fabric.world_size):.1f}%"
    fabric.print(line)


def save_final(final_dir: Path, state_dict: dict, config: "Config", tokenizer_dir: Path,
               initial_checkpoint_dir: Optional[Path], hparams: dict[str, Any], state: Any) -> None:
    """`final/`: weights, config, tokenizer, hyperparameters; the completeness marker last."""
    from litgpt_runtime.checkpoint import mark_complete, save_checkpoint
    from litgpt_runtime.train.outputs import write_hparams

    shutil.rmtree(final_dir, ignore_errors=True)
    weights = {k.replace("_orig_mod.", ""): v for k, v in state_dict.items()}  # torch.compile's prefix
    save_checkpoint(final_dir, weights, config, copy_tokenizer_from=tokenizer_dir)
    # The tokenizer folder's Hugging Face config.json describes *its* model, not this one; keep
    # one only when continuing from a checkpoint of this very architecture.
    (final_dir / "config.json").unlink(missing_ok=True)
    if initial_checkpoint_dir is not None and (initial_checkpoint_dir / "config.json").is_file():
        shutil.copyfile(initial_checkpoint_dir / "config.json", final_dir / "config.json")
    write_hparams(final_dir, hparams)
    mark_complete(final_dir, repo_id="", pretrained=True, step=state.step, tokens=state.tokens,
                  initial_checkpoint=str(initial_checkpoint_dir) if initial_checkpoint_dir else None)
