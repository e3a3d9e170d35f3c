"""FinetuneJob: wait for the LitGPTModel, then run `litgpt finetune_<method>` in a Job."""

from __future__ import annotations

from litgpt_operator.api import FINETUNE_JOB
from litgpt_operator.builders.common import Parent
from litgpt_operator.builders.finetune import build_finetune_children, job_name
from litgpt_operator.builders.sources import ModelCheckpoint
from litgpt_operator.handlers.core import reconciler
from litgpt_operator.handlers.jobs import (
    job_conditions,
    model_dependency,
    output_fields,
    read_job,
    spec_change_condition,
    start_job,
)
from litgpt_operator import fitcheck
from litgpt_operator.handlers import production
from litgpt_operator.settings import Settings
from litgpt_operator.status import Cond, Observed


@reconciler(FINETUNE_JOB)
def reconcile_finetune(body: dict, settings: Settings, apply_children: bool) -> Observed:
    parent = Parent.from_body(body)
    spec = FINETUNE_JOB.parse_spec(body)
    name = job_name(parent)
    fields: dict = {"jobName": name}
    job, state = read_job(parent.namespace, name, settings)
    if job is None:
        model = model_dependency(parent.namespace, spec.model_ref.name)
        model_ready = Cond.of("ModelReady", model.ready, model.reason, model.message)
        if not model.ready:
            waiting = Cond.of("Succeeded", False, "WaitingForModel", model.message)
            return Observed("Waiting", [model_ready, waiting], fields, waiting_for=model.message)
        checkpoint = ModelCheckpoint.from_body(model.body)
        fit = production.fit_condition(body, checkpoint.repo_id, spec.method, spec, settings, spec.lora)
        if production.refuses(fit):
            return Observed("Failed", [model_ready, *production.refused_conditions(fit)], fields)
        children = production.prepare_children(body, build_finetune_children(parent, spec, checkpoint, settings), True)
        job, state = start_job(parent.namespace, children, settings)
    else:
        fit = production.previous_condition(body, fitcheck.CONDITION)
        model_ready = Cond.of("ModelReady", True, "ModelReady", f"LitGPTModel {spec.model_ref.name} was Ready "
                                                                f"when Job {name} was created.")
    outcome = job_conditions(state)
    fields.update(output_fields(job), startTime=state.start_time, completionTime=state.completion_time)
    spec_change = spec_change_condition("FinetuneJob", parent.generation, job, state)
    fields.update(production.training_fields(parent.namespace, name, body.get("status") or {}, state.phase == "Running"))
    conditions = [model_ready, *([fit] if fit else []), *outcome.conditions] + ([spec_change] if spec_change else [])
    return Observed(outcome.phase, conditions, fields)
