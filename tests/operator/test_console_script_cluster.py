"""Kueue queueing, the fit check, attempts in status and Prometheus metrics through the running
operator (its console script, admin credentials, watching one namespace)."""

from __future__ import annotations

from functools import partial
import json
import os
import socket
import subprocess
import sys
import urllib.request

import pytest
import yaml

from litgpt_operator import fitcheck
from litgpt_operator.builders.common import QUEUE_LABEL
from litgpt_devcluster.waiting import wait_for as poll_until

pytestmark = pytest.mark.slow

API = "litgpt.dev/v1alpha1"
PLURAL = {"LitGPTModel": "litgptmodels", "FinetuneJob": "finetunejobs"}
RUN_SECONDS = "node-agent.litgpt.dev/run-seconds"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# This file's waits: the shared poller with a 60 s default.
wait_for = partial(poll_until, timeout_s=60, interval_s=0.3)


class Cluster:
    def __init__(self, kube, namespace: str):
        self.kube, self.namespace = kube, namespace

    def apply(self, doc: dict) -> None:
        self.kube.kubectl("apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(doc))

    def get(self, kind: str, name: str) -> dict | None:
        resource = f"{PLURAL[kind]}.litgpt.dev" if kind in PLURAL else kind.lower()
        out = self.kube.kubectl("get", resource, name, "-n", self.namespace, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def status(self, kind: str, name: str) -> dict:
        return (self.get(kind, name) or {}).get("status") or {}

    def condition(self, kind: str, name: str, type_: str) -> dict | None:
        return next((c for c in self.status(kind, name).get("conditions") or [] if c["type"] == type_), None)

    def wait_phase(self, kind: str, name: str, phase: str, timeout: float = 60) -> dict:
        wait_for(lambda: self.status(kind, name).get("phase") == phase,
                 f"{kind} {name} {phase} (now {self.status(kind, name).get('phase')})", timeout_s=timeout)
        return self.get(kind, name)

    def ready_model(self, name: str, repo_id: str) -> None:
        pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{self.namespace}-{name}"},
              "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"],
                       "persistentVolumeReclaimPolicy": "Delete",
                       # nothing runs on it: the download pod goes to a simulated node
                       "hostPath": {"path": f"/tmp/litgpt-test-volumes/{self.namespace}/{name}"},
                       "claimRef": {"namespace": self.namespace, "name": name}}}
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(pv))
        self.apply({"apiVersion": API, "kind": "LitGPTModel", "metadata": {"name": name},
                    "spec": {"repoId": repo_id, "checkpointRootPVC": {"claimName": name, "size": "1Gi"}}})
        self.wait_phase("LitGPTModel", name, "Ready")


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def cluster(kube, namespace, chart_crds, metrics_port, tmp_path):
    """The operator as its console script watching this namespace (admin credentials)."""
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "LITGPT_OPERATOR_NAMESPACES": namespace,
           "LITGPT_OPERATOR_HEALTH_PORT": str(free_port()), "LITGPT_OPERATOR_METRICS_PORT": str(metrics_port),
           "LITGPT_OPERATOR_RETRY_DELAY_SECONDS": "1", "LITGPT_OPERATOR_RUNTIME_IMAGE": "litgpt-runtime:test",
           "LITGPT_OPERATOR_WATCH_SERVER_TIMEOUT_SECONDS": "20"}
    log = tmp_path / "operator.log"
    process = subprocess.Popen([sys.executable, "-m", "litgpt_operator"], env=env, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT)
    try:
        yield Cluster(kube, namespace)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def finetune(name: str, model: str, labels: dict | None = None, annotations: dict | None = None, **spec) -> dict:
    return {"apiVersion": API, "kind": "FinetuneJob",
            "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
            "spec": {"modelRef": {"name": model}, "data": {"inline": '[{"instruction": "a", "output": "b"}]'},
                     "gpusPerNode": 0, **spec}}


def test_kueue_queue_label_suspends_the_job_and_the_parent_is_queued(cluster):
    cluster.ready_model("m", "EleutherAI/pythia-14m")
    cluster.apply(finetune("q", "m", labels={QUEUE_LABEL: "team-a"}))
    body = cluster.wait_phase("FinetuneJob", "q", "Queued")
    job = cluster.get("Job", body["status"]["jobName"])
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == ["--resume", "auto"]
    # Kueue admits the workload: it unsuspends the Job, and the run goes on to the end.
    cluster.kube.kubectl("patch", "job", job["metadata"]["name"], "-n", cluster.namespace, "--type=merge",
                         "-p", '{"spec": {"suspend": false}}')
    done = cluster.wait_phase("FinetuneJob", "q", "Succeeded")
    assert done["status"]["attempts"] == 1 and done["status"]["currentPod"].startswith("q-finetune-")


def test_fit_check_refuses_a_run_that_cannot_fit_and_accepts_the_fix(cluster):
    cluster.ready_model("llama", "meta-llama/Llama-3.1-8B")
    gpu = {fitcheck.GPU_MEMORY_ANNOTATION: "24"}
    train = {"maxSeqLength": 512, "globalBatchSize": 8, "microBatchSize": 1}
    cluster.apply(finetune("big", "llama", annotations=gpu, method="full", precision="bf16-true", gpusPerNode=1,
                           train=train))
    cluster.wait_phase("FinetuneJob", "big", "Failed")
    fit = cluster.condition("FinetuneJob", "big", "ResourcesFit")
    assert fit["status"] == "False" and fit["reason"] == "InsufficientGPUMemory"
    assert "does not fit in 24 GiB" in fit["message"] and "method lora instead of full" in fit["message"]
    assert cluster.get("Job", "big-finetune") is None, "no Job for a run that cannot fit"
    events = json.loads(cluster.kube.kubectl("get", "events", "-n", cluster.namespace, "-o", "json"))["items"]
    assert any(e["reason"] == "InsufficientGPUMemory" and e["type"] == "Warning" for e in events)

    # The suggested change: LoRA. The spec update re-runs the check, which now passes.
    cluster.apply(finetune("big", "llama", annotations=gpu, method="lora", precision="bf16-true", gpusPerNode=1,
                           train=train))
    wait_for(lambda: cluster.get("Job", "big-finetune"), "the Job after the fix")
    # The status is written right after the Job is created.
    fit = wait_for(lambda: (lambda c: c if c["status"] == "True" else None)(
        cluster.condition("FinetuneJob", "big", "ResourcesFit")), "ResourcesFit=True after the fix")
    assert fit["reason"] == "EstimatedToFit"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_metrics_count_reconciles_and_objects_by_phase(cluster, metrics_port):
    from prometheus_client.parser import text_string_to_metric_families

    cluster.ready_model("m", "EleutherAI/pythia-14m")
    text = wait_for(lambda: (lambda t: t if 'phase="Ready"' in t else None)(scrape(metrics_port)),
                    "the Ready model in the metrics")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("litgpt_operator_objects", (("kind", "LitGPTModel"), ("phase", "Ready")))] == 1
    assert samples[("litgpt_operator_reconciles_total", (("kind", "LitGPTModel"), ("result", "success")))] >= 2
