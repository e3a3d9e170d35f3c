"""The operator's work queue (`handlers.workqueue`): a burst of triggers for one object is one
reconcile, an object is never reconciled by two workers at once, different objects are; and the
in-process re-checks of waiting or failed objects (`handlers.requeue`, `core._process`).
Without a cluster: what a worker runs is a stand-in that counts and, where a test needs a run in
flight, holds."""

from __future__ import annotations

import threading
import time

import pytest

from litgpt_operator.handlers import core
from litgpt_operator.handlers.workqueue import Taken, WorkQueue
from litgpt_operator.status import Observed
from litgpt_devcluster.waiting import wait_for

KEY = ("LitGPTModel", "ns", "a")


@pytest.fixture
def queues():
    made = []

    def make(process, workers=4):
        made.append(WorkQueue(lambda key, taken: process(key), workers))
        return made[-1]

    yield make
    for queue in made:
        queue.stop()
    core.RECHECKS.clear()


def test_triggers_queued_before_a_worker_takes_the_object_are_one_reconcile(queues):
    runs = []
    queue = queues(runs.append, workers=2)
    for _ in range(20):
        queue.add(KEY)
    queue.add(("LitGPTModel", "ns", "b"))
    queue.start()
    wait_for(queue.idle, "the queue to drain", timeout_s=5)
    assert sorted(runs) == [KEY, ("LitGPTModel", "ns", "b")]


def test_an_object_asked_for_while_it_is_reconciled_runs_once_more_never_twice_at_once(queues):
    gate, runs, inside = threading.Event(), [], []

    def process(key):
        inside.append(key)
        assert len(inside) == 1, "two workers on one object"
        runs.append(key)
        if len(runs) == 1:
            assert gate.wait(timeout=10)
        inside.remove(key)

    queue = queues(process)
    queue.start()
    queue.add(KEY)
    wait_for(lambda: runs, "the first run", timeout_s=5)
    for _ in range(10):
        queue.add(KEY)  # a change the first run may not have read
    gate.set()
    wait_for(lambda: len(runs) == 2 and queue.idle(), "the second run", timeout_s=5)
    time.sleep(0.2)
    assert runs == [KEY, KEY]


def test_different_objects_are_reconciled_at_once(queues):
    together = threading.Barrier(4)
    done = []

    def process(key):
        together.wait(timeout=10)  # broken (an error) unless four run at once
        done.append(key)

    queue = queues(process, workers=4)
    queue.start()
    for i in range(4):
        queue.add(("LitGPTModel", "ns", f"o{i}"))
    wait_for(lambda: len(done) == 4, "four reconciles", timeout_s=15)


def test_urgent_objects_go_first_and_routine_ones_still_get_every_fifth_worker_turn(queues):
    from litgpt_operator.handlers.workqueue import URGENT_PER_ROUTINE

    runs = []
    queue = queues(runs.append, workers=1)
    routine = [("FinetuneJob", "ns", f"refresh{i}") for i in range(3)]
    urgent = [("LitGPTModel", "ns", f"new{i}") for i in range(2 * URGENT_PER_ROUTINE)]
    for key in routine:
        queue.add(key)  # a pod event of an object that has its Job
    for key in urgent:
        queue.add(key, urgent=True)  # a new object: its first child should not wait behind refreshes
    queue.start()
    wait_for(queue.idle, "the queue to drain", timeout_s=5)
    k = URGENT_PER_ROUTINE
    assert runs == [*urgent[:k], routine[0], *urgent[k:], routine[1], routine[2]]


def test_a_queued_routine_object_asked_for_urgently_moves_up_once(queues):
    runs = []
    queue = queues(runs.append, workers=1)
    queue.add(("FinetuneJob", "ns", "other"))
    queue.add(KEY)
    queue.add(KEY, urgent=True)  # its dependency settled meanwhile
    queue.add(KEY)
    queue.start()
    wait_for(queue.idle, "the queue to drain", timeout_s=5)
    assert runs == [KEY, ("FinetuneJob", "ns", "other")]


