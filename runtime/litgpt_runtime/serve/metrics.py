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

_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)

# Labels: `endpoint` (the route), `status` (HTTP status; 499: the client went away first),
# `model` (the served name the request chose: the base or a LoRA adapter), `device` (a worker).
REQUESTS = Counter("litgpt_serve_requests", "HTTP requests handled", ["endpoint", "status"], registry=REGISTRY)
LATENCY = Histogram("litgpt_serve_request_duration_seconds", "Time from request to the end of the response",
                    ["endpoint"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
FIRST_TOKEN = Histogram("litgpt_serve_time_to_first_token_seconds", "Time from request to the first token",
                        ["model"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
INTER_TOKEN = Histogram("litgpt_serve_inter_token_latency_seconds", "Time between consecutive tokens of a request",
                        ["model"], buckets=_TOKEN_GAP_BUCKETS, registry=REGISTRY)
RUNNING = Gauge("litgpt_serve_requests_running", "Generations that have produced their first token",
                ["model"], registry=REGISTRY)
WAITING = Gauge("litgpt_serve_requests_waiting", "Generations accepted that have not produced a token yet "
                "(in line for a KV-cache row, or in their prompt's forward pass)", ["model"], registry=REGISTRY)
PROMPT_TOKENS = Counter("litgpt_serve_prompt_tokens", "Prompt tokens of generation requests", ["model"],
                        registry=REGISTRY)
GENERATED_TOKENS = Counter("litgpt_serve_generated_tokens", "Tokens generated", ["model"], registry=REGISTRY)
KV_ROWS_IN_USE = Gauge("litgpt_serve_kv_cache_rows_in_use", "KV-cache rows owned by a request, per inference worker",
                       ["device"], registry=REGISTRY)
KV_ROWS = Gauge("litgpt_serve_kv_cache_rows", "KV-cache rows of each inference worker (--max_batch_size)",
                registry=REGISTRY)
BATCH_SIZE = Histogram("litgpt_serve_batch_size", "Rows in the forward pass that produced a token",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY)
CANCELLED = Counter("litgpt_serve_cancelled_requests", "Generations stopped because the client went away",
                    ["model"], registry=REGISTRY)


def observe_rows(output: dict) -> None:
    """The worker reports its rows in use with every output (see worker.py)."""
    if "rows" in output:
        KV_ROWS_IN_USE.labels(output["device"]).set(output["rows"])


_KNOWN_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/predict", "/health", "/ready", "/metrics"}


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
