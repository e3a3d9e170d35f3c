"""ModelServer -> Deployment + Service running `litgpt serve`, and an optional HPA."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional

from litgpt_operator.api.modelserver import ModelServerSpec
from litgpt_operator.builders import common as c
from litgpt_operator.builders.sources import ModelCheckpoint, OutputLocation
from litgpt_operator.settings import Settings

COMPONENT = "server"
# The runtime's /ready answers 200 only after a real 1-token generation (litgpt_runtime.serve.readiness):
# a pod with corrupt weights or a broken adapter never takes traffic, and a rollout waits for it.
READY_PATH = "/ready"
METRICS_PATH = "/metrics"
ADAPTERS_MOUNT = "/adapters"
# On SIGTERM the runtime lets the requests in progress finish (for at most --drain_timeout seconds)
# before it exits; the grace period covers that plus the preStop pause, during which the endpoint
# is taken out of the Service while the pod still answers.
PRE_STOP_SECONDS = 5
DRAIN_SECONDS = 45
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + DRAIN_SECONDS + 10
API_KEY_ENV = "LITGPT_API_KEY"  # litgpt_runtime.serve.auth.ENV_VAR
# Where a finetune's servable checkpoint sits inside its output folder.
FINETUNE_FINAL_SUBDIR = "final"
# A digest of everything the server's children were built from: equal digests, nothing to apply
# (so a status write of the model, or a resync, re-applies nothing); a new runtime image after an
# operator upgrade, or a new spec, changes it.
APPLIED_ANNOTATION = "litgpt.dev/applied-digest"
# A digest of the pod template on the pods themselves: which pods run the current spec (a rollout
# has pods of both; only the current ones' failures are the current spec's).
TEMPLATE_ANNOTATION = "litgpt.dev/template-digest"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AdapterSource:
    """A LoRA finetune served beside the base: the name clients pick it by, and its output."""

    name: str
    output: OutputLocation


@dataclass(frozen=True)
class ServeSource:
    """What the server loads: a model's checkpoint, or a finetune output on top of it, and the
    LoRA finetunes served beside the model."""

    model: ModelCheckpoint
    finetune_output: Optional[OutputLocation] = None
    adapters: tuple[AdapterSource, ...] = ()

    def adapter_claims(self) -> list[str]:
        """The claims holding the adapters, each mounted once (at /adapters/<claim>)."""
        return sorted({a.output.claim_name for a in self.adapters})

    def adapter_dir(self, adapter: AdapterSource) -> str:
        return f"{ADAPTERS_MOUNT}/{adapter.output.claim_name}/{adapter.output.path}/{FINETUNE_FINAL_SUBDIR}"

    @property
    def target(self) -> str:
        """The runtime's first argument: the repo id, or the folder of the finetuned checkpoint."""
        if self.finetune_output:
            return f"{self.finetune_output.mounted_dir}/{FINETUNE_FINAL_SUBDIR}"
        return self.model.ref


def server_name(parent: c.Parent) -> str:
    return c.child_name(parent.name)


def serve_command(spec: ModelServerSpec, source: ServeSource) -> list[str]:
    # Listen on all interfaces: the Service and the kubelet's probe come from outside the pod.
    command = ["litgpt", "serve", source.target, "--checkpoint_root_dir", c.CHECKPOINT_ROOT,
               "--host", "0.0.0.0", "--port", str(spec.port)]
    command += ["--accelerator", "cuda" if spec.gpus else "cpu", "--devices", str(max(spec.gpus, 1))]
    if spec.precision:
        command += ["--precision", spec.precision]
    if spec.quantize:
        command += ["--quantize", spec.quantize]
    if spec.max_new_tokens:
        command += ["--max_new_tokens", str(spec.max_new_tokens)]
    if source.adapters:
        command += ["--adapters", ",".join(f"{a.name}={source.adapter_dir(a)}" for a in source.adapters)]
    command += ["--drain_timeout", str(DRAIN_SECONDS)]
    return command


