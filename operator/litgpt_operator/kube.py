"""The operator's only door to the API server, through the `kubernetes` client's public APIs:
the dynamic client for objects (get, list, create, server-side apply, merge patch, delete, status
patches) and CoreV1Api for pod logs. Events go through kopf (`handlers.core`).

Handlers build whole objects with the pure builders and hand them here. Creation treats
"already exists" as success (a re-run reconcile finds what the previous run made); objects whose
spec must follow the parent (Deployments, Services, HPAs) go through server-side apply as our
field manager, which is idempotent and rolls a Deployment when its template changes. Whether an
existing object is ours to act on is the caller's question (`controller`, `handlers.children`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import Any, Optional

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient, Resource

from litgpt_operator import __version__
from litgpt_operator.api import KINDS
from litgpt_operator.settings import FIELD_MANAGER

log = logging.getLogger(__name__)
USER_AGENT = f"litgpt-operator/{__version__}"

# kind -> (apiVersion, plural) for everything the operator reads or writes (what rbac.py covers).
RESOURCES: dict[str, tuple[str, str]] = {
    "Job": ("batch/v1", "jobs"),
    "Deployment": ("apps/v1", "deployments"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "Service": ("v1", "services"),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),
    "ConfigMap": ("v1", "configmaps"),
    "Pod": ("v1", "pods"),
    **{k.kind: (k.api_version, k.plural) for k in KINDS},
}

_lock = threading.Lock()
_dynamic: Optional[DynamicClient] = None
_resources: dict[str, Resource] = {}


def configure(api_client: Optional[k8s.ApiClient] = None) -> DynamicClient:
    """Use `api_client`, or load in-cluster config / $KUBECONFIG (operator start-up)."""
    global _dynamic
    with _lock:
        if api_client is None:
            try:
                k8s_config.load_incluster_config()
                api_client = k8s.ApiClient()
            except k8s_config.ConfigException:
                # $KUBECONFIG read now: the client library reads it once, at import.
                api_client = k8s_config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
        # Our own user agent (the client library's is every Python client's): what an audit log or
        # the API server's request logs attribute to the operator.
        api_client.user_agent = USER_AGENT
        # Discovery is cached per process: clusters of other processes (tests, other operators)
        # may share the API server's address but not its CRDs.
        cache = os.path.join(tempfile.gettempdir(), f"litgpt-operator-discovery-{os.getpid()}.json")
        _dynamic = DynamicClient(api_client, cache_file=cache)
        _resources.clear()
        return _dynamic


def dynamic() -> DynamicClient:
    return _dynamic or configure()


def resource(kind: str) -> Resource:
    """The discovered API resource of `kind` (looked up once; discovery is not thread-safe)."""
    found = _resources.get(kind)
    if found is None:
        client = dynamic()
        with _lock:
            found = _resources[kind] = client.resources.get(api_version=RESOURCES[kind][0], kind=kind)
    return found


def _as_dict(_client: Any, data: Any) -> Any:
    """The dynamic client's response serializer: the decoded JSON as it is. Its default wraps every
    nested dict in a ResourceField object, which `to_dict` then unwraps again: most of a
    reconcile's CPU time and of the operator's peak memory at scale (benchmarks/README.md)."""
    return data


def get(kind: str, namespace: str, name: str) -> Optional[dict]:
    try:
        return resource(kind).get(name=name, namespace=namespace, serializer=_as_dict)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def list_objects(kind: str, namespace: str, labels: Optional[dict[str, str]] = None) -> list[dict]:
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) if labels else None
    return resource(kind).get(namespace=namespace, label_selector=selector, serializer=_as_dict).get("items") or []


def create_or_get(obj: dict, read_existing: bool = True) -> tuple[Optional[dict], bool]:
    """Create `obj`; if one of that name already exists, return it (None without
    `read_existing`: a caller that uses what it finds as it is). -> (object, created)."""
    meta = obj["metadata"]
    try:
        return resource(obj["kind"]).create(body=obj, namespace=meta["namespace"], field_manager=FIELD_MANAGER,
                                            serializer=_as_dict), True
    except ApiException as error:
        if error.status != 409:
            raise
    if not read_existing:
        return None, False
    existing = get(obj["kind"], meta["namespace"], meta["name"])
    if existing is None:  # deleted between our create and get: let the next reconcile retry
        raise RuntimeError(f"{obj['kind']} {meta['name']} exists and vanished; retrying")
    return existing, False


def apply(obj: dict) -> dict:
    """Server-side apply as the operator's field manager (forcing ownership of our fields)."""
    meta = obj["metadata"]
    return resource(obj["kind"]).server_side_apply(
        body=obj, name=meta["name"], namespace=meta["namespace"], field_manager=FIELD_MANAGER, force_conflicts=True,
        serializer=_as_dict)


def patch(kind: str, namespace: str, name: str, merge_patch: dict, uid: str) -> dict:
    """JSON merge patch of that very object (`uid` as a precondition: never a successor's)."""
    body = {**merge_patch, "metadata": {**merge_patch.get("metadata", {}), "uid": uid}}
    return resource(kind).patch(body=body, name=name, namespace=namespace,
                                content_type="application/merge-patch+json", serializer=_as_dict)


def delete(kind: str, namespace: str, name: str, uid: Optional[str] = None) -> bool:
    """Delete (background propagation); with `uid`, only that very object (a precondition)."""
    body: dict[str, Any] = {"propagationPolicy": "Background"}
    if uid:
        body["preconditions"] = {"uid": uid}
    try:
        resource(kind).delete(name=name, namespace=namespace, body=body)
        return True
    except ApiException as error:
        if error.status in (404, 409):  # gone, or replaced by another object of that name
            return False
        raise


def patch_status(kind: str, namespace: str, name: str, status_patch: dict, resource_version: str) -> dict:
    """Merge-patch the status subresource, only if the object is still at `resource_version`
    (409 otherwise: the caller re-reads and recomputes)."""
    body = {"metadata": {"name": name, "resourceVersion": resource_version}, "status": status_patch}
    return resource(kind).status.patch(body=body, name=name, namespace=namespace,
                                       content_type="application/merge-patch+json", serializer=_as_dict)


def controller(obj: dict) -> Optional[dict]:
    """The object's controlling owner reference (None: nobody controls it)."""
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


def pod_log_tail(namespace: str, pod: str, lines: int, container: str, limit_bytes: int) -> Optional[str]:
    """At most the last `lines` lines and `limit_bytes` bytes of a container's log (the kubelet
    stops reading there), or None when the node cannot serve it."""
    if lines <= 0:
        return None
    try:
        text = k8s.CoreV1Api(dynamic().client).read_namespaced_pod_log(
            pod, namespace, container=container, tail_lines=lines, limit_bytes=limit_bytes, _request_timeout=5)
    except (ApiException, OSError, ValueError) as error:
        log.debug("no log for pod %s/%s: %s", namespace, pod, error)
        return None
    return (text.strip() or None) if isinstance(text, str) else None
