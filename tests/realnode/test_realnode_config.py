"""The real node's configuration builders (what containerd, the kubelet and kube-proxy read)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from litgpt_devcluster.realnode import config


def test_containerd_keeps_to_its_own_folders_and_our_pause_image(tmp_path):
    layout = config.Layout(tmp_path)
    parsed = tomllib.loads(config.containerd_toml(layout, "localhost/pause:abc"))
    assert parsed["root"] == str(layout.containerd_root) and parsed["state"] == str(layout.containerd_state)
    assert parsed["grpc"]["address"] == str(layout.containerd_socket)
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "localhost/pause:abc"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == str(layout.cni_conf_dir)


def test_cni_bridge_has_no_masquerade_and_its_own_ipam_folder(tmp_path):
    layout = config.Layout(tmp_path)
    net = json.loads(config.cni_conflist(layout))
    bridge = net["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": config.POD_CIDR}]]
    assert Path(bridge["ipam"]["dataDir"]).is_relative_to(tmp_path)


def test_kubelet_opts_into_cgroup_v1_and_points_dns_at_the_node(tmp_path):
    layout = config.Layout(tmp_path)
    kc = config.kubelet_config(layout, ca=tmp_path / "ca", serving_cert=tmp_path / "c", serving_key=tmp_path / "k",
                               healthz_port=1234)
    assert kc["failCgroupV1"] is False and kc["cgroupDriver"] == "cgroupfs"
    assert kc["containerRuntimeEndpoint"] == f"unix://{layout.containerd_socket}"
    assert kc["clusterDNS"] == [config.NODE_IP] and kc["resolvConf"] == ""
    assert kc["address"] == config.NODE_IP and kc["healthzBindAddress"] == "127.0.0.1"
    assert kc["authentication"]["anonymous"]["enabled"] is False


def test_kube_proxy_binds_inside_and_leaves_conntrack_alone(tmp_path):
    pc = config.kube_proxy_config(tmp_path / "kubeconfig", healthz_port=1, metrics_port=2)
    assert pc["mode"] == "iptables" and pc["iptables"]["masqueradeAll"] is True
    assert pc["healthzBindAddress"] == "127.0.0.1:1" and pc["metricsBindAddress"] == "127.0.0.1:2"
    assert pc["conntrack"]["maxPerCore"] == 0
