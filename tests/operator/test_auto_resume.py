"""Auto-resume on training Jobs: `--resume auto`, a podFailurePolicy the API server accepts,
attempts counted per completion index; progress and resumed step: tests/operator/test_progress.py."""

from __future__ import annotations

import json

import pytest
from tests.operator.finetune_bodies import finetune_body, finetune_children

from litgpt_operator import progress


def training_job(**spec) -> dict:
    return next(c for c in finetune_children(finetune_body(**spec)) if c["kind"] == "Job")


def test_single_pod_job_resumes_after_disruption_and_fails_fast_on_user_errors():
    job = training_job()
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-2:] == ["--resume", "auto"] and command[:2] == ["litgpt", "finetune_lora"]
    assert command.count("--resume") == 1
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [1, 2, 3, 4, 7]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize(("code", "reason"), [(3, "AccessDenied"), (4, "NotFound"), (7, "DataInvalid")])
def test_a_training_pod_exit_code_of_the_runtime_fails_the_job_with_its_reason(code, reason):
    """What another pod would meet the same way ends the Job at once (FailJob), and the failed
    FinetuneJob names it by the runtime's exit code; a stall (5) stays retryable."""
    from litgpt_operator import observe
    from litgpt_operator.handlers.jobs import job_outcome

    fail_fast = training_job()["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"]
    assert code in fail_fast and 5 not in fail_fast and 6 not in fail_fast
    job = {"metadata": {"name": "ft-finetune"}, "spec": {}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "Container litgpt ..."}]}}
    pod = {"metadata": {"name": "ft-finetune-x", "creationTimestamp": "2026-01-01T00:00:00Z"},
           "status": {"phase": "Failed", "containerStatuses": [{"name": "litgpt", "state": {"terminated": {
               "exitCode": code, "reason": "Error", "message": f"{reason}: what went wrong"}}}]}}
    phase, conditions = job_outcome(observe.job_state(job, [pod]))
    failed = next(c for c in conditions if c.type == "Failed")
    assert phase == "Failed" and failed.reason == reason and "what went wrong" in failed.message


def test_multi_node_job_does_not_fail_on_a_peer_exit():
    job = training_job(nodes=2, gpusPerNode=2)
    assert job["spec"]["completionMode"] == "Indexed"
    assert [r["action"] for r in job["spec"]["podFailurePolicy"]["rules"]] == ["Ignore"]


@pytest.mark.parametrize("nodes", [1, 2])
def test_api_server_accepts_the_resumable_job(kube, namespace, nodes):
    job = training_job(nodes=nodes, gpusPerNode=1, namespace=namespace)
    job["metadata"].pop("ownerReferences")
    out = kube.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(job))
    stored = json.loads(out)
    assert stored["spec"]["podFailurePolicy"] == job["spec"]["podFailurePolicy"]


def pod(index: str | None) -> dict:
    annotations = {"batch.kubernetes.io/job-completion-index": index} if index is not None else {}
    return {"metadata": {"annotations": annotations}}


def named(name: str, created: str, index: str | None = None) -> dict:
    body = pod(index)
    body["metadata"].update(name=name, creationTimestamp=created)
    return body


def test_attempts_survive_deleted_pods():
    """An evicted pod is deleted: the count must not drop when it disappears."""
    status: dict = {}
    status = progress.track_attempts(status, [named("a", "2026-01-01T00:00:00Z")])
    assert status == {"attempts": 1, "currentPod": "a"}
    assert progress.track_attempts(status, [named("a", "2026-01-01T00:00:00Z")]) == status  # no new pod
    status = progress.track_attempts(status, [named("b", "2026-01-01T00:05:00Z")])  # a evicted and gone
    assert status == {"attempts": 2, "currentPod": "b"}
    status = progress.track_attempts(status, [])  # between pods
    assert status == {"attempts": 2, "currentPod": "b"}
    indexed = [named("x-0", "2026-01-01T00:00:00Z", "0"), named("x-1", "2026-01-01T00:00:00Z", "1")]
    assert progress.track_attempts({}, indexed) == {"attempts": 1, "currentPod": "x-0"}


def test_attempts_are_counted_per_index():
    assert progress.attempts([]) == 0
    assert progress.attempts([pod(None)]) == 1
    assert progress.attempts([pod(None), pod(None), pod(None)]) == 3
    assert progress.attempts([pod("0"), pod("1"), pod("1")]) == 2
