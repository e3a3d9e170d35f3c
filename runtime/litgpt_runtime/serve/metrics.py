"""Prometheus metrics of the API process, served at /metrics.

Everything is counted where the HTTP requests are handled; the worker reports the batch size of
the forward pass that produced each token, so batching is visible here too
(`litgpt_serve_batch_size`: one observation per generated token).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry()
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("litgpt_serve_requests", "HTTP requests handled", ["endpoint", "status"], registry=REGISTRY)
LATENCY = Histogram("litgpt_serve_request_duration_seconds", "Time from request to the end of the response",
                    ["endpoint"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
FIRST_TOKEN = Histogram("litgpt_serve_time_to_first_token_seconds", "Time from request to the first token",
                        buckets=_LATENCY_BUCKETS, registry=REGISTRY)
IN_FLIGHT = Gauge("litgpt_serve_requests_in_flight", "Generation requests being answered", registry=REGISTRY)
PROMPT_TOKENS = Counter("litgpt_serve_prompt_tokens", "Prompt tokens of generation requests", registry=REGISTRY)
GENERATED_TOKENS = Counter("litgpt_serve_generated_tokens", "Tokens generated", registry=REGISTRY)
BATCH_SIZE = Histogram("litgpt_serve_batch_size", "Rows in the forward pass that produced a token",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY)
CANCELLED = Counter("litgpt_serve_cancelled_requests", "Generations stopped because the client went away",
                    registry=REGISTRY)

_KNOWN_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/predict", "/health", "/metrics"}


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware: counts each request by status and times it until its last byte
    (a streaming response is timed to its end, which BaseHTTPMiddleware would not see)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in _KNOWN_PATHS else "other"
        start = time.perf_counter()
        status = {"code": 500}
        done = {"flag": False}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done["flag"] = True

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            REQUESTS.labels(endpoint, str(status["code"] if done["flag"] else 499 if status["code"] < 400
                                          else status["code"])).inc()
            LATENCY.labels(endpoint).observe(time.perf_counter() - start)
