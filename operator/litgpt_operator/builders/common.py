"""Shared pieces of every child object: names, labels, owner references, the restricted pod.

Pure functions: dicts in, dicts out, no I/O. Names are derived from the parent only, so
re-running a reconcile (or the operator after a restart) addresses the same children.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

from litgpt_operator.api.common import ResourceRequirements
from litgpt_operator.settings import Settings
from litgpt_runtime.termination import TERMINATION_LOG_ENV  # torch-free: the runtime reads this variable

MANAGED_BY = "litgpt-operator"
# Kueue pass-through: a parent labelled with a queue gets its Jobs created suspended and labelled
# alike; Kueue admits them by setting `suspend: false` (the parent reads Queued until then). Only
# creation sets it: the operator never re-applies a Job, so it never suspends an admitted one.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"  # Kueue's workload priority, passed on when set
KIND_LABEL = "litgpt.dev/kind"
GENERATION_ANNOTATION = "litgpt.dev/spec-generation"
# On a Job the operator stopped (stop_patch): why, for the parent's status.
STOPPED_ANNOTATION = "litgpt.dev/stopped"
STOPPED_REASON_ANNOTATION = "litgpt.dev/stopped-reason"

# Mount points inside runtime pods; the same claim is mounted at the same path in every pod, so
# paths a finetune writes (e.g. a LoRA output's reference to its base checkpoint) hold when served.
MODELS_MOUNT = "/models"
CHECKPOINT_ROOT = f"{MODELS_MOUNT}/checkpoints"
OUTPUT_MOUNT = "/output"
DATA_MOUNT = "/data"
CONFIG_MOUNT = "/config"
TOKENIZER_MOUNT = "/tokenizer"
CONTAINER = "litgpt"
GPU_RESOURCE = "nvidia.com/gpu"
# Children names must also fit where Kubernetes appends to them (`<job>-<index>-<random>` pods,
# `<job>-<index>` host names: 63 characters).
MAX_NAME = 52


@dataclass(frozen=True)
class Parent:
    """The identity of the custom resource owning the children."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str
    generation: int = 0
    queue_labels: tuple[tuple[str, str], ...] = ()  # Kueue labels its Jobs carry (empty: not queued)

    @classmethod
    def from_body(cls, body: dict) -> "Parent":
        meta = body["metadata"]
        parent_labels = meta.get("labels") or {}
        queued = bool(parent_labels.get(QUEUE_LABEL))
        return cls(
            api_version=body["apiVersion"],
            kind=body["kind"],
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            queue_labels=tuple((k, parent_labels[k]) for k in (QUEUE_LABEL, PRIORITY_LABEL)
                               if queued and parent_labels.get(k)),
        )


def child_name(parent_name: str, suffix: str = "") -> str:
    """A DNS-1035 label derived from the parent's name (stable; hashed when too long)."""
    base = parent_name.replace(".", "-")
    if not base[0].isalpha():
        base = f"lg-{base}"
    name = f"{base}-{suffix}" if suffix else base
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"
    return name


def labels(parent: Parent, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "litgpt",
        "app.kubernetes.io/instance": parent.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "litgpt",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        KIND_LABEL: parent.kind.lower(),
    }


def selector_labels(parent: Parent, component: str) -> dict[str, str]:
    """The subset that selects a parent's pods (stable across operator versions)."""
    full = labels(parent, component)
    return {k: full[k] for k in ("app.kubernetes.io/instance", "app.kubernetes.io/component", KIND_LABEL)}


