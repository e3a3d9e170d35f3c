"""FinetuneJob -> its Job (`litgpt finetune_<method> <repoId> ...`) and, for inline data, a ConfigMap."""

from __future__ import annotations

import hashlib
from typing import Any, Optional

from litgpt_operator.api.finetunejob import FinetuneJobSpec, LoRA
from litgpt_operator.builders import common as c
from litgpt_operator.builders.training import training_children
from litgpt_operator.builders.sources import ModelCheckpoint, OutputLocation, output_location
from litgpt_operator.settings import Settings

COMPONENT = "finetune"
INLINE_DATA_KEY = "data.json"


def job_name(parent: c.Parent) -> str:
    return c.child_name(parent.name, "finetune")


def data_configmap_name(parent: c.Parent, inline: str) -> str:
    """Named by its content: an edited `spec.data.inline` is a new ConfigMap, so the data check
    (whose Job records its volume) sees the change and checks the new data, and a Job already
    running keeps reading the data it started with."""
    return c.child_name(parent.name, f"data-{hashlib.sha256(inline.encode()).hexdigest()[:10]}")


def output_of(parent: c.Parent, spec: FinetuneJobSpec, model: ModelCheckpoint) -> OutputLocation:
    return output_location("finetunes", parent.name, spec.output, model.claim_name)


def build_data_configmap(parent: c.Parent, spec: FinetuneJobSpec) -> Optional[dict[str, Any]]:
    if spec.data.inline is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": c.metadata(parent, data_configmap_name(parent, spec.data.inline), "dataset"),
        "data": {INLINE_DATA_KEY: spec.data.inline},
    }


def data_volume(parent: c.Parent, spec: FinetuneJobSpec) -> tuple[dict[str, Any], str]:
    """The dataset's volume and the JSON file's path inside the pod."""
    data = spec.data
    if data.file is not None:
        return c.claim_volume("data", data.file.claim_name, read_only=True), f"{c.DATA_MOUNT}/{data.file.path}"
    if data.config_map is not None:
        name, key = data.config_map.name, data.config_map.key
    else:
        name, key = data_configmap_name(parent, data.inline), INLINE_DATA_KEY
    return {"name": "data", "configMap": {"name": name}}, f"{c.DATA_MOUNT}/{key}"


def lora_flags(lora: Optional[LoRA]) -> list[str]:
    lora = lora or LoRA()
    return c.flags("lora_", lora.model_dump())


def data_flags(spec: FinetuneJobSpec, json_path: str) -> list[str]:
    """How the data is read and rendered: the same for the data check as for training."""
    return ["--data", "JSON", "--data.json_path", json_path, "--data.prompt_style", spec.data.prompt_style,
            "--data.mask_prompt", c.flag_value(spec.data.mask_prompt)]


def finetune_command(parent: c.Parent, spec: FinetuneJobSpec, model: ModelCheckpoint, json_path: str) -> list[str]:
    output = output_of(parent, spec, model)
    data = spec.data
    command = [
        "litgpt", f"finetune_{spec.method}", model.ref,
        "--checkpoint_root_dir", c.CHECKPOINT_ROOT,
        "--out_dir", output.mounted_dir,
        *data_flags(spec, json_path),
        "--data.val_split_fraction", c.flag_value(data.val_split_fraction),
    ]
    command += c.flags("train.", spec.train.model_dump())
    if spec.method == "lora":
        command += lora_flags(spec.lora)
    if spec.quantize:
        command += ["--quantize", spec.quantize]
    return command


def build_finetune_children(
    parent: c.Parent, spec: FinetuneJobSpec, model: ModelCheckpoint, settings: Settings
) -> list[dict[str, Any]]:
    """In apply order: [inline-data ConfigMap], [headless Service], Job."""
    configmap = build_data_configmap(parent, spec)
    volume, json_path = data_volume(parent, spec)
    output = output_of(parent, spec, model)
    parts = c.PodParts(
        command=finetune_command(parent, spec, model, json_path),
        env=model.verify_env() + [c.termination_log_env()],  # the output's lineage, for status.output
        volumes=[
            c.claim_volume("models", model.claim_name, read_only=True),
            c.claim_volume("output", output.claim_name, read_only=False),
            volume,
        ],
        mounts=[
            c.mount("models", c.MODELS_MOUNT, read_only=True),
            c.mount("output", c.OUTPUT_MOUNT, read_only=False),
            c.mount("data", c.DATA_MOUNT, read_only=True),
        ],
        resources=c.resources(spec.resources, settings, spec.gpus_per_node),
        shared_memory=True,
    )
    job_children = training_children(parent, job_name(parent), COMPONENT, parts, spec, settings, output)
    return ([configmap] if configmap else []) + job_children
