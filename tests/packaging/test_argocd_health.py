"""The Argo CD health check (charts/litgpt-operator/argocd/health.lua), run in Lua 5.1 as Argo CD
runs it, on statuses the operator's own `status.render` writes, and on objects whose status went
through the real API server (so the shape is what the CRD stores, not what we imagine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from litgpt_operator import status as st

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "charts" / "litgpt-operator" / "argocd"
SCRIPT = (ARGOCD / "health.lua").read_text()


def to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def health(obj: dict) -> tuple[str, str]:
    """(status, message) as Argo CD would compute them: `obj` global, the script's return value."""
    from lupa import lua51

    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, json.loads(json.dumps(obj)))
    hs = lua.execute(SCRIPT)
    return hs["status"], hs["message"]


def obj(kind: str, phase: str | None, *conds: st.Cond, generation: int = 1, observed: int | None = None) -> dict:
    body = {"apiVersion": "litgpt.dev/v1alpha1", "kind": kind, "metadata": {"name": "x", "generation": generation}}
    if phase is not None:
        body["status"] = st.render(None, st.Observed(phase=phase, conditions=list(conds)),
                                   observed if observed is not None else generation)
    return body


READY = st.Cond.of("Ready", True, "Downloaded", "checkpoint complete")
NOT_READY = st.Cond.of("Ready", False, "Downloading", "downloading 3 of 7 files")
FAILED = st.Cond.of("Failed", True, "BackoffLimitExceeded", "exit code 1: CUDA out of memory")
RUNNING = st.Cond.of("Running", True, "PodRunning", "step 120, loss 1.84")
QUEUED = st.Cond.of("Queued", True, "AwaitingAdmission", "waiting for admission by queue team-a")
UNFIT = st.Cond.of("ResourcesFit", False, "InsufficientGPUMemory", "needs ~80.8 GiB per GPU; try method lora")


@pytest.mark.parametrize(
    "body,expected,message",
    [
        (obj("LitGPTModel", None), "Progressing", "Waiting for the operator"),
        (obj("LitGPTModel", "Downloading", NOT_READY), "Progressing", "downloading 3 of 7 files"),
        (obj("LitGPTModel", "Ready", READY), "Healthy", "checkpoint complete"),
        (obj("LitGPTModel", "Failed", st.Cond.of("Ready", False, "DownloadFailed", "repo not found")),
         "Degraded", "repo not found"),
        (obj("ModelServer", "Ready", READY), "Healthy", "checkpoint complete"),
        (obj("ModelServer", "Progressing", NOT_READY), "Progressing", "downloading 3 of 7 files"),
        (obj("FinetuneJob", "Running", RUNNING), "Progressing", "step 120, loss 1.84"),
        (obj("FinetuneJob", "Succeeded", st.Cond.of("Succeeded", True, "Completed", "done in 3m")),
         "Healthy", "done in 3m"),
        (obj("FinetuneJob", "Failed", FAILED), "Degraded", "exit code 1: CUDA out of memory"),
        (obj("FinetuneJob", "Queued", QUEUED), "Suspended", "waiting for admission by queue team-a"),
        (obj("PretrainJob", "Pending", UNFIT), "Degraded", "needs ~80.8 GiB per GPU; try method lora"),
        (obj("PretrainJob", "Ready", READY), "Progressing", "checkpoint complete"),  # Ready is not done for a job
        # a newer spec than the status describes: not Healthy, whatever the phase says
        (obj("ModelServer", "Ready", READY, generation=3, observed=2), "Progressing", "generation 3"),
    ],
)
def test_health_of_rendered_statuses(body, expected, message):
    status, text = health(body)
    assert status == expected
    assert message in text


def test_argocd_cm_is_generated_from_the_script():
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    from litgpt_operator.api import KINDS

    assert set(cm["data"]) == {f"resource.customizations.health.litgpt.dev_{k.kind}" for k in KINDS}
    assert all(script == SCRIPT for script in cm["data"].values())


EXAMPLES = {"LitGPTModel": "litgptmodel.yaml", "FinetuneJob": "finetunejob.yaml",
            "PretrainJob": "pretrainjob.yaml", "ModelServer": "modelserver.yaml"}
PLURALS = {"LitGPTModel": "litgptmodels", "FinetuneJob": "finetunejobs", "PretrainJob": "pretrainjobs",
           "ModelServer": "modelservers"}


@pytest.mark.parametrize(
    "kind,phase,conds,expected",
    [
        ("LitGPTModel", "Ready", [READY], "Healthy"),
        ("ModelServer", "Progressing", [NOT_READY], "Progressing"),
        ("FinetuneJob", "Failed", [FAILED], "Degraded"),
        ("FinetuneJob", "Queued", [QUEUED], "Suspended"),
        ("PretrainJob", "Succeeded", [st.Cond.of("Succeeded", True, "Completed", "done")], "Healthy"),
    ],
)
def test_health_of_objects_stored_by_the_api_server(kube, namespace, chart_crds, kind, phase, conds, expected):
    manifest = yaml.safe_load((REPO / "examples" / EXAMPLES[kind]).read_text())
    name = manifest["metadata"]["name"]
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    status = st.render(None, st.Observed(phase=phase, conditions=conds), 1)
    kube.kubectl("patch", f"{PLURALS[kind]}.litgpt.dev", name, "-n", namespace, "--subresource=status",
                 "--type=merge", "-p", json.dumps({"status": status}))
    stored = json.loads(kube.kubectl("get", f"{PLURALS[kind]}.litgpt.dev", name, "-n", namespace, "-o", "json"))
    assert stored["status"]["phase"] == phase  # the CRD kept what we wrote
    assert health(stored)[0] == expected
