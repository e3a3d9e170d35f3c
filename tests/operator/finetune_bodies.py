"""A FinetuneJob as the API server stores it, and its children as the builders make them (no cluster)."""

from __future__ import annotations

from litgpt_operator.api import FINETUNE_JOB
from litgpt_operator.builders import common
from litgpt_operator.builders.finetune import build_finetune_children
from litgpt_operator.builders.sources import ModelCheckpoint
from litgpt_operator.settings import Settings

SETTINGS = Settings(runtime_image="example.org/litgpt:test")
CHECKPOINT = ModelCheckpoint("llama", "meta-llama/Llama-3.1-8B", "model-cache")


def finetune_body(name: str = "ft", namespace: str = "team-a", labels: dict | None = None,
                  annotations: dict | None = None, **spec) -> dict:
    body_spec = {"modelRef": {"name": "llama"}, "data": {"inline": "[]"}, **spec}
    return {
        "apiVersion": "litgpt.dev/v1alpha1", "kind": "FinetuneJob",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1,
                     "labels": labels or {}, "annotations": annotations or {}},
        "spec": body_spec,
    }


def finetune_children(body: dict) -> list[dict]:
    return build_finetune_children(common.Parent.from_body(body), FINETUNE_JOB.parse_spec(body), CHECKPOINT, SETTINGS)
