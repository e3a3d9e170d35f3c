"""The data check of a FinetuneJob (spec.data.validation): the CPU Job that runs `litgpt
validate_data` before training (pure builder), and the DataValidated condition read from its
pods' termination message (pure)."""

from __future__ import annotations

import json

import pytest

from litgpt_operator import datacheck
from litgpt_operator.api import FINETUNE_JOB
from litgpt_operator.builders import common, finetune, validation
from litgpt_operator.builders.sources import ModelCheckpoint
from litgpt_operator.observe import JobState
from litgpt_operator.settings import Settings
from litgpt_operator.status import TRUE, UNKNOWN
from litgpt_runtime.validate_data import SUMMARY_VERSION

SETTINGS = Settings(runtime_image="example.org/litgpt:test")
CHECKPOINT = ModelCheckpoint("pythia", "EleutherAI/pythia-14m", "model-cache", revision="v2")
QUEUED = common.Parent("litgpt.dev/v1alpha1", "FinetuneJob", "demo", "team-a", "uid-1", 3,
                       queue_labels=((common.QUEUE_LABEL, "gpus"),))


def spec(**extra):
    body = {"modelRef": {"name": "pythia"}, "gpusPerNode": 2,
            "data": {"file": {"claimName": "datasets", "path": "alpaca/train.json"}, "promptStyle": "alpaca"},
            "nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "train": {"maxSeqLength": 512}, **extra}
    return FINETUNE_JOB.parse_spec({"spec": body})


def pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def test_validation_defaults_to_strict_and_takes_only_the_three_modes():
    assert spec().data.validation == "strict"
    schema = json.dumps(FINETUNE_JOB.spec.model_json_schema(by_alias=True))
    assert '"enum": ["strict", "warn", "off"]' in schema


def test_the_check_reads_the_data_as_training_will_on_a_small_cpu_pod():
    s = spec()
    (job,) = validation.build_validation_children(QUEUED, s, CHECKPOINT, SETTINGS)
    (train_job,) = finetune.build_finetune_children(QUEUED, s, CHECKPOINT, SETTINGS)
    command = pod(job)["containers"][0]["command"]
    assert command == ["litgpt", "validate_data", "EleutherAI/pythia-14m@v2", "--checkpoint_root_dir", "/models/checkpoints",
                       "--data", "JSON", "--data.json_path", "/data/alpaca/train.json", "--data.prompt_style", "alpaca",
                       "--data.mask_prompt", "true", "--max_seq_length", "512"]
    # every --data.* flag of the check is training's own, with the same value
    train_command = pod(train_job)["containers"][0]["command"]
    for flag, value in zip(command[5::2], command[6::2]):
        if flag.startswith("--data"):
            assert train_command[train_command.index(flag) + 1] == value, flag
    container = pod(job)["containers"][0]
    assert container["image"] == pod(train_job)["containers"][0]["image"] == "example.org/litgpt:test"
    assert common.GPU_RESOURCE not in json.dumps(container["resources"])  # no GPU taken
    assert container["resources"] == validation.RESOURCES
    assert {"name": "LITGPT_TERMINATION_LOG", "value": "/dev/termination-log"} in container["env"]  # the summary
    mounts = {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": False, "/models": True, "/data": True}  # no output claim, nothing writable
    claims = {v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
              for v in pod(job)["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"model-cache": True, "datasets": True}
    # where the training pods go (the claims may only be reachable there), but never queued behind GPUs
    assert pod(job)["nodeSelector"] == {"pool": "gpu"} and pod(job)["tolerations"] == pod(train_job)["tolerations"]
    assert "suspend" not in job["spec"] and common.QUEUE_LABEL not in job["metadata"]["labels"]
    assert train_job["spec"]["suspend"] is True  # the training Job still is
    assert job["metadata"]["name"] == "demo-validate" != train_job["metadata"]["name"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == validation.DEADLINE_SECONDS
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert pod(job)["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_job_says_what_it_checks_so_a_corrected_spec_is_checked_again():
    def checks(**extra):
        (job,) = validation.build_validation_children(QUEUED, spec(**extra), CHECKPOINT, SETTINGS)
        return job["metadata"]["annotations"][validation.CHECKS_ANNOTATION]

    base = checks()
    assert checks(data={"file": {"claimName": "datasets", "path": "alpaca/fixed.json"}, "promptStyle": "alpaca"}) != base
    assert checks(data={"file": {"claimName": "other", "path": "alpaca/train.json"}, "promptStyle": "alpaca"}) != base
    assert checks(train={"maxSeqLength": 1024}) != base
    # the verdict stands when only what to do with it changes, or the training settings
    assert checks(data={"file": {"claimName": "datasets", "path": "alpaca/train.json"}, "promptStyle": "alpaca",
                        "validation": "warn"}) == base
    assert checks(train={"maxSeqLength": 512, "learningRate": 0.1}, gpusPerNode=4) == base


def test_edited_inline_data_is_a_new_configmap_so_it_is_checked_again_and_a_running_job_keeps_its_own():
    def children(inline: str):
        s = spec(data={"inline": inline}, train={})
        configmap, check = validation.build_validation_children(QUEUED, s, CHECKPOINT, SETTINGS)
        training = finetune.build_finetune_children(QUEUED, s, CHECKPOINT, SETTINGS)[-1]
        volumes = {v["name"]: v for v in pod(training)["volumes"]}
        assert volumes["data"]["configMap"]["name"] == configmap["metadata"]["name"]
        return configmap, check["metadata"]["annotations"][validation.CHECKS_ANNOTATION]

    (first, checked), (fixed, rechecked) = children('[{"instruction": "a"}]'), children('[{"instruction": "a", "output": "b"}]')
    assert first["metadata"]["name"] != fixed["metadata"]["name"] and checked != rechecked
    assert children('[{"instruction": "a"}]')[0] == first  # the same data: the same object, created once
    assert first["metadata"]["name"].startswith(f"{QUEUED.name}-data-")


def test_inline_data_gets_its_configmap_first_and_no_max_seq_length_means_the_models():
    s = spec(data={"inline": '[{"instruction": "a", "output": "b"}]'}, train={})
    configmap, job = validation.build_validation_children(QUEUED, s, CHECKPOINT, SETTINGS)
    assert configmap["kind"] == "ConfigMap" and configmap == finetune.build_finetune_children(QUEUED, s, CHECKPOINT, SETTINGS)[0]
    command = pod(job)["containers"][0]["command"]
    assert "--max_seq_length" not in command and command[command.index("--data.json_path") + 1] == "/data/data.json"


# --- the condition ---------------------------------------------------------------------------------

def summary(valid: bool, message: str, **extra) -> dict:
    return {"version": SUMMARY_VERSION, "valid": valid, "message": message, "files": ["/data/train.json"],
            "records": 120, "promptStyle": "chat", "maxSeqLength": 512, "longest": 700, "truncated": 3, "empty": 0,
            "duplicates": 1, "histogram": {}, **extra}


def terminated_pod(name: str, created: str, exit_code: int, message: str) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "status": {"containerStatuses": [{"name": "litgpt", "state": {"terminated": {
                "exitCode": exit_code, "message": message}}}]}}


FAILED = JobState("Failed", "DataInvalid", "Job demo-validate failed: BackoffLimitExceeded; container exited with code 7")
BAD = "The data is not ready for training: 3 sample(s) longer than the maximum sequence length 512."


def test_the_summary_comes_from_the_newest_pod_that_left_one():
    old = terminated_pod("a", "2026-01-01T00:00:00Z", 7, json.dumps(summary(False, "old")))
    new = terminated_pod("b", "2026-01-01T00:01:00Z", 7, "some log line\n" + json.dumps(summary(False, BAD)))
    crashed = terminated_pod("c", "2026-01-01T00:02:00Z", 1, "Traceback (most recent call last): ...")
    assert datacheck.summary([old, new, crashed])["message"] == BAD
    assert datacheck.summary([crashed]) is None
    assert datacheck.summary([terminated_pod("d", "", 0, json.dumps({"version": SUMMARY_VERSION + 1, "valid": True}))]) is None
    assert datacheck.status_fields(summary(True, "ok")) == {
        "records": 120, "longest": 700, "truncated": 3, "maxSeqLength": 512, "empty": 0, "duplicates": 1,
        "promptStyle": "chat"}


def test_strict_failure_names_the_problem_and_says_no_training_job_was_made():
    cond = datacheck.condition(FAILED, summary(False, BAD), "demo-validate", strict=True)
    assert (cond.type, cond.status, cond.reason) == ("DataValidated", "False", "DataInvalid")
    assert cond.message.startswith(BAD) and "records 120, longest 700 tokens, 3 longer than 512" in cond.message
    assert "No training Job was created" in cond.message and cond.warning
    warned = datacheck.condition(FAILED, summary(False, BAD), "demo-validate", strict=False)
    assert warned.status == "False" and "Training runs anyway" in warned.message


def test_a_bad_record_is_named_and_a_crash_without_summary_keeps_the_pods_reason():
    where = "/data/train.json:3: a record needs 'instruction' and 'output', or 'messages'."
    cond = datacheck.condition(FAILED, summary(False, where, records=2, longest=0, truncated=0), "v", strict=True)
    assert cond.reason == "DataInvalid" and cond.message.startswith(where)
    crash = JobState("Failed", "OOMKilled", "Job v failed: container litgpt of pod v-x exited with code 137 (OOMKilled...)")
    cond = datacheck.condition(crash, None, "v", strict=True)
    assert cond.reason == "OOMKilled" and cond.message.startswith(crash.message)


def test_passed_running_and_stuck():
    ok = datacheck.condition(JobState("Succeeded", "JobSucceeded", ""), summary(True, "120 records OK."), "v", True)
    assert ok.status == TRUE and ok.reason == "DataValid" and ok.message.startswith("120 records OK.")
    bare = datacheck.condition(JobState("Succeeded", "JobSucceeded", ""), None, "v", True)
    assert bare.status == TRUE and "left no summary" in bare.message
    running = datacheck.condition(JobState("Running", "JobRunning", "1 pod(s) running"), None, "v", True)
    assert (running.status, running.reason) == (UNKNOWN, "Validating") and not running.warning
    stuck = datacheck.condition(JobState("Pending", "ImagePullBackOff", "cannot pull"), None, "v", True)
    assert (stuck.status, stuck.reason) == (UNKNOWN, "ImagePullBackOff") and stuck.warning


@pytest.mark.parametrize("mode", ["strict", "warn", "off"])
def test_the_api_server_schema_accepts_each_mode(mode):
    assert spec(data={"inline": "[]", "validation": mode}).data.validation == mode
