"""What the status says about a running training Job: attempts (from its pods), and progress
(step, loss, tokens/s) and the step a run resumed at (from the runtime's log).

The runtime prints one line per log interval (`litgpt_runtime.train.loop`):

    step 120/1000 | loss 1.8412 | lr 2.00e-04 | 5,321 tok/s | 0.412 s/step | peak mem 3.10 GiB

and, when it continues from a checkpoint, `Resuming from <dir> at step 80 (40,960 tokens seen).`
The operator reads the tail of the running pod's log when it reconciles (every resync interval,
so coarse: about once a minute) and puts the newest figures into the parent's status. Pure.

Attempts are the pods the Job created (per completion index): more than one means it was resumed
after an eviction or retried after a failure.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

from litgpt_operator.builders.training import COMPLETION_INDEX_ANNOTATION

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


def attempts(pods: list[dict]) -> int:
    """Pods the Job has now, per completion index (the most of any index). Evicted pods are
    deleted, so this undercounts; `track_attempts` keeps the count across them."""
    per_index: dict[str, int] = {}
    for pod in pods:
        index = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION, "0")
        per_index[index] = per_index.get(index, 0) + 1
    return max(per_index.values(), default=0)


def track_attempts(previous_status: dict, pods: list[dict]) -> dict[str, Any]:
    """`{attempts, currentPod}` for the parent's status: one more attempt each time the newest pod
    of the Job (of index 0 for Indexed Jobs) is one the previous status had not seen."""
    lead = [p for p in pods if ((p.get("metadata") or {}).get("annotations") or {})
            .get(COMPLETION_INDEX_ANNOTATION, "0") == "0"]
    if not lead:
        return {"attempts": previous_status.get("attempts"), "currentPod": previous_status.get("currentPod")}
    newest = max(lead, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    name = newest["metadata"]["name"]
    count = int(previous_status.get("attempts") or 0)
    if name != previous_status.get("currentPod"):
        count += 1
    return {"attempts": max(count, attempts(pods)), "currentPod": name}
