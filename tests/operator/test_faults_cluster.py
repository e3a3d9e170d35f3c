"""Faults, measured: the operator killed at random moments, the API server and etcd restarted,
watch streams closed by the API server, the active replica of two killed. Each test prints the
figures that docs/operator.md's "failure modes" table quotes.

They run on a control plane of their own (faults_support.FAULT_FLAGS: short watch timeouts, short
node-loss timings), so stopping its API server disturbs no other test. Pods run on simulated
nodes (they finish after `run-seconds`), except where a fault needs a real process."""

from __future__ import annotations

import json
import os
import random
import time

import pytest

from litgpt_devcluster.controlplane import ControlPlane
from litgpt_operator import kube as operator_kube
from tests.conftest import Kube, require_control_plane
from tests.operator.faults_support import (
    FAULT_FLAGS,
    SIM_NODES,
    ChildLedger,
    OperatorProcess,
    job_runs,
    phases,
    watch_requests,
)
from tests.operator.helpers import API, RUN_SECONDS, K8s, finetune, model, wait_for
from tests.packaging.packaging_support import install_chart_crds

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> Kube:
    require_control_plane()
    cp = ControlPlane(state_dir=tmp_path_factory.mktemp("faults-plane"), nodes=SIM_NODES, tie_to_parent=True,
                      extra_args=FAULT_FLAGS)
    try:
        cp.start()
        kube = Kube(cp)
        install_chart_crds(kube)  # ours and kopf's peering
        yield kube
    finally:
        cp.stop()


@pytest.fixture
def k8s(plane) -> K8s:
    namespace = plane.create_namespace("faults")
    operator_kube.configure(plane.api_client())
    yield K8s(plane, namespace)
    plane.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


def server(name: str, finetune_name: str) -> dict:
    return {"apiVersion": API, "kind": "ModelServer", "metadata": {"name": name},
            "spec": {"finetuneRef": {"name": finetune_name}, "gpus": 0}}


def chain(i: int, download_s: float, train_s: float) -> tuple[list[dict], dict[str, list[str]]]:
    """model m<i> -> finetune f<i> -> server s<i> of its output, on simulated nodes."""
    objects = [
        model(f"m{i}", claim="cache", podMetadata={"annotations": {RUN_SECONDS: str(download_s)}}),
        finetune(f"f{i}", model_name=f"m{i}", podMetadata={"annotations": {RUN_SECONDS: str(train_s)}}),
        server(f"s{i}", f"f{i}"),
    ]
    return objects, {"LitGPTModel": [f"m{i}"], "FinetuneJob": [f"f{i}"], "ModelServer": [f"s{i}"]}


STEADY = {"LitGPTModel": "Ready", "FinetuneJob": "Succeeded", "ModelServer": "Ready"}


def converged(k8s: K8s, names: dict[str, list[str]]) -> bool:
    return all(k8s.phase(kind, name) == STEADY[kind] for kind, items in names.items() for name in items)


def assert_each_child_once(k8s: K8s, ledger: ChildLedger, names: dict[str, list[str]]) -> None:
    """Each Job of a training object or model run by one pod; one Deployment, ReplicaSet and
    Service per server; no name ever had two uids."""
    assert ledger.created_twice() == {}, ledger.created_twice()
    for kind, items in names.items():
        for name in items:
            uid = k8s.get(kind, name)["metadata"]["uid"]
            if kind == "ModelServer":
                assert len(ledger.children_of(uid, "Deployment")) == 1 and len(ledger.children_of(uid, "Service")) == 1
                (deployment,) = ledger.children_of(uid, "Deployment")
                replica_sets = ledger.children_of(k8s.get("Deployment", deployment)["metadata"]["uid"], "ReplicaSet")
                assert len(replica_sets) == 1, f"{name}: the server was rolled again: {replica_sets}"
            else:
                jobs = ledger.children_of(uid, "Job")  # a FinetuneJob's data check has a Job of its own
                assert jobs, f"{kind} {name} has no Job"
                for job in jobs:
                    job_uid = k8s.get("Job", job)["metadata"]["uid"]
                    assert len(ledger.children_of(job_uid, "Pod")) == 1 and job_runs(k8s, job) == 1, \
                        f"{kind} {name}: Job {job} ran more than once"


