"""The reconcile loop shared by the four kinds.

Every trigger (an event on the object itself, on a child Job, pod or Deployment, on an object it
refers to, or a re-check of a wait) only `enqueue`s the object; worker threads (`WORK`, see
`handlers.workqueue`) run `_reconcile`: read the parent fresh, ask the kind's reconciler what the
world looks like (creating missing children on the way), and write the status only when it
changed, with an Event when a condition moved. One object is reconciled by one worker at a time,
and the status write is conditional on the parent's resourceVersion, so a stale computation never
overwrites a newer one. An object that waits, or whose reconcile failed, is re-checked later
(`RECHECKS`, backing off).

A new object's first reconcile, from the urgent lane, does only what its first child needs when
other new objects wait (benchmarks/README.md, "The operator at scale", step 5): it trusts the
body its create event carried (an object without a status; the status write that follows is
conditional on that body's resourceVersion, so a stale one costs a retry, never a wrong write),
and it leaves its first status write to a routine reconcile of its own while urgent keys wait.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Callable, Optional

import kopf
from kubernetes.client.rest import ApiException

from litgpt_operator import kube, metrics, status
from litgpt_operator.api import BY_KIND, KindInfo
from litgpt_operator.handlers.children import InTheWay, Refused
from litgpt_operator.handlers.requeue import Requeue
from litgpt_operator.handlers.workqueue import Key, Taken, WorkQueue
from litgpt_operator.settings import Settings, current

log = logging.getLogger(__name__)

# kind -> reconcile(body, settings) -> Observed: level-based, so every trigger calls the same
# function; it creates what is missing and re-applies what differs from what it would build.
Reconciler = Callable[[dict, Settings], status.Observed]
RECONCILERS: dict[str, Reconciler] = {}

_CONFLICT_RETRIES = 5


def reconciler(kind: KindInfo) -> Callable[[Reconciler], Reconciler]:
    def register(function: Reconciler) -> Reconciler:
        RECONCILERS[kind.kind] = function
        return function

    return register


def _process(key: Key, taken: Taken = Taken()) -> None:
    """A worker's reconcile of one queued object."""
    kind, namespace, name = key
    new = taken.body if taken.body is not None and not taken.body.get("status") else None
    try:
        result, error = _reconcile(BY_KIND[kind], namespace, name, new=new, first_child_lane=taken.urgent), None
    except Exception as raised:
        result, error = None, raised
        # "failed with an exception", as kopf says of a handler: the tests look for it.
        log.error("reconcile of %s %s/%s failed with an exception: %s", kind, namespace, name, raised,
                  exc_info=not isinstance(raised, ApiException))
    _recheck_later(key, result, error)


WORK = WorkQueue(_process)
RECHECKS = Requeue(WORK.add)


def enqueue(kind: KindInfo, namespace: str, name: str, urgent: bool = False, body: Optional[dict] = None) -> None:
    """Reconcile this object soon (once for all the triggers until a worker takes it). Called
    from kopf's handlers, whose context the reconcile runs in (for kopf.event). `urgent`: it may
    need its first child (new, a new spec, a dependency settled), served before status refreshes
    (`handlers.workqueue`). `body`: the object as its own watch event showed it."""
    WORK.add((kind.kind, namespace, name), contextvars.copy_context(), urgent=urgent, body=body)


def _recheck_later(key: Key, result: Optional[status.Observed], error: Optional[BaseException]) -> None:
    """An object that waits (or whose reconcile failed: the API server may be restarting) is
    looked at again later, backing off; one that does not wait is forgotten."""
    if error is not None or (result is not None and result.waiting_for):
        delay = RECHECKS.waiting(key, current().retry_delay_seconds)
        log.debug("%s %s/%s re-checked in %.0fs", *key, delay)
    else:
        RECHECKS.settled(key)


