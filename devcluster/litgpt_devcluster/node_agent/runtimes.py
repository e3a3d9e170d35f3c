"""Container runtimes of the node agent: how a container "runs".

A runtime starts one container at a time, says whether it has ended (`poll`), and stops a pod's
containers. The agent owns the pod's lifecycle (init order, restarts, status); a runtime knows
nothing about the API except what it needs to build a container's environment.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Protocol

from litgpt_devcluster.node_agent.status import ContainerRun, PodRun, Termination

# Annotations a test puts on a pod (or a Job's pod template) to script simulated containers.
EXIT_CODE_ANNOTATION = "node-agent.litgpt.dev/exit-code"
RUN_SECONDS_ANNOTATION = "node-agent.litgpt.dev/run-seconds"


class StartError(Exception):
    """The container cannot start (missing Secret key, no command...); reported as waiting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Runtime(Protocol):
    def start(self, run: PodRun, container: ContainerRun) -> None:
        """Start `container` (raise StartError if it cannot)."""

    def poll(self, run: PodRun, container: ContainerRun) -> Termination | None:
        """None while the container runs; how it ended once it has."""

    def ready(self, run: PodRun, container: ContainerRun) -> bool:
        """Whether the running container is ready (its readiness probe, when it has one)."""

    def stop_pod(self, run: PodRun, grace_s: float) -> None:
        """Begin stopping every container of the pod (returns at once; idempotent)."""

    def pod_stopped(self, run: PodRun) -> bool:
        """True once nothing of the pod runs any more."""

    def shutdown(self) -> None:
        """Stop everything (the agent is exiting)."""


def _owned_by_job(pod: dict) -> bool:
    return any(ref.get("kind") == "Job" for ref in pod["metadata"].get("ownerReferences") or [])


class SimulatedRuntime:
    """Nothing runs. A container ends only if told how:

    - the pod has the annotation `node-agent.litgpt.dev/exit-code: "<n>"`: every app container
      exits with n after `node-agent.litgpt.dev/run-seconds` (default `run_seconds`);
    - else the pod belongs to a Job: exit `job_exit_code` after `run_seconds`;
    - init containers always succeed at once;
    - anything else runs until the pod is deleted (a server, a Deployment's pod).
    """

    def __init__(self, run_seconds: float = 1.0, job_exit_code: int = 0):
        self.run_seconds = run_seconds
        self.job_exit_code = job_exit_code
        self._started: dict[tuple[str, str], float] = {}

    def _outcome(self, pod: dict, container: ContainerRun) -> tuple[int | None, float]:
        if container.init:
            return 0, 0.0
        annotations = pod["metadata"].get("annotations") or {}
        seconds = float(annotations.get(RUN_SECONDS_ANNOTATION, self.run_seconds))
        if EXIT_CODE_ANNOTATION in annotations:
            return int(annotations[EXIT_CODE_ANNOTATION]), seconds
        if _owned_by_job(pod):
            return self.job_exit_code, seconds
        return None, 0.0

    def start(self, run: PodRun, container: ContainerRun) -> None:
        self._started[(run.uid, container.name)] = time.time()

    def poll(self, run: PodRun, container: ContainerRun) -> Termination | None:
        started = self._started.get((run.uid, container.name))
        exit_code, seconds = self._outcome(run.pod, container)
        if started is None or exit_code is None or time.time() - started < seconds:
            return None
        message = "simulated" if exit_code == 0 else f"simulated failure (exit code {exit_code})"
        return Termination(exit_code, started, started + seconds, message)

    def ready(self, run: PodRun, container: ContainerRun) -> bool:
        return True  # nothing runs, so every probe would be make-believe: ready at once

    def stop_pod(self, run: PodRun, grace_s: float) -> None:
        for key in [k for k in self._started if k[0] == run.uid]:
            del self._started[key]

    def pod_stopped(self, run: PodRun) -> bool:
        return not any(k[0] == run.uid for k in self._started)

    def shutdown(self) -> None:
        self._started.clear()


def make_runtime(mode: str, **options) -> Runtime:
    if mode == "simulate":
        return SimulatedRuntime(run_seconds=options.get("run_seconds", 1.0), job_exit_code=options.get("job_exit_code", 0))
    if mode == "exec":
        from litgpt_devcluster.node_agent.process_runtime import ProcessRuntime

        return ProcessRuntime(work_dir=options["work_dir"], api_client=options["api_client"], api_server=options["api_server"])
    raise ValueError(f"unknown node agent mode {mode!r} (expected simulate or exec)")


def default_path() -> str:
    """PATH for exec'd containers: the Python environment running the agent first, so the
    project's console scripts (`litgpt`, `litgpt-operator`) resolve as they would in the image."""
    return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/bin:/bin")])
