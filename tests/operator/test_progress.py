"""Live progress, the operator's side: the runtime's progress record (read through
`litgpt_runtime.progress_record`, the one schema) -> status.progress -> printer columns and
per-job metrics; the poller reconciles exactly the training objects last seen Running."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from litgpt_operator import metrics, progress
from litgpt_operator.api import FINETUNE_JOB, PRETRAIN_JOB
from litgpt_operator.api.common import TrainingProgress
from litgpt_operator.api.crd import build_crd
from litgpt_operator.handlers import progress_poll
from litgpt_runtime.progress_record import Checkpoint, ProgressRecord, latest

LOG = "\n".join([
    "Resuming from /output/finetunes/ft/step-000080 at step 80 (40,960 tokens seen).",
    ProgressRecord(step=80, event="resumed", total_steps=1000, tokens_seen=40960, resumed_from_step=80,
                   time="2026-12-03T15:00:00Z").to_line(),
    "step 100/1000 | loss 1.8412 | lr 2.00e-04 | 5,321 tok/s | 0.412 s/step | peak mem 3.10 GiB",
    ProgressRecord(step=100, total_steps=1000, epoch=2, loss=1.8412, val_loss=1.95, learning_rate=2e-4,
                   tokens_per_second=5321.4, tokens_seen=51200, eta_seconds=750.4, resumed_from_step=80,
                   last_checkpoint=Checkpoint(80, "/output/finetunes/ft/step-000080", "2026-12-03T15:00:00Z"),
                   time="2026-12-03T15:00:09Z").to_line(),
    "Saved checkpoint /output/finetunes/ft/step-000100",
])


def test_the_newest_record_of_a_log_tail_becomes_status_progress():
    record = latest(LOG)
    assert progress.status_progress(record) == {
        "step": 100, "totalSteps": 1000, "epoch": 2, "loss": 1.8412, "valLoss": 1.95, "learningRate": 2e-4,
        "tokensPerSecond": 5321, "tokensSeen": 51200, "etaSeconds": 750, "eta": "12m", "event": "step",
        "updateTime": "2026-12-03T15:00:09Z"}
    assert record.resumed_from_step == 80
    # what the status may hold: the API model (the CRD schema is generated from it) accepts it
    TrainingProgress.model_validate(progress.status_progress(record))


def test_a_diverged_or_early_record_leaves_out_what_it_lacks():
    early = progress.status_progress(ProgressRecord(step=0, event="resumed", loss=math.nan))
    assert "loss" not in early and "eta" not in early and early["step"] == 0
    TrainingProgress.model_validate(early)


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (44.6, "45s"), (61, "1m01s"), (599, "9m59s"), (750, "12m"),
                                           (3725, "1h02m"), (90061, "1d01h")])
def test_eta_reads_like_kubectl_durations(seconds, text):
    assert progress.eta_text(seconds) == text


@pytest.mark.parametrize("kind", [FINETUNE_JOB, PRETRAIN_JOB])
def test_printer_columns_step_loss_eta_point_into_status_progress(kind):
    columns = {c["name"]: c for c in build_crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Step"]["jsonPath"] == ".status.progress.step" and columns["Step"]["type"] == "integer"
    assert columns["Loss"]["jsonPath"] == ".status.progress.loss" and columns["Loss"]["type"] == "number"
    assert columns["ETA"]["jsonPath"] == ".status.progress.eta"
    schema = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = schema["properties"]["status"]["properties"]["progress"]["properties"]
    assert {"step", "loss", "eta", "etaSeconds", "tokensPerSecond", "learningRate", "tokensSeen", "epoch"} <= set(fields)


@pytest.fixture
def fresh_metrics():
    metrics.reset()
    yield
    metrics.reset()


def test_metrics_carry_loss_step_speed_and_eta_per_job_until_it_is_gone(fresh_metrics):
    metrics.record("FinetuneJob", "team", "ft", "Running", progress.status_progress(latest(LOG)))
    samples = {(s.name, s.labels.get("name")): s.value
               for family in text_string_to_metric_families(metrics.exposition().decode()) for s in family.samples}
    assert samples[("litgpt_training_loss", "ft")] == pytest.approx(1.8412)
    assert samples[("litgpt_training_step", "ft")] == 100
    assert samples[("litgpt_training_tokens_per_second", "ft")] == 5321
    assert samples[("litgpt_training_eta_seconds", "ft")] == 750
    metrics.record("FinetuneJob", "team", "ft", None)  # deleted
    assert "litgpt_training_loss{" not in metrics.exposition().decode()


def test_the_poller_reconciles_the_training_objects_last_seen_running(fresh_metrics, monkeypatch):
    metrics.record("FinetuneJob", "a", "running", "Running")
    metrics.record("PretrainJob", "a", "pretraining", "Running")
    metrics.record("FinetuneJob", "a", "done", "Succeeded")
    metrics.record("FinetuneJob", "a", "validating", "Validating")
    metrics.record("ModelServer", "a", "server", "Running")  # not a training kind
    queued = []

    class Work:
        def add(self, key):
            queued.append(key)

    monkeypatch.setattr(progress_poll, "WORK", Work())
    assert progress_poll.poll_once() == 2
    assert queued == [("FinetuneJob", "a", "running"), ("PretrainJob", "a", "pretraining")]
