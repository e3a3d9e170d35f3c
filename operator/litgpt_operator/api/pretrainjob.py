"""PretrainJob: pretrain a model from scratch, or continue pretraining a LitGPTModel's checkpoint."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from litgpt_operator.api.common import (
    MODEL_NAME_PATTERN,
    ApiModel,
    JobStatus,
    LocalObjectReference,
    cel,
    immutable_once_started,
)
from litgpt_operator.api.kind import AGE, PHASE, PROGRESS_COLUMNS, KindInfo, PrinterColumn
from litgpt_operator.api.training import PVCFile, TrainingArgs, TrainingSpec


class TextData(ApiModel):
    """Plain-text training data: a folder of .txt files on a PVC."""

    file: PVCFile = Field(description="Folder (or single file) of text on a PVC, mounted read-only.")
    val_split_fraction: float = Field(
        0.05, description="Fraction of the text held out for validation.", ge=0, lt=1
    )


class PretrainJobSpec(TrainingSpec):
    """What to pretrain, from where, on what, for how long."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.modelName) && has(self.modelConfig))",
                    "set modelName or modelConfig, not both.",
                ),
                cel(
                    "!self.fromScratch || has(self.modelName) || has(self.modelConfig)",
                    "fromScratch is true: set modelName or modelConfig (the architecture to initialise).",
                    field_path=".modelName",
                    reason="FieldValueRequired",
                ),
                cel(
                    "!self.fromScratch || has(self.tokenizerRef)",
                    "fromScratch is true: set tokenizerRef (the LitGPTModel whose tokenizer to use).",
                    field_path=".tokenizerRef",
                    reason="FieldValueRequired",
                ),
                cel(
                    "self.fromScratch || has(self.initialCheckpoint)",
                    "fromScratch is false: set initialCheckpoint to the LitGPTModel to continue from.",
                    field_path=".initialCheckpoint",
                    reason="FieldValueRequired",
                ),
                cel(
                    "!self.fromScratch || !has(self.initialCheckpoint)",
                    "initialCheckpoint is only used when fromScratch is false.",
                    field_path=".initialCheckpoint",
                ),
            ]
        }
    }

    model_name: Optional[str] = Field(
        None,
        description="Model architecture by name or Hugging Face repo id (the runtime's config registry); "
        "when continuing (fromScratch false) the initial checkpoint's architecture if omitted.",
        min_length=1,
        max_length=200,
        # It becomes the runtime's first argument: never an option (`--config=...`) or a path.
        pattern=MODEL_NAME_PATTERN,
    )
    # `model_config` is pydantic's own attribute, hence another Python name for spec.modelConfig.
    architecture: Optional[dict[str, Any]] = Field(
        None,
        alias="modelConfig",
        description="Model architecture as a config mapping (the runtime's model_config.yaml fields).",
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )
    from_scratch: bool = Field(
        True, description="Start from random weights (true) or continue from initialCheckpoint (false)."
    )
    initial_checkpoint: Optional[LocalObjectReference] = Field(
        None, description="LitGPTModel whose checkpoint is the starting point (required when fromScratch is false)."
    )
    tokenizer_ref: Optional[LocalObjectReference] = Field(
        None,
        description="LitGPTModel whose tokenizer is used (required from scratch); the initialCheckpoint's when "
        "omitted.",
    )
    data: TextData = Field(description="The training data.")
    train: TrainingArgs = Field(
        default_factory=TrainingArgs,
        description="Training hyperparameters; train.maxTokens is the token budget.",
        # The inner defaults spelled out: the server checks a default against the CEL rules as is.
        json_schema_extra={"default": TrainingArgs().to_wire()},
    )


class PretrainJobStatus(JobStatus):
    """Phase: Pending, Waiting (for referenced models), Running, Succeeded or Failed."""

    output_claim_name: Optional[str] = Field(None, description="Claim holding the pretrained checkpoint.")
    output_path: Optional[str] = Field(None, description="Folder of the pretrained checkpoint inside the claim.")
    service_name: Optional[str] = Field(None, description="Headless Service giving the pods stable DNS names.")


KIND = KindInfo(
    kind="PretrainJob",
    plural="pretrainjobs",
    short_names=("ptj", "pretrain"),
    spec=PretrainJobSpec,
    status=PretrainJobStatus,
    description="Pretrains a model (from scratch or continued) in an Indexed Job over one or more nodes "
    "(`litgpt pretrain`).",
    # What the run trains (model, method, data) is fixed once it started; train.* stays editable
    # (a finished run reports it as not applied: SpecApplied=False).
    validations=(
        immutable_once_started("modelName", "PretrainJob", optional=True),
        immutable_once_started("modelConfig", "PretrainJob", optional=True),
        immutable_once_started("fromScratch", "PretrainJob"),
        immutable_once_started("initialCheckpoint", "PretrainJob", optional=True),
        immutable_once_started("tokenizerRef", "PretrainJob", optional=True),
        immutable_once_started("data", "PretrainJob"),
    ),
    printer_columns=(
        PrinterColumn("Model", ".spec.modelName", description="Model architecture"),
        PrinterColumn("Nodes", ".spec.nodes", "integer", description="Number of nodes"),
        PHASE,
        *PROGRESS_COLUMNS,
        AGE,
    ),
)
