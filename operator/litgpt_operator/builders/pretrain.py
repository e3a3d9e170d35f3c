"""PretrainJob -> its (Indexed) Job running `litgpt pretrain`, a headless Service when multi-node,
and a ConfigMap when the architecture is given inline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import yaml

from litgpt_operator.api.pretrainjob import PretrainJobSpec
from litgpt_operator.builders import common as c
from litgpt_operator.builders.training import training_children
from litgpt_operator.builders.sources import ModelCheckpoint, OutputLocation, output_location
from litgpt_operator.settings import Settings

COMPONENT = "pretrain"
MODEL_CONFIG_FILE = "model_config.yaml"


def job_name(parent: c.Parent) -> str:
    return c.child_name(parent.name, "pretrain")


def model_configmap_name(parent: c.Parent) -> str:
    return c.child_name(parent.name, "model-config")


@dataclass(frozen=True)
class PretrainSources:
    """The LitGPTModels a PretrainJob reads (resolved by the handler)."""

    initial: Optional[ModelCheckpoint] = None
    tokenizer: Optional[ModelCheckpoint] = None

    @property
    def cache_claim(self) -> Optional[str]:
        chosen = self.initial or self.tokenizer
        return chosen.claim_name if chosen else None

    @property
    def tokenizer_model(self) -> Optional[ModelCheckpoint]:
        return self.tokenizer or self.initial


def output_of(parent: c.Parent, spec: PretrainJobSpec, sources: PretrainSources) -> OutputLocation:
    # The schema guarantees a referenced model (tokenizer or initial checkpoint): its claim is the default.
    return output_location("pretrains", parent.name, spec.output, sources.cache_claim or "")


def build_model_configmap(parent: c.Parent, spec: PretrainJobSpec) -> Optional[dict[str, Any]]:
    if spec.architecture is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": c.metadata(parent, model_configmap_name(parent), "model-config"),
        "data": {MODEL_CONFIG_FILE: yaml.safe_dump(spec.architecture, sort_keys=True)},
    }


def _model_dirs(sources: PretrainSources) -> tuple[list, list, Optional[str], Optional[str]]:
    """Volumes/mounts of the referenced models and the initial-checkpoint / tokenizer folders."""
    volumes, mounts = [], []
    initial_dir = tokenizer_dir = None
    if sources.cache_claim:
        volumes.append(c.claim_volume("models", sources.cache_claim, read_only=True))
        mounts.append(c.mount("models", c.MODELS_MOUNT, read_only=True))
    if sources.initial:
        initial_dir = sources.initial.mounted_dir
    tok = sources.tokenizer_model
    if tok is not None:
        if tok.claim_name == sources.cache_claim:
            tokenizer_dir = tok.mounted_dir
        else:  # a tokenizer cached in another claim: mount that one too
            volumes.append(c.claim_volume("tokenizer", tok.claim_name, read_only=True))
            mounts.append(c.mount("tokenizer", c.TOKENIZER_MOUNT, read_only=True))
            tokenizer_dir = tok.dir_under(c.TOKENIZER_MOUNT)
    return volumes, mounts, initial_dir, tokenizer_dir


def pretrain_command(
    parent: c.Parent, spec: PretrainJobSpec, sources: PretrainSources, initial_dir, tokenizer_dir
) -> list[str]:
    command = ["litgpt", "pretrain"]
    if spec.model_name:
        command.append(spec.model_name)
    elif spec.architecture is not None:
        command += ["--model_config", f"{c.CONFIG_MOUNT}/{MODEL_CONFIG_FILE}"]
    # neither: continued pretraining takes the initial checkpoint's own architecture
    command += ["--out_dir", output_of(parent, spec, sources).mounted_dir]
    if initial_dir:
        command += ["--initial_checkpoint_dir", initial_dir]
    if tokenizer_dir:
        command += ["--tokenizer_dir", tokenizer_dir]
    command += [
        "--data", "TextFiles",
        "--data.train_data_path", f"{c.DATA_MOUNT}/{spec.data.file.path}",
        "--data.val_split_fraction", c.flag_value(spec.data.val_split_fraction),
    ]
    command += c.flags("train.", spec.train.model_dump())
    return command


def build_pretrain_children(
    parent: c.Parent, spec: PretrainJobSpec, sources: PretrainSources, settings: Settings
) -> list[dict[str, Any]]:
    """In apply order: [ConfigMap], [headless Service], Job."""
    volumes, mounts, initial_dir, tokenizer_dir = _model_dirs(sources)
    output = output_of(parent, spec, sources)
    volumes += [
        c.claim_volume("output", output.claim_name, read_only=False),
        c.claim_volume("data", spec.data.file.claim_name, read_only=True),
    ]
    mounts += [c.mount("output", c.OUTPUT_MOUNT, read_only=False), c.mount("data", c.DATA_MOUNT, read_only=True)]
    configmap = build_model_configmap(parent, spec)
    if configmap:
        volumes.append({"name": "model-config", "configMap": {"name": configmap["metadata"]["name"]}})
        mounts.append(c.mount("model-config", c.CONFIG_MOUNT, read_only=True))
    parts = c.PodParts(
        command=pretrain_command(parent, spec, sources, initial_dir, tokenizer_dir),
        # Only continued pretraining loads weights; a tokenizer-only model is not re-hashed.
        env=sources.initial.verify_env() if sources.initial else [],
        volumes=volumes,
        mounts=mounts,
        resources=c.resources(spec.resources, settings, spec.gpus_per_node),
        shared_memory=True,
    )
    job_children = training_children(parent, job_name(parent), COMPONENT, parts, spec, settings, output)
    return ([configmap] if configmap else []) + job_children
