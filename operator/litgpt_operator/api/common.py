"""Types shared by the four kinds: references, scheduling knobs, the status shape.

Every field carries a description: it becomes the CRD's OpenAPI description, so
`kubectl explain` and docs/api.md show it. Field names are camelCase on the wire (Kubernetes
convention) and snake_case in Python.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from litgpt_runtime.precision import INFERENCE_DTYPES, TRAINING_PRECISIONS
from litgpt_runtime.quantize import QUANTIZE_MODES  # torch-free: the runtime's --quantize values

GROUP = "litgpt.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Names of objects we reference are DNS labels/subdomains; bounding them also bounds CEL cost.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# A Hugging Face repo id: `<org>/<name>`.
REPO_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$"
# A model known to the runtime by short name (`pythia-14m`) or repo id (`EleutherAI/pythia-14m`).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$"
# A relative path inside a volume: non-empty segments, none of them `..` (RE2 has no look-ahead,
# so "a segment other than .." is spelled out: starts with a non-dot, or is `.`, or `.x...`, or `..x...`).
_SEGMENT = r"(?:[^/.][^/]*|\.|\.[^/.][^/]*|\.\.[^/]+)"
RELATIVE_PATH_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
# Precision names as the runtime's `--precision` takes them (one list: litgpt_runtime.precision).
Precision = Literal[TRAINING_PRECISIONS]  # type: ignore[valid-type]
InferencePrecision = Literal[tuple(INFERENCE_DTYPES)]  # type: ignore[valid-type]
QuantizeMode = Literal[QUANTIZE_MODES]  # type: ignore[valid-type]

# A Kubernetes quantity ("500m", "4Gi", 2): int-or-string in the schema.
Quantity = Union[int, str]


def cel(rule: str, message: str, field_path: Optional[str] = None, reason: Optional[str] = None) -> dict:
    """One `x-kubernetes-validations` entry (a CEL rule the API server evaluates on write)."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def immutable_once_started(field: str, kind: str, optional: bool = False) -> dict:
    """A CEL transition rule (on the whole object) keeping `spec.<field>` as it was once the Job
    has started (status.startTime): changing it then would silently do nothing, since a started or
    finished Job is never re-run, so the API server says so instead. Before that (waiting for the
    model, refused by the fit check) the spec may still be corrected."""
    new, old = f"self.spec.{field}", f"oldSelf.spec.{field}"
    if optional:  # present in both with the same value, or absent in both
        same = f"has({new}) == has({old}) && (!has({new}) || {new} == {old})"
    else:
        same = f"{new} == {old}"
    return cel(
        f"!has(oldSelf.status) || !has(oldSelf.status.startTime) || ({same})",
        f"spec.{field} is immutable once the {kind} has started: a started or finished run is not re-run. "
        f"To use another {field}, create a new {kind} (another name), or delete this one and apply it again.",
        field_path=f".spec.{field}",
        reason="FieldValueForbidden",
    )


