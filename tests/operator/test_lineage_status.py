"""Checkpoints and lineage in status, pure (no cluster): lastCheckpoint and the Resumed condition
from the runtime's progress record; status.output from a finetune's lineage record; a
LitGPTModel made from a FinetuneJob's output as the checkpoint its users load; the verify Job."""

from __future__ import annotations

import json

from tests.operator.finetune_bodies import SETTINGS, finetune_body

from litgpt_operator import observe, progress
from litgpt_operator.api import FINETUNE_JOB, LITGPT_MODEL, MODEL_SERVER
from litgpt_operator.builders import common
from litgpt_operator.builders.finetune import build_finetune_children
from litgpt_operator.builders.model import build_verify_job
from litgpt_operator.builders.server import ServeSource, build_deployment
from litgpt_operator.builders.sources import ModelCheckpoint, OutputLocation
from litgpt_operator.handlers.finetune import output_status
from litgpt_runtime.lineage import TERMINATION_PREFIX
from litgpt_runtime.progress_record import Checkpoint, ProgressRecord

OUTPUT = OutputLocation("cache", "finetunes/ft")
DIGEST = "sha256:" + "ab" * 32


def test_last_checkpoint_is_the_records_folder_inside_the_output_claim():
    record = ProgressRecord(step=120, event="checkpoint", resumed_from_step=80,
                            last_checkpoint=Checkpoint(100, "/output/finetunes/ft/step-000100", "2026-01-01T00:00:00Z"))
    record = ProgressRecord.from_dict(json.loads(record.to_line().split(" ", 1)[1]))  # through the wire format
    checkpoint = progress.last_checkpoint(record, OUTPUT)
    assert checkpoint == {"step": 100, "path": "finetunes/ft/step-000100", "time": "2026-01-01T00:00:00Z"}
    assert progress.last_checkpoint(ProgressRecord(step=3), OUTPUT) is None  # none saved yet
    assert progress.last_checkpoint(None, OUTPUT) is None

    resumed = progress.resumed_condition(80, 2, checkpoint)
    assert (resumed.type, resumed.status, resumed.reason) == ("Resumed", "True", "ResumedFromCheckpoint")
    assert "Attempt 2" in resumed.message and "step 80" in resumed.message and "step-000100" in resumed.message
    assert progress.resumed_condition(None, 1, None) is None


def _succeeded_pod(message: str) -> dict:
    return {"metadata": {"name": "ft-finetune-abc", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"containerStatuses": [{"name": "litgpt", "state": {"terminated": {"exitCode": 0,
                                                                                          "message": message}}}]}}


def test_status_output_carries_the_runtimes_lineage_record():
    lineage = {"version": 1, "path": "/output/finetunes/ft/final", "method": "lora", "baseRepoId": "org/base",
               "baseRevision": "0123abc", "baseDigest": DIGEST, "datasetDigest": DIGEST, "weightsDigest": DIGEST,
               "hyperparameters": {"train": {"max_steps": 2}}}
    pods = [_succeeded_pod(TERMINATION_PREFIX + json.dumps(lineage))]
    output = output_status(pods, {"outputClaimName": "cache", "outputPath": "finetunes/ft"})
    assert output == {"path": "finetunes/ft/final", "claimName": "cache", "method": "lora", "baseRepoId": "org/base",
                      "baseRevision": "0123abc", "baseDigest": DIGEST, "datasetDigest": DIGEST,
                      "weightsDigest": DIGEST, "hyperparameters": {"train": {"max_steps": 2}}}
    # the status schema accepts it as is
    FINETUNE_JOB.status.model_validate({"phase": "Succeeded", "output": output})
    # a finetune whose pod left no record still says where its checkpoint is
    assert output_status([_succeeded_pod("done")], {"outputClaimName": "cache", "outputPath": "finetunes/ft"}) \
        == {"path": "finetunes/ft/final", "claimName": "cache"}
    assert observe.reported_lineage([]) is None


