"""The four custom resource kinds as pydantic models: the single source of the CRDs and docs/api.md."""

from litgpt_operator.api import finetunejob, litgptmodel, modelserver, pretrainjob
from litgpt_operator.api.common import API_VERSION, GROUP, VERSION
from litgpt_operator.api.kind import KindInfo

LITGPT_MODEL = litgptmodel.KIND
FINETUNE_JOB = finetunejob.KIND
PRETRAIN_JOB = pretrainjob.KIND
MODEL_SERVER = modelserver.KIND

KINDS: tuple[KindInfo, ...] = (LITGPT_MODEL, FINETUNE_JOB, PRETRAIN_JOB, MODEL_SERVER)
BY_KIND = {k.kind: k for k in KINDS}

__all__ = ["API_VERSION", "GROUP", "VERSION", "KINDS", "BY_KIND", "LITGPT_MODEL", "FINETUNE_JOB",
           "PRETRAIN_JOB", "MODEL_SERVER", "KindInfo"]
