"""The network namespace the whole real-node cluster lives in.

`ip netns add` makes a namespace with only a loopback; we add a veth pair `node0`/`node0p`
holding the node's address (the kernel here has no dummy links) and a route for the Service
range, so local clients' connections to ClusterIPs reach kube-proxy's NAT rules. There is no
default route: nothing in the namespace can send a packet anywhere outside it.

Processes enter it with `nsenter --net=...` only (not `ip netns exec`, which also makes a new
mount namespace): the kubelet's volume mounts must be seen by containerd and runc, and by the
tests reading claim folders.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from litgpt_devcluster.addresses import SERVICE_CIDR
from litgpt_devcluster.realnode.config import NODE_IP, NODE_PREFIX

DEFAULT_NAME = "litgpt-realnode"
ENV = "LITGPT_REAL_NODE_NETNS"  # set for commands run inside it (tests check it)


class NetnsError(RuntimeError):
    pass


def path(name: str) -> Path:
    return Path("/run/netns") / name


def exists(name: str) -> bool:
    return path(name).exists()


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")


def create(name: str) -> None:
    """Create the namespace with loopback up and the node's link; an error if it exists."""
    if exists(name):
        raise NetnsError(f"network namespace {name} exists already (a real node is running?): "
                         "stop it with `python -m litgpt_devcluster.realnode down`")
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "node0", "type", "veth", "peer", "name", "node0p")
        _ip("-n", name, "link", "set", "node0p", "up")
        _ip("-n", name, "link", "set", "node0", "up")
        _ip("-n", name, "addr", "add", f"{NODE_IP}/{NODE_PREFIX}", "dev", "node0")
        _ip("-n", name, "route", "add", SERVICE_CIDR, "dev", "node0")
    except NetnsError:
        delete(name)
        raise


def delete(name: str) -> None:
    if exists(name):
        _ip("netns", "delete", name)


def enter_argv(name: str) -> list[str]:
    """The prefix that runs a command inside the namespace."""
    return ["nsenter", f"--net={path(name)}", "--"]


def inside(name: str) -> bool:
    """True if this process is in namespace `name`."""
    try:
        here, there = os.stat("/proc/self/ns/net"), os.stat(path(name))
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
