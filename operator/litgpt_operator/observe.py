"""Pure reading of children: a Job (+ its pods) or a Deployment -> what the parent should say.

Failures carry their reason: a pod's waiting reason (ImagePullBackOff, CreateContainerConfigError),
a container's termination (OOMKilled, exit code, the runtime's termination message), eviction,
unschedulable; plus, when the handler could fetch it, the tail of the pod's log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from litgpt_runtime.errors import EXIT_REASONS  # torch-free: the runtime's exit-code contract

# Waiting reasons that mean "this will not start by itself".
STUCK_WAITING = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
}
# Hugging Face tokens must never reach status or events, even through a log line.
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{8,}")


def redact(text: str) -> str:
    return _TOKEN.sub("hf_***", text)


def as_displayed(log: str) -> str:
    """A log as a terminal shows it: of a line rewritten with carriage returns (progress bars),
    only its last state."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in log.replace("\r\n", "\n").split("\n"))


@dataclass(frozen=True)
class PodProblem:
    pod: str
    reason: str
    message: str
    terminated: bool  # the container ran and ended badly (its log is worth quoting)


def _termination_problem(pod_name: str, container: str, term: dict) -> Optional[PodProblem]:
    code = term.get("exitCode", 0)
    if code == 0 and term.get("reason") not in ("OOMKilled", "DeadlineExceeded"):
        return None
    reason = term.get("reason") or "Error"
    if reason in ("Error", "Completed"):
        # The runtime's own exit codes name the cause (AccessDenied, NotFound, ...: EXIT_REASONS).
        reason = EXIT_REASONS.get(code, "NonZeroExitCode")
    message = f"container {container} of pod {pod_name} exited with code {code}"
    if term.get("reason") == "OOMKilled":
        message += " (OOMKilled: out of memory; raise the memory limit or lower train.microBatchSize)"
    elif code == 137:
        message += " (killed, SIGKILL)"
    detail = (term.get("message") or "").strip()
    if detail:
        message += f": {detail}"
    return PodProblem(pod_name, reason, redact(message), terminated=True)


def pod_problem(pod: dict) -> Optional[PodProblem]:
    """The most telling reason this pod is not (or no longer) doing its work, if any."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            return PodProblem(name, waiting["reason"], redact(f"container {cs['name']} of pod {name} is waiting: "
                                                              f"{waiting['reason']}{detail}"), terminated=False)
        for term in (state.get("terminated"), (cs.get("lastState") or {}).get("terminated")):
            if term:
                problem = _termination_problem(name, cs["name"], term)
                if problem:
                    return problem
    if status.get("reason") in ("Evicted", "DeadlineExceeded", "Preempting", "UnexpectedAdmissionError"):
        return PodProblem(name, status["reason"], redact(f"pod {name}: {status.get('message', status['reason'])}"),
                          terminated=True)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason"):
            return PodProblem(name, cond["reason"], f"pod {name} cannot be scheduled: {cond.get('message', '')}",
                              terminated=False)
    return None


def first_problem(pods: list[dict]) -> Optional[PodProblem]:
    """Failed pods first (the cause of a Job failure), then stuck ones; newest first."""
    ordered = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    problems = [p for p in (pod_problem(pod) for pod in ordered) if p]
    terminated = [p for p in problems if p.terminated]
    return (terminated or problems or [None])[0]


_DIGEST = re.compile(r"weights digest: (sha256:[0-9a-f]{64})")


def success_messages(pods: list[dict]) -> list[str]:
    """Termination messages of containers that exited 0, newest pod first (what the runtime
    reports on success: a download's digest, a finetune's lineage)."""
    out = []
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("exitCode") == 0 and term.get("message"):
                out.append(term["message"])
    return out


def reported_digest(pods: list[dict]) -> Optional[str]:
    """The checkpoint digest a successful download (or `litgpt verify`) left in its termination
    message (`weights digest: sha256:<hex>`)."""
    for message in success_messages(pods):
        found = _DIGEST.search(message)
        if found:
            return found.group(1)
    return None


def reported_lineage(pods: list[dict]) -> Optional[dict]:
    """The lineage record a successful finetune left in its termination message."""
    from litgpt_runtime.lineage import parse_termination  # stdlib only

    for message in success_messages(pods):
        record = parse_termination(message)
        if record is not None:
            return record
    return None


@dataclass(frozen=True)
class JobState:
    phase: str  # Pending | Running | Succeeded | Failed | Suspended
    reason: str
    message: str
    start_time: Optional[str] = None
    completion_time: Optional[str] = None


def _job_condition(job: dict, type_: str) -> Optional[dict]:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def job_state(job: dict, pods: list[dict], log_tail: Optional[str] = None) -> JobState:
    """What a Job and its pods say. `log_tail`: last lines of the failed pod's log, if fetched."""
    name = job["metadata"]["name"]
    status = job.get("status") or {}
    times = dict(start_time=status.get("startTime"), completion_time=status.get("completionTime"))
    if _job_condition(job, "Complete"):
        return JobState("Succeeded", "JobSucceeded", f"Job {name} completed.", **times)
    failed = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if failed:
        problem = first_problem(pods)
        detail = failed.get("message")
        message = f"Job {name} failed: {failed.get('reason', 'Failed')}" + (f" ({detail})" if detail else "")
        reason = failed.get("reason") or "JobFailed"
        if problem:
            reason = problem.reason
            message += f"; {problem.message}"
        if log_tail:
            message += f"\nLast lines of the log:\n{redact(as_displayed(log_tail))}"
        return JobState("Failed", reason, message, **times)
    if _job_condition(job, "Suspended") or (job.get("spec") or {}).get("suspend"):
        return JobState("Suspended", "JobSuspended", f"Job {name} is suspended (waiting for admission).", **times)
    problem = first_problem(pods)
    if problem and not problem.terminated:
        return JobState("Pending", problem.reason, problem.message, **times)
    phases = [(p.get("status") or {}).get("phase") for p in pods]
    if "Running" in phases or "Succeeded" in phases:
        # A pod that succeeded before the Job controller marks the Job Complete is still "running"
        # for the parent: falling back to Pending in between would be a false transition. Nor does
        # the message change then (a status write, and no news: the Job's completion follows).
        started = phases.count("Running") + phases.count("Succeeded")
        return JobState("Running", "JobRunning", f"Job {name} is running ({started} pod(s) started).", **times)
    if problem:  # a pod failed and the Job is retrying it
        return JobState("Running", "Retrying", f"Job {name} is retrying after: {problem.message}", **times)
    return JobState("Pending", "PodsPending", f"Job {name}: waiting for its pods to start.", **times)


