"""kopf handlers: `kopf run -m litgpt_operator.handlers` (or the `litgpt-operator` script) loads them.

Per kind, a reconciler (`model`, `finetune`, `pretrain`, `server`) turns a live object into
children + an observed status; `jobs` holds what the Job-backed kinds share (the one training
reconcile among it), `children` the rule that only our own children are touched; `core` runs the
reconcilers and writes status; `kopf_wiring` says when; `progress_poll` re-reads running training
jobs' progress every few seconds.
"""

from litgpt_operator.handlers import finetune, model, pretrain, server  # noqa: F401  (register reconcilers)
from litgpt_operator.handlers import kopf_wiring, progress_poll, startup  # noqa: F401  (register kopf handlers)
