"""Riding out an API server that is away (restarting, upgrading, its etcd restarting).

kopf's own requests (watches, Events) retry an unreachable API server with these delays: at most
5 s apart, so the operator's watches are back within seconds of a restarted API server (kopf's
default waits up to 21 s between its last tries), and for about five minutes in all (kopf's
default: 54 s). Our reconciles that fail meanwhile are re-checked by `handlers.requeue`.
"""

from __future__ import annotations

# Seconds between tries: quick at first (a blip), then every 5 s. 63 tries, about 302 s in all.
BACKOFF_S: tuple[float, ...] = (0.5, 1, 2, 4) + (5,) * 59
