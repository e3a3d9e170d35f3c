"""Lifecycle against the real API server: spec changes of finished jobs, operator restarts,
garbage collection of children."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.operator.helpers import (
    OPERATOR_ENV,
    RUN_SECONDS,
    INLINE_DATA_UNCHECKED,
    OperatorRunner,
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


def test_spec_change_of_a_finished_job_does_not_rerun_it(k8s, operator):
    ready_model(k8s)
    k8s.apply(finetune())
    done = k8s.wait_phase("FinetuneJob", "ft", "Succeeded")
    uids = lambda: {j["metadata"]["name"]: j["metadata"]["uid"]  # noqa: E731
                    for j in k8s.list("Job", {"app.kubernetes.io/instance": "ft"})}
    before = uids()
    assert set(before) == {"ft-validate", "ft-finetune"}  # the data check, then the training

    k8s.apply(finetune(train={"epochs": 5, "globalBatchSize": 4, "microBatchSize": 2}))
    changed = wait_for(lambda: condition(k8s.get("FinetuneJob", "ft"), "SpecApplied"), "SpecApplied condition", timeout_s=30)
    assert changed["status"] == "False" and changed["reason"] == "FinishedJobNotRerun"
    assert "not re-run" in changed["message"]
    body = k8s.get("FinetuneJob", "ft")
    assert body["status"]["phase"] == "Succeeded" and body["status"]["observedGeneration"] == done["metadata"]["generation"] + 1
    assert uids() == before  # neither the check nor the training ran again
    job = k8s.get("Job", "ft-finetune")
    epochs = command(job).index("--train.epochs") + 1
    assert command(job)[epochs] == "2"  # still the spec it started with
    k8s.wait_events(["ft"], {"FinishedJobNotRerun"})

    # What it trains (method, model, data) cannot change at all once it ran: the API server refuses.
    with pytest.raises(subprocess.CalledProcessError) as refused:
        k8s.apply(finetune(method="full"))
    assert "spec.method is immutable once the FinetuneJob has started" in refused.value.stderr, refused.value.stderr
    assert k8s.get("FinetuneJob", "ft")["spec"]["method"] == "lora"


def test_operator_killed_mid_download_resumes_without_duplicates(k8s, tmp_path):
    """The operator (its console script, in its own process, under exactly its generated RBAC
    role) is SIGKILLed while the download runs; the Job finishes while no operator is up; a new
    operator converges without a second Job."""
    log = tmp_path / "operator.log"
    kubeconfig = service_account_kubeconfig(k8s, tmp_path / "kubeconfig")
    first = operator_process(kubeconfig, k8s.namespace, log)
    try:
        k8s.apply(model(podMetadata={"annotations": {RUN_SECONDS: "6"}}))
        try:
            k8s.wait_phase("LitGPTModel", "pythia", "Downloading", timeout=60)
        except AssertionError as error:
            raise AssertionError(f"{error}\noperator log:\n{log.read_text()[-3000:]}") from None
        job_uid = k8s.get("Job", "pythia-download")["metadata"]["uid"]
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    # While no operator runs, the Job completes; the status still says Downloading.
    wait_for(lambda: any(c["type"] == "Complete" for c in (k8s.get("Job", "pythia-download")["status"].get("conditions") or [])),
             "the Job to complete without the operator", timeout_s=60)
    assert k8s.phase("LitGPTModel", "pythia") == "Downloading"

    second = operator_process(kubeconfig, k8s.namespace, log)
    try:
        k8s.wait_phase("LitGPTModel", "pythia", "Ready", timeout=60)
    finally:
        second.terminate()
        second.wait(timeout=30)
    jobs = k8s.list("Job")
    assert [j["metadata"]["uid"] for j in jobs] == [job_uid], log.read_text()[-3000:]
    assert "failed with an exception" not in log.read_text() and "Forbidden" not in log.read_text()


def test_restart_while_waiting_for_the_model(k8s, monkeypatch):
    """Stopped while a FinetuneJob waits for its model; the model becomes Ready meanwhile; the
    restarted operator starts exactly one Job and the FinetuneJob succeeds."""
    for key, value in OPERATOR_ENV.items():
        monkeypatch.setenv(key, value)
    runner = OperatorRunner(k8s.namespace).start()
    try:
        k8s.apply(finetune())
        k8s.wait_phase("FinetuneJob", "ft", "Waiting")
        k8s.apply(model())
        k8s.wait_phase("LitGPTModel", "pythia", "Downloading")
    finally:
        runner.stop()
    wait_for(lambda: any(c["type"] == "Complete" for c in
                         (((k8s.get("Job", "pythia-download") or {}).get("status") or {}).get("conditions") or [])),
             "the download to complete", timeout_s=60)
    runner.start()
    try:
        k8s.wait_phase("FinetuneJob", "ft", "Succeeded", timeout=90)
    finally:
        runner.stop()
    assert sorted(j["metadata"]["name"] for j in k8s.list("Job")) == ["ft-finetune", "ft-validate", "pythia-download"]
    assert not runner.crashes(), "\n".join(runner.crashes())


def test_deleting_a_parent_garbage_collects_its_children(k8s, operator):
    ready_model(k8s)
    k8s.apply(finetune())
    k8s.wait_phase("FinetuneJob", "ft", "Succeeded")
    (data,) = [v["configMap"]["name"] for v in k8s.get("Job", "ft-finetune")["spec"]["template"]["spec"]["volumes"]
               if v["name"] == "data"]
    assert k8s.get("ConfigMap", data) is not None
    k8s.delete("FinetuneJob", "ft")
    wait_for(lambda: k8s.get("Job", "ft-finetune") is None and k8s.get("ConfigMap", data) is None,
             "the garbage collector to delete the Job and ConfigMap", timeout_s=60)
    wait_for(lambda: not k8s.list("Pod", {"batch.kubernetes.io/job-name": "ft-finetune"}), "the Job's pods to go", timeout_s=60)
    # The model (not owned by the finetune) and its cache stay.
    assert k8s.get("LitGPTModel", "pythia") is not None and k8s.get("PersistentVolumeClaim", "cache") is not None


def test_evictions_past_the_resume_budget_stop_the_job(k8s, monkeypatch):
    """Each eviction is resumed (a new pod, not counted as a failure) until the operator's resume
    budget is used up; the next one stops the Job, and the FinetuneJob says why."""
    from kubernetes import client

    for key, value in {**OPERATOR_ENV, "LITGPT_OPERATOR_RESUME_BUDGET": "1"}.items():
        monkeypatch.setenv(key, value)
    runner = OperatorRunner(k8s.namespace).start()
    core = client.CoreV1Api(k8s.kube.api_client())
    try:
        ready_model(k8s)
        k8s.apply(finetune(podMetadata={"annotations": {RUN_SECONDS: "600"}}, data=INLINE_DATA_UNCHECKED))
        evicted: list[str] = []
        for attempt in (1, 2):
            pod = wait_for(lambda: next((p["metadata"]["name"] for p in k8s.list("Pod", {"batch.kubernetes.io/job-name": "ft-finetune"})
                                         if p["metadata"]["name"] not in evicted and (p.get("status") or {}).get("phase") == "Running"), None),
                           f"running pod of attempt {attempt}", timeout_s=60)
            wait_for(lambda: (k8s.get("FinetuneJob", "ft").get("status") or {}).get("currentPod") == pod,
                     f"attempt {attempt} in the status", timeout_s=30)
            core.create_namespaced_pod_eviction(pod, k8s.namespace, client.V1Eviction(
                metadata=client.V1ObjectMeta(name=pod, namespace=k8s.namespace)))
            evicted.append(pod)  # the first eviction is resumed: the loop finds the next attempt's pod
        body = k8s.wait_phase("FinetuneJob", "ft", "Failed", timeout=90)
    finally:
        runner.stop()
    failed = condition(body, "Failed")
    assert failed["reason"] == "ResumeBudgetExhausted" and "after 2 resumes" in failed["message"], failed
    assert body["status"]["attempts"] == 3
    assert not runner.crashes(), "\n".join(runner.crashes())
