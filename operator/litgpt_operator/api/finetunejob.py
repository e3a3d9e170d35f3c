"""FinetuneJob: finetune a LitGPTModel on a dataset (LoRA, full, adapter, adapter v2)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from litgpt_operator.api.common import (
    ApiModel,
    JobStatus,
    LocalObjectReference,
    QuantizeMode,
    cel,
    immutable_once_started,
    name_field,
)
from litgpt_operator.api.kind import AGE, PHASE, PROGRESS_COLUMNS, KindInfo, PrinterColumn
from litgpt_operator.api.training import PVCFile, TrainingArgs, TrainingSpec
from litgpt_runtime.methods import LORA, METHODS

Method = Literal[METHODS]  # type: ignore[valid-type]

# Small datasets may live in the object itself; a ConfigMap caps at 1 MiB anyway.
INLINE_DATA_MAX = 512 * 1024


class ConfigMapKey(ApiModel):
    """A key of a ConfigMap in the same namespace."""

    name: str = name_field("Name of the ConfigMap.")
    # The key is the file name under the pod's /data: ConfigMap key characters, and never `.` or `..`.
    key: str = Field(description="Key holding the JSON dataset.", min_length=1, max_length=253,
                     pattern=r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$")


class Dataset(ApiModel):
    """An instruction dataset in JSON (a list of {instruction, input, output} records) from exactly one source."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "[has(self.file), has(self.configMap), has(self.inline)].filter(x, x).size() == 1",
                    "set exactly one of file, configMap or inline.",
                )
            ]
        }
    }

    file: Optional[PVCFile] = Field(None, description="A JSON file on a PVC.")
    config_map: Optional[ConfigMapKey] = Field(None, description="A JSON dataset in a ConfigMap key.")
    inline: Optional[str] = Field(
        None, description="The JSON dataset itself (small sets only).", max_length=INLINE_DATA_MAX
    )
    val_split_fraction: float = Field(
        0.05, description="Fraction of the records held out for validation.", ge=0, lt=1
    )
    prompt_style: Literal["auto", "chat", "alpaca"] = Field(
        "auto",
        description="How a record becomes text: chat (the model's chat template), alpaca (the Alpaca prompt), "
        "or auto (chat when the model has a template, else alpaca).",
    )
    mask_prompt: bool = Field(True, description="Train only on the answers (prompt tokens left out of the loss).")
    validation: Literal["strict", "warn", "off"] = Field(
        "strict",
        description="Check the data before the training Job takes a GPU (`litgpt validate_data` in a small CPU "
        "pod): strict fails the job on bad data, without a training Job; warn reports it (DataValidated=False) "
        "and trains anyway; off skips the check.",
    )


class LoRA(ApiModel):
    """LoRA settings (method lora only). Defaults: the runtime's (`litgpt_runtime.methods.LoRAOptions`)."""

    r: int = Field(LORA.r, description="Rank of the low-rank update.", ge=1, le=1024)
    alpha: int = Field(LORA.alpha, description="Scaling numerator (the update is scaled by alpha / r).", ge=1, le=4096)
    dropout: float = Field(LORA.dropout, description="Dropout on the LoRA input.", ge=0, lt=1)
    query: bool = Field(LORA.query, description="Apply LoRA to the attention queries.")
    key: bool = Field(LORA.key, description="Apply LoRA to the attention keys.")
    value: bool = Field(LORA.value, description="Apply LoRA to the attention values.")
    projection: bool = Field(LORA.projection, description="Apply LoRA to the attention output projection.")
    mlp: bool = Field(LORA.mlp, description="Apply LoRA to the MLP.")
    head: bool = Field(LORA.head, description="Apply LoRA to the output head.")


