"""Node-agent rules the end-to-end flow relies on (fast, no cluster)."""

from __future__ import annotations

from litgpt_devcluster.node_agent.process_runtime import _map_paths, _map_pod_dns


def test_a_claim_folder_under_another_mount_path_is_not_rewritten_twice():
    # The runtime pods mount an emptyDir at /tmp; the test cluster's claim folders live under /tmp.
    mounts = [("/models", "/tmp/cp/pvc/ns/models"), ("/tmp", "/tmp/cp/pods/p/volumes/tmp")]
    assert _map_paths("/models/checkpoints /tmp/x", mounts) == "/tmp/cp/pvc/ns/models/checkpoints /tmp/cp/pods/p/volumes/tmp/x"


def test_paths_into_the_host_runtime_survive_a_mount_above_them():
    """Regression: a CI clone under /tmp ran pods whose command was `/tmp/<clone>/.venv/bin/python`;
    the pods' /tmp emptyDir rewrote it into the volume folder and the operator pod never started."""
    mounts = [("/tmp", "/tmp/cp/pods/p/volumes/tmp")]
    keep = ("/tmp/clone",)
    assert _map_paths("/tmp/clone/.venv/bin/python", mounts, keep) == "/tmp/clone/.venv/bin/python"
    assert _map_paths("/tmp/clone/.venv/bin:/usr/bin", mounts, keep) == "/tmp/clone/.venv/bin:/usr/bin"
    assert _map_paths("/tmp/clone2/x /tmp/y", mounts, keep) == "/tmp/cp/pods/p/volumes/tmp/clone2/x /tmp/cp/pods/p/volumes/tmp/y"


def test_a_peer_pod_of_the_own_subdomain_is_this_host():
    pod = {"metadata": {"namespace": "ns"}, "spec": {"subdomain": "job"}}
    for name in ("job-0.job", "job-0.job.ns", "job-0.job.ns.svc", "job-0.job.ns.svc.cluster.local"):
        assert _map_pod_dns(name, pod) == "127.0.0.1", name
    for other in ("job-0.other", "job-0.job.elsewhere", "job", "/models/job-0.job"):
        assert _map_pod_dns(other, pod) == other
    assert _map_pod_dns("job-0.job", {"metadata": {"namespace": "ns"}, "spec": {}}) == "job-0.job"
