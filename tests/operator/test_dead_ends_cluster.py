"""Objects the API server admits but the operator cannot serve end in a clear phase and reason,
and nothing retries them in a loop: a claim that never binds, a model deleted under a running
finetune (and the server of that finetune), a server of a finetune that failed."""

from __future__ import annotations

import logging

import pytest

from tests.operator.helpers import (
    API,
    EXIT_CODE,
    OPERATOR_ENV,
    RUN_SECONDS,
    OperatorRunner,
    condition,
    finetune,
    model,
    ready_model,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def runner(k8s, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="litgpt_operator.handlers.core")
    for key, value in {**OPERATOR_ENV, "LITGPT_OPERATOR_CLAIM_BIND_TIMEOUT_SECONDS": "8"}.items():
        monkeypatch.setenv(key, value)
    runner = OperatorRunner(k8s.namespace).start()
    yield runner
    runner.stop()
    assert not runner.crashes(), "\n".join(runner.crashes())


def rechecks(caplog, kind: str, name: str) -> int:
    """How often the operator re-checked a waiting object (its in-process log records)."""
    return sum(1 for r in list(caplog.records) if f"{kind} " in r.getMessage()
               and f"/{name} re-checked in" in r.getMessage())


def server(name: str, **spec) -> dict:
    return {"apiVersion": API, "kind": "ModelServer", "metadata": {"name": name}, "spec": {"gpus": 0, **spec}}


def test_a_claim_that_never_binds_fails_the_model_with_reason_claim_not_bound(k8s, runner, caplog):
    """The cache claim asks for a storage class nobody provisions: the model says so while it
    waits (ClaimNotBound, naming the claim and class), and after CLAIM_BIND_TIMEOUT_SECONDS its
    Job is stopped and it is Failed; its finetune fails with ModelFailed. No re-checks after."""
    k8s.apply(model(checkpointRootPVC={"claimName": "nowhere", "size": "1Gi", "storageClassName": "no-such-class"}))
    k8s.apply(finetune())
    waiting = wait_for(lambda: (lambda c: c if c and c["reason"] == "ClaimNotBound" else None)(
        condition(k8s.get("LitGPTModel", "pythia"), "Ready")), "the model to say ClaimNotBound", timeout_s=30)
    assert "claim nowhere is not bound (storage class no-such-class)" in waiting["message"], waiting
    assert k8s.phase("LitGPTModel", "pythia") == "Pending"

    failed = k8s.wait_phase("LitGPTModel", "pythia", "Failed", timeout=60)
    cond = condition(failed, "Failed")
    assert cond["reason"] == "ClaimNotBound", cond
    assert "after 8 s" in cond["message"] and "kubectl describe pvc" in cond["message"], cond
    job = k8s.get("Job", "pythia-download")
    assert job["spec"]["activeDeadlineSeconds"] == 1  # stopped: its pod will not start if the claim binds later
    ft = k8s.wait_phase("FinetuneJob", "ft", "Failed", timeout=30)
    assert condition(ft, "Failed")["reason"] == "ModelFailed"
    assert k8s.get("Job", "ft-finetune") is None

    ended = rechecks(caplog, "LitGPTModel", "pythia")
    assert ended <= 6, f"{ended} re-checks in 8 s: no back-off"
    import time

    time.sleep(6)
    assert rechecks(caplog, "LitGPTModel", "pythia") == ended  # the wait has ended: no more re-checks
    k8s.wait_events(["pythia"], {"ClaimNotBound"})


def test_a_model_deleted_under_a_running_finetune(k8s, runner, caplog):
    """The finetune's Job runs on (the checkpoint is in the claim, which the model does not
    own) and Succeeds; a server of it then waits with reason ModelNotFound, re-checking with
    back-off, and goes ahead once the model is created again."""
    ready_model(k8s)
    k8s.apply(finetune(podMetadata={"annotations": {RUN_SECONDS: "6"}}))
    k8s.wait_phase("FinetuneJob", "ft", "Running", timeout=60)
    k8s.delete("LitGPTModel", "pythia")
    wait_for(lambda: k8s.get("LitGPTModel", "pythia") is None, "the model to be gone", timeout_s=30)
    done = k8s.wait_phase("FinetuneJob", "ft", "Succeeded", timeout=60)
    assert condition(done, "Succeeded")["status"] == "True"

    k8s.apply(server("chat", finetuneRef={"name": "ft"}))
    waiting = k8s.wait_phase("ModelServer", "chat", "Waiting", timeout=30)
    assert condition(waiting, "ModelReady")["reason"] == "ModelNotFound", waiting["status"]
    import time

    time.sleep(12)  # with RETRY_DELAY_SECONDS=1: re-checks at 1, 2, 4, 8 s (12 without back-off)
    assert 2 <= rechecks(caplog, "ModelServer", "chat") <= 5, rechecks(caplog, "ModelServer", "chat")
    assert k8s.get("Deployment", "chat") is None

    ready_model(k8s)  # the server's next re-check finds it
    k8s.wait_phase("ModelServer", "chat", "Ready", timeout=60)


def test_a_server_of_a_failed_finetune_fails_with_reason_finetune_failed(k8s, runner, caplog):
    ready_model(k8s)
    k8s.apply(finetune(backoffLimit=0, podMetadata={"annotations": {EXIT_CODE: "9"}}))
    k8s.wait_phase("FinetuneJob", "ft", "Failed", timeout=60)
    k8s.apply(server("chat", finetuneRef={"name": "ft"}))
    body = k8s.wait_phase("ModelServer", "chat", "Failed", timeout=30)
    cond = condition(body, "Failed")
    assert cond["reason"] == "FinetuneFailed" and "FinetuneJob ft failed" in cond["message"], cond
    assert k8s.get("Deployment", "chat") is None and k8s.get("Service", "chat") is None
    import time

    time.sleep(3)
    assert rechecks(caplog, "ModelServer", "chat") == 0  # a failed dependency ends it: no waiting
    k8s.wait_events(["chat"], {"FinetuneFailed"})
