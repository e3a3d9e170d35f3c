"""Polling with a deadline: tests wait for the cluster to converge, never sleep a fixed time."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str, timeout_s: float = 60, interval_s: float = 0.25) -> T:
    """Call `check` until it returns something truthy and return that; AssertionError naming
    `what` (and the last value seen) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last value: {value!r})")
        time.sleep(interval_s)
