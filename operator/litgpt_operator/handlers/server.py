"""ModelServer: Deployment + Service (+ HPA) running `litgpt serve`, applied server-side when what
they would be built from changed; Ready when the pods of the current spec answer (/ready) and the
rollout is done. While a spec change cannot be built yet (an adapter's finetune still running), the
pods of the previous spec keep serving and the server says what it waits for, never Ready."""

from __future__ import annotations

import dataclasses
from typing import Optional

from litgpt_operator import kube, observe
from litgpt_operator.api import FINETUNE_JOB, MODEL_SERVER
from litgpt_operator.builders.common import Parent, selector_labels
from litgpt_operator.builders.server import (
    COMPONENT,
    AdapterSource,
    ServeSource,
    applied_digest,
    build_server_children,
    current_pods,
    server_name,
    url,
)
from litgpt_operator.builders.sources import ModelCheckpoint, OutputLocation
from litgpt_operator.handlers.children import apply_children, delete_child, get_ours
from litgpt_operator.handlers.core import reconciler
from litgpt_operator.handlers.jobs import Dependency, finetune_dependency, model_dependency
from litgpt_operator.settings import Settings
from litgpt_operator.status import Cond, Observed


def resolve_source(namespace: str, spec) -> tuple[Dependency, Optional[ServeSource]]:
    """What to serve, once it is ready: a Ready model, or a Succeeded finetune (and its model)."""
    if spec.model_ref:
        model = model_dependency(namespace, spec.model_ref.name)
        return model, ServeSource(ModelCheckpoint.from_body(model.body)) if model.ready else None
    name = spec.finetune_ref.name
    ready = finetune_dependency(namespace, name, "serve")
    if not ready.ready:
        return ready, None
    finetune = ready.body
    status = finetune.get("status") or {}
    model = model_dependency(namespace, FINETUNE_JOB.parse_spec(finetune).model_ref.name)
    if model.body is None:
        return model, None
    if not (status.get("outputClaimName") and status.get("outputPath")):
        return Dependency(False, "FinetuneOutputUnknown", f"FinetuneJob {name} reports no output location yet."), None
    output = OutputLocation(status["outputClaimName"], status["outputPath"])
    return ready, ServeSource(ModelCheckpoint.from_body(model.body), output)


def _same_base(namespace: str, model_name: str, served: Optional[dict]) -> bool:
    """Whether LitGPTModel `model_name` holds the weights of the served model (itself, or another
    object of the same repo id and revision)."""
    if served is None:
        return False
    if model_name == served["metadata"]["name"]:
        return True
    other = kube.get("LitGPTModel", namespace, model_name)
    return other is not None and ModelCheckpoint.from_body(other).ref == ModelCheckpoint.from_body(served).ref


def resolve_adapters(namespace: str, spec, served_model: Optional[dict]) -> tuple[Dependency, tuple[AdapterSource, ...]]:
    """spec.adapters as mountable outputs, once every one is a Succeeded LoRA finetune of the served
    model. What no retry can fix (another method, another base, a failed finetune) is `failed`."""
    served_name = spec.model_ref.name
    sources, waiting = [], []
    for adapter in spec.adapters or []:
        name = adapter.finetune_ref.name
        what = f"Adapter {adapter.name} (FinetuneJob {name})"
        finetune = kube.get("FinetuneJob", namespace, name)
        if finetune is None:
            waiting.append(f"{what}: the FinetuneJob does not exist (yet)")
            continue
        finetune_spec = FINETUNE_JOB.parse_spec(finetune)
        if finetune_spec.method != "lora":
            return Dependency(False, "AdapterNotLoRA", f"{what}: the finetune uses method {finetune_spec.method}; only "
                              "LoRA finetunes serve as adapters. Serve it with a ModelServer of its own (finetuneRef), "
                              "or remove it from spec.adapters.", failed=True), ()
        if not _same_base(namespace, finetune_spec.model_ref.name, served_model):
            return Dependency(False, "AdapterOfAnotherModel", f"{what}: it finetunes LitGPTModel "
                              f"{finetune_spec.model_ref.name}, not {served_name} (or its repo id and revision), so its "
                              "LoRA weights do not fit the served model. Serve it on a ModelServer of its own base, or "
                              "remove it from spec.adapters.", failed=True), ()
        status = finetune.get("status") or {}
        if status.get("phase") == "Failed":
            return Dependency(False, "AdapterFinetuneFailed", f"{what}: the finetune failed, so there is nothing to "
                              "serve; fix and re-create it (its status says why), or remove it from spec.adapters.",
                              failed=True), ()
        if status.get("phase") != "Succeeded":
            waiting.append(f"{what} is {status.get('phase') or 'Pending'}")
        elif not (status.get("outputClaimName") and status.get("outputPath")):
            waiting.append(f"{what} reports no output location yet")
        else:
            sources.append(AdapterSource(adapter.name, OutputLocation(status["outputClaimName"], status["outputPath"])))
    if waiting:
        return Dependency(False, "AdapterNotReady", "Waiting for the adapters' finetunes to succeed: "
                          + "; ".join(waiting) + "."), ()
    return Dependency(True, "AdaptersReady", f"{len(sources)} adapter(s) ready: "
                      + ", ".join(a.name for a in sources) + "."), tuple(sources)


