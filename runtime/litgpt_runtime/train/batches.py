"""Micro-batch streams the training loop consumes, with a position that survives a restart.

The loop needs only this protocol (`MicroBatchSource`): iterate to get micro-batches (dicts with
`input_ids` and pre-shifted `targets`, both (B, T)), `state_dict()` / `load_state_dict()` for
the data position, and `epoch`. `IndexedBatches` implements it for datasets that fit in memory
(finetuning samples, pretraining token chunks); a streaming source (e.g. litdata) only needs the
same four members.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence


class MicroBatchSource(Protocol):
    epoch: int

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class IndexedBatches:
    """Endless, epoch-by-epoch micro-batches of one process's share of a map-style dataset.

    Each epoch uses a fresh permutation drawn from (seed, epoch), so the order is the same on
    every process and after a restart; process `rank` takes every `world_size`-th sample of it.
    Every process gets the same number of micro-batches (the few samples that do not divide
    evenly are left out of that epoch), because a process that runs out early would leave the
    others waiting forever in the gradient all-reduce.
    """

    def __init__(
        self,
        dataset: Sequence,
        micro_batch_size: int,
        collate: Callable[[list], dict[str, Any]],
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        self.dataset = dataset
        self.micro_batch_size = micro_batch_size
        self.collate = collate
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.epoch = 0
        self.position = 0  # micro-batches of the current epoch already handed out

    @property
    def samples_per_process(self) -> int:
        return len(self.dataset) // self.world_size

    def batches_per_epoch(self) -> int:
        return math.ceil(self.samples_per_process / self.micro_batch_size)

    def _indices(self, epoch: int) -> list[int]:
        import torch

        n = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = list(range(n))
        return order[self.rank :: self.world_size][: self.samples_per_process]

    def epoch_batches(self, epoch: int = 0, start: int = 0) -> Iterator[dict[str, Any]]:
        indices = self._indices(epoch)
        size = self.micro_batch_size
        for b in range(start, self.batches_per_epoch()):
            yield self.collate([self.dataset[i] for i in indices[b * size : (b + 1) * size]])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.samples_per_process == 0:
            raise ValueError("the dataset has fewer samples than processes")
        while True:
            for batch in self.epoch_batches(self.epoch, self.position):
                # Count the batch as consumed before handing it over: a checkpoint taken after
                # the step that used it must resume after it.
                self.position += 1
                yield batch
            self.epoch += 1
            self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def one_pass(source: Optional[IndexedBatches], max_batches: Optional[int] = None) -> Iterator[dict[str, Any]]:
    """Validation: one ordered pass over the source (at most `max_batches` micro-batches)."""
    if source is None:
        return iter(())
    batches = source.epoch_batches()
    if max_batches is None:
        return batches
    import itertools

    return itertools.islice(batches, max_batches)
