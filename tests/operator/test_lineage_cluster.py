"""Checkpoints and lineage through the operator with the real runtime (exec node, local Hub):

- a finetune's pod evicted after a checkpoint: the next pod resumes, the FinetuneJob says
  `Resumed` at that step and reports its last checkpoint;
- a Succeeded finetune records status.output (lineage with digests); a LitGPTModel pointing at
  it (source.finetuneRef) is Ready after its weights are checked, and a second FinetuneJob
  finetunes it again; one whose weights were altered is Failed with reason ChecksumMismatch.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.operator.helpers import API, OPERATOR_ENV, ON_EXEC_NODE, OperatorRunner, condition, wait_for, TINY_REPO_ID

pytestmark = pytest.mark.slow
REPO_ID = TINY_REPO_ID
RECORDS = [{"instruction": f"Repeat {w}.", "input": "", "output": w} for w in ("red", "green", "blue", "cyan")]



@pytest.fixture
def operator(k8s, hub, monkeypatch):
    for key, value in {**OPERATOR_ENV, "LITGPT_OPERATOR_HF_ENDPOINT": hub.url}.items():
        monkeypatch.setenv(key, value)
    runner = OperatorRunner(k8s.namespace).start()
    yield runner
    runner.stop()
    assert not runner.crashes(), "\n".join(runner.crashes())


def model(name: str = "tiny") -> dict:
    return {"apiVersion": API, "kind": "LitGPTModel", "metadata": {"name": name},
            "spec": {"repoId": REPO_ID, "checkpointRootPVC": {"claimName": "cache", "size": "1Gi"}, **ON_EXEC_NODE}}


def finetune(name: str, model_name: str, train: dict, method: str = "lora", records=RECORDS) -> dict:
    return {"apiVersion": API, "kind": "FinetuneJob", "metadata": {"name": name},
            "spec": {"modelRef": {"name": model_name}, "method": method,
                     "data": {"inline": json.dumps(records), "valSplitFraction": 0.25},
                     "train": {"globalBatchSize": 1, "microBatchSize": 1, "maxSeqLength": 64, **train},
                     "gpusPerNode": 0, "precision": "32-true", **ON_EXEC_NODE}}


def from_finetune(name: str, finetune_name: str) -> dict:
    return {"apiVersion": API, "kind": "LitGPTModel", "metadata": {"name": name},
            "spec": {"source": {"finetuneRef": {"name": finetune_name}}, **ON_EXEC_NODE}}


def pod_log(k8s, pod: str) -> str:
    folders = (k8s.kube.control_plane.state_dir / "node-agent" / "pods").glob(f"{k8s.namespace}_{pod}_*/logs")
    return "\n".join(p.read_text(errors="replace") for folder in folders for p in sorted(folder.glob("*")) if p.is_file())


def test_an_evicted_finetune_resumes_and_says_where(k8s, operator):
    from kubernetes import client

    k8s.apply([model(), finetune("long", "tiny", {"epochs": 1000, "maxSteps": 80, "saveInterval": 5})])
    first = wait_for(lambda: (k8s.get("FinetuneJob", "long") or {}).get("status", {}).get("currentPod"),
                     "the finetune's first pod", timeout_s=240)
    wait_for(lambda: "Saved checkpoint" in pod_log(k8s, first), "a first checkpoint", timeout_s=180)
    core = client.CoreV1Api(k8s.kube.api_client())
    core.create_namespaced_pod_eviction(first, k8s.namespace, client.V1Eviction(
        metadata=client.V1ObjectMeta(name=first, namespace=k8s.namespace)))
    stopped = wait_for(lambda: re.search(r"Stopped by SIGTERM after step (\d+)", pod_log(k8s, first)),
                       "the evicted pod to stop at a checkpoint")
    step = int(stopped.group(1))

    done = k8s.wait_phase("FinetuneJob", "long", "Succeeded", timeout=300)
    status = done["status"]
    assert status["attempts"] == 2 and status["currentPod"] != first
    resumed = condition(done, "Resumed")
    assert resumed["status"] == "True" and resumed["reason"] == "ResumedFromCheckpoint"
    assert f"step {step} " in resumed["message"] and status["resumedStep"] == step
    assert status["lastCheckpoint"]["step"] == 80
    assert status["lastCheckpoint"]["path"] == f"{status['outputPath']}/step-000080"


def test_a_finetunes_output_becomes_a_model_that_is_finetuned_again(k8s, operator):
    from litgpt_devcluster.node_agent.provisioner import claim_folder
    from litgpt_runtime.checkpoint import checkpoint_digest
    from litgpt_runtime.lineage import dataset_digest

    k8s.apply([model(), finetune("first", "tiny", {"maxSteps": 2}), from_finetune("tuned", "first"),
               finetune("second", "tuned", {"maxSteps": 1}, method="full", records=RECORDS[:2])])
    first = k8s.wait_phase("FinetuneJob", "first", "Succeeded", timeout=300)["status"]
    cache = claim_folder(k8s.kube.control_plane.state_dir / "node-agent", k8s.namespace, "cache")
    output = first["output"]
    final = cache / output["path"]
    assert output["path"] == f"{first['outputPath']}/final" and output["claimName"] == "cache"
    assert output["method"] == "lora" and output["baseRepoId"] == REPO_ID and output["baseRevision"]
    assert output["weightsDigest"] == checkpoint_digest(final)
    assert output["baseDigest"] == k8s.get("LitGPTModel", "tiny")["status"]["digest"]
    assert output["datasetDigest"] == dataset_digest(_written_data(RECORDS))
    assert output["hyperparameters"]["train"]["max_steps"] == 2

    tuned = k8s.wait_phase("LitGPTModel", "tuned", "Ready", timeout=180)
    assert condition(tuned, "Ready")["reason"] == "WeightsVerified"
    assert tuned["status"]["digest"] == output["weightsDigest"]
    assert tuned["status"]["checkpointPath"] == output["path"] and tuned["status"]["baseRepoId"] == REPO_ID

    second = k8s.wait_phase("FinetuneJob", "second", "Succeeded", timeout=300)["status"]["output"]
    assert second["method"] == "full" and second["baseDigest"] == output["weightsDigest"]
    assert second["baseRepoId"] == REPO_ID  # the origin carries through the chain

    # Weights altered after the finetune: a model made from them is refused.
    weights = final / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    k8s.apply([from_finetune("tampered", "first")])
    failed = k8s.wait_phase("LitGPTModel", "tampered", "Failed", timeout=180)
    reason = condition(failed, "Failed")
    assert reason["reason"] == "ChecksumMismatch" and "FinetuneJob first" in reason["message"], reason


def _written_data(records) -> "object":
    """The inline dataset as the pod read it (the ConfigMap's value, a file named data.json)."""
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return path
