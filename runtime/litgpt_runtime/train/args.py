"""Arguments of the training loop, shared by finetuning and pretraining (`--train.*`, `--eval.*`).

Plain dataclasses (no torch import) so that `litgpt <action> --help` stays instant. Each field's
docstring is its `--help` line. Checks that need only the arguments themselves run in
`__post_init__`; checks that need the device count (e.g. that the global batch splits evenly over
the processes) run in `litgpt_runtime.train.loop`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

from litgpt_runtime.errors import UserError

Resume = Union[bool, Literal["auto"], Path]
"""`--resume`: continue from a checkpoint in out_dir: auto (if there is one), true, false, or a step folder."""


def _positive(name: str, value: Optional[float], allow_none: bool = True) -> None:
    if value is None:
        if not allow_none:
            raise UserError(f"--{name} is required.")
        return
    if value <= 0:
        raise UserError(f"--{name} must be positive (got {value}).")


@dataclass
class TrainArgs:
    """How long and how to optimise."""

    save_interval: Optional[int] = 1000
    """Save a resumable checkpoint every this many optimizer steps (None: only at the end)."""
    log_interval: int = 1
    """Print and log metrics every this many optimizer steps."""
    global_batch_size: int = 16
    """Samples per optimizer step, over all processes. Gradient accumulation makes up the
    difference to micro_batch_size x processes."""
    micro_batch_size: int = 1
    """Samples per forward/backward pass on one process (the knob that sets memory use)."""
    lr_warmup_steps: int = 100
    """Optimizer steps of linear learning-rate warm-up (capped at the run's length)."""
    epochs: Optional[int] = None
    """Passes over the training data. When no limit (epochs, max_steps, max_tokens) is given,
    one epoch."""
    max_tokens: Optional[int] = None
    """Stop after this many tokens (all processes together)."""
    max_steps: Optional[int] = None
    """Stop after this many optimizer steps."""
    max_seq_length: Optional[int] = None
    """Longest training sequence in tokens (default: the model's context length)."""
    learning_rate: float = 3e-4
    """Peak learning rate, reached at the end of warm-up."""
    min_lr: Optional[float] = None
    """Learning rate at the end of the cosine decay (default: learning_rate / 10)."""
    weight_decay: float = 0.0
    """AdamW weight decay (decoupled)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    max_norm: Optional[float] = 1.0
    """Clip the gradient norm to this (None: no clipping)."""

    def __post_init__(self) -> None:
        for name in ("log_interval", "global_batch_size", "micro_batch_size"):
            _positive(f"train.{name}", getattr(self, name), allow_none=False)
        for name in ("save_interval", "epochs", "max_tokens", "max_steps", "max_seq_length", "max_norm"):
            _positive(f"train.{name}", getattr(self, name))
        _positive("train.learning_rate", self.learning_rate, allow_none=False)
        if self.lr_warmup_steps < 0:
            raise UserError(f"--train.lr_warmup_steps must be 0 or more (got {self.lr_warmup_steps}).")
        if self.global_batch_size % self.micro_batch_size:
            raise UserError(
                f"--train.global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"--train.micro_batch_size ({self.micro_batch_size})."
            )
        if self.min_lr is not None and not 0 <= self.min_lr <= self.learning_rate:
            raise UserError(
                f"--train.min_lr ({self.min_lr}) must lie between 0 and --train.learning_rate ({self.learning_rate})."
            )
        if self.weight_decay < 0:
            raise UserError(f"--train.weight_decay must be 0 or more (got {self.weight_decay}).")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"--train.{name} must lie in [0, 1) (got {getattr(self, name)}).")

    @property
    def final_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per process per optimizer step."""
        per_process = self.global_batch_size // world_size
        if self.global_batch_size % world_size or per_process % self.micro_batch_size:
            raise UserError(
                f"--train.global_batch_size ({self.global_batch_size}) must split evenly over "
                f"{world_size} process(es) in micro-batches of --train.micro_batch_size "
                f"({self.micro_batch_size}); choose a multiple of {world_size * self.micro_batch_size}."
            )
        return per_process // self.micro_batch_size


@dataclass
class EvalArgs:
    """When and how much to validate."""

    interval: int = 100
    """Validate every this many optimizer steps."""
    max_iters: int = 100
    """Validation micro-batches per evaluation (at most the whole validation set)."""
    initial_validation: bool = False
    """Validate before the first step (a baseline for the loss)."""
    final_validation: bool = True
    """Validate after the last step."""

    def __post_init__(self) -> None:
        _positive("eval.interval", self.interval, allow_none=False)
        _positive("eval.max_iters", self.max_iters, allow_none=False)
