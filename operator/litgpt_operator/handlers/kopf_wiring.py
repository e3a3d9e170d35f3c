"""kopf registrations: which events call `core.refresh` for which object. Nothing else lives here.

- A custom resource created, resumed (operator start) or with a changed spec: reconcile it,
  applying its children; an unmet dependency becomes kopf.TemporaryError (retried after a delay).
- A child Job/Deployment/pod changed: reconcile its parent (label/owner lookup), so status follows.
- A LitGPTModel became Ready / a FinetuneJob Succeeded: reconcile the objects waiting on it.
"""

from __future__ import annotations

import kopf

from litgpt_operator import kube
from litgpt_operator.api import BY_KIND, GROUP, KINDS, VERSION, KindInfo
from litgpt_operator.builders.common import KIND_LABEL, MANAGED_BY
from litgpt_operator.handlers.core import refresh, refresh_owner
from litgpt_operator.settings import current

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
_BY_LABEL = {k.kind.lower(): k for k in KINDS}


def _on_change(kind: KindInfo):
    def handler(namespace: str, name: str, **_) -> None:
        observed = refresh(kind, namespace, name, apply_children=True)
        if observed is not None and observed.waiting_for:
            raise kopf.TemporaryError(observed.waiting_for, delay=current().retry_delay_seconds)

    handler.__name__ = f"reconcile_{kind.singular}"
    return handler


for _kind in KINDS:
    _handler = _on_change(_kind)
    kopf.on.resume(GROUP, VERSION, _kind.plural, id=f"{_kind.singular}-resume")(_handler)
    kopf.on.create(GROUP, VERSION, _kind.plural, id=f"{_kind.singular}-create")(_handler)
    kopf.on.update(GROUP, VERSION, _kind.plural, id=f"{_kind.singular}-update", field="spec")(_handler)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
def job_changed(body, **_) -> None:
    refresh_owner(body)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def deployment_changed(body, **_) -> None:
    refresh_owner(body)


@kopf.on.event("v1", "pods", labels=MANAGED)
def pod_changed(body, **_) -> None:
    labels = body["metadata"].get("labels") or {}
    kind = _BY_LABEL.get(labels.get(KIND_LABEL, ""))
    instance = labels.get("app.kubernetes.io/instance")
    if kind and instance:
        refresh(kind, body["metadata"]["namespace"], instance)


def _dependents(namespace: str, kind: KindInfo, refers_to) -> list[str]:
    return [o["metadata"]["name"] for o in kube.list_objects(kind.kind, namespace) if refers_to(o.get("spec") or {})]


@kopf.on.event(GROUP, VERSION, "litgptmodels")
def model_changed(body, namespace, name, **_) -> None:
    if (body.get("status") or {}).get("phase") != "Ready":
        return
    waiting = {
        "FinetuneJob": lambda s: (s.get("modelRef") or {}).get("name") == name,
        "PretrainJob": lambda s: name in ((s.get("initialCheckpoint") or {}).get("name"),
                                          (s.get("tokenizerRef") or {}).get("name")),
        "ModelServer": lambda s: (s.get("modelRef") or {}).get("name") == name,
    }
    for kind_name, refers_to in waiting.items():
        kind = BY_KIND[kind_name]
        for dependent in _dependents(namespace, kind, refers_to):
            refresh(kind, namespace, dependent, apply_children=True)


@kopf.on.event(GROUP, VERSION, "finetunejobs")
def finetune_changed(body, namespace, name, **_) -> None:
    if (body.get("status") or {}).get("phase") != "Succeeded":
        return
    kind = BY_KIND["ModelServer"]
    for dependent in _dependents(namespace, kind, lambda s: (s.get("finetuneRef") or {}).get("name") == name):
        refresh(kind, namespace, dependent, apply_children=True)