def test_an_urgent_ask_during_the_object_s_reconcile_runs_it_again_urgently(queues):
    gate, runs = threading.Event(), []

    def process(key):
        runs.append(key)
        if key == KEY and len(runs) == 1:
            assert gate.wait(timeout=10)

    queue = queues(process, workers=1)
    queue.start()
    queue.add(KEY)
    wait_for(lambda: runs, "the first run", timeout_s=5)
    queue.add(("FinetuneJob", "ns", "other"))
    queue.add(KEY, urgent=True)
    gate.set()
    wait_for(lambda: len(runs) == 3 and queue.idle(), "the other runs", timeout_s=5)
    assert runs == [KEY, KEY, ("FinetuneJob", "ns", "other")]


def test_a_stopped_queue_forgets_what_waited(queues):
    runs = []
    queue = queues(runs.append)
    queue.add(KEY)
    queue.stop()
    queue.start()
    time.sleep(0.2)
    assert runs == []


def test_a_failed_reconcile_is_rechecked_and_a_good_one_forgotten(monkeypatch, caplog):
    outcomes = iter([RuntimeError("API server unavailable"), Observed("Ready", [])])

    def reconcile(kind, namespace, name, **_):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(core, "_reconcile", reconcile)
    core._process(KEY)
    assert core.RECHECKS.pending() == [KEY]
    assert "reconcile of LitGPTModel ns/a failed with an exception: API server unavailable" in caplog.text
    core._process(KEY)
    assert core.RECHECKS.pending() == []


def test_a_waiting_object_is_rechecked_backing_off_and_forgotten_when_settled():
    from litgpt_operator.handlers.requeue import MAX_DELAY_S, Requeue

    ran = []
    requeue = Requeue(ran.append)
    key = ("FinetuneJob", "ns", "ft")
    assert [requeue.waiting(key, 0.05) for _ in range(3)] == [0.05, 0.1, 0.2]
    assert requeue.pending() == [key]  # one pending re-check, not three
    time.sleep(0.3)
    assert ran == [key]
    requeue.settled(key)
    assert requeue.waiting(key, 0.05) == 0.05  # the back-off starts over
    requeue.settled(key)
    time.sleep(0.15)
    assert ran == [key] and requeue.pending() == []  # a settled object is not re-checked
    assert requeue.waiting(("LitGPTModel", "ns", "m"), 100.0) == 100.0
    assert requeue.waiting(("LitGPTModel", "ns", "m"), 1000.0) == MAX_DELAY_S


