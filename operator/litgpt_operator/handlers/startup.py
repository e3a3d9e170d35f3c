"""Operator start-up: validated settings, kopf persistence set explicitly, the API client."""

from __future__ import annotations

import random

import kopf

from litgpt_operator import kube, metrics, outages
from litgpt_operator import settings as litgpt_settings
from litgpt_operator.handlers.core import RECHECKS, WORK


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger, **_) -> None:
    ours = litgpt_settings.Settings.from_env()  # raises with the variable's name when invalid
    litgpt_settings.install(ours)
    # Where kopf keeps its state on our objects: our own prefix, never kopf's defaults, so a kopf
    # upgrade or another kopf operator in the cluster never reads or clobbers it.
    settings.persistence.finalizer = litgpt_settings.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=litgpt_settings.ANNOTATIONS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=litgpt_settings.ANNOTATIONS_PREFIX, key=litgpt_settings.LAST_HANDLED_ANNOTATION
    )
    # Our reconcilers post one Event per status transition through kopf's poster (kopf.event);
    # kopf's log lines as Events ("handler succeeded", "failed temporarily: waiting for the
    # model") would only repeat them.
    settings.posting.enabled = True
    settings.posting.loggers = False
    # kopf's own requests (watches, Events) retry an unreachable API server
    # (litgpt_operator.outages): at most 5 s apart, so the operator
    # resumes within seconds of a restarted API server (kopf's default waits up to 21 s
    # between its last tries), and for about five minutes in all (kopf's default: 54 s).
    settings.networking.error_backoffs = outages.BACKOFF_S
    settings.peering.standalone = ours.standalone
    # Replicas of one Deployment share their settings; kopf pauses every peer of equal priority,
    # so each process draws its own: the highest works, the others stand by (issue 5, HA).
    settings.peering.priority = random.randint(1, 2**31 - 1)
    if ours.metrics_port:
        metrics.serve_once(ours.metrics_port)
    if not ours.standalone:
        settings.peering.name = ours.peering_name
        settings.peering.lifetime = ours.peering_lifetime_seconds
    if ours.watch_server_timeout_seconds:
        settings.watching.server_timeout = ours.watch_server_timeout_seconds
        settings.watching.client_timeout = ours.watch_server_timeout_seconds + 10
    kube.configure()
    WORK.start(ours.workers)
    logger.info("litgpt-operator settings: %s", ours.model_dump_json(exclude={"default_resources"}))


@kopf.on.cleanup()
def stop_workers(**_) -> None:
    """The operator is stopping: nothing queued or waiting is reconciled any more (a process
    that runs the operator again, as the tests do, starts from a clean queue)."""
    WORK.stop()
    RECHECKS.clear()


@kopf.on.login()
def login(**kwargs):
    """In a pod: the service account; elsewhere: $KUBECONFIG as it is now (kopf's default login
    through the client library would use the path the library read at import time)."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    return with_kubeconfig_token_file(info)


def with_kubeconfig_token_file(info):
    """kopf's kubeconfig login reads `token` but not `tokenFile` (kubectl and the client library read
    both): without this, a kubeconfig with a token file logs in as system:anonymous."""
    if info is None or info.token or info.certificate_path or info.certificate_data:
        return info
    import dataclasses
    import os

    import yaml

    for path in filter(None, os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config")).split(os.pathsep)):
        try:
            with open(path) as f:
                config = yaml.safe_load(f) or {}
        except OSError:
            continue
        context = next((c["context"] for c in config.get("contexts") or [] if c["name"] == config.get("current-context")), {})
        user = next((u.get("user") or {} for u in config.get("users") or [] if u["name"] == context.get("user")), {})
        if user.get("tokenFile"):
            with open(user["tokenFile"]) as f:
                return dataclasses.replace(info, token=f.read().strip())
    return info
