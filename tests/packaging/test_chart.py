"""The Helm chart: generated parts current, lint-clean, renders what the operator needs (settings,
least RBAC, peering for HA), refuses bad values, and its output is accepted by the real API server.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from litgpt_operator import rbac
from litgpt_operator.settings import ENV_PREFIX, Settings

from packaging_support import CHART, REPO, run

SYNC = REPO / "hack" / "sync-chart-crds.py"
# `helm template` renders offline: it must be told the cluster version (the chart needs >= 1.30).
KUBE_VERSION = ("--kube-version", "v1.36.3")
# Settings the chart deliberately leaves at their defaults (test-only knobs).
NOT_IN_CHART = {"watch_server_timeout_seconds"}


def sync_module():
    spec = importlib.util.spec_from_file_location("sync_chart_crds", SYNC)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- generated parts -----------------------------------------------------------------------------

def test_chart_crds_are_exact_copies_of_the_generated_ones():
    sources = sorted((REPO / "crds").glob("*.yaml"))
    assert sources, "crds/ is empty: run `make crds`"
    for source in sources:
        copy = CHART / "crds" / source.name
        assert copy.exists() and copy.read_bytes() == source.read_bytes(), (
            f"{copy.relative_to(REPO)} differs from {source.relative_to(REPO)}: run python hack/sync-chart-crds.py")
    extra = {p.name for p in (CHART / "crds").glob("*.yaml")} - {p.name for p in sources}
    assert extra == {"kopf.dev_peerings.yaml"}


def test_generated_chart_files_are_current():
    stale = sync_module().stale_files()
    assert not stale, f"out of date: {[str(p.relative_to(REPO)) for p in stale]}; run python hack/sync-chart-crds.py"


def test_rules_file_holds_every_operator_rule_once():
    rules = yaml.safe_load((CHART / "rbac-rules.yaml").read_text())
    flat = {(g, r, v) for key in ("namespaced", "cluster") for rule in rules[key]
            for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    wanted = {(g, r, v) for groups, resources, verbs, _ in rbac.RULES for g in groups for r in resources for v in verbs}
    assert flat == wanted


# --- helm lint / template ------------------------------------------------------------------------

NAMESPACED = {"watch": {"namespaces": ["team-a", "team-b"]}}


def values_file(tmp_path: Path, values: dict) -> str:
    path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def render(helm_bin: str, tmp_path: Path, values: dict | None = None, namespace: str = "litgpt-system",
           release: str = "lo") -> list[dict]:
    result = run(helm_bin, "template", release, str(CHART), *KUBE_VERSION, "-n", namespace,
                 "-f", values_file(tmp_path, values or {}))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def container_env(docs: list[dict]) -> dict[str, str]:
    (deployment,) = by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("values", [{}, NAMESPACED, {"replicaCount": 1, "peering": {"enabled": False}},
                                    {"metrics": {"serviceMonitor": {"enabled": True}}},
                                    {"grafanaDashboard": {"enabled": True}},
                                    {"metrics": {"modelServerPodMonitor": {"enabled": True}}}],
                         ids=["default", "namespaced", "single", "servicemonitor", "dashboard", "podmonitor"])
def test_helm_lint_is_clean(helm_bin, tmp_path, values):
    result = run(helm_bin, "lint", "--strict", str(CHART), "-f", values_file(tmp_path, values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_the_operator_pod_gets_no_service_links(helm_bin, tmp_path):
    """Under the release name litgpt-operator the chart's metrics Service is litgpt-operator-metrics,
    whose service links (LITGPT_OPERATOR_METRICS_PORT=tcp://...) would land on the operator's
    settings: the operator then refused to start (found by make demo on the real node, whose
    kubelet injects them; the exec node does not)."""
    docs = render(helm_bin, tmp_path, release="litgpt-operator")
    assert any(d["metadata"]["name"] == "litgpt-operator-metrics" for d in by_kind(docs, "Service"))
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_default_render_is_ha_cluster_wide_and_least_privileged(helm_bin, tmp_path):
    docs = render(helm_bin, tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding",
                            "Service", "Deployment", "ClusterKopfPeering", "PodDisruptionBudget"])
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["image"] == "ghcr.io/litgpt-operator/litgpt-operator:0.1.0"
    assert {p["name"] for p in container["ports"]} == {"health", "metrics"}

    settings = Settings.from_env(container_env(docs))  # what the operator validates at start-up
    assert settings.clusterwide and settings.standalone is False
    assert settings.peering_name == by_kind(docs, "ClusterKopfPeering")[0]["metadata"]["name"]

    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    rules = [rule for role in roles.values() for rule in role["rules"]]
    # nothing beyond the operator's rules and kopf's cluster peering
    allowed = {(g, r) for groups, resources, _, _ in rbac.RULES for g in groups for r in resources}
    allowed.add(("kopf.dev", "clusterkopfpeerings"))
    granted = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == allowed
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in rules)
    assert not any(r in ("secrets",) for rule in rules for r in rule["resources"]), "the operator never reads secrets"


def test_namespaced_render_binds_only_the_watched_namespaces(helm_bin, tmp_path):
    docs = render(helm_bin, tmp_path, NAMESPACED)
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(b["roleRef"]["name"].endswith("-namespaced") for b in bindings)
    assert [b["metadata"]["name"] for b in by_kind(docs, "ClusterRoleBinding")] == ["lo-litgpt-operator-cluster"]
    assert sorted(p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")) == ["team-a", "team-b"]
    assert not by_kind(docs, "ClusterKopfPeering")
    settings = Settings.from_env(container_env(docs))
    assert settings.namespaces == ["team-a", "team-b"] and not settings.clusterwide
    cluster_role = next(r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-cluster"))
    assert all(r != "clusterkopfpeerings" for rule in cluster_role["rules"] for r in rule["resources"])


def test_every_setting_is_a_chart_value(helm_bin, tmp_path):
    """A new operator setting must reach the chart (or be declared test-only here)."""
    values = {"runtime": {"hfEndpoint": "http://hub-mirror:8080", "imagePullSecrets": ["regcred"],
                          "defaultResources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}},
              "operator": {"logLevel": "DEBUG", "logTailLines": 7}, "fitCheck": {"gpuMemoryGB": 79.6}}
    env = container_env(render(helm_bin, tmp_path, values))
    set_by_chart = {name[len(ENV_PREFIX):].lower() for name in env if name.startswith(ENV_PREFIX)}
    assert set_by_chart == set(Settings.model_fields) - NOT_IN_CHART
    settings = Settings.from_env(env)
    assert settings.hf_endpoint == "http://hub-mirror:8080"
    assert settings.image_pull_secrets == ["regcred"]
    assert settings.default_resources.model_dump(exclude_none=True)["limits"] == {"memory": "8Gi"}
    assert settings.log_level == "DEBUG" and settings.log_tail_lines == 7
    assert settings.gpu_memory_gb == 79.6 and settings.metrics_port == 9090


def test_single_replica_runs_standalone_without_peering_objects(helm_bin, tmp_path):
    docs = render(helm_bin, tmp_path, {"replicaCount": 1, "peering": {"enabled": False}})
    assert Settings.from_env(container_env(docs)).standalone is True
    assert not by_kind(docs, "ClusterKopfPeering") and not by_kind(docs, "PodDisruptionBudget")
    rules = [rule for role in by_kind(docs, "ClusterRole") for rule in role["rules"]]
    assert not any(g == "kopf.dev" for rule in rules for g in rule["apiGroups"])


def test_service_monitor_is_optional(helm_bin, tmp_path):
    assert not by_kind(render(helm_bin, tmp_path), "ServiceMonitor")
    docs = render(helm_bin, tmp_path, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (service,) = by_kind(docs, "Service")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_grafana_dashboard_renders_only_when_enabled_as_valid_json_of_our_metrics(helm_bin, tmp_path):
    assert not [d for d in by_kind(render(helm_bin, tmp_path), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    docs = render(helm_bin, tmp_path, {"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}})
    (configmap,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(configmap["data"]["litgpt-training.json"])
    assert dashboard["uid"] == "litgpt-training"
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = set(re.findall(r"\b(litgpt_[a-z_]+)", " ".join(exprs)))
    assert {"litgpt_training_loss", "litgpt_training_tokens_per_second", "litgpt_training_step",
            "litgpt_training_eta_seconds"} <= queried
    # every series it queries is one the operator exports (a renamed metric would leave a panel empty)
    from litgpt_operator import metrics, progress
    from litgpt_runtime.progress_record import ProgressRecord

    metrics.reset()
    try:
        metrics.record("FinetuneJob", "a", "b", "Running", progress.status_progress(
            ProgressRecord(step=1, total_steps=2, loss=1.0, tokens_per_second=10.0, eta_seconds=5.0)))
        with metrics.reconciling("FinetuneJob"):
            pass
        exported = set(re.findall(r"^(litgpt_[a-z_]+)", metrics.exposition().decode(), re.M))
    finally:
        metrics.reset()
    assert queried - {"litgpt_operator_reconcile_errors_total"} <= exported, queried - exported
    assert "litgpt_operator_reconcile_errors" in metrics.exposition().decode()  # the counter behind _total


def test_model_server_pod_monitor_is_optional_and_selects_the_server_pods(helm_bin, tmp_path):
    """Off by default; on, it selects the pods the operator builds for a ModelServer, on the port
    and path they serve their metrics at, in the watched namespaces."""
    from litgpt_operator.api import MODEL_SERVER
    from litgpt_operator.builders.common import Parent
    from litgpt_operator.builders.server import METRICS_PATH, ServeSource, build_deployment
    from litgpt_operator.builders.sources import ModelCheckpoint

    assert not by_kind(render(helm_bin, tmp_path), "PodMonitor")
    values = {"metrics": {"modelServerPodMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    (monitor,) = by_kind(render(helm_bin, tmp_path, values), "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    spec = MODEL_SERVER.parse_spec({"spec": {"modelRef": {"name": "m"}}})
    parent = Parent("litgpt.dev/v1alpha1", "ModelServer", "chat", "team-a", "uid-1", 1)
    pod = build_deployment(parent, spec, ServeSource(ModelCheckpoint("m", "org/m", "cache")),
                           Settings.from_env({}))["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == METRICS_PATH == pod["metadata"]["annotations"]["prometheus.io/path"]
    assert endpoint["port"] in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    namespaced = render(helm_bin, tmp_path, {**NAMESPACED, **values})
    (monitor,) = by_kind(namespaced, "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": NAMESPACED["watch"]["namespaces"]}


@pytest.mark.parametrize(
    "values,complaint",
    [
        ({"replicaCount": 0}, "replicaCount"),
        ({"replicaCount": 2, "peering": {"enabled": False}}, "peering"),
        ({"operator": {"logFormat": "xml"}}, "logFormat"),
        ({"watch": {"namespaces": ["Team_A"]}}, "namespaces"),
        ({"runtime": {"runAsUser": 0}}, "runAsUser"),
        ({"runtime": {"defaultResources": {"requests": {"memory": "lots"}}}}, "memory"),
        ({"operator": {"extraEnv": [{"name": "LITGPT_OPERATOR_LOG_LEVEL", "value": "x"}]}}, "extraEnv"),
        ({"replicas": 3}, "replicas"),  # a typo of replicaCount
    ],
    ids=["zero-replicas", "ha-without-peering", "log-format", "namespace-name", "root", "quantity",
         "settings-via-extraEnv", "unknown-key"],
)
def test_schema_rejects_bad_values(helm_bin, tmp_path, values, complaint):
    result = run(helm_bin, "template", "lo", str(CHART), *KUBE_VERSION, "-f", values_file(tmp_path, values))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


# --- against the real API server -----------------------------------------------------------------

def test_cluster_scoped_resources_are_classified_as_the_server_says(kube, chart_crds):
    """The chart binds namespaced rules per namespace: a cluster-scoped resource among them would
    silently not be granted in namespaced mode."""
    cluster_scoped = set(kube.kubectl("api-resources", "--namespaced=false", "-o", "name").split())
    sync = sync_module()
    for groups, resources, _, _ in rbac.RULES:
        for group in groups:
            for resource in resources:
                base = resource.split("/")[0]
                full = f"{base}.{group}" if group else base
                assert (full in cluster_scoped) == ((group, base) in sync.CLUSTER_SCOPED), full


@pytest.mark.parametrize("mode", ["clusterwide", "namespaced"])
def test_rendered_chart_passes_server_side_dry_run(kube, namespace, chart_crds, helm_bin, tmp_path, mode):
    values = {"peering": {"name": f"peer-{namespace}"}}
    if mode == "namespaced":
        other = kube.create_namespace("watched")
        values["watch"] = {"namespaces": [namespace, other]}
    result = run(helm_bin, "template", f"r-{namespace}", str(CHART), *KUBE_VERSION, "-n", namespace,
                 "-f", values_file(tmp_path, values))
    assert result.returncode == 0, result.stderr
    out = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=result.stdout)  # objects name their namespace
    assert "deployment.apps/r-" in out and "(server dry run)" in out
    try:
        if mode == "namespaced":
            assert len(re.findall(r"^rolebinding\.rbac\.authorization\.k8s\.io/", out, re.M)) == 2
    finally:
        if mode == "namespaced":
            kube.kubectl("delete", "namespace", other, "--wait=false")


def can_i(kube, sa: str, verb: str, resource: str, namespace: str | None, subresource: str = "") -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={sa}"]
    args += ["-n", namespace] if namespace else []
    args += [f"--subresource={subresource}"] if subresource else []
    return kube.kubectl(*args, check=False).strip() == "yes"


def test_installed_chart_grants_exactly_the_watched_namespaces(kube, namespace, chart_crds, helm_bin, tmp_path):
    """`helm install` for real (namespaced mode), then ask the API server what the ServiceAccount may do."""
    watched = kube.create_namespace("watched")
    unwatched = kube.create_namespace("unwatched")
    release = f"r-{namespace}"
    values = {"watch": {"namespaces": [watched]}, "peering": {"name": f"peer-{namespace}"}}
    result = run(helm_bin, "install", release, str(CHART), "-n", namespace, "--kubeconfig", str(kube.kubeconfig),
                 "-f", values_file(tmp_path, values), "--wait=false")
    try:
        assert result.returncode == 0, result.stderr
        sa = f"system:serviceaccount:{namespace}:{release}-litgpt-operator"
        assert can_i(kube, sa, "create", "jobs.batch", watched)
        assert can_i(kube, sa, "patch", "finetunejobs.litgpt.dev", watched, subresource="status")
        assert not can_i(kube, sa, "patch", "finetunejobs.litgpt.dev", watched)  # only its status
        assert can_i(kube, sa, "patch", "kopfpeerings.kopf.dev", watched)
        assert can_i(kube, sa, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
        assert not can_i(kube, sa, "create", "jobs.batch", unwatched)
        assert not can_i(kube, sa, "get", "secrets", watched)
        assert not can_i(kube, sa, "delete", "jobs.batch", watched)
        # Only what the code does (issue 19's review): ConfigMaps are never changed, Services
        # and claims never listed.
        assert not can_i(kube, sa, "patch", "configmaps", watched)
        assert not can_i(kube, sa, "list", "services", watched)
        assert not can_i(kube, sa, "list", "persistentvolumeclaims", watched)
        assert can_i(kube, sa, "get", "pods/log", watched) and not can_i(kube, sa, "get", "pods/log", unwatched)
        assert not can_i(kube, sa, "patch", "clusterkopfpeerings.kopf.dev", None)
        peering = json.loads(kube.kubectl("get", "kopfpeerings.kopf.dev", f"peer-{namespace}", "-n", watched, "-o", "json"))
        assert peering["metadata"]["labels"]["app.kubernetes.io/instance"] == release
    finally:
        run(helm_bin, "uninstall", release, "-n", namespace, "--kubeconfig", str(kube.kubeconfig))
        for ns in (watched, unwatched):
            kube.kubectl("delete", "namespace", ns, "--wait=false")
