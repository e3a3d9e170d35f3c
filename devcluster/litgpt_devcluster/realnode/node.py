"""A real Kubernetes node: containerd + runc, the CNI bridge, kubelet and kube-proxy (built with
the control plane), the cluster DNS and the hostPath provisioner, next to the control plane,
all inside the network namespace of `netns.py`.

`RealCluster` is what callers use: it must run inside that namespace (the CLI in
`__main__.py` puts it there) and starts the control plane at the node's address, then the node.

    cluster = RealCluster(state_dir, images=[...archives...])
    cluster.start()       # returns when the node is Ready with the images imported
    cluster.kubectl("get", "pods", "-A", "-o", "wide")
    cluster.stop()        # pods, daemons, containers, mounts, cgroups: nothing left
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from litgpt_devcluster import certs, processes
from litgpt_devcluster.binaries import ControlPlaneError, cache_root, installed_bin_dir
from litgpt_devcluster.controlplane import REPO_ROOT, ControlPlane, _free_port, _kubeconfig
from litgpt_devcluster.realnode import config, netns
from litgpt_devcluster.realnode.config import NODE_IP, NODE_NAME, Layout

DNS_PORT = 53
NODE_LABELS = {"node.litgpt.dev/mode": "real"}
# Stopped first to last, after the pods are gone.
_NODE_PROCS = ("kube-proxy", "kubelet", "dns", "provisioner", "containerd")


def images_dir() -> Path:
    """Where hack/images.sh exports the image archives."""
    return cache_root() / "images"


IMAGES_ENV = "LITGPT_REAL_NODE_IMAGES"  # a folder of archives to use instead (`--images`)


def default_images() -> list[Path]:
    """This checkout's image archives: the ones `hack/images.sh archives` names (that script
    keeps older tags in the same folder), or every archive there if the script is absent;
    every archive in $LITGPT_REAL_NODE_IMAGES if set."""
    if os.environ.get(IMAGES_ENV):
        return sorted(Path(os.environ[IMAGES_ENV]).glob("*.tar"))
    script = REPO_ROOT / "hack" / "images.sh"
    if script.exists():
        result = subprocess.run(["bash", str(script), "archives"], capture_output=True, text=True)
        if result.returncode == 0:
            return [Path(line) for line in result.stdout.split() if Path(line).is_file()]
    return sorted(images_dir().glob("*.tar"))


def archive_refs(archive: Path) -> list[str]:
    """The image names a docker-archive (manifest.json RepoTags) or OCI archive (index.json
    ref annotations) carries, read without unpacking it."""
    refs: list[str] = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.name.lstrip("./") == "manifest.json":
                for entry in json.load(tar.extractfile(member)):
                    refs += entry.get("RepoTags") or []
            elif member.name.lstrip("./") == "index.json":
                for manifest in json.load(tar.extractfile(member)).get("manifests") or []:
                    ref = (manifest.get("annotations") or {}).get("io.containerd.image.name") or \
                        (manifest.get("annotations") or {}).get("org.opencontainers.image.ref.name")
                    if ref:
                        refs.append(ref)
    return refs


def pause_image(archives: list[Path]) -> str:
    """The sandbox image: the one named `.../pause:<version>` among the archives."""
    for archive in archives:
        for ref in archive_refs(archive):
            if ref.rsplit(":", 1)[0].rsplit("/", 1)[-1] == "pause":
                return ref
    raise ControlPlaneError(
        f"no pause image among {[str(a) for a in archives] or 'no archives'}: the node needs the locally "
        "built sandbox image (hack/images.sh build exports it)")


def _ctr(layout: Layout, *args: str, check: bool = True, timeout: float = 600) -> str:
    result = subprocess.run(["ctr", "--address", str(layout.containerd_socket), "--namespace", "k8s.io", *args],
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise ControlPlaneError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _containerd_answers(layout: Layout) -> bool:
    result = subprocess.run(["ctr", "--address", str(layout.containerd_socket), "version"], capture_output=True)
    return result.returncode == 0


@dataclass
class RealNode:
    """The node's daemons, files in `layout.state_dir`; `gpus` > 0 advertises nvidia.com/gpu."""

    cp: ControlPlane
    layout: Layout
    images: list[Path]
    gpus: int = 0
    tie_to_parent: bool = False
    _procs: dict[str, processes.Managed] = field(default_factory=dict, init=False, repr=False)

    @property
    def state_dir(self) -> Path:
        return self.layout.state_dir

    def _spawn(self, name: str, argv: list[str], **kwargs) -> None:
        self._procs[name] = processes.spawn(name, argv, self.state_dir, tie_to_parent=self.tie_to_parent, **kwargs)

    def _log(self, text: str) -> None:
        with open(self.state_dir / "logs" / "startup.log", "a") as out:
            out.write(text + "\n")

    # -- start ------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        layout, bins = self.layout, installed_bin_dir()
        # A fresh cluster (new etcd) has no claims: claim folders left by a run that stopped
        # midway would otherwise be handed to the next run's claims of the same name, which then
        # see a "complete" model they never downloaded. containerd's root (the imported images)
        # is kept: importing the runtime image is most of a cold start.
        for child in ("containerd-state", "cni", "kubelet", "node-pki", "pod-logs", "volumes"):
            shutil.rmtree(self.state_dir / child, ignore_errors=True)
        for folder in (layout.containerd_root, layout.cni_conf_dir, layout.cni_ipam_dir, layout.kubelet_root,
                       layout.pki, layout.volumes, self.state_dir / "logs"):
            folder.mkdir(parents=True, exist_ok=True)

        began = time.monotonic()
        sandbox = pause_image(self.images)
        layout.containerd_config.write_text(config.containerd_toml(layout, sandbox))
        (layout.cni_conf_dir / "10-litgpt.conflist").write_text(config.cni_conflist(layout))
        self._spawn("containerd", ["containerd", "--config", str(layout.containerd_config)])
        self._poll(lambda: layout.containerd_socket.exists() and _containerd_answers(layout), "containerd", deadline)
        self._import_images()
        self._log(f"{time.monotonic() - began:6.2f}s containerd up, images imported")
        # The first import of a tag takes minutes (the runtime image is ~6 GB): the start-up
        # deadline is for what follows it.
        deadline = max(deadline, time.monotonic() + timeout_s / 2)

        ca = certs.KeyPair(self.cp.state_dir / "pki" / "ca.crt", self.cp.state_dir / "pki" / "ca.key")
        node_pki = certs.make_node_pki(layout.pki, ca, NODE_NAME, NODE_IP)
        kubelet_kubeconfig = layout.pki / "kubelet.kubeconfig"
        kubelet_kubeconfig.write_text(_kubeconfig(self.cp.server, ca.cert, node_pki.kubelet_client, NODE_NAME))
        proxy_kubeconfig = layout.pki / "kube-proxy.kubeconfig"
        proxy_kubeconfig.write_text(_kubeconfig(self.cp.server, ca.cert, node_pki.kube_proxy, "kube-proxy"))

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(REPO_ROOT / "devcluster"), os.environ.get("PYTHONPATH")])))
        self._spawn("dns", [sys.executable, "-m", "litgpt_devcluster.realnode.dns", "--kubeconfig",
                            str(self.cp.kubeconfig), "--listen", f"{NODE_IP}:{DNS_PORT}"], env=env, cwd=REPO_ROOT)
        self._spawn("provisioner", [sys.executable, "-m", "litgpt_devcluster.node_agent.provisioner",
                                    "--kubeconfig", str(self.cp.kubeconfig), "--work-dir", str(layout.volumes)],
                    env=env, cwd=REPO_ROOT)

        kubelet_config = config.kubelet_config(layout, ca=ca.cert, serving_cert=node_pki.kubelet_serving.cert,
                                               serving_key=node_pki.kubelet_serving.key,
                                               healthz_port=_free_port())
        kubelet_config["podLogsDir"] = str(self.state_dir / "pod-logs")
        (layout.kubelet_root / "config.json").write_text(json.dumps(kubelet_config, indent=2))
        self._spawn("kubelet", [
            str(bins / "kubelet"),
            f"--config={layout.kubelet_root / 'config.json'}",
            f"--kubeconfig={kubelet_kubeconfig}",
            f"--root-dir={layout.kubelet_root}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in NODE_LABELS.items()),
            "--v=1",
        ])
        proxy_config = config.kube_proxy_config(proxy_kubeconfig, healthz_port=_free_port(),
                                                metrics_port=_free_port())
        (layout.pki / "kube-proxy.json").write_text(json.dumps(proxy_config, indent=2))
        self._spawn("kube-proxy", [str(bins / "kube-proxy"), f"--config={layout.pki / 'kube-proxy.json'}", "--v=1"])

        began = time.monotonic()
        self._poll(self._ready, f"node {NODE_NAME} Ready", deadline)
        self._log(f"{time.monotonic() - began:6.2f}s waiting for {NODE_NAME} Ready")
        if self.gpus:
            self.advertise_gpus(self.gpus)

    def import_images(self, timeout_s: float = 60) -> None:
        """Only containerd, long enough to import the images, then stopped: lets CI import the
        ~6 GB runtime image while other work runs (`start` then finds it imported). containerd
        listens on its own unix socket and makes no network: this may run outside the namespace."""
        layout = self.layout
        for folder in (layout.containerd_root, self.state_dir / "logs"):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(layout.containerd_state, ignore_errors=True)
        layout.containerd_config.write_text(config.containerd_toml(layout, pause_image(self.images)))
        self._spawn("containerd", ["containerd", "--config", str(layout.containerd_config)])
        try:
            self._poll(lambda: layout.containerd_socket.exists() and _containerd_answers(layout), "containerd",
                       time.monotonic() + timeout_s)
            self._import_images()
        finally:
            self._remove_containers()
            processes.stop(self._procs.pop("containerd"))
            self._kill_shims()

    def _import_images(self) -> None:
        have = set(_ctr(self.layout, "images", "list", "--quiet").split())
        for archive in self.images:
            if not archive.is_file():
                raise ControlPlaneError(f"image archive {archive} is gone (hack/images.sh build replaces them)")
        current = {archive: archive_refs(archive) for archive in self.images}
        # Earlier tags of the same images go first: nothing uses them once these are here, the
        # kubelet's image GC is off (they could not be pulled back), and the runtime image is
        # ~6 GB (12 with its unpacked snapshot): two tags at once can fill a small disk.
        wanted = {ref for refs in current.values() for ref in refs}
        names = {ref.rsplit(":", 1)[0] for ref in wanted}
        for ref in have - wanted:
            if ref.rsplit(":", 1)[0] in names:
                _ctr(self.layout, "images", "remove", "--sync", ref, check=False)
        for archive, refs in current.items():
            if refs and all(ref in have or f"docker.io/library/{ref}" in have for ref in refs):
                continue
            # Unpacked for the overlayfs snapshotter the CRI uses (ctr's default).
            _ctr(self.layout, "images", "import", str(archive))

    def _ready(self) -> bool:
        out = self.cp.kubectl("get", "node", NODE_NAME, "-o", "json", "--ignore-not-found", check=False)
        if not out.strip():
            return False
        node = json.loads(out)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions") or [])
        tainted = any(t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints") or [])
        return ready and not tainted

    def advertise_gpus(self, count: int) -> None:
        """Advertise `count` nvidia.com/gpu as an extended resource in the Node's status, as the
        Kubernetes docs describe for node-level extended resources, so the scheduler counts them.
        (On a GPU machine the NVIDIA device plugin does this and also hands the devices to the
        container; here nothing backs them: pods that ask for one run on the CPU.)"""
        # Allocatable too: the kubelet derives it from capacity, but only at its next status
        # update (up to nodeStatusReportFrequency later); the scheduler reads allocatable.
        patch = [{"op": "add", "path": f"/status/{part}/nvidia.com~1gpu", "value": str(count)}
                 for part in ("capacity", "allocatable")]
        self.cp.kubectl("patch", "node", NODE_NAME, "--subresource=status", "--type=json", "-p", json.dumps(patch))

    def _poll(self, check, what: str, deadline: float) -> None:
        while not check():
            for proc in self._procs.values():
                if not proc.alive():
                    raise ControlPlaneError(f"{proc.name} exited during start-up; last lines of {proc.log}:\n"
                                            f"{proc.log_tail()}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}; logs are in {self.state_dir / 'logs'}")
            time.sleep(0.2)

    # -- stop ---------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Pods first (through the kubelet, so the CNI and the volumes are torn down properly),
        then the daemons, then whatever containerd still holds, mounts and cgroups."""
        known = {p.name: p for p in processes.from_pid_files(self.state_dir)}
        known.update(self._procs)
        socket_up = self.layout.containerd_socket.exists() and "containerd" in known and known["containerd"].alive()
        if "kubelet" in known and known["kubelet"].alive() and self.cp.running():
            self.cp.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false",
                            check=False, timeout=30)
            deadline = time.monotonic() + 45
            while socket_up and time.monotonic() < deadline and self._running_tasks():
                time.sleep(0.5)
        for name in _NODE_PROCS:
            if name == "containerd" and socket_up:
                self._remove_containers()
            if name in known:
                processes.stop(known[name])
        self._procs.clear()
        self._kill_shims()
        _unmount_under(self.state_dir)
        _remove_cgroups("kubepods")

    def _running_tasks(self) -> list[str]:
        out = _ctr(self.layout, "tasks", "list", check=False, timeout=10)
        return [line.split()[0] for line in out.splitlines()[1:] if line.strip() and "RUNNING" in line]

    def _remove_containers(self) -> None:
        for task in self._running_tasks():
            _ctr(self.layout, "tasks", "kill", "--signal", "SIGKILL", task, check=False, timeout=10)
        time.sleep(0.5)
        for task in _ctr(self.layout, "tasks", "list", "--quiet", check=False, timeout=10).split():
            _ctr(self.layout, "tasks", "delete", "--force", task, check=False, timeout=10)
        for container in _ctr(self.layout, "containers", "list", "--quiet", check=False, timeout=10).split():
            _ctr(self.layout, "containers", "delete", container, check=False, timeout=10)

    def _kill_shims(self) -> None:
        """containerd-shim-runc-v2 processes of our containerd (they outlive it by design)."""
        mark = str(self.layout.containerd_socket)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and mark.encode() in argv:
                try:
                    os.kill(int(proc.name), 9)
                except ProcessLookupError:
                    pass


def _unmount_under(root: Path) -> None:
    """Unmount everything mounted below `root` (the kubelet's volumes, pod network namespaces,
    container root filesystems), deepest first."""
    root_s = str(root.resolve())
    for _ in range(3):
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == root_s or point.startswith(root_s + "/"):
                mounts.append(point)
        if not mounts:
            return
        for point in sorted(mounts, key=lambda p: p.count("/"), reverse=True):
            subprocess.run(["umount", "--lazy", point], capture_output=True)


def _remove_cgroups(name: str) -> None:
    """The kubelet's `kubepods` cgroups in every v1 hierarchy (and v2), once empty."""
    base = Path("/sys/fs/cgroup")
    for top in [base / name, *(p / name for p in base.iterdir() if p.is_dir())]:
        if not top.is_dir():
            continue
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


@dataclass
class RealCluster:
    """The control plane at the node's address plus the real node; run inside the namespace."""

    state_dir: Path
    images: list[Path] = field(default_factory=list)
    gpus: int = 2
    tie_to_parent: bool = False
    cp: ControlPlane = field(init=False)
    node: RealNode = field(init=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.cp = ControlPlane(self.state_dir / "control-plane", nodes=(), tie_to_parent=self.tie_to_parent,
                               address=NODE_IP)
        if not self.images:
            self.images = default_images()
        self.node = RealNode(self.cp, Layout(self.state_dir / "node"), self.images, gpus=self.gpus,
                             tie_to_parent=self.tie_to_parent)

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    def start(self) -> None:
        self.check_inside()
        self.cp.start()
        try:
            self.node.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.node.stop()
        self.cp.stop()

    def running(self) -> list[str]:
        return self.cp.running() + [p.name for p in processes.from_pid_files(self.node.state_dir) if p.alive()]

    def kubectl(self, *args: str, **kwargs) -> str:
        return self.cp.kubectl(*args, **kwargs)

    def image(self, name: str) -> str:
        """The image called `name` (`litgpt-runtime`, `litgpt-operator`, `pause`): the one this
        checkout's archives carry, else the only one of that name containerd holds."""
        named = lambda refs: [r for r in refs if r.rsplit(":", 1)[0].rsplit("/", 1)[-1] == name]  # noqa: E731
        for archive in self.images:
            if archive.is_file() and named(archive_refs(archive)):
                return named(archive_refs(archive))[0]
        held = named(_ctr(self.node.layout, "images", "list", "--quiet", check=False).split())
        if len(held) == 1:
            return held[0]
        raise ControlPlaneError(f"no image {name} among {[str(p) for p in self.images]} "
                                f"(containerd holds {held or 'none'}): run hack/images.sh build")

    @staticmethod
    def check_inside() -> None:
        name = os.environ.get(netns.ENV, netns.DEFAULT_NAME)
        if not netns.inside(name):
            raise ControlPlaneError(
                f"the real node runs inside the network namespace {name} only (so that nothing it starts "
                "listens on the host's network): start it with `python -m litgpt_devcluster.realnode up` "
                "or run a command inside with `python -m litgpt_devcluster.realnode run -- COMMAND`")
