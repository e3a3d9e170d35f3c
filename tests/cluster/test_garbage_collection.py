"""The garbage collector is real: deleting an owner removes its dependents, and deleting a
Deployment's pods goes through the node agent's graceful-deletion path."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from litgpt_devcluster.waiting import wait_for

pytestmark = pytest.mark.cluster


def _gone(read) -> bool:
    try:
        read()
    except ApiException as error:
        return error.status == 404
    return False


def test_deleting_owner_removes_dependent(kube, namespace):
    core = client.CoreV1Api(kube.api_client())
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}, "data": {"a": "1"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "dependent", "ownerReferences": [reference]}, "data": {"b": "2"}}
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "bystander"}})

    core.delete_namespaced_config_map("owner", namespace)

    wait_for(lambda: _gone(lambda: core.read_namespaced_config_map("dependent", namespace)), "dependent to be collected")
    assert core.read_namespaced_config_map("bystander", namespace).metadata.name == "bystander"


def test_deleting_deployment_removes_replicaset_and_pods(kube, namespace):
    apps = client.AppsV1Api(kube.api_client())
    core = client.CoreV1Api(kube.api_client())
    deployment = {
        "metadata": {"name": "doomed"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "doomed"}},
            "template": {
                "metadata": {"labels": {"app": "doomed"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }
    apps.create_namespaced_deployment(namespace, deployment)
    wait_for(lambda: (apps.read_namespaced_deployment("doomed", namespace).status.ready_replicas or 0) == 2,
             "2 ready replicas")

    apps.delete_namespaced_deployment("doomed", namespace, propagation_policy="Foreground")

    # Foreground deletion: the Deployment goes only after its ReplicaSet, which goes only after
    # its pods — which the agent must stop and finish deleting (they would stay Terminating).
    wait_for(lambda: _gone(lambda: apps.read_namespaced_deployment("doomed", namespace)), "deployment gone")
    assert apps.list_namespaced_replica_set(namespace, label_selector="app=doomed").items == []
    assert core.list_namespaced_pod(namespace, label_selector="app=doomed").items == []