def test_a_pod_wakes_its_parent_only_when_what_the_status_reads_changes():
    from litgpt_operator.handlers.kopf_wiring import pod_signature

    pod = {"metadata": {"name": "p", "labels": {}},
           "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                      "containerStatuses": [{"name": "litgpt", "ready": False, "restartCount": 0,
                                             "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    same = {**pod, "metadata": {**pod["metadata"], "finalizers": ["batch.kubernetes.io/job-tracking"]},
            "status": {**pod["status"], "podIP": "10.0.0.7", "hostIP": "127.0.0.1"}}
    assert pod_signature(same) == pod_signature(pod)
    stuck = {**pod, "status": {**pod["status"], "containerStatuses": [
        {"name": "litgpt", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}
    failed = {**pod, "status": {**pod["status"], "phase": "Failed", "containerStatuses": [
        {"name": "litgpt", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 7}}}]}}
    unschedulable = {**pod, "status": {**pod["status"], "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}]}}
    signatures = {pod_signature(p) for p in (pod, stuck, failed, unschedulable)}
    assert len(signatures) == 4


def test_a_new_object_referring_to_one_not_seen_settled_is_not_urgent(monkeypatch):
    from litgpt_operator.handlers import kopf_wiring

    monkeypatch.setattr(kopf_wiring, "PHASES", {("LitGPTModel", "ns", "downloading"): "Downloading",
                                                ("LitGPTModel", "ns", "ready"): "Ready",
                                                ("FinetuneJob", "ns", "training"): "Running",
                                                ("FinetuneJob", "ns", "failed"): "Failed"})
    waits = kopf_wiring.waits_for_unsettled
    assert waits("FinetuneJob", "ns", {"modelRef": {"name": "downloading"}})
    assert not waits("FinetuneJob", "ns", {"modelRef": {"name": "ready"}})
    assert waits("FinetuneJob", "other", {"modelRef": {"name": "ready"}})  # another namespace's: not seen
    assert waits("FinetuneJob", "ns", {"modelRef": {"name": "not-seen-yet"}})  # in a burst: created just after
    assert waits("ModelServer", "ns", {"modelRef": {"name": "ready"},
                                       "adapters": [{"name": "a", "finetuneRef": {"name": "training"}}]})
    assert not waits("ModelServer", "ns", {"finetuneRef": {"name": "failed"}})  # it fails at once
    assert waits("LitGPTModel", "ns", {"source": {"finetuneRef": {"name": "training"}}})
    assert not waits("LitGPTModel", "ns", {"repoId": "EleutherAI/pythia-14m"})


def test_a_worker_gets_the_lane_and_the_newest_body_a_watch_event_gave():
    taken = []
    queue = WorkQueue(lambda key, t: taken.append((key, t)), workers=1)
    try:
        queue.add(KEY, urgent=True, body={"v": 1})
        queue.add(KEY, body={"v": 2})  # the newer event's body; still urgent
        queue.add(KEY)  # a child's event: no body of the object, the one kept stands
        queue.add(("LitGPTModel", "ns", "b"))
        queue.start()
        wait_for(lambda: len(taken) == 2 and queue.idle(), "both keys", timeout_s=5)
    finally:
        queue.stop()
    assert taken == [(KEY, Taken(True, {"v": 2})), (("LitGPTModel", "ns", "b"), Taken(False, None))]


def test_a_deleted_object_s_queued_reconcile_reads_it_rather_than_trusting_its_create_event():
    taken = []
    queue = WorkQueue(lambda key, t: taken.append(t), workers=1)
    try:
        queue.add(KEY, urgent=True, body={"v": 1})
        queue.forget_body(KEY)  # its DELETED event
        queue.start()
        wait_for(lambda: taken and queue.idle(), "the reconcile", timeout_s=5)
    finally:
        queue.stop()
    assert taken == [Taken(True, None)]


NEW_MODEL = {"apiVersion": "litgpt.lightning.ai/v1alpha1", "kind": "LitGPTModel",
             "metadata": {"namespace": "ns", "name": "a", "uid": "u1", "resourceVersion": "7", "generation": 1},
             "spec": {"repoId": "org/model"}}


@pytest.fixture
def fake_world(monkeypatch):
    """kube reads and status writes counted; the model's reconcile a stand-in."""
    calls = {"get": 0, "patch_status": [], "requeued": []}

    def get(kind, namespace, name):
        calls["get"] += 1
        return NEW_MODEL

    monkeypatch.setattr(core.kube, "get", get)
    monkeypatch.setattr(core.kube, "patch_status", lambda *args: calls["patch_status"].append(args))
    monkeypatch.setitem(core.RECONCILERS, "LitGPTModel", lambda body, settings: Observed("Downloading", []))
    monkeypatch.setattr(core.WORK, "add", lambda key, *a, **kw: calls["requeued"].append((key, kw)))
    return calls


def test_a_new_object_s_first_reconcile_trusts_its_create_event_and_defers_its_status_in_a_burst(fake_world, monkeypatch):
    monkeypatch.setattr(core.WORK, "urgent_waiting", lambda: True)
    core._process(KEY, Taken(True, NEW_MODEL))
    assert fake_world["get"] == 0  # the event's body, not a read
    assert fake_world["patch_status"] == []  # other new objects wait for their first child
    assert fake_world["requeued"] == [(KEY, {})]  # its status: a routine reconcile of its own

    monkeypatch.setattr(core.WORK, "urgent_waiting", lambda: False)
    core._process(KEY, Taken(True, NEW_MODEL))
    assert fake_world["get"] == 0 and len(fake_world["patch_status"]) == 1  # nobody waits: written now


def test_a_body_with_a_status_is_read_again_and_a_routine_key_writes_at_once(fake_world, monkeypatch):
    monkeypatch.setattr(core.WORK, "urgent_waiting", lambda: True)
    core._process(KEY, Taken(True, {**NEW_MODEL, "status": {"phase": "Pending"}}))
    assert fake_world["get"] == 1  # a body with a status may be older than our own last write
    assert fake_world["patch_status"] == [] and len(fake_world["requeued"]) == 1  # read: still new
    core._process(KEY, Taken(False, NEW_MODEL))
    assert fake_world["get"] == 1 and len(fake_world["patch_status"]) == 1  # routine: no deferral
    assert len(fake_world["requeued"]) == 1


def test_a_shared_claim_known_to_exist_is_not_created_again_until_forgotten(monkeypatch):
    from litgpt_operator.builders.common import Parent
    from litgpt_operator.handlers import children

    creates = []
    monkeypatch.setattr(children.kube, "create_or_get",
                        lambda obj, read_existing=True: creates.append(obj["kind"]) or (None, False))
    claim = {"kind": "PersistentVolumeClaim", "metadata": {"name": "cache", "namespace": "ns"}}
    children.forget_shared()
    for uid in ("u1", "u2", "u3"):
        children.create_children([claim], Parent("v1", "LitGPTModel", f"m-{uid}", "ns", uid))
    assert creates == ["PersistentVolumeClaim"]
    monkeypatch.setattr(children, "SHARED_KNOWN_SECONDS", 0.0)  # time passed: it may have been deleted
    children.create_children([claim], Parent("v1", "LitGPTModel", "m-u4", "ns", "u4"))
    assert creates == ["PersistentVolumeClaim"] * 2
    children.forget_shared()


def test_jobs_this_process_created_before_any_status_said_so_are_looked_for_not_created_again(monkeypatch):
    from litgpt_operator.builders.common import Parent
    from litgpt_operator.handlers import jobs

    job = {"kind": "Job", "metadata": {"name": "a-download", "namespace": "ns", "uid": "j1"}}
    monkeypatch.setattr(jobs, "create_children", lambda children, parent: [(job, True)])
    jobs.forget_created()
    new = {"metadata": {"uid": "u1"}}
    assert not jobs.may_have_jobs(new)  # never reconciled: create without looking first
    jobs.start_job(Parent("v1", "LitGPTModel", "a", "ns", "u1"), [job], settings=None)
    assert jobs.may_have_jobs(new)  # its status write was left for later: the Job is ours already
    assert not jobs.may_have_jobs({"metadata": {"uid": "u2"}})
    assert jobs.may_have_jobs({"metadata": {"uid": "u1"}, "status": {"phase": "Pending"}})
    assert jobs._created_unrecorded == set()  # the status says so now: forgotten


def test_an_object_deleted_before_its_status_said_it_had_jobs_is_forgotten(monkeypatch):
    from litgpt_operator.builders.common import Parent
    from litgpt_operator.handlers import jobs

    job = {"kind": "Job", "metadata": {"name": "a-download", "namespace": "ns", "uid": "j1"}}
    monkeypatch.setattr(jobs, "create_children", lambda children, parent: [(job, True)])
    jobs.forget_created()
    jobs.start_job(Parent("v1", "LitGPTModel", "a", "ns", "u1"), [job], settings=None)
    jobs.start_job(Parent("v1", "LitGPTModel", "b", "ns", "u2"), [job], settings=None)
    jobs.forget_created_by("u1")  # its DELETED event: a long-running operator keeps no trace of it
    assert jobs._created_unrecorded == {"u2"}
    jobs.forget_created()
