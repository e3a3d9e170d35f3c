"""Polling with a deadline: tests wait for the cluster to converge, never sleep a fixed time."""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str, timeout_s: float = 60, interval_s: float = 0.25,
             detail: Optional[Callable[[], str]] = None, error: type[Exception] = AssertionError) -> T:
    """Call `check` until it returns something truthy and return that; after `timeout_s`, raise
    `error` naming `what`, the last value seen and, when given, `detail()` (the evidence)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            message = f"timed out after {timeout_s}s waiting for {what} (last value: {value!r})"
            raise error(f"{message}\n{detail()}" if detail else message)
        time.sleep(interval_s)
