"""The apiserver is real: a CRD's OpenAPI schema and its CEL rules reject bad objects."""

from __future__ import annotations

import json
import subprocess

import pytest

from litgpt_devcluster.waiting import wait_for

pytestmark = pytest.mark.cluster

GROUP = "rig.test.litgpt.dev"

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "string", "enum": ["small", "large"]},
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                    },
                    "x-kubernetes-validations": [{
                        "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                        "message": "minReplicas must not exceed maxReplicas",
                    }],
                }},
            }},
        }],
    },
}


@pytest.fixture(scope="module")
def widget_crd(kube):
    kube.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    kube.kubectl("wait", "--for=condition=Established", f"crd/widgets.{GROUP}", "--timeout=60s")
    # Established can come a moment before discovery serves the new kind to kubectl.
    wait_for(lambda: "widgets" in kube.kubectl("api-resources", f"--api-group={GROUP}", "-o", "name"),
             "the Widget kind in discovery", timeout_s=30)
    yield
    kube.kubectl("delete", "crd", f"widgets.{GROUP}", "--wait=false")


def _apply_widget(kube, namespace: str, spec: dict) -> subprocess.CompletedProcess:
    widget = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": namespace}, "spec": spec}
    try:
        out = kube.kubectl("apply", "-f", "-", input=json.dumps(widget))
        return subprocess.CompletedProcess([], 0, out, "")
    except subprocess.CalledProcessError as error:
        return subprocess.CompletedProcess([], error.returncode, error.stdout, error.stderr)


def test_valid_object_is_stored(kube, namespace, widget_crd):
    result = _apply_widget(kube, namespace, {"size": "small", "minReplicas": 1, "maxReplicas": 3})
    assert result.returncode == 0, result.stderr
    stored = json.loads(kube.kubectl("get", "widget", "w", "-n", namespace, "-o", "json"))
    assert stored["spec"] == {"size": "small", "minReplicas": 1, "maxReplicas": 3}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"size": "medium"}, 'Unsupported value: "medium"'),
        ({"size": "small", "maxReplicas": "three"}, "spec.maxReplicas: Invalid value"),
        ({"maxReplicas": 2}, "spec.size: Required value"),
        ({"size": "large", "minReplicas": 5, "maxReplicas": 2}, "minReplicas must not exceed maxReplicas"),
    ],
    ids=["enum", "type", "required", "cel-rule"],
)
def test_invalid_object_is_rejected(kube, namespace, widget_crd, spec, expected):
    result = _apply_widget(kube, namespace, spec)
    assert result.returncode != 0
    assert expected in result.stderr
    assert kube.kubectl("get", "widget", "-n", namespace, "--ignore-not-found", "-o", "name").strip() == ""