@reconciler(MODEL_SERVER)
def reconcile_server(body: dict, settings: Settings) -> Observed:
    parent = Parent.from_body(body)
    spec = MODEL_SERVER.parse_spec(body)
    name = server_name(parent)
    fields = {"deploymentName": name, "serviceName": name, "url": url(parent, spec)}
    deployment = get_ours("Deployment", parent, name)
    dependency, source = resolve_source(parent.namespace, spec)
    adapters: Optional[Dependency] = None
    if source is not None and spec.adapters:
        adapters, adapter_sources = resolve_adapters(parent.namespace, spec, dependency.body)
        source = dataclasses.replace(source, adapters=adapter_sources) if adapters.ready else None
    unmet = adapters if adapters is not None and not adapters.ready else dependency
    if source is None and deployment is None:
        observed = unmet.unmet("ModelReady" if unmet is dependency else "AdaptersReady", "Ready", fields)
        if unmet is not dependency:
            observed.conditions.insert(0, Cond.of("ModelReady", True, dependency.reason, dependency.message))
        return observed
    existed = deployment is not None
    if source is not None:
        children = build_server_children(parent, spec, source, settings)
        if applied_digest(deployment) != applied_digest(children[0]):
            applied = apply_children(children, parent, checked=frozenset({"Deployment"}))
            deployment = next(obj for obj in applied if obj["kind"] == "Deployment")
            if existed and not any(c["kind"] == "HorizontalPodAutoscaler" for c in children):
                delete_child("HorizontalPodAutoscaler", parent, name)  # autoscaling was turned off
        fields["adapters"] = [a.name for a in source.adapters] or None
    # A Deployment this reconcile created has no pods yet (nothing to list).
    pods = kube.list_objects("Pod", parent.namespace, selector_labels(parent, COMPONENT)) if existed else []
    state = observe.deployment_state(deployment, pods, current_pods(deployment, pods))
    conditions = [Cond.of("ModelReady", dependency.ready, dependency.reason, dependency.message)]
    if adapters is not None:
        conditions.append(Cond.of("AdaptersReady", adapters.ready, adapters.reason, adapters.message,
                                  warning=adapters.failed))
    fields.update(replicas=state.replicas, availableReplicas=state.available)
    if source is None:
        # The current spec cannot be built yet (or ever): the pods of the previous one serve on.
        serving = f" The pods of the previous spec keep serving ({state.available} available) meanwhile."
        conditions.append(Cond.of("Ready", False, unmet.reason, unmet.message + serving, warning=unmet.failed))
        fields["adapters"] = (body.get("status") or {}).get("adapters")  # what those pods serve
        if unmet.failed:
            conditions.append(Cond.of("Failed", True, unmet.reason, unmet.message, warning=True))
            return Observed("Failed", conditions, fields)
        return Observed("Waiting", conditions, fields, waiting_for=unmet.message)
    ready = state.phase == "Ready"
    conditions.append(Cond.of("Ready", ready, state.reason, state.message,
                              warning=not ready and (state.reason in observe.STUCK_WAITING
                                                     or state.phase in ("Failed", "Degraded"))))
    if state.phase == "Failed":
        conditions.append(Cond.of("Failed", True, state.reason, state.message, warning=True))
    return Observed(state.phase, conditions, fields)
