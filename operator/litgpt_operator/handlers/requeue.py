"""Re-checks of objects waiting for something no watch event announces, kept in this process.

An object waits for a dependency (a model to be Ready, a finetune to succeed) or for an object of
its child's name to go away. Dependencies wake their dependents at once (`kopf_wiring`'s
indexes); the re-check is the safety net, so it backs off: `retry_delay_seconds`, doubled per
consecutive wait of the same object, up to `MAX_DELAY_S`.

Why not kopf's TemporaryError: kopf keeps a retried handler's progress in annotations on the
object, so every retry costs a patch of it (and another when it ends), and idle waits cost
writes; measured in benchmarks/bench_operator.py. A re-check here costs one read when nothing
changed, and is lost with the process, which is fine: a starting operator reconciles everything.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)
Key = tuple[str, str, str]  # (kind, namespace, name)
MAX_DELAY_S = 300.0


class Requeue:
    """One timer thread; at most one pending re-check per object (the earliest asked for)."""

    def __init__(self, run: Callable[[Key], None]):
        self.run = run
        self.cond = threading.Condition()
        self.heap: list[tuple[float, Key]] = []
        self.due: dict[Key, float] = {}
        self.waits: dict[Key, int] = {}  # consecutive waits, for the back-off
        self.thread: threading.Thread | None = None

    def waiting(self, key: Key, base_delay_s: float) -> float:
        """`key` is still waiting: re-check it later (backing off). -> the delay chosen."""
        with self.cond:
            count = self.waits.get(key, 0)
            self.waits[key] = count + 1
            delay = min(MAX_DELAY_S, base_delay_s * 2 ** count)
            due = time.monotonic() + delay
            if self.due.get(key, float("inf")) > due:
                self.due[key] = due
                heapq.heappush(self.heap, (due, key))
                self.cond.notify()
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="litgpt-requeue", daemon=True)
                self.thread.start()
            return delay

    def settled(self, key: Key) -> None:
        """`key` waits for nothing any more: forget its back-off and any pending re-check."""
        with self.cond:
            self.waits.pop(key, None)
            self.due.pop(key, None)

    def clear(self) -> None:
        with self.cond:
            self.heap.clear()
            self.due.clear()
            self.waits.clear()

    def pending(self) -> list[Key]:
        with self.cond:
            return sorted(self.due)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.heap or self.heap[0][0] > time.monotonic():
                    self.cond.wait(timeout=None if not self.heap else self.heap[0][0] - time.monotonic())
                due, key = heapq.heappop(self.heap)
                if self.due.get(key) != due:  # superseded or settled meanwhile
                    continue
                del self.due[key]
            try:
                self.run(key)
            except Exception as error:  # it was re-queued with a longer delay (core.refresh)
                log.warning("re-check of %s %s/%s failed: %s", *key, error)