class ApiModel(BaseModel):
    """Base of every schema object: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", protected_namespaces=()
    )

    def to_wire(self) -> dict:
        """The object as the API server stores it (camelCase, unset optionals left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def name_field(description: str, **kwargs: Any) -> Any:
    return Field(description=description, min_length=1, max_length=253, pattern=NAME_PATTERN, **kwargs)


class LocalObjectReference(ApiModel):
    """A reference to another object of the same namespace."""

    name: str = name_field("Name of the referenced object (same namespace).")


class SecretKeyRef(ApiModel):
    """A key of a Secret in the same namespace."""

    name: str = name_field("Name of the Secret (same namespace).")
    key: str = Field(
        "HF_TOKEN",
        description="Key inside the Secret whose value is used.",
        min_length=1,
        max_length=253,
    )


class ResourceRequirements(ApiModel):
    """Compute resources of a container (same meaning as a Pod's `resources`)."""

    limits: Optional[dict[str, Quantity]] = Field(
        None, description="Upper bounds, e.g. {cpu: 4, memory: 32Gi}. GPUs are set by the GPU fields, not here."
    )
    requests: Optional[dict[str, Quantity]] = Field(
        None, description="Amounts the scheduler reserves, e.g. {cpu: 2, memory: 16Gi}."
    )


class Toleration(ApiModel):
    """A Pod toleration (lets pods land on tainted nodes, e.g. GPU nodes)."""

    key: Optional[str] = Field(None, description="Taint key the toleration applies to; empty means all keys.")
    operator: Optional[Literal["Exists", "Equal"]] = Field(
        None, description="Equal (default) matches the value; Exists matches any value."
    )
    value: Optional[str] = Field(None, description="Taint value matched when operator is Equal.")
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(
        None, description="Taint effect matched; empty means all effects."
    )
    toleration_seconds: Optional[int] = Field(
        None, description="How long a NoExecute taint is tolerated before eviction (seconds)."
    )


class PodMetadata(ApiModel):
    """Extra labels and annotations for the pods an object runs (sidecar injection, cost tags...)."""

    labels: Optional[dict[str, str]] = Field(
        None, description="Labels added to the pods; the operator's own labels win on a clash."
    )
    annotations: Optional[dict[str, str]] = Field(None, description="Annotations added to the pods.")


class PodPlacement(ApiModel):
    """Resources and placement of the pods an object runs (mixed into each spec)."""

    pod_metadata: Optional[PodMetadata] = Field(None, description="Extra labels and annotations of the pods.")

    resources: Optional[ResourceRequirements] = Field(
        None, description="CPU/memory of the main container; the operator's default resources when omitted."
    )
    node_selector: Optional[dict[str, str]] = Field(None, description="Node labels the pods must match.")
    tolerations: Optional[list[Toleration]] = Field(
        None, description="Tolerations of the pods.", max_length=32
    )


class Condition(ApiModel):
    """One aspect of the object's state (the standard Kubernetes condition shape)."""

    type: str = Field(description="Aspect this condition reports, e.g. Ready, Succeeded, Failed.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the aspect holds.")
    reason: str = Field(description="One CamelCase word saying why, for machines.", max_length=1024)
    message: str = Field("", description="Why, for humans: what happened and what to do.", max_length=32768)
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    observed_generation: Optional[int] = Field(
        None, description="metadata.generation of the spec this condition was computed from.", ge=0
    )


class StatusBase(ApiModel):
    """What every kind reports."""

    model_config = ConfigDict(extra="ignore")

    phase: Optional[str] = Field(None, description="Short summary of the state, for humans (see each kind).")
    conditions: Optional[list[Condition]] = Field(
        None,
        description="Detailed state as standard conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: Optional[int] = Field(
        None, description="metadata.generation of the last spec the operator acted on.", ge=0
    )


class TrainingProgress(ApiModel):
    """The runtime's newest progress record (`litgpt_runtime.progress_record`), as read from the
    training pod's log every few seconds while the Job runs."""

    step: int = Field(description="Optimizer steps done.", ge=0)
    total_steps: Optional[int] = Field(None, description="Steps the run will take, when known.", ge=0)
    epoch: Optional[int] = Field(None, description="Epochs completed over the training data.", ge=0)
    loss: Optional[float] = Field(None, description="Training loss at that step (absent when not finite).")
    val_loss: Optional[float] = Field(None, description="The latest validation loss.")
    learning_rate: Optional[float] = Field(None, description="Learning rate at that step.", ge=0)
    tokens_per_second: Optional[int] = Field(None, description="Training throughput, all processes together.", ge=0)
    tokens_seen: Optional[int] = Field(None, description="Tokens processed since step 0 (a resumed run continues the count).", ge=0)
    eta_seconds: Optional[int] = Field(None, description="Time left at the run's average pace, when the total is known.", ge=0)
    eta: Optional[str] = Field(None, description="etaSeconds for humans (12m30s), as of updateTime.")
    event: Optional[str] = Field(None, description="What made the record: step, checkpoint, resumed or finished.")
    update_time: Optional[str] = Field(
        None, description="When the runtime made the record (RFC 3339).", json_schema_extra={"format": "date-time"})


class CheckpointRecord(ApiModel):
    """A resumable checkpoint the run saved (from the runtime's progress record)."""

    step: int = Field(description="Optimizer step the checkpoint holds.", ge=0)
    path: str = Field(description="Its folder inside the output claim (`<outputPath>/step-XXXXXX`).")
    time: str = Field(description="When it was saved (RFC 3339).", json_schema_extra={"format": "date-time"})


class JobStatus(StatusBase):
    """Status of a kind that runs to completion in a Kubernetes Job."""

    job_name: Optional[str] = Field(None, description="Name of the Job running (or that ran) the work.")
    start_time: Optional[str] = Field(
        None, description="When the Job started (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    completion_time: Optional[str] = Field(
        None, description="When the Job finished (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    attempts: Optional[int] = Field(
        None, description="Pods started for the work so far (more than 1: it was resumed after an eviction or a failure).", ge=0
    )
    current_pod: Optional[str] = Field(None, description="The newest pod of the Job.")
    resumed_step: Optional[int] = Field(None, description="Optimizer step the current attempt resumed from (auto-resume).", ge=0)
    progress: Optional[TrainingProgress] = Field(
        None, description="Latest training figures, from the runtime's progress record (within seconds while it runs).")
    last_checkpoint: Optional[CheckpointRecord] = Field(
        None, description="The newest resumable checkpoint of the run: where a new pod continues (`--resume auto`).")


def gpus_field(description: str, default: int = 1) -> Any:
    """GPUs per pod, requested as `nvidia.com/gpu` limits; 0 runs on CPU."""
    return Field(default, description=description, ge=0, le=64)
