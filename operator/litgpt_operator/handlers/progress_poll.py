"""Live progress: every POLL_SECONDS, the training objects this replica last saw Running are
reconciled again, which reads the newest progress record from the lead pod's log tail
(`handlers.jobs.training_fields`) into their status. So the status follows the runtime within
about POLL_SECONDS plus one log read; nothing else changes while a pod runs, so no event would.

Not a `kopf.timer`: kopf puts a finalizer on every object that has a timer, and a finalizer
makes deleting an object wait for a running operator. This loop is one task of the operator,
started and stopped with it; it keeps no state of its own (the phases are what the metrics
module already records per object). A replica that peering has paused may keep polling the jobs
it last saw running until they end: harmless, as every reconcile is level-based and its status
write conditional on the object's resourceVersion.
"""

from __future__ import annotations

import asyncio

import kopf

from litgpt_operator import metrics
from litgpt_operator.api import FINETUNE_JOB, PRETRAIN_JOB
from litgpt_operator.handlers.core import WORK

POLL_SECONDS = 5.0
POLLED_KINDS = (FINETUNE_JOB.kind, PRETRAIN_JOB.kind)
_TASK = "progress_poll_task"


def poll_once() -> int:
    """Queue every training object last seen Running for a reconcile (`core.WORK`: one already
    queued is not queued twice, so a slow API server never piles polls up); -> how many."""
    running = metrics.in_phase("Running", POLLED_KINDS)
    for key in running:
        WORK.add(key)
    return len(running)


async def _loop() -> None:
    while True:
        await asyncio.sleep(POLL_SECONDS)
        poll_once()


@kopf.on.startup()
async def start_polling(memo: kopf.Memo, **_) -> None:
    memo[_TASK] = asyncio.create_task(_loop(), name="litgpt-progress-poll")


@kopf.on.cleanup()
async def stop_polling(memo: kopf.Memo, **_) -> None:
    task = memo.get(_TASK)
    if task is not None:
        task.cancel()
