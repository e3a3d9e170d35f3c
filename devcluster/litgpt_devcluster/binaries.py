"""Where the control plane's binaries live, and whether they are installed.

`hack/control-plane.sh install` builds them into `bin_dir()`; everything else only looks.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = REPO_ROOT / "hack" / "control-plane"
# Everything build.sh builds: "installed" means all of them, the real node's too.
BINARIES = (
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm",
    "kubelet", "kube-proxy",
)
INSTALL_HINT = "run hack/control-plane.sh install"


class ControlPlaneError(RuntimeError):
    """The control plane could not be installed, started or reached; the message says why."""


class BinariesMissing(ControlPlaneError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("LITGPT_CACHE") or Path.home() / ".cache" / "litgpt-operator")


def binary_version() -> str:
    """`<kubernetes version>-<hash of the pins and the build script>`: a new pin, a new folder."""
    go_mod = (BUILD_DIR / "go.mod").read_text()
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", go_mod, re.M)
    if match is None:
        raise ControlPlaneError(f"{BUILD_DIR / 'go.mod'} does not pin k8s.io/kubernetes")
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "build.sh"):
        digest.update((BUILD_DIR / name).read_bytes())
    return f"{match.group(1)}-{digest.hexdigest()[:10]}"


def bin_dir() -> Path:
    """Where `install` puts the binaries (`LITGPT_CONTROL_PLANE_BIN` overrides)."""
    override = os.environ.get("LITGPT_CONTROL_PLANE_BIN")
    return Path(override) if override else cache_root() / "bin" / binary_version()


def installed_bin_dir() -> Path:
    """The binary folder, or BinariesMissing with the command that fixes it."""
    where = bin_dir()
    missing = [name for name in BINARIES if not os.access(where / name, os.X_OK)]
    if missing:
        raise BinariesMissing(
            f"Kubernetes binaries not found in {where} (missing: {', '.join(missing)}): {INSTALL_HINT}"
        )
    return where


def binary(name: str) -> Path:
    """Path of one installed binary, e.g. `binary("helm")`."""
    return installed_bin_dir() / name
