"""The dev cluster's Service range (`litgpt_devcluster.addresses`, one definition for the API
server's flag, the real node's route and the serving certificate) holds the scale benchmark's
1,000 objects: the /24 it replaced held 253 Services."""

from __future__ import annotations

import ipaddress

import pytest
from kubernetes import client

from litgpt_devcluster import certs
from litgpt_devcluster.addresses import KUBERNETES_SERVICE_IP, SERVICE_CIDR

pytestmark = pytest.mark.cluster


def test_the_range_fits_the_benchmark_and_the_certificate_names_its_first_address():
    assert ipaddress.ip_network(SERVICE_CIDR).num_addresses - 2 >= 1000
    assert f"IP:{KUBERNETES_SERVICE_IP}" in certs.SERVING_SANS


def test_the_api_server_allocates_from_that_range(kube, namespace):
    core = client.CoreV1Api(kube.api_client())
    assert core.read_namespaced_service("kubernetes", "default").spec.cluster_ip == KUBERNETES_SERVICE_IP
    # An address past what the old /24 held: the API server accepts it only if its range is ours.
    beyond = str(ipaddress.ip_network(SERVICE_CIDR)[300])
    service = {"metadata": {"name": "far"}, "spec": {"clusterIP": beyond, "ports": [{"port": 80}]}}
    assert core.create_namespaced_service(namespace, service).spec.cluster_ip == beyond
