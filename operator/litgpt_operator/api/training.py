"""Pieces shared by FinetuneJob and PretrainJob: training hyperparameters, scale, output, data files."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from litgpt_operator.api.common import (
    RELATIVE_PATH_PATTERN,
    ApiModel,
    PodPlacement,
    Precision,
    cel,
    gpus_field,
    name_field,
)


def relative_path_field(description: str, default: Optional[str] = None, required: bool = False):
    kwargs = dict(description=description, min_length=1, max_length=1024, pattern=RELATIVE_PATH_PATTERN)
    return Field(**kwargs) if required else Field(default, **kwargs)


class PVCFile(ApiModel):
    """A file (or folder) on a PersistentVolumeClaim of the same namespace, mounted read-only."""

    claim_name: str = name_field("Name of the claim.")
    path: str = relative_path_field("Path inside the claim (relative, no `..`).", required=True)


class TrainingArgs(ApiModel):
    """Hyperparameters of the training loop (`--train.*` of the runtime)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.globalBatchSize % self.microBatchSize == 0",
                    "globalBatchSize must be a multiple of microBatchSize.",
                    field_path=".globalBatchSize",
                )
            ]
        }
    }

    epochs: Optional[int] = Field(
        None, description="Passes over the training data (the method's default when omitted).", ge=1, le=100000
    )
    max_steps: Optional[int] = Field(None, description="Stop after this many optimizer steps.", ge=1)
    max_tokens: Optional[int] = Field(None, description="Stop after this many tokens (all processes together).", ge=1)
    global_batch_size: int = Field(16, description="Samples per optimizer step, over all processes.", ge=1, le=1 << 20)
    micro_batch_size: int = Field(
        1, description="Samples per forward/backward pass on one process (sets the memory use).", ge=1, le=1 << 16
    )
    learning_rate: Optional[float] = Field(
        None, description="Peak learning rate, reached after warm-up (the method's default when omitted).", gt=0, le=10
    )
    lr_warmup_steps: Optional[int] = Field(None, description="Optimizer steps of linear learning-rate warm-up.", ge=0)
    max_seq_length: Optional[int] = Field(
        None, description="Longest training sequence in tokens (the model's context length when omitted).", ge=1
    )
    weight_decay: Optional[float] = Field(None, description="AdamW weight decay.", ge=0)
    save_interval: Optional[int] = Field(
        None, description="Save a resumable checkpoint every this many optimizer steps.", ge=1
    )


class Output(ApiModel):
    """Where the result is written."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.path) || !self.path.matches('^(\\\\./)*checkpoints(/|$)')",
                    "output.path must not be inside checkpoints/: that folder is the model cache, which "
                    "runtime pods mount read-only and other objects read. Choose another folder.",
                    field_path=".path",
                ),
            ]
        }
    }

    claim_name: Optional[str] = name_field(
        "Claim receiving the output; the model's cache claim when omitted.", default=None
    )
    path: Optional[str] = relative_path_field(
        "Folder inside the claim; `<kind>/<namespace>/<name>` when omitted (never shared by two jobs)."
    )


class TrainingSpec(PodPlacement):
    """Scale, precision and bookkeeping common to training kinds."""

    nodes: int = Field(1, description="Number of nodes (pods); more than 1 runs a distributed Indexed Job.", ge=1, le=256)
    gpus_per_node: int = gpus_field("GPUs per node (`nvidia.com/gpu` limit of each pod); 0 trains on CPU.")
    precision: Optional[Precision] = Field(
        None, description="Numeric precision of training (Lightning Fabric's names); the runtime picks when omitted."
    )
    output: Output = Field(
        default_factory=Output, description="Where the trained checkpoint goes.", json_schema_extra={"default": {}}
    )
    backoff_limit: int = Field(
        0, description="Times a failed pod is retried before the job is Failed.", ge=0, le=100
    )
    active_deadline_seconds: Optional[int] = Field(
        None, description="Fail the job when it runs longer than this (seconds).", ge=1
    )
    master_port: int = Field(
        29500, description="Port of the torch distributed rendezvous on the first pod (nodes > 1).", ge=1024, le=65535
    )
