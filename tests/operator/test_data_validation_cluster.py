"""spec.data.validation against the real API server and the simulated nodes (the check's pod is
scripted with the node agent's exit-code annotation; the real `litgpt validate_data` on the exec
node: test_watch_training_cluster.py): strict stops before any training Job, warn trains anyway,
off runs no check."""

from __future__ import annotations

import pytest

from tests.operator.helpers import EXIT_CODE, INLINE_DATA, condition, finetune, ready_model, wait_for

INVALID = {EXIT_CODE: "7"}  # `litgpt validate_data`'s exit status for bad data (errors.InvalidData)


def jobs(k8s) -> set[str]:
    return {j["metadata"]["name"] for j in k8s.list("Job")}


def test_strict_failed_check_fails_the_job_without_a_training_job(k8s, operator):
    ready_model(k8s)
    k8s.apply(finetune(podMetadata={"annotations": INVALID}))
    body = k8s.wait_phase("FinetuneJob", "ft", "Failed")
    checked, failed = condition(body, "DataValidated"), condition(body, "Failed")
    assert checked["status"] == "False" and checked["reason"] == "DataInvalid", checked
    assert failed["reason"] == "DataInvalid" and "No training Job was created" in failed["message"], failed
    assert condition(body, "Succeeded")["status"] == "False"
    assert jobs(k8s) == {"pythia-download", "ft-validate"}  # never ft-finetune
    (check,) = k8s.list("Pod", {"batch.kubernetes.io/job-name": "ft-validate"})
    assert "nvidia.com/gpu" not in str(check["spec"]["containers"][0]["resources"])
    assert check["spec"]["containers"][0]["command"][:2] == ["litgpt", "validate_data"]
    k8s.wait_events(["ft"], {"DataInvalid"})
    # Told to train anyway, the same object goes on from the check it already has (no new check).
    k8s.apply(finetune(podMetadata={"annotations": INVALID}, data={"inline": INLINE_DATA, "validation": "warn"}))
    wait_for(lambda: "ft-finetune" in jobs(k8s), "the training Job once validation is warn")
    assert len(k8s.list("Pod", {"batch.kubernetes.io/job-name": "ft-validate"})) == 1


@pytest.mark.parametrize("fix", [{"inline": INLINE_DATA, "promptStyle": "alpaca"},
                                 {"inline": '[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]'}],
                         ids=["another prompt style", "edited inline data"])
def test_a_corrected_spec_is_checked_again_and_the_job_continues(k8s, operator, fix):
    ready_model(k8s)
    k8s.apply(finetune(podMetadata={"annotations": INVALID}))
    first = k8s.wait_phase("FinetuneJob", "ft", "Failed")
    assert "delete Job ft-validate to check again" in condition(first, "DataValidated")["message"]
    old_uid = k8s.get("Job", "ft-validate")["metadata"]["uid"]
    # the fix (and the scripted failure gone): the check runs again, on the data as it is now, passes, it trains
    k8s.apply(finetune(data=fix))
    body = k8s.wait_phase("FinetuneJob", "ft", "Succeeded", timeout=90)
    assert condition(body, "DataValidated")["status"] == "True"
    assert k8s.get("Job", "ft-validate")["metadata"]["uid"] != old_uid
    assert "DataChanged" in k8s.event_reasons("ft")
    (volume,) = [v for v in k8s.get("Job", "ft-finetune")["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert k8s.get("ConfigMap", volume["configMap"]["name"])["data"]["data.json"] == fix["inline"]


def test_warn_reports_and_trains_and_off_skips_the_check(k8s, operator):
    ready_model(k8s)
    k8s.apply(finetune(podMetadata={"annotations": INVALID}, data={"inline": INLINE_DATA, "validation": "warn"}))
    k8s.apply(finetune("unchecked", data={"inline": INLINE_DATA, "validation": "off"}))
    k8s.apply(finetune("checked"))
    wait_for(lambda: {"ft-finetune", "unchecked-finetune", "checked-finetune"} <= jobs(k8s), "three training Jobs")
    warned = condition(k8s.get("FinetuneJob", "ft"), "DataValidated")
    assert warned["status"] == "False" and "Training runs anyway" in warned["message"], warned
    assert "unchecked-validate" not in jobs(k8s)
    assert condition(k8s.get("FinetuneJob", "unchecked"), "DataValidated") is None
    body = k8s.wait_phase("FinetuneJob", "checked", "Succeeded")
    assert condition(body, "DataValidated")["status"] == "True"  # kept from before the training Job
    phases = [e["reason"] for e in k8s.events("checked")]
    assert "DataValid" in phases, phases
