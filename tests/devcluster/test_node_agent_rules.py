"""The node agent's pure rules (no cluster needed): pod phase and conditions from container
states, restart decisions, node specs, and exec mode's path and variable rewriting."""

from __future__ import annotations

import pytest

from litgpt_devcluster.node_agent.nodes import EXEC_TAINT, NodeSpec
from litgpt_devcluster.node_agent.probes import ProbeState
from litgpt_devcluster.node_agent.process_runtime import _expand, _map_paths
from litgpt_devcluster.node_agent.status import ContainerRun, PodRun, Termination, pod_status, should_restart


def _run(restart_policy="Never", init=0, apps=1, conditions=()) -> PodRun:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "1234-uid"},
        "spec": {"restartPolicy": restart_policy},
        "status": {"conditions": list(conditions)},
    }
    containers = [ContainerRun(f"init{i}", "img", init=True) for i in range(init)]
    containers += [ContainerRun(f"app{i}", "img") for i in range(apps)]
    return PodRun(pod=pod, containers=containers)


def _end(container: ContainerRun, code: int) -> None:
    container.started_at = 1.0
    container.running = False
    container.terminated = Termination(code, 1.0, 2.0)


def test_pending_then_running_then_succeeded():
    run = _run()
    assert pod_status(run)["phase"] == "Pending"
    app = run.app_containers()[0]
    app.started_at, app.running = 1.0, True
    status = pod_status(run)
    assert status["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"  # probe not passed yet
    app.ready = True
    status = pod_status(run)
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["containerStatuses"][0]["ready"] is True
    _end(app, 0)
    status = pod_status(run)
    assert status["phase"] == "Succeeded"
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PodCompleted")


def test_one_failed_container_fails_the_pod_only_when_all_ended():
    run = _run(apps=2)
    first, second = run.app_containers()
    _end(first, 2)
    second.started_at, second.running = 1.0, True
    assert pod_status(run)["phase"] == "Running"
    _end(second, 0)
    assert pod_status(run)["phase"] == "Failed"


def test_failed_init_container_fails_the_pod_and_blocks_apps():
    run = _run(init=1)
    assert pod_status(run)["phase"] == "Pending"
    _end(run.init_containers()[0], 1)
    status = pod_status(run)
    assert status["phase"] == "Failed"
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


def test_scheduler_conditions_are_kept():
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}
    status = pod_status(_run(conditions=[scheduled]))
    assert scheduled in status["conditions"]


@pytest.mark.parametrize(
    ("policy", "code", "init", "restart"),
    [("Always", 0, False, True), ("Always", 0, True, False), ("OnFailure", 1, False, True),
     ("OnFailure", 0, False, False), ("Never", 1, False, False), ("Always", 1, True, True)],
)
def test_should_restart(policy, code, init, restart):
    assert should_restart(policy, code, init) is restart


def test_pod_ip_is_not_loopback_and_stable():
    run = _run()
    assert pod_status(run)["podIP"] == pod_status(run)["podIP"]
    assert pod_status(run)["podIP"].startswith("10.244.")


def test_node_spec_parsing():
    gpu = NodeSpec.parse("g:cpu=16,nvidia.com/gpu=4")
    assert gpu.capacity["nvidia.com/gpu"] == "4" and gpu.capacity["memory"] == "32Gi"
    assert gpu.labels["nvidia.com/gpu.present"] == "true" and gpu.taints == []
    executor = NodeSpec.parse("e:mode=exec")
    assert executor.mode == "exec" and "mode" not in executor.capacity and executor.taints == [EXEC_TAINT]
    with pytest.raises(ValueError, match="mode must be one of"):
        NodeSpec.parse("x:mode=docker")
    with pytest.raises(ValueError, match="is not resource=quantity"):
        NodeSpec.parse("x:cpu")


def test_mount_paths_are_rewritten_only_as_whole_path_prefixes():
    mounts = [("/data/cache", "/w/cache"), ("/data", "/w/data")]
    assert _map_paths("--out=/data/run1 --cache /data/cache/x", mounts) == "--out=/w/data/run1 --cache /w/cache/x"
    assert _map_paths("/database /data2 rel/data /data", mounts) == "/database /data2 rel/data /w/data"


def test_variable_expansion_follows_kubernetes_rules():
    assert _expand("$(A)-$(MISSING)-$$(A)", {"A": "x"}) == "x-$(MISSING)-$(A)"


def test_probe_thresholds():
    state = ProbeState.for_container({"periodSeconds": 0, "successThreshold": 2, "failureThreshold": 2}, started_at=0)
    results = iter([True, True, False, True, False, False])
    seen = [state.update(lambda: next(results)) for _ in range(6)]
    # ready after 2 successes; one failure (< failureThreshold) keeps it; 2 in a row drop it.
    assert seen == [False, True, True, True, True, False]


def test_probe_waits_for_initial_delay():
    import time

    state = ProbeState.for_container({"initialDelaySeconds": 3600}, started_at=time.time())
    assert state.update(lambda: pytest.fail("probed before initialDelaySeconds")) is False