class FinetuneJobSpec(TrainingSpec):
    """What to finetune, on what, how."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("!has(self.lora) || self.method == 'lora'", "lora settings apply only to method lora.", ".lora"),
                cel("!has(self.quantize) || self.method == 'lora'",
                    "quantize (QLoRA) applies only to method lora.", ".quantize"),
                cel("!has(self.quantize) || !has(self.precision) || !self.precision.endsWith('-mixed')",
                    "quantize does not combine with a mixed precision: use bf16-true, 16-true or 32-true.",
                    ".quantize"),
            ]
        }
    }

    model_ref: LocalObjectReference = Field(
        description="The LitGPTModel to finetune; the job waits until it is Ready."
    )
    method: Method = Field(
        "lora",
        description="Finetuning method: lora (low-rank adapters), full (all weights), adapter or adapter_v2.",
    )
    data: Dataset = Field(description="The training data.")
    train: TrainingArgs = Field(
        default_factory=TrainingArgs,
        description="Training hyperparameters.",
        json_schema_extra={"default": TrainingArgs().to_wire()},
    )
    lora: Optional[LoRA] = Field(None, description="LoRA settings (method lora; defaults apply when omitted).")
    quantize: Optional[QuantizeMode] = Field(
        None,
        description="QLoRA: load the frozen base weights quantized with bitsandbytes (method lora); the output "
        "is an ordinary LoRA checkpoint. The fit check counts the weights at their quantized size.",
    )


class DataValidation(ApiModel):
    """What the data check found (`litgpt validate_data`'s summary)."""

    records: int = Field(description="Records read (all files).", ge=0)
    longest: Optional[int] = Field(None, description="Tokens of the longest sample.", ge=0)
    truncated: Optional[int] = Field(None, description="Samples longer than maxSeqLength.", ge=0)
    max_seq_length: Optional[int] = Field(None, description="The maximum sequence length checked against.", ge=0)
    empty: Optional[int] = Field(None, description="Records without a prompt or an answer.", ge=0)
    duplicates: Optional[int] = Field(None, description="Records repeating an earlier one.", ge=0)
    prompt_style: Optional[str] = Field(None, description="How records become text: chat or alpaca.")


class FinetuneOutput(ApiModel):
    """The finetuned checkpoint and what it was made from (the runtime's lineage record,
    `litgpt_runtime.lineage`; every digest is `sha256:<hex>` over the sorted `name:sha256` lines of
    the files it covers)."""

    model_config = {"extra": "ignore"}

    path: str = Field(description="Folder of the finetuned checkpoint inside the output claim (`<outputPath>/final`).")
    claim_name: Optional[str] = Field(None, description="Claim holding it.")
    method: Optional[str] = Field(None, description="Finetuning method that made it.")
    base_repo_id: Optional[str] = Field(
        None, description="Hugging Face repo its weights come from (through any earlier finetunes).")
    base_revision: Optional[str] = Field(None, description="Commit (or revision) of that repo, when known.")
    base_digest: Optional[str] = Field(None, description="Digest of the checkpoint it was finetuned from.")
    dataset_digest: Optional[str] = Field(None, description="Digest of the training data file(s).")
    weights_digest: Optional[str] = Field(
        None, description="Digest of the finetuned weights: a LitGPTModel with source.finetuneRef checks them "
        "against it before it is Ready.")
    hyperparameters: Optional[dict[str, Any]] = Field(
        None, description="The options of the run (as in the checkpoint's hyperparameters.yaml).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class FinetuneJobStatus(JobStatus):
    """Phase: Pending, Waiting (for the model), Validating (the data check runs), Running, Succeeded or Failed."""

    data_validation: Optional[DataValidation] = Field(None, description="What the data check found (spec.data.validation).")

    output_claim_name: Optional[str] = Field(None, description="Claim holding the finetuned checkpoint.")
    output_path: Optional[str] = Field(None, description="Folder of the finetuned checkpoint inside the claim.")
    output: Optional[FinetuneOutput] = Field(
        None, description="Once Succeeded: the finetuned checkpoint and its lineage (base, data, method, digests).")


KIND = KindInfo(
    kind="FinetuneJob",
    plural="finetunejobs",
    short_names=("ftj", "finetune"),
    spec=FinetuneJobSpec,
    status=FinetuneJobStatus,
    description="Finetunes a LitGPTModel on a dataset in a Kubernetes Job (`litgpt finetune_<method>`).",
    # What the run trains (model, method, data) is fixed once it started; train.* stays editable
    # (a finished run reports it as not applied: SpecApplied=False).
    validations=(
        immutable_once_started("modelRef", "FinetuneJob"),
        immutable_once_started("method", "FinetuneJob"),
        immutable_once_started("data", "FinetuneJob"),
    ),
    printer_columns=(
        PrinterColumn("Model", ".spec.modelRef.name", description="The LitGPTModel finetuned"),
        PrinterColumn("Method", ".spec.method", description="Finetuning method"),
        PHASE,
        *PROGRESS_COLUMNS,
        AGE,
    ),
)
