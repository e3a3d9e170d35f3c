"""LitGPTModel: create the cache claim (optional) and the download Job; Ready when it succeeded.
A model from `source.finetuneRef` waits for that FinetuneJob, checks its output's weights against
the digest the finetune recorded (a verify Job), and is Ready with that checkpoint."""

from __future__ import annotations

from litgpt_operator import observe
from litgpt_operator.api import LITGPT_MODEL
from litgpt_operator.builders.common import Parent
from litgpt_operator.builders.model import (
    build_cache_claim,
    build_download_job,
    build_verify_job,
    download_job_name,
    verify_job_name,
)
from litgpt_operator.builders.sources import checkpoint_path
from litgpt_operator.handlers.core import reconciler
from litgpt_operator.handlers.jobs import (
    claim_wait,
    finetune_dependency,
    job_outcome,
    job_pods,
    may_have_jobs,
    read_job,
    spec_change_condition,
    start_job,
)
from litgpt_operator.settings import Settings
from litgpt_operator.status import Cond, Observed

READY_PHASES = {"Running": "Downloading", "Succeeded": "Ready"}


@reconciler(LITGPT_MODEL)
def reconcile_model(body: dict, settings: Settings) -> Observed:
    spec = LITGPT_MODEL.parse_spec(body)
    if spec.source is not None:
        return reconcile_finetuned_model(body, spec, settings)
    parent = Parent.from_body(body)
    job_name = download_job_name(parent)
    claim = spec.checkpoint_root_pvc.claim_name
    fields = {"jobName": job_name, "claimName": claim, "checkpointPath": checkpoint_path(spec.repo_id, spec.revision),
              "baseRepoId": spec.repo_id}
    digest = (body.get("status") or {}).get("digest")
    job, state = read_job(parent, job_name, settings) if may_have_jobs(body) else (None, None)
    if job is None:
        children = [c for c in (build_cache_claim(parent, spec), build_download_job(parent, spec, settings)) if c]
        job, state = start_job(parent, children, settings)
    state, waiting_for = claim_wait(parent, job, state, settings)
    phase, conditions = job_outcome(state, "Ready", READY_PHASES)
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
    return Observed(phase, conditions + ([spec_change] if spec_change else []), fields, waiting_for=waiting_for)


def reconcile_finetuned_model(body: dict, spec, settings: Settings) -> Observed:
    parent = Parent.from_body(body)
    name = spec.source.finetune_ref.name
    job_name = verify_job_name(parent)
    fields: dict = {"jobName": job_name}
    job, state = read_job(parent, job_name, settings)
    finetune = finetune_dependency(parent.namespace, name, "use as a model")
    output = ((finetune.body or {}).get("status") or {}).get("output") or {}
    if job is None:
        if not finetune.ready:
            ready = Cond.of("Ready", False, finetune.reason, finetune.message, warning=finetune.failed)
            if finetune.failed:
                return Observed("Failed", [ready, Cond.of("Failed", True, finetune.reason, finetune.message,
                                                          warning=True)], fields)
            return Observed("Waiting", [ready], fields, waiting_for=finetune.message)
        if not (output.get("claimName") and output.get("path") and output.get("weightsDigest")):
            message = (f"FinetuneJob {name} recorded no weights digest for its output (status.output.weightsDigest), "
                       "so its weights cannot be checked; run the finetune again with this runtime version.")
            return Observed("Failed", [Cond.of("Ready", False, "LineageMissing", message, warning=True),
                                       Cond.of("Failed", True, "LineageMissing", message, warning=True)], fields)
        job, state = start_job(parent, [build_verify_job(parent, spec, output["claimName"], output["path"],
                                                         output["weightsDigest"], settings)], settings)
    # What the verify Job checked: it was built from these, and a finetune's output never changes.
    args = job["spec"]["template"]["spec"]["containers"][0]["command"]
    expected = args[args.index("--digest") + 1]
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == "models")
    folder = output.get("path") or (body.get("status") or {}).get("checkpointPath")
    fields.update(claimName=claim, checkpointPath=folder, baseRepoId=output.get("baseRepoId")
                  or (body.get("status") or {}).get("baseRepoId"))
    state, waiting_for = claim_wait(parent, job, state, settings)
    phase, conditions = job_outcome(state, "Ready", {"Running": "Verifying", "Succeeded": "Ready"})
    if state.phase == "Succeeded":
        fields["digest"] = expected
        conditions[0] = Cond.of("Ready", True, "WeightsVerified",
                                f"The output of FinetuneJob {name} ({folder} in claim {claim}) has the weights "
                                f"it recorded ({expected}).")
    elif state.phase == "Failed" and state.reason == "ChecksumMismatch":
        message = (f"The weights in {folder} (claim {claim}) are not the ones FinetuneJob {name} recorded "
                   f"({expected}): they were changed or damaged after it finished. Run the finetune again, or "
                   f"point source.finetuneRef at another one. {state.message}")
        conditions = [Cond.of("Ready", False, "ChecksumMismatch", message, warning=True),
                      Cond.of("Failed", True, "ChecksumMismatch", message, warning=True)]
    return Observed(phase, conditions, fields, waiting_for=waiting_for)
