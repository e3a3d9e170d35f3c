"""Batched decoding: many requests share one KV cache and one forward pass per step.

The cache has `max_batch_size` rows; each request owns one row (a "slot") from admission until it
finishes or is cancelled, and new requests join between steps (continuous batching). Every step
feeds each active row the tokens it still has to process -- the whole prompt for a row that was
just admitted, one sampled token for a row that is decoding -- as one (B, T) forward with per-row
positions (`GPT.forward(idx, input_pos=(B, T))`). Rows with fewer than T tokens are padded on the
right:

    row 0 (decoding, pos 7):   [t   pad pad pad]   positions [7 8 9 10]
    row 1 (new, prompt of 4):  [p0  p1  p2  p3 ]   positions [0 1 2 3]
    row 2 (free):              [pad pad pad pad]   positions [0 1 2 3]

The model's mask lets a query see only keys at positions <= its own, so the padding written past
a row's last real token is never read: the row's next real token overwrites it first. Near the
end of the context padding would run past the cache, so the last cache position is kept as a
scratch slot that padding is clamped into and real tokens never use.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import torch

from litgpt.serve.sampling import SamplingParams, sample_rows


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_ids: tuple[int, ...] = ()
    seed: Optional[int] = None


@dataclass
class TokenEvent:
    """What one step produced for one request."""

    key: str
    token_id: Optional[int]  # None when the request finished without a new token (stop token)
    finish_reason: Optional[str]  # None while running; "stop" (stop token) or "length"
    batch_size: int  # active rows in the forward pass that produced this event


@dataclass
class _Slot:
    key: str
    request: GenerationRequest
    pending: list[int]  # tokens to feed at the next step
    pos: int = 0  # next cache position to write
    generated: int = 0
    generator: Optional[torch.Generator] = None


class BatchedGenerator:
    """Owns the model's KV cache; `step()` advances every active request by one token."""

    def __init__(self, model, max_batch_size: int, max_seq_length: Optional[int] = None) -> None:
        """`max_seq_length`: cache length per row (default: the model's block size)."""
        self.model = model
        self.max_batch_size = max_batch_size
        self.device = next(model.parameters()).device
        max_seq_length = max_seq_length or model.config.block_size
        model.set_kv_cache(batch_size=max_batch_size, max_seq_length=max_seq_length, device=self.device)
        self.cache_length = model.max_seq_length
        # the last cache position is the scratch slot for padding (see the module docstring)
        self.context_window = self.cache_length - 1
        self.slots: list[Optional[_Slot]] = [None] * max_batch_size
        self.waiting: deque[tuple[str, GenerationRequest]] = deque()

    # -- bookkeeping --
    @property
    def active(self) -> int:
        return sum(slot is not None for slot in self.slots)

    def has_work(self) -> bool:
        return bool(self.waiting) or self.active > 0

    def submit(self, key: str, request: GenerationRequest) -> None:
        if not request.prompt_ids:
            raise ValueError("empty prompt")
        if len(request.prompt_ids) > self.context_window:
            raise ValueError(f"prompt of {len(request.prompt_ids)} tokens exceeds the context of {self.context_window}")
        self.waiting.append((key, request))

    def cancel(self, key: str) -> bool:
        """Drop a request (waiting or running); its slot is free for the next step."""
        for i, slot in enumerate(self.slots):
            if slot is not None and slot.key == key:
                self.slots[i] = None
                return True
        for item in self.waiting:
            if item[0] == key:
                self.waiting.remove(item)
                return True
        return False

    def reset(self) -> list[str]:
        """Drop everything (after an error); returns the keys that were dropped."""
        keys = [s.key for s in self.slots if s is not None] + [k for k, _ in self.waiting]
        self.slots = [None] * self.max_batch_size
        self.waiting.clear()
        return keys

    def _admit(self) -> None:
        for i in range(self.max_batch_size):
            if not self.waiting:
                return
            if self.slots[i] is None:
                key, request = self.waiting.popleft()
                generator = None
                if request.seed is not None:
                    generator = torch.Generator(device=self.device).manual_seed(request.seed)
                self.slots[i] = _Slot(key, request, list(request.prompt_ids), generator=generator)

    # -- the step --
    def step(self) -> list[TokenEvent]:
        self._admit()
        rows = [i for i, slot in enumerate(self.slots) if slot is not None]
        if not rows:
            return []
        width = max(len(self.slots[i].pending) for i in rows)
        scratch = self.cache_length - 1
        idx = [[0] * width for _ in range(self.max_batch_size)]
        positions = [[min(j, scratch) for j in range(width)] for _ in range(self.max_batch_size)]
        last = [0] * self.max_batch_size
        for i in rows:
            slot = self.slots[i]
            n = len(slot.pending)
            idx[i][:n] = slot.pending
            positions[i] = [min(slot.pos + j, scratch) for j in range(width)]
            last[i] = n - 1
        maxp1 = max(max(p) for p in positions) + 1

        with torch.inference_mode():
            idx_t = torch.tensor(idx, dtype=torch.long, device=self.device)
            pos_t = torch.tensor(positions, dtype=torch.long, device=self.device)
            logits = self.model(idx_t, input_pos=pos_t, input_pos_maxp1=maxp1)  # (B, T, V)
            row_index = torch.tensor(rows, device=self.device)
            if width == 1:
                picked = logits[:, 0].index_select(0, row_index)
            else:
                last_t = torch.tensor([last[i] for i in rows], device=self.device)
                picked = logits.index_select(0, row_index)[torch.arange(len(rows), device=self.device), last_t]
            tokens = sample_rows(
                picked,
                [self.slots[i].request.sampling for i in rows],
                [self.slots[i].generator for i in rows],
            )

        events: list[TokenEvent] = []
        batch_size = len(rows)
        for i, token in zip(rows, tokens):
            slot = self.slots[i]
            slot.pos += len(slot.pending)
            if token in slot.request.stop_ids:
                events.append(TokenEvent(slot.key, None, "stop", batch_size))
                self.slots[i] = None
                continue
            slot.generated += 1
            finish = None
            if slot.generated >= slot.request.max_new_tokens or slot.pos >= self.context_window:
                finish = "length"
                self.slots[i] = None
            else:
                slot.pending = [token]
            events.append(TokenEvent(slot.key, token, finish, batch_size))
        return events
