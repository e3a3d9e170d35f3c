"""LitGPTModel: create the cache claim (optional) and the download Job; Ready when it succeeded."""

from __future__ import annotations

from litgpt_operator import observe
from litgpt_operator.api import LITGPT_MODEL
from litgpt_operator.builders.common import Parent
from litgpt_operator.builders.model import build_cache_claim, build_download_job, download_job_name
from litgpt_operator.builders.sources import checkpoint_path
from litgpt_operator.handlers.core import reconciler
from litgpt_operator.handlers.jobs import job_outcome, job_pods, read_job, spec_change_condition, start_job
from litgpt_operator.settings import Settings
from litgpt_operator.status import Cond, Observed


@reconciler(LITGPT_MODEL)
def reconcile_model(body: dict, settings: Settings) -> Observed:
    parent = Parent.from_body(body)
    spec = LITGPT_MODEL.parse_spec(body)
    job_name = download_job_name(parent)
    claim = spec.checkpoint_root_pvc.claim_name
    fields = {"jobName": job_name, "claimName": claim, "checkpointPath": checkpoint_path(spec.repo_id, spec.revision)}
    digest = (body.get("status") or {}).get("digest")
    job, state = read_job(parent, job_name, settings)
    if job is None:
        children = [c for c in (build_cache_claim(parent, spec), build_download_job(parent, spec, settings)) if c]
        job, state = start_job(parent, children, settings)
    phase, conditions = job_outcome(state, "Ready", {"Running": "Downloading", "Succeeded": "Ready"})
    if state.phase == "Succeeded":
        # Kept once read: the download's pods may be garbage-collected later.
        digest = digest or observe.reported_digest(job_pods(parent.namespace, job_name))
        if digest:
            fields["digest"] = digest
        conditions[0] = Cond.of(
            "Ready", True, "CheckpointComplete",
            f"{spec.repo_id} is downloaded to {checkpoint_path(spec.repo_id, spec.revision)} in claim {claim}.",
        )
    spec_change = spec_change_condition("LitGPTModel", parent.generation, job, state)
    return Observed(phase, conditions + ([spec_change] if spec_change else []), fields)
