"""The objects waiting to be reconciled, and the worker threads that reconcile them.

kopf calls a handler per watch event, and a pod alone changes several times while it starts, so
events come in bursts. The handlers only add the object's key here (no API call, no thread of
kopf's executor held); a key already waiting is not added twice, and a key asked for while it is
being reconciled is reconciled once more afterwards (the run in progress may have read the
world before the change). Each reconcile reads the world afresh, so one run serves every event
that came before it. A fixed number of workers bounds the operator's concurrent API calls and
memory whatever the number of objects (as controller-runtime's work queue does).

Two lanes. An `urgent` key is an object that may need its first child now: first seen by this
process, a spec its status has not caught up with, or a dependency that just settled. Every other
trigger (a child's or pod's change, a progress poll, a re-check) refreshes the status of an object
that already has what it needs. Workers take urgent keys first, but a routine key after every
`URGENT_PER_ROUTINE` urgent ones while both wait, so a burst of new objects neither waits behind
the status refreshes of older ones (measured: benchmarks/README.md, "The operator at scale", step
4) nor starves them. A routine key asked for urgently moves to the urgent lane.

A key may come with the object as its newest watch event showed it (`body`); the worker hands it
to the reconcile with whether the key came from the urgent lane (`Taken`), and the reconcile
decides what to trust it for (`handlers.core`).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

log = logging.getLogger(__name__)
Key = tuple[str, str, str]  # (kind, namespace, name)
URGENT_PER_ROUTINE = 4


@dataclass(frozen=True)
class Taken:
    """How a worker got its key: from the urgent lane or not, and the object's newest body from
    its own watch events, if one came since the key was last taken."""

    urgent: bool = False
    body: Optional[dict] = None


class WorkQueue:
    def __init__(self, process: Callable[[Key, Taken], None], workers: int = 8):
        self.process = process
        self.workers = workers
        self.cond = threading.Condition()
        self.urgent: deque[Key] = deque()
        self.routine: deque[Key] = deque()
        self.queued: dict[Key, bool] = {}  # -> urgent
        self.active: set[Key] = set()
        self.again: dict[Key, bool] = {}  # asked for while active -> urgent
        self.bodies: dict[Key, dict] = {}  # the newest body a watch event gave, until taken
        self.urgent_in_a_row = 0
        self.generation = 0  # of the running workers; stop() ends them
        self.running = False
        # The context reconciles run in: kopf's handlers pass theirs, which holds what kopf.event
        # needs to post an Event from any thread (its queue and event loop).
        self.context: Optional[contextvars.Context] = None

    def add(self, key: Key, context: Optional[contextvars.Context] = None, urgent: bool = False,
            body: Optional[dict] = None) -> None:
        with self.cond:
            if context is not None:
                self.context = context
            if body is not None:
                self.bodies[key] = body
            if key in self.active:
                self.again[key] = self.again.get(key, False) or urgent
            else:
                self._queue(key, urgent)

    def _queue(self, key: Key, urgent: bool) -> None:
        was = self.queued.get(key)
        if was is None:
            (self.urgent if urgent else self.routine).append(key)
            self.queued[key] = urgent
            self.cond.notify()
        elif urgent and not was:
            self.routine.remove(key)  # O(queue length), and only once per key
            self.urgent.append(key)
            self.queued[key] = True

    def forget_body(self, key: Key) -> None:
        """The object is gone: a queued reconcile must read that, not trust the body it was given."""
        with self.cond:
            self.bodies.pop(key, None)

    def urgent_waiting(self) -> bool:
        """Whether an urgent key waits for a worker (a reconcile may leave what can wait to later)."""
        return bool(self.urgent)

    def _next(self) -> Key:
        """The next key to reconcile (the queue is not empty)."""
        if self.urgent and (not self.routine or self.urgent_in_a_row < URGENT_PER_ROUTINE):
            self.urgent_in_a_row += 1
            return self.urgent.popleft()
        self.urgent_in_a_row = 0
        return self.routine.popleft()

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
            self.urgent.clear()
            self.routine.clear()
            self.queued.clear()
            self.again.clear()
            self.bodies.clear()
            self.context = None
            self.cond.notify_all()

    def idle(self) -> bool:
        with self.cond:
            return not self.queued and not self.active

    def _work(self, generation: int) -> None:
        while True:
            with self.cond:
                while self.generation == generation and self.running and not self.queued:
                    self.cond.wait()
                if self.generation != generation or not self.running:
                    return
                key = self._next()
                taken = Taken(self.queued.pop(key), self.bodies.pop(key, None))
                self.active.add(key)
                context = self.context.copy() if self.context is not None else contextvars.Context()
            try:
                context.run(self.process, key, taken)
            except Exception:  # process() reports its own failures; this is a bug in it
                log.exception("reconcile of %s %s/%s failed with an exception", *key)
            finally:
                with self.cond:
                    self.active.discard(key)
                    if key in self.again:
                        urgent = self.again.pop(key)
                        if self.running:
                            self._queue(key, urgent)
