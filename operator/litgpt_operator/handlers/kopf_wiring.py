"""kopf registrations: which events call `core.refresh` for which object. Nothing else lives here.

- A custom resource first seen by this process (created, or listed at start-up) or with a spec
  its status has not caught up with (metadata.generation != status.observedGeneration):
  reconcile it. Its own status writes wake nothing. These are plain event handlers, not kopf's
  create/update/resume handlers: those keep their progress and the last handled spec in
  annotations, a patch of the object per handled change and per retry (benchmarks/README.md,
  "The operator at scale"); a wait is re-checked in-process (`handlers.requeue`).
- A child Job/Deployment/pod changed: reconcile its parent (label/owner lookup), so status follows.
  These (and re-checks and progress polls) are routine; a new object or spec (unless it refers to
  an object not seen settled yet: its settling wakes it) and a settled dependency are urgent,
  served first (`handlers.workqueue`: an object that may need its first child waits behind no
  refresh).
- A LitGPTModel became Ready or Failed / a FinetuneJob finished: reconcile the objects that refer
  to it, found in kopf indexes (kept from the watch streams, so no list per event). Only a change
  of phase does it: the status writes in between (progress, resync) wake nobody.
The handlers only queue the object (`core.enqueue`): async, no API call, no executor thread; the
reconciles run on the operator's own workers, once for all the triggers queued before.
"""

from __future__ import annotations

from typing import Any

import kopf

from litgpt_operator import metrics
from litgpt_operator.api import BY_KIND, GROUP, KINDS, VERSION, KindInfo
from litgpt_operator.builders.common import KIND_LABEL, MANAGED_BY
from litgpt_operator.handlers.children import forget_shared
from litgpt_operator.handlers.core import RECHECKS, WORK, enqueue, enqueue_owner
from litgpt_operator.handlers.jobs import forget_created, forget_created_by

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
_BY_LABEL = {k.kind.lower(): k for k in KINDS}

# kind -> {spec field holding a reference: the kind it refers to}; `list[].field`: in each item,
# `a.b`: field b of a
REFERENCES: dict[str, dict[str, str]] = {
    "LitGPTModel": {"source.finetuneRef": "FinetuneJob"},
    "FinetuneJob": {"modelRef": "LitGPTModel"},
    "PretrainJob": {"initialCheckpoint": "LitGPTModel", "tokenizerRef": "LitGPTModel"},
    "ModelServer": {"modelRef": "LitGPTModel", "finetuneRef": "FinetuneJob", "adapters[].finetuneRef": "FinetuneJob"},
}
# The phases of a referenced object that its dependents act on.
SETTLED = {"LitGPTModel": {"Ready", "Failed"}, "FinetuneJob": {"Succeeded", "Failed"}}
# (kind, namespace, name) -> status.phase, as the watch last showed it, of the kinds in SETTLED.
PHASES: dict[tuple[str, str, str], Any] = {}


def _on_event(kind: KindInfo):
    async def handler(event: dict, body: Any, namespace: str, name: str, memo: kopf.Memo, **kwargs) -> None:
        if event.get("type") == "DELETED":
            RECHECKS.settled((kind.kind, namespace, name))
            WORK.forget_body((kind.kind, namespace, name))
            forget_created_by(body["metadata"]["uid"])
            metrics.record(kind.kind, namespace, name, None)  # its series leave the metrics with it
            PHASES.pop((kind.kind, namespace, name), None)
        else:
            if kind.kind in SETTLED:
                PHASES[(kind.kind, namespace, name)] = (body.get("status") or {}).get("phase")
            generation = body["metadata"].get("generation")
            if not memo.get("seen") or (body.get("status") or {}).get("observedGeneration") != generation:
                memo["seen"] = True
                # Urgent unless it waits for an object that wakes it (urgently) once settled: in a
                # burst, the dependents' first reconciles would only write Waiting, ahead of the
                # models' first children (benchmarks/README.md, "The operator at scale", step 4).
                urgent = not waits_for_unsettled(kind.kind, namespace, body.get("spec") or {})
                enqueue(kind, namespace, name, urgent=urgent, body=event.get("object"))
        if kind.kind in SETTLED:
            _wake_dependents(kind.kind, event, namespace, name, memo, kwargs)

    handler.__name__ = f"{kind.singular}_changed"
    return handler


def _index_name(kind: KindInfo) -> str:
    return f"{kind.singular}_references"