def test_operator_sigkilled_at_ten_random_moments_converges_and_does_nothing_twice(k8s, tmp_path):
    """A flow of 3 chains (download -> finetune -> server), the second half applied mid-way; the
    operator is SIGKILLed at 10 moments drawn from a seeded generator (LITGPT_FAULT_SEED, default
    19) and started again after a random pause. Every object then reaches its steady phase, and
    no child was created twice, no Job ran twice, no server rolled again."""
    seed = int(os.environ.get("LITGPT_FAULT_SEED", "19"))
    rng = random.Random(seed)
    print(f"\nfault seed: {seed} (LITGPT_FAULT_SEED)")
    first, first_names = zip(*(chain(i, download_s=2 + 3 * i, train_s=3) for i in range(2)))
    later, later_names = chain(2, download_s=2, train_s=2)
    names: dict[str, list[str]] = {kind: [] for kind in STEADY}
    for part in [*first_names, later_names]:
        for kind, items in part.items():
            names[kind] += items

    operator = OperatorProcess(k8s.kube.kubeconfig, k8s.namespace, tmp_path / "operator.log").start()
    kills: list[tuple[float, dict]] = []
    began = time.monotonic()
    with ChildLedger(k8s.kube.api_client(), k8s.namespace) as ledger:
        try:
            operator.wait_healthy()
            k8s.apply([obj for objects in first for obj in objects])
            for kill in range(10):
                if kill == 5:
                    k8s.apply(later)
                time.sleep(rng.uniform(0.0, 3.0))  # the operator has been up (and working) 0-3 s
                operator.kill()
                kills.append((time.monotonic() - began, phases(k8s, names)))
                time.sleep(rng.uniform(0.0, 2.0))  # down 0-2 s while the Jobs go on
                restarted = time.monotonic()
                operator.start()
                operator.wait_healthy()
            wait_for(lambda: converged(k8s, names), "every object in its steady phase", timeout_s=120,
                     detail=lambda: f"{phases(k8s, names)}\n{operator.tail()}")
            settled = time.monotonic()
        finally:
            operator.stop()
    for at, seen in kills:
        print(f"  SIGKILL at {at:5.1f} s: {seen}")
    print(f"converged {settled - restarted:.1f} s after the last restart; whole flow {settled - began:.1f} s")
    assert_each_child_once(k8s, ledger, names)
    # The kills landed in different phases of the flow (not all before or after the work).
    seen_phases = {phase for _, seen in kills for phase in seen.values()}
    assert {"Downloading", "Running", "Ready", "Succeeded"} & seen_phases and len(seen_phases) >= 3, seen_phases
    assert "failed with an exception" not in operator.text(), operator.tail()


def test_api_server_and_etcd_restart_mid_reconcile_and_the_operator_converges(k8s, tmp_path):
    """Four chains whose downloads end 1 s apart; when the first model is Ready (the others' Jobs
    completing, their reconciles in flight) the API server and etcd stop, stay down 5 s and start
    again with the same data and port. The operator (never restarted) reconnects by itself: the
    flow converges, nothing twice."""
    plane: ControlPlane = k8s.kube.control_plane
    objects, names = [], {kind: [] for kind in STEADY}
    for i in range(4):
        chain_objects, chain_names = chain(i, download_s=2 + i, train_s=2)
        objects += chain_objects
        for kind, items in chain_names.items():
            names[kind] += items
    operator = OperatorProcess(k8s.kube.kubeconfig, k8s.namespace, tmp_path / "operator.log").start()
    with ChildLedger(k8s.kube.api_client(), k8s.namespace) as ledger:
        try:
            operator.wait_healthy()
            k8s.apply(objects)
            wait_for(lambda: k8s.phase("LitGPTModel", "m0") == "Ready", "m0 Ready", timeout_s=60, interval_s=0.1)
            stopping = time.monotonic()
            plane.stop_components("kube-apiserver", "etcd")
            down = time.monotonic()
            time.sleep(5)
            plane.start_components("kube-apiserver", "etcd")
            back, back_clock = time.monotonic(), time.time()
            wait_for(lambda: converged(k8s, names), "the flow to converge after the restart", timeout_s=120,
                     detail=lambda: f"{phases(k8s, names)}\n{operator.tail()}")
            settled = time.monotonic()
            assert operator.process.poll() is None, "the operator exited:\n" + operator.tail()
        finally:
            operator.stop()
    resumed = first_handled_after(operator.text(), back_clock)
    print(f"\nAPI server + etcd stopping {down - stopping:.1f} s, down {back - down:.1f} s; the operator's first "
          f"handler succeeded {resumed - back_clock:.1f} s and the flow converged {settled - back:.1f} s after they "
          "were back")
    assert resumed - back_clock <= 10  # the tries are at most 5 s apart
    assert operator.starts == 1
    assert_each_child_once(k8s, ledger, names)
    # Reconciles that hit the outage fail ("failed with an exception") and are re-checked.


