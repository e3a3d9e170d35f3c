"""Each kind against the real API server with the operator running: the expected children with
the exact `litgpt` command line, and the parent's status and Events following the children as
the node agent runs (or fails) their pods."""

from __future__ import annotations

import pytest

from tests.operator.helpers import (
    API,
    built_command,
    EXIT_CODE,
    INLINE_DATA_UNCHECKED,
    ON_EXEC_NODE,
    REPO_ROOT,
    command,
    condition,
    finetune,
    model,
    operator_process,
    ready_model,
    service_account_kubeconfig,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_litgptmodel_downloads_then_is_ready(k8s, operator):
    k8s.apply(model(tokenSecretRef={"name": "hf", "key": "token"}))
    k8s.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "stringData": {"token": "hf_secretvalue123"}})
    job = wait_for(lambda: k8s.get("Job", "pythia-download"), "the download Job", timeout_s=30)
    assert command(job) == built_command(k8s, "LitGPTModel", "pythia")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "LitGPTModel"
    claim = k8s.get("PersistentVolumeClaim", "cache")
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    body = k8s.wait_phase("LitGPTModel", "pythia", "Ready")
    ready = condition(body, "Ready")
    assert ready["status"] == "True" and ready["reason"] == "CheckpointComplete"
    assert ready["observedGeneration"] == body["metadata"]["generation"]
    assert body["status"]["checkpointPath"] == "checkpoints/EleutherAI/pythia-14m"
    k8s.wait_events(["pythia"], {"CheckpointComplete"})
    # The token travelled only as a reference.
    everything = str(body) + str(job) + str(k8s.events("pythia"))
    assert "hf_secretvalue123" not in everything


