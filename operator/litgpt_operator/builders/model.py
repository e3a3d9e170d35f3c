"""LitGPTModel -> the model cache claim (optional) and the download Job; for a model that is a
FinetuneJob's output, the Job checking its weights against the finetune's digest."""

from __future__ import annotations

from typing import Any, Optional

from litgpt_operator.api.litgptmodel import LitGPTModelSpec
from litgpt_operator.builders import common as c
from litgpt_operator.settings import Settings

from litgpt_runtime.errors import IntegrityError  # torch-free: the exit-code contract

COMPONENT = "download"
VERIFY_COMPONENT = "verify"
# litgpt_runtime.errors: 1 user error, 2 usage error, 3 AccessDenied (401/403), 4 NotFound (404).
FINAL_DOWNLOAD_EXIT_CODES = [1, 2, 3, 4]
# `litgpt verify`: 1 not a complete checkpoint, 6 weights differ: another pod would find the same.
FINAL_VERIFY_EXIT_CODES = [1, 2, IntegrityError.exit_code]


def download_job_name(parent: c.Parent) -> str:
    return c.child_name(parent.name, "download")


def verify_job_name(parent: c.Parent) -> str:
    return c.child_name(parent.name, "verify")


def build_cache_claim(parent: c.Parent, spec: LitGPTModelSpec) -> Optional[dict[str, Any]]:
    """The claim, when the spec asks the operator to create it (a size is given).

    Not owned by the model: it is a cache other LitGPTModels may share, and deleting one model
    must not delete the others' weights.
    """
    pvc = spec.checkpoint_root_pvc
    if pvc.size is None:
        return None
    claim_spec: dict[str, Any] = {"accessModes": [pvc.access_mode], "resources": {"requests": {"storage": pvc.size}}}
    if pvc.storage_class_name:
        claim_spec["storageClassName"] = pvc.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": c.metadata(parent, pvc.claim_name, "model-cache", owned=False),
        "spec": claim_spec,
    }


def download_command(spec: LitGPTModelSpec) -> list[str]:
    command = ["litgpt", "download", spec.repo_id, "--checkpoint_root_dir", c.CHECKPOINT_ROOT]
    if spec.revision:
        command += ["--revision", spec.revision]
    return command


def build_download_job(parent: c.Parent, spec: LitGPTModelSpec, settings: Settings) -> dict[str, Any]:
    env = []
    if spec.token_secret_ref:
        # The token only ever travels as a reference: never in args, status or events.
        ref = spec.token_secret_ref
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    if settings.hf_endpoint:
        env.append(c.env_var("HF_ENDPOINT", settings.hf_endpoint))
    env.append(c.termination_log_env())  # the weights digest, for status.digest
    parts = c.PodParts(
        command=download_command(spec),
        env=env,
        volumes=[c.claim_volume("models", spec.checkpoint_root_pvc.claim_name, read_only=False)],
        mounts=[c.mount("models", c.MODELS_MOUNT, read_only=False)],
        resources=c.resources(spec.resources, settings),
    )
    template = c.pod_template(parent, COMPONENT, parts, spec, settings)
    job = c.job(parent, download_job_name(parent), COMPONENT, template, spec.backoff_limit)
    # A refusal (bad token, gated repo, no such repo or revision) or a usage error ends the Job at
    # once: another pod would be refused the same way. Stalls and checksum mismatches stay
    # retryable (the runtime already retried the stall with back-off; a bad file was deleted).
    job["spec"]["podFailurePolicy"] = {"rules": [c.fail_job_on_exit_codes(FINAL_DOWNLOAD_EXIT_CODES)]}
    return job


def build_verify_job(parent: c.Parent, spec: LitGPTModelSpec, claim: str, folder: str, digest: str,
                     settings: Settings) -> dict[str, Any]:
    """`litgpt verify /models/<folder> --digest <digest>` with the claim mounted read-only: the
    model is Ready only with the weights the finetune recorded; the digest is left in the
    termination log (as a download's)."""
    parts = c.PodParts(
        command=["litgpt", "verify", f"{c.MODELS_MOUNT}/{folder}", "--digest", digest],
        env=[c.termination_log_env()],
        volumes=[c.claim_volume("models", claim, read_only=True)],
        mounts=[c.mount("models", c.MODELS_MOUNT, read_only=True)],
        resources=c.resources(spec.resources, settings),
    )
    template = c.pod_template(parent, VERIFY_COMPONENT, parts, spec, settings)
    job = c.job(parent, verify_job_name(parent), VERIFY_COMPONENT, template, spec.backoff_limit)
    job["spec"]["podFailurePolicy"] = {"rules": [c.fail_job_on_exit_codes(FINAL_VERIFY_EXIT_CODES)]}
    return job
