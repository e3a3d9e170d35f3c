"""Pure functions: what the agent knows about a pod's containers → the pod's `status`.

Kept free of I/O so the rules (phase, conditions, container states) are easy to read and test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from litgpt_devcluster.node_agent.clock import now_rfc3339, rfc3339


@dataclass
class Termination:
    exit_code: int
    started_at: float
    finished_at: float
    message: str = ""


@dataclass
class ContainerRun:
    """The agent's record of one container (regular or init) of a pod."""

    name: str
    image: str
    init: bool = False
    started_at: float | None = None  # None: not started (waiting)
    running: bool = False
    ready: bool = False  # running and passing its readiness probe (if it has one)
    terminated: Termination | None = None  # the current run's end, if it ended
    last_termination: Termination | None = None  # the run before a restart
    restart_count: int = 0
    restart_at: float | None = None  # a failed/ended container waiting out its back-off
    waiting_reason: str = "ContainerCreating"
    retry_at: float = 0.0  # after a failed start (missing Secret...), when to try again

    @property
    def done(self) -> bool:
        """Ended and will not be restarted."""
        return self.terminated is not None and self.restart_at is None


@dataclass
class PodRun:
    """Everything the agent tracks for one pod bound to one of its nodes."""

    pod: dict
    containers: list[ContainerRun] = field(default_factory=list)
    start_time: str = field(default_factory=now_rfc3339)
    last_status: dict | None = None

    @property
    def uid(self) -> str:
        return self.pod["metadata"]["uid"]

    @property
    def restart_policy(self) -> str:
        return self.pod["spec"].get("restartPolicy", "Always")

    def init_containers(self) -> list[ContainerRun]:
        return [c for c in self.containers if c.init]

    def app_containers(self) -> list[ContainerRun]:
        return [c for c in self.containers if not c.init]

    def init_failed(self) -> bool:
        return any(c.done and c.terminated.exit_code != 0 for c in self.init_containers())

    def initialized(self) -> bool:
        return all(c.done and c.terminated.exit_code == 0 for c in self.init_containers())

    def phase(self) -> str:
        apps = self.app_containers()
        if self.init_failed():
            return "Failed"
        if not self.initialized():
            return "Pending"
        if apps and all(c.done for c in apps):
            return "Succeeded" if all(c.terminated.exit_code == 0 for c in apps) else "Failed"
        if any(c.started_at is not None for c in apps):
            return "Running"
        return "Pending"


def should_restart(restart_policy: str, exit_code: int, init: bool) -> bool:
    # Init containers follow the pod's policy except that Always means OnFailure for them.
    if restart_policy == "Always" and not init:
        return True
    return restart_policy in ("Always", "OnFailure") and exit_code != 0


def pod_ip(uid: str) -> str:
    """A stable, unique-enough pod address in 10.244.0.0/16 (never contacted; Services and
    EndpointSlices just need a valid non-loopback address)."""
    digest = hashlib.sha256(uid.encode()).digest()
    return f"10.244.{digest[0]}.{max(digest[1], 1)}"


def container_id(run: PodRun, container: ContainerRun) -> str:
    return f"litgpt-agent://{run.uid}/{container.name}/{container.restart_count}"


def _termination(term: Termination, cid: str) -> dict:
    state = {
        "exitCode": term.exit_code,
        "reason": "Completed" if term.exit_code == 0 else "Error",
        "startedAt": rfc3339(term.started_at),
        "finishedAt": rfc3339(term.finished_at),
        "containerID": cid,
    }
    if term.message:
        state["message"] = term.message
    return {"terminated": state}


def container_status(run: PodRun, container: ContainerRun) -> dict:
    cid = container_id(run, container)
    if container.running and container.started_at is not None:
        state = {"running": {"startedAt": rfc3339(container.started_at)}}
    elif container.terminated is not None and container.restart_at is None:
        state = _termination(container.terminated, cid)
    else:
        reason = "CrashLoopBackOff" if container.restart_at is not None else container.waiting_reason
        state = {"waiting": {"reason": reason}}
    status = {
        "name": container.name,
        "image": container.image,
        "imageID": f"litgpt-agent://{container.image}",
        "containerID": cid,
        "ready": container.running and container.ready,
        "started": container.running,
        "restartCount": container.restart_count,
        "state": state,
        "lastState": _termination(container.last_termination, cid) if container.last_termination else {},
    }
    return status


def _merge_conditions(existing: list[dict], ours: dict[str, tuple[str, str]]) -> list[dict]:
    """Our conditions (type → (status, reason)) over the pod's, keeping transition times of
    conditions whose status did not change, and keeping conditions we do not own (PodScheduled,
    readiness gates, DisruptionTarget)."""
    now = now_rfc3339()
    by_type = {c["type"]: c for c in existing}
    for type_, (status, reason) in ours.items():
        old = by_type.get(type_)
        condition = {"type": type_, "status": status, "lastProbeTime": None,
                     "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status
                     and old.get("lastTransitionTime") else now}
        if reason:
            condition["reason"] = reason
        by_type[type_] = condition
    return list(by_type.values())


def pod_status(run: PodRun, host_ip: str = "127.0.0.1") -> dict:
    """The full status the agent reports for `run` (sent as a JSON merge patch: lists whole)."""
    phase = run.phase()
    terminal = phase in ("Succeeded", "Failed")
    initialized = run.initialized()
    apps_ready = not terminal and initialized and all(c.running and c.ready for c in run.app_containers())
    not_ready_reason = "PodCompleted" if terminal else ("" if apps_ready else "ContainersNotReady")
    conditions = _merge_conditions(
        (run.pod.get("status") or {}).get("conditions") or [],
        {
            "PodReadyToStartContainers": ("True", ""),
            "Initialized": ("True" if initialized else "False", "" if initialized else "ContainersNotInitialized"),
            "ContainersReady": ("True" if apps_ready else "False", not_ready_reason),
            "Ready": ("True" if apps_ready else "False", not_ready_reason),
        },
    )
    ip = pod_ip(run.uid)
    status = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": run.start_time,
        "containerStatuses": [container_status(run, c) for c in run.app_containers()],
    }
    if run.init_containers():
        status["initContainerStatuses"] = [container_status(run, c) for c in run.init_containers()]
    return status


def without_volatile(status: dict) -> dict:
    """`status` minus what changes with the clock alone, to decide whether a patch is needed."""
    return {**status, "conditions": sorted(
        ({k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]),
        key=lambda c: c["type"])}
