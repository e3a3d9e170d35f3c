"""Kueue pass-through: queue label -> labelled, suspended Jobs; the parent reads Queued until admitted."""

from __future__ import annotations

import json

from tests.operator.finetune_bodies import finetune_body, finetune_children

from litgpt_operator import observe
from litgpt_operator.builders.common import PRIORITY_LABEL, QUEUE_LABEL
from litgpt_operator.handlers.jobs import JOB_PHASES


def test_jobs_of_a_queued_parent_are_labelled_and_suspended():
    body = finetune_body(labels={QUEUE_LABEL: "team-a-gpus", PRIORITY_LABEL: "low", "other": "x"})
    queued = finetune_children(body)
    (job,) = [c for c in queued if c["kind"] == "Job"]
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a-gpus"
    assert job["metadata"]["labels"][PRIORITY_LABEL] == "low"
    assert "other" not in job["metadata"]["labels"]
    # the inline-data ConfigMap is not a workload: the same as without a queue
    assert [c for c in queued if c["kind"] == "ConfigMap"] == \
        [c for c in finetune_children(finetune_body()) if c["kind"] == "ConfigMap"]


def test_no_queue_no_change():
    """A priority class alone queues nothing (Kueue only admits Jobs that name a queue)."""
    (job,) = [c for c in finetune_children(finetune_body(labels={PRIORITY_LABEL: "low"})) if c["kind"] == "Job"]
    assert "suspend" not in job["spec"] and PRIORITY_LABEL not in job["metadata"]["labels"]


def test_suspended_job_in_the_api_server_reads_queued_until_admitted(kube, namespace):
    """The real Job controller marks a suspended Job; Kueue's admission (suspend: false) ends Queued."""
    body = finetune_body(namespace=namespace, labels={QUEUE_LABEL: "q"})
    job = next(c for c in finetune_children(body) if c["kind"] == "Job")
    job["metadata"].pop("ownerReferences")  # no parent object in this test
    job["spec"]["template"]["spec"]["volumes"] = [v for v in job["spec"]["template"]["spec"]["volumes"]
                                                  if "configMap" not in v] + [{"name": "data", "emptyDir": {}}]
    kube.kubectl("create", "-f", "-", input=json.dumps(job))
    name = job["metadata"]["name"]

    def state():
        live = json.loads(kube.kubectl("get", "job", name, "-n", namespace, "-o", "json"))
        return observe.job_state(live, [])

    import time
    deadline = time.monotonic() + 30
    while not any(c["type"] == "Suspended" for c in (json.loads(kube.kubectl(
            "get", "job", name, "-n", namespace, "-o", "json")).get("status") or {}).get("conditions") or []):
        assert time.monotonic() < deadline, "the Job controller never marked the Job Suspended"
        time.sleep(0.3)
    assert JOB_PHASES[state().phase] == "Queued"
    assert kube.kubectl("get", "pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={name}", "-o", "name") == ""

    kube.kubectl("patch", "job", name, "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    assert JOB_PHASES[state().phase] != "Queued"
