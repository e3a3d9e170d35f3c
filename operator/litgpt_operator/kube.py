"""The operator's only door to the API server: get, list, create-or-get, server-side apply,
status patches, Events, pod logs.

Handlers build whole objects with the pure builders and hand them here. Creation treats
"already exists" as success (a re-run reconcile finds what the previous run made); objects whose
spec must follow the parent (Deployments, Services, HPAs) go through server-side apply, which is
idempotent and rolls a Deployment when its template changes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Optional
from urllib.parse import urlencode

import urllib3

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from litgpt_operator.api import KINDS
from litgpt_operator.settings import FIELD_MANAGER

log = logging.getLogger(__name__)

# kind -> (apiVersion, plural) for everything the operator touches.
RESOURCES: dict[str, tuple[str, str]] = {
    "Job": ("batch/v1", "jobs"),
    "Deployment": ("apps/v1", "deployments"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "Service": ("v1", "services"),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),
    "ConfigMap": ("v1", "configmaps"),
    "Pod": ("v1", "pods"),
    "Event": ("v1", "events"),
    **{k.kind: (k.api_version, k.plural) for k in KINDS},
}

_client: Optional[k8s.ApiClient] = None
_client_lock = threading.Lock()


def configure(api_client: Optional[k8s.ApiClient] = None) -> k8s.ApiClient:
    """Use `api_client`, or load in-cluster config / $KUBECONFIG (operator start-up)."""
    global _client
    with _client_lock:
        if api_client is None:
            try:
                k8s_config.load_incluster_config()
                api_client = k8s.ApiClient()
            except k8s_config.ConfigException:
                # $KUBECONFIG read now: the client library reads it once, at import.
                api_client = k8s_config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
        _client = api_client
        return _client


def api_client() -> k8s.ApiClient:
    return _client or configure()


def path(kind: str, namespace: Optional[str], name: Optional[str] = None, subresource: Optional[str] = None) -> str:
    api_version, plural = RESOURCES[kind]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    url = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    if name:
        url += f"/{name}"
    if subresource:
        url += f"/{subresource}"
    return url


def _call(method: str, url: str, body: Any = None, query: Optional[list] = None,
          content_type: str = "application/json", as_text: bool = False, timeout: float = 30) -> Any:
    """One HTTP request through the client's connection pool (TLS and credentials from its
    configuration). Talking to the pool directly keeps us off `ApiClient.call_api`, whose
    signature changed between client releases."""
    client = api_client()
    config = client.configuration
    headers = {"Accept": "application/json", "Content-Type": content_type, "User-Agent": FIELD_MANAGER}
    for auth in config.auth_settings().values():  # a bearer token, refreshed if it expires
        if auth.get("in") == "header" and auth.get("value"):
            headers[auth["key"]] = auth["value"]
    full_url = config.host + url + (("?" + urlencode(query)) if query else "")
    payload = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    response = client.rest_client.pool_manager.request(
        method, full_url, body=payload, headers=headers, timeout=urllib3.Timeout(total=timeout), preload_content=True,
    )
    if not 200 <= response.status < 300:
        error = ApiException(status=response.status, reason=response.reason)
        error.body = response.data.decode(errors="replace")
        raise error
    text = response.data.decode()
    if as_text:
        return text
    return json.loads(text) if text else None


def get(kind: str, namespace: str, name: str) -> Optional[dict]:
    try:
        return _call("GET", path(kind, namespace, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def list_objects(kind: str, namespace: str, labels: Optional[dict[str, str]] = None) -> list[dict]:
    query = []
    if labels:
        query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(labels.items()))))
    return _call("GET", path(kind, namespace), query=query).get("items") or []


def create_or_get(obj: dict) -> tuple[dict, bool]:
    """Create `obj`; if it already exists, return the existing one. -> (object, created)."""
    meta = obj["metadata"]
    try:
        return _call("POST", path(obj["kind"], meta["namespace"]), body=obj,
                     query=[("fieldManager", FIELD_MANAGER)]), True
    except ApiException as error:
        if error.status != 409:
            raise
    existing = get(obj["kind"], meta["namespace"], meta["name"])
    if existing is None:  # deleted between our create and get: let the next reconcile retry
        raise RuntimeError(f"{obj['kind']} {meta['name']} exists and vanished; retrying")
    return existing, False


def apply(obj: dict) -> dict:
    """Server-side apply as the operator's field manager (forcing ownership of our fields)."""
    meta = obj["metadata"]
    return _call("PATCH", path(obj["kind"], meta["namespace"], meta["name"]), body=obj,
                 query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                 content_type="application/apply-patch+yaml")


def delete(kind: str, namespace: str, name: str) -> bool:
    try:
        _call("DELETE", path(kind, namespace, name), body={"propagationPolicy": "Background"})
        return True
    except ApiException as error:
        if error.status == 404:
            return False
        raise


def patch_status(kind: str, namespace: str, name: str, status_patch: dict, resource_version: str) -> dict:
    """Merge-patch the status subresource, only if the object is still at `resource_version`
    (409 otherwise: the caller re-reads and recomputes)."""
    body = {"metadata": {"resourceVersion": resource_version}, "status": status_patch}
    return _call("PATCH", path(kind, namespace, name, "status"), body=body,
                 content_type="application/merge-patch+json")


def post_event(obj: dict, event_type: str, reason: str, message: str) -> None:
    """A core/v1 Event about `obj` (what `kubectl describe` shows). Never fails the reconcile."""
    from litgpt_operator.status import now_rfc3339

    meta = obj["metadata"]
    stamp = now_rfc3339()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
            "namespace": meta["namespace"], "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event_type,
        "reason": reason[:128],
        "message": message[:1024],
        "source": {"component": FIELD_MANAGER},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        _call("POST", path("Event", meta["namespace"]), body=event)
    except ApiException as error:  # an Event is a courtesy; the status already holds the facts
        log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], error.reason)


def pod_log_tail(namespace: str, pod: str, lines: int, container: str) -> Optional[str]:
    """Last `lines` of a container's log, or None when the node cannot serve it."""
    if lines <= 0:
        return None
    try:
        text = _call("GET", path("Pod", namespace, pod, "log"),
                     query=[("container", container), ("tailLines", str(lines))], as_text=True, timeout=5)
    except (ApiException, OSError, ValueError) as error:
        log.debug("no log for pod %s/%s: %s", namespace, pod, error)
        return None
    return (text.strip() or None) if isinstance(text, str) else None