def finetuned_model_body() -> dict:
    return {"apiVersion": "litgpt.dev/v1alpha1", "kind": "LitGPTModel",
            "metadata": {"name": "tuned", "namespace": "team-a", "uid": "uid-tuned", "generation": 1},
            "spec": {"source": {"finetuneRef": {"name": "ft"}}},
            "status": {"phase": "Ready", "claimName": "outputs", "checkpointPath": "finetunes/ft/final",
                       "digest": DIGEST, "baseRepoId": "meta-llama/Llama-3.1-8B"}}


def test_a_model_from_a_finetune_is_loaded_from_its_output_folder_with_its_digest():
    model = ModelCheckpoint.from_body(finetuned_model_body())
    assert model.ref == "/models/finetunes/ft/final" and model.claim_name == "outputs"
    assert model.sized_as == "meta-llama/Llama-3.1-8B"  # the fit check sizes the architecture it has

    # finetuned again: the runtime gets the folder, checks the digest, and the new output lands in that claim
    body = finetune_body(name="again", method="full")
    job = next(c for c in build_finetune_children(common.Parent.from_body(body), FINETUNE_JOB.parse_spec(body),
                                                  model, SETTINGS) if c["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[:3] == ["litgpt", "finetune_full", "/models/finetunes/ft/final"]
    assert {"name": "LITGPT_EXPECTED_DIGEST", "value": DIGEST} in pod["containers"][0]["env"]
    # where the runtime leaves the lineage record that becomes status.output
    assert {"name": "LITGPT_TERMINATION_LOG", "value": "/dev/termination-log"} in pod["containers"][0]["env"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert set(claims.values()) == {"outputs"}  # read from and written to the finetune's output claim

    # served
    server = {"apiVersion": "litgpt.dev/v1alpha1", "kind": "ModelServer",
              "metadata": {"name": "s", "namespace": "team-a", "uid": "uid-s", "generation": 1},
              "spec": {"modelRef": {"name": "tuned"}, "gpus": 0}}
    deployment = build_deployment(common.Parent.from_body(server), MODEL_SERVER.parse_spec(server), ServeSource(model),
                                  SETTINGS)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["litgpt", "serve", "/models/finetunes/ft/final"]
    assert {"name": "LITGPT_EXPECTED_DIGEST", "value": DIGEST} in container["env"]


def test_the_verify_job_checks_the_output_against_the_recorded_digest():
    body = finetuned_model_body()
    job = build_verify_job(common.Parent.from_body(body), LITGPT_MODEL.parse_spec(body), "outputs",
                           "finetunes/ft/final", DIGEST, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["litgpt", "verify", "/models/finetunes/ft/final", "--digest", DIGEST]
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"] == {"claimName": "outputs", "readOnly": True}
    assert all(m["readOnly"] for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and 6 in rule["onExitCodes"]["values"]  # ChecksumMismatch: final
    # the verify pod's failure is named by the runtime's exit code
    failed = {"metadata": {"name": "v", "creationTimestamp": "2026-01-01T00:00:00Z"},
              "status": {"phase": "Failed", "containerStatuses": [{"name": "litgpt", "state": {"terminated": {
                  "exitCode": 6, "reason": "Error", "message": "ChecksumMismatch: not the expected digest"}}}]}}
    assert observe.pod_problem(failed).reason == "ChecksumMismatch"


def test_a_model_from_a_finetune_is_woken_when_the_finetune_settles():
    from litgpt_operator.handlers.kopf_wiring import REFERENCES, referenced_names

    assert REFERENCES["LitGPTModel"] == {"source.finetuneRef": "FinetuneJob"}
    assert referenced_names({"source": {"finetuneRef": {"name": "ft"}}}, "source.finetuneRef") == ["ft"]
    assert referenced_names({"repoId": "org/name"}, "source.finetuneRef") == []
    # not Ready yet: no folder to point at, and no crash reading it
    body = finetuned_model_body()
    body["status"] = {"phase": "Waiting"}
    assert ModelCheckpoint.from_body(body).claim_name == ""