def failed_pod_for_logs(job: dict, pods: list[dict]) -> Optional[str]:
    """The pod whose log explains a failure (None when the Job has not failed)."""
    if not (_job_condition(job, "Failed") or _job_condition(job, "FailureTarget")):
        return None
    problem = first_problem(pods)
    return problem.pod if problem and problem.terminated else None


def crash_problem(pod: dict) -> Optional[PodProblem]:
    """Why a long-running container keeps ending, if it does: its last termination (the runtime's
    own message: a checksum mismatch, an adapter that does not fit), noting the back-off."""
    name = pod["metadata"]["name"]
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        term = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
        problem = _termination_problem(name, cs["name"], term) if term else None
        waiting = (state.get("waiting") or {}).get("reason")
        if problem is None and waiting == "CrashLoopBackOff":
            return PodProblem(name, waiting, f"container {cs['name']} of pod {name} is in CrashLoopBackOff", True)
        if problem is None:
            continue
        restarts = cs.get("restartCount", 0)
        if waiting == "CrashLoopBackOff" or restarts:
            note = f" (restarted {restarts} time(s){', now in CrashLoopBackOff' if waiting == 'CrashLoopBackOff' else ''})"
            return PodProblem(name, problem.reason, problem.message + note, terminated=True)
        return problem
    return None


@dataclass(frozen=True)
class DeploymentState:
    phase: str  # Progressing | Ready | Degraded | Failed
    reason: str
    message: str
    replicas: int
    available: int


def deployment_state(deployment: dict, pods: list[dict], current_pods: Optional[list[dict]] = None) -> DeploymentState:
    """`current_pods`: the pods of the Deployment's current template (default: all of them). Ready
    needs the rollout of the current template done; a current pod that keeps crashing makes it
    Failed, or Degraded while other pods still answer."""
    current_pods = pods if current_pods is None else current_pods
    name = deployment["metadata"]["name"]
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    desired = spec.get("replicas", 1)
    available = status.get("availableReplicas", 0) or 0
    replicas = status.get("replicas", 0) or 0
    updated = status.get("updatedReplicas", 0) or 0
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    current = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    progressing = conditions.get("Progressing", {})
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        problem = first_problem(pods)
        message = f"Deployment {name} did not become ready in time"
        message += f": {problem.message}" if problem else "."
        return DeploymentState("Failed", problem.reason if problem else "ProgressDeadlineExceeded", message,
                               replicas, available)
    rolled_out = current and updated >= desired and replicas == updated
    if rolled_out and available >= desired:  # every pod is of the current template, and answers
        return DeploymentState("Ready", "ReplicasAvailable", f"{available}/{desired} replica(s) available.",
                               replicas, available)
    crashing = next((p for p in (crash_problem(pod) for pod in current_pods) if p), None)
    if crashing:
        if available:
            return DeploymentState("Degraded", crashing.reason,
                                   f"{available}/{desired} replica(s) answer, but a pod of the current spec keeps "
                                   f"failing: {crashing.message}", replicas, available)
        return DeploymentState("Failed", crashing.reason, f"Deployment {name} has no pod that answers: "
                                                          f"{crashing.message}", replicas, available)
    problem = first_problem(pods)
    if problem:
        return DeploymentState("Progressing", problem.reason, problem.message, replicas, available)
    return DeploymentState("Progressing", "RollingOut",
                           f"{available}/{desired} replica(s) available, {updated} updated.", replicas, available)
