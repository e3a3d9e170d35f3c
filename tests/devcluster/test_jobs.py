"""The node agent finishes Job pods as the operator tests rely on: failure when the pod template
asks for an exit code, restarts under restartPolicy OnFailure, a deleted pod reported failed."""

from __future__ import annotations

import pytest
from kubernetes import client

from litgpt_devcluster.node_agent.runtimes import EXIT_CODE_ANNOTATION
from litgpt_devcluster.waiting import wait_for

pytestmark = pytest.mark.cluster


def _job(name: str, annotations: dict | None = None, backoff_limit: int = 0) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "example.invalid/job:1", "command": ["true"]}],
                },
            },
        },
    }


def _condition(batch, name: str, namespace: str, type_: str):
    conditions = batch.read_namespaced_job_status(name, namespace).status.conditions or []
    return next((c for c in conditions if c.type == type_ and c.status == "True"), None)


def test_job_whose_pod_fails_is_failed(kube, namespace):
    batch = client.BatchV1Api(kube.api_client())
    core = client.CoreV1Api(kube.api_client())
    batch.create_namespaced_job(namespace, _job("bad", {EXIT_CODE_ANNOTATION: "3"}))

    failed = wait_for(lambda: _condition(batch, "bad", namespace, "Failed"), "job bad Failed")
    assert failed.reason == "BackoffLimitExceeded"
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=bad").items
    assert [p.status.phase for p in pods] == ["Failed"]  # backoffLimit 0: no retry
    terminated = pods[0].status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3 and terminated.reason == "Error"


def test_restart_policy_on_failure_restarts_the_container(kube, namespace):
    core = client.CoreV1Api(kube.api_client())
    pod = {
        "metadata": {"name": "flaky", "annotations": {EXIT_CODE_ANNOTATION: "1", "node-agent.litgpt.dev/run-seconds": "0.2"}},
        "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "main", "image": "example.invalid/x:1"}]},
    }
    core.create_namespaced_pod(namespace, pod)

    def restarted_twice():
        status = core.read_namespaced_pod_status("flaky", namespace).status
        statuses = status.container_statuses or []
        return statuses and statuses[0].restart_count >= 2 and status.phase == "Running"

    wait_for(restarted_twice, "two restarts of pod flaky")
    last = core.read_namespaced_pod_status("flaky", namespace).status.container_statuses[0].last_state.terminated
    assert last.exit_code == 1


def test_deleted_job_pod_reports_failed_and_goes_away(kube, namespace):
    # The Job controller keeps a finalizer on its pods until it has seen a terminal phase: a
    # deleted pod must first be reported Failed (with an exit code), or it stays Terminating.
    batch = client.BatchV1Api(kube.api_client())
    core = client.CoreV1Api(kube.api_client())
    job = _job("evicted", {EXIT_CODE_ANNOTATION: "0", "node-agent.litgpt.dev/run-seconds": "600"}, backoff_limit=1)
    # With a podFailurePolicy the controller waits for the terminal phase before counting a pod.
    job["spec"]["podFailurePolicy"] = {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}]}
    batch.create_namespaced_job(namespace, job)
    first = wait_for(lambda: next((p for p in core.list_namespaced_pod(namespace, label_selector="job-name=evicted").items
                                   if p.status.phase == "Running"), None), "the first pod running")
    seen: dict = {}

    def watch_final():
        try:
            pod = core.read_namespaced_pod(first.metadata.name, namespace)
        except client.ApiException as error:
            return error.status == 404
        if pod.status.phase == "Failed":
            seen["terminated"] = pod.status.container_statuses[0].state.terminated
        return False

    core.delete_namespaced_pod(first.metadata.name, namespace, grace_period_seconds=1)
    wait_for(watch_final, "the deleted pod to be removed (not stuck Terminating)", interval_s=0.05)
    # The Job counts it as a failure and makes a replacement.
    wait_for(lambda: batch.read_namespaced_job_status("evicted", namespace).status.failed == 1, "failed == 1")
    replacement = wait_for(lambda: [p for p in core.list_namespaced_pod(namespace, label_selector="job-name=evicted").items
                                    if p.metadata.name != first.metadata.name], "a replacement pod")
    assert len(replacement) == 1
    if "terminated" in seen:  # caught between the status patch and the delete (it is brief)
        assert seen["terminated"].exit_code in (137, 143)
