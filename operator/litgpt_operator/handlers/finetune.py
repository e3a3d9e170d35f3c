"""FinetuneJob: wait for the LitGPTModel, check the data (`litgpt validate_data` in a CPU Job),
then run `litgpt finetune_<method>` in a Job; once it Succeeded, record the output's lineage
(status.output)."""

from __future__ import annotations

from typing import Any, Optional

from litgpt_operator import observe
from litgpt_operator.api import FINETUNE_JOB
from litgpt_operator.builders.common import Parent
from litgpt_operator.builders.finetune import build_finetune_children, job_name
from litgpt_operator.builders.server import FINETUNE_FINAL_SUBDIR
from litgpt_operator.builders.validation import build_validation_children
from litgpt_operator.handlers.core import reconciler
from litgpt_operator.handlers.jobs import DataCheck, TrainingRun, job_pods, reconcile_training
from litgpt_operator.settings import Settings
from litgpt_operator.status import Observed


@reconciler(FINETUNE_JOB)
def reconcile_finetune(body: dict, settings: Settings) -> Observed:
    parent = Parent.from_body(body)
    spec = FINETUNE_JOB.parse_spec(body)

    def plan(models):
        model = models["model"]
        check = None
        if spec.data.validation != "off":
            check = DataCheck(spec.data.validation == "strict",
                              build_validation_children(parent, spec, model, settings))
        return TrainingRun(model.sized_as, build_finetune_children(parent, spec, model, settings), check)

    observed = reconcile_training(body, spec, settings, job_name(parent), {"model": spec.model_ref.name}, plan,
                                  spec.method, spec.lora)
    if observed.phase == "Succeeded":
        # Kept once read: the Job's pods (and their termination messages) may be garbage-collected.
        observed.fields["output"] = ((body.get("status") or {}).get("output")
                                     or output_status(job_pods(parent.namespace, job_name(parent)), observed.fields))
    return observed


def output_status(pods: list[dict], fields: dict[str, Any]) -> Optional[dict[str, Any]]:
    """status.output: the finetuned checkpoint in its claim, with the lineage the runtime reported."""
    claim, folder = fields.get("outputClaimName"), fields.get("outputPath")
    if not (claim and folder):
        return None
    lineage = observe.reported_lineage(pods) or {}
    recorded = {k: v for k, v in lineage.items() if k not in ("version", "path")}  # path: the pod's view
    return {"path": f"{folder}/{FINETUNE_FINAL_SUBDIR}", "claimName": claim, **recorded}
