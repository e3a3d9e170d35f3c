"""Sampling the next token for every row of a batch, each row with its own options.

Greedy rows (temperature 0) are an argmax over the whole batch at once; sampling rows apply their
own temperature, top-k and top-p as masks, so a batch needs no Python loop over rows except for
rows that bring their own seed (a torch.Generator draws for one row at a time).

Temperatures below `GREEDY_BELOW` are greedy: dividing logits by them would overflow float32
(1e-40 makes every logit infinite), and their distribution is the argmax to within float
precision anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_k: Optional[int] = None
    top_p: float = 1.0


def _filtered_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Probabilities (R, V) after each row's temperature, top-k and top-p."""
    device = logits.device
    vocab = logits.size(-1)
    temps = torch.tensor([p.temperature for p in params], device=device, dtype=torch.float32)
    logits = logits.float() / temps[:, None]
    ks = torch.tensor([p.top_k if p.top_k and 0 < p.top_k < vocab else vocab for p in params], device=device)
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    if bool((ks < vocab).any()):
        # the k-th largest logit of each row is its threshold (ties at the threshold are kept,
        # as generate.sample does)
        kth = sorted_logits.gather(-1, (ks - 1)[:, None])
        logits = logits.masked_fill(logits < kth, float("-inf"))
        sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    top_ps = torch.tensor([p.top_p for p in params], device=device, dtype=torch.float32)
    if bool((top_ps < 1.0).any()):
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_ps[:, None], 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, sorted_idx, sorted_probs)
    return probs


def sample_rows(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[Optional[torch.Generator]]
) -> list[int]:
    """One token id per row of `logits` (R, V)."""
    tokens = torch.argmax(logits, dim=-1)
    sampled = [i for i, p in enumerate(params) if p.temperature >= GREEDY_BELOW]
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        probs = _filtered_probs(logits.index_select(0, index), [params[i] for i in sampled])
        shared = [j for j, i in enumerate(sampled) if generators[i] is None]
        if shared:
            draws = torch.multinomial(probs[shared], num_samples=1)[:, 0]
            tokens[index[shared]] = draws
        for j, i in enumerate(sampled):
            if generators[i] is not None:
                tokens[i] = torch.multinomial(probs[j], num_samples=1, generator=generators[i])[0]
    return tokens.tolist()
