"""The operator driving the real runtime: on the node agent's exec node the pods' `litgpt`
commands really run (as local processes), against a local Hub serving a tiny random model.
LitGPTModel downloads and converts it into the claim, a FinetuneJob trains LoRA on CPU, and a
ModelServer serves the result until its /ready readiness probe (a real 1-token answer) passes."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.operator.helpers import API, OPERATOR_ENV, ON_EXEC_NODE, OperatorRunner, condition, TINY_REPO_ID

pytestmark = pytest.mark.slow
REPO_ID = TINY_REPO_ID
RECORDS = [{"instruction": f"Repeat {w}.", "input": "", "output": w} for w in ("red", "green", "blue", "cyan")]



def test_download_finetune_serve_for_real(k8s, hub, monkeypatch):
    from litgpt_devcluster.node_agent.provisioner import claim_folder

    for key, value in {**OPERATOR_ENV, "LITGPT_OPERATOR_HF_ENDPOINT": hub.url}.items():
        monkeypatch.setenv(key, value)
    runner = OperatorRunner(k8s.namespace).start()
    try:
        k8s.apply([
            {"apiVersion": API, "kind": "LitGPTModel", "metadata": {"name": "tiny"},
             "spec": {"repoId": REPO_ID, "checkpointRootPVC": {"claimName": "cache", "size": "1Gi"}, **ON_EXEC_NODE}},
            {"apiVersion": API, "kind": "FinetuneJob", "metadata": {"name": "tiny-lora"},
             "spec": {"modelRef": {"name": "tiny"}, "data": {"inline": json.dumps(RECORDS), "valSplitFraction": 0.25},
                      "train": {"maxSteps": 2, "globalBatchSize": 2, "microBatchSize": 1, "maxSeqLength": 64},
                      "gpusPerNode": 0, "precision": "32-true", **ON_EXEC_NODE}},
            {"apiVersion": API, "kind": "ModelServer", "metadata": {"name": "tiny-chat"},
             "spec": {"finetuneRef": {"name": "tiny-lora"}, "gpus": 0, "port": 18931, **ON_EXEC_NODE}},
        ])
        model = k8s.wait_phase("LitGPTModel", "tiny", "Ready", timeout=180)
        cache = claim_folder(k8s.kube.control_plane.state_dir / "node-agent", k8s.namespace, "cache")
        checkpoint = cache / model["status"]["checkpointPath"]
        assert (checkpoint / ".litgpt_complete.json").is_file() and (checkpoint / "model.safetensors").is_file()
        # The download's digest (from its termination message) is in status, and the finetune pod
        # verifies the weights against it before training.
        from litgpt_runtime.checkpoint import checkpoint_digest

        assert model["status"]["digest"] == checkpoint_digest(checkpoint)

        finetune = k8s.wait_phase("FinetuneJob", "tiny-lora", "Succeeded", timeout=300)
        final = cache / finetune["status"]["outputPath"] / "final"
        assert (final / ".litgpt_complete.json").is_file(), sorted(p.name for p in final.parent.iterdir())

        server = k8s.wait_phase("ModelServer", "tiny-chat", "Ready", timeout=300)
        assert condition(server, "Ready")["reason"] == "ReplicasAvailable"
        assert server["status"]["availableReplicas"] == 1
        # The server process (local on the exec node) generates.
        with urllib.request.urlopen("http://127.0.0.1:18931/v1/models", timeout=30) as response:
            (served,) = json.load(response)["data"]
        request = urllib.request.Request(
            "http://127.0.0.1:18931/v1/completions", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"model": served["id"], "prompt": "Repeat red.", "max_tokens": 3,
                             "temperature": 0}).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert isinstance(answer["choices"][0]["text"], str) and 1 <= answer["usage"]["completion_tokens"] <= 3

        # A corrupted weight file: the next pod that loads the model stops, naming the file.
        finetune_env = {e["name"]: e.get("value") for e in json.loads(k8s.kube.kubectl(
            "get", "job", "tiny-lora-finetune", "-n", k8s.namespace, "-o", "json"))["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert finetune_env["LITGPT_EXPECTED_DIGEST"] == model["status"]["digest"]
        weights = checkpoint / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        k8s.apply([{"apiVersion": API, "kind": "FinetuneJob", "metadata": {"name": "after-corruption"},
                    "spec": {"modelRef": {"name": "tiny"}, "data": {"inline": json.dumps(RECORDS)}, "backoffLimit": 0,
                             "train": {"maxSteps": 1, "globalBatchSize": 1, "microBatchSize": 1},
                             "gpusPerNode": 0, "precision": "32-true", **ON_EXEC_NODE}}])
        broken = k8s.wait_phase("FinetuneJob", "after-corruption", "Failed", timeout=180)
        failed = condition(broken, "Failed")["message"]
        assert "model.safetensors" in failed and "corrupted" in failed and "litgpt download" in failed, failed
    finally:
        runner.stop()
    assert not runner.crashes(), "\n".join(runner.crashes())


def test_a_missing_repo_fails_the_model_at_once_with_reason_not_found(k8s, hub, monkeypatch):
    """404 from the Hub: `litgpt download` exits 4, the Job's podFailurePolicy fails it on that
    first pod (no backoffLimit + 1 pods), and the model is Failed with reason NotFound."""
    for key, value in {**OPERATOR_ENV, "LITGPT_OPERATOR_HF_ENDPOINT": hub.url}.items():
        monkeypatch.setenv(key, value)
    runner = OperatorRunner(k8s.namespace).start()
    try:
        k8s.apply({"apiVersion": API, "kind": "LitGPTModel", "metadata": {"name": "missing"},
                   "spec": {"repoId": "tiny-org/no-such-model", "backoffLimit": 3,
                            "checkpointRootPVC": {"claimName": "cache", "size": "1Gi"}, **ON_EXEC_NODE}})
        failed = k8s.wait_phase("LitGPTModel", "missing", "Failed", timeout=180)
        cond = condition(failed, "Failed")
        assert cond["reason"] == "NotFound", cond
        assert "no-such-model" in cond["message"]
        assert len(k8s.list("Pod")) == 1  # one pod, not backoffLimit + 1
    finally:
        runner.stop()
