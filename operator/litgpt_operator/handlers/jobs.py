"""What the three Job-backed kinds share: observing their Job, the spec-change rule, conditions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from litgpt_operator import kube, observe
from litgpt_operator.builders.common import CONTAINER, GENERATION_ANNOTATION
from litgpt_operator.builders.sources import OutputLocation
from litgpt_operator.settings import Settings
from litgpt_operator.status import Cond

# JobState.phase -> the parent's phase, for kinds that run to completion.
JOB_PHASES = {"Pending": "Pending", "Running": "Running", "Succeeded": "Succeeded", "Failed": "Failed",
              "Suspended": "Queued"}


def read_job(namespace: str, job_name: str, settings: Settings) -> tuple[Optional[dict], Optional[observe.JobState]]:
    """The live Job and what it says (with the failed pod's log tail when it failed)."""
    job = kube.get("Job", namespace, job_name)
    if job is None:
        return None, None
    pods = kube.list_objects("Pod", namespace, {"batch.kubernetes.io/job-name": job_name})
    tail = None
    failed_pod = observe.failed_pod_for_logs(job, pods)
    if failed_pod:
        tail = kube.pod_log_tail(namespace, failed_pod, settings.log_tail_lines, CONTAINER)
    return job, observe.job_state(job, pods, tail)


def create_children(children: list[dict]) -> list[dict]:
    """Create what is missing (in order); existing children are left as they are: Jobs are
    immutable, and a finished one must not run again. -> the live objects."""
    return [kube.create_or_get(child)[0] for child in children]


def start_job(namespace: str, children: list[dict], settings: Settings) -> tuple[dict, observe.JobState]:
    """Create the children (the Job last) and read the Job's state."""
    job = create_children(children)[-1]
    state = read_job(namespace, job["metadata"]["name"], settings)[1]
    return job, state


def spec_change_condition(kind: str, generation: int, job: dict, state: observe.JobState) -> Optional[Cond]:
    """SpecApplied=False when the spec changed after the Job was created from an older one."""
    built_from = int((job["metadata"].get("annotations") or {}).get(GENERATION_ANNOTATION, generation))
    if built_from == generation:
        return None
    job_name = job["metadata"]["name"]
    if state.phase in ("Succeeded", "Failed"):
        return Cond.of(
            "SpecApplied", False, "FinishedJobNotRerun",
            f"The spec changed (generation {generation}) after Job {job_name} finished (generation {built_from}); "
            f"a finished {kind} is not re-run. Create a new {kind} (or delete and re-create this one) to run again.",
            warning=True,
        )
    return Cond.of(
        "SpecApplied", False, "RunningJobNotChanged",
        f"The spec changed (generation {generation}) while Job {job_name} runs (generation {built_from}); "
        f"a running Job cannot change, so it continues as started. Delete and re-create the {kind} to apply it.",
        warning=True,
    )


@dataclass
class JobOutcome:
    phase: str
    conditions: list[Cond]


def job_conditions(state: observe.JobState, success_type: str = "Succeeded",
                   phase_names: Optional[dict[str, str]] = None) -> JobOutcome:
    """Phase and the success/failure conditions of a Job-backed object."""
    phases = {**JOB_PHASES, **(phase_names or {})}
    phase = phases[state.phase]
    succeeded = state.phase == "Succeeded"
    conditions = [Cond.of(success_type, succeeded, state.reason, state.message,
                          warning=not succeeded and state.reason in observe.STUCK_WAITING)]
    if state.phase == "Failed":
        conditions.append(Cond.of("Failed", True, state.reason, state.message, warning=True))
    return JobOutcome(phase, conditions)


@dataclass(frozen=True)
class Dependency:
    """A referenced object and whether it is ready for us."""

    ready: bool
    reason: str
    message: str
    body: Optional[dict] = None


def model_dependency(namespace: str, name: str) -> Dependency:
    body = kube.get("LitGPTModel", namespace, name)
    if body is None:
        return Dependency(False, "ModelNotFound", f"LitGPTModel {name} does not exist (yet).")
    phase = (body.get("status") or {}).get("phase")
    if phase != "Ready":
        return Dependency(False, "ModelNotReady", f"Waiting for LitGPTModel {name} to be Ready (it is {phase or 'Pending'}).", body)
    return Dependency(True, "ModelReady", f"LitGPTModel {name} is Ready.", body)


def output_fields(job: dict) -> dict[str, Optional[str]]:
    """outputClaimName/outputPath of a training kind's status, read from its Job."""
    output = OutputLocation.from_annotations(job["metadata"].get("annotations") or {})
    return {"outputClaimName": output.claim_name if output else None, "outputPath": output.path if output else None}
