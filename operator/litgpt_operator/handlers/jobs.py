"""What the three Job-backed kinds share: their Job (read, created, observed), the models they wait
for, the spec-change rule, and the one reconcile of the training kinds (FinetuneJob, PretrainJob).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from litgpt_runtime import progress_record  # torch-free: the runtime's progress record, read here

from litgpt_operator import datacheck, fitcheck, kube, observe, progress
from litgpt_operator.builders.common import (
    CONTAINER,
    GENERATION_ANNOTATION,
    STOPPED_ANNOTATION,
    STOPPED_REASON_ANNOTATION,
    Parent,
    stop_patch,
)
from litgpt_operator.builders.sources import ModelCheckpoint, OutputLocation
from litgpt_operator.builders.validation import CHECKS_ANNOTATION
from litgpt_operator.handlers.children import create_children, get_ours
from litgpt_operator.settings import Settings
from litgpt_operator.status import FALSE, UNKNOWN, Cond, Observed

# JobState.phase -> the parent's phase, for kinds that run to completion.
JOB_PHASES = {"Pending": "Pending", "Running": "Running", "Succeeded": "Succeeded", "Failed": "Failed",
              "Suspended": "Queued"}
# A log read for a status stops here (the kubelet's limitBytes): a few step lines, or a failure's last lines.
LOG_LIMIT_BYTES = 16 * 1024
# Enough for the newest progress record: the runtime writes it beside each human step line.
PROGRESS_LOG_LINES = 20


def job_pods(namespace: str, job_name: str) -> list[dict]:
    return kube.list_objects("Pod", namespace, {"batch.kubernetes.io/job-name": job_name})


def read_job(parent: Parent, job_name: str, settings: Settings) -> tuple[Optional[dict], Optional[observe.JobState]]:
    """Our live Job and what it says (with the failed pod's log tail when it failed).
    InTheWay when a Job of that name is not ours."""
    job = get_ours("Job", parent, job_name)
    if job is None:
        return None, None
    pods = job_pods(parent.namespace, job_name)
    tail = None
    failed_pod = observe.failed_pod_for_logs(job, pods)
    if failed_pod:
        tail = kube.pod_log_tail(parent.namespace, failed_pod, settings.log_tail_lines, CONTAINER, LOG_LIMIT_BYTES)
    return job, observe.job_state(job, pods, tail)


# uids of objects whose Jobs this process created before any status said so (a new object's first
# reconcile in a burst leaves its status write to the next one: handlers/core.py); that next one
# looks first rather than sending creates that only conflict. Forgotten once a status says so.
_created_unrecorded: set[str] = set()


def forget_created() -> None:
    _created_unrecorded.clear()


def forget_created_by(uid: str) -> None:
    """The object is gone (maybe before any status said it had Jobs)."""
    _created_unrecorded.discard(uid)


def may_have_jobs(body: dict) -> bool:
    """Whether a Job-backed object may have Jobs already: not when it was never reconciled (no
    status) or last said it waits for a dependency (no Job is created before it settles), unless
    this process created them. Then its Jobs are created without looking first (a request fewer
    each before its first child, what a burst of new objects queues for); one that exists all the
    same (a reconcile that ended before its status write, in another process) is found by the
    create's conflict, read, and checked to be ours."""
    uid = body["metadata"].get("uid")
    if (body.get("status") or {}).get("phase") not in (None, "Waiting"):
        _created_unrecorded.discard(uid)
        return True
    return uid in _created_unrecorded


def start_job(parent: Parent, children: list[dict], settings: Settings) -> tuple[dict, observe.JobState]:
    """Create the children (the Job last) and read the Job's state. A Job this call created is
    not read back and has no pods yet (its pods' events reconcile again): two requests fewer in a
    first reconcile, which is what a burst of new objects queues for."""
    job, created = create_children(children, parent)[-1]
    if created:
        _created_unrecorded.add(parent.uid)
        return job, observe.job_state(job, [])
    return job, read_job(parent, job["metadata"]["name"], settings)[1]


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


def job_outcome(state: observe.JobState, success_type: str = "Succeeded",
                phase_names: Optional[dict[str, str]] = None) -> tuple[str, list[Cond]]:
    """Phase and the success/failure conditions of a Job-backed object."""
    phase = {**JOB_PHASES, **(phase_names or {})}[state.phase]
    succeeded = state.phase == "Succeeded"
    conditions = [Cond.of(success_type, succeeded, state.reason, state.message,
                          warning=not succeeded and state.reason in observe.STUCK_WAITING)]
    if state.phase == "Failed":
        conditions.append(Cond.of("Failed", True, state.reason, state.message, warning=True))
    return phase, conditions


@dataclass(frozen=True)
class Dependency:
    """A referenced object and whether it is ready for us; `failed`: it never will be."""

    ready: bool
    reason: str
    message: str
    body: Optional[dict] = None
    failed: bool = False

    def unmet(self, ready_type: str, waiting_type: str, fields: dict) -> Observed:
        """What a dependent says while this dependency is not ready: Waiting (retried), or Failed
        (terminal: no retry; a later change of the dependency wakes it through the indexes)."""
        cond = Cond.of(ready_type, False, self.reason, self.message, warning=self.failed)
        if self.failed:
            return Observed("Failed", [cond, Cond.of(waiting_type, False, self.reason, self.message),
                                       Cond.of("Failed", True, self.reason, self.message, warning=True)], fields)
        waiting = Cond.of(waiting_type, False, "WaitingForModel", self.message)
        return Observed("Waiting", [cond, waiting], fields, waiting_for=self.message)


def model_dependency(namespace: str, name: str) -> Dependency:
    body = kube.get("LitGPTModel", namespace, name)
    if body is None:
        return Dependency(False, "ModelNotFound", f"LitGPTModel {name} does not exist (yet).")
    phase = (body.get("status") or {}).get("phase")
    if phase == "Failed":
        return Dependency(False, "ModelFailed", f"LitGPTModel {name} failed, so this cannot run: fix or re-create "
                                                "the model (its status says why); this object then continues.",
                          body, failed=True)
    if phase != "Ready":
        return Dependency(False, "ModelNotReady", f"Waiting for LitGPTModel {name} to be Ready.", body)
    return Dependency(True, "ModelReady", f"LitGPTModel {name} is Ready.", body)


def finetune_dependency(namespace: str, name: str, purpose: str) -> Dependency:
    """A FinetuneJob whose output something uses (`purpose`: "serve", "use as a model").

    The waiting messages do not repeat the dependency's phase (its own status has it): each of its
    transitions would rewrite every dependent's status."""
    body = kube.get("FinetuneJob", namespace, name)
    if body is None:
        return Dependency(False, "FinetuneNotFound", f"FinetuneJob {name} does not exist (yet).")
    phase = (body.get("status") or {}).get("phase")
    if phase == "Failed":
        return Dependency(False, "FinetuneFailed", f"FinetuneJob {name} failed, so there is nothing to {purpose}: "
                                                   "fix and re-create it (its status says why).", body, failed=True)
    if phase != "Succeeded":
        return Dependency(False, "FinetuneNotSucceeded", f"Waiting for FinetuneJob {name} to succeed.", body)
    return Dependency(True, "FinetuneSucceeded", f"FinetuneJob {name} succeeded.", body)


def output_fields(job: dict) -> dict[str, Optional[str]]:
    """outputClaimName/outputPath of a training kind's status, read from its Job."""
    output = OutputLocation.from_annotations(job["metadata"].get("annotations") or {})
    return {"outputClaimName": output.claim_name if output else None, "outputPath": output.path if output else None}


def training_fields(namespace: str, job_name: str, previous_status: dict, phase: str,
                    output: Optional[OutputLocation]) -> dict[str, Any]:
    """attempts/currentPod always; resumedStep, progress and lastCheckpoint from the newest pod's
    log tail while the Job runs, and once more when it has just finished (its last checkpoint)."""
    fields: dict[str, Any] = progress.track_attempts(previous_status, job_pods(namespace, job_name))
    for key in ("resumedStep", "progress", "lastCheckpoint"):
        fields[key] = previous_status.get(key)
    finished = phase in ("Succeeded", "Failed")
    just_finished = finished and previous_status.get("phase") not in ("Succeeded", "Failed")
    if (phase == "Running" or just_finished) and fields.get("currentPod"):
        log = kube.pod_log_tail(namespace, fields["currentPod"], PROGRESS_LOG_LINES, CONTAINER, LOG_LIMIT_BYTES)
        record = progress_record.latest(log)
        if record is not None:
            fields["progress"] = progress.status_progress(record)
            if record.resumed_from_step is not None:
                fields["resumedStep"] = record.resumed_from_step
        fields["lastCheckpoint"] = progress.last_checkpoint(record, output) or fields["lastCheckpoint"]
    return fields


def stopped_state(job: dict, state: observe.JobState) -> observe.JobState:
    """A Job the operator stopped (`stop_patch`) reads as failed, with the reason it was stopped
    for, from the moment it was stopped (its pods are being terminated)."""
    annotations = job["metadata"].get("annotations") or {}
    stopped = annotations.get(STOPPED_ANNOTATION)
    if not stopped:
        return state
    message = f"{stopped} {state.message}" if state.phase == "Failed" else stopped
    return dataclasses.replace(state, phase="Failed",
                               reason=annotations.get(STOPPED_REASON_ANNOTATION, "ResumeBudgetExhausted"),
                               message=message)


def within_resume_budget(parent: Parent, job: dict, state: observe.JobState, attempts: Optional[int],
                         settings: Settings) -> observe.JobState:
    """A training Job resumed after more evictions (or lost nodes) than `settings.resume_budget`
    is stopped (the Job controller ignores disruptions without bound), and reads as failed with
    reason ResumeBudgetExhausted."""
    if (job["metadata"].get("annotations") or {}).get(STOPPED_ANNOTATION):
        return stopped_state(job, state)
    # Pods beyond the first that the Job's failure count does not explain: resumed disruptions.
    resumes = (attempts or 1) - 1 - int((job.get("status") or {}).get("failed") or 0)
    if state.phase in ("Pending", "Running") and resumes > settings.resume_budget:
        message = (f"Job {job['metadata']['name']} was stopped after {resumes} resumes from evictions or lost "
                   f"nodes (the operator's resume budget is {settings.resume_budget}); find out why its pods "
                   "are evicted (node pressure, preemption), then delete and re-create the object.")
        kube.patch("Job", parent.namespace, job["metadata"]["name"], stop_patch(message, "ResumeBudgetExhausted"),
                   job["metadata"]["uid"])
    return state


def claim_wait(parent: Parent, job: dict, state: observe.JobState, settings: Settings,
               now: Optional[datetime] = None) -> tuple[observe.JobState, Optional[str]]:
    """A Job whose pods wait for a claim that is not bound (or does not exist): -> (its state with
    reason ClaimNotBound, what to re-check) for `settings.claim_bind_timeout_seconds` after the Job
    was created; then the Job is stopped and reads as Failed/ClaimNotBound (the pods would
    otherwise stay Pending, and the parent with them, without end)."""
    if state.phase != "Pending" or (job["metadata"].get("annotations") or {}).get(STOPPED_ANNOTATION):
        return stopped_state(job, state), None
    if not job.get("status"):
        # The Job controller has not seen it yet (just created): no pod waits for anything yet,
        # and its first status update reconciles again.
        return state, None
    pod = (job.get("spec") or {}).get("template", {}).get("spec") or {}
    names = sorted({v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes") or []
                    if v.get("persistentVolumeClaim")})
    problems = []
    for name in names:
        claim = kube.get("PersistentVolumeClaim", parent.namespace, name)
        if claim is None:
            problems.append(f"claim {name} does not exist")
        elif (claim.get("status") or {}).get("phase") != "Bound":
            storage_class = (claim.get("spec") or {}).get("storageClassName")
            problems.append(f"claim {name} is not bound"
                            + (f" (storage class {storage_class})" if storage_class else " (default storage class)"))
    if not problems:
        return state, None
    created = datetime.strptime(job["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    waited = ((now or datetime.now(timezone.utc)) - created).total_seconds()
    what = "; ".join(problems)
    limit = settings.claim_bind_timeout_seconds
    if waited < limit:
        message = f"Job {job['metadata']['name']}'s pods wait: {what} ({waited:.0f} s of {limit:.0f} s)."
        return dataclasses.replace(state, reason="ClaimNotBound", message=message), message
    message = (f"{what[0].upper()}{what[1:]} after {limit:.0f} s, so Job {job['metadata']['name']} was stopped. "
               "Check that the storage class exists and its provisioner runs (kubectl describe pvc), or create "
               f"the claim; then delete and re-create this {parent.kind}.")
    kube.patch("Job", parent.namespace, job["metadata"]["name"], stop_patch(message, "ClaimNotBound"),
               job["metadata"]["uid"])
    return dataclasses.replace(state, phase="Failed", reason="ClaimNotBound", message=message), None


def previous_condition(body: dict, type_: str) -> Optional[Cond]:
    """A condition as the last reconcile wrote it (kept while it cannot be recomputed)."""
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return Cond(type_, cond["status"], cond.get("reason", ""), cond.get("message", ""))
    return None


@dataclass(frozen=True)
class DataCheck:
    """A check of the training data that runs (as a Job) before the training Job."""

    strict: bool  # a failed check ends the object Failed (else: DataValidated=False, and it trains)
    children: list[dict]  # in creation order, the check's Job last


@dataclass(frozen=True)
class TrainingRun:
    """What a training kind decides once the models it reads are Ready."""

    model: Any  # what the fit check sizes: a repo id or short name, or an inline model config
    children: list[dict]  # in creation order, the Job last
    data_check: Optional[DataCheck] = None


@dataclass(frozen=True)
class DataChecked:
    condition: Cond
    fields: dict[str, Any]
    passed: bool
    finished: bool


def check_data(parent: Parent, check: DataCheck, settings: Settings, look_first: bool = True) -> DataChecked:
    """Run the data check (create its Job when missing) and say what it found so far.
    `look_first`: read its Job before creating it (else `start_job` finds an existing one)."""
    wanted = check.children[-1]["metadata"]
    name = wanted["name"]
    job, state = read_job(parent, name, settings) if look_first else (None, None)
    if job is None:
        job, state = start_job(parent, check.children, settings)
    if (job["metadata"].get("annotations") or {}).get(CHECKS_ANNOTATION) != wanted["annotations"][CHECKS_ANNOTATION]:
        # The spec now asks for other data (or reads it otherwise): that Job's verdict is not about
        # it. Replaced: the deletion's event reconciles again, which creates the new check.
        kube.delete("Job", parent.namespace, name, uid=job["metadata"]["uid"])
        cond = Cond(datacheck.CONDITION, UNKNOWN, "DataChanged", f"The data to check changed; Job {name} checks it again.")
        return DataChecked(cond, {}, passed=False, finished=False)
    found = datacheck.summary(job_pods(parent.namespace, name))
    cond = datacheck.condition(state, found, name, check.strict)
    return DataChecked(cond, {"dataValidation": datacheck.status_fields(found)}, passed=cond.status == "True",
                       finished=state.phase in ("Succeeded", "Failed"))


def reconcile_training(body: dict, spec: Any, settings: Settings, job_name: str, refs: dict[str, str],
                       plan: Callable[[dict[str, ModelCheckpoint]], TrainingRun], method: str,
                       lora: Any = None) -> Observed:
    """The reconcile of a training kind: wait for the referenced LitGPTModels (`refs`: role ->
    name), check that the run fits, check its data (when the plan has a check), create the Job
    from `plan(models by role)`, then follow it."""
    parent = Parent.from_body(body)
    previous = body.get("status") or {}
    fields: dict[str, Any] = {"jobName": job_name}
    look_first = may_have_jobs(body)
    job, state = read_job(parent, job_name, settings) if look_first else (None, None)
    names = sorted(set(refs.values()))
    models_ready = Cond.of("ModelReady", True, "ModelReady", f"LitGPTModel {', '.join(names)} "
                                                             f"{'was' if len(names) == 1 else 'were'} Ready when Job "
                                                             f"{job_name} was created.")
    before: list[Cond] = [models_ready] if refs else []
    if job is None:
        models: dict[str, ModelCheckpoint] = {}
        for role, name in refs.items():
            model = model_dependency(parent.namespace, name)
            if not model.ready:
                return model.unmet("ModelReady", "Succeeded", fields)
            models[role] = ModelCheckpoint.from_body(model.body)
        run = plan(models)
        fit = fitcheck.resources_fit(body, run.model, method, spec, lora, settings.gpu_memory_gb)
        if fit is not None and fit.status == FALSE:
            refused = Cond.of("Succeeded", False, fit.reason, "No Job was created: " + fit.message, warning=True)
            return Observed("Failed", [*before, fit, refused], fields)
        before += [fit] if fit else []
        children = run.children
        if run.data_check is not None:
            checked = check_data(parent, run.data_check, settings, look_first)
            fields.update(checked.fields)
            before.append(checked.condition)
            if not checked.finished:
                waiting = Cond.of("Succeeded", False, "ValidatingData", checked.condition.message)
                return Observed("Validating", [*before, waiting], fields)
            if not checked.passed and run.data_check.strict:
                message = checked.condition.message
                return Observed("Failed", [*before, Cond.of("Succeeded", False, checked.condition.reason, message),
                                           Cond.of("Failed", True, checked.condition.reason, message, warning=True)],
                                fields)
            # What the finished check read (the inline-data ConfigMap, named by its content) exists:
            # ours, it lives as long as this object; creating it again would only conflict.
            checked_on = {(c["kind"], c["metadata"]["name"]) for c in run.data_check.children}
            children = [c for c in children if (c["kind"], c["metadata"]["name"]) not in checked_on]
        job, state = start_job(parent, children, settings)
    else:
        # Decided before the Job was created; kept as they were then.
        before += [c for c in (previous_condition(body, fitcheck.CONDITION),
                               previous_condition(body, datacheck.CONDITION)) if c]
        fields["dataValidation"] = previous.get("dataValidation")
    fields.update(output_fields(job), startTime=state.start_time, completionTime=state.completion_time)
    output = OutputLocation.from_annotations(job["metadata"].get("annotations") or {})
    fields.update(training_fields(parent.namespace, job_name, previous, state.phase, output))
    state = within_resume_budget(parent, job, state, fields.get("attempts"), settings)
    state, waiting_for = claim_wait(parent, job, state, settings)
    phase, outcome = job_outcome(state)
    spec_change = spec_change_condition(parent.kind, parent.generation, job, state)
    resumed = progress.resumed_condition(fields.get("resumedStep"), fields.get("attempts"), fields.get("lastCheckpoint"))
    conditions = [*before, *outcome, *([resumed] if resumed else []), *([spec_change] if spec_change else [])]
    return Observed(phase, conditions, fields, waiting_for=waiting_for)