def api_key_env(spec: ModelServerSpec) -> list[dict[str, Any]]:
    """The API key as `litgpt serve` reads it ($LITGPT_API_KEY), only ever as a Secret reference."""
    ref = spec.api_key_secret_ref
    if ref is None:
        return []
    return [{"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def _pod_template(parent: c.Parent, spec: ModelServerSpec, source: ServeSource, settings: Settings) -> dict[str, Any]:
    volumes = [c.claim_volume("models", source.model.claim_name, read_only=True)]
    mounts = [c.mount("models", c.MODELS_MOUNT, read_only=True)]
    if source.finetune_output:
        volumes.append(c.claim_volume("output", source.finetune_output.claim_name, read_only=True))
        mounts.append(c.mount("output", c.OUTPUT_MOUNT, read_only=True))
    for number, claim in enumerate(source.adapter_claims()):
        volumes.append(c.claim_volume(f"adapters-{number}", claim, read_only=True))
        mounts.append(c.mount(f"adapters-{number}", f"{ADAPTERS_MOUNT}/{claim}", read_only=True))
    parts = c.PodParts(
        command=serve_command(spec, source),
        # A finetune output is a different checkpoint: only the model's own weights carry its digest.
        env=([] if source.finetune_output else source.model.verify_env()) + api_key_env(spec),
        volumes=volumes,
        mounts=mounts,
        resources=c.resources(spec.resources, settings, spec.gpus),
        restart_policy="Always",
        ports=[{"name": "http", "containerPort": spec.port}],
        readiness_probe={
            "httpGet": {"path": READY_PATH, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
            # a busy CPU server may take a while for its 1-token answer (the runtime gives up at 20 s)
            "timeoutSeconds": 25,
        },
    )
    template = c.pod_template(parent, COMPONENT, parts, spec, settings)
    container = template["spec"]["containers"][0]
    container["lifecycle"] = {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}}
    template["spec"]["terminationGracePeriodSeconds"] = TERMINATION_GRACE_SECONDS
    # Prometheus' usual pod discovery (the chart's optional PodMonitor selects the same pods)
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.port), "prometheus.io/path": METRICS_PATH}
    template["metadata"]["annotations"] = {**scrape, **template["metadata"].get("annotations", {})}
    template["metadata"]["annotations"][TEMPLATE_ANNOTATION] = _digest(template)
    return template


def build_deployment(parent: c.Parent, spec: ModelServerSpec, source: ServeSource, settings: Settings) -> dict[str, Any]:
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": c.selector_labels(parent, COMPONENT)},
        "template": _pod_template(parent, spec, source, settings),
        # A new pod must answer (/ready) before an old one stops: a spec change (an adapter added
        # or removed) never leaves the Service with fewer answering pods.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
    }
    # Under an autoscaler the replica count is the HPA's: leaving it out of our applied
    # configuration keeps each apply from resetting it.
    if spec.autoscaling is None:
        deployment_spec["replicas"] = spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": c.metadata(parent, server_name(parent), COMPONENT),
        "spec": deployment_spec,
    }


def build_service(parent: c.Parent, spec: ModelServerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": c.metadata(parent, server_name(parent), COMPONENT),
        "spec": {
            "selector": c.selector_labels(parent, COMPONENT),
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_hpa(parent: c.Parent, spec: ModelServerSpec) -> Optional[dict[str, Any]]:
    if spec.autoscaling is None:
        return None
    scaling = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": c.metadata(parent, server_name(parent), COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": server_name(parent)},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization_percentage},
                    },
                }
            ],
        },
    }


def url(parent: c.Parent, spec: ModelServerSpec) -> str:
    return f"http://{server_name(parent)}.{parent.namespace}.svc:{spec.port}"


def build_server_children(parent: c.Parent, spec: ModelServerSpec, source: ServeSource,
                          settings: Settings) -> list[dict[str, Any]]:
    """Service, Deployment and (with autoscaling) HPA, each annotated with the digest of the set."""
    children = [build_service(parent, spec), build_deployment(parent, spec, source, settings)]
    hpa = build_hpa(parent, spec)
    if hpa:
        children.append(hpa)
    digest = _digest(children)
    for child in children:
        child["metadata"]["annotations"][APPLIED_ANNOTATION] = digest
    return children


def applied_digest(obj: Optional[dict]) -> Optional[str]:
    return ((obj or {}).get("metadata", {}).get("annotations") or {}).get(APPLIED_ANNOTATION)


def current_pods(deployment: dict, pods: list[dict]) -> list[dict]:
    """The pods made from the Deployment's present template."""
    wanted = (deployment["spec"]["template"]["metadata"].get("annotations") or {}).get(TEMPLATE_ANNOTATION)
    return [p for p in pods if (p["metadata"].get("annotations") or {}).get(TEMPLATE_ANNOTATION) == wanted]
