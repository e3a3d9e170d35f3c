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

Busy rows are kept packed at the front of the cache, and a step runs only those: when a request
ends, the last busy row (its request and its cache entries) moves into the freed row. A lone
request on an 8-row server therefore costs a 1-row step, not an 8-row one (on a CPU the vocabulary
projection alone is about twice as slow for 8 rows as for 1).

A failure that belongs to one row -- its seed cannot seed a generator, its logits are not finite,
its sampling raises -- ends that row alone with finish reason "error"; the other rows of the step
go on. Only a failure of the shared forward pass itself (a bug, out of memory) ends them all.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from litgpt_runtime.serve.sampling import SamplingParams, sample_rows


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_ids: tuple[int, ...] = ()
    seed: Optional[int] = None
    adapter: int = 0  # 0: the base weights; i > 0: LoRA adapter i of the model's MultiLoRA layers


@dataclass
class TokenEvent:
    """What one step produced for one request."""

    key: str
    token_id: Optional[int]  # None when the request finished without a new token (stop token, error)
    finish_reason: Optional[str]  # None while running; "stop" (stop token), "length" or "error"
    batch_size: int  # active rows in the forward pass that produced this event
    error: Optional[str] = None  # what went wrong, for the server's log (finish_reason "error")


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

    def __init__(self, model, max_batch_size: int, max_seq_length: Optional[int] = None,
                 adapter_rows=None, adapters: int = 0) -> None:
        """`max_seq_length`: cache length per row (default: the model's block size).
        `adapter_rows`, `adapters`: the handle and count of the model's LoRA adapters (adapters.py)."""
        self.model = model
        self.adapter_rows, self.adapters = adapter_rows, adapters
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
        if not 0 <= request.adapter <= self.adapters:
            raise ValueError(f"adapter {request.adapter} does not exist ({self.adapters} loaded)")
        if len(request.prompt_ids) > self.context_window:
            raise ValueError(f"prompt of {len(request.prompt_ids)} tokens exceeds the context of {self.context_window}")
        self.waiting.append((key, request))

    def cancel(self, key: str) -> bool:
        """Drop a request (waiting or running); its slot is free for the next step."""
        for i, slot in enumerate(self.slots):
            if slot is not None and slot.key == key:
                self._release(i)
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

    def _release(self, i: int) -> None:
        """Free row i, keeping busy rows packed: the last busy row moves into it, cache included."""
        last = self.active - 1
        if i != last:
            moved = self.slots[last]
            with torch.no_grad():
                for block in self.model.transformer.h:
                    cache = block.attn.kv_cache  # positions >= moved.pos hold only padding
                    cache.k[i, :, : moved.pos].copy_(cache.k[last, :, : moved.pos])
                    cache.v[i, :, : moved.pos].copy_(cache.v[last, :, : moved.pos])
            self.slots[i] = moved
        self.slots[last] = None

    def _admit(self) -> list[TokenEvent]:
        """Move waiting requests into free rows; a request that cannot start fails alone."""
        failed: list[TokenEvent] = []
        for i in range(self.max_batch_size):
            while self.waiting and self.slots[i] is None:
                key, request = self.waiting.popleft()
                generator = None
                try:
                    if request.seed is not None:
                        generator = torch.Generator(device=self.device).manual_seed(request.seed)
                except (RuntimeError, OverflowError, TypeError, ValueError) as error:
                    failed.append(TokenEvent(key, None, "error", 0, f"seed {request.seed!r}: {error}"))
                    continue
                self.slots[i] = _Slot(key, request, list(request.prompt_ids), generator=generator)
        return failed

    def _sample(self, logits: torch.Tensor, slots: list[_Slot]) -> list[Union[int, str]]:
        """One token per row, or for a row that cannot be sampled, why not (a str)."""
        finite = torch.isfinite(logits).all(dim=-1).tolist()
        good = [i for i, ok in enumerate(finite) if ok]
        out: list[Union[int, str]] = ["the model produced non-finite logits"] * len(slots)
        if not good:
            return out
        rows = logits if len(good) == len(slots) else logits[good]
        try:
            tokens = sample_rows(rows, [slots[i].request.sampling for i in good], [slots[i].generator for i in good])
            for i, token in zip(good, tokens):
                out[i] = token
        except (RuntimeError, ValueError):  # find the row(s) at fault: each alone
            for j, i in enumerate(good):
                try:
                    out[i] = sample_rows(rows[j : j + 1], [slots[i].request.sampling], [slots[i].generator])[0]
                except (RuntimeError, ValueError) as error:
                    out[i] = f"sampling failed: {error}"
        return out

    # -- the step --
    def step(self) -> list[TokenEvent]:
        events = self._admit()
        n = self.active  # rows 0..n-1 (packed)
        if not n:
            return events
        slots = self.slots[:n]
        width = max(len(slot.pending) for slot in slots)
        scratch = self.cache_length - 1
        idx, positions, last = [], [], []
        for slot in slots:
            k = len(slot.pending)
            idx.append(slot.pending + [0] * (width - k))
            positions.append([min(slot.pos + j, scratch) for j in range(width)])
            last.append(k - 1)
        maxp1 = max(max(p) for p in positions) + 1

        if self.adapter_rows is not None:
            chosen = [slot.request.adapter for slot in slots]
            self.adapter_rows.index = torch.tensor(chosen, device=self.device) if any(chosen) else None
        with torch.inference_mode():
            idx_t = torch.tensor(idx, dtype=torch.long, device=self.device)
            pos_t = torch.tensor(positions, dtype=torch.long, device=self.device)
            # logits only at each row's last real token: a new row's prompt positions would
            # otherwise each get a vocabulary-sized row (GBs for long prompts and large vocabularies)
            last_t = None if width == 1 else torch.tensor(last, device=self.device)
            picked = self.model(idx_t, input_pos=pos_t, input_pos_maxp1=maxp1, output_index=last_t)[:, 0]  # (n, V)
            tokens = self._sample(picked, slots)

        finished: list[int] = []
        for i, (slot, token) in enumerate(zip(slots, tokens)):
            slot.pos += len(slot.pending)
            if isinstance(token, str):
                events.append(TokenEvent(slot.key, None, "error", n, token))
                finished.append(i)
                continue
            if token in slot.request.stop_ids:
                events.append(TokenEvent(slot.key, None, "stop", n))
                finished.append(i)
                continue
            slot.generated += 1
            finish = None
            if slot.generated >= slot.request.max_new_tokens or slot.pos >= self.context_window:
                finish = "length"
                finished.append(i)
            else:
                slot.pending = [token]
            events.append(TokenEvent(slot.key, token, finish, n))
        for i in reversed(finished):  # from the back, so each move takes a row that stays busy
            self._release(i)
        return events
