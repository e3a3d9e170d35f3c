"""The end-to-end flow on the real node: the chart's operator image and the runtime image run by
the kubelet, containerd and runc, as user 1000 on read-only root filesystems; the model comes
from the local Hub into a claim of the hostPath provisioner; the finetuned model is served and
answered through its Service's ClusterIP; two pretraining pods find each other through the
cluster DNS; a broken dataset fails; deleting everything leaves no container running.

The steps are `litgpt_devcluster.e2e`'s (`make demo` runs the same code on the real node).
"""

from __future__ import annotations

import json

import pytest

from litgpt_devcluster import e2e
from litgpt_devcluster.e2e_nodes import RealNode
from litgpt_devcluster.realnode.config import NODE_NAME, POD_CIDR

POD_PREFIX = POD_CIDR.rsplit(".", 2)[0] + "."
# The first test of a session also starts the node, which imports a new image tag (~6 GB: minutes).
pytestmark = pytest.mark.timeout(1800)

# The chart's runtime security context (operator/litgpt_operator/builders/common.py).
LOCKED_DOWN = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}


@pytest.fixture
def flow(real_cluster, tmp_path):
    names = e2e.Names(namespace="real-e2e", operator_namespace="real-e2e-op", release="real-e2e-op")
    flow = e2e.Flow(real_cluster.cp, tmp_path, names=names, say=print, node=RealNode(real_cluster), timeout_s=600)
    flow.create_namespaces()
    yield flow
    flow.stop_hub()
    flow.uninstall_chart()
    for ns in (names.namespace, names.operator_namespace):
        real_cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def pods_table(flow) -> list[dict]:
    """Name, pod IP, node and image of every pod of the flow (what `get pods -o wide` shows, plus
    the image, which -o wide leaves out for pods)."""
    out = []
    for ns in (flow.names.namespace, flow.names.operator_namespace):
        for pod in flow.items("pods", namespace=ns):
            out.append({"name": pod["metadata"]["name"], "ip": pod["status"].get("podIP"),
                        "node": pod["spec"].get("nodeName"), "image": pod["spec"]["containers"][0]["image"],
                        "security": pod["spec"]["containers"][0].get("securityContext") or {},
                        "pod_security": pod["spec"].get("securityContext") or {}})
    return out


def assert_locked_down(row: dict) -> None:
    user = row["security"].get("runAsUser", row["pod_security"].get("runAsUser"))
    assert user == 1000, row
    for key, value in LOCKED_DOWN.items():
        assert row["security"].get(key) == value, row
    assert "ALL" in (row["security"].get("capabilities") or {}).get("drop", []), row


def test_the_flow_on_the_real_node(flow, real_cluster):
    names = flow.names
    runtime_image, operator_image = real_cluster.image("litgpt-runtime"), real_cluster.image("litgpt-operator")

    # 1. the chart: the operator image runs as a pod on the real node, with a pod IP
    hub_url = flow.start_hub()
    pod = flow.install_chart(hub_url)
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["spec"]["containers"][0]["image"] == operator_image
    assert pod["status"]["podIP"].startswith(POD_PREFIX)

    # 2. the model from the local Hub into a claim; the FinetuneJob applied with it waits for it
    flow.write_datasets()
    flow.apply_model_and_finetune()
    checkpoint = flow.model_ready()
    assert (checkpoint / "model.safetensors").is_file()
    assert flow.hub.count("GET", "model.safetensors") >= 1, "the model did not come from the local Hub"

    # 3. the finetune (the runtime image, user 1000, read-only root) succeeds
    output = flow.finetune_succeeded()
    assert (output / "hyperparameters.yaml").is_file()

    # 4. served from the finetune's output (and the base model beside it); the openai client
    # answers through the ClusterIP: the finetuned model gives the trained answer, the base not
    flow.apply_server({"finetuneRef": {"name": names.finetune}})
    flow.apply_server({"modelRef": {"name": names.model}}, name=names.base_server)
    address = flow.server_address()
    service = json.loads(flow.kubectl("get", "service", flow.status("ModelServer", names.server)["serviceName"],
                                      "-n", names.namespace, "-o", "json"))
    assert address.startswith(f"http://{service['spec']['clusterIP']}:")
    finetuned, base = flow.finetuned_and_base_answers()
    assert finetuned.strip() == e2e.TRAINED_ANSWER, (finetuned, base)
    assert base.strip() != e2e.TRAINED_ANSWER, (finetuned, base)

    print(flow.kubectl("get", "pods", "-A", "-o", "wide"))
    table = pods_table(flow)
    print("\n".join(f"{r['name']:50} {r['ip']:15} {r['image']}" for r in table))
    for row in table:
        assert row["node"] == NODE_NAME and (row["ip"] or "").startswith(POD_PREFIX), row
        assert row["image"] in (runtime_image, operator_image), row
        assert_locked_down(row)
    assert {r["image"] for r in table} == {runtime_image, operator_image}

    # kubectl exec into the server: user 1000, and the root filesystem refuses writes while the
    # volumes the runtime uses take them
    server_pod = next(p for p in flow.items("pods", "-l", f"app.kubernetes.io/instance={names.server}")
                      if p["status"].get("phase") == "Running")["metadata"]["name"]
    exec_ = lambda *argv: flow.kubectl("exec", server_pod, "-n", names.namespace, "--", *argv, check=False)  # noqa: E731
    assert exec_("id", "-u").strip() == "1000"
    probe = ("import sys\n"
             "for path in ('/probe', '/opt/venv/probe', sys.prefix + '/lib/probe', '/tmp/probe'):\n"
             "    try:\n"
             "        open(path, 'w').close(); print(path, 'written')\n"
             "    except OSError as error:\n"
             "        print(path, error.strerror)\n")
    report = exec_("python", "-c", probe)
    assert "/probe Read-only file system" in report, report
    assert "/opt/venv/probe Read-only file system" in report, report
    assert "/tmp/probe written" in report, report  # an emptyDir volume

    # 5. pretraining on 2 pods: rank 1 reaches rank 0 by its DNS name (the headless Service)
    flow.apply_pretrain()
    status, pods = flow.pretrain_succeeded()
    assert len(pods) == 2
    for p in pods:
        master = next(e["value"] for e in p["spec"]["containers"][0]["env"] if e["name"] == "MASTER_ADDR")
        assert master.startswith(f"{status['jobName']}-0."), master
        assert p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        assert p["status"]["podIP"].startswith(POD_PREFIX)
    out = flow.claim_folder(status["outputClaimName"]) / status["outputPath"]
    assert any(out.rglob(".litgpt_complete.json")), f"no pretrained checkpoint under {out}"

    # 6. a broken dataset: Failed, naming the problem; the server still answers
    flow.apply_broken()
    failed = flow.broken_failed()
    assert "broken.json" in failed.get("message", ""), failed
    assert flow.ask(address)[1].strip(), "the server stopped answering"

    # 7. delete everything: no objects, claims, claim folders or running containers left
    assert flow.leftovers().get("containers"), "the server's container should be running until now"
    flow.delete_all()
    flow.nothing_left()
    assert flow.leftovers() == {}