def _reconcile(kind: KindInfo, namespace: str, name: str, new: Optional[dict] = None,
               first_child_lane: bool = False) -> Optional[status.Observed]:
    """`new`: the body of a new object (no status yet) from its watch event, used instead of
    reading it; `first_child_lane`: the key came from the urgent lane."""
    settings = current()
    for _ in range(_CONFLICT_RETRIES):
        body, new = new or kube.get(kind.kind, namespace, name), None
        if body is None or body["metadata"].get("deletionTimestamp"):
            metrics.record(kind.kind, namespace, name, None)
            return None
        with metrics.reconciling(kind.kind):
            try:
                observed = RECONCILERS[kind.kind](body, settings)
            except InTheWay as blocked:
                observed = blocked_child(kind, "ObjectInTheWay", blocked.message)
            except Refused as refused:
                observed = blocked_child(kind, "ChildRefused", refused.message)
        if first_child_lane and not body.get("status") and WORK.urgent_waiting():
            # Its children exist now; its first status can wait for the new objects queued behind
            # it. A routine reconcile of its own writes it (asked for while this one runs: after).
            WORK.add((kind.kind, namespace, name))
            return observed
        try:
            write_status(body, observed)
            metrics.record(kind.kind, namespace, name, observed.phase, observed.fields.get("progress"))
            return observed
        except ApiException as error:
            if error.status != 409:
                raise
            log.debug("%s %s/%s changed while reconciling; again", kind.kind, namespace, name)
    raise kube_conflict(kind, namespace, name)


def blocked_child(kind: KindInfo, reason: str, message: str) -> status.Observed:
    """A child cannot be made: an object of its name is not ours (ObjectInTheWay: it may be
    deleted, or be an earlier incarnation's child on its way out), or the API server refused it
    (ChildRefused: a quota, a webhook, a full range). Say so and look again later, backing off."""
    main = "Ready" if kind.kind in ("LitGPTModel", "ModelServer") else "Succeeded"
    cond = status.Cond.of(main, False, reason, message, warning=True)
    return status.Observed("Pending", [cond], waiting_for=message)


def kube_conflict(kind: KindInfo, namespace: str, name: str) -> RuntimeError:
    return RuntimeError(f"{kind.kind} {namespace}/{name} kept changing during {_CONFLICT_RETRIES} reconciles")


def write_status(body: dict, observed: status.Observed) -> bool:
    """Patch the status if it differs from what is stored; post an Event if a condition moved."""
    meta = body["metadata"]
    previous = body.get("status") or {}
    new = status.render(previous, observed, int(meta.get("generation") or 0))
    if new == previous:
        return False
    kube.patch_status(body["kind"], meta["namespace"], meta["name"], status.merge_patch(previous, new),
                      meta["resourceVersion"])
    # One Event per status write, for the first condition that moved (a warning before others):
    # an Event is a write too, and the status holds every condition (benchmarks/README.md: one per
    # moved condition cost 1.5 Events per phase transition).
    moved = status.changes(previous, observed)
    if moved:
        main = next((c for c in moved if c.warning), moved[0])
        post_event(body, "Warning" if main.warning else "Normal", main.reason,
                   main.message or f"{main.type} is {main.status}")
    return True


def post_event(body: dict, event_type: str, reason: str, message: str) -> None:
    """A core/v1 Event about the object (what `kubectl describe` shows), queued to kopf's poster,
    which retries it in the background: an Event is a courtesy, the status already holds the facts."""
    try:
        kopf.event(body, type=event_type, reason=reason[:128], message=message[:1024])
    except LookupError:  # called outside a running operator (no event queue)
        log.debug("no operator to post event %s on %s", reason, body["metadata"]["name"])


def enqueue_owner(child: dict) -> None:
    """A child (Job, Deployment...) changed: reconcile the custom resource controlling it."""
    for ref in child["metadata"].get("ownerReferences") or []:
        kind = BY_KIND.get(ref.get("kind"))
        if kind and ref.get("controller") and ref.get("apiVersion") == kind.api_version:
            enqueue(kind, child["metadata"]["namespace"], ref["name"])
