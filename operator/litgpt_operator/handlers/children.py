"""Acting only on our own children: an object of a child's name that another object controls (or
nobody does) is left alone, and the parent says which object is in the way.

Children are named after their parent, so after a delete-and-re-apply the new parent finds the old
one's children (being garbage-collected) under the same names; comparing the controller's uid,
never the name, keeps it from adopting them or reporting their results.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from kubernetes.client.rest import ApiException

from litgpt_operator import kube
from litgpt_operator.builders.common import Parent


class InTheWay(Exception):
    """An object of a child's name is not ours; the message says which and what to do."""

    def __init__(self, obj: dict, parent: Parent):
        self.message = in_the_way_message(obj, parent)
        super().__init__(self.message)


def in_the_way_message(obj: dict, parent: Parent) -> str:
    what = f"{obj['kind']} {obj['metadata']['name']}"
    owner = kube.controller(obj)
    if owner and owner.get("kind") == parent.kind and owner.get("name") == parent.name:
        return (f"{what} belongs to an earlier {parent.kind} {parent.name} (uid {owner.get('uid')}) and is being "
                "garbage-collected; this one continues once it is gone.")
    holder = f"{owner.get('kind')} {owner.get('name')}" if owner else "no litgpt object"
    return (f"{what} already exists and is controlled by {holder}, so the operator leaves it alone. "
            f"Delete or rename it (or rename this {parent.kind}) to proceed.")


class Refused(Exception):
    """The API server refused to create or apply a child (a quota, an admission webhook, an
    invalid field, a full Service IP range): the parent's status carries the server's own words,
    since a log line is not where a user looks."""

    def __init__(self, child: dict, error: ApiException):
        self.message = refused_message(child, error)
        super().__init__(self.message)


# Answers that say "not now" rather than "no": a conflict the next reconcile resolves, the API
# server restarting, overloaded, or behind a proxy that lost it. Those stay exceptions (logged,
# re-checked with back-off) and never reach a status, which would flap through every restart.
_PASSING = frozenset({409, 429, 502, 503, 504})


def refused_message(child: dict, error: ApiException) -> str:
    what = f"{child['kind']} {child['metadata']['name']}"
    try:
        said = json.loads(error.body or "{}").get("message") or ""
    except (TypeError, ValueError, AttributeError):
        said = ""
    said = (said or str(error.reason or "")).strip().rstrip(".") or "no reason given"
    return (f"The API server refused {what} (HTTP {error.status}): {said}. "
            "The operator tries again with back-off; fix the cause and it proceeds.")


@contextmanager
def refusals_reported(child: dict) -> Iterator[None]:
    try:
        yield
    except ApiException as error:
        if error.status in _PASSING or not 400 <= (error.status or 0) <= 500:
            raise
        raise Refused(child, error) from error


def is_ours(obj: dict, parent: Parent) -> bool:
    return (kube.controller(obj) or {}).get("uid") == parent.uid


def ours(obj: Optional[dict], parent: Parent) -> Optional[dict]:
    """`obj` if it is absent or ours; InTheWay otherwise."""
    if obj is not None and not is_ours(obj, parent):
        raise InTheWay(obj, parent)
    return obj


def get_ours(kind: str, parent: Parent, name: str) -> Optional[dict]:
    return ours(kube.get(kind, parent.namespace, name), parent)


# Unowned children (a namespace's shared model cache claim) this process found or made, -> when.
# In a burst of models sharing one claim each model's create would only conflict: one API call per
# model in the lane that makes first children (benchmarks/README.md, "The operator at scale", step
# 5). Forgotten after SHARED_KNOWN_SECONDS, so a claim deleted by hand is made again by a later
# reconcile (its Job's pod waits for it meanwhile, and a waiting object is re-checked).
SHARED_KNOWN_SECONDS = 30.0
_shared_known: dict[tuple[str, str, str], float] = {}


def forget_shared() -> None:
    _shared_known.clear()


def create_children(children: list[dict], parent: Parent) -> list[tuple[Optional[dict], bool]]:
    """Create what is missing (in order); existing children are left as they are: Jobs are
    immutable, and a finished one must not run again. Children without an owner (a shared
    model cache claim) are used as found, and not read back when they exist. -> (the live
    object, whether this call created it) each (None for an unowned child that existed)."""
    live = []
    for child in children:
        owned = bool(child["metadata"].get("ownerReferences"))
        shared = (child["kind"], parent.namespace, child["metadata"]["name"])
        if not owned and time.monotonic() - _shared_known.get(shared, float("-inf")) < SHARED_KNOWN_SECONDS:
            live.append((None, False))
            continue
        with refusals_reported(child):
            obj, created = kube.create_or_get(child, read_existing=owned)
        if not owned:
            _shared_known[shared] = time.monotonic()
        live.append((ours(obj, parent) if owned else obj, created))
    return live


def apply_children(children: list[dict], parent: Parent, checked: frozenset[str] = frozenset()) -> list[dict]:
    """Server-side apply the children; none of them if an object of one's name is not ours (the
    kinds in `checked` the caller has just read and found absent or ours). -> them as applied."""
    for child in children:
        if child["kind"] not in checked:
            get_ours(child["kind"], parent, child["metadata"]["name"])
    applied = []
    for child in children:
        with refusals_reported(child):
            applied.append(kube.apply(child))
    return applied


def delete_child(kind: str, parent: Parent, name: str) -> None:
    """Delete our child of that name, if there is one (never somebody else's object)."""
    existing = kube.get(kind, parent.namespace, name)
    if existing is not None and is_ours(existing, parent):
        kube.delete(kind, parent.namespace, name, uid=existing["metadata"]["uid"])
