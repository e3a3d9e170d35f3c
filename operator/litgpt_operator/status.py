"""Level-based status: conditions + phase computed from the world, written only when they change.

A reconcile produces an `Observed` (phase, conditions, extra fields); `render` merges it into the
previous status (keeping each condition's lastTransitionTime while its status holds) and
`changes` says which conditions moved, so the handler posts an Event per transition.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Optional

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
# Well under the CRD's 32,768-character cap on a condition message (and etcd's object size): a
# status patch that the API server refuses would leave the object stuck on its old status.
MESSAGE_LIMIT = 4096
_CUT = "\n[...]\n"


def bounded(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """`message` cut in the middle to at most `limit` characters: the start says what happened,
    the end holds the last log lines."""
    if len(message) <= limit:
        return message
    head = limit // 4
    return message[:head] + _CUT + message[-(limit - head - len(_CUT)):]


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Cond:
    """A condition as a reconcile sees it (time and generation are added by `render`)."""

    type: str
    status: str
    reason: str
    message: str = ""
    warning: bool = False  # post the transition as a Warning event

    @classmethod
    def of(cls, type_: str, holds: bool, reason: str, message: str = "", warning: bool = False) -> "Cond":
        return cls(type_, TRUE if holds else FALSE, reason, message, warning)


@dataclass
class Observed:
    """What a reconcile concluded about one object."""

    phase: str
    conditions: list[Cond]
    fields: dict[str, Any] = field(default_factory=dict)
    # Set when a dependency is not ready: the handler retries after a delay.
    waiting_for: Optional[str] = None

    def condition(self, type_: str) -> Optional[Cond]:
        return next((c for c in self.conditions if c.type == type_), None)


def render(previous: Optional[dict], observed: Observed, generation: int, now: Optional[str] = None) -> dict:
    """The full new status (camelCase, as stored)."""
    previous = previous or {}
    now = now or now_rfc3339()
    old = {c["type"]: c for c in previous.get("conditions") or []}
    conditions = []
    for cond in observed.conditions:
        before = old.get(cond.type)
        keep_time = before is not None and before.get("status") == cond.status
        conditions.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason[:1024],
                "message": bounded(cond.message),
                "lastTransitionTime": before["lastTransitionTime"] if keep_time else now,
                "observedGeneration": generation,
            }
        )
    status = {"phase": observed.phase, "conditions": conditions, "observedGeneration": generation}
    status.update({k: v for k, v in observed.fields.items() if v is not None})
    return status


def merge_patch(previous: Optional[dict], new: dict) -> dict:
    """A JSON merge patch turning `previous` into `new` (fields that disappeared become null)."""
    patch = dict(new)
    for key in previous or {}:
        if key not in new:
            patch[key] = None
    return patch


def changes(previous: Optional[dict], observed: Observed) -> list[Cond]:
    """Conditions whose status or reason differ from the previous status (the Event-worthy ones)."""
    old = {c["type"]: c for c in (previous or {}).get("conditions") or []}
    moved = []
    for cond in observed.conditions:
        before = old.get(cond.type)
        if before is None or before.get("status") != cond.status or before.get("reason") != cond.reason:
            moved.append(cond)
    return moved
