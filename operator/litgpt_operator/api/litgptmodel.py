"""LitGPTModel: a Hugging Face model downloaded once into a PVC (the namespace's model cache)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from litgpt_operator.api.common import (
    REPO_ID_PATTERN,
    ApiModel,
    LocalObjectReference,
    PodPlacement,
    Quantity,
    SecretKeyRef,
    StatusBase,
    cel,
    name_field,
)
from litgpt_operator.api.kind import AGE, PHASE, KindInfo, PrinterColumn


class CheckpointRootPVC(ApiModel):
    """The PersistentVolumeClaim that holds `checkpoints/<repoId>` (the model cache)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.size) || !has(self.storageClassName)",
                    "storageClassName is only used when the operator creates the claim: set size as well.",
                    field_path=".storageClassName",
                )
            ]
        }
    }

    claim_name: str = name_field(
        "Name of the claim. Several LitGPTModels may share one claim: each model lives in its own folder."
    )
    size: Optional[Quantity] = Field(
        None,
        description="When set, the operator creates the claim with this size (if it does not exist yet); "
        "when omitted, the claim must already exist.",
        json_schema_extra={"pattern": r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$"},
    )
    storage_class_name: Optional[str] = Field(
        None, description="Storage class of a claim the operator creates (cluster default when omitted)."
    )
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = Field(
        "ReadWriteOnce",
        description="Access mode of a claim the operator creates. Use ReadWriteMany when pods on several "
        "nodes (multi-node training, several server replicas) share the cache.",
    )


class ModelSource(ApiModel):
    """Where a model comes from other than the Hub."""

    finetune_ref: LocalObjectReference = Field(
        description="A FinetuneJob whose output is the model: once it Succeeded, the operator checks the "
        "weights against its status.output.weightsDigest, then the model is Ready (to serve, or to finetune "
        "again)."
    )


class LitGPTModelSpec(PodPlacement):
    """Which model to download and where to keep it, or which finetune's output it is."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("has(self.repoId) != has(self.source)", "set exactly one of repoId or source."),
                cel("has(self.repoId) == has(self.checkpointRootPVC)",
                    "checkpointRootPVC goes with repoId (where the download goes); a model from source.finetuneRef "
                    "lives in the finetune's output claim.", ".checkpointRootPVC"),
                cel("has(self.repoId) || (!has(self.revision) && !has(self.tokenSecretRef))",
                    "revision and tokenSecretRef apply only to a model downloaded from repoId.", ".revision"),
            ]
        }
    }

    repo_id: Optional[str] = Field(
        None,
        description="Hugging Face repository id, `<org>/<name>` (e.g. EleutherAI/pythia-160m).",
        min_length=3,
        max_length=200,
        pattern=REPO_ID_PATTERN,
    )
    source: Optional[ModelSource] = Field(
        None, description="Instead of repoId: the model is a FinetuneJob's output (finetuneRef)."
    )
    revision: Optional[str] = Field(
        None, description="Branch, tag or commit of the repository (the default branch when omitted).", max_length=200
    )
    checkpoint_root_pvc: Optional[CheckpointRootPVC] = Field(
        None,
        alias="checkpointRootPVC",
        description="Claim holding the checkpoints; the model is stored in `checkpoints/<repoId>` inside it "
        "(with repoId).",
    )
    token_secret_ref: Optional[SecretKeyRef] = Field(
        None,
        description="Secret key holding a Hugging Face token, for gated or private models. The token reaches "
        "the download pod only as an environment variable from this Secret.",
    )
    backoff_limit: int = Field(2, description="Retries of the download pod before the model is Failed.", ge=0, le=10)


class LitGPTModelStatus(StatusBase):
    """Phase: Pending, Downloading, Ready or Failed; from source.finetuneRef: Waiting (for the
    finetune), Verifying (its weights), Ready or Failed."""

    job_name: Optional[str] = Field(None, description="Name of the download Job.")
    claim_name: Optional[str] = Field(None, description="Claim holding the checkpoint.")
    checkpoint_path: Optional[str] = Field(
        None, description="Folder of the checkpoint inside the claim (`checkpoints/<repoId>`)."
    )
    digest: Optional[str] = Field(
        None,
        description="`sha256:<hex>` over the weight files' sha256 (as recorded by the download, or checked "
        "against the finetune's weightsDigest). Pods that load the model get it as LITGPT_EXPECTED_DIGEST and "
        "refuse weights that differ from it.",
    )
    base_repo_id: Optional[str] = Field(
        None, description="The Hub repo the weights come from: repoId, or the finetune's baseRepoId."
    )


KIND = KindInfo(
    kind="LitGPTModel",
    plural="litgptmodels",
    short_names=("lgm", "litmodel"),
    spec=LitGPTModelSpec,
    status=LitGPTModelStatus,
    description="A Hugging Face model downloaded and converted once into a PVC, ready for finetuning, "
    "pretraining and serving. Ready when the checkpoint is complete.",
    printer_columns=(
        PrinterColumn("Repo", ".spec.repoId", description="Hugging Face repository id"),
        PrinterColumn("Finetune", ".spec.source.finetuneRef.name", description="FinetuneJob whose output it is"),
        PrinterColumn("Claim", ".spec.checkpointRootPVC.claimName", description="Model cache claim", priority=1),
        PHASE,
        AGE,
    ),
)
