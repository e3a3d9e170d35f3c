"""What the CRD needs beyond the schema: names, printer columns, the kind's description."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from litgpt_operator.api.common import API_VERSION, GROUP, VERSION


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        column = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
PHASE = PrinterColumn("Phase", ".status.phase", description="Short summary of the state")
# What `kubectl get finetunejobs,pretrainjobs` shows of a run's progress record (status.progress).
PROGRESS_COLUMNS = (
    PrinterColumn("Step", ".status.progress.step", "integer", description="Optimizer steps done"),
    PrinterColumn("Loss", ".status.progress.loss", "number", description="Training loss at that step"),
    PrinterColumn("ETA", ".status.progress.eta", description="Time left at the run's average pace"),
)


@dataclass(frozen=True)
class KindInfo:
    """One custom resource kind: its schema (spec + status models) and its CRD metadata."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    printer_columns: tuple[PrinterColumn, ...] = ()
    categories: tuple[str, ...] = ("litgpt",)
    # CEL rules on the whole object (they can see status, e.g. transition rules once started).
    validations: tuple[dict, ...] = ()

    group: str = GROUP
    version: str = VERSION

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return API_VERSION

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    def parse_spec(self, body: dict) -> Any:
        """The spec of a live object as a typed model (defaults filled in, as the server would)."""
        return self.spec.model_validate(body.get("spec") or {})
