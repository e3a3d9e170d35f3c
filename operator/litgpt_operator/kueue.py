"""Kueue pass-through: a parent labelled with a queue gets its Jobs queued, not started.

    metadata.labels["kueue.x-k8s.io/queue-name"] = "team-a"   on a FinetuneJob / PretrainJob / LitGPTModel
      -> the Job carries the same label and is created with `spec.suspend: true`
      -> Kueue admits it by setting `suspend: false`; until then the parent's phase is Queued
         (observe.job_state reads a suspended Job as "Suspended", handlers.jobs maps it to Queued).

Only creation is touched: the operator never re-applies a Job's spec, so it never suspends a Job
Kueue has admitted. Pure functions; no I/O.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Passed through as well when present: Kueue's workload priority class.
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
PASSED_LABELS = (QUEUE_LABEL, PRIORITY_LABEL)


def queue_of(parent_body: dict) -> Optional[str]:
    """The Kueue LocalQueue the parent asks for, if any."""
    value = ((parent_body.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)
    return value or None


def enqueue(children: list[dict[str, Any]], parent_body: dict) -> list[dict[str, Any]]:
    """The children with every Job labelled for the parent's queue and created suspended.

    Unchanged (the same objects) when the parent names no queue.
    """
    if queue_of(parent_body) is None:
        return children
    parent_labels = parent_body["metadata"]["labels"]
    passed = {k: parent_labels[k] for k in PASSED_LABELS if parent_labels.get(k)}
    out = []
    for child in children:
        if child.get("kind") == "Job":
            child = copy.deepcopy(child)
            child["metadata"].setdefault("labels", {}).update(passed)
            child["spec"]["suspend"] = True
        out.append(child)
    return out


def queued_message(parent_body: dict, job_name: str) -> str:
    return (f"Job {job_name} waits for admission by Kueue queue {queue_of(parent_body)!r} "
            "(it starts when the queue has quota for it).")
