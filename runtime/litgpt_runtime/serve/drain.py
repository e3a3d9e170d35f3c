"""Stopping without dropping requests: on SIGTERM the server finishes what it holds, then exits.

Kubernetes stops a pod (a rollout replacing it, a scale-down) with SIGTERM to the container's first
process, after its preStop hook; the Service stops sending it new requests at about that time. The
server then:

- answers 503 on /ready (so no endpoint routes to it once the probe notices),
- keeps serving: the requests in progress -- and any that still arrive -- get their whole answer,
- and stops LitServe (API process, inference workers) once no generation is held, or when
  `--drain_timeout` seconds have passed, whichever comes first. A second SIGTERM stops at once.

The count of held requests lives in shared memory: the API process (forked from the main one)
counts in `intake.Admission`, the main process waits on it. Where the signal reaches every process
of the server at once (a process group, as the dev cluster's exec node sends it), each holds out
on its own: uvicorn finishes its open requests (graceful timeout = the drain timeout), the
inference worker exits only when it has no row left (worker.py), and LitServe's manager process,
which carries their queues, ignores the signal until the main process shuts it down.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Callable


class Drain:
    """Generations held by the server (shared by its processes) and whether a stop was asked for."""

    def __init__(self) -> None:
        self._held = mp.Value("i", 0)
        self._draining = mp.Value("b", 0, lock=False)

    def add(self, delta: int) -> None:
        with self._held.get_lock():
            self._held.value += delta

    @property
    def held(self) -> int:
        return self._held.value

    @property
    def draining(self) -> bool:
        return bool(self._draining.value)

    def begin(self) -> bool:
        """Mark the server as stopping; False if it already was."""
        if self._draining.value:
            return False
        self._draining.value = 1
        return True

    def wait_idle(self, timeout_s: float, poll_s: float = 0.1) -> bool:
        """Block until no generation is held (True) or `timeout_s` has passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self.held > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
        return True


def install_sigterm(drain: Drain, timeout_s: float, stop: Callable[[], None]) -> None:
    """SIGTERM handling of `litgpt serve`'s main process (and of the processes forked from it).

    The first SIGTERM starts the drain in a thread, which calls `stop()` (LitServe's own shutdown)
    when the server is idle or the time is up; a second one interrupts at once, as Ctrl-C does.
    """
    main_pid = os.getpid()

    def drain_then_stop() -> None:
        idle = drain.wait_idle(timeout_s)
        print("Drained: every request in progress has its answer; stopping." if idle else
              f"Stopping with {drain.held} request(s) still in progress after --drain_timeout {timeout_s:g} s.",
              flush=True)
        stop()

    def on_sigterm(signum, frame) -> None:
        if os.getpid() != main_pid:
            # A forked child still on this handler: LitServe's manager (its queues must outlive the
            # drain; the main process shuts it down), or the API process after uvicorn's graceful
            # stop re-raised the signal (its server has returned by then; it exits by itself).
            return
        if not drain.begin():
            raise KeyboardInterrupt
        print(f"SIGTERM: finishing the {drain.held} request(s) in progress (at most {timeout_s:g} s); "
              "/ready answers 503.", flush=True)
        threading.Thread(target=drain_then_stop, name="drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
