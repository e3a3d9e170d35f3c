"""The one training loop, shared by finetuning (all methods) and pretraining.

`setup` functions (in `litgpt_runtime.finetune.*`, `litgpt_runtime.pretrain`) build the model, the optimizer and a
`MicroBatchSource`, then call `fit`. `fit` owns everything about stepping:

- gradient accumulation: `global_batch_size / (micro_batch_size x processes)` micro-batches per
  optimizer step, the gradient all-reduce skipped on all but the last (`no_backward_sync`);
- the loss is summed over target tokens and divided by the step's target-token count over all
  processes, so a step's gradient does not depend on how the batch is split into micro-batches
  or processes (2 x micro 4 == 1 x micro 8);
- stop at epochs / max_steps / max_tokens, whichever comes first;
- learning rate warm-up + cosine (`litgpt_runtime.train.schedule`), gradient clipping;
- validation every `eval.interval` steps;
- resumable checkpoints every `save_interval` steps in `out_dir/step-XXXXXX/` (trainable weights,
  optimizer state, step counters, data position), written to a temporary name and renamed, so a
  half-written one is never picked up by `--resume auto`;
- metrics (loss, lr, tokens/s, memory) to stdout, CSV and TensorBoard, and the declared progress
  record (`litgpt_runtime.progress_record`: step, loss, ETA, last checkpoint, ...) for machines.

Randomness (dropout) is re-seeded from (seed, step, rank) at every step, which makes a resumed
run reproduce an uninterrupted one exactly without storing generator states.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from litgpt_runtime.errors import UserError
from litgpt_runtime.progress_record import Checkpoint, ProgressRecord, emit, now_iso
from litgpt_runtime.train.args import EvalArgs, Resume, TrainArgs
from litgpt_runtime.train.batches import MicroBatchSource, one_pass
from litgpt_runtime.train.data import IGNORE_INDEX
from litgpt_runtime.train.schedule import lr_at

STATE_FILE = "training_state.pt"
STEP_PREFIX = "step-"


@dataclass
class LoopState:
    """Counters that a checkpoint stores and a resumed run continues from."""

    step: int = 0
    """Optimizer steps done."""
    iter_num: int = 0
    """Micro-batches consumed by this process."""
    tokens: int = 0
    """Tokens processed by all processes together."""
    data: dict = field(default_factory=dict)
    """The batch source's position."""
    val_loss: Optional[float] = None
    """Latest validation loss."""
    train_loss: Optional[float] = None
    """Loss of the latest step."""


@dataclass
class Limits:
    """When to stop, resolved from TrainArgs and the data."""

    max_steps: Optional[int]
    max_iters: Optional[int]  # micro-batches per process (from epochs)
    max_tokens: Optional[int]
    total_steps: Optional[int]  # length of the learning rate schedule

    def reached(self, state: "LoopState") -> bool:
        return (
            (self.max_steps is not None and state.step >= self.max_steps)
            or (self.max_iters is not None and state.iter_num >= self.max_iters)
            or (self.max_tokens is not None and state.tokens >= self.max_tokens)
        )


def resolve_limits(train: TrainArgs, accumulation: int, batches_per_epoch: Optional[int], tokens_per_step: Optional[int]) -> Limits:
    epochs = train.epochs
    if epochs is None and train.max_steps is None and train.max_tokens is None:
        epochs = 1
    max_iters = None
    candidates = []
    if train.max_steps is not None:
        candidates.append(train.max_steps)
    if epochs is not None:
        if batches_per_epoch is None:
            raise UserError("--train.epochs needs a dataset of known size; use --train.max_steps or --train.max_tokens.")
        max_iters = epochs * batches_per_epoch
        candidates.append(math.ceil(max_iters / accumulation))
    if train.max_tokens is not None and tokens_per_step:
        candidates.append(math.ceil(train.max_tokens / tokens_per_step))
    total = min(candidates) if candidates else None
    return Limits(max_steps=train.max_steps, max_iters=max_iters, max_tokens=train.max_tokens, total_steps=total)


# --- loss ------------------------------------------------------------------------------------


def summed_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy summed over the batch's target tokens (targets are pre-shifted)."""
    logits = model(batch["input_ids"])
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), batch["targets"].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