def test_watch_streams_the_api_server_closes_are_resumed_without_missing_an_event(k8s, tmp_path):
    """The API server closes every watch after 8-16 s (--min-request-timeout=8; kopf's watch
    timeout left unset). Objects created one every 3 s across several closures are all
    reconciled, each within seconds: none waits for a resync that would never come."""
    operator = OperatorProcess(k8s.kube.kubeconfig, k8s.namespace, tmp_path / "operator.log",
                               unset=("LITGPT_OPERATOR_WATCH_SERVER_TIMEOUT_SECONDS",)).start()
    names = [f"w{i}" for i in range(14)]
    try:
        operator.wait_healthy()
        before = watch_requests(k8s.kube, "litgptmodels")
        for name in names:
            k8s.apply(model(name, claim="cache", podMetadata={"annotations": {RUN_SECONDS: "1"}}))
            time.sleep(3)
        wait_for(lambda: all(k8s.phase("LitGPTModel", n) == "Ready" for n in names), "every model Ready", timeout_s=60,
                 detail=lambda: f"{ {n: k8s.phase('LitGPTModel', n) for n in names} }\n{operator.tail()}")
        closed = watch_requests(k8s.kube, "litgptmodels") - before
    finally:
        operator.stop()
    latencies = []
    for name in names:
        body = k8s.get("LitGPTModel", name)
        ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
        latencies.append(seconds_between(body["metadata"]["creationTimestamp"], ready["lastTransitionTime"]))
    print(f"\n{closed} model watch streams closed by the API server while {len(names)} models were created over "
          f"{3 * len(names)} s; creation -> Ready: max {max(latencies):.0f} s, mean {sum(latencies) / len(latencies):.1f} s")
    assert closed >= 2, f"the API server closed only {closed} watch streams: the test proved nothing"
    assert max(latencies) <= 15, latencies
    assert "failed with an exception" not in operator.text(), operator.tail()


def first_handled_after(log: str, after: float) -> float:
    """The clock time of the first handler that succeeded after `after` (LOG_FORMAT=full lines)."""
    from datetime import datetime

    for line in log.splitlines():
        if line.startswith("[") and "Handler '" in line and "succeeded" in line:
            stamp = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # logging's local time
            if stamp > after:
                return stamp
    raise AssertionError(f"no handler succeeded after the API server was back:\n{log[-3000:]}")


def seconds_between(start: str, end: str) -> float:
    from datetime import datetime

    parse = lambda text: datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def peers(k8s, peering: str) -> dict:
    """The peers kopf keeps alive in the KopfPeering object's status (id -> priority, lastseen)."""
    body = json.loads(k8s.kube.kubectl("get", "kopfpeering", peering, "-n", k8s.namespace, "-o", "json"))
    return body.get("status") or {}


def sole_worker(replicas: list, for_s: float):
    """The one working replica if it stays the only one for `for_s` seconds, else None."""
    deadline = time.monotonic() + for_s
    working = [r for r in replicas if r.working()]
    while len(working) == 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        if [r for r in replicas if r.working()] != working:
            return None
    return working[0] if len(working) == 1 else None


