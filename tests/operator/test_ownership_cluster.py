"""The operator acts only on children whose controller is the very object it reconciles (its uid,
not its name): an object of a child's name that is somebody else's is left as it was, and the
parent says which object is in the way. A child the API server refuses is named on the parent
too, in the server's words."""

from __future__ import annotations

import pytest

from tests.operator.helpers import API, condition, finetune, ready_model, wait_for

pytestmark = pytest.mark.slow

SERVER = {"apiVersion": API, "kind": "ModelServer", "metadata": {"name": "chat"},
          "spec": {"modelRef": {"name": "pythia"}, "gpus": 0}}


def test_server_leaves_a_foreign_service_and_hpa_alone(k8s, operator):
    foreign = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "chat"},
               "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]}}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "chat"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "theirs"},
                    "minReplicas": 1, "maxReplicas": 2}}
    k8s.apply([foreign, hpa])
    ready_model(k8s)
    k8s.apply(SERVER)
    body = wait_for(lambda: (lambda b: b if (condition(b, "Ready") or {}).get("reason") == "ObjectInTheWay" else None)(
        k8s.get("ModelServer", "chat")), "ModelServer chat to report the Service in its way", timeout_s=30)
    assert "Service chat already exists" in condition(body, "Ready")["message"]
    service = k8s.get("Service", "chat")
    assert service["spec"]["selector"] == {"app": "theirs"} and not service["metadata"].get("ownerReferences")
    assert k8s.get("Deployment", "chat") is None  # none of the set is applied while one is in the way
    assert k8s.get("HorizontalPodAutoscaler", "chat") is not None

    # Out of the way: the server comes up, and the foreign autoscaler (no autoscaling asked) stays.
    k8s.delete("Service", "chat")
    k8s.wait_phase("ModelServer", "chat", "Ready", timeout=60)
    assert k8s.get("Service", "chat")["metadata"]["ownerReferences"][0]["kind"] == "ModelServer"
    assert k8s.get("HorizontalPodAutoscaler", "chat")["spec"]["scaleTargetRef"]["name"] == "theirs"


def test_a_job_of_the_same_name_is_not_adopted(k8s, operator):
    """A finished Job of the training Job's name, not ours (e.g. left by a deleted FinetuneJob
    whose garbage collection has not run): its result is never reported as ours."""
    ready_model(k8s)
    other = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ft-finetune"},
             "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                 {"name": "main", "image": "example.invalid/x:1", "command": ["true"]}]}}}}
    k8s.apply(other)
    wait_for(lambda: any(c["type"] == "Complete" for c in (k8s.get("Job", "ft-finetune").get("status") or {})
                         .get("conditions") or []), "the other Job to complete", timeout_s=30)
    k8s.apply(finetune())
    body = wait_for(lambda: (lambda b: b if (condition(b, "Succeeded") or {}).get("reason") == "ObjectInTheWay"
                             else None)(k8s.get("FinetuneJob", "ft")), "FinetuneJob ft to report the Job", timeout_s=30)
    assert body["status"]["phase"] == "Pending" and "Job ft-finetune already exists" in \
        condition(body, "Succeeded")["message"]

    k8s.delete("Job", "ft-finetune")
    body = k8s.wait_phase("FinetuneJob", "ft", "Succeeded", timeout=60)
    job = k8s.get("Job", "ft-finetune")
    assert job["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]


def test_a_child_the_api_server_refuses_is_named_on_the_parent_until_the_cause_goes(k8s, operator):
    """A namespace quota of no Services: the API server refuses the ModelServer's Service (403).
    The server's status quotes the refusal instead of waiting in silence, and once the quota is
    gone the next re-check (backing off) brings the server up."""
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services"},
             "spec": {"hard": {"services": "0"}}}
    k8s.apply(quota)
    ready_model(k8s)
    k8s.apply(SERVER)
    body = wait_for(lambda: (lambda b: b if (condition(b, "Ready") or {}).get("reason") == "ChildRefused" else None)(
        k8s.get("ModelServer", "chat")), "ModelServer chat to report the refused Service", timeout_s=30)
    message = condition(body, "Ready")["message"]
    assert body["status"]["phase"] == "Pending"
    assert message.startswith("The API server refused Service chat (HTTP 403): ") and "quota" in message
    assert k8s.get("Service", "chat") is None and k8s.get("Deployment", "chat") is None

    k8s.kube.kubectl("delete", "resourcequota", "no-services", "-n", k8s.namespace)
    body = k8s.wait_phase("ModelServer", "chat", "Ready", timeout=90)
    assert k8s.get("Service", "chat")["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
