"""LitGPTModel: create the cache claim (optional) and the download Job; Ready when it succeeded."""

from __future__ import annotations

from litgpt_operator import kube, observe
from litgpt_operator.api import LITGPT_MODEL
from litgpt_operator.builders.common import Parent
from litgpt_operator.builders.model import build_cache_claim, build_download_job, download_job_name
from litgpt_operator.builders.sources import checkpoint_path
from litgpt_operator.handlers.core import reconciler
from litgpt_operator.handlers.jobs import job_conditions, read_job, spec_change_condition, start_job
from litgpt_operator.handlers import production
from litgpt_operator.settings import Settings
from litgpt_operator.status import Cond, Observed


@reconciler(LITGPT_MODEL)
def reconcile_model(body: dict, settings: Settings, apply_children: bool) -> Observed:
    parent = Parent.from_body(body)
    spec = LITGPT_MODEL.parse_spec(body)
    job_name = download_job_name(parent)
    claim = spec.checkpoint_root_pvc.claim_name
    fields = {"jobName": job_name, "claimName": claim, "checkpointPath": checkpoint_path(spec.repo_id)}
    digest = (body.get("status") or {}).get("digest")
    job, state = read_job(parent.namespace, job_name, settings)
    if job is None:
        children = [c for c in (build_cache_claim(parent, spec), build_download_job(parent, spec, settings)) if c]
        job, state = start_job(parent.namespace, production.prepare_children(body, children, False), settings)
    outcome = job_conditions(state, "Ready", {"Running": "Downloading", "Succeeded": "Ready"})
    if state.phase == "Succeeded":
        # Kept once read: the download's pods may be garbage-collected later.
        digest = digest or observe.reported_digest(kube.list_objects("Pod", parent.namespace, {"batch.kubernetes.io/job-name": job_name}))
        if digest:
            fields["digest"] = digest
        outcome.conditions[0] = Cond.of(
            "Ready", True, "CheckpointComplete",
            f"{spec.repo_id} is downloaded to {checkpoint_path(spec.repo_id)} in claim {claim}.",
        )
    spec_change = spec_change_condition("LitGPTModel", parent.generation, job, state)
    return Observed(outcome.phase, outcome.conditions + ([spec_change] if spec_change else []), fields)