def test_finetune_waits_for_its_model_then_succeeds(k8s, operator):
    k8s.apply(finetune())
    waiting = k8s.wait_phase("FinetuneJob", "ft", "Waiting")
    assert condition(waiting, "ModelReady")["reason"] == "ModelNotFound"
    assert k8s.get("Job", "ft-finetune") is None

    ready_model(k8s)
    job = wait_for(lambda: k8s.get("Job", "ft-finetune"), "the finetune Job", timeout_s=30)
    assert command(job) == built_command(k8s, "FinetuneJob", "ft")
    (data,) = [v["configMap"]["name"] for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert k8s.get("ConfigMap", data)["data"]["data.json"].startswith("[{")
    body = k8s.wait_phase("FinetuneJob", "ft", "Succeeded")
    assert condition(body, "Succeeded")["status"] == "True"
    assert condition(body, "ModelReady")["status"] == "True"
    assert body["status"]["outputPath"] == "finetunes/ft" and body["status"]["outputClaimName"] == "cache"
    assert body["status"]["completionTime"]
    # The GPU pod landed on the GPU node.
    (pod,) = k8s.list("Pod", {"batch.kubernetes.io/job-name": "ft-finetune"})
    assert pod["spec"]["nodeName"] == "sim-gpu-0"
    k8s.wait_events(["ft"], {"ModelNotFound", "JobSucceeded"})


def test_failed_pod_fails_the_parent_with_its_reason(k8s, operator):
    ready_model(k8s)
    # 9: no meaning of the runtime's (3-7 name their causes: litgpt_runtime.errors.EXIT_REASONS)
    # (the data check off: its pod would carry the annotation too)
    k8s.apply(finetune(podMetadata={"annotations": {EXIT_CODE: "9"}}, data=INLINE_DATA_UNCHECKED))
    body = k8s.wait_phase("FinetuneJob", "ft", "Failed")
    failed = condition(body, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "NonZeroExitCode"
    assert "exited with code 9" in failed["message"] and "BackoffLimitExceeded" in failed["message"]
    # The Event follows the status write.
    wait_for(lambda: [e for e in k8s.events("ft") if e["type"] == "Warning" and e["reason"] == "NonZeroExitCode"],
             "a Warning event NonZeroExitCode on ft", timeout_s=30)


def test_real_runtime_failure_reaches_the_status(k8s, operator):
    """On the exec node the pod really runs `litgpt download`; the Hub (a closed port here) cannot
    be reached, the runtime exits 1 with its one-line message, and that message (the container's
    termination message, and the log tail read through the kubelet API) lands in the status."""
    from litgpt_operator import kube

    k8s.apply(model(backoffLimit=0, **ON_EXEC_NODE))
    body = k8s.wait_phase("LitGPTModel", "pythia", "Failed", timeout=90)
    failed = condition(body, "Failed")
    assert failed["reason"] == "NonZeroExitCode", failed
    assert "exited with code 1" in failed["message"] and "Cannot reach the Hugging Face Hub" in failed["message"]
    assert "Traceback" not in failed["message"]
    (pod,) = k8s.list("Pod", {"batch.kubernetes.io/job-name": "pythia-download"})
    tail = kube.pod_log_tail(k8s.namespace, pod["metadata"]["name"], 5, "litgpt", limit_bytes=4096)
    assert tail and "Cannot reach the Hugging Face Hub" in tail
    assert "Last lines of the log" in failed["message"]


def test_pretrain_multi_node_indexed_job(k8s, operator):
    ready_model(k8s)
    k8s.claim("corpus")
    k8s.apply({"apiVersion": API, "kind": "PretrainJob", "metadata": {"name": "pt"}, "spec": {
        "modelName": "pythia-14m", "tokenizerRef": {"name": "pythia"}, "nodes": 2, "gpusPerNode": 2,
        "data": {"file": {"claimName": "corpus", "path": "text"}}, "train": {"maxTokens": 4096}}})
    job = wait_for(lambda: k8s.get("Job", "pt-pretrain"), "the pretrain Job", timeout_s=30)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    service = k8s.get("Service", "pt-pretrain")
    assert service["spec"]["clusterIP"] == "None"
    assert command(job)[:3] == ["litgpt", "pretrain", "pythia-14m"]
    assert "--train.max_tokens" in command(job) and command(job)[-6:] == ["--devices", "2", "--num_nodes", "2", "--resume", "auto"]
    pods = wait_for(lambda: [p for p in k8s.list("Pod", {"batch.kubernetes.io/job-name": "pt-pretrain"})
                             if p["spec"].get("nodeName")] or None, "scheduled pretrain pods", timeout_s=30)
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert set(indexes) <= {"0", "1"}
    assert all(p["spec"]["subdomain"] == "pt-pretrain" and p["spec"]["hostname"].startswith("pt-pretrain-") for p in pods)
    body = k8s.wait_phase("PretrainJob", "pt", "Succeeded", timeout=90)
    assert body["status"]["serviceName"] == "pt-pretrain"


def test_model_server_becomes_ready_and_rolls_on_spec_change(k8s, operator):
    ready_model(k8s)
    k8s.apply({"apiVersion": API, "kind": "ModelServer", "metadata": {"name": "chat"},
               "spec": {"modelRef": {"name": "pythia"}, "gpus": 0, "port": 8080}})
    body = k8s.wait_phase("ModelServer", "chat", "Ready")
    assert condition(body, "Ready")["status"] == "True" and body["status"]["availableReplicas"] == 1
    assert body["status"]["url"] == f"http://chat.{k8s.namespace}.svc:8080"
    deployment = k8s.get("Deployment", "chat")
    assert command(deployment) == built_command(k8s, "ModelServer", "chat")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/ready"
    assert k8s.get("Service", "chat")["spec"]["ports"][0]["port"] == 8080

    k8s.apply({"apiVersion": API, "kind": "ModelServer", "metadata": {"name": "chat"},
               "spec": {"modelRef": {"name": "pythia"}, "gpus": 0, "port": 8080, "maxNewTokens": 64}})
    wait_for(lambda: "--max_new_tokens" in command(k8s.get("Deployment", "chat")), "the rolled Deployment", timeout_s=30)
    rolled = wait_for(lambda: (lambda b: b if b["status"]["phase"] == "Ready"
                               and b["status"]["observedGeneration"] == b["metadata"]["generation"] else None)(
        k8s.get("ModelServer", "chat")), "the server Ready on generation 2", timeout_s=60)
    assert rolled["metadata"]["generation"] == 2
    assert len(k8s.list("Deployment")) == 1


def test_full_flow_example(k8s, operator):
    """examples/full-flow.yaml: model -> LoRA finetune on inline data -> server of the result, in a
    namespace enforcing the "restricted" Pod Security Standard (the API server refuses any of our
    pods that would run as root, escalate, keep capabilities or lack a seccomp profile)."""
    k8s.kube.kubectl("label", "namespace", k8s.namespace, "pod-security.kubernetes.io/enforce=restricted")
    k8s.apply((REPO_ROOT / "examples" / "full-flow.yaml").read_text())
    k8s.wait_phase("LitGPTModel", "flow-model", "Ready")
    k8s.wait_phase("FinetuneJob", "flow-finetune", "Succeeded")
    body = k8s.wait_phase("ModelServer", "flow-server", "Ready")
    assert condition(body, "ModelReady")["reason"] == "FinetuneSucceeded"
    deployment = k8s.get("Deployment", "flow-server")
    assert command(deployment)[:3] == ["litgpt", "serve", "/output/finetunes/flow-finetune/final"]
    claims = [v["persistentVolumeClaim"] for v in deployment["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": "flow-cache", "readOnly": True}]  # model and finetune: one claim, read only
    table = k8s.kube.kubectl("get", "litgpt", "-n", k8s.namespace)
    assert table.count("Ready") >= 2 and "Succeeded" in table, table


def test_full_flow_under_the_generated_rbac_role(k8s, tmp_path):
    """The operator's console script with only operator/rbac/clusterrole.yaml's rights runs the
    whole flow (Jobs, ConfigMap, PVC, Deployment, Service, HPA removal, pods, Events, status)."""
    log = tmp_path / "operator.log"
    process = operator_process(service_account_kubeconfig(k8s, tmp_path / "kubeconfig"), k8s.namespace, log)
    try:
        k8s.apply((REPO_ROOT / "examples" / "full-flow.yaml").read_text())
        try:
            k8s.wait_phase("ModelServer", "flow-server", "Ready", timeout=90)
        except AssertionError as error:
            raise AssertionError(f"{error}\noperator log:\n{log.read_text()[-4000:]}") from None
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text()
    assert "forbidden" not in text.lower() and "failed with an exception" not in text, text[-4000:]
    k8s.wait_events(["flow-model", "flow-finetune"], {"CheckpointComplete", "JobSucceeded"})


def test_model_server_autoscaling_adds_and_removes_the_hpa(k8s, operator):
    ready_model(k8s)
    server = {"apiVersion": API, "kind": "ModelServer", "metadata": {"name": "chat"},
              "spec": {"modelRef": {"name": "pythia"}, "gpus": 0, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}}
    k8s.apply(server)
    hpa = wait_for(lambda: k8s.get("HorizontalPodAutoscaler", "chat"), "the HPA", timeout_s=30)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"}
    assert hpa["spec"]["maxReplicas"] == 3 and hpa["metadata"]["ownerReferences"][0]["kind"] == "ModelServer"
    k8s.wait_phase("ModelServer", "chat", "Ready")
    server["spec"] = {"modelRef": {"name": "pythia"}, "gpus": 0, "replicas": 2}
    k8s.apply(server)
    wait_for(lambda: k8s.get("HorizontalPodAutoscaler", "chat") is None, "the HPA to be removed", timeout_s=30)
    wait_for(lambda: (k8s.get("ModelServer", "chat")["status"].get("availableReplicas") == 2), "2 available replicas",
             timeout_s=60)


def test_a_failed_model_ends_its_finetune(k8s, operator):
    """A FinetuneJob whose model failed is Failed with reason ModelFailed (no retry loop)."""
    k8s.apply(model(backoffLimit=0, podMetadata={"annotations": {EXIT_CODE: "3"}}))
    k8s.wait_phase("LitGPTModel", "pythia", "Failed")
    k8s.apply(finetune())
    body = k8s.wait_phase("FinetuneJob", "ft", "Failed", timeout=30)
    assert condition(body, "Failed")["reason"] == condition(body, "ModelReady")["reason"] == "ModelFailed"
    assert k8s.get("Job", "ft-finetune") is None
    k8s.wait_events(["ft"], {"ModelFailed"})


def test_a_status_write_of_the_model_reapplies_no_server(k8s, operator, monkeypatch):
    """Only what the server is built from makes the operator apply its children again."""
    from litgpt_operator import kube

    applied: list[str] = []
    real_apply = kube.apply
    monkeypatch.setattr(kube, "apply", lambda obj: applied.append(obj["kind"]) or real_apply(obj))
    ready_model(k8s)
    k8s.apply({"apiVersion": API, "kind": "ModelServer", "metadata": {"name": "chat"},
               "spec": {"modelRef": {"name": "pythia"}, "gpus": 0}})
    k8s.wait_phase("ModelServer", "chat", "Ready")
    assert applied.count("Deployment") == 1, applied
    for message in ("status write one", "status write two"):
        k8s.kube.kubectl("patch", "litgptmodel", "pythia", "-n", k8s.namespace, "--subresource=status",
                         "--type=merge", "-p", '{"status": {"conditions": [{"type": "Ready", "status": "True", '
                         f'"reason": "CheckpointComplete", "message": "{message}", '
                         '"lastTransitionTime": "2026-01-01T00:00:00Z"}]}}')
    k8s.kube.kubectl("annotate", "modelserver", "chat", "-n", k8s.namespace, "poke=1")  # an event on the server too
    wait_for(lambda: condition(k8s.get("LitGPTModel", "pythia"), "Ready")["message"] == "status write two",
             "the model's status write", timeout_s=10)
    import time

    time.sleep(3)  # the events above reach the operator
    assert applied.count("Deployment") == 1, applied
