"""The API server itself refuses bad objects, with a message a user can act on; every example
manifest is accepted. Only the CRDs are needed (no operator)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))

MODEL = {"apiVersion": "litgpt.dev/v1alpha1", "kind": "LitGPTModel", "metadata": {"name": "m"},
         "spec": {"repoId": "EleutherAI/pythia-14m", "checkpointRootPVC": {"claimName": "cache"}}}
FINETUNE = {"apiVersion": "litgpt.dev/v1alpha1", "kind": "FinetuneJob", "metadata": {"name": "f"},
            "spec": {"modelRef": {"name": "m"}, "data": {"inline": "[]"}}}
PRETRAIN = {"apiVersion": "litgpt.dev/v1alpha1", "kind": "PretrainJob", "metadata": {"name": "p"},
            "spec": {"modelName": "pythia-14m", "tokenizerRef": {"name": "m"},
                     "data": {"file": {"claimName": "corpus", "path": "text"}}}}
SERVER = {"apiVersion": "litgpt.dev/v1alpha1", "kind": "ModelServer", "metadata": {"name": "s"},
          "spec": {"modelRef": {"name": "m"}}}


def with_spec(base: dict, **spec) -> dict:
    return {**base, "spec": {**base["spec"], **spec}}


def rejected(k8s, obj: dict) -> str:
    """Apply `obj` (server-side dry run) and return the API server's refusal."""
    with pytest.raises(subprocess.CalledProcessError) as error:
        k8s.kube.kubectl("apply", "--dry-run=server", "-n", k8s.namespace, "-f", "-", input=yaml.safe_dump(obj))
    return error.value.stderr


@pytest.mark.parametrize("obj,expected", [
    (with_spec(FINETUNE, method="qlora"),
     'spec.method: Unsupported value: "qlora": supported values: "lora", "full", "adapter", "adapter_v2"'),
    (with_spec(FINETUNE, train={"microBatchSize": -1}),
     "spec.train.microBatchSize: Invalid value: -1: spec.train.microBatchSize in body should be greater than or equal to 1"),
    (with_spec(FINETUNE, train={"globalBatchSize": 10, "microBatchSize": 4}),
     "globalBatchSize must be a multiple of microBatchSize"),
    (with_spec(FINETUNE, data={"inline": "[]", "configMap": {"name": "x", "key": "data.json"}}),
     "set exactly one of file, configMap or inline"),
    (with_spec(FINETUNE, method="full", lora={"r": 4}), "lora settings apply only to method lora"),
    (with_spec(PRETRAIN, fromScratch=False),
     "fromScratch is false: set initialCheckpoint to the LitGPTModel to continue from"),
    ({**PRETRAIN, "spec": {k: v for k, v in PRETRAIN["spec"].items() if k != "tokenizerRef"}},
     "fromScratch is true: set tokenizerRef"),
    (with_spec(PRETRAIN, modelConfig={"n_layer": 2}), "set modelName or modelConfig, not both"),
    (with_spec(SERVER, finetuneRef={"name": "f"}), "set exactly one of modelRef or finetuneRef"),
    ({**SERVER, "spec": {"replicas": 1}}, "set exactly one of modelRef or finetuneRef"),
    (with_spec(MODEL, repoId="not-a-repo-id"), "spec.repoId: Invalid value"),
    (with_spec(SERVER, quantize="bnb.nf4", adapters=[{"name": "a", "finetuneRef": {"name": "f"}}]),
     "quantize does not combine with adapters"),
    (with_spec(MODEL, source={"finetuneRef": {"name": "f"}}), "set exactly one of repoId or source"),
    ({**MODEL, "spec": {"source": {"finetuneRef": {"name": "f"}}, "checkpointRootPVC": {"claimName": "c"}}},
     "checkpointRootPVC goes with repoId"),
    ({**MODEL, "spec": {"source": {"finetuneRef": {"name": "f"}}, "revision": "v2"}},
     "revision and tokenSecretRef apply only to a model downloaded from repoId"),
    ({**MODEL, "spec": {"checkpointRootPVC": {"claimName": "c"}}}, "set exactly one of repoId or source"),
    (with_spec(FINETUNE, data={"file": {"claimName": "d", "path": "../../etc/passwd"}}), "spec.data.file.path"),
    # Inputs that reach the pod's argv or paths (issue 19's review).
    (with_spec(PRETRAIN, modelName="--config=/etc/passwd"), "spec.modelName: Invalid value"),
    (with_spec(FINETUNE, data={"configMap": {"name": "x", "key": ".."}}), "spec.data.configMap.key: Invalid value"),
    (with_spec(FINETUNE, data={"configMap": {"name": "x", "key": "a/b"}}), "spec.data.configMap.key: Invalid value"),
    (with_spec(FINETUNE, output={"path": "checkpoints/EleutherAI/pythia-14m"}),
     "output.path must not be inside checkpoints/"),
    (with_spec(PRETRAIN, output={"path": "./checkpoints"}), "output.path must not be inside checkpoints/"),
    (with_spec(FINETUNE, method="full", quantize="bnb.nf4"), "quantize (QLoRA) applies only to method lora"),
    (with_spec(FINETUNE, quantize="bnb.nf4", precision="bf16-mixed"), "quantize does not combine with a mixed precision"),
    (with_spec(FINETUNE, quantize="bnb.nf5"), "spec.quantize: Unsupported value"),
    # ModelServer adapters: what the API server can tell without looking at the finetunes
    (with_spec(SERVER, adapters=[{"name": "a", "finetuneRef": {"name": "f1"}}, {"name": "a", "finetuneRef": {"name": "f2"}}]),
     "adapter names must be unique"),
    (with_spec(SERVER, adapters=[{"name": "a=b,c", "finetuneRef": {"name": "f1"}}]), "spec.adapters[0].name: Invalid value"),
    (with_spec(SERVER, adapters=[{"name": f"a{i}", "finetuneRef": {"name": "f"}} for i in range(17)]),
     "spec.adapters: Too many: 17: must have at most 16 items"),
    ({**SERVER, "spec": {"finetuneRef": {"name": "f"}, "adapters": [{"name": "a", "finetuneRef": {"name": "f1"}}]}},
     "adapters need modelRef"),
], ids=["unknown-method", "negative-batch", "batch-multiple", "two-data-sources", "lora-on-full",
        "no-initial-checkpoint", "scratch-without-tokenizer", "name-and-config", "both-refs", "neither-ref", "bad-repo-id",
        "quantize-with-adapters", "repo-and-source", "source-with-claim", "source-with-revision", "neither-repo-nor-source",
        "path-escape", "model-name-option", "configmap-key-dotdot", "configmap-key-slash", "output-in-cache",
        "output-in-cache-dot", "quantize-on-full", "quantize-mixed", "quantize-unknown", "adapter-names-twice",
        "adapter-name-syntax", "too-many-adapters", "adapters-without-model"])
