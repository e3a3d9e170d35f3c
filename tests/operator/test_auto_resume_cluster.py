"""Auto-resume for real: a finetune Job (built, resumable, by the operator's builders) runs `litgpt finetune_lora` on the exec node; its pod is evicted mid-
training through the Eviction API; the Job controller, told by the podFailurePolicy to ignore the
disruption, starts a new pod, which continues from the checkpoint the evicted one saved."""

from __future__ import annotations

from functools import partial
import json
import sys
from pathlib import Path

import pytest
from tests.operator.finetune_bodies import SETTINGS, finetune_body

from litgpt_operator import progress
from litgpt_runtime import progress_record
from litgpt_operator.api import FINETUNE_JOB
from litgpt_operator.builders import common
from litgpt_operator.builders.finetune import build_finetune_children
from litgpt_operator.builders.sources import ModelCheckpoint
from litgpt_devcluster.waiting import wait_for as poll_until

pytestmark = pytest.mark.slow

RUNTIME_TESTS = Path(__file__).resolve().parents[1] / "runtime"
ON_EXEC_NODE = {
    "nodeSelector": {"node.litgpt.dev/mode": "exec"},
    "tolerations": [{"key": "node.litgpt.dev/exec", "operator": "Exists", "effect": "NoSchedule"}],
}


# This file's waits: the shared poller with a 120 s default.
wait_for = partial(poll_until, timeout_s=120, interval_s=0.5)


def tiny_checkpoint(folder: Path) -> None:
    if str(RUNTIME_TESTS) not in sys.path:
        sys.path.insert(0, str(RUNTIME_TESTS))
    from finetune_tiny import make_checkpoint

    make_checkpoint(folder)


def pod_log(kube, namespace: str, pod: str) -> str:
    folders = (kube.control_plane.state_dir / "node-agent" / "pods").glob(f"{namespace}_{pod}_*/logs")
    return "\n".join(p.read_text(errors="replace") for folder in folders for p in sorted(folder.glob("*")) if p.is_file())


def without_tmp_mount(job: dict) -> None:
    """Work-around for the exec node's path rewriting (paths of other mounts that land under /tmp
    get rewritten twice): the pod uses the host's /tmp instead of an emptyDir there."""
    pod = job["spec"]["template"]["spec"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "tmp"]
    for container in pod["containers"]:
        container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "tmp"]


def job_pods(kube, namespace: str, job: str) -> list[dict]:
    out = kube.kubectl("get", "pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job}", "-o", "json")
    return sorted(json.loads(out)["items"], key=lambda p: p["metadata"]["creationTimestamp"])


@pytest.fixture
def volume(namespace):
    import shutil

    # Outside /tmp: the exec node rewrites mount paths in argv one mount at a time, so a folder under
    # /tmp would be rewritten again by the pod's /tmp emptyDir mount (see the report on the agent).
    path = Path(f"/var/tmp/litgpt-test-volumes/{namespace}/cache")
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


def test_evicted_training_pod_resumes_from_its_checkpoint(kube, namespace, volume):
    from kubernetes import client

    # The model cache claim, bound to a local folder holding a tiny complete checkpoint.
    tiny_checkpoint(volume / "checkpoints" / "tiny" / "llama")
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-cache"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": str(volume)},
                 "claimRef": {"namespace": namespace, "name": "cache"}}}))
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "cache"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))

    from finetune_tiny import RECORDS

    body = finetune_body(namespace=namespace, gpusPerNode=0, **ON_EXEC_NODE,
                         data={"inline": json.dumps(RECORDS), "valSplitFraction": 0.25},
                         train={"epochs": 1000, "maxSteps": 3000, "globalBatchSize": 1, "microBatchSize": 1})
    model = ModelCheckpoint("tiny", "tiny/llama", "cache")
    children = build_finetune_children(common.Parent.from_body(body), FINETUNE_JOB.parse_spec(body), model, SETTINGS)
    for child in children:
        child["metadata"].pop("ownerReferences", None)  # no parent object in this test
        if child["kind"] == "Job":
            job_name = child["metadata"]["name"]
            without_tmp_mount(child)
        kube.kubectl("create", "-f", "-", input=json.dumps(child))

    # First attempt: wait until it trains, then evict it as a node drain would.
    first = wait_for(lambda: next(iter(job_pods(kube, namespace, job_name)), None), "the first pod")["metadata"]["name"]
    wait_for(lambda: "step " in pod_log(kube, namespace, first) and "/3000 | loss" in pod_log(kube, namespace, first),
             f"training steps in the first pod's log:\n{pod_log(kube, namespace, first)[-2000:]}", timeout_s=180)
    core = client.CoreV1Api(kube.api_client())
    status = progress.track_attempts({}, job_pods(kube, namespace, job_name))
    core.create_namespaced_pod_eviction(first, namespace, client.V1Eviction(
        metadata=client.V1ObjectMeta(name=first, namespace=namespace)))
    evicted = json.loads(kube.kubectl("get", "pod", first, "-n", namespace, "-o", "json"))
    assert any(c["type"] == "DisruptionTarget" and c["status"] == "True" for c in evicted["status"]["conditions"])

    wait_for(lambda: "Stopped by SIGTERM" in pod_log(kube, namespace, first), "the evicted run to stop at a checkpoint")

    # Second attempt: a new pod, which resumes from the checkpoint saved on SIGTERM.
    second = wait_for(lambda: next((p["metadata"]["name"] for p in job_pods(kube, namespace, job_name)
                                    if p["metadata"]["name"] != first), None), "a replacement pod", timeout_s=120)
    resumed = wait_for(lambda: "Resuming from" in pod_log(kube, namespace, second) and pod_log(kube, namespace, second),
                       "the second pod to resume", timeout_s=180)
    record = wait_for(lambda: progress_record.latest(pod_log(kube, namespace, second)), "the second pod's first record")
    assert record.resumed_from_step is not None and record.resumed_from_step > 0, resumed[-2000:]
    assert progress.track_attempts(status, job_pods(kube, namespace, job_name)) == {"attempts": 2, "currentPod": second}
    job = json.loads(kube.kubectl("get", "job", job_name, "-n", namespace, "-o", "json"))
    assert not job["status"].get("failed"), "an ignored disruption must not count as a failure"
    kube.kubectl("delete", "job", job_name, "-n", namespace, "--wait=false")