class TargetOnlyLoss:
    """`summed_loss` that computes the output head only where there is a target.

    With masked prompts most positions have no target, and the head (n_embd x vocab, the largest
    matrix of small models) plus its float logits dominate memory and a good part of the time. A
    forward pre-hook on the model's `lm_head` keeps only the rows with a target, so the model
    returns logits (N, vocab) for those N positions. The model and its state dict are untouched.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.mask: Optional[torch.Tensor] = None
        head = model.lm_head
        head.register_forward_pre_hook(self._select)

    def _select(self, _module, args):
        if self.mask is None:
            return None
        return (args[0][self.mask],) + tuple(args[1:])

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        targets = batch["targets"]
        self.mask = targets != IGNORE_INDEX
        try:
            logits = model(batch["input_ids"])  # (N, vocab)
        finally:
            self.mask = None
        return F.cross_entropy(logits, targets[targets != IGNORE_INDEX], reduction="sum")


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["targets"] != IGNORE_INDEX).sum())


# --- checkpoints ------------------------------------------------------------------------------


def step_dir(out_dir: Path, step: int) -> Path:
    return out_dir / f"{STEP_PREFIX}{step:06d}"


def newest_checkpoint(out_dir: Path) -> Optional[Path]:
    """The complete training checkpoint with the highest step in out_dir, if any."""
    if not out_dir.is_dir():
        return None
    found = [p for p in out_dir.glob(f"{STEP_PREFIX}*") if p.is_dir() and p.name[len(STEP_PREFIX):].isdigit() and (p / STATE_FILE).is_file()]
    return max(found, key=lambda p: int(p.name[len(STEP_PREFIX):]), default=None)


def resume_checkpoint(out_dir: Path, resume: Resume) -> Optional[Path]:
    """What `--resume` means: auto (newest if any), true (newest, which must exist), false, or a path."""
    if resume is False or resume in ("false", "False"):
        return None
    if resume is True or resume in ("auto", "true", "True"):
        found = newest_checkpoint(out_dir)
        if found is None and resume != "auto":
            raise UserError(f"--resume true: there is no checkpoint ({STEP_PREFIX}*/{STATE_FILE}) in {out_dir} to resume from.")
        return found
    path = Path(resume)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.is_file():
        raise UserError(f"--resume {resume}: no training checkpoint there (expected a {STEP_PREFIX}* folder holding {STATE_FILE}).")
    return path.parent


def save_training_state(fabric: Any, out_dir: Path, model, optimizer, state: LoopState, trainable_only: bool, extra_files: Optional[Callable[[Path], None]] = None) -> Path:
    """Write `out_dir/step-XXXXXX/` atomically (temporary folder, then rename)."""
    final = step_dir(out_dir, state.step)
    tmp = final.with_name(final.name + ".partial")
    if fabric.global_rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    fabric.barrier()
    names = {_strip(n) for n, p in model.named_parameters() if p.requires_grad}
    # Frozen base weights are already in the base checkpoint: store only what training changes.
    model_filter = (lambda key, _value: _strip(key) in names) if trainable_only else None
    from lightning.fabric.strategies import FSDPStrategy

    if isinstance(fabric.strategy, FSDPStrategy):  # gathers the shards: Fabric knows how
        payload = {"model": model, "optimizer": optimizer, "loop": asdict(state)}
        fabric.save(tmp / STATE_FILE, payload, filter={"model": model_filter} if model_filter else None)
    elif fabric.global_rank == 0:
        # Same layout as fabric.save (so fabric.load reads it), but streamed straight to the file:
        # fabric.save serialises into an in-memory buffer first, which for full finetuning is a
        # transient second copy of weights + optimizer state (the run's memory peak).
        module = getattr(model, "module", model)
        weights = {k: v for k, v in module.state_dict().items() if model_filter is None or model_filter(k, v)}
        torch.save({"model": weights, "optimizer": optimizer.state_dict(), "loop": asdict(state)}, tmp / STATE_FILE)
    if fabric.global_rank == 0:
        if extra_files is not None:
            extra_files(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    fabric.barrier()
    return final


def _strip(key: str) -> str:
    # Wrappers (torch.compile, FSDP) prefix parameter names; state-dict keys are unprefixed.
    for prefix in ("_forward_module.", "_orig_mod.", "_fsdp_wrapped_module.", "module."):
        key = key.replace(prefix, "")
    return key


def load_training_state(fabric: Any, path: Path, model, optimizer) -> LoopState:
    payload = {"model": model, "optimizer": optimizer}
    remainder = fabric.load(path / STATE_FILE, payload, strict=False)
    return LoopState(**remainder["loop"])


# --- validation --------------------------------------------------------------------------------


@torch.no_grad()
def validate(fabric: Any, model, val_source, max_iters: int, loss_fn=summed_loss) -> Optional[float]:
    """Mean loss per target token over (at most max_iters micro-batches of) the validation data."""
    if val_source is None:
        return None
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=fabric.device)
    for batch in one_pass(val_source, max_iters):
        batch = {k: v.to(fabric.device) for k, v in batch.items()}
        total[0] += loss_fn(model, batch).double()
        total[1] += count_targets(batch)
    total = fabric.all_reduce(total, reduce_op="sum")
    model.train(was_training)
    return float(total[0] / total[1]) if total[1] > 0 else None


# --- the loop ---------------------------------------------------------------------------------


class StopSignal:
    """SIGTERM (Kubernetes evicting or preempting the pod) asks for a stop at the next step
    boundary: the loop saves a resumable checkpoint and exits with status 143, so a retried pod
    continues with `--resume auto` instead of starting over."""

    def __init__(self) -> None:
        import signal
        import threading

        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum, _frame) -> None:
        self.requested = True

    def should_stop(self, fabric: Any) -> bool:
        flag = torch.tensor(float(self.requested), device=fabric.device)
        if fabric.world_size > 1:  # one process told is enough: all must stop at the same step
            flag = fabric.all_reduce(flag, reduce_op="sum")
        return bool(flag > 0)

    def restore(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)



class ProgressReporter:
    """Emits progress records from rank 0 (`litgpt_runtime.progress_record`); the ETA is this
    run's average pace since it started (or resumed) times the steps left."""

    def __init__(self, fabric: Any, total_steps: Optional[int], train_source, start_step: int,
                 resumed_from: Optional[Path]) -> None:
        self.fabric, self.total_steps, self.train_source = fabric, total_steps, train_source
        self.start_step, self.started = start_step, time.perf_counter()
        self.resumed_from_step = start_step if resumed_from is not None else None
        self.last_checkpoint = (Checkpoint(start_step, str(resumed_from), now_iso()) if resumed_from is not None
                                else None)

    def eta_seconds(self, step: int) -> Optional[float]:
        done = step - self.start_step
        if self.total_steps is None or done <= 0:
            return None
        return max(0.0, (self.total_steps - step) * (time.perf_counter() - self.started) / done)

    def checkpoint_saved(self, state: "LoopState", path: Path) -> None:
        self.last_checkpoint = Checkpoint(state.step, str(path), now_iso())
        self.report("checkpoint", state)

    def report(self, event: str, state: "LoopState", lr: Optional[float] = None,
               tokens_per_second: Optional[float] = None) -> None:
        if self.fabric.global_rank != 0:
            return
        record = ProgressRecord(
            step=state.step, event=event, total_steps=self.total_steps,
            epoch=int(getattr(self.train_source, "epoch", 0)), loss=state.train_loss, val_loss=state.val_loss,
            learning_rate=lr, tokens_per_second=tokens_per_second, tokens_seen=state.tokens,
            eta_seconds=0.0 if event == "finished" else self.eta_seconds(state.step),
            last_checkpoint=self.last_checkpoint, resumed_from_step=self.resumed_from_step,
        )
        emit(record, lambda line: print(line, file=sys.stdout, flush=True))


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    # ru_maxrss is KiB on Linux: the process's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def fit(
    fabric: Any,
    model,
    optimizer,
    train_source: MicroBatchSource,
    val_source,
    train: TrainArgs,
    eval: EvalArgs,
    out_dir: Path,
    *,
    resume_from: Optional[Path] = None,
    seed: int = 42,
    batches_per_epoch: Optional[int] = None,
    tokens_per_step: Optional[int] = None,
    trainable_only_checkpoints: bool = True,
    loss_fn: Callable[[Any, dict], torch.Tensor] = summed_loss,
    checkpoint_files: Optional[Callable[[Path], None]] = None,
    flops_per_token: Optional[float] = None,
) -> LoopState:
    """Train `model` (already set up with Fabric) until a limit is reached; return the counters.

    SIGTERM stops at the next step boundary with a checkpoint (exit status 143; see StopSignal).

    `checkpoint_files(folder)` may add files to each periodic checkpoint (e.g. hyperparameters).
    `flops_per_token` (training FLOPs, ~6 x parameters) adds an MFU-style FLOPs/s figure to the log.
    """
    accumulation = train.accumulation_steps(fabric.world_size)
    limits = resolve_limits(train, accumulation, batches_per_epoch, tokens_per_step)
    state = LoopState()
    if resume_from is not None:
        state = load_training_state(fabric, resume_from, model, optimizer)
        train_source.load_state_dict(state.data)
        fabric.print(f"Resuming from {resume_from} at step {state.step} ({state.tokens:,} tokens seen).")

    if eval.initial_validation and state.step == 0:
        state.val_loss = validate(fabric, model, val_source, eval.max_iters, loss_fn)
        if state.val_loss is not None:
            fabric.print(f"step 0 | val loss {state.val_loss:.4f}")

    total = limits.total_steps
    fabric.print(
        f"Training: {accumulation} micro-batch(es) of {train.micro_batch_size} per step on each of "
        f"{fabric.world_size} process(es); {total if total is not None else '?'} steps."
    )
    progress = ProgressReporter(fabric, limits.total_steps, train_source, state.step, resume_from)
    if resume_from is not None:
        progress.report("resumed", state)
    run = _Run(fabric, model, optimizer, train_source, val_source, train, eval, out_dir, limits, accumulation, seed,
               loss_fn, trainable_only_checkpoints, checkpoint_files, flops_per_token, StopSignal(), progress)
    try:
        _steps(run, state, saved_at=state.step if resume_from is not None else -1)
    finally:
        run.stop.restore()
    progress.report("finished", state)
    return state


