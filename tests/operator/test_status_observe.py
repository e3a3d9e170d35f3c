"""Status rendering and the reading of Job/pod/Deployment states (pure; no cluster)."""

from __future__ import annotations

import pytest

from litgpt_operator import observe, status
from litgpt_operator.settings import Settings, SettingsError
from litgpt_operator.status import Cond, Observed


def test_render_keeps_transition_time_while_status_holds():
    first = status.render(None, Observed("Running", [Cond.of("Succeeded", False, "JobRunning", "running")]), 1,
                          now="2026-01-01T00:00:00Z")
    again = status.render(first, Observed("Running", [Cond.of("Succeeded", False, "Retrying", "again")]), 2,
                          now="2026-01-01T00:05:00Z")
    (cond,) = again["conditions"]
    assert cond["lastTransitionTime"] == "2026-01-01T00:00:00Z" and cond["observedGeneration"] == 2
    done = status.render(again, Observed("Succeeded", [Cond.of("Succeeded", True, "JobSucceeded")]), 2,
                         now="2026-01-01T00:09:00Z")
    assert done["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:09:00Z"
    assert done["phase"] == "Succeeded" and done["observedGeneration"] == 2


def test_unchanged_status_renders_identically():
    observed = Observed("Ready", [Cond.of("Ready", True, "CheckpointComplete", "done")], {"jobName": "x"})
    first = status.render(None, observed, 3)
    assert status.render(first, observed, 3, now="2099-01-01T00:00:00Z") == first
    assert status.changes(first, observed) == []


def test_merge_patch_nulls_removed_fields_and_changes_lists_moves():
    previous = {"phase": "Running", "jobName": "a", "serviceName": "svc"}
    assert status.merge_patch(previous, {"phase": "Succeeded", "jobName": "a"})["serviceName"] is None
    old = status.render(None, Observed("Running", [Cond.of("Succeeded", False, "JobRunning")]), 1)
    moved = status.changes(old, Observed("Failed", [Cond.of("Succeeded", False, "OOMKilled"),
                                                    Cond.of("Failed", True, "OOMKilled")]))
    assert [(c.type, c.reason) for c in moved] == [("Succeeded", "OOMKilled"), ("Failed", "OOMKilled")]


def pod(name="p", phase="Running", statuses=(), reason=None, conditions=(), created="2026-01-01T00:00:00Z"):
    st = {"phase": phase, "containerStatuses": list(statuses), "conditions": list(conditions)}
    if reason:
        st.update(reason=reason, message=f"pod was {reason}")
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": st}


def terminated(code, reason="Error", message=""):
    return {"name": "litgpt", "state": {"terminated": {"exitCode": code, "reason": reason, "message": message}}}


def test_a_huge_failure_message_is_cut_to_fit_the_crd():
    """A failure message quoting a log (tqdm lines with \\r, megabytes of them) must still be a
    status the API server accepts (the CRD caps a condition message at 32,768 characters)."""
    log = "".join(f"\rDownloading: {i}%" for i in range(100_000)) + "\nCannot reach the Hugging Face Hub"
    job = {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Failed", "status": "True",
                                                                "reason": "BackoffLimitExceeded"}]}}
    state = observe.job_state(job, [], log_tail=log)
    assert "\r" not in state.message and state.message.endswith("Downloading: 99999%\nCannot reach the Hugging Face Hub")
    rendered = status.render(None, Observed("Failed", [Cond.of("Failed", True, "X", "head " + "x" * 100_000 + " tail")]), 1)
    message = rendered["conditions"][0]["message"]
    assert len(message) <= status.MESSAGE_LIMIT and message.startswith("head ") and message.endswith(" tail")


