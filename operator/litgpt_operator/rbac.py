"""The least Kubernetes rights the operator needs, in one place (the Helm chart packages this).

Each rule says which code path needs it. `cluster_role()` is rendered to
operator/rbac/clusterrole.yaml by `python -m litgpt_operator.generate`; bind it with a
ClusterRoleBinding (cluster-wide watch) or a RoleBinding per watched namespace.
"""

from __future__ import annotations

from typing import Any

from litgpt_operator.api import GROUP, KINDS

ROLE_NAME = "litgpt-operator"
READ = ["get", "list", "watch"]

# (apiGroups, resources, verbs, why): only what the code calls (kube.py and kopf's watches).
RULES: list[tuple[list[str], list[str], list[str], str]] = [
    # No patch: the handlers are kopf event handlers (no progress or last-handled annotations),
    # and the operator writes only /status.
    ([GROUP], [k.plural for k in KINDS], READ, "watch the custom resources"),
    ([GROUP], [f"{k.plural}/status" for k in KINDS], ["get", "patch"], "write status (conditions, phase)"),
    ([GROUP], [f"{k.plural}/finalizers" for k in KINDS], ["update"],
     "set blockOwnerDeletion on children (OwnerReferencesPermissionEnforcement)"),
    (["batch"], ["jobs"], READ + ["create", "patch"],
     "download, finetune and pretrain Jobs (watched); patched only to stop one past its resume budget"),
    (["apps"], ["deployments"], READ + ["create", "patch"], "ModelServer Deployments (watched; server-side apply)"),
    (["autoscaling"], ["horizontalpodautoscalers"], ["get", "create", "patch", "delete"],
     "optional ModelServer autoscaler (server-side apply; deleted when autoscaling is removed)"),
    ([""], ["services"], ["get", "create", "patch"], "ModelServer Services (server-side apply), headless training Services"),
    ([""], ["persistentvolumeclaims", "configmaps"], ["get", "create"], "model cache claims, inline datasets"),
    ([""], ["pods"], READ, "read pod states for failure reasons (image pull, OOMKilled, exit code)"),
    ([""], ["pods/log"], ["get"], "last lines of a failed pod's log, and training progress"),
    ([""], ["events"], ["create"], "Events on every transition (kopf's poster)"),
    # kopf itself: discovering CRDs, and namespaces when watching cluster-wide or by pattern.
    (["apiextensions.k8s.io"], ["customresourcedefinitions"], READ, "kopf resource discovery"),
    ([""], ["namespaces"], READ, "kopf namespace scanning (cluster-wide or pattern watch)"),
]


def policy_rules() -> list[dict[str, Any]]:
    return [{"apiGroups": groups, "resources": resources, "verbs": verbs} for groups, resources, verbs, _ in RULES]


def cluster_role(name: str = ROLE_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "litgpt-operator"}},
        "rules": policy_rules(),
    }
