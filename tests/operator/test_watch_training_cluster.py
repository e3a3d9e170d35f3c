"""Training users can trust and watch, for real: on the exec node the pods run the real `litgpt`
(a tiny model from the local Hub).

- A broken dataset: `litgpt validate_data` (a CPU pod) fails it, the FinetuneJob is Failed with
  the message naming the file and record, and no training Job exists.
- A good one: DataValidated with the summary; while the run trains, `kubectl get finetunejobs`
  shows Step, Loss and ETA, the status follows the runtime's progress records within 10 s, and
  the operator exports the per-job metrics, which leave with the object."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone

import pytest

from tests.operator.helpers import API, OPERATOR_ENV, ON_EXEC_NODE, OperatorRunner, condition, wait_for, TINY_REPO_ID

pytestmark = pytest.mark.slow
REPO_ID = TINY_REPO_ID
RECORDS = [{"instruction": f"Repeat {w}.", "input": "", "output": w}
           for w in ("red", "green", "blue", "cyan", "pink", "gold", "gray", "teal")]
BROKEN = [*RECORDS[:2], {"instruction": "Repeat lime."}, *RECORDS[2:]]  # record 3 has no output
# Tolerance on the freshness: the record's time has whole seconds.
FRESH_S = 10 + 1



def finetune(name: str, records: list, **train) -> dict:
    return {"apiVersion": API, "kind": "FinetuneJob", "metadata": {"name": name},
            "spec": {"modelRef": {"name": "tiny"}, "data": {"inline": json.dumps(records)}, "gpusPerNode": 0,
                     "precision": "32-true", "train": {"globalBatchSize": 2, "microBatchSize": 1, "maxSeqLength": 64,
                                                       **train}, **ON_EXEC_NODE}}


def table(k8s) -> dict[str, dict[str, str]]:
    """`kubectl get finetunejobs` as the user sees it: {name: {column: cell}} (cells cut at the
    header's column starts: an empty cell leaves only spaces)."""
    import re

    header, *rows = k8s.kube.kubectl("get", "finetunejobs", "-n", k8s.namespace).splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)] + [None]
    names = header.split()
    cells = lambda row: {n: row[a:b].strip() for n, a, b in zip(names, starts, starts[1:])}
    return {cells(row)["NAME"]: cells(row) for row in rows}


def age_s(rfc3339: str) -> float:
    return time.time() - datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def test_bad_data_stops_before_training_and_a_run_shows_its_progress(k8s, hub, monkeypatch):
    from litgpt_operator import metrics

    for key, value in {**OPERATOR_ENV, "LITGPT_OPERATOR_HF_ENDPOINT": hub.url}.items():
        monkeypatch.setenv(key, value)
    runner = OperatorRunner(k8s.namespace).start()
    try:
        k8s.apply([{"apiVersion": API, "kind": "LitGPTModel", "metadata": {"name": "tiny"},
                    "spec": {"repoId": REPO_ID, "checkpointRootPVC": {"claimName": "cache", "size": "1Gi"}, **ON_EXEC_NODE}},
                   finetune("broken", BROKEN, maxSteps=2),
                   # long enough to be watched; deleted below
                   finetune("watched", RECORDS, epochs=100000, maxSteps=200000)])

        # 1. the broken dataset: Failed by the check, naming the file and the record; no training Job
        broken = k8s.wait_phase("FinetuneJob", "broken", "Failed", timeout=240)
        checked = condition(broken, "DataValidated")
        assert checked["status"] == "False" and checked["reason"] == "DataInvalid", checked
        assert "/data/data.json, record 3: missing field 'output'" in checked["message"], checked
        assert condition(broken, "Failed")["message"] == checked["message"]
        assert [j["metadata"]["name"] for j in k8s.list("Job", {"app.kubernetes.io/instance": "broken"})] == ["broken-validate"]
        (pod,) = k8s.list("Pod", {"batch.kubernetes.io/job-name": "broken-validate"})
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 7

        # 2. the good one: validated (the summary in status), then trained with its progress in view
        watched = k8s.wait_phase("FinetuneJob", "watched", "Running", timeout=240)
        assert condition(watched, "DataValidated")["reason"] == "DataValid"
        summary = watched["status"]["dataValidation"]
        assert summary["records"] == len(RECORDS) and summary["truncated"] == 0 and 0 < summary["longest"] <= 64
        row = wait_for(lambda: (r := table(k8s).get("watched")) and r.get("STEP") and r,
                       "Step in kubectl get finetunejobs", timeout_s=180)
        assert row["PHASE"] == "Running" and int(row["STEP"]) > 0, row
        assert float(row["LOSS"]) > 0 and row["ETA"][-1] in "smhd", row

        # the status follows the runtime: its newest record is never more than ~10 s old
        lags, steps, deadline = [], [], time.monotonic() + 25
        while time.monotonic() < deadline:
            status = k8s.get("FinetuneJob", "watched")["status"]
            assert status["phase"] == "Running", status
            shown = status["progress"]
            lags.append(age_s(shown["updateTime"]))
            steps.append(shown["step"])
            time.sleep(0.5)
        # (to the real stderr: the in-process operator's runner captures sys.stdout/sys.stderr)
        print(f"status behind the runtime's newest record: max {max(lags):.1f} s, mean {sum(lags) / len(lags):.1f} s "
              f"over {len(lags)} reads; steps {steps[0]} -> {steps[-1]}", file=sys.__stderr__)
        assert max(lags) <= FRESH_S, (lags, steps)
        assert steps[-1] > steps[0], "the step did not advance in the status"
        assert shown["totalSteps"] == 200000 and shown["learningRate"] > 0 and shown["tokensPerSecond"] > 0

        # per-job metrics (the operator runs in this process)
        text = metrics.exposition().decode()
        for name in ("litgpt_training_loss", "litgpt_training_step", "litgpt_training_tokens_per_second",
                     "litgpt_training_eta_seconds"):
            assert f'{name}{{kind="FinetuneJob",name="watched",namespace="{k8s.namespace}"}}' in text, name
        k8s.delete("FinetuneJob", "watched")
        wait_for(lambda: 'name="watched"' not in metrics.exposition().decode(), "the job's series to go", timeout_s=60)
    finally:
        runner.stop()
    assert not runner.crashes(), "\n".join(runner.crashes())
