"""The pydantic models of the four kinds and the CRDs generated from them (no cluster)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from litgpt_operator.api import FINETUNE_JOB, KINDS, LITGPT_MODEL, MODEL_SERVER, PRETRAIN_JOB
from litgpt_operator.api.common import RELATIVE_PATH_PATTERN
from litgpt_operator.api.crd import build_crd


def walk(node, path="$"):
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crd_schema_is_structural(kind):
    """What the API server demands of a v1 CRD schema (it refuses the CRD otherwise)."""
    schema = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert "$ref" not in node and "allOf" not in node and "oneOf" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
        else:
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "title" not in node, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool), f"{path}: {bound} must be boolean in OpenAPI v3.0"
        if node.get("type") == "object" and path.count(".") >= 2 and not path.endswith(("{}", "metadata")):
            assert node.get("description"), f"{path} has no description"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_field_has_a_description(kind):
    schema = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for path, node in walk(schema["properties"][part], part):
            if not path.endswith(("[]", "{}")):
                assert node.get("description"), f"{kind.kind}.{path}"


def test_crd_names_columns_and_category():
    crd = build_crd(FINETUNE_JOB)
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == "finetunejobs.litgpt.dev"
    assert names["kind"] == "FinetuneJob" and "ftj" in names["shortNames"] and names["categories"] == ["litgpt"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [("Model", ".spec.modelRef.name"), ("Method", ".spec.method"), ("Phase", ".status.phase"),
                       ("Step", ".status.progress.step"), ("Loss", ".status.progress.loss"),
                       ("ETA", ".status.progress.eta"), ("Age", ".metadata.creationTimestamp")]
    assert all(build_crd(k)["spec"]["scope"] == "Namespaced" for k in KINDS)


def test_finetune_defaults_and_enum():
    spec = FINETUNE_JOB.parse_spec({"spec": {"modelRef": {"name": "m"}, "data": {"inline": "[]"}}})
    assert spec.method == "lora"
    assert spec.train.global_batch_size == 16 and spec.train.micro_batch_size == 1
    method = build_crd(FINETUNE_JOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["method"]
    assert method["enum"] == ["lora", "full", "adapter", "adapter_v2"] and method["default"] == "lora"
    with pytest.raises(ValidationError):
        FINETUNE_JOB.parse_spec({"spec": {"modelRef": {"name": "m"}, "data": {"inline": "[]"}, "method": "qlora"}})
    with pytest.raises(ValidationError):
        FINETUNE_JOB.parse_spec({"spec": {"modelRef": {"name": "m"}, "data": {"inline": "[]"},
                                          "train": {"microBatchSize": -1}}})


def test_ranges_become_openapi_bounds():
    train = build_crd(FINETUNE_JOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["train"]
    assert train["default"] == {"globalBatchSize": 16, "microBatchSize": 1}  # inner defaults, spelled out
    assert train["properties"]["microBatchSize"]["minimum"] == 1
    lr = train["properties"]["learningRate"]
    assert lr["minimum"] == 0 and lr["exclusiveMinimum"] is True


def rules(kind, *path):
    node = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for part in path:
        node = node["properties"][part]
    return {r["rule"]: r["message"] for r in node.get("x-kubernetes-validations", [])}


def test_cel_rules_present():
    assert "has(self.modelRef) != has(self.finetuneRef)" in rules(MODEL_SERVER)
    assert "self.fromScratch || has(self.initialCheckpoint)" in rules(PRETRAIN_JOB)
    assert "self.globalBatchSize % self.microBatchSize == 0" in rules(FINETUNE_JOB, "train")
    assert any("exactly one of file, configMap or inline" in m for m in rules(FINETUNE_JOB, "data").values())
    pretrain = build_crd(PRETRAIN_JOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert pretrain["properties"]["fromScratch"]["default"] is True


def test_litgptmodel_wire_names():
    spec = LITGPT_MODEL.parse_spec({"spec": {"repoId": "org/name", "checkpointRootPVC": {"claimName": "cache"}}})
    assert spec.checkpoint_root_pvc.claim_name == "cache"
    with pytest.raises(ValidationError):
        LITGPT_MODEL.parse_spec({"spec": {"repoId": "no-slash", "checkpointRootPVC": {"claimName": "cache"}}})


@pytest.mark.parametrize(
    "path,ok",
    [("data.json", True), ("a/b/c.json", True), (".hidden", True), ("..x/y", True),
     ("../etc/passwd", False), ("a/../../b", False), ("a/..", False), ("/abs", False), ("a//b", False), ("", False)],
)
def test_relative_path_pattern(path, ok):
    """Paths inside a claim cannot climb out of it (RE2-compatible: the API server checks it too)."""
    assert bool(re.match(RELATIVE_PATH_PATTERN, path)) is ok


def test_examples_parse_against_the_models():
    """Every example manifest is a valid object of its kind (the cluster tests also apply them)."""
    from pathlib import Path

    import yaml

    from litgpt_operator.api import BY_KIND

    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
    kinds = set()
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] == "litgpt.dev/v1alpha1", path
            BY_KIND[doc["kind"]].parse_spec(doc)
            kinds.add(doc["kind"])
    assert kinds == set(BY_KIND)


def test_rbac_covers_every_resource_the_operator_touches():
    from litgpt_operator import kube, rbac

    granted = {(group, resource): set(rule["verbs"]) for rule in rbac.policy_rules()
               for group in rule["apiGroups"] for resource in rule["resources"]}
    for kind, (api_version, plural) in kube.RESOURCES.items():
        group = api_version.rpartition("/")[0]
        assert "get" in granted.get((group, plural), set()), kind
    assert granted[("", "pods")] == {"get", "list", "watch"}  # read-only: the operator never touches pods
    assert ("", "secrets") not in granted  # the token is referenced, never read
    # Nothing the code does not do: claims and ConfigMaps are created, never changed; only the
    # watched kinds are listed.
    assert granted[("batch", "jobs")] == {"get", "list", "watch", "create", "patch"}
    assert granted[("", "configmaps")] == granted[("", "persistentvolumeclaims")] == {"get", "create"}
    assert granted[("", "services")] == {"get", "create", "patch"}
    assert granted[("", "events")] == {"create"} and ("events.k8s.io", "events") not in granted
    assert granted[("litgpt.dev", "finetunejobs/status")] == {"get", "patch"}