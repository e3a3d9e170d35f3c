"""kopf handlers: `kopf run -m litgpt_operator.handlers` (or the `litgpt-operator` script) loads them.

Per kind, a reconciler (`model`, `finetune`, `pretrain`, `server`) turns a live object into
children + an observed status; `core` runs them and writes status; `kopf_wiring` says when.
"""

from litgpt_operator.handlers import finetune, model, pretrain, server  # noqa: F401  (register reconcilers)
from litgpt_operator.handlers import kopf_wiring, startup  # noqa: F401  (register kopf handlers)