def test_invalid_objects_are_rejected_with_a_readable_message(k8s, obj, expected):
    message = rejected(k8s, obj)
    assert expected in message, message


def test_defaults_are_applied_by_the_server(k8s):
    k8s.apply(FINETUNE)
    stored = k8s.get("FinetuneJob", "f")["spec"]
    assert stored["method"] == "lora" and stored["train"]["globalBatchSize"] == 16 and stored["nodes"] == 1
    k8s.apply(PRETRAIN)
    assert k8s.get("PretrainJob", "p")["spec"]["fromScratch"] is True


def test_printer_columns_short_names_and_category(k8s):
    k8s.apply(with_spec(FINETUNE, method="full"))
    table = k8s.kube.kubectl("get", "ftj", "-n", k8s.namespace)
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "MODEL", "METHOD", "PHASE", "STEP", "LOSS", "ETA", "AGE"]
    assert row.split()[:3] == ["f", "m", "full"]
    assert "finetunejob.litgpt.dev/f" in k8s.kube.kubectl("get", "litgpt", "-n", k8s.namespace, "-o", "name")


def test_kubectl_explain_documents_fields(k8s):
    text = k8s.kube.kubectl("explain", "finetunejob.spec.method")
    assert "Finetuning method" in text
    assert "LitGPTModel whose checkpoint is the starting point" in k8s.kube.kubectl(
        "explain", "pretrainjob.spec.initialCheckpoint")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(k8s, path):
    out = k8s.kube.kubectl("apply", "--dry-run=server", "-n", k8s.namespace, "-f", str(path))
    kinds = {doc["kind"] for doc in yaml.safe_load_all(path.read_text())}
    assert all(kind.lower() in out for kind in kinds), out


@pytest.mark.parametrize("base,change,field", [
    (FINETUNE, {"method": "full"}, "method"),
    (FINETUNE, {"modelRef": {"name": "other"}}, "modelRef"),
    (FINETUNE, {"data": {"inline": "[{}]"}}, "data"),
    (PRETRAIN, {"modelName": "pythia-70m"}, "modelName"),
    (PRETRAIN, {"data": {"file": {"claimName": "corpus", "path": "other"}}}, "data"),
], ids=["finetune-method", "finetune-model", "finetune-data", "pretrain-model", "pretrain-data"])
def test_what_a_job_trains_is_immutable_once_started(k8s, base, change, field):
    # GitOps: editing a field that a started/finished Job would silently ignore is refused, with the fix.
    created = {**base, "metadata": {"name": f"immutable-{field.lower()}"}}
    apply = ["apply", "-n", k8s.namespace, "-f", "-"]
    k8s.kube.kubectl(*apply, input=yaml.safe_dump(created))
    # Not started yet (waiting for its model, refused by the fit check): still correctable.
    k8s.kube.kubectl("apply", "--dry-run=server", *apply[1:], input=yaml.safe_dump(with_spec(created, **change)))
    k8s.kube.kubectl("patch", base["kind"].lower(), created["metadata"]["name"], "-n", k8s.namespace,
                     "--subresource=status", "--type=merge", "-p", '{"status": {"startTime": "2026-01-01T00:00:00Z"}}')
    message = rejected(k8s, with_spec(created, **change))
    assert f"spec.{field}: Forbidden: spec.{field} is immutable once the {base['kind']} has started" in message, message
    assert f"create a new {base['kind']}" in message, message
    # Hyperparameters stay editable (the operator reports them as not applied to a finished job).
    k8s.kube.kubectl("apply", "--dry-run=server", *apply[1:], input=yaml.safe_dump(with_spec(created, train={"learningRate": 0.01})))
    # Applying the same manifest again is a no-op.
    assert "unchanged" in k8s.kube.kubectl(*apply, input=yaml.safe_dump(created))
