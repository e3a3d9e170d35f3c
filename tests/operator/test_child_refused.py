"""A child the API server refuses (a full Service IP range, a quota, an invalid field) becomes a
condition on its parent in the server's own words, and the parent is re-checked with back-off;
an answer that only says "not now" (the API server restarting) stays a logged, re-checked error
that never reaches the status. Without a cluster: `kube` answers as the API server did."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException

from litgpt_operator.builders.common import Parent
from litgpt_operator.handlers import children, core
from litgpt_operator.handlers.workqueue import Taken
from litgpt_operator.status import Observed

PARENT = Parent("litgpt.dev/v1alpha1", "ModelServer", "chat", "ns", "u1")
SERVICE = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "chat", "namespace": "ns",
                        "ownerReferences": [{"uid": "u1", "controller": True, "kind": "ModelServer", "name": "chat"}]}}
RANGE_FULL = ("Internal error occurred: failed to allocate a serviceIP: range is full")


def answer(status: int, message: str = "", reason: str = "") -> ApiException:
    """An ApiException as the client raises it for a Status body."""
    error = ApiException(status=status, reason=reason or "Error")
    error.body = json.dumps({"kind": "Status", "status": "Failure", "code": status, "message": message})
    return error


def raising(error: ApiException):
    def call(*args, **kwargs):
        raise error
    return call


def test_a_refused_apply_says_which_child_and_quotes_the_server(monkeypatch):
    monkeypatch.setattr(children.kube, "get", lambda *args: None)
    monkeypatch.setattr(children.kube, "apply", raising(answer(500, RANGE_FULL)))
    with pytest.raises(children.Refused) as refused:
        children.apply_children([SERVICE], PARENT)
    assert refused.value.message.startswith(f"The API server refused Service chat (HTTP 500): {RANGE_FULL}. ")
    assert "tries again" in refused.value.message


@pytest.mark.parametrize("status,message", [
    (403, 'services "chat" is forbidden: exceeded quota: no-services, requested: services=1, used: services=0, '
          'limited: services=0'),
    (422, 'Service "chat" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535'),
])
def test_a_refused_create_is_a_refusal_too(monkeypatch, status, message):
    monkeypatch.setattr(children.kube, "create_or_get", raising(answer(status, message)))
    with pytest.raises(children.Refused, match=f"HTTP {status}"):
        children.create_children([SERVICE], PARENT)


def test_a_refusal_without_a_status_body_falls_back_to_the_http_reason(monkeypatch):
    error = ApiException(status=500, reason="Internal Server Error")
    error.body = "<html>proxy error</html>"
    monkeypatch.setattr(children.kube, "create_or_get", raising(error))
    with pytest.raises(children.Refused, match=r"\(HTTP 500\): Internal Server Error\. "):
        children.create_children([SERVICE], PARENT)


@pytest.mark.parametrize("status", [409, 429, 502, 503, 504])
def test_not_now_is_not_a_refusal(monkeypatch, status):
    monkeypatch.setattr(children.kube, "create_or_get", raising(answer(status, "the server is restarting")))
    with pytest.raises(ApiException):
        children.create_children([SERVICE], PARENT)


SERVER_BODY = {"apiVersion": "litgpt.dev/v1alpha1", "kind": "ModelServer",
               "metadata": {"namespace": "ns", "name": "chat", "uid": "u1", "resourceVersion": "7", "generation": 1},
               "spec": {"modelRef": {"name": "pythia"}}, "status": {"phase": "Pending"}}


@pytest.fixture
def world(monkeypatch):
    """The server's reconcile applies its Service; the status writes and re-checks are recorded."""
    seen = {"patches": [], "rechecks": [], "settled": []}
    monkeypatch.setattr(core.kube, "get", lambda kind, *args: SERVER_BODY if kind == "ModelServer" else None)
    monkeypatch.setattr(core.kube, "patch_status", lambda kind, ns, name, patch, rv: seen["patches"].append(patch))
    monkeypatch.setattr(core.RECHECKS, "waiting", lambda key, base: seen["rechecks"].append(key) or base)
    monkeypatch.setattr(core.RECHECKS, "settled", lambda key: seen["settled"].append(key))
    monkeypatch.setitem(core.RECONCILERS, "ModelServer",
                        lambda body, settings: (children.apply_children([SERVICE], PARENT), Observed("Ready", []))[1])
    return seen


def test_the_parent_says_so_and_is_rechecked_with_back_off(world, monkeypatch):
    monkeypatch.setattr(children.kube, "apply", raising(answer(500, RANGE_FULL)))
    core._process(("ModelServer", "ns", "chat"), Taken())
    [patch] = world["patches"]
    assert patch["phase"] == "Pending"
    [ready] = patch["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "ChildRefused")
    assert "Service chat" in ready["message"] and RANGE_FULL in ready["message"]
    assert world["rechecks"] == [("ModelServer", "ns", "chat")] and world["settled"] == []


def test_a_passing_error_is_rechecked_but_never_written(world, monkeypatch, caplog):
    monkeypatch.setattr(children.kube, "apply", raising(answer(503, "etcd is restarting")))
    core._process(("ModelServer", "ns", "chat"), Taken())
    assert world["patches"] == []
    assert world["rechecks"] == [("ModelServer", "ns", "chat")]
    assert "failed with an exception" in caplog.text
