"""Learning rate schedule: linear warm-up, then cosine decay to a floor.

A pure function of the step so that a resumed run continues on exactly the same curve.
"""

from __future__ import annotations

import math
from typing import Optional


def lr_at(step: int, *, peak: float, final: float, warmup_steps: int, total_steps: Optional[int]) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Warm-up rises linearly so that step `warmup_steps - 1` uses the peak; the cosine then falls to
    `final` at the last step. Without a known `total_steps` (e.g. only a token budget on a
    stream of unknown length) the rate stays at the peak after warm-up.
    """
    if total_steps is not None:
        # A warm-up longer than the run would never reach the peak.
        warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if total_steps is None:
        return peak
    # The cosine starts at the step that reached the peak (the first step without warm-up).
    anchor = max(warmup_steps - 1, 0)
    progress = min((step - anchor) / max(total_steps - 1 - anchor, 1), 1.0)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
