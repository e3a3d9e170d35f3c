"""ModelServer: Deployment + Service (+ HPA) running `litgpt serve`, applied server-side so a
spec change rolls the Deployment; Ready when the Deployment's replicas are available."""

from __future__ import annotations

from typing import Optional

from litgpt_operator import kube, observe
from litgpt_operator.api import FINETUNE_JOB, MODEL_SERVER
from litgpt_operator.builders.common import GENERATION_ANNOTATION, Parent, selector_labels
from litgpt_operator.builders.server import (
    COMPONENT,
    ServeSource,
    build_deployment,
    build_hpa,
    build_service,
    server_name,
    url,
)
from litgpt_operator.builders.sources import ModelCheckpoint, OutputLocation
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


def apply_server_children(parent: Parent, spec, source: ServeSource, settings: Settings) -> None:
    kube.apply(build_service(parent, spec))
    kube.apply(build_deployment(parent, spec, source, settings))
    hpa = build_hpa(parent, spec)
    if hpa:
        kube.apply(hpa)
    else:
        kube.delete("HorizontalPodAutoscaler", parent.namespace, server_name(parent))


@reconciler(MODEL_SERVER)
def reconcile_server(body: dict, settings: Settings, apply_children: bool) -> Observed:
    parent = Parent.from_body(body)
    spec = MODEL_SERVER.parse_spec(body)
    name = server_name(parent)
    fields = {"deploymentName": name, "serviceName": name, "url": url(parent, spec)}
    deployment = kube.get("Deployment", parent.namespace, name)
    built_from = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(GENERATION_ANNOTATION)
    dependency, source = resolve_source(parent.namespace, spec)
    source_cond = Cond.of("ModelReady", dependency.ready, dependency.reason, dependency.message)
    if source is None and deployment is None:
        waiting = Cond.of("Ready", False, "WaitingForModel", dependency.message)
        return Observed("Waiting", [source_cond, waiting], fields, waiting_for=dependency.message)
    if source is not None and (deployment is None or apply_children or built_from != str(parent.generation)):
        apply_server_children(parent, spec, source, settings)
        deployment = kube.get("Deployment", parent.namespace, name)
    pods = kube.list_objects("Pod", parent.namespace, selector_labels(parent, COMPONENT))
    state = observe.deployment_state(deployment, pods)
    ready = state.phase == "Ready"
    conditions = [source_cond, Cond.of("Ready", ready, state.reason, state.message,
                                       warning=not ready and state.reason in observe.STUCK_WAITING)]
    if state.phase == "Failed":
        conditions.append(Cond.of("Failed", True, state.reason, state.message, warning=True))
    fields.update(replicas=state.replicas, availableReplicas=state.available)
    return Observed(state.phase, conditions, fields)
