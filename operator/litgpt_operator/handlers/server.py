"""ModelServer: Deployment + Service (+ HPA) running `litgpt serve`, applied server-side when what
they would be built from changed; Ready when the Deployment's replicas are available."""

from __future__ import annotations

from typing import Optional

from litgpt_operator import kube, observe
from litgpt_operator.api import FINETUNE_JOB, MODEL_SERVER
from litgpt_operator.builders.common import Parent, selector_labels
from litgpt_operator.builders.server import (
    COMPONENT,
    ServeSource,
    applied_digest,
    build_server_children,
    server_name,
    url,
)
from litgpt_operator.builders.sources import ModelCheckpoint, OutputLocation
from litgpt_operator.handlers.children import apply_children, delete_child, get_ours
from litgpt_operator.handlers.core import reconciler
from litgpt_operator.handlers.jobs import Dependency, model_dependency
from litgpt_operator.settings import Settings
from litgpt_operator.status import Cond, Observed


def resolve_source(namespace: str, spec) -> tuple[Dependency, Optional[ServeSource]]:
    """What to serve, once it is ready: a Ready model, or a Succeeded finetune (and its model)."""
    if spec.model_ref:
        model = model_dependency(namespace, spec.model_ref.name)
        return model, ServeSource(ModelCheckpoint.from_body(model.body)) if model.ready else None
    name = spec.finetune_ref.name
    finetune = kube.get("FinetuneJob", namespace, name)
    if finetune is None:
        return Dependency(False, "FinetuneNotFound", f"FinetuneJob {name} does not exist (yet)."), None
    status = finetune.get("status") or {}
    if status.get("phase") == "Failed":
        return Dependency(False, "FinetuneFailed", f"FinetuneJob {name} failed, so there is nothing to serve: "
                                                   "fix and re-create it (its status says why).", finetune,
                          failed=True), None
    if status.get("phase") != "Succeeded":
        return Dependency(False, "FinetuneNotSucceeded", f"Waiting for FinetuneJob {name} to succeed "
                                                         f"(it is {status.get('phase') or 'Pending'})."), None
    model = model_dependency(namespace, FINETUNE_JOB.parse_spec(finetune).model_ref.name)
    if model.body is None:
        return model, None
    if not (status.get("outputClaimName") and status.get("outputPath")):
        return Dependency(False, "FinetuneOutputUnknown", f"FinetuneJob {name} reports no output location yet."), None
    output = OutputLocation(status["outputClaimName"], status["outputPath"])
    ready = Dependency(True, "FinetuneSucceeded", f"FinetuneJob {name} succeeded.", finetune)
    return ready, ServeSource(ModelCheckpoint.from_body(model.body), output)


@reconciler(MODEL_SERVER)
def reconcile_server(body: dict, settings: Settings) -> Observed:
    parent = Parent.from_body(body)
    spec = MODEL_SERVER.parse_spec(body)
    name = server_name(parent)
    fields = {"deploymentName": name, "serviceName": name, "url": url(parent, spec)}
    deployment = get_ours("Deployment", parent, name)
    dependency, source = resolve_source(parent.namespace, spec)
    if source is None and deployment is None:
        return dependency.unmet("ModelReady", "Ready", fields)
    if source is not None:
        children = build_server_children(parent, spec, source, settings)
        if applied_digest(deployment) != applied_digest(children[0]):
            apply_children(children, parent)
            if not any(c["kind"] == "HorizontalPodAutoscaler" for c in children):
                delete_child("HorizontalPodAutoscaler", parent, name)  # autoscaling was turned off
            deployment = kube.get("Deployment", parent.namespace, name)
    pods = kube.list_objects("Pod", parent.namespace, selector_labels(parent, COMPONENT))
    state = observe.deployment_state(deployment, pods)
    ready = state.phase == "Ready"
    conditions = [Cond.of("ModelReady", dependency.ready, dependency.reason, dependency.message),
                  Cond.of("Ready", ready, state.reason, state.message,
                          warning=not ready and state.reason in observe.STUCK_WAITING)]
    if state.phase == "Failed":
        conditions.append(Cond.of("Failed", True, state.reason, state.message, warning=True))
    fields.update(replicas=state.replicas, availableReplicas=state.available)
    return Observed(state.phase, conditions, fields)
