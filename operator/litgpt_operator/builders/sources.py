"""Where a child finds the checkpoints it reads: resolved from referenced objects' specs/status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from litgpt_runtime.checkpoint import revision_suffix  # torch-free

from litgpt_operator.api import LITGPT_MODEL
from litgpt_operator.builders.common import MODELS_MOUNT, OUTPUT_MOUNT

# Read by the runtime (`litgpt_runtime.checkpoint.verify_expected`); the operator must not import torch.
EXPECTED_DIGEST_ENV = "LITGPT_EXPECTED_DIGEST"
OUTPUT_CLAIM_ANNOTATION = "litgpt.dev/output-claim"
OUTPUT_PATH_ANNOTATION = "litgpt.dev/output-path"


def model_ref(repo_id: str, revision: Optional[str] = None) -> str:
    """How the runtime names a model at a revision: `org/name`, or `org/name@rev` for a revision other
    than the default branch (`litgpt download --revision rev` writes that folder)."""
    return repo_id + revision_suffix(revision)


def checkpoint_path(repo_id: str, revision: Optional[str] = None) -> str:
    """Folder of a model inside its cache claim (the runtime's `<root>/<org>/<name>[@<rev>]`)."""
    return f"checkpoints/{model_ref(repo_id, revision)}"


@dataclass(frozen=True)
class ModelCheckpoint:
    """A LitGPTModel's checkpoint: a Hub download (its repo id, in the cache claim's
    `checkpoints/` layout) or a FinetuneJob's output (`folder`, inside the finetune's claim)."""

    name: str
    repo_id: Optional[str]
    claim_name: str
    digest: Optional[str] = None  # status.digest: what the download recorded (sha256 of the weights)
    revision: Optional[str] = None
    folder: Optional[str] = None  # a finetune output's folder inside claim_name (status.checkpointPath)
    base_repo_id: Optional[str] = None  # the Hub repo the weights come from (status.baseRepoId)

    @classmethod
    def from_body(cls, body: dict) -> "ModelCheckpoint":
        spec = LITGPT_MODEL.parse_spec(body)
        status = body.get("status") or {}
        digest = status.get("digest")
        if spec.repo_id is None:  # source.finetuneRef: where the operator found (and checked) it, once Ready
            return cls(body["metadata"]["name"], None, status.get("claimName") or "", digest,
                       folder=status.get("checkpointPath") or "", base_repo_id=status.get("baseRepoId"))
        return cls(body["metadata"]["name"], spec.repo_id, spec.checkpoint_root_pvc.claim_name, digest, spec.revision)

    @property
    def ref(self) -> str:
        """The runtime's first argument for these weights (`org/name[@rev]`, or the mounted folder)."""
        return self.mounted_dir if self.repo_id is None else model_ref(self.repo_id, self.revision)

    @property
    def sized_as(self) -> Optional[str]:
        """The repo id whose architecture these weights have (what the fit check sizes)."""
        return self.repo_id or self.base_repo_id

    def verify_env(self) -> list[dict]:
        """Env of a pod that loads these weights: the runtime re-hashes them against the digest
        before use (a corrupted file fails with the file's name instead of garbage output)."""
        return [{"name": EXPECTED_DIGEST_ENV, "value": self.digest}] if self.digest else []

    @property
    def mounted_dir(self) -> str:
        """The checkpoint folder inside a runtime pod (the model's claim is mounted at /models)."""
        return self.dir_under(MODELS_MOUNT)

    def dir_under(self, mount: str) -> str:
        """The checkpoint folder when the model's claim is mounted at `mount`."""
        return f"{mount}/{self.folder if self.repo_id is None else checkpoint_path(self.repo_id, self.revision)}"


@dataclass(frozen=True)
class OutputLocation:
    """Where a training job writes (claim + folder inside it)."""

    claim_name: str
    path: str

    @property
    def mounted_dir(self) -> str:
        return f"{OUTPUT_MOUNT}/{self.path}"

    def annotations(self) -> dict[str, str]:
        return {OUTPUT_CLAIM_ANNOTATION: self.claim_name, OUTPUT_PATH_ANNOTATION: self.path}

    @classmethod
    def from_annotations(cls, annotations: dict[str, str]) -> Optional["OutputLocation"]:
        claim, path = annotations.get(OUTPUT_CLAIM_ANNOTATION), annotations.get(OUTPUT_PATH_ANNOTATION)
        return cls(claim, path) if claim and path else None


def output_location(kind_folder: str, parent_name: str, output, default_claim: str) -> OutputLocation:
    """`output` of a training spec, with its defaults: the model's claim, `<kind_folder>/<name>`."""
    return OutputLocation(output.claim_name or default_claim, output.path or f"{kind_folder}/{parent_name}")
