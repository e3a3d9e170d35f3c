"""PretrainJob: wait for the referenced LitGPTModels (if any), then run `litgpt pretrain`."""

from __future__ import annotations

from litgpt_operator.api import PRETRAIN_JOB
from litgpt_operator.builders.common import Parent
from litgpt_operator.builders.pretrain import PretrainSources, build_pretrain_children, job_name
from litgpt_operator.builders.training import headless_service_name
from litgpt_operator.handlers.core import reconciler
from litgpt_operator.handlers.jobs import TrainingRun, reconcile_training
from litgpt_operator.settings import Settings
from litgpt_operator.status import Observed


@reconciler(PRETRAIN_JOB)
def reconcile_pretrain(body: dict, settings: Settings) -> Observed:
    parent = Parent.from_body(body)
    spec = PRETRAIN_JOB.parse_spec(body)
    name = job_name(parent)
    refs = {"initial": None if spec.from_scratch else spec.initial_checkpoint, "tokenizer": spec.tokenizer_ref}

    def plan(models):
        sources = PretrainSources(**models)
        model = spec.architecture or (sources.initial.sized_as if sources.initial else spec.model_name)
        return TrainingRun(model, build_pretrain_children(parent, spec, sources, settings))

    observed = reconcile_training(body, spec, settings, name, {r: ref.name for r, ref in refs.items() if ref}, plan,
                                  "full")
    observed.fields["serviceName"] = headless_service_name(name) if spec.nodes > 1 else None
    return observed
