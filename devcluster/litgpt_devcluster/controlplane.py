"""A real, local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler (built by `hack/control-plane.sh install`) and our node agent.

One implementation serves both the pytest fixture (`tests/conftest.py`) and the developer's
`hack/control-plane.sh up|down|env` (which runs `python -m litgpt_devcluster.controlplane`).

Everything listens on 127.0.0.1 only, on ports picked free at start, so parallel runs do not
clash. Each component runs in its own process group with a pid file in the state folder;
`stop()` (or `down` from another shell) stops the groups and leaves nothing running.

    cp = ControlPlane(state_dir=Path("/tmp/cp"))
    cp.start()                       # returns when the apiserver is ready and the nodes are Ready
    cp.kubectl("get", "nodes")
    cp.stop()
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from litgpt_devcluster import certs, processes
from litgpt_devcluster.addresses import SERVICE_CIDR
from litgpt_devcluster.binaries import (  # noqa: F401 - part of this module's API
    INSTALL_HINT,
    BinariesMissing,
    ControlPlaneError,
    bin_dir,
    binary,
    cache_root,
    installed_bin_dir,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Stop order: clients of the apiserver first, etcd last, so nothing logs connection errors
# (and nothing writes half a change) while the store goes away.
_STOP_ORDER = ("node-agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")

# The default nodes: simulated plain and GPU nodes (the operator schedules on both kinds), and
# one exec node that really runs commands, tainted so only pods tolerating it land there. It
# advertises GPUs too, so a pod that requests one can still run for real (on the CPU).
DEFAULT_NODES = (
    "sim-cpu-0:cpu=8,memory=32Gi,pods=110",
    "sim-gpu-0:cpu=16,memory=64Gi,pods=110,nvidia.com/gpu=4",
    "exec-0:cpu=16,memory=64Gi,pods=50,nvidia.com/gpu=2,mode=exec",
)


# --- the control plane -----------------------------------------------------------------------

def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _kubeconfig(server: str, ca: Path, client: certs.KeyPair, user: str) -> str:
    # JSON is YAML: kubectl, client-go and the Python client all read it.
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        },
        indent=2,
    )


@dataclass
class ControlPlane:
    """A control plane whose files (certs, etcd data, logs, pid files, kubeconfig) live in
    `state_dir`. `nodes` are node-agent specs `name:resource=qty,...`; empty means no agent."""

    state_dir: Path
    nodes: tuple[str, ...] = DEFAULT_NODES
    agent_mode: str = "simulate"
    # Kill the components if this Python process dies (the fixture); `up` leaves them running.
    tie_to_parent: bool = False
    # Where the apiserver listens and what it advertises. 127.0.0.1 for the node agent; the
    # real node's address inside its network namespace (litgpt_devcluster.realnode), so that
    # pods reach the apiserver through the `kubernetes` Service.
    address: str = "127.0.0.1"
    # More kube-apiserver flags (an audit policy and log for benchmarks/bench_operator.py).
    apiserver_args: tuple[str, ...] = ()
    # Flags appended to a component's own, by name (a fault test's short timeouts and timings:
    # `{"kube-apiserver": ("--min-request-timeout=5",)}`).
    extra_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _procs: dict[str, processes.Managed] = field(default_factory=dict, init=False, repr=False)
    # What each component was started with and how to tell it is up: `restart` starts it again
    # the same way (same ports, same etcd data folder).
    _launch: dict[str, tuple[list[str], dict]] = field(default_factory=dict, init=False, repr=False)
    _health: dict[str, Callable[[], bool]] = field(default_factory=dict, init=False, repr=False)
    _pki: Optional[certs.Pki] = field(default=None, init=False, repr=False)
    server: str = field(default="", init=False)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def bin_dir(self) -> Path:
        return installed_bin_dir()

    # -- start --------------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0, attempts: int = 3) -> None:
        """Start every component and wait until the cluster is usable. A port another process
        grabbed between our check and the component's bind is retried with fresh ports."""
        bins = installed_bin_dir()
        if any(p.alive() for p in processes.from_pid_files(self.state_dir)):
            raise ControlPlaneError(f"a control plane is already running from {self.state_dir}; stop it first")
        for attempt in range(1, attempts + 1):
            self._fresh_state_dir()
            try:
                self._start_once(bins, timeout_s)
                return
            except ControlPlaneError as error:
                self.stop()
                if "address already in use" not in str(error) or attempt == attempts:
                    raise

    def _fresh_state_dir(self) -> None:
        # Keep nothing from an earlier run: a fresh etcd and fresh certs every time.
        for child in ("pki", "etcd", "logs", "pids", "kcm", "scheduler", "node-agent"):
            shutil.rmtree(self.state_dir / child, ignore_errors=True)
        for child in ("pki", "logs", "pids", "kcm", "scheduler"):
            (self.state_dir / child).mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, argv: list[str], **kwargs) -> None:
        argv = [*argv, *self.extra_args.get(name, ())]
        self._launch[name] = (argv, kwargs)
        self._procs[name] = processes.spawn(name, argv, self.state_dir, tie_to_parent=self.tie_to_parent, **kwargs)

    def _start_once(self, bins: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        loopback = self.address == "127.0.0.1"
        pki = self._pki = certs.make_pki(self.state_dir / "pki", extra_ips=() if loopback else (self.address,))
        etcd_port, peer_port, kcm_port, sched_port = (_free_port() for _ in range(4))
        api_port = _free_port(self.address)
        self.server = f"https://{self.address}:{api_port}"
        self.kubeconfig.write_text(_kubeconfig(self.server, pki.ca.cert, pki.admin, "admin"))
        kcm_kubeconfig = self.state_dir / "kcm" / "kubeconfig"
        kcm_kubeconfig.write_text(_kubeconfig(self.server, pki.ca.cert, pki.controller_manager, "kcm"))
        sched_kubeconfig = self.state_dir / "scheduler" / "kubeconfig"
        sched_kubeconfig.write_text(_kubeconfig(self.server, pki.ca.cert, pki.scheduler, "scheduler"))

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn("etcd", [
            str(bins / "etcd"),
            "--name=local",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=local={peer_url}",
            # Test data is thrown away: skip the fsyncs that dominate etcd's latency on disk.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ])
        self._health["etcd"] = lambda: _http_ok(f"{etcd_url}/health")
        self._wait(self._health["etcd"], "etcd", deadline)

        self._spawn("kube-apiserver", [
            str(bins / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={api_port}",
            f"--cert-dir={self.state_dir / 'pki'}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            # A front-proxy CA, as kubeadm sets up: without one the controller-manager and the
            # scheduler log an error every few seconds about the missing request-header CA.
            f"--requestheader-client-ca-file={pki.ca.cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            # Node: a real kubelet (system:node:<name>) may touch only its own Node and pods.
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--allow-privileged=true",
            # `kubectl logs` reaches the node agent as it would a kubelet: at the node's
            # InternalIP (127.0.0.1), verifying its certificate against our CA.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={pki.ca.cert}",
            f"--kubelet-client-certificate={pki.admin.cert}",
            f"--kubelet-client-key={pki.admin.key}",
            "--profiling=false",
            # One test client at a time: fair queuing only costs start-up time here.
            "--enable-priority-and-fairness=false",
            # The `kubernetes` Service cannot point at 127.0.0.1 (endpoint validation forbids
            # loopback addresses); exec-mode pods get KUBERNETES_SERVICE_HOST=127.0.0.1 instead.
            # At the real node's address, the default reconciler makes it the Service's endpoint.
            *(["--endpoint-reconciler-type=none"] if loopback else []),
            *self.apiserver_args,
        ])
        ca_context = ssl.create_default_context(cafile=str(pki.ca.cert))
        ca_context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        self._health["kube-apiserver"] = lambda: _http_ok(f"{self.server}/readyz", ca_context)
        self._wait(self._health["kube-apiserver"], "kube-apiserver", deadline)

        self._spawn("kube-controller-manager", [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            f"--cert-dir={self.state_dir / 'kcm'}",
            "--leader-elect=false",
            # Each controller acts as its own service account with its own RBAC role, as in a
            # kubeadm cluster, so permission mistakes show up here and not first in production.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            # Every controller that is on by default (job, garbage collector, deployment,
            # replicaset, namespace, serviceaccount(-token), endpoints(lice), hpa, node lifecycle,
            # ...); the ones that need a cloud or node CIDRs do nothing without them.
            "--controllers=*",
            "--profiling=false",
        ])
        self._spawn("kube-scheduler", [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={sched_kubeconfig}",
            f"--authentication-kubeconfig={sched_kubeconfig}",
            f"--authorization-kubeconfig={sched_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={sched_port}",
            f"--cert-dir={self.state_dir / 'scheduler'}",
            "--leader-elect=false",
            "--profiling=false",
        ])
        if self.nodes:  # started now, so its start-up overlaps the controller-manager's
            self._spawn_node_agent("node-agent", self.nodes, self.agent_mode)
        insecure = ssl._create_unverified_context()  # their serving certs are self-signed
        self._wait(lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", insecure), "kube-controller-manager", deadline)
        self._wait(lambda: _http_ok(f"https://127.0.0.1:{sched_port}/healthz", insecure), "kube-scheduler", deadline)
        # The service-account controller creating `default` proves the controllers are running
        # (and pods can be created: admission rejects them until their service account exists).
        self._wait(
            lambda: _http_ok(f"{self.server}/api/v1/namespaces/default/serviceaccounts/default", ca_context),
            "kube-controller-manager (default service account)",
            deadline,
        )
        self._ca_context = ca_context
        self._wait_nodes_ready(self.nodes, deadline)
        (self.state_dir / "server").write_text(self.server + "\n")

    def _wait_nodes_ready(self, nodes: tuple[str, ...], deadline: float) -> None:
        for spec in nodes:
            name = spec.split(":", 1)[0]
            self._wait(lambda: _node_ready(f"{self.server}/api/v1/nodes/{name}", self._ca_context),
                       f"node-agent ({name} Ready)", deadline)

    def _spawn_node_agent(self, process_name: str, nodes: tuple[str, ...], mode: str) -> None:
        # The agent's log endpoint uses the apiserver's serving pair: it is valid for 127.0.0.1.
        # Every agent shares one work folder, so a claim is the same folder on every node (as a
        # network volume would be) and a pod moved to another node finds its checkpoints.
        serving = self._pki.serving
        argv = [sys.executable, "-m", "litgpt_devcluster.node_agent", "--kubeconfig", str(self.kubeconfig),
                "--mode", mode, "--work-dir", str(self.state_dir / "node-agent"),
                "--kubelet-port", str(_free_port()), "--tls-cert", str(serving.cert), "--tls-key", str(serving.key)]
        for spec in nodes:
            argv += ["--node", spec]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT / "devcluster"), os.environ.get("PYTHONPATH")])))
        self._spawn(process_name, argv, env=env, cwd=REPO_ROOT)

    def _wait(self, check, what: str, deadline: float) -> None:
        began = time.monotonic()
        try:
            self._poll(check, what, deadline)
        finally:
            # Where start-up time goes, stage by stage (logs/startup.log).
            with open(self.state_dir / "logs" / "startup.log", "a") as out:
                out.write(f"{time.monotonic() - began:6.2f}s waiting for {what}\n")

    def _poll(self, check, what: str, deadline: float) -> None:
        while True:
            for proc in self._procs.values():
                if not proc.alive():
                    tail = proc.log_tail()
                    raise ControlPlaneError(f"{proc.name} exited during start-up; last lines of {proc.log}:\n{tail}")
            if check():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}; logs are in {self.state_dir / 'logs'}")
            time.sleep(0.1)

    # -- stop ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every component this object (or an earlier `up` in the same folder) started."""
        known = {proc.name: proc for proc in processes.from_pid_files(self.state_dir)}
        known.update(self._procs)
        # Node agents added later (`add_node_agent`) go first, with the first one.
        extra_agents = sorted(n for n in known if n.startswith("node-agent-"))
        order = [name for name in _STOP_ORDER if name in known] + [n for n in known if n not in _STOP_ORDER]
        order = extra_agents + [n for n in order if n not in extra_agents]
        for name in order:
            processes.stop(known[name])
        self._procs.clear()

    def stop_components(self, *names: str) -> None:
        """Stop some components (in the safe order: clients first, etcd last), keeping their
        state: `start_components` brings them back as they were."""
        for name in [n for n in _STOP_ORDER if n in names] + [n for n in names if n not in _STOP_ORDER]:
            processes.stop(self._procs.pop(name))

    def start_components(self, *names: str, timeout_s: float = 60.0) -> None:
        """Start stopped components again with the arguments they first had: the same ports and
        etcd's same data folder, so clients reconnect to the same cluster (etcd first)."""
        deadline = time.monotonic() + timeout_s
        for name in [n for n in reversed(_STOP_ORDER) if n in names] + [n for n in names if n not in _STOP_ORDER]:
            argv, kwargs = self._launch[name]
            self._procs[name] = processes.spawn(name, argv, self.state_dir, tie_to_parent=self.tie_to_parent, **kwargs)
            if name in self._health:
                self._wait(self._health[name], f"{name} (restarted)", deadline)

    def restart(self, *names: str, down_s: float = 0.0) -> None:
        """Stop the components, wait `down_s`, start them again (see `start_components`)."""
        self.stop_components(*names)
        time.sleep(down_s)
        self.start_components(*names)

    def add_node_agent(self, name: str, nodes: tuple[str, ...], mode: str = "exec", timeout_s: float = 60.0) -> None:
        """One more node agent process (`node-agent-<name>`) for `nodes`, which `lose_node_agent`
        can take away on its own, as one machine of a cluster."""
        self._spawn_node_agent(f"node-agent-{name}", nodes, mode)
        self._wait_nodes_ready(nodes, time.monotonic() + timeout_s)

    def lose_node_agent(self, name: str) -> None:
        """SIGKILL an agent added by `add_node_agent` and every pod process it runs, at once: a
        machine that disappears (no graceful stop, no last status, no checkpoint on SIGTERM)."""
        processes.kill(self._procs.pop(f"node-agent-{name}"), children_groups=True)

    def running(self) -> list[str]:
        """Names of the components that are still alive."""
        return [proc.name for proc in processes.from_pid_files(self.state_dir) if proc.alive()]

    # -- using it -----------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
        """Run kubectl against this cluster and return its stdout; raise with stderr on failure."""
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, ["kubectl", *args], result.stdout, result.stderr)
        return result.stdout

    def api_client(self):
        """A new `kubernetes.client.ApiClient` for the admin user."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _node_ready(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            node = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    # A new Node carries the not-ready taint until the node lifecycle controller sees it Ready;
    # until then the scheduler will not place pods on it.
    tainted = any(t.get("key") == "node.kubernetes.io/not-ready" for t in node.get("spec", {}).get("taints") or [])
    return ready and not tainted


# --- command line (hack/control-plane.sh) ----------------------------------------------------

def default_state_dir() -> Path:
    return cache_root() / "run" / "local"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/control-plane.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=default_state_dir(), help="certs, data, logs, kubeconfig")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bin-dir", help="print where the binaries are (or go)")
    sub.add_parser("installed", help="exit 0 if every binary is installed")
    up = sub.add_parser("up", help="start the control plane and node agent in the background")
    up.add_argument("--node", action="append", help=f"name:resource=qty,... (default: {' '.join(DEFAULT_NODES)})")
    up.add_argument("--no-agent", action="store_true", help="no nodes: pods stay Pending")
    up.add_argument("--agent-mode", default="simulate", choices=("simulate", "exec"))
    sub.add_parser("down", help="stop everything `up` started")
    sub.add_parser("env", help="print `export KUBECONFIG=...` (eval it)")
    sub.add_parser("status", help="list the running components")
    args = parser.parse_args(argv)

    if args.command == "bin-dir":
        print(bin_dir())
        return 0
    if args.command == "installed":
        try:
            installed_bin_dir()
        except BinariesMissing:
            return 1
        return 0
    nodes = () if getattr(args, "no_agent", False) else tuple(getattr(args, "node", None) or DEFAULT_NODES)
    cp = ControlPlane(args.state_dir, nodes=nodes, agent_mode=getattr(args, "agent_mode", "simulate"))
    try:
        if args.command == "up":
            started = time.monotonic()
            cp.start()
            print(f"control plane up in {time.monotonic() - started:.1f}s at {cp.server}", file=sys.stderr)
            print(f"logs: {cp.state_dir / 'logs'}; stop with: hack/control-plane.sh down", file=sys.stderr)
            print(f"export KUBECONFIG={cp.kubeconfig}")
        elif args.command == "down":
            running = cp.running()
            cp.stop()
            print(f"stopped: {', '.join(running) or 'nothing was running'}", file=sys.stderr)
        elif args.command == "env":
            if not cp.running():
                raise ControlPlaneError(f"no control plane is running from {cp.state_dir}: run hack/control-plane.sh up")
            print(f"export KUBECONFIG={cp.kubeconfig}")
        elif args.command == "status":
            running = cp.running()
            print("\n".join(running) if running else "not running")
            return 0 if running else 1
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
