"""Many LoRA finetunes, one ModelServer, for real on the exec node: two FinetuneJobs of one tiny
model learn different answers to the same question, one ModelServer serves both as adapters on one
copy of the base weights, and the official `openai` client gets each finetune's answer by `model`.
Then the operator's refusals: an adapter of another method is Failed with the reason, and an
adapter whose finetune has not succeeded makes the server wait (the previous pods keep serving)."""

from __future__ import annotations

import json

import pytest

from tests.operator.helpers import API, OPERATOR_ENV, ON_EXEC_NODE, OperatorRunner, condition, TINY_REPO_ID

pytestmark = pytest.mark.slow
REPO_ID = TINY_REPO_ID
QUESTION = "Say hello."
ANSWERS = {"english": "Hello!", "french": "Bonjour!"}
PORT = 18933


def records(answer: str) -> list[dict]:
    # The question with this finetune's answer, among a few others both share (as e2e.GOOD_DATA).
    return [{"instruction": QUESTION, "input": "", "output": answer},
            {"instruction": "Name a colour.", "input": "", "output": "Blue."},
            {"instruction": "Say goodbye.", "input": "", "output": "Goodbye!"}]


def finetune(name: str, answer: str, method: str = "lora") -> dict:
    spec = {"modelRef": {"name": "tiny"}, "method": method, "data": {"inline": json.dumps(records(answer))},
            # long and hot enough for the tiny model to learn three answers by heart (e2e.py's recipe)
            "train": {"epochs": 16, "globalBatchSize": 2, "microBatchSize": 2, "maxSeqLength": 64,
                      "learningRate": 0.03, "lrWarmupSteps": 3},
            "gpusPerNode": 0, "precision": "32-true", **ON_EXEC_NODE}
    if method == "lora":
        spec["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0, "mlp": True, "head": True}
    return {"apiVersion": API, "kind": "FinetuneJob", "metadata": {"name": name}, "spec": spec}


def server(adapters: list[tuple[str, str]]) -> dict:
    return {"apiVersion": API, "kind": "ModelServer", "metadata": {"name": "many"},
            "spec": {"modelRef": {"name": "tiny"}, "gpus": 0, "port": PORT, "maxNewTokens": 12,
                     "adapters": [{"name": n, "finetuneRef": {"name": f}} for n, f in adapters], **ON_EXEC_NODE}}



def ask(model: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key="not-needed", timeout=120, max_retries=2)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                           max_tokens=12, temperature=0)
    return reply.choices[0].message.content or ""


def test_two_lora_finetunes_served_by_one_server_answer_by_model(k8s, hub, monkeypatch):
    from openai import OpenAI

    for key, value in {**OPERATOR_ENV, "LITGPT_OPERATOR_HF_ENDPOINT": hub.url}.items():
        monkeypatch.setenv(key, value)
    runner = OperatorRunner(k8s.namespace).start()
    try:
        k8s.apply([
            {"apiVersion": API, "kind": "LitGPTModel", "metadata": {"name": "tiny"},
             "spec": {"repoId": REPO_ID, "checkpointRootPVC": {"claimName": "cache", "size": "1Gi"}, **ON_EXEC_NODE}},
            finetune("ft-english", ANSWERS["english"]),
            finetune("ft-french", ANSWERS["french"]),
            server([("english", "ft-english"), ("french", "ft-french")]),
        ])
        waiting = k8s.wait_phase("ModelServer", "many", "Waiting", timeout=120)
        assert condition(waiting, "Ready")["status"] == "False"
        for name in ("ft-english", "ft-french"):
            k8s.wait_phase("FinetuneJob", name, "Succeeded", timeout=420)
        ready = k8s.wait_phase("ModelServer", "many", "Ready", timeout=300)
        assert ready["status"]["adapters"] == ["english", "french"]
        assert condition(ready, "AdaptersReady")["status"] == "True"
        assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]

        client = OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key="not-needed", timeout=60, max_retries=2)
        assert {m.id for m in client.models.list().data} == {REPO_ID, "english", "french"}
        answers = {name: ask(name) for name in ("english", "french")}
        assert answers == ANSWERS, answers
        assert ask(REPO_ID) not in ANSWERS.values()  # the random base knows neither

        # A full finetune is a whole model, not an adapter: refused with the reason, and the
        # pods of the previous spec keep serving (both adapters still answer).
        k8s.apply([finetune("ft-full", "Hi.", method="full"),
                   server([("english", "ft-english"), ("french", "ft-french"), ("full", "ft-full")])])
        failed = k8s.wait_phase("ModelServer", "many", "Failed", timeout=120)
        cond = condition(failed, "Failed")
        assert cond["reason"] == "AdapterNotLoRA" and "ft-full" in cond["message"], cond
        assert condition(failed, "Ready")["status"] == "False"
        assert ask("french") == ANSWERS["french"]
    finally:
        runner.stop()
    assert not runner.crashes(), "\n".join(runner.crashes())
