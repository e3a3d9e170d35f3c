"""Prometheus metrics of the operator (served on the metrics port, scraped via the chart's Service).

    litgpt_operator_reconciles_total{kind, result}        reconciles, result = success | error
    litgpt_operator_reconcile_errors_total{kind, error}   failed reconciles by exception class
    litgpt_operator_reconcile_duration_seconds{kind}      histogram
    litgpt_operator_objects{kind, phase}                  objects this replica last saw, by phase
    litgpt_training_step / _loss / _tokens_per_second / _eta_seconds{kind, namespace, name}
                                                          progress of training jobs (the newest
                                                          progress record; gone with the object)

Own registry (not the process-global one), so tests and the exposition hold only these series.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from contextlib import contextmanager
from typing import Iterator, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)
REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter("litgpt_operator_reconciles", "Reconciles of litgpt.dev objects.", ["kind", "result"],
                     registry=REGISTRY)
ERRORS = Counter("litgpt_operator_reconcile_errors", "Reconciles that raised, by exception class.",
                 ["kind", "error"], registry=REGISTRY)
DURATION = Histogram("litgpt_operator_reconcile_duration_seconds", "Time one reconcile took.", ["kind"],
                     registry=REGISTRY, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


class _State:
    """Last phase and training progress per object (what the gauges report at scrape time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phases: dict[tuple[str, str, str], str] = {}
        self.progress: dict[tuple[str, str, str], dict] = {}

    def collect(self):
        with self.lock:
            phases = Tally((kind, phase) for (kind, _, _), phase in self.phases.items())
            progress = dict(self.progress)
        objects = GaugeMetricFamily("litgpt_operator_objects", "litgpt.dev objects by kind and phase.",
                                    labels=["kind", "phase"])
        for (kind, phase), count in sorted(phases.items()):
            objects.add_metric([kind, phase], count)
        yield objects
        families = {
            "step": GaugeMetricFamily("litgpt_training_step", "Optimizer step of a running training job.",
                                      labels=["kind", "namespace", "name"]),
            "loss": GaugeMetricFamily("litgpt_training_loss", "Training loss at the last logged step.",
                                      labels=["kind", "namespace", "name"]),
            "tokensPerSecond": GaugeMetricFamily("litgpt_training_tokens_per_second",
                                                 "Training throughput at the last logged step.",
                                                 labels=["kind", "namespace", "name"]),
            "etaSeconds": GaugeMetricFamily("litgpt_training_eta_seconds",
                                            "Time left at the run's average pace (when its total steps are known).",
                                            labels=["kind", "namespace", "name"]),
        }
        for key, values in sorted(progress.items()):
            for field, family in families.items():
                if field in values:
                    family.add_metric(list(key), float(values[field]))
        yield from families.values()


_STATE = _State()
REGISTRY.register(_STATE)


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    """Count and time one reconcile; an exception is counted and re-raised."""
    start = time.perf_counter()
    try:
        yield
    except BaseException as error:
        RECONCILES.labels(kind, "error").inc()
        ERRORS.labels(kind, type(error).__name__).inc()
        raise
    else:
        RECONCILES.labels(kind, "success").inc()
    finally:
        DURATION.labels(kind).observe(time.perf_counter() - start)


def record(kind: str, namespace: str, name: str, phase: Optional[str], progress: Optional[dict] = None) -> None:
    """What the last reconcile of one object concluded (phase None: the object is gone)."""
    key = (kind, namespace, name)
    with _STATE.lock:
        if phase is None:
            _STATE.phases.pop(key, None)
            _STATE.progress.pop(key, None)
            return
        _STATE.phases[key] = phase
        if progress:
            _STATE.progress[key] = dict(progress)
        else:
            _STATE.progress.pop(key, None)


def in_phase(phase: str, kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of the objects of `kinds` whose last reconcile here said `phase`."""
    with _STATE.lock:
        return sorted(key for key, seen in _STATE.phases.items() if seen == phase and key[0] in kinds)


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def serve(port: int, address: str = "0.0.0.0"):
    """Serve /metrics on `port` in a background thread; returns (server, thread)."""
    return start_http_server(port, addr=address, registry=REGISTRY)


_served: dict[int, object] = {}


def serve_once(port: int) -> None:
    """`serve` at operator start-up; a second start-up in the same process (kopf restarted
    in-process) keeps the first endpoint."""
    if port in _served:
        return
    try:
        _served[port] = serve(port)
    except OSError as error:
        # Metrics are auxiliary: a taken port must not stop the reconciling.
        log.error("metrics endpoint on port %s not started: %s", port, error)


def reset() -> None:  # tests: an operator run earlier in the same process has counted too
    with _STATE.lock:
        _STATE.phases.clear()
        _STATE.progress.clear()
    for metric in (RECONCILES, ERRORS, DURATION):
        metric.clear()
