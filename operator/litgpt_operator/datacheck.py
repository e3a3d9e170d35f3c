"""The DataValidated condition of a FinetuneJob, from its data check's Job (`builders.validation`)
and the summary `litgpt validate_data` leaves in its container's termination message. Pure.

    True     DataValid      the check passed; the message carries the summary
    False    DataInvalid    the data would fail training (the first bad file/record, or what is
                            wrong: empty records, samples too long); or the pod's own failure reason
    Unknown  Validating     the check has not finished
"""

from __future__ import annotations

import json
from typing import Any, Optional

from litgpt_runtime.validate_data import SUMMARY_VERSION  # torch-free: the summary's contract

from litgpt_operator.observe import STUCK_WAITING, JobState
from litgpt_operator.status import UNKNOWN, Cond

CONDITION = "DataValidated"
# Summary keys that status.dataValidation carries (same names).
STATUS_KEYS = ("records", "longest", "truncated", "maxSeqLength", "empty", "duplicates", "promptStyle")


def summary(pods: list[dict]) -> Optional[dict[str, Any]]:
    """The summary of the newest pod that left one (None: no pod did, e.g. it crashed first)."""
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            message = (((cs.get("state") or {}).get("terminated") or {}).get("message") or "").strip()
            try:
                found = json.loads(message.splitlines()[-1]) if message else None
            except ValueError:
                continue
            if isinstance(found, dict) and found.get("version") == SUMMARY_VERSION and "valid" in found:
                return found
    return None


def status_fields(found: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """status.dataValidation of a summary."""
    if not found or not isinstance(found.get("records"), int):
        return None
    return {key: found[key] for key in STATUS_KEYS if found.get(key) is not None}


def _figures(found: dict[str, Any]) -> str:
    return (f" [records {found.get('records', '?')}, longest {found.get('longest', '?')} tokens, "
            f"{found.get('truncated', '?')} longer than {found.get('maxSeqLength', '?')}]")


def condition(state: JobState, found: Optional[dict[str, Any]], job_name: str, strict: bool) -> Cond:
    """DataValidated as the check's Job and summary say."""
    if state.phase == "Succeeded":
        if found:
            return Cond.of(CONDITION, True, "DataValid", found.get("message", "") + _figures(found))
        return Cond.of(CONDITION, True, "DataValid", f"The data check (Job {job_name}) passed; it left no summary.")
    if state.phase == "Failed":
        if found:
            reason = "DataInvalid" if not found.get("valid") else state.reason
            message = found.get("message", "") + (_figures(found) if found.get("records") else "")
        else:
            reason, message = state.reason, state.message
        if strict:
            message += (f" No training Job was created. Fix the data: in the spec (the check runs again), or "
                        f"on its claim, then delete Job {job_name} to check again; or set "
                        "spec.data.validation to warn to train anyway.")
        else:
            message += " Training runs anyway (spec.data.validation: warn)."
        return Cond.of(CONDITION, False, reason, message, warning=True)
    if state.reason in STUCK_WAITING:
        return Cond(CONDITION, UNKNOWN, state.reason, f"The data check cannot run: {state.message}", warning=True)
    return Cond(CONDITION, UNKNOWN, "Validating", f"Job {job_name} checks the data before training: {state.message}")