@dataclass
class _Run:
    """What stays fixed while `_steps` runs: `fit`'s arguments, resolved."""

    fabric: Any
    model: Any
    optimizer: Any
    train_source: MicroBatchSource
    val_source: Any
    train: TrainArgs
    eval: EvalArgs
    out_dir: Path
    limits: Limits
    accumulation: int
    seed: int
    loss_fn: Callable[[Any, dict], torch.Tensor]
    trainable_only_checkpoints: bool
    checkpoint_files: Optional[Callable[[Path], None]]
    flops_per_token: Optional[float]
    stop: StopSignal
    progress: "ProgressReporter"

    def save(self, state: LoopState) -> Path:
        path = save_training_state(self.fabric, self.out_dir, self.model, self.optimizer, state,
                                   self.trainable_only_checkpoints, self.checkpoint_files)
        self.progress.checkpoint_saved(state, path)
        return path

    def validate(self) -> Optional[float]:
        return validate(self.fabric, self.model, self.val_source, self.eval.max_iters, self.loss_fn)


def _steps(run: _Run, state: LoopState, saved_at: int) -> None:
    """Optimizer steps until a limit is reached (or SIGTERM), then the final validation and checkpoint.
    `saved_at`: the step of the newest checkpoint on disk (-1: none yet)."""
    fabric, model, optimizer, train, eval, limits = run.fabric, run.model, run.optimizer, run.train, run.eval, run.limits
    total = limits.total_steps

    batches = iter(run.train_source)
    model.train()
    window_start, window_tokens, window_loss, window_steps = time.perf_counter(), 0, 0.0, 0
    while not limits.reached(state):
        micro = []
        while len(micro) < run.accumulation and not (limits.max_iters is not None and state.iter_num >= limits.max_iters):
            micro.append(next(batches))
            state.iter_num += 1
        if not micro:
            break
        # Same dropout masks whether or not the run was interrupted (see module docstring).
        torch.manual_seed((run.seed * 1_000_003 + state.step) * 1_009 + fabric.global_rank)
        local_targets = torch.tensor(sum(count_targets(b) for b in micro), dtype=torch.float64, device=fabric.device)
        step_targets = float(fabric.all_reduce(local_targets, reduce_op="sum")) if fabric.world_size > 1 else float(local_targets)
        # DDP averages gradients over processes, hence the world_size factor.
        scale = fabric.world_size / max(step_targets, 1.0)
        lr = lr_at(state.step, peak=train.learning_rate, final=train.final_lr, warmup_steps=train.lr_warmup_steps, total_steps=total)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        step_tokens = 0
        for i, batch in enumerate(micro):
            batch = {k: v.to(fabric.device, non_blocking=True) for k, v in batch.items()}
            with fabric.no_backward_sync(model, enabled=i < len(micro) - 1):
                loss = run.loss_fn(model, batch) * scale
                fabric.backward(loss)
            step_loss += loss.detach()
            step_tokens += batch["input_ids"].numel()
        if train.max_norm is not None:
            fabric.clip_gradients(model, optimizer, max_norm=train.max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.tokens += step_tokens * fabric.world_size
        window_tokens += step_tokens * fabric.world_size
        window_loss += step_loss
        window_steps += 1
        state.data = run.train_source.state_dict()

        if state.step % train.log_interval == 0 or limits.reached(state):
            summed = torch.as_tensor(window_loss, dtype=torch.float64, device=fabric.device)
            if fabric.world_size > 1:
                summed = fabric.all_reduce(summed, reduce_op="mean")
            elapsed = time.perf_counter() - window_start
            state.train_loss = _mean_step_loss(float(summed), window_steps)
            metrics = {
                "step": state.step,
                "epoch": getattr(run.train_source, "epoch", 0),
                "loss": state.train_loss,
                "lr": lr,
                "tokens": state.tokens,
                "tokens_per_sec": window_tokens / elapsed,
                "sec_per_step": elapsed / window_steps,
                "peak_memory_gib": peak_memory_gib(fabric.device),
            }
            if run.flops_per_token:
                metrics["tflops_per_sec"] = run.flops_per_token * window_tokens / elapsed / 1e12
            fabric.log_dict(metrics, step=state.step)
            of = f"/{total}" if total is not None else ""
            fabric.print(
                f"step {state.step}{of} | loss {state.train_loss:.4f} | lr {lr:.2e} | "
                f"{metrics['tokens_per_sec']:,.0f} tok/s | {metrics['sec_per_step']:.3f} s/step | "
                f"peak mem {metrics['peak_memory_gib']:.2f} GiB",
                file=sys.stdout,
            )
            run.progress.report("step", state, lr=lr, tokens_per_second=metrics["tokens_per_sec"])
            window_start, window_tokens, window_loss, window_steps = time.perf_counter(), 0, 0.0, 0

        if run.val_source is not None and state.step % eval.interval == 0 and not limits.reached(state):
            state.val_loss = run.validate()
            if state.val_loss is not None:
                fabric.log_dict({"val_loss": state.val_loss}, step=state.step)
                fabric.print(f"step {state.step} | val loss {state.val_loss:.4f}")
        if train.save_interval is not None and state.step % train.save_interval == 0:
            path = run.save(state)
            saved_at = state.step
            fabric.print(f"Saved checkpoint {path}")
        if run.stop.should_stop(fabric):
            if saved_at != state.step:
                path = run.save(state)
                fabric.print(f"Saved checkpoint {path}")
            fabric.print(f"Stopped by SIGTERM after step {state.step}; run again with --resume auto to continue.")
            raise SystemExit(143)

    if eval.final_validation and run.val_source is not None:
        state.val_loss = run.validate()
        if state.val_loss is not None:
            fabric.log_dict({"val_loss": state.val_loss}, step=state.step)
            fabric.print(f"final val loss {state.val_loss:.4f} (perplexity {math.exp(min(state.val_loss, 50)):.2f})")
    if train.save_interval is not None and saved_at != state.step:
        run.save(state)
    for logger in fabric.loggers:
        logger.finalize("success")


def _mean_step_loss(summed: float, steps: int) -> float:
    """Per-token loss over the logging window's steps.

    Each process's step loss is its share (its targets' summed loss x world_size / all targets),
    so the mean of those over processes is the step's loss per target token.
    """
    return summed / max(steps, 1)
