"""The real node from the command line (`hack/control-plane.sh up --real-node` calls `up`).

    python -m litgpt_devcluster.realnode check          can this machine run it? (exit 0: yes; else why not)
    python -m litgpt_devcluster.realnode up             start it in the background in its network namespace
    python -m litgpt_devcluster.realnode down           stop everything and remove the namespace
    python -m litgpt_devcluster.realnode run -- CMD...  start it, run CMD inside the namespace, stop it
    python -m litgpt_devcluster.realnode inside -- CMD  run CMD in a fresh namespace (CMD starts the cluster:
                                                         the tests' fixture), then clean up and remove it
    python -m litgpt_devcluster.realnode exec -- CMD    run CMD inside the running one's namespace
    python -m litgpt_devcluster.realnode shell          print how to run kubectl in it
    python -m litgpt_devcluster.realnode import         import the images into the node's containerd now
                                                         (the next start finds them; CI overlaps it with tests)

Needs root (network namespaces, mounts, cgroups), containerd, runc, the CNI plugins, iptables,
nsenter, and the binaries of `hack/control-plane.sh install`; the images of `hack/images.sh build`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from litgpt_devcluster.binaries import BinariesMissing, ControlPlaneError, cache_root, installed_bin_dir
from litgpt_devcluster.realnode import netns
from litgpt_devcluster.realnode.config import CNI_BIN_DIR
from litgpt_devcluster.realnode.node import IMAGES_ENV

TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "nsenter", "umount")
APT_PACKAGES = "containerd runc containernetworking-plugins iptables util-linux iproute2"


def default_state_dir() -> Path:
    return cache_root() / "run" / "realnode"


def machine_problem() -> str | None:
    """Why this machine cannot run the real node, or None if it can."""
    if os.geteuid() != 0:
        return "it needs root (network namespaces, mounts and cgroups for containers)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    missing += [f"{CNI_BIN_DIR}/{p}" for p in ("bridge", "host-local", "loopback") if not Path(CNI_BIN_DIR, p).exists()]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install {APT_PACKAGES})"
    try:
        installed_bin_dir()
    except BinariesMissing as error:
        return str(error)
    return runc_problem()


def runc_problem() -> str | None:
    """Start one real container (read-only /usr of this machine, `/bin/true`): proves that runc
    can make namespaces and cgroups here."""
    with tempfile.TemporaryDirectory(prefix="litgpt-runc-check-") as tmp:
        bundle = Path(tmp)
        rootfs = bundle / "rootfs"
        (rootfs / "usr").mkdir(parents=True)
        (rootfs / "proc").mkdir()
        for link in ("bin", "lib", "lib64"):
            (rootfs / link).symlink_to(f"usr/{link}")
        spec = subprocess.run(["runc", "spec"], cwd=bundle, capture_output=True, text=True)
        if spec.returncode != 0:
            return f"`runc spec` failed: {spec.stderr.strip()}"
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["root"] = {"path": "rootfs", "readonly": True}
        cfg["process"].update(args=["/bin/true"], terminal=False)
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] == "/proc"]
        cfg["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
        (bundle / "config.json").write_text(json.dumps(cfg))
        run = subprocess.run(["runc", "--root", str(bundle / "state"), "run", "--bundle", str(bundle),
                              f"litgpt-check-{os.getpid()}"], capture_output=True, text=True, timeout=60)
        if run.returncode != 0:
            return f"runc cannot start a container here: {run.stderr.strip()[-500:]}"
    return None


def _inside(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    return subprocess.run(netns.enter_argv(name) + argv, env=env).returncode


def _self(name: str, state_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "litgpt_devcluster.realnode", "--netns", name, "--state-dir", str(state_dir), *args]


def _env(name: str, state_dir: Path) -> dict[str, str]:
    from litgpt_devcluster.binaries import REPO_ROOT

    return dict(os.environ, **{netns.ENV: name, "KUBECONFIG": str(state_dir / "control-plane" / "kubeconfig"),
                               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "devcluster"),
                                                                           os.environ.get("PYTHONPATH")]))})


def how_to_use(name: str, state_dir: Path) -> str:
    kubectl = installed_bin_dir() / "kubectl"
    kubeconfig = state_dir / "control-plane" / "kubeconfig"
    return (f"the cluster lives in network namespace {name}; run kubectl there:\n"
            f"    nsenter --net=/run/netns/{name} -- {kubectl} --kubeconfig {kubeconfig} get pods -A -o wide\n"
            f"or a shell in it: nsenter --net=/run/netns/{name} -- env KUBECONFIG={kubeconfig} "
            f"PATH={kubectl.parent}:$PATH bash\n"
            f"stop it with: python -m litgpt_devcluster.realnode down   (or hack/control-plane.sh down --real-node)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m litgpt_devcluster.realnode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", default=os.environ.get(netns.ENV, netns.DEFAULT_NAME), help="namespace name")
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    parser.add_argument("--images", type=Path, default=None,
                        help="folder of image archives to import (default: where hack/images.sh exports them)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="exit 0 if this machine can run the real node; else say why")
    sub.add_parser("up", help="start everything in the background")
    sub.add_parser("down", help="stop everything and remove the namespace")
    sub.add_parser("shell", help="print how to use the running cluster")
    sub.add_parser("import", help="import the images into the node's containerd, then stop it")
    for command, text in (("run", "start, run a command inside the namespace, stop"),
                          ("exec", "run a command inside the running real node's namespace"),
                          ("inside", "run a command inside a fresh namespace, then clean up")):
        sub.add_parser(command, help=text).add_argument("cmd", nargs=argparse.REMAINDER)
    sub.add_parser("start-inside", help=argparse.SUPPRESS)
    sub.add_parser("stop-inside", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    name, state = args.netns, args.state_dir
    if args.images:  # for everything started below, in this process or inside the namespace
        os.environ[IMAGES_ENV] = str(args.images.resolve())

    try:
        if args.command == "check":
            problem = machine_problem()
            print(f"real node: not possible here: {problem}" if problem else "real node: this machine can run it",
                  file=sys.stderr)
            return 1 if problem else 0
        if args.command == "start-inside":
            from litgpt_devcluster.realnode.node import RealCluster

            began = time.monotonic()
            cluster = RealCluster(state)
            cluster.start()
            print(f"real node up in {time.monotonic() - began:.0f}s (images: "
                  f"{', '.join(p.name for p in cluster.images)})", file=sys.stderr)
            return 0
        if args.command == "stop-inside":
            from litgpt_devcluster.realnode.node import RealCluster

            RealCluster(state).stop()
            return 0
        if args.command == "import":
            from litgpt_devcluster.realnode.node import RealCluster

            problem = machine_problem()
            if problem:
                raise ControlPlaneError(f"the real node cannot run on this machine: {problem}")
            if netns.exists(name):
                raise ControlPlaneError(f"the real node is running (network namespace {name}): its start "
                                        "imported the images already")
            began = time.monotonic()
            cluster = RealCluster(state)
            cluster.node.import_images()
            print(f"images imported in {time.monotonic() - began:.0f}s: "
                  f"{', '.join(p.name for p in cluster.images)}", file=sys.stderr)
            return 0
        if args.command == "shell":
            print(how_to_use(name, state))
            return 0 if netns.exists(name) else 1
        if args.command == "exec":
            if not netns.exists(name):
                raise ControlPlaneError(f"no real node is running (no network namespace {name}): "
                                        "start it with hack/control-plane.sh up --real-node")
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return _inside(name, cmd, _env(name, state))
        if args.command == "down":
            if netns.exists(name):
                _inside(name, _self(name, state, "stop-inside"), _env(name, state))
                netns.delete(name)
                print(f"stopped; network namespace {name} removed", file=sys.stderr)
            else:
                print(f"nothing running (no network namespace {name})", file=sys.stderr)
            return 0
        # up / run: a fresh namespace, the cluster started inside it
        problem = machine_problem()
        if problem:
            raise ControlPlaneError(f"the real node cannot run on this machine: {problem}")
        netns.create(name)
        try:
            if args.command != "inside" and _inside(
                    name, _self(name, state, "start-inside"), _env(name, state)) != 0:
                raise ControlPlaneError(f"the real node did not start; logs: {state}/*/logs")
            if args.command == "up":
                print(how_to_use(name, state), file=sys.stderr)
                return 0
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                raise ControlPlaneError("run: give a command after --")
            return _inside(name, cmd, _env(name, state))
        except BaseException:
            _inside(name, _self(name, state, "stop-inside"), _env(name, state))
            netns.delete(name)
            raise
        finally:
            if args.command in ("run", "inside") and netns.exists(name):
                _inside(name, _self(name, state, "stop-inside"), _env(name, state))
                netns.delete(name)
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
