"""FinetuneJob -> its data check: `litgpt validate_data` in a small CPU Job, before the training Job.

The check reads the data exactly as training will (same volume, path, prompt style, masking and
maximum sequence length) and tokenizes it with the model's tokenizer, torch-free; so it needs the
model claim and the data, both read-only, and no GPU. It runs where the training pods would
(their node selector and tolerations: the claims may be reachable only there), but is not
queued through Kueue: it takes none of the quota Kueue guards, and waiting for GPUs to check a
file would defeat its purpose. Its summary (one JSON line) comes back in the container's
termination message (`litgpt_runtime.validate_data`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


from litgpt_operator.api.finetunejob import FinetuneJobSpec
from litgpt_operator.builders import common as c
from litgpt_operator.builders.finetune import build_data_configmap, data_flags, data_volume
from litgpt_operator.builders.sources import ModelCheckpoint
from litgpt_operator.settings import Settings

COMPONENT = "data-validation"
# It reads text and a tokenizer, never weights: a fraction of a training pod.
RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
# Tokenizing runs at megabytes per second: a check running this long is stuck, not busy.
DEADLINE_SECONDS = 3600
# On the check's Job: what it checks (its command and data volume). A Job whose value differs from
# the spec's checked other data; the operator replaces it (a spec fixed after a failed check).
CHECKS_ANNOTATION = "litgpt.dev/data-check"


def job_name(parent: c.Parent) -> str:
    return c.child_name(parent.name, "validate")


def validate_command(spec: FinetuneJobSpec, model: ModelCheckpoint, json_path: str) -> list[str]:
    command = ["litgpt", "validate_data", model.ref, "--checkpoint_root_dir", c.CHECKPOINT_ROOT,
               *data_flags(spec, json_path)]
    if spec.train.max_seq_length:
        command += ["--max_seq_length", str(spec.train.max_seq_length)]
    return command


def checks(command: list[str], volume: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([command, volume], sort_keys=True).encode()).hexdigest()[:16]


def build_validation_children(
    parent: c.Parent, spec: FinetuneJobSpec, model: ModelCheckpoint, settings: Settings
) -> list[dict[str, Any]]:
    """In apply order: [inline-data ConfigMap], the check's Job."""
    configmap = build_data_configmap(parent, spec)
    volume, json_path = data_volume(parent, spec)
    command = validate_command(spec, model, json_path)
    parts = c.PodParts(
        command=command,
        # Named explicitly (the runtime would also find the kubelet's file): where the summary goes.
        env=[c.termination_log_env()],
        volumes=[c.claim_volume("models", model.claim_name, read_only=True), volume],
        mounts=[c.mount("models", c.MODELS_MOUNT, read_only=True), c.mount("data", c.DATA_MOUNT, read_only=True)],
        resources=RESOURCES,
    )
    template = c.pod_template(parent, COMPONENT, parts, spec, settings)
    unqueued = dataclasses.replace(parent, queue_labels=())
    job = c.job(unqueued, job_name(parent), COMPONENT, template, backoff_limit=0,
                active_deadline_seconds=DEADLINE_SECONDS)
    job["metadata"]["annotations"][CHECKS_ANNOTATION] = checks(command, volume)
    # An evicted check (a node drain) runs again rather than failing the FinetuneJob.
    job["spec"]["podFailurePolicy"] = {"rules": [{"action": "Ignore",
                                                  "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}
    return ([configmap] if configmap else []) + [job]
