"""The kubelet-like loop: register nodes, watch the pods bound to them, drive their containers
through a runtime, write pod status, and finish graceful deletions.

One worker thread owns all pod state (no locks); a watch thread feeds it events and a
heartbeat thread keeps the Node leases fresh.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from litgpt_devcluster.node_agent import nodes as node_objects
from litgpt_devcluster.node_agent.kubelet_api import KubeletApi
from litgpt_devcluster.node_agent.nodes import NodeSpec
from litgpt_devcluster.node_agent.provisioner import Provisioner
from litgpt_devcluster.node_agent.runtimes import Runtime, StartError
from litgpt_devcluster.node_agent.status import (
    ContainerRun,
    PodRun,
    Termination,
    pod_status,
    should_restart,
    without_volatile,
)

log = logging.getLogger("node-agent")

LEASE_RENEW_S = 10.0
NODE_STATUS_S = 30.0
TICK_S = 0.2
MERGE_PATCH = "application/merge-patch+json"


def _backoff_s(restart_count: int) -> float:
    # The kubelet's back-off is 10 s doubling to 5 min; tests want restarts in seconds.
    return min(0.5 * 2**restart_count, 10.0)


class NodeAgent:
    def __init__(
        self,
        api_client: client.ApiClient,
        nodes: list[NodeSpec],
        runtimes: dict[str, Runtime],
        work_dir: Path,
        kubelet_port: int = 10250,
    ):
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.nodes = nodes
        self.node_names = {n.name for n in nodes}
        # One runtime per mode; each node uses its mode's.
        self.runtimes = runtimes
        self.node_modes = {n.name: n.mode for n in nodes}
        self.kubelet_port = kubelet_port
        self.runs: dict[str, PodRun] = {}
        # Pods we took to a terminal phase or are deleting: later events about them change nothing.
        self.finished: set[str] = set()
        self.events: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.provisioner = Provisioner(api_client, work_dir, self.stopping)
        self.work_dir = Path(work_dir)
        self.kubelet_api: KubeletApi | None = None

    # -- nodes --------------------------------------------------------------------------------

    def register_nodes(self) -> None:
        for spec in self.nodes:
            try:
                self.core.create_node(node_objects.node_object(spec))
            except ApiException as error:
                if error.status != 409:
                    raise
                self.core.patch_node(spec.name, {"metadata": {"labels": spec.labels}, "spec": {"taints": spec.taints}})
            self._post_node_status(spec)
            self._renew_lease(spec.name)
            log.info("registered node %s with capacity %s", spec.name, spec.capacity)

    def _post_node_status(self, spec: NodeSpec) -> None:
        body = {"status": node_objects.node_status(spec, self.kubelet_port)}
        self.core.patch_node_status(spec.name, body, _content_type=MERGE_PATCH)

    def _renew_lease(self, name: str) -> None:
        lease = node_objects.lease_object(name)
        try:
            self.coordination.patch_namespaced_lease(name, node_objects.LEASE_NAMESPACE, {"spec": lease["spec"]}, _content_type=MERGE_PATCH)
        except ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease(node_objects.LEASE_NAMESPACE, lease)

    def _heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(LEASE_RENEW_S):
            post_status = time.monotonic() - last_status >= NODE_STATUS_S
            for spec in self.nodes:
                try:
                    self._renew_lease(spec.name)
                    if post_status:
                        self._post_node_status(spec)
                except ApiException as error:
                    if error.status == 404:  # someone deleted the Node: register it again
                        self.register_nodes()
                    else:
                        log.warning("heartbeat for %s failed: %s", spec.name, error.reason)
                except Exception as error:  # the apiserver going away must not kill the agent
                    log.warning("heartbeat for %s failed: %s", spec.name, error)
            if post_status:
                last_status = time.monotonic()

    # -- pods: watching -----------------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                response = self.core.list_pod_for_all_namespaces(_preload_content=False)
                listing = json.loads(response.data)
                self.events.put(("SYNC", listing["items"]))
                version = listing["metadata"]["resourceVersion"]
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces, resource_version=version, timeout_seconds=60,
                )
                for event in stream:
                    if self.stopping.is_set():
                        return
                    if event["type"] == "ERROR":  # usually 410 Gone: list again
                        break
                    self.events.put((event["type"], event["raw_object"]))
            except Exception as error:
                if self.stopping.is_set():
                    return
                log.warning("pod watch failed (%s); listing again", error)
                time.sleep(1)

    # -- pods: reconciling --------------------------------------------------------------------

    def serve_logs(self, cert: Path, key: Path) -> None:
        """Serve container logs on `kubelet_port` (before `run`), for `kubectl logs`."""
        self.kubelet_api = KubeletApi(self.kubelet_port, cert, key, self._find_log, self._is_running)
        self.kubelet_api.start()

    def _find_log(self, namespace: str, pod: str, container: str) -> Path | None:
        # Folder names end in the pod's uid; a recreated pod of the same name has the newest log.
        logs = list((self.work_dir / "pods").glob(f"{namespace}_{pod}_*/logs/{container}.log"))
        return max(logs, key=lambda p: p.stat().st_mtime) if logs else None

    def _is_running(self, namespace: str, pod: str, container: str) -> bool:
        for run in list(self.runs.values()):  # read from the server's threads: copy first
            meta = run.pod["metadata"]
            if (meta["namespace"], meta["name"]) == (namespace, pod):
                return any(c.name == container and c.running for c in run.containers)
        return False

    def run(self) -> None:
        """Register the nodes and serve until `stopping` is set; then stop every container."""
        self.register_nodes()
        self.provisioner.install_storage_class()
        threading.Thread(target=self.provisioner.run, name="provisioner", daemon=True).start()
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._watch_loop, name="pod-watch", daemon=True).start()
        try:
            next_tick = time.monotonic()
            while not self.stopping.is_set():
                try:
                    kind, payload = self.events.get(timeout=max(0.0, next_tick - time.monotonic()))
                except queue.Empty:
                    pass
                else:
                    if kind == "SYNC":
                        self._sync(payload)
                    else:
                        self._on_event(kind, payload)
                # Ticks are due by the clock, so a busy stream of events cannot starve them.
                if time.monotonic() >= next_tick:
                    self._tick()
                    next_tick = time.monotonic() + TICK_S
        finally:
            if self.kubelet_api is not None:
                self.kubelet_api.stop()
            for runtime in self.runtimes.values():
                runtime.shutdown()

    def _tick(self) -> None:
        for run in list(self.runs.values()):
            self._guarded(run)

    def _sync(self, pods: list[dict]) -> None:
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self._on_event("MODIFIED", pod)
        for uid in [uid for uid in self.runs if uid not in seen]:  # deleted while we were not watching
            self._forget(self.runs[uid])

    def _on_event(self, kind: str, pod: dict) -> None:
        if pod.get("spec", {}).get("nodeName") not in self.node_names:
            return
        uid = pod["metadata"]["uid"]
        run = self.runs.get(uid)
        if kind == "DELETED":
            if run is not None:
                self._forget(run)
            self.finished.discard(uid)
            return
        if run is not None:
            run.pod = pod
        elif uid in self.finished and not pod["metadata"].get("deletionTimestamp"):
            return
        elif (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp"):
            self.finished.add(uid)
            return
        else:
            run = self.runs[uid] = self._new_run(pod)
        self._guarded(run)

    @staticmethod
    def _new_run(pod: dict) -> PodRun:
        spec = pod["spec"]
        containers = [ContainerRun(c["name"], c.get("image", ""), init=True) for c in spec.get("initContainers") or []]
        containers += [ContainerRun(c["name"], c.get("image", "")) for c in spec["containers"]]
        return PodRun(pod=pod, containers=containers)

    def _runtime(self, run: PodRun) -> Runtime:
        return self.runtimes[self.node_modes[run.pod["spec"]["nodeName"]]]

    def _forget(self, run: PodRun) -> None:
        self._runtime(run).stop_pod(run, 0)
        self.runs.pop(run.uid, None)

    def _guarded(self, run: PodRun) -> None:
        try:
            self._reconcile(run)
        except ApiException as error:
            if error.status in (404, 409):  # gone, or replaced by a new pod of the same name
                self._forget(run)
            else:
                log.warning("pod %s: %s %s", _name(run.pod), error.status, error.reason)
        except Exception:
            log.exception("pod %s: reconcile failed", _name(run.pod))

    def _reconcile(self, run: PodRun) -> None:
        meta = run.pod["metadata"]
        if meta.get("deletionTimestamp"):
            self._finish_deletion(run)
            return
        self._advance_containers(run)
        status = pod_status(run)
        if run.last_status is None or without_volatile(status) != without_volatile(run.last_status):
            body = {"metadata": {"uid": run.uid}, "status": status}
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], body, _content_type=MERGE_PATCH)
            run.last_status = status
            log.info("pod %s: %s", _name(run.pod), status["phase"])
        if status["phase"] in ("Succeeded", "Failed"):
            self.finished.add(run.uid)
            self._forget(run)

    def _finish_deletion(self, run: PodRun) -> None:
        # A kubelet stops the containers (SIGTERM, then SIGKILL after the grace period) and only
        # then removes the pod object for good; until then it stays Terminating.
        meta = run.pod["metadata"]
        self.finished.add(run.uid)
        grace_s = float(meta.get("deletionGracePeriodSeconds") or 30)
        runtime = self._runtime(run)
        runtime.stop_pod(run, grace_s)
        if not runtime.pod_stopped(run):
            return
        # Like the kubelet, report the terminal status (phase, exit codes) before removing the
        # pod: the Job controller keeps its finalizer on the pod until it has seen a terminal
        # phase, and a podFailurePolicy needs the exit code and the DisruptionTarget condition.
        self._report_final_status(run, grace_s)
        options = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=run.uid))
        try:
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=options)
        except ApiException as error:
            if error.status not in (404, 409):
                raise
        self.runs.pop(run.uid, None)
        log.info("pod %s: deleted", _name(run.pod))

    def _report_final_status(self, run: PodRun, grace_s: float) -> None:
        now = time.time()
        for container in run.containers:
            if container.restart_at is not None:  # waiting out a back-off: it will not restart now
                container.restart_at = None
            if container.running:
                ended = self._runtime(run).poll(run, container)
                if ended is None:  # the runtime cannot tell (simulated): killed, as by a signal
                    ended = Termination(143 if grace_s > 0 else 137, container.started_at or now, now)
                container.running = False
                container.ready = False
                container.terminated = ended
        status = pod_status(run)
        if status["phase"] not in ("Succeeded", "Failed"):
            # Containers that never started, or a pod stopped mid-way, still end Failed.
            status["phase"] = "Failed"
        meta = run.pod["metadata"]
        body = {"metadata": {"uid": run.uid}, "status": status}
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], body, _content_type=MERGE_PATCH)
        except ApiException as error:
            if error.status not in (404, 409):
                raise
        run.last_status = status
        log.info("pod %s: %s (deleted)", _name(run.pod), status["phase"])

    def _advance_containers(self, run: PodRun) -> None:
        if run.init_failed():
            return
        pending_init = next((c for c in run.init_containers() if not c.done), None)
        if pending_init is not None:
            self._step(run, pending_init)  # init containers run one at a time, in order
            if not pending_init.done:
                return
            if run.init_failed() or not run.initialized():
                return
        for container in run.app_containers():
            self._step(run, container)
            container.ready = container.running and self._runtime(run).ready(run, container)

    def _step(self, run: PodRun, container: ContainerRun) -> None:
        now = time.time()
        if container.running:
            ended = self._runtime(run).poll(run, container)
            if ended is not None:
                container.running = False
                container.terminated = ended
                if should_restart(run.restart_policy, ended.exit_code, container.init):
                    container.restart_at = now + _backoff_s(container.restart_count)
        elif container.restart_at is not None:
            if now >= container.restart_at:
                container.last_termination = container.terminated
                container.terminated = None
                container.restart_at = None
                container.restart_count += 1
                self._start(run, container)
        elif container.started_at is None and container.terminated is None and now >= container.retry_at:
            self._start(run, container)

    def _start(self, run: PodRun, container: ContainerRun) -> None:
        try:
            self._runtime(run).start(run, container)
        except StartError as error:
            # As the kubelet: the container waits with a reason, and we try again later.
            if container.waiting_reason != error.reason:
                log.warning("pod %s container %s: %s", _name(run.pod), container.name, error)
            container.waiting_reason = error.reason
            container.retry_at = time.time() + 1.0
            return
        container.running = True
        container.started_at = time.time()


def _name(pod: dict) -> str:
    return f"{pod['metadata'].get('namespace')}/{pod['metadata'].get('name')}"
