"""Training progress from the runtime's log: step, loss, tokens/s, and the step a run resumed at.

The runtime prints one line per log interval (`litgpt_runtime.train.loop`):

    step 120/1000 | loss 1.8412 | lr 2.00e-04 | 5,321 tok/s | 0.412 s/step | peak mem 3.10 GiB

and, when it continues from a checkpoint, `Resuming from <dir> at step 80 (40,960 tokens seen).`
The operator reads the tail of the running pod's log when it reconciles (every resync interval,
so coarse: about once a minute) and puts the newest figures into the parent's status. Pure.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

_STEP = re.compile(
    r"^step (?P<step>\d+)(?:/(?P<total>\d+))? \| loss (?P<loss>[-+0-9.eEnaif]+) \|.*?\| (?P<tps>[0-9,.]+) tok/s"
)
_RESUMED = re.compile(r"^Resuming from .* at step (?P<step>\d+)")


def training_progress(log: Optional[str]) -> dict[str, Any]:
    """{step, totalSteps, loss, tokensPerSecond} of the newest step line (empty when none)."""
    for line in reversed((log or "").splitlines()):
        match = _STEP.match(line.strip())
        if match:
            loss = float(match["loss"])
            out: dict[str, Any] = {"step": int(match["step"]),
                                   # NaN/inf cannot travel in JSON (a diverged run still reports its step)
                                   "loss": loss if math.isfinite(loss) else None,
                                   "tokensPerSecond": round(float(match["tps"].replace(",", "")))}
            if match["total"]:
                out["totalSteps"] = int(match["total"])
            return out
    return {}


def resumed_step(log: Optional[str]) -> Optional[int]:
    """The step the current run resumed at, if it resumed."""
    for line in reversed((log or "").splitlines()):
        match = _RESUMED.match(line.strip())
        if match:
            return int(match["step"])
    return None
