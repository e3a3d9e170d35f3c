"""Training Jobs on one or many nodes.

One node: a plain Job. N nodes: an Indexed Job (completions = parallelism = N) plus a headless
Service, so pod i is reachable as `<job>-i.<service>`; each pod gets the torch distributed
environment, its NODE_RANK from the completion index the Job controller stamps on it.
"""

from __future__ import annotations

from typing import Any

from litgpt_operator.builders import common as c
from litgpt_operator.builders.sources import OutputLocation
from litgpt_operator.settings import Settings

COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


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


def training_job(
    parent: c.Parent, job_name: str, component: str, parts: c.PodParts, spec, settings: Settings,
    output: OutputLocation,
) -> dict[str, Any]:
    multi_node = spec.nodes > 1
    if multi_node:
        parts.env = parts.env + distributed_env(job_name, spec)
        parts.subdomain = headless_service_name(job_name)
        parts.ports = [{"name": "rendezvous", "containerPort": spec.master_port}]
    template = c.pod_template(parent, component, parts, spec, settings)
    job = c.job(
        parent,
        job_name,
        component,
        template,
        spec.backoff_limit,
        spec.active_deadline_seconds,
        indexed_completions=spec.nodes if multi_node else None,
    )
    # Where the result goes, on the Job itself: the parent's status is derived from the live Job
    # and never has to remember what was decided when the Job was created.
    job["metadata"]["annotations"].update(output.annotations())
    return job


def training_children(parent: c.Parent, job: dict[str, Any], component: str, spec) -> list[dict[str, Any]]:
    """The Job and, for several nodes, the headless Service before it."""
    if spec.nodes > 1:
        return [build_headless_service(parent, job["metadata"]["name"], component, spec), job]
    return [job]