def test_the_standby_replica_takes_over_within_the_peering_lifetime_when_the_active_is_killed(k8s, tmp_path):
    """Two replicas with peering (lifetime 15 s); under load (3 chains in flight) the active one
    is SIGKILLed, so its keep-alive stays in the peering object until it expires. The standby
    resumes within the lifetime, the flow converges, and nothing was created or run twice."""
    lifetime = 15
    peering = f"peer-{k8s.namespace}"
    k8s.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": peering}})
    env = {"LITGPT_OPERATOR_STANDALONE": "false", "LITGPT_OPERATOR_PEERING_NAME": peering,
           "LITGPT_OPERATOR_PEERING_LIFETIME_SECONDS": str(lifetime)}
    replicas = [OperatorProcess(k8s.kube.kubeconfig, k8s.namespace, tmp_path / f"replica-{n}.log", env=env).start()
                for n in ("a", "b")]
    objects, names = [], {kind: [] for kind in STEADY}
    for i in range(3):
        chain_objects, chain_names = chain(i, download_s=3, train_s=4 + 2 * i)
        objects += chain_objects
        for kind, items in chain_names.items():
            names[kind] += items
    with ChildLedger(k8s.kube.api_client(), k8s.namespace) as ledger:
        try:
            for replica in replicas:
                replica.wait_healthy()
            # A replica may resume before the other has registered; it pauses once it sees a higher
            # one (measured: 0.1 s after). So the roles count once both are in the peering object
            # and one replica has worked alone for a while; healthy does not mean registered.
            wait_for(lambda: len(peers(k8s, peering)) == 2, "both replicas in the peering object", timeout_s=60,
                     detail=lambda: "\n".join(r.tail(1500) for r in replicas))
            active = wait_for(lambda: sole_worker(replicas, for_s=3.0), "exactly one working replica",
                              timeout_s=120, detail=lambda: "\n".join(r.tail(1500) for r in replicas))
            standby = next(r for r in replicas if r is not active)
            k8s.apply(objects)
            # f0 trains for 4 s: a loaded operator may write Succeeded without ever writing Running
            # (the work queue folds the Job's updates); either way the chains are in flight.
            wait_for(lambda: k8s.phase("FinetuneJob", "f0") in ("Running", "Succeeded"), "f0 Running",
                     timeout_s=120, detail=lambda: f"{phases(k8s, names)}\n{active.tail()}")
            assert not standby.handled(), f"the standby did work:\n{standby.tail()}"
            standby_log = len(standby.text())
            active.kill()
            killed = time.monotonic()
            wait_for(standby.working, "the standby to take over", timeout_s=lifetime + 30,
                     detail=lambda: standby.tail())
            took_over = time.monotonic()
            wait_for(lambda: converged(k8s, names), "the flow to converge after the take-over", timeout_s=240,
                     detail=lambda: f"{phases(k8s, names)}\n{standby.tail()}")
            settled = time.monotonic()
            assert standby.handled(since=standby_log)
        finally:
            for replica in replicas:
                replica.stop()
    print(f"\nstandby took over {took_over - killed:.1f} s after the active replica was killed (peering lifetime "
          f"{lifetime} s); the flow converged {settled - took_over:.1f} s later")
    assert took_over - killed <= lifetime + 5
    assert_each_child_once(k8s, ledger, names)
    for replica in replicas:
        assert "failed with an exception" not in replica.text(), replica.tail()



