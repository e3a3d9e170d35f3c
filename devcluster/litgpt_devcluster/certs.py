"""Certificates and keys for the local control plane, made with the `openssl` command line.

One throw-away CA signs the apiserver's serving certificate and one client certificate per
identity (admin, controller-manager, scheduler); the service-account token key pair is separate.
EC P-256 keys: generating them takes milliseconds, RSA-2048 takes a noticeable fraction of a
second each on a busy 2-core box.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from litgpt_devcluster.addresses import KUBERNETES_SERVICE_IP

# The names a client inside or outside the cluster may use for the apiserver; pods reach it at the
# `kubernetes` Service's address.
SERVING_SANS = (
    "IP:127.0.0.1",
    f"IP:{KUBERNETES_SERVICE_IP}",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Every file the control plane's components and clients need."""

    ca: KeyPair
    serving: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    service_account_key: Path
    service_account_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _ec_args(key: Path) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]


def _make_ca(dir: Path) -> KeyPair:
    pair = KeyPair(dir / "ca.crt", dir / "ca.key")
    _openssl(
        "req", "-x509", *_ec_args(pair.key), "-out", str(pair.cert), "-days", "3650",
        "-subj", "/CN=litgpt-local-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=dir,
    )
    return pair


def _make_leaf(dir: Path, ca: KeyPair, name: str, subject: str, extensions: list[str]) -> KeyPair:
    pair = KeyPair(dir / f"{name}.crt", dir / f"{name}.key")
    csr = dir / f"{name}.csr"
    ext = dir / f"{name}.ext"
    _openssl("req", "-new", *_ec_args(pair.key), "-subj", subject, "-out", str(csr), cwd=dir)
    ext.write_text("\n".join(["basicConstraints=CA:FALSE", *extensions]) + "\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "3650", "-extfile", str(ext), "-out", str(pair.cert),
        cwd=dir,
    )
    csr.unlink()
    ext.unlink()
    return pair


def _client(dir: Path, ca: KeyPair, name: str, user: str, group: str | None = None) -> KeyPair:
    # Kubernetes reads the user name from CN and the groups from O.
    subject = f"/CN={user}" + (f"/O={group}" if group else "")
    usage = ["keyUsage=critical,digitalSignature,keyEncipherment", "extendedKeyUsage=clientAuth"]
    return _make_leaf(dir, ca, name, subject, usage)


def _server(dir: Path, ca: KeyPair, name: str, subject: str, sans: list[str]) -> KeyPair:
    return _make_leaf(dir, ca, name, subject, [
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth",
        "subjectAltName=" + ",".join(sans),
    ])


@dataclass(frozen=True)
class NodePki:
    """A real node's identities: the kubelet's client and serving pairs, kube-proxy's client."""

    kubelet_client: KeyPair
    kubelet_serving: KeyPair
    kube_proxy: KeyPair


def make_node_pki(dir: Path, ca: KeyPair, node: str, node_ip: str) -> NodePki:
    """Certificates for the real node `node` at `node_ip`, signed by the control plane's CA."""
    return NodePki(
        # The Node authorizer knows a kubelet by this user and group: it may then read and
        # write only its own Node and what its pods need.
        kubelet_client=_client(dir, ca, "kubelet-client", f"system:node:{node}", "system:nodes"),
        # The apiserver reaches the kubelet (logs, exec) at the node's InternalIP.
        kubelet_serving=_server(dir, ca, "kubelet-serving", f"/CN={node}", [f"IP:{node_ip}", f"DNS:{node}"]),
        # The bootstrap policy binds system:node-proxier to this user.
        kube_proxy=_client(dir, ca, "kube-proxy", "system:kube-proxy"),
    )


def make_pki(dir: Path, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Create a fresh PKI in `dir` (which must exist) and return where each file is.
    `extra_ips`: more addresses the apiserver is reached at (the real node's address)."""
    ca = _make_ca(dir)
    serving = _server(dir, ca, "apiserver", "/CN=kube-apiserver",
                      [*SERVING_SANS, *(f"IP:{ip}" for ip in extra_ips)])
    sa_key, sa_pub = dir / "sa.key", dir / "sa.pub"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(sa_key), cwd=dir)
    _openssl("ec", "-in", str(sa_key), "-pubout", "-out", str(sa_pub), cwd=dir)
    return Pki(
        ca=ca,
        serving=serving,
        # system:masters bypasses RBAC: the admin of a fresh cluster, as kubeadm's admin.conf.
        admin=_client(dir, ca, "admin", "admin", "system:masters"),
        # The identities the bootstrap RBAC policy already grants what these components need.
        controller_manager=_client(dir, ca, "controller-manager", "system:kube-controller-manager"),
        scheduler=_client(dir, ca, "scheduler", "system:kube-scheduler"),
        service_account_key=sa_key,
        service_account_pub=sa_pub,
    )
