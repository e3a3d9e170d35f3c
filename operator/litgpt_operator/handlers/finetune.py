"""FinetuneJob: wait for the LitGPTModel, check the data (`litgpt validate_data` in a CPU Job),
then run `litgpt finetune_<method>` in a Job."""

from __future__ import annotations

from litgpt_operator.api import FINETUNE_JOB
from litgpt_operator.builders.common import Parent
from litgpt_operator.builders.finetune import build_finetune_children, job_name
from litgpt_operator.handlers.core import reconciler
from litgpt_operator.builders.validation import build_validation_children
from litgpt_operator.handlers.jobs import DataCheck, TrainingRun, reconcile_training
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
        return TrainingRun(model.repo_id, build_finetune_children(parent, spec, model, settings), check)

    return reconcile_training(body, spec, settings, job_name(parent), {"model": spec.model_ref.name}, plan,
                              spec.method, spec.lora)
