"""The production features a reconciler adds around its Job (issue: the operator in production).

- `prepare_children`: Kueue pass-through (label + suspend) and, for training, auto-resume.
- `fit_condition`: ResourcesFit before a training Job is created (litgpt_runtime.fit).
- `training_fields`: attempts, resumed step and progress of a running training Job, read from its
  pods and the tail of the newest pod's log (coarse: once per reconcile).
Each is one call in the kind's reconciler; the logic lives in kueue.py, fitcheck.py, resume.py
and progress.py (pure, unit-tested).
"""

from __future__ import annotations

from typing import Any, Optional

from litgpt_operator import fitcheck, kube, kueue, progress, resume
from litgpt_operator.builders.common import CONTAINER
from litgpt_operator.settings import Settings
from litgpt_operator.status import FALSE, Cond

# Enough for the last few step lines (the runtime logs one line per log interval).
PROGRESS_LOG_LINES = 40


def prepare_children(body: dict, children: list[dict[str, Any]], training: bool) -> list[dict[str, Any]]:
    children = kueue.enqueue(children, body)
    if training:
        children = [resume.with_auto_resume(c) if c.get("kind") == "Job" else c for c in children]
    return children


def fit_condition(body: dict, model: Any, method: str, spec: Any, settings: Settings,
                  lora: Any = None) -> Optional[Cond]:
    return fitcheck.resources_fit(body, model, method, spec, lora, settings.gpu_memory_gb)


def refuses(fit: Optional[Cond]) -> bool:
    return fit is not None and fit.status == FALSE


def refused_conditions(fit: Cond) -> list[Cond]:
    """What a training object says when the fit check stops it before any Job exists."""
    return [fit, Cond.of("Succeeded", False, fit.reason, "No Job was created: " + fit.message, warning=True)]


def training_fields(namespace: str, job_name: str, previous_status: dict, running: bool) -> dict[str, Any]:
    """attempts/currentPod always; resumedStep and progress while the Job runs."""
    pods = kube.list_objects("Pod", namespace, {"batch.kubernetes.io/job-name": job_name})
    fields: dict[str, Any] = resume.track_attempts(previous_status, pods)
    fields["resumedStep"] = previous_status.get("resumedStep")
    fields["progress"] = previous_status.get("progress")
    if running and fields.get("currentPod"):
        log = kube.pod_log_tail(namespace, fields["currentPod"], PROGRESS_LOG_LINES, CONTAINER)
        step = progress.resumed_step(log)
        if step is not None:
            fields["resumedStep"] = step
        latest = progress.training_progress(log)
        if latest:
            fields["progress"] = latest
    return fields


def previous_condition(body: dict, type_: str) -> Optional[Cond]:
    """A condition as the last reconcile wrote it (kept while it cannot be recomputed)."""
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return Cond(type_, cond["status"], cond.get("reason", ""), cond.get("message", ""))
    return None
