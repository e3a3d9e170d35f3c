"""PretrainJob: wait for the referenced LitGPTModels (if any), then run `litgpt pretrain`."""

from __future__ import annotations

from litgpt_operator.api import PRETRAIN_JOB
from litgpt_operator.builders.common import Parent
from litgpt_operator.builders.distributed import headless_service_name
from litgpt_operator.builders.pretrain import PretrainSources, build_pretrain_children, job_name
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


@reconciler(PRETRAIN_JOB)
def reconcile_pretrain(body: dict, settings: Settings, apply_children: bool) -> Observed:
    parent = Parent.from_body(body)
    spec = PRETRAIN_JOB.parse_spec(body)
    name = job_name(parent)
    fields = {"jobName": name, "serviceName": headless_service_name(name) if spec.nodes > 1 else None}
    job, state = read_job(parent.namespace, name, settings)
    conditions: list[Cond] = []
    if job is None:
        refs = {"initial": None if spec.from_scratch else spec.initial_checkpoint, "tokenizer": spec.tokenizer_ref}
        resolved: dict[str, ModelCheckpoint] = {}
        for role, ref in refs.items():
            if ref is None:
                continue
            model = model_dependency(parent.namespace, ref.name)
            if not model.ready:
                waiting = [Cond.of("ModelReady", False, model.reason, model.message),
                           Cond.of("Succeeded", False, "WaitingForModel", model.message)]
                return Observed("Waiting", waiting, fields, waiting_for=model.message)
            resolved[role] = ModelCheckpoint.from_body(model.body)
        sources = PretrainSources(**resolved)
        model = spec.model_config_ or (resolved["initial"].repo_id if "initial" in resolved else spec.model_name)
        fit = production.fit_condition(body, model, "full", spec, settings)
        if production.refuses(fit):
            return Observed("Failed", [*conditions, *production.refused_conditions(fit)], fields)
        children = production.prepare_children(body, build_pretrain_children(parent, spec, sources, settings), True)
        job, state = start_job(parent.namespace, children, settings)
        conditions += [fit] if fit else []
    else:
        fit = production.previous_condition(body, fitcheck.CONDITION)
        conditions += [fit] if fit else []
    if spec.initial_checkpoint or spec.tokenizer_ref:
        conditions.append(Cond.of("ModelReady", True, "ModelReady", "The referenced LitGPTModels were Ready "
                                                                   f"when Job {name} was created."))
    outcome = job_conditions(state)
    fields.update(output_fields(job), startTime=state.start_time, completionTime=state.completion_time)
    spec_change = spec_change_condition("PretrainJob", parent.generation, job, state)
    fields.update(production.training_fields(parent.namespace, name, body.get("status") or {}, state.phase == "Running"))
    conditions += outcome.conditions + ([spec_change] if spec_change else [])
    return Observed(outcome.phase, conditions, fields)
