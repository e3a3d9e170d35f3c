"""ModelServer: serve a LitGPTModel or a FinetuneJob's output over HTTP (`litgpt serve`)."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from litgpt_operator.api.common import (
    ApiModel,
    LocalObjectReference,
    PodPlacement,
    InferencePrecision,
    QuantizeMode,
    SecretKeyRef,
    StatusBase,
    cel,
    gpus_field,
)
from litgpt_operator.api.kind import AGE, PHASE, KindInfo, PrinterColumn


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler on CPU utilisation."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas.", ".minReplicas")
            ]
        }
    }

    min_replicas: int = Field(1, description="Fewest replicas.", ge=1, le=1000)
    max_replicas: int = Field(description="Most replicas.", ge=1, le=1000)
    target_cpu_utilization_percentage: int = Field(
        80, description="Average CPU utilisation (percent of requests) the autoscaler aims at.", ge=1, le=100
    )


class ApiKeySecretRef(SecretKeyRef):
    """A key of a Secret in the same namespace holding the API key."""

    key: str = Field("api-key", description="Key inside the Secret whose value is the API key.",
                     min_length=1, max_length=253)


# What a client puts in "model" to pick an adapter. No `/` (so never the base's repo id), `,` or `=`
# (the runtime's --adapters name=path,... syntax).
ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"
MAX_ADAPTERS = 16


class ServedAdapter(ApiModel):
    """A LoRA finetune of the served model, served beside it on the same copy of the base weights."""

    name: str = Field(description="The name clients put in the OpenAI `model` field to use this adapter "
                                  "(letters, digits, `-`, `_`, `.`).",
                      min_length=1, max_length=63, pattern=ADAPTER_NAME_PATTERN)
    finetune_ref: LocalObjectReference = Field(
        description="A FinetuneJob with method lora of the same LitGPTModel; served once it has Succeeded."
    )


class ModelServerSpec(PodPlacement):
    """What to serve and how many copies."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.modelRef) != has(self.finetuneRef)",
                    "set exactly one of modelRef or finetuneRef.",
                ),
                cel("!has(self.adapters) || !has(self.quantize)",
                    "quantize does not combine with adapters yet: serve the adapters over full-precision base weights.",
                    ".quantize"),
                cel("!has(self.adapters) || has(self.modelRef)",
                    "adapters need modelRef: the LitGPTModel the LoRA finetunes were trained on is served beside them.",
                    ".adapters"),
            ]
        }
    }

    model_ref: Optional[LocalObjectReference] = Field(None, description="LitGPTModel to serve.")
    finetune_ref: Optional[LocalObjectReference] = Field(
        None, description="FinetuneJob whose output to serve (once it has Succeeded)."
    )
    adapters: Optional[list[ServedAdapter]] = Field(
        None,
        description="LoRA finetunes of modelRef served by the same pods on one copy of the base weights; a request's "
        "`model` picks one (the base by its repo id), and rows of different adapters share each decode step. "
        "Adding or removing one rolls the pods without dropping requests in progress.",
        max_length=MAX_ADAPTERS,
        json_schema_extra={"x-kubernetes-validations": [
            cel("self.all(a, self.exists_one(b, b.name == a.name))", "adapter names must be unique."),
        ]},
    )
    replicas: int = Field(1, description="Server pods (ignored while autoscaling is set).", ge=0, le=1000)
    port: int = Field(8000, description="HTTP port of the server and of its Service.", ge=1, le=65535)
    gpus: int = gpus_field("GPUs per replica (`nvidia.com/gpu` limit); 0 serves on CPU.")
    precision: Optional[InferencePrecision] = Field(
        None, description="Numeric precision of inference (the weights' dtype; the runtime picks when omitted)."
    )
    quantize: Optional[QuantizeMode] = Field(
        None, description="Load the base weights quantized with bitsandbytes (`litgpt serve --quantize`): less GPU "
        "memory, a little less accuracy.")
    max_new_tokens: Optional[int] = Field(None, description="Default cap on generated tokens per request.", ge=1)
    api_key_secret_ref: Optional[ApiKeySecretRef] = Field(
        None,
        description="Secret key holding the server's API key: every route but /health, /ready and /metrics then "
        "needs `Authorization: Bearer <key>`. The key reaches the pods only as the environment variable "
        "LITGPT_API_KEY from this Secret (never in args, status or events).",
    )
    autoscaling: Optional[Autoscaling] = Field(None, description="Scale replicas with load (creates an HPA).")


class ModelServerStatus(StatusBase):
    """Phase: Pending, Waiting (for the model, a finetune or an adapter), Progressing, Ready, Degraded
    (some pods of the current spec serve, others fail) or Failed."""

    deployment_name: Optional[str] = Field(None, description="Name of the Deployment running the server.")
    service_name: Optional[str] = Field(None, description="Name of the Service in front of it.")
    url: Optional[str] = Field(None, description="In-cluster URL of the server.")
    replicas: Optional[int] = Field(None, description="Pods of the current Deployment.", ge=0)
    available_replicas: Optional[int] = Field(
        None, description="Pods of the current spec answering the /ready probe (a real 1-token generation).", ge=0)
    adapters: Optional[list[str]] = Field(None, description="Names of the adapters the current pods serve.",
                                          max_length=MAX_ADAPTERS)


KIND = KindInfo(
    kind="ModelServer",
    plural="modelservers",
    short_names=("msv", "modelsrv"),
    spec=ModelServerSpec,
    status=ModelServerStatus,
    description="Serves a LitGPTModel or a FinetuneJob's output with `litgpt serve` behind a Service.",
    printer_columns=(
        PrinterColumn("Model", ".spec.modelRef.name", description="LitGPTModel served"),
        PrinterColumn("Finetune", ".spec.finetuneRef.name", description="FinetuneJob served"),
        PrinterColumn("Adapters", ".status.adapters", description="Adapters served", priority=1),
        PrinterColumn("Available", ".status.availableReplicas", "integer", description="Ready replicas"),
        PHASE,
        PrinterColumn("URL", ".status.url", description="In-cluster URL", priority=1),
        AGE,
    ),
)
