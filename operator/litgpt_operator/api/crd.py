"""Build the CustomResourceDefinition of a kind from its pydantic models."""

from __future__ import annotations

from typing import Any

from litgpt_operator.api.kind import KindInfo
from litgpt_operator.api.schema import structural_schema

MANAGED_BY_LABELS = {"app.kubernetes.io/name": "litgpt-operator", "app.kubernetes.io/part-of": "litgpt"}


def openapi_schema(kind: KindInfo) -> dict[str, Any]:
    """The whole object's schema: apiVersion/kind/metadata as Kubernetes wants, spec and status ours."""
    schema: dict[str, Any] = {
        "description": kind.description,
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "Versioned schema of this object; the server converts to the latest.",
                "type": "string",
            },
            "kind": {"description": "REST resource this object represents.", "type": "string"},
            "metadata": {"type": "object"},
            "spec": structural_schema(kind.spec),
            "status": structural_schema(kind.status),
        },
        "required": ["spec"],
    }
    if kind.validations:
        schema["x-kubernetes-validations"] = list(kind.validations)
    return schema


def build_crd(kind: KindInfo) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": dict(MANAGED_BY_LABELS)},
        "spec": {
            "group": kind.group,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": kind.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_crd() for c in kind.printer_columns],
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }
