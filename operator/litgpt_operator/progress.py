"""What the status says about a running training Job: attempts (from its pods), and progress
(step, loss, learning rate, tokens/s, ETA, ...) from the runtime's progress record.

The runtime prints a declared, versioned record on stdout at each log interval, checkpoint,
resume and end (`litgpt_runtime.progress_record`, torch-free: one schema for both sides):

    litgpt-progress {"version":1,"event":"step","step":120,"totalSteps":1000,"loss":1.84,...}

While a training Job runs, the operator reads the newest such line from the tail of its lead
pod's log (bounded by the kubelet's limitBytes) every few seconds (`handlers.progress_poll`) and
puts it into the parent's `status.progress`. Pure.

Attempts are the pods the Job created (per completion index): more than one means it was resumed
after an eviction or retried after a failure.
"""

from __future__ import annotations

from typing import Any, Optional

from litgpt_runtime.progress_record import ProgressRecord

from litgpt_operator.builders.sources import OutputLocation
from litgpt_operator.builders.training import COMPLETION_INDEX_ANNOTATION
from litgpt_operator.status import Cond


def eta_text(seconds: float) -> str:
    """`kubectl get`'s way of writing a duration: 45s, 12m30s, 3h05m, 2d04h."""
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if minutes < 10 else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


# Keys of the record's wire form that status.progress carries as they are (the same camelCase names);
# lastCheckpoint and resumedFromStep have status fields of their own.
_CARRIED = ("step", "totalSteps", "epoch", "loss", "valLoss", "learningRate", "tokensSeen", "event")


def status_progress(record: ProgressRecord) -> dict[str, Any]:
    """`status.progress` of one record: its wire form (non-finite numbers already left out), with
    whole tokens/s and seconds, the ETA for humans and the record's time."""
    wire = record.to_dict()
    out: dict[str, Any] = {key: wire[key] for key in _CARRIED if key in wire}
    if "tokensPerSecond" in wire:
        out["tokensPerSecond"] = round(wire["tokensPerSecond"])
    if "etaSeconds" in wire:
        out["etaSeconds"] = round(wire["etaSeconds"])
        out["eta"] = eta_text(wire["etaSeconds"])
    if wire.get("time"):
        out["updateTime"] = wire["time"]
    return out


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


def last_checkpoint(record: Optional[ProgressRecord], output: Optional[OutputLocation]) -> Optional[dict[str, Any]]:
    """status.lastCheckpoint from the runtime's newest progress record: its folder as a path
    inside the output claim (as status.outputPath), not the pod's mount."""
    if record is None or record.last_checkpoint is None:
        return None
    ckpt = record.last_checkpoint
    path = ckpt.path
    # The pod sees <mount>/<outputPath>/step-...; the mount is the pod's business (a node may map it).
    at = path.find(f"/{output.path}/") if output is not None else -1
    if at >= 0:
        path = path[at + 1:]
    return {"step": ckpt.step, "path": path, "time": ckpt.time}


def resumed_condition(resumed_step: Optional[int], attempts: Optional[int],
                      checkpoint: Optional[dict[str, Any]]) -> Optional[Cond]:
    """`Resumed` once a pod of the run continued from a checkpoint (`--resume auto`)."""
    if resumed_step is None:
        return None
    attempt = f"Attempt {attempts}" if attempts else "The run"
    return Cond.of("Resumed", True, "ResumedFromCheckpoint",
                   f"{attempt} continued from the checkpoint at step {resumed_step} (--resume auto)"
                   + (f"; the newest checkpoint is now step {checkpoint['step']} ({checkpoint['path']})."
                      if checkpoint else "."))
