"""Auto-resume: a training pod that is evicted, preempted or lost restarts from its newest checkpoint.

Two pieces on the training Job, both decided when it is built:
  - the runtime is started with `--resume auto`: it continues from the newest `step-*` checkpoint
    in its output folder if there is one (a first run finds none and starts at step 0);
  - a `podFailurePolicy` that does not count disruptions (the `DisruptionTarget` pod condition the
    control plane sets on eviction, preemption and on pods of a lost node) against `backoffLimit`,
    so the Job controller simply creates a new pod; and on one pod, fails the Job at once when the
    runtime exits 1 or 2 (a user error or a crash: running it again cannot help).

The attempt count (pods the Job created, per completion index) goes into the parent's status.
Pure functions; no I/O.
"""

from __future__ import annotations

import copy
from typing import Any

from litgpt_operator.builders.common import CONTAINER
from litgpt_operator.builders.distributed import COMPLETION_INDEX_ANNOTATION

RESUME_FLAG = "--resume"
# `litgpt` exits 1 on a UserError (and Python on an uncaught exception), 2 on a usage error.
DETERMINISTIC_EXIT_CODES = [1, 2]


def pod_failure_policy(single_pod: bool) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    if single_pod:
        # With several pods, one disrupted pod makes its peers exit 1 (the collective breaks):
        # those failures are retried (backoffLimit) rather than ending the Job.
        rules.append({"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                           "values": DETERMINISTIC_EXIT_CODES}})
    return {"rules": rules}


def with_auto_resume(job: dict[str, Any]) -> dict[str, Any]:
    """A copy of a training Job that resumes after disruptions (idempotent)."""
    job = copy.deepcopy(job)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    pod["restartPolicy"] = "Never"  # podFailurePolicy requires it
    for container in pod["containers"]:
        if container["name"] == CONTAINER:
            command = container.get("command") or []
            if RESUME_FLAG not in command:
                container["command"] = [*command, RESUME_FLAG, "auto"]
    spec["podFailurePolicy"] = pod_failure_policy(single_pod=spec.get("completionMode") != "Indexed")
    return job


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
