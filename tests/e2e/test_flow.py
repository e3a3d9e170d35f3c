"""The end-to-end flow of issue 6, asserted step by step: the chart's operator (a pod on the exec
node) takes a tiny model from the local Hub through finetune, serve (queried with the `openai`
client), a two-node pretrain and a failing finetune, then everything is deleted.

The steps are `litgpt_devcluster.e2e`'s (`make demo` runs the same code); this test adds the assertions.
"""

from __future__ import annotations

import json
import uuid

import pytest

from litgpt_devcluster import e2e

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture
def flow(kube, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    names = e2e.Names(namespace=f"e2e-{suffix}", operator_namespace=f"e2e-op-{suffix}",
                      release=f"e2e-op-{suffix}")
    flow = e2e.Flow(kube.control_plane, tmp_path, names=names, say=print)
    flow.create_namespaces()
    yield flow
    flow.stop_hub()
    flow.uninstall_chart()
    for ns in (names.namespace, names.operator_namespace):
        kube.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def env_of(pod: dict) -> dict[str, dict]:
    return {e["name"]: e for e in pod["spec"]["containers"][0].get("env") or []}


def test_apply_to_a_served_finetuned_model_and_back_to_nothing(flow):
    names = flow.names
    # 1. the chart: the operator runs as a pod on the exec node under the chart's ServiceAccount
    hub_url = flow.start_hub()
    pod = flow.install_chart(hub_url)
    assert pod["spec"]["nodeName"] == "exec-0"
    assert pod["spec"]["serviceAccountName"] == f"{names.release}-litgpt-operator"

    # 2. the model; the FinetuneJob applied with it waits for it
    flow.write_datasets()
    flow.apply_model_and_finetune()
    checkpoint = flow.model_ready()
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "model_config.yaml").is_file()
    assert json.loads((checkpoint / ".litgpt_complete.json").read_text())["repo_id"] == e2e.REPO_ID
    assert flow.hub.count("GET", "model.safetensors") >= 1, "the model did not come from the local Hub"

    # 3. the finetune succeeds with its output in the status
    output = flow.finetune_succeeded()
    assert "Waiting" in flow.seen_phases[names.finetune], flow.seen_phases
    assert (output / "hyperparameters.yaml").is_file()

    # 4. the finetuned output served; the openai client gets an answer through the Service's port.
    # The finetune learnt: asked a training question (greedy), the finetuned model gives the trained
    # answer and the base model, served beside it, does not.
    flow.apply_server({"finetuneRef": {"name": names.finetune}})
    # The base model's server holds the finetune as a LoRA adapter too: asked by its name, the
    # same pods give the trained answer (spec.adapters).
    flow.apply_server(flow.base_server_ref(), name=names.base_server)
    address = flow.server_address()
    assert address == f"http://127.0.0.1:{flow.server_ports[names.server]}"
    finetuned, base = flow.finetuned_and_base_answers()
    assert finetuned.strip() == e2e.TRAINED_ANSWER, (finetuned, base)
    assert base.strip() != e2e.TRAINED_ANSWER, (finetuned, base)
    assert flow.adapter_answer().strip() == e2e.TRAINED_ANSWER

    # 5. pretraining from scratch on 2 nodes: 2 pods with the distributed environment
    flow.apply_pretrain()
    status, pods = flow.pretrain_succeeded()
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    ranks = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert ranks == ["0", "1"]
    for p in pods:
        env = env_of(p)
        assert env["WORLD_SIZE"]["value"] == "2"
        assert env["MASTER_ADDR"]["value"].startswith(f"{status['jobName']}-0.")
        assert "NODE_RANK" in env
        assert p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    out = flow.claim_folder(status["outputClaimName"]) / status["outputPath"]
    assert any(out.rglob(".litgpt_complete.json")), f"no pretrained checkpoint under {out}"

    # 6. a broken dataset: Failed with a reason naming the problem; the others untouched
    before = {k: flow.get(k, n)["metadata"]["resourceVersion"] for k, n in
              (("LitGPTModel", names.model), ("FinetuneJob", names.finetune), ("PretrainJob", names.pretrain))}
    flow.apply_broken()
    failed = flow.broken_failed()
    assert failed.get("status") == "True"
    message = failed.get("message", "")
    assert "broken.json" in message and "JSON" in message, failed
    assert flow.phase("LitGPTModel", names.model) == "Ready"
    assert flow.phase("FinetuneJob", names.finetune) == "Succeeded"
    assert flow.phase("PretrainJob", names.pretrain) == "Succeeded"
    assert flow.phase("ModelServer", names.server) == "Ready"
    assert flow.phase("ModelServer", names.base_server) == "Ready"
    after = {k: flow.get(k, n)["metadata"]["resourceVersion"] for k, n in
             (("LitGPTModel", names.model), ("FinetuneJob", names.finetune), ("PretrainJob", names.pretrain))}
    assert after == before
    assert flow.ask(address)[1].strip(), "the server stopped answering"

    # 7. delete everything: no objects, pods, jobs, claims or processes left
    assert e2e.pod_processes(flow.agent_dir, names.namespace), "the server process should be running until now"
    flow.delete_all()
    flow.nothing_left()
    assert flow.leftovers() == {}
