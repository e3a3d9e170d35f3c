"""The objects waiting to be reconciled, and the worker threads that reconcile them.

kopf calls a handler per watch event, and a pod alone changes several times while it starts, so
events come in bursts. The handlers only add the object's key here (no API call, no thread of
kopf's executor held); a key already waiting is not added twice, and a key asked for while it is
being reconciled is reconciled once more afterwards (the run in progress may have read the
world before the change). Each reconcile reads the world afresh, so one run serves every event
that came before it. A fixed number of workers bounds the operator's concurrent API calls and
memory whatever the number of objects (as controller-runtime's work queue does).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque
from typing import Callable, Optional

log = logging.getLogger(__name__)
Key = tuple[str, str, str]  # (kind, namespace, name)


class WorkQueue:
    def __init__(self, process: Callable[[Key], None], workers: int = 8):
        self.process = process
        self.workers = workers
        self.cond = threading.Condition()
        self.order: deque[Key] = deque()
        self.queued: set[Key] = set()
        self.active: set[Key] = set()
        self.again: set[Key] = set()  # asked for while active
        self.generation = 0  # of the running workers; stop() ends them
        self.running = False
        # The context reconciles run in: kopf's handlers pass theirs, which holds what kopf.event
        # needs to post an Event from any thread (its queue and event loop).
        self.context: Optional[contextvars.Context] = None

    def add(self, key: Key, context: Optional[contextvars.Context] = None) -> None:
        with self.cond:
            if context is not None:
                self.context = context
            if key in self.active:
                self.again.add(key)
            elif key not in self.queued:
                self.queued.add(key)
                self.order.append(key)
                self.cond.notify()

    def start(self, workers: int | None = None) -> None:
        with self.cond:
            if self.running:
                return
            self.workers = workers or self.workers
            self.running = True
            self.generation += 1
            for i in range(self.workers):
                threading.Thread(target=self._work, args=(self.generation,), name=f"litgpt-reconcile-{i}",
                                 daemon=True).start()

    def stop(self) -> None:
        """Forget what is waiting; workers end after their current reconcile (operator shutdown)."""
        with self.cond:
            self.running = False
            self.order.clear()
            self.queued.clear()
            self.again.clear()
            self.context = None
            self.cond.notify_all()

    def idle(self) -> bool:
        with self.cond:
            return not self.order and not self.active

    def _work(self, generation: int) -> None:
        while True:
            with self.cond:
                while self.generation == generation and self.running and not self.order:
                    self.cond.wait()
                if self.generation != generation or not self.running:
                    return
                key = self.order.popleft()
                self.queued.discard(key)
                self.active.add(key)
                context = self.context.copy() if self.context is not None else contextvars.Context()
            try:
                context.run(self.process, key)
            except Exception:  # process() reports its own failures; this is a bug in it
                log.exception("reconcile of %s %s/%s failed with an exception", *key)
            finally:
                with self.cond:
                    self.active.discard(key)
                    if key in self.again:
                        self.again.discard(key)
                        if self.running and key not in self.queued:
                            self.queued.add(key)
                            self.order.append(key)
                            self.cond.notify()