def test_a_lost_node_s_training_resumes_on_another_node_and_its_server_comes_back(k8s, tmp_path):
    """Real pods on two exec nodes, each its own node agent: a model downloaded from the local
    Hub, a LoRA finetune saving a checkpoint every 2 steps, and a server, all on exec-a. exec-a's
    agent is SIGKILLed with its pods' processes (a machine gone). The node lifecycle controller
    marks it unreachable, the pods are evicted, and once the node is declared out of service (as
    after a non-graceful shutdown, or its Node removed) the training resumes on exec-b from its
    last checkpoint and the server comes back there; the model cache is intact."""
    import json
    import urllib.request

    from litgpt_devcluster.hf_tiny import make_hf_model_dir
    from litgpt_devcluster.hub_server import HubServer, make_repo
    from litgpt_devcluster.node_agent.provisioner import claim_folder
    from litgpt_runtime.checkpoint import checkpoint_digest
    from tests.operator.helpers import ON_EXEC_NODE

    plane: ControlPlane = k8s.kube.control_plane
    for name in ("a", "b"):
        plane.add_node_agent(name, (f"exec-{name}:cpu=16,memory=64Gi,pods=20,mode=exec",))
    k8s.kube.kubectl("cordon", "exec-b")  # everything starts on exec-a
    records = [{"instruction": f"Repeat {w}.", "input": "", "output": w} for w in ("red", "green", "blue", "cyan")]
    make_repo(tmp_path / "hub", "tiny-org/tiny-llama", make_hf_model_dir("llama", tmp_path / "hf-model"))
    port = int(k8s.namespace.encode().hex(), 16) % 2000 + 19000
    with HubServer(tmp_path / "hub") as hub, ChildLedger(k8s.kube.api_client(), k8s.namespace) as ledger:
        operator = OperatorProcess(k8s.kube.kubeconfig, k8s.namespace, tmp_path / "operator.log",
                                   env={"LITGPT_OPERATOR_HF_ENDPOINT": hub.url}).start()
        try:
            k8s.apply([
                {"apiVersion": API, "kind": "LitGPTModel", "metadata": {"name": "tiny"},
                 "spec": {"repoId": "tiny-org/tiny-llama", "checkpointRootPVC": {"claimName": "cache", "size": "1Gi"},
                          **ON_EXEC_NODE}},
                {"apiVersion": API, "kind": "FinetuneJob", "metadata": {"name": "long"},
                 "spec": {"modelRef": {"name": "tiny"}, "data": {"inline": json.dumps(records)},
                          # Long enough to outlive the node: the method's default epochs (3) would end it in 9 steps.
                          "train": {"epochs": 100000, "maxSteps": 100000, "globalBatchSize": 1, "microBatchSize": 1,
                                    "maxSeqLength": 64, "saveInterval": 2},
                          "gpusPerNode": 0, "precision": "32-true", **ON_EXEC_NODE}},
                {"apiVersion": API, "kind": "ModelServer", "metadata": {"name": "chat"},
                 "spec": {"modelRef": {"name": "tiny"}, "gpus": 0, "port": port, **ON_EXEC_NODE}},
            ])
            model = k8s.wait_phase("LitGPTModel", "tiny", "Ready", timeout=240)
            checkpoint = claim_folder(plane.state_dir / "node-agent", k8s.namespace, "cache") / model["status"]["checkpointPath"]
            k8s.wait_phase("ModelServer", "chat", "Ready", timeout=240)
            output = claim_folder(plane.state_dir / "node-agent", k8s.namespace, "cache")
            wait_for(lambda: list(output.glob("finetunes/long/step-*")), "a periodic checkpoint", timeout_s=300,
                     detail=lambda: operator.tail())
            pods = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in k8s.list("Pod")}
            assert set(pods.values()) == {"exec-a"}, pods
            k8s.kube.kubectl("uncordon", "exec-b")

            plane.lose_node_agent("a")
            lost = time.monotonic()
            wait_for(lambda: any(t["key"] == "node.kubernetes.io/unreachable" for t in
                                 (json.loads(k8s.kube.kubectl("get", "node", "exec-a", "-o", "json"))["spec"].get("taints") or [])),
                     "exec-a marked unreachable", timeout_s=90)
            unreachable = time.monotonic()
            # The Job's pod is evicted but stays Terminating: no kubelet will confirm it stopped,
            # and the Job replaces a pod only once it has (two trainings must never write the
            # same checkpoints). Declaring the node out of service lets Kubernetes delete it.
            k8s.kube.kubectl("taint", "node", "exec-a", "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute")
            k8s.wait_phase("ModelServer", "chat", "Ready", timeout=180)
            server_back = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30) as response:
                assert json.load(response)["data"]
            resumed = wait_for(lambda: (k8s.get("FinetuneJob", "long").get("status") or {}).get("resumedStep"),
                               "the finetune to resume on exec-b", timeout_s=300, detail=lambda: operator.tail())
            training_back = time.monotonic()
            body = k8s.get("FinetuneJob", "long")
        finally:
            operator.stop()
        k8s.delete("FinetuneJob", "long")
    pods = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in k8s.list("Pod")}
    print(f"\nexec-a lost; unreachable after {unreachable - lost:.1f} s; server Ready on exec-b after "
          f"{server_back - lost:.1f} s; training resumed from step {resumed} after {training_back - lost:.1f} s")
    assert resumed > 0 and body["status"]["attempts"] == 2 and body["status"]["phase"] == "Running", body["status"]
    assert (checkpoint / ".litgpt_complete.json").is_file()
    assert checkpoint_digest(checkpoint) == model["status"]["digest"]  # the cache is intact
    assert ledger.created_twice() == {}
    assert "failed with an exception" not in operator.text(), operator.tail()
