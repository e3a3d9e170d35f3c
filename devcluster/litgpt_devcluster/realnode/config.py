"""The real node's configuration files, as pure functions of its layout (no I/O here).

containerd (CRI plugin, runc, the CNI plugins), the CNI bridge network, the kubelet's and
kube-proxy's KubeletConfiguration/KubeProxyConfiguration. `node.py` writes them and starts the
daemons; these builders are what the unit tests check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Addresses inside the node's network namespace (nothing outside it sees them).
NODE_IP = "10.250.0.1"  # on the namespace's `node0` link: the apiserver, kubelet, DNS, Hub
NODE_PREFIX = 24
POD_CIDR = "10.244.0.0/24"  # the CNI bridge `litgpt0`; its gateway 10.244.0.1 is the node
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
NODE_NAME = "realnode-0"


@dataclass(frozen=True)
class Layout:
    """Where the node keeps its files: everything under `state_dir`."""

    state_dir: Path

    @property
    def containerd_root(self) -> Path:  # content and snapshots: images survive a restart
        return self.state_dir / "containerd-root"

    @property
    def containerd_state(self) -> Path:
        return self.state_dir / "containerd-state"

    @property
    def containerd_socket(self) -> Path:
        return self.state_dir / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.state_dir / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.state_dir / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def volumes(self) -> Path:  # the hostPath provisioner's claim folders
        return self.state_dir / "volumes"

    @property
    def pki(self) -> Path:
        return self.state_dir / "node-pki"


def containerd_toml(layout: Layout, sandbox_image: str) -> str:
    """containerd 1.6's config (version 2). Its own root, state and socket, so it never touches
    a system containerd; the sandbox (pause) image is one we import, never pulled."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "version = 2",
        f'root = "{layout.containerd_root}"',
        f'state = "{layout.containerd_state}"',
        "[grpc]",
        f'  address = "{layout.containerd_socket}"',
        f"[{cri}]",
        f'  sandbox_image = "{sandbox_image}"',
        # Pod network namespaces are mounted under our state folder instead of /var/run/netns,
        # so stopping the node finds (and unmounts) every one it made.
        "  netns_mounts_under_state_dir = true",
        # The kubelet asks for negative OOM scores (-998 for the pause container, -997 for
        # Guaranteed pods); lowering a score needs CAP_SYS_RESOURCE, which the sandboxes this
        # runs in (CI's too) do not grant even to root, and runc then fails to start the
        # container. Clamp them at containerd's own score instead, as rootless setups do.
        "  restrict_oom_score_adj = true",
        f"[{cri}.containerd]",
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        # cgroupfs, as the kubelet's cgroupDriver: this machine has no systemd to delegate to.
        "  SystemdCgroup = false",
        f"[{cri}.cni]",
        f'  bin_dir = "{CNI_BIN_DIR}"',
        f'  conf_dir = "{layout.cni_conf_dir}"',
        "  max_conf_num = 1",
        "",
    ])


def cni_conflist(layout: Layout) -> str:
    """One bridge network for the pods (plus loopback, which containerd adds itself)."""
    return json.dumps({
        "cniVersion": "0.4.0",
        "name": "litgpt",
        "plugins": [{
            "type": "bridge",
            "bridge": "litgpt0",
            "isGateway": True,
            "ipMasq": False,  # nowhere to masquerade to: the namespace has no way out
            # A pod reaching a Service that lands on itself goes out and back on the bridge.
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_CIDR}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(layout.cni_ipam_dir),
            },
        }],
    }, indent=2)


def kubelet_config(layout: Layout, *, ca: Path, serving_cert: Path, serving_key: Path,
                   healthz_port: int, dns_ip: str = NODE_IP) -> dict:
    """The kubelet's KubeletConfiguration."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine runs cgroup v1 (no cgroup2 mount, no systemd). Kubernetes 1.35 made the
        # kubelet refuse cgroup v1 unless told otherwise (failCgroupV1 defaults to true): v1
        # is in maintenance mode upstream, but it is what this kernel gives us, so opt in.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",  # no systemd here; containerd's runc uses cgroupfs too
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca)},
        },
        # The apiserver (logs, exec) presents the admin certificate; only our CA's clients
        # get this far, so no per-request SubjectAccessReview.
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [dns_ip],
        # The host's resolv.conf names servers outside the namespace: pods get only ours.
        "resolvConf": "",
        "failSwapOn": False,
        # The kubelet protects itself with -999 by default: not allowed here (see containerd's
        # restrict_oom_score_adj), so leave its score alone rather than log a failure.
        "oomScoreAdj": 0,
        # A shared development machine: never evict pods for its disk or memory, and never
        # garbage-collect images (ours cannot be pulled again).
        "evictionHard": {"memory.available": "0%", "nodefs.available": "0%", "imagefs.available": "0%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "podCIDR": POD_CIDR,
        "maxPods": 50,
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "5s",
        "fileCheckFrequency": "5s",
        "shutdownGracePeriod": "0s",
        "enableServer": True,
        "localStorageCapacityIsolation": True,
    }


def kube_proxy_config(kubeconfig: Path, *, healthz_port: int, metrics_port: int) -> dict:
    """kube-proxy's KubeProxyConfiguration: iptables mode inside the node's namespace."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "clusterCIDR": POD_CIDR,
        "oomScoreAdj": 0,  # as the kubelet's: lowering it needs a capability we may not have
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        # Pods and Services share one bridge without br_netfilter: masquerading every Service
        # connection makes the replies come back through the node, where they are un-NATed.
        "iptables": {"masqueradeAll": True, "syncPeriod": "5s", "minSyncPeriod": "0s"},
        # nf_conntrack_max is global and read-only inside a network namespace: leave the
        # conntrack settings as they are instead of failing to write them.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
