"""Training Jobs (FinetuneJob, PretrainJob) on one or many nodes, resumable after disruptions.

One node: a plain Job. N nodes: an Indexed Job (completions = parallelism = N) plus a headless
Service, so pod i is reachable as `<job>-i.<service>`; each pod gets the torch distributed
environment, its NODE_RANK from the completion index the Job controller stamps on it.

Auto-resume, decided here with the rest of the command line:
  - the runtime is started with `--resume auto`: it continues from the newest `step-*` checkpoint
    in its output folder if there is one (a first run finds none and starts at step 0);
  - a `podFailurePolicy` that does not count disruptions (the `DisruptionTarget` pod condition the
    control plane sets on eviction, preemption and on pods of a lost node) against `backoffLimit`,
    so the Job controller simply creates a new pod; and on one pod, fails the Job at once when the
    runtime exits with a code another pod would meet the same way (`DETERMINISTIC_EXIT_CODES`).
Ignored disruptions have no bound in the Job controller: the operator counts them (the parent's
`status.attempts`) and stops a Job past its resume budget with `common.stop_patch`.
"""

from __future__ import annotations

from typing import Any

from litgpt_runtime.errors import AccessDenied, InvalidData, NotFound  # torch-free: the exit-code contract

from litgpt_operator.builders import common as c
from litgpt_operator.builders.sources import OutputLocation
from litgpt_operator.settings import Settings

COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
RESUME_FLAGS = ["--resume", "auto"]
# `litgpt` exits 1 on a UserError (and Python on an uncaught exception), 2 on a usage error, and
# with its own codes when the Hub refuses the model (3, 4: a missing base downloaded on first use)
# or the data is invalid (7). A new pod would fail the same way; the operator names each failure
# by its code (observe: EXIT_REASONS). 5 (stalled) and 6 (checksum) stay retryable.
DETERMINISTIC_EXIT_CODES = [1, 2, AccessDenied.exit_code, NotFound.exit_code, InvalidData.exit_code]
# On a Job the operator stopped: why (the parent's failure message starts with it).


def scale_flags(spec) -> list[str]:
    """Devices and nodes as Lightning Fabric sees them (one process per GPU, at least one)."""
    out = ["--devices", str(max(spec.gpus_per_node, 1)), "--num_nodes", str(spec.nodes)]
    if spec.precision:
        out += ["--precision", spec.precision]
    return out


def headless_service_name(job_name: str) -> str:
    return job_name  # pods' subdomain; one per Job, so the Job's name is unique and stable


def distributed_env(job_name: str, spec) -> list[dict[str, Any]]:
    return [
        c.env_var("MASTER_ADDR", f"{job_name}-0.{headless_service_name(job_name)}"),
        c.env_var("MASTER_PORT", str(spec.master_port)),
        c.env_var("WORLD_SIZE", str(spec.nodes * max(spec.gpus_per_node, 1))),
        c.env_var("NUM_NODES", str(spec.nodes)),
        {
            "name": "NODE_RANK",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}},
        },
    ]


def build_headless_service(parent: c.Parent, job_name: str, component: str, spec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": c.metadata(parent, headless_service_name(job_name), component),
        "spec": {
            "clusterIP": "None",
            # Rank 0 must be resolvable before it is Ready: the others connect during start-up.
            "publishNotReadyAddresses": True,
            "selector": {"batch.kubernetes.io/job-name": job_name},
            "ports": [{"name": "rendezvous", "port": spec.master_port, "targetPort": spec.master_port}],
        },
    }


def pod_failure_policy(single_pod: bool) -> dict[str, Any]:
    # First match wins: a disrupted pod is ignored, whatever its exit code.
    rules: list[dict[str, Any]] = [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    if single_pod:
        # With several pods, one disrupted pod makes its peers exit 1 (the collective breaks):
        # those failures are retried (backoffLimit) rather than ending the Job.
        rules.append(c.fail_job_on_exit_codes(DETERMINISTIC_EXIT_CODES))
    return {"rules": rules}


def training_children(
    parent: c.Parent, job_name: str, component: str, parts: c.PodParts, spec, settings: Settings,
    output: OutputLocation,
) -> list[dict[str, Any]]:
    """The Job and, for several nodes, the headless Service before it. `parts.command` is the
    method's own command line; scale and resume flags are added here."""
    multi_node = spec.nodes > 1
    parts.command = [*parts.command, *scale_flags(spec), *RESUME_FLAGS]
    parts.restart_policy = "Never"  # podFailurePolicy requires it
    if multi_node:
        parts.env = parts.env + distributed_env(job_name, spec)
        parts.subdomain = headless_service_name(job_name)
        parts.ports = [{"name": "rendezvous", "containerPort": spec.master_port}]
    template = c.pod_template(parent, component, parts, spec, settings)
    job = c.job(parent, job_name, component, template, spec.backoff_limit, spec.active_deadline_seconds,
                indexed_completions=spec.nodes if multi_node else None)
    job["spec"]["podFailurePolicy"] = pod_failure_policy(single_pod=not multi_node)
    # Where the result goes, on the Job itself: the parent's status is derived from the live Job
    # and never has to remember what was decided when the Job was created.
    job["metadata"]["annotations"].update(output.annotations())
    if multi_node:
        return [build_headless_service(parent, job_name, component, spec), job]
    return [job]