def referenced_names(spec: Any, field: str) -> list[str]:
    """Names that `field` of `spec` refers to (`adapters[].finetuneRef`: one per list item;
    `source.finetuneRef`: inside `source`)."""
    if "[]." in field:
        list_field, _, rest = field.partition("[].")
        return [n for item in spec.get(list_field) or [] if isinstance(item, dict) for n in referenced_names(item, rest)]
    if "." in field:
        outer, _, rest = field.partition(".")
        inner = spec.get(outer)
        return referenced_names(inner, rest) if hasattr(inner, "get") else []
    ref = spec.get(field)
    return [ref["name"]] if isinstance(ref, dict) and ref.get("name") else []


def waits_for_unsettled(kind: str, namespace: str, spec: Any) -> bool:
    """Whether `spec` refers to an object this process has not seen settled (a model not Ready or
    not seen yet, a finetune running): nothing can be created for it before that object appears
    and settles, which wakes it (`_wake_dependents`; its first event here is a change of phase)."""
    for field, target in REFERENCES.get(kind, {}).items():
        for ref in referenced_names(spec, field):
            if PHASES.get((target, namespace, ref)) not in SETTLED[target]:
                return True
    return False


def _references(fields: dict[str, str]):
    async def index(namespace: str, name: str, spec: Any, **_) -> dict[tuple[str, str, str], str]:
        """{(referenced kind, namespace, referenced name): this object's name}"""
        return {(target, namespace, ref): name
                for field, target in fields.items() for ref in referenced_names(spec, field)}

    return index


for _kind in KINDS:
    kopf.on.event(GROUP, VERSION, _kind.plural, id=f"{_kind.singular}-changed")(_on_event(_kind))
    if _kind.kind in REFERENCES:
        kopf.index(GROUP, VERSION, _kind.plural, id=_index_name(_kind))(_references(REFERENCES[_kind.kind]))


@kopf.on.cleanup()
async def forget_phases(**_) -> None:
    """A process that runs the operator again (as the tests do) learns the phases and the shared
    children afresh."""
    PHASES.clear()
    forget_shared()
    forget_created()


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_changed(body, **_) -> None:
    enqueue_owner(body)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_changed(body, **_) -> None:
    enqueue_owner(body)


@kopf.on.event("v1", "pods", labels=MANAGED)
async def pod_changed(event, body, memo: kopf.Memo, **_) -> None:
    labels = body["metadata"].get("labels") or {}
    kind = _BY_LABEL.get(labels.get(KIND_LABEL, ""))
    instance = labels.get("app.kubernetes.io/instance")
    signature = pod_signature(body)
    if event.get("type") != "DELETED" and memo.get("signature") == signature:
        return  # nothing the parent's status reads from pods changed (an IP, a finalizer, a timestamp)
    memo["signature"] = signature
    if kind and instance:
        enqueue(kind, body["metadata"]["namespace"], instance)


def pod_signature(pod: dict) -> tuple:
    """What the parents' statuses read from a pod (`observe`, `progress.track_attempts`): a pod
    changes several times more often while it starts than any of this does."""
    status = pod.get("status") or {}
    containers = []
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        what = next(iter(state), "")  # waiting, running or terminated
        detail = state.get(what) or {}
        containers.append((cs.get("name"), what, detail.get("reason"), detail.get("exitCode"), cs.get("ready"),
                           cs.get("restartCount")))
    scheduled = next(((c.get("status"), c.get("reason"), c.get("message")) for c in status.get("conditions") or []
                      if c.get("type") == "PodScheduled"), None)
    return (status.get("phase"), status.get("reason"), status.get("message"), scheduled, tuple(containers),
            bool(pod["metadata"].get("deletionTimestamp")))


def _wake_dependents(target: str, event: dict, namespace: str, name: str, memo: kopf.Memo, indexes: dict) -> None:
    """Reconcile the objects referring to `target` `name` once per change of its phase."""
    phase = ((event.get("object") or {}).get("status") or {}).get("phase")
    if event.get("type") == "DELETED" or memo.get("phase") == phase:
        return
    memo["phase"] = phase
    if phase not in SETTLED[target]:
        return
    for kind_name, fields in REFERENCES.items():
        if target not in fields.values():
            continue
        kind = BY_KIND[kind_name]
        for dependent in sorted(set(indexes[_index_name(kind)].get((target, namespace, name), ()))):
            enqueue(kind, namespace, dependent, urgent=True)