def owner_reference(parent: Parent) -> dict[str, Any]:
    return {
        "apiVersion": parent.api_version,
        "kind": parent.kind,
        "name": parent.name,
        "uid": parent.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(parent: Parent, name: str, component: str, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": parent.namespace,
        "labels": labels(parent, component),
        "annotations": {GENERATION_ANNOTATION: str(parent.generation)},
    }
    if owned:
        meta["ownerReferences"] = [owner_reference(parent)]
    return meta


def resources(
    requested: Optional[ResourceRequirements], settings: Settings, gpus: int = 0
) -> dict[str, Any]:
    """Container resources: the object's own or the operator's defaults, plus GPUs as limits."""
    chosen = (requested or settings.default_resources).to_wire()
    if gpus > 0:
        chosen.setdefault("limits", {})[GPU_RESOURCE] = gpus
    return chosen


# The kubelet's default terminationMessagePath (our containers keep the default).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def env_var(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def fail_job_on_exit_codes(codes: list[int]) -> dict[str, Any]:
    """A podFailurePolicy rule ending the Job at once when the container exits with one of `codes`
    (another pod would fail the same way)."""
    return {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": list(codes)}}


def termination_log_env() -> dict[str, Any]:
    """Where the runtime leaves what it reports (a download's digest, a finetune's lineage, a failure's
    reason): the container's terminationMessagePath, named explicitly so that nodes without
    /dev/termination-log can map it (litgpt_runtime.termination)."""
    return env_var(TERMINATION_LOG_ENV, TERMINATION_MESSAGE_PATH)


def base_env() -> list[dict[str, Any]]:
    # The root filesystem is read-only: every cache a library might write goes under /tmp.
    return [
        env_var("HOME", "/tmp"),
        env_var("XDG_CACHE_HOME", "/tmp/.cache"),
        env_var("HF_HOME", "/tmp/huggingface"),
        env_var("PYTHONUNBUFFERED", "1"),
    ]


def claim_volume(volume: str, claim: str, read_only: bool) -> dict[str, Any]:
    return {"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}


def mount(volume: str, path: str, read_only: bool) -> dict[str, Any]:
    return {"name": volume, "mountPath": path, "readOnly": read_only}


def container_security_context(settings: Settings) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(settings: Settings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_group,
        "fsGroup": settings.fs_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


@dataclass
class PodParts:
    """What differs between runtime pods; `pod_template` adds everything they share."""

    command: list[str]
    env: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    resources: dict[str, Any]
    restart_policy: str = "Never"
    shared_memory: bool = False
    ports: Optional[list[dict[str, Any]]] = None
    readiness_probe: Optional[dict[str, Any]] = None
    subdomain: Optional[str] = None


def one_volume_per_claim(
    volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Merge pod volumes that name the same claim into the first of them, read-only only if every
    mount of it is; each mount keeps its own `readOnly` (that is what makes /models read-only
    next to a writable /output of the same claim).

    The kubelet identifies a claim's volume by its PersistentVolume, so two pod volumes of one
    claim are one volume to it, mounted once with one of the two `readOnly` settings: which one
    is not defined (measured on the real node: a PretrainJob writing to the claim its model
    comes from sometimes found /output read-only)."""
    first: dict[str, str] = {}  # claim -> the volume name kept
    renamed: dict[str, str] = {}  # dropped volume name -> kept one
    kept: list[dict[str, Any]] = []
    for volume in volumes:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim is None:
            kept.append(volume)
        elif claim in first:
            renamed[volume["name"]] = first[claim]
        else:
            first[claim] = volume["name"]
            kept.append({**volume, "persistentVolumeClaim": dict(volume["persistentVolumeClaim"])})
    new_mounts = [{**m, "name": renamed.get(m["name"], m["name"])} for m in mounts]
    for volume in kept:
        if "persistentVolumeClaim" in volume:
            mine = [m for m in new_mounts if m["name"] == volume["name"]]
            volume["persistentVolumeClaim"]["readOnly"] = all(m.get("readOnly", False) for m in mine)
    return kept, new_mounts


def pod_template(
    parent: Parent, component: str, parts: PodParts, placement: Any, settings: Settings
) -> dict[str, Any]:
    """A restricted-profile pod running the runtime image (`placement`: a spec with PodPlacement)."""
    # Bounded: a runaway cache must not fill the node's disk (or, for /dev/shm, its memory).
    claim_volumes, claim_mounts = one_volume_per_claim(parts.volumes, parts.mounts)
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": settings.tmp_size_limit}}, *claim_volumes]
    mounts = [mount("tmp", "/tmp", False), *claim_mounts]
    if parts.shared_memory:  # torch data loaders and NCCL use /dev/shm; the default 64 MiB is too small
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size_limit}})
        mounts.append(mount("dshm", "/dev/shm", False))
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.runtime_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": parts.command,
        "env": base_env() + parts.env,
        "resources": parts.resources,
        "securityContext": container_security_context(settings),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if parts.ports:
        container["ports"] = parts.ports
    if parts.readiness_probe:
        container["readinessProbe"] = parts.readiness_probe
    spec: dict[str, Any] = {
        "restartPolicy": parts.restart_policy,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(settings),
        "containers": [container],
        "volumes": volumes,
    }
    if parts.subdomain:
        spec["subdomain"] = parts.subdomain
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    if placement.node_selector:
        spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        spec["tolerations"] = [t.to_wire() for t in placement.tolerations]
    pod_meta: dict[str, Any] = {"labels": labels(parent, component)}
    extra = placement.pod_metadata
    if extra and extra.labels:
        pod_meta["labels"] = {**extra.labels, **pod_meta["labels"]}
    if extra and extra.annotations:
        pod_meta["annotations"] = dict(extra.annotations)
    return {"metadata": pod_meta, "spec": spec}


def job(
    parent: Parent,
    name: str,
    component: str,
    template: dict[str, Any],
    backoff_limit: int,
    active_deadline_seconds: Optional[int] = None,
    indexed_completions: Optional[int] = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"backoffLimit": backoff_limit, "template": template}
    if active_deadline_seconds:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    if indexed_completions is not None:
        spec.update(completionMode="Indexed", completions=indexed_completions, parallelism=indexed_completions)
    meta = metadata(parent, name, component)
    if parent.queue_labels:
        meta["labels"].update(parent.queue_labels)
        spec["suspend"] = True
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def flag_value(value: Any) -> str:
    """A CLI value as the runtime's parser reads it (booleans lower-case, floats without noise)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flags(prefix: str, values: dict[str, Any]) -> list[str]:
    """`--<prefix><name> <value>` for every value that is set."""
    out: list[str] = []
    for name, value in values.items():
        if value is not None:
            out += [f"--{prefix}{name}", flag_value(value)]
    return out


def stop_patch(message: str, reason: str) -> dict[str, Any]:
    """A merge patch ending a Job now (its active deadline already past: the Job controller
    terminates its pods and marks it failed), saying why: the parent reads Failed with `reason`."""
    return {"metadata": {"annotations": {STOPPED_ANNOTATION: message, STOPPED_REASON_ANNOTATION: reason}},
            "spec": {"activeDeadlineSeconds": 1}}
