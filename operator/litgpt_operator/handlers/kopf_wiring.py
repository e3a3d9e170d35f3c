"""kopf registrations: which events call `core.refresh` for which object. Nothing else lives here.

- A custom resource created, resumed (operator start) or with a changed spec: reconcile it; an
  unmet dependency becomes kopf.TemporaryError (retried after a delay).
- A child Job/Deployment/pod changed: reconcile its parent (label/owner lookup), so status follows.
- A LitGPTModel became Ready or Failed / a FinetuneJob finished: reconcile the objects that refer
  to it, found in kopf indexes (kept from the watch streams, so no list per event). Only a change
  of phase does it: the status writes in between (progress, resync) wake nobody.
"""

from __future__ import annotations

from typing import Any

import kopf

from litgpt_operator import metrics
from litgpt_operator.api import BY_KIND, GROUP, KINDS, VERSION, KindInfo
from litgpt_operator.builders.common import KIND_LABEL, MANAGED_BY
from litgpt_operator.handlers.core import refresh, refresh_owner
from litgpt_operator.settings import current

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


def _on_change(kind: KindInfo):
    def handler(namespace: str, name: str, **_) -> None:
        observed = refresh(kind, namespace, name)
        if observed is not None and observed.waiting_for:
            raise kopf.TemporaryError(observed.waiting_for, delay=current().retry_delay_seconds)

    handler.__name__ = f"reconcile_{kind.singular}"
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


def _references(fields: dict[str, str]):
    def index(namespace: str, name: str, spec: Any, **_) -> dict[tuple[str, str, str], str]:
        """{(referenced kind, namespace, referenced name): this object's name}"""
        return {(target, namespace, ref): name
                for field, target in fields.items() for ref in referenced_names(spec, field)}

    return index


def _forget(kind: KindInfo):
    def handler(event: dict, namespace: str, name: str, **_) -> None:
        if event.get("type") == "DELETED":  # its series leave the metrics with it
            metrics.record(kind.kind, namespace, name, None)

    handler.__name__ = f"forget_{kind.singular}"
    return handler


for _kind in KINDS:
    kopf.on.event(GROUP, VERSION, _kind.plural, id=f"{_kind.singular}-forget")(_forget(_kind))
    _handler = _on_change(_kind)
    kopf.on.resume(GROUP, VERSION, _kind.plural, id=f"{_kind.singular}-resume")(_handler)
    kopf.on.create(GROUP, VERSION, _kind.plural, id=f"{_kind.singular}-create")(_handler)
    kopf.on.update(GROUP, VERSION, _kind.plural, id=f"{_kind.singular}-update", field="spec")(_handler)
    if _kind.kind in REFERENCES:
        kopf.index(GROUP, VERSION, _kind.plural, id=_index_name(_kind))(_references(REFERENCES[_kind.kind]))


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
            refresh(kind, namespace, dependent)


@kopf.on.event(GROUP, VERSION, "litgptmodels")
def model_changed(event, namespace, name, memo, **kwargs) -> None:
    _wake_dependents("LitGPTModel", event, namespace, name, memo, kwargs)


@kopf.on.event(GROUP, VERSION, "finetunejobs")
def finetune_changed(event, namespace, name, memo, **kwargs) -> None:
    _wake_dependents("FinetuneJob", event, namespace, name, memo, kwargs)
