"""Stopping without dropping requests: on SIGTERM the server finishes what it holds, then exits.

Kubernetes stops a pod (a rollout replacing it, a scale-down) with SIGTERM to the container's first
process, after its preStop hook; the Service stops sending it new requests at about that time. The
server then:

- answers 503 on /ready (so no endpoint routes to it once the probe notices),
- keeps serving: the requests in progress -- and any that still arrive -- get their whole answer,
- and stops LitServe (API process, inference workers) once no generation is held, or when
  `--drain_timeout` seconds have passed, whichever comes first. A second SIGTERM stops at once.

The count of held requests lives in shared memory: the API process (forked from the main one)
counts in `intake.Admission`, the main process waits on it. Only the main process acts on the
signal. Where it reaches every process of the server at once (a process group, as the dev cluster's
exec node sends it), the API process and the inference workers ignore it (`main_process_decides`):
had uvicorn acted on it, it would close its listener at once and reset the connections it had not
yet handed over -- a request still connecting when the signal came was dropped. They act on
SIGTERM only once the main process has begun stopping LitServe (LitServe's own terminate() is what
they receive then), or when the main process is gone. LitServe's manager process, which carries
their queues, ignores it until the main process shuts it down.
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
        # spawn context: LitServe spawns its inference workers (they read `stopping`); the API
        # process is forked and inherits the values either way
        ctx = mp.get_context("spawn")
        self._held = ctx.Value("i", 0)
        self._draining = ctx.Value("b", 0, lock=False)
        self._stopping = ctx.Value("b", 0, lock=False)  # the drain is over: LitServe is being stopped

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

    @property
    def stopping(self) -> bool:
        return bool(self._stopping.value)

    def mark_stopping(self) -> None:
        self._stopping.value = 1

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
        drain.mark_stopping()  # before stop(): the children act on the SIGTERM it sends them
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


def main_process_decides(drain: Drain, handler: Callable) -> Callable:
    """The SIGTERM handler of a child process of the server (API process, inference worker):
    `handler` runs only for the main process's shutdown, or when the main process is gone.

    A signal to the whole process group reaches the children while the main process is still
    draining; they keep serving, and stop when the main process stops LitServe.
    """
    parent = os.getppid()

    def on_sigterm(signum, frame) -> None:
        if drain.stopping or os.getppid() != parent:
            handler(signum, frame)

    return on_sigterm