def test_pod_problem_reasons():
    waiting = {"name": "litgpt", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
    problem = observe.pod_problem(pod(phase="Pending", statuses=[waiting]))
    assert problem.reason == "ImagePullBackOff" and "no such image" in problem.message and not problem.terminated
    oom = observe.pod_problem(pod(phase="Failed", statuses=[terminated(137, "OOMKilled")]))
    assert oom.reason == "OOMKilled" and "exit" in oom.message and "memory" in oom.message
    code = observe.pod_problem(pod(phase="Failed", statuses=[terminated(1, message="UserError: bad dataset")]))
    assert code.reason == "NonZeroExitCode" and "code 1" in code.message and "bad dataset" in code.message
    # the runtime's own exit codes name the cause (litgpt_runtime.errors.EXIT_REASONS)
    denied = observe.pod_problem(pod(phase="Failed", statuses=[terminated(3, message="AccessDenied: gated repo")]))
    assert denied.reason == "AccessDenied" and "gated repo" in denied.message
    missing = observe.pod_problem(pod(phase="Failed", statuses=[terminated(4, message="NotFound: no repo x/y")]))
    assert missing.reason == "NotFound"
    assert observe.pod_problem(pod(phase="Succeeded", statuses=[terminated(0, "Completed")])) is None
    evicted = observe.pod_problem(pod(phase="Failed", reason="Evicted"))
    assert evicted.reason == "Evicted"
    unschedulable = observe.pod_problem(pod(phase="Pending", conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes: Insufficient nvidia.com/gpu"}]))
    assert unschedulable.reason == "Unschedulable" and "nvidia.com/gpu" in unschedulable.message


def job(conditions=(), active=0, name="j"):
    return {"metadata": {"name": name}, "spec": {},
            "status": {"active": active, "conditions": [{"type": t, "status": "True", "reason": r, "message": m}
                                                        for t, r, m in conditions]}}


def test_job_state_phases_and_failure_reason():
    assert observe.job_state(job(), []).phase == "Pending"
    assert observe.job_state(job(active=1), [pod()]).phase == "Running"
    assert observe.job_state(job([("Complete", "", "")]), []).phase == "Succeeded"
    # a pod done before the Job is marked Complete: still Running, not back to Pending
    assert observe.job_state(job(), [pod(phase="Succeeded", statuses=[terminated(0, "Completed")])]).phase == "Running"
    failed_pod = pod(phase="Failed", statuses=[terminated(1, message="Traceback ...")])
    state = observe.job_state(job([("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]),
                              [failed_pod], log_tail="loss=nan\nhf_abcdefghijklmnop leaked")
    assert state.phase == "Failed" and state.reason == "NonZeroExitCode"
    assert "BackoffLimitExceeded" in state.message and "loss=nan" in state.message
    assert "hf_abcdefghijklmnop" not in state.message  # tokens never reach status
    stuck = pod(phase="Pending", statuses=[{"name": "litgpt", "state": {"waiting": {"reason": "ErrImagePull"}}}])
    assert observe.job_state(job(active=1), [stuck]).reason == "ErrImagePull"
    assert observe.failed_pod_for_logs(job([("Failed", "BackoffLimitExceeded", "")]), [failed_pod]) == "p"


def deployment(replicas=1, available=0, updated=1, generation=1, observed=1, conditions=()):
    return {"metadata": {"name": "d", "generation": generation}, "spec": {"replicas": replicas},
            "status": {"replicas": updated, "availableReplicas": available, "updatedReplicas": updated,
                       "observedGeneration": observed, "conditions": list(conditions)}}


def test_deployment_state():
    assert observe.deployment_state(deployment(available=1), []).phase == "Ready"
    assert observe.deployment_state(deployment(available=0), []).phase == "Progressing"
    assert observe.deployment_state(deployment(available=1, generation=2, observed=1), []).phase == "Progressing"
    crash = pod(statuses=[{"name": "litgpt", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
    state = observe.deployment_state(deployment(), [crash])
    assert (state.phase, state.reason) == ("Failed", "CrashLoopBackOff")
    starting = pod(statuses=[{"name": "litgpt", "state": {"waiting": {"reason": "ContainerCreating"}}}])
    assert observe.deployment_state(deployment(), [starting]).phase == "Progressing"


def test_a_server_whose_pods_keep_failing_is_never_ready():
    """Corrupt weights or an adapter that does not load: the runtime exits with its reason, the
    kubelet restarts it; the server is Failed (nothing answers) or Degraded (the previous pods
    still do, as in a rollout with maxUnavailable 0), with the pod's own message, never Ready."""
    corrupt = pod(statuses=[{"name": "litgpt", "restartCount": 3,
                             "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                             "lastState": {"terminated": {"exitCode": 6, "reason": "Error",
                                                          "message": "model.safetensors does not match its digest"}}}])
    state = observe.deployment_state(deployment(), [corrupt])
    assert (state.phase, state.reason) == ("Failed", "ChecksumMismatch")
    assert "does not match its digest" in state.message and "CrashLoopBackOff" in state.message
    # a rollout: the old pod still answers, the new one cannot load its adapter
    adapter = pod(statuses=[{"name": "litgpt", "restartCount": 1, "state": {"running": {}},
                             "lastState": {"terminated": {"exitCode": 1, "message": "Adapter 'x' was trained on a "
                                                                                    "different model"}}}])
    rolling = deployment(replicas=1, available=1, updated=1)
    rolling["status"]["replicas"] = 2
    state = observe.deployment_state(rolling, [corrupt, adapter], current_pods=[adapter])
    assert state.phase == "Degraded" and "trained on a different model" in state.message
    # the crash of a pod of the previous template does not count against the current one
    assert observe.deployment_state(rolling, [corrupt, adapter], current_pods=[]).phase == "Progressing"
    stalled = deployment(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}])
    assert observe.deployment_state(stalled, []).phase == "Failed"


def test_settings_from_env():
    settings = Settings.from_env({"LITGPT_OPERATOR_NAMESPACES": "a, b", "LITGPT_OPERATOR_RUNTIME_IMAGE": "img:1",
                                  "LITGPT_OPERATOR_DEFAULT_RESOURCES": '{"requests": {"cpu": "2"}}'})
    assert settings.namespaces == ["a", "b"] and not settings.clusterwide
    assert settings.default_resources.requests == {"cpu": "2"} and settings.runtime_image == "img:1"
    assert Settings.from_env({}).clusterwide


def test_settings_come_from_the_given_environment_only(monkeypatch):
    monkeypatch.setenv("LITGPT_OPERATOR_RUNTIME_IMAGE", "from-the-process:1")
    assert Settings.from_env({}).runtime_image != "from-the-process:1"
    assert Settings.from_env().runtime_image == "from-the-process:1"


@pytest.mark.parametrize("env,named", [
    ({"LITGPT_OPERATOR_LOG_FORMAT": "xml"}, "LITGPT_OPERATOR_LOG_FORMAT"),
    ({"LITGPT_OPERATOR_RETRY_DELAY_SECONDS": "-1"}, "LITGPT_OPERATOR_RETRY_DELAY_SECONDS"),
    ({"LITGPT_OPERATOR_DEFAULT_RESOURCES": "{not json"}, "LITGPT_OPERATOR_DEFAULT_RESOURCES"),
    ({"LITGPT_OPERATOR_RUNTIME_IMAGES": "typo"}, "LITGPT_OPERATOR_RUNTIME_IMAGES"),
    ({"LITGPT_OPERATOR_TMP_SIZE_LIMIT": "10 gigs"}, "LITGPT_OPERATOR_TMP_SIZE_LIMIT"),
])
def test_bad_settings_name_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_service_links_are_not_settings():
    """What Kubernetes injects for a Service `litgpt-operator-metrics` in the namespace (the chart's
    own under the release name litgpt-operator, when a pod keeps service links on)."""
    links = {"LITGPT_OPERATOR_METRICS_SERVICE_HOST": "10.0.0.7", "LITGPT_OPERATOR_METRICS_SERVICE_PORT": "9090",
             "LITGPT_OPERATOR_METRICS_SERVICE_PORT_METRICS": "9090",
             "LITGPT_OPERATOR_METRICS_PORT_9090_TCP": "tcp://10.0.0.7:9090",
             "LITGPT_OPERATOR_METRICS_PORT_9090_TCP_PROTO": "tcp", "LITGPT_OPERATOR_METRICS_PORT_9090_TCP_PORT": "9090",
             "LITGPT_OPERATOR_METRICS_PORT_9090_TCP_ADDR": "10.0.0.7"}
    assert Settings.from_env({**links, "LITGPT_OPERATOR_WORKERS": "3"}).workers == 3
    # the one link that lands on a setting's name says what happened and what to do
    with pytest.raises(SettingsError, match="LITGPT_OPERATOR_METRICS_PORT holds a Kubernetes service link.*enableServiceLinks"):
        Settings.from_env({**links, "LITGPT_OPERATOR_METRICS_PORT": "tcp://10.0.0.7:9090"})
    with pytest.raises(SettingsError, match="LITGPT_OPERATOR_RUNTIME_IMAGES"):  # typos still fail
        Settings.from_env({**links, "LITGPT_OPERATOR_RUNTIME_IMAGES": "x"})


def test_operator_refuses_bad_settings_without_traceback():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "litgpt_operator"], capture_output=True, text=True, timeout=60,
                            env={"LITGPT_OPERATOR_LOG_FORMAT": "xml", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid operator settings: LITGPT_OPERATOR_LOG_FORMAT")
    assert "Traceback" not in result.stderr


def test_reported_digest_reads_the_successful_download_termination_message():
    digest = "sha256:" + "0f" * 32

    def pod(name, created, code, message):
        return {"metadata": {"name": name, "creationTimestamp": created}, "status": {"containerStatuses": [
            {"name": "litgpt", "state": {"terminated": {"exitCode": code, "message": message}}}]}}

    assert observe.reported_digest([pod("a", "2026-01-01T00:00:00Z", 0, f"weights digest: {digest}\n")]) == digest
    # A failed attempt's log tail (FallbackToLogsOnError) is never taken for a digest.
    assert observe.reported_digest([pod("b", "2026-01-01T00:00:00Z", 1, f"weights digest: {digest}")]) is None
    assert observe.reported_digest([pod("c", "2026-01-01T00:00:00Z", 0, "Done")]) is None
    assert observe.reported_digest([]) is None
