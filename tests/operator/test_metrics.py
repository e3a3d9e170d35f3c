"""The operator's Prometheus metrics: counted reconciles and errors, objects by phase, training
progress; served over HTTP in the text exposition format."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from litgpt_operator import metrics


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, metric: str, **labels) -> float:
    """The sample's value; a missing series fails (a renamed metric or label must not read as 0)."""
    found = samples(text)
    key = (metric, tuple(sorted(labels.items())))
    assert key in found, f"no series {metric}{labels}; the exposition has {sorted({n for n, _ in found})}"
    return found[key]


def absent(text: str, metric: str, **labels) -> bool:
    return (metric, tuple(sorted(labels.items()))) not in samples(text)


@pytest.fixture(autouse=True)
def fresh():
    metrics.reset()
    yield
    metrics.reset()


def test_reconciles_and_errors_are_counted():
    before = metrics.exposition().decode()
    with metrics.reconciling("FinetuneJob"):
        pass
    with pytest.raises(KeyError):
        with metrics.reconciling("FinetuneJob"):
            raise KeyError("x")
    after = metrics.exposition().decode()
    for name, labels in (("litgpt_operator_reconciles_total", {"kind": "FinetuneJob", "result": "success"}),
                         ("litgpt_operator_reconciles_total", {"kind": "FinetuneJob", "result": "error"}),
                         ("litgpt_operator_reconcile_errors_total", {"kind": "FinetuneJob", "error": "KeyError"})):
        assert absent(before, name, **labels)  # reset: counted from nothing
        assert value(after, name, **labels) == 1
    assert value(after, "litgpt_operator_reconcile_duration_seconds_count", kind="FinetuneJob") >= 2


def test_objects_by_phase_and_training_progress():
    metrics.record("FinetuneJob", "a", "one", "Running", {"step": 100, "loss": 1.84, "tokensPerSecond": 5321})
    metrics.record("FinetuneJob", "a", "two", "Running")
    metrics.record("FinetuneJob", "b", "three", "Queued")
    metrics.record("LitGPTModel", "a", "m", "Ready")
    text = metrics.exposition().decode()
    assert value(text, "litgpt_operator_objects", kind="FinetuneJob", phase="Running") == 2
    assert value(text, "litgpt_operator_objects", kind="FinetuneJob", phase="Queued") == 1
    assert value(text, "litgpt_operator_objects", kind="LitGPTModel", phase="Ready") == 1
    assert value(text, "litgpt_training_loss", kind="FinetuneJob", namespace="a", name="one") == pytest.approx(1.84)
    assert value(text, "litgpt_training_tokens_per_second", kind="FinetuneJob", namespace="a", name="one") == 5321
    metrics.record("FinetuneJob", "a", "one", "Succeeded")  # progress of a finished job disappears
    metrics.record("FinetuneJob", "b", "three", None)  # deleted
    text = metrics.exposition().decode()
    assert value(text, "litgpt_operator_objects", kind="FinetuneJob", phase="Running") == 1
    assert absent(text, "litgpt_operator_objects", kind="FinetuneJob", phase="Queued")
    assert absent(text, "litgpt_training_loss", kind="FinetuneJob", namespace="a", name="one")


def test_a_taken_port_does_not_stop_the_operator(caplog):
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        metrics.serve_once(port)  # logs, does not raise
    assert "not started" in caplog.text


def test_served_over_http():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server, thread = metrics.serve(port, "127.0.0.1")
    try:
        metrics.record("ModelServer", "a", "s", "Ready")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert value(text, "litgpt_operator_objects", kind="ModelServer", phase="Ready") == 1
    finally:
        server.shutdown()
