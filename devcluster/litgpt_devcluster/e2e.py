"""The end-to-end flow (issue 6): `kubectl apply` to a served, finetuned model on one machine.

One implementation for `make demo` (hack/demo.sh runs `python -m litgpt_devcluster.e2e`) and for
tests/e2e/test_flow.py (which calls `Flow` step by step and asserts each result).

What runs where: the control plane is real (etcd, kube-apiserver, controller-manager, scheduler);
the only node is our node agent's exec node `exec-0`, which runs each pod's command as a local
process (no container runtime, no kubelet; see hack/README.md). The operator is installed with
the Helm chart and runs as a pod on that node, under the chart's ServiceAccount and RBAC. The
runtime pods (download, finetune, pretrain, serve) run the `litgpt` of this virtualenv. Models
come from a local Hub file server (devcluster/litgpt_devcluster/hub_server.py) holding a tiny random model.

    python -m litgpt_devcluster.e2e            # run the flow, leave the cluster up serving a model
    python -m litgpt_devcluster.e2e --down     # run the flow, then stop everything (DEMO_TEARDOWN=1 too)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from litgpt_devcluster import controlplane, waiting
from litgpt_devcluster.controlplane import REPO_ROOT as REPO, ControlPlane
from litgpt_devcluster.e2e_nodes import ExecNode, RealNode, free_port, pod_processes  # noqa: F401 - API

CHART = REPO / "charts" / "litgpt-operator"
REPO_ID = "litgpt-demo/tiny-llama"
API = "litgpt.dev/v1alpha1"
PLURAL = {"LitGPTModel": "litgptmodels", "FinetuneJob": "finetunejobs", "PretrainJob": "pretrainjobs",
          "ModelServer": "modelservers"}
EXEC_NODE = "exec-0:cpu=16,memory=64Gi,pods=50,nvidia.com/gpu=2,mode=exec"
SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}}

GOOD_DATA = [
    {"instruction": "Say hello.", "input": "", "output": "Hello!"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    {"instruction": "Reverse the word.", "input": "abc", "output": "cba"},
    {"instruction": "What is a GPU?", "input": "", "output": "A processor for many small computations."},
    {"instruction": "Say goodbye.", "input": "", "output": "Goodbye!"},
]
# The question the demo asks the finetuned server and the base model's: the finetune learns its
# answer, the random base model cannot know it. It must be a training record: with the runtime's
# split seed, valSplitFraction 0.2 holds out "Reverse the word." (a test checks the split).
TRAINED_QUESTION, TRAINED_ANSWER = GOOD_DATA[0]["instruction"], GOOD_DATA[0]["output"]
# The base model's server also serves the finetune as a LoRA adapter (spec.adapters): asked for by
# this name, it gives the trained answer from the base server's one copy of the weights.
ADAPTER = "tuned"
# A JSON file cut short: what a failed upload leaves behind.
BROKEN_DATA = '[{"instruction": "Say hello.", "input": "", "output": "Hel'
CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Kubernetes runs containers; an operator reconciles custom resources. " * 20,
    "Large language models predict the next token from the tokens before it. " * 20,
]
# A tiny architecture for pretraining from scratch (vocabulary of the tiny model's tokenizer).
TINY_CONFIG = {"name": "tiny-pretrain", "block_size": 64, "vocab_size": 320, "padded_vocab_size": 320,
               "n_layer": 2, "n_embd": 32, "n_head": 4, "n_query_groups": 2, "intermediate_size": 64,
               "norm_class_name": "RMSNorm", "mlp_class_name": "LLaMAMLP", "rotary_percentage": 1.0,
               "parallel_residual": False, "bias": False}


def wait_for(check: Callable[[], Any], what: str, timeout_s: float, interval_s: float = 1.0,
             detail: Optional[Callable[[], str]] = None) -> Any:
    """`waiting.wait_for` at the flow's pace, failing with a FlowError (what the demo reports)."""
    return waiting.wait_for(check, what, timeout_s, interval_s, detail=detail, error=FlowError)


class FlowError(RuntimeError):
    """A step of the flow did not reach its goal; the message says which and shows the evidence."""


@dataclass
class Names:
    """Everything the flow creates, named once."""

    namespace: str = "litgpt-demo"
    operator_namespace: str = "litgpt-system"
    release: str = "litgpt-operator"
    model: str = "tiny-llama"
    finetune: str = "tiny-llama-lora"
    server: str = "tiny-llama-lora-server"
    base_server: str = "tiny-llama-server"  # the downloaded model: step 4 compares, the demo leaves it up
    pretrain: str = "tiny-pretrain"
    broken: str = "broken-finetune"
    cache_claim: str = "models"
    data_claim: str = "datasets"


@dataclass
class Flow:
    """The flow's steps against a running control plane with the exec node `exec-0` (`node`
    left out) or the real node (`node=RealNode(cluster)`)."""

    cp: ControlPlane
    work: Path
    names: Names = field(default_factory=Names)
    say: Callable[[str], None] = print
    timeout_s: float = 300
    hub: Any = None
    server_ports: dict[str, int] = field(default_factory=dict)
    seen_phases: dict[str, list[str]] = field(default_factory=dict)
    node: Any = None  # ExecNode or RealNode (e2e_nodes): where pods run, how they are reached

    def __post_init__(self) -> None:
        if self.node is None:
            self.node = ExecNode(self.cp)

    @property
    def placement(self) -> dict:
        return self.node.placement

    # --- plumbing -----------------------------------------------------------------------------

    def kubectl(self, *args: str, input: Optional[str] = None, check: bool = True) -> str:
        return self.cp.kubectl(*args, input=input, check=check, timeout=120)

    def apply(self, *objects: dict, namespace: Optional[str] = None) -> None:
        text = yaml.safe_dump_all(list(objects))
        self.kubectl("apply", "-n", namespace or self.names.namespace, "-f", "-", input=text)

    def get(self, kind: str, name: str, namespace: Optional[str] = None) -> Optional[dict]:
        resource = f"{PLURAL[kind]}.litgpt.dev" if kind in PLURAL else kind
        out = self.kubectl("get", resource, name, "-n", namespace or self.names.namespace, "-o", "json",
                           "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def items(self, resource: str, *selector: str, namespace: Optional[str] = None) -> list[dict]:
        out = self.kubectl("get", resource, "-n", namespace or self.names.namespace, *selector, "-o", "json")
        return json.loads(out)["items"]

    def status(self, kind: str, name: str) -> dict:
        return (self.get(kind, name) or {}).get("status") or {}

    def phase(self, kind: str, name: str) -> Optional[str]:
        value = self.status(kind, name).get("phase")
        seen = self.seen_phases.setdefault(name, [])
        if value and (not seen or seen[-1] != value):
            seen.append(value)
        return value

    def condition(self, kind: str, name: str, type_: str) -> dict:
        return next((c for c in self.status(kind, name).get("conditions") or [] if c["type"] == type_), {})

    def wait_phase(self, kind: str, name: str, want: str, timeout_s: Optional[float] = None) -> dict:
        """Wait until `kind/name` reaches phase `want`; a different final phase stops at once."""
        final = {"Ready", "Succeeded", "Failed"} - {want}

        def check():
            phase = self.phase(kind, name)
            if phase in final and phase != "Ready":  # Ready may still move on; Failed/Succeeded do not
                raise FlowError(f"{kind} {name} is {phase}, expected {want}: "
                                f"{json.dumps(self.status(kind, name), indent=1)[-3000:]}\n{self.pod_logs_tail()}")
            return phase == want

        started = time.monotonic()
        wait_for(check, f"{kind} {name} to be {want} (now {self.phase(kind, name)})", timeout_s or self.timeout_s,
                 detail=lambda: f"status: {json.dumps(self.status(kind, name))[-2000:]}\n{self.pod_logs_tail()}")
        self.say(f"    {kind} {name}: {' -> '.join(self.seen_phases.get(name, []))} "
                 f"({time.monotonic() - started:.0f}s)")
        return self.status(kind, name)

    @property
    def agent_dir(self) -> Path:
        return self.cp.state_dir / "node-agent"

    def pod_logs_tail(self, lines: int = 30) -> str:
        """The last lines of every pod log of the flow (and the operator's), for failure messages."""
        return self.node.logs((self.names.namespace, self.names.operator_namespace), lines)

    def claim_folder(self, claim: str) -> Path:
        """The local folder behind a bound claim (its PersistentVolume's hostPath)."""
        pvc = self.get("persistentvolumeclaim", claim) or {}
        volume = (pvc.get("spec") or {}).get("volumeName")
        if not volume:
            raise FlowError(f"claim {claim} is not bound")
        pv = json.loads(self.kubectl("get", "pv", volume, "-o", "json"))
        return Path(pv["spec"]["hostPath"]["path"])

    # --- step 1: control plane, node agent, chart -------------------------------------------------

    def create_namespaces(self) -> None:
        for ns in (self.names.namespace, self.names.operator_namespace):
            if not self.kubectl("get", "namespace", ns, "--ignore-not-found", "-o", "name").strip():
                self.kubectl("create", "namespace", ns)
            wait_for(lambda: self.kubectl("get", "serviceaccount", "default", "-n", ns, "--ignore-not-found",
                                          "-o", "name").strip(), f"namespace {ns} ready", 60, 0.3)

    def install_chart(self, hf_endpoint: str) -> dict:
        """helm install the chart: CRDs, RBAC, the operator Deployment on the exec node."""
        node_values = self.node.chart_values()
        values = {
            "replicaCount": 1,
            "peering": {"enabled": False},
            "watch": {"namespaces": [self.names.namespace]},
            **node_values,
            "runtime": {**node_values.get("runtime", {}), "hfEndpoint": hf_endpoint, "defaultResources": SMALL},
            "operator": {"retryDelaySeconds": 1, "logFormat": "plain"},
            **self.placement,
        }
        path = self.work / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        helm = str(controlplane.binary("helm"))
        argv = [helm, "upgrade", "--install", self.names.release, str(CHART), "-n", self.names.operator_namespace,
                "--kubeconfig", str(self.cp.kubeconfig), "-f", str(path), "--wait", "--timeout", "180s"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=240)
        if result.returncode != 0:
            raise FlowError(f"helm install failed: {result.stderr.strip()}\n{self.pod_logs_tail()}")
        pods = self.items("pods", "-l", f"app.kubernetes.io/instance={self.names.release}",
                          namespace=self.names.operator_namespace)
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            raise FlowError(f"the operator pod is not running\n{self.pod_logs_tail()}")
        # kopf logs this once it can talk to the API server (as the ServiceAccount).
        wait_for(lambda: "Activity 'login' succeeded" in self.operator_log(), "the operator to log in", 90,
                 detail=self.operator_log)
        return running[0]

    def operator_log(self) -> str:
        return self.node.full_log(self.names.operator_namespace)

    # --- the local Hub -------------------------------------------------------------------------

    def start_hub(self) -> str:
        from litgpt_devcluster.hf_tiny import make_hf_model_dir
        from litgpt_devcluster.hub_server import HubServer

        root = self.work / "hub"
        target = root / REPO_ID
        if not (target / "config.json").exists():
            make_hf_model_dir("llama", target)
        self.hub = HubServer(root, host=self.node.hub_host).start()
        return self.hub.url

    def stop_hub(self) -> None:
        if self.hub is not None:
            self.hub.stop()
            self.hub = None

    # --- step 2: the model ---------------------------------------------------------------------

    def model_manifest(self) -> dict:
        return {"apiVersion": API, "kind": "LitGPTModel", "metadata": {"name": self.names.model},
                "spec": {"repoId": REPO_ID, "checkpointRootPVC": {"claimName": self.names.cache_claim, "size": "1Gi"},
                         "resources": SMALL, **self.placement}}

    def finetune_manifest(self, name: str, data: dict) -> dict:
        return {"apiVersion": API, "kind": "FinetuneJob", "metadata": {"name": name},
                "spec": {"modelRef": {"name": self.names.model}, "method": "lora",
                         "data": {**data, "valSplitFraction": 0.2},
                         # Long and hot enough for the tiny model to learn its five answers by heart
                         # (48 steps, ~20 s on 2 cores; loss ~0.05): the demo shows it answering.
                         "train": {"epochs": 16, "globalBatchSize": 2, "microBatchSize": 2, "maxSeqLength": 64,
                                   "learningRate": 0.03, "lrWarmupSteps": 3},
                         "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "mlp": True, "head": True},
                         "gpusPerNode": 0, "resources": SMALL, **self.placement}}

    def apply_model_and_finetune(self) -> None:
        """The model and, right away, a FinetuneJob that must wait for it."""
        self.apply(self.model_manifest(),
                   self.finetune_manifest(self.names.finetune, {"inline": json.dumps(GOOD_DATA, indent=1)}))
        wait_for(lambda: self.phase("FinetuneJob", self.names.finetune) == "Waiting"
                 or self.phase("LitGPTModel", self.names.model) == "Ready",
                 "the FinetuneJob to wait for its model", self.timeout_s)
        self.say(f"    FinetuneJob {self.names.finetune}: {self.phase('FinetuneJob', self.names.finetune)} "
                 f"({self.condition('FinetuneJob', self.names.finetune, 'ModelReady').get('message', '')})")

    def model_ready(self) -> Path:
        status = self.wait_phase("LitGPTModel", self.names.model, "Ready")
        folder = self.claim_folder(status.get("claimName") or self.names.cache_claim) / status["checkpointPath"]
        if not (folder / ".litgpt_complete.json").is_file():
            raise FlowError(f"LitGPTModel is Ready but {folder} holds no complete checkpoint")
        return folder

    # --- step 3: finetune ----------------------------------------------------------------------

    def finetune_succeeded(self) -> Path:
        status = self.wait_phase("FinetuneJob", self.names.finetune, "Succeeded")
        claim, path = status.get("outputClaimName"), status.get("outputPath")
        if not (claim and path):
            raise FlowError(f"FinetuneJob Succeeded without an output path in its status: {status}")
        folder = self.claim_folder(claim) / path
        final = folder / "final" if (folder / "final").is_dir() else folder
        if not (final / ".litgpt_complete.json").is_file():
            raise FlowError(f"the finetune output {final} is not a complete checkpoint")
        return final

    # --- step 4: serve and query ---------------------------------------------------------------

    def apply_server(self, ref: dict, name: Optional[str] = None) -> None:
        name = name or self.names.server
        self.server_ports[name] = free_port()
        self.apply({"apiVersion": API, "kind": "ModelServer", "metadata": {"name": name},
                    "spec": {**ref, "replicas": 1, "port": self.server_ports[name], "gpus": 0, "maxNewTokens": 16,
                             "resources": SMALL, **self.placement}})

    def server_address(self, name: Optional[str] = None) -> str:
        """The address of the ModelServer's Service once it has a ready endpoint (exec node: the
        endpoint's port on 127.0.0.1; real node: the Service's ClusterIP)."""
        name = name or self.names.server
        self.wait_phase("ModelServer", name, "Ready")
        service_name = self.status("ModelServer", name).get("serviceName") or name
        slices = self.items("endpointslices", "-l", f"kubernetes.io/service-name={service_name}")
        for piece in slices:
            ready = [e for e in piece.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")]
            ports = [p["port"] for p in piece.get("ports") or [] if p.get("port")]
            if ready and ports:
                service = json.loads(self.kubectl("get", "service", service_name, "-n", self.names.namespace,
                                                  "-o", "json"))
                return self.node.service_url(service, ports[0])
        raise FlowError(f"Service {service_name} has no ready endpoint: {json.dumps(slices)[-2000:]}")

    def base_server_ref(self) -> dict:
        """The base model, with the finetune beside it as the adapter ADAPTER."""
        return {"modelRef": {"name": self.names.model},
                "adapters": [{"name": ADAPTER, "finetuneRef": {"name": self.names.finetune}}]}

    def adapter_answer(self) -> str:
        """The base server's greedy answer to TRAINED_QUESTION with "model": ADAPTER."""
        model, answer = self.ask(self.server_address(self.names.base_server), TRAINED_QUESTION, model=ADAPTER)
        self.say(f"    {self.names.base_server} ({model}): {TRAINED_QUESTION!r} -> {answer!r}")
        return answer

    def finetuned_and_base_answers(self) -> tuple[str, str]:
        """The finetuned server's and the base model's server's greedy answers to TRAINED_QUESTION."""
        answers = []
        for name in (self.names.server, self.names.base_server):
            model, answer = self.ask(self.server_address(name), TRAINED_QUESTION)
            self.say(f"    {name} ({model}): {TRAINED_QUESTION!r} -> {answer!r}")
            answers.append(answer)
        return answers[0], answers[1]

    @staticmethod
    def ask(base_url: str, question: str = TRAINED_QUESTION, model: Optional[str] = None) -> tuple[str, str]:
        """One chat request with the official `openai` client (to `model`, default the server's
        first: its base model); returns (model id, answer)."""
        from openai import OpenAI

        client = OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", timeout=120, max_retries=2)
        model = model or client.models.list().data[0].id
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                               max_tokens=12, temperature=0)
        return model, reply.choices[0].message.content or ""

    # --- step 5: pretrain on two nodes -----------------------------------------------------------

    def write_datasets(self) -> Path:
        """The `datasets` claim: a text corpus for pretraining and a broken JSON file."""
        self.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": self.names.data_claim},
                    "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
        wait_for(lambda: (self.get("persistentvolumeclaim", self.names.data_claim) or {}).get("status", {})
                 .get("phase") == "Bound", "the datasets claim to bind", 60, 0.5)
        folder = self.claim_folder(self.names.data_claim)
        (folder / "corpus").mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(CORPUS):
            (folder / "corpus" / f"part-{i}.txt").write_text(text)
        (folder / "broken.json").write_text(BROKEN_DATA)
        return folder

    def apply_pretrain(self) -> None:
        self.apply({"apiVersion": API, "kind": "PretrainJob", "metadata": {"name": self.names.pretrain},
                    "spec": {"modelConfig": TINY_CONFIG, "fromScratch": True,
                             "tokenizerRef": {"name": self.names.model},
                             "data": {"file": {"claimName": self.names.data_claim, "path": "corpus"},
                                      "valSplitFraction": 0.1},
                             "train": {"maxSteps": 3, "globalBatchSize": 4, "microBatchSize": 1,
                                       "maxSeqLength": 32},
                             "nodes": 2, "gpusPerNode": 0, "masterPort": free_port(),
                             "resources": SMALL, **self.placement}})

    def pretrain_pods(self) -> list[dict]:
        job = (self.status("PretrainJob", self.names.pretrain).get("jobName")
               or f"{self.names.pretrain}-pretrain")
        return self.items("pods", "-l", f"batch.kubernetes.io/job-name={job}")

    def pretrain_succeeded(self) -> tuple[dict, list[dict]]:
        status = self.wait_phase("PretrainJob", self.names.pretrain, "Succeeded", timeout_s=self.timeout_s * 1.5)
        return status, self.pretrain_pods()

    # --- step 6: a broken dataset ----------------------------------------------------------------

    def apply_broken(self) -> None:
        self.apply(self.finetune_manifest(self.names.broken,
                                          {"file": {"claimName": self.names.data_claim, "path": "broken.json"}}))

    def broken_failed(self) -> dict:
        wait_for(lambda: self.phase("FinetuneJob", self.names.broken) == "Failed",
                 f"FinetuneJob {self.names.broken} to fail", self.timeout_s,
                 detail=lambda: json.dumps(self.status("FinetuneJob", self.names.broken))[-2000:])
        self.say(f"    FinetuneJob {self.names.broken}: {' -> '.join(self.seen_phases[self.names.broken])}")
        return self.condition("FinetuneJob", self.names.broken, "Failed")

    # --- step 7: delete everything ---------------------------------------------------------------

    def delete_all(self) -> None:
        ns = self.names.namespace
        for kind in ("ModelServer", "PretrainJob", "FinetuneJob", "LitGPTModel"):
            self.kubectl("delete", f"{PLURAL[kind]}.litgpt.dev", "--all", "-n", ns, "--wait=true", "--timeout=120s")
        self.kubectl("delete", "persistentvolumeclaims", "--all", "-n", ns, "--wait=true", "--timeout=120s")

    def leftovers(self) -> dict[str, list[str]]:
        """What is still there: objects in the namespace and local processes of its pods."""
        ns = self.names.namespace
        left: dict[str, list[str]] = {}
        for resource in ("litgptmodels.litgpt.dev", "finetunejobs.litgpt.dev", "pretrainjobs.litgpt.dev",
                         "modelservers.litgpt.dev", "pods", "jobs", "deployments", "replicasets", "services",
                         "horizontalpodautoscalers", "persistentvolumeclaims"):
            names = [i["metadata"]["name"] for i in self.items(resource)]
            if names:
                left[resource] = names
        configmaps = [i["metadata"]["name"] for i in self.items("configmaps")
                      if i["metadata"]["name"] != "kube-root-ca.crt"]
        if configmaps:
            left["configmaps"] = configmaps
        volumes = [pv["metadata"]["name"] for pv in json.loads(self.kubectl("get", "pv", "-o", "json"))["items"]
                   if ((pv["spec"].get("claimRef") or {}).get("namespace")) == ns]
        if volumes:
            left["persistentvolumes"] = volumes
        left.update(self.node.leftovers(ns))
        return left

    def nothing_left(self) -> None:
        wait_for(lambda: not self.leftovers(), "nothing left behind", 120,
                 detail=lambda: f"left: {self.leftovers()}")

    def uninstall_chart(self) -> None:
        helm = str(controlplane.binary("helm"))
        subprocess.run([helm, "uninstall", self.names.release, "-n", self.names.operator_namespace, "--kubeconfig",
                        str(self.cp.kubeconfig), "--wait", "--timeout", "120s"], capture_output=True, timeout=180)


# --- the demo: every step with progress --------------------------------------------------------

def step(number: int, text: str) -> None:
    print(f"\n[{number}/7] {text}", flush=True)


def run_flow(flow: Flow, keep_serving: bool) -> Optional[str]:
    """Every step, printing progress; returns the address of the server left up (keep_serving)."""
    names = flow.names
    step(1, f"Control plane is up; installing the chart (CRDs, RBAC, operator as a pod on {flow.node.node_name})")
    flow.create_namespaces()
    hub_url = flow.start_hub()
    print(f"    local Hub at {hub_url} serving {REPO_ID} (a tiny random Llama)")
    pod = flow.install_chart(hub_url)
    print(f"    operator pod {pod['metadata']['name']} on {pod['spec']['nodeName']} "
          f"as ServiceAccount {pod['spec']['serviceAccountName']}")

    step(2, f"LitGPTModel {names.model} (and a FinetuneJob that waits for it)")
    flow.write_datasets()
    flow.apply_model_and_finetune()
    checkpoint = flow.model_ready()
    print(f"    checkpoint on the claim's folder: {checkpoint}")

    step(3, f"FinetuneJob {names.finetune} (LoRA on a small JSON dataset)")
    output = flow.finetune_succeeded()
    status = flow.status("FinetuneJob", names.finetune)
    print(f"    output {status['outputClaimName']}:{status['outputPath']} -> {output}")

    step(4, f"ModelServer {names.server} for the finetuned output (and {names.base_server} for the base "
            "model); the same question to both with the openai client")
    flow.apply_server({"finetuneRef": {"name": names.finetune}})
    flow.apply_server(flow.base_server_ref(), name=names.base_server)
    print(f"    Service {names.server} -> {flow.server_address()}")
    finetuned, base = flow.finetuned_and_base_answers()
    adapter = flow.adapter_answer()
    if finetuned.strip() != TRAINED_ANSWER or base.strip() == TRAINED_ANSWER or adapter.strip() != TRAINED_ANSWER:
        raise FlowError(f"the finetune did not show: asked {TRAINED_QUESTION!r}, the finetuned model answered "
                        f"{finetuned!r}, the base model {base!r} and the base's server with model={ADAPTER!r} "
                        f"{adapter!r}; the training answer is {TRAINED_ANSWER!r}")
    print(f"    the finetuned model gives the trained answer {TRAINED_ANSWER!r}, and so does the base model's "
          f"server asked for its adapter {ADAPTER!r}; the base model (random weights) does not")
    for line in flow.node.show_pods(flow.names, names.server):
        print(f"    {line}")

    step(5, f"PretrainJob {names.pretrain} from scratch on 2 nodes")
    flow.apply_pretrain()
    status, pods = flow.pretrain_succeeded()
    for pod in pods:
        env = {e["name"]: e.get("value", "(from field)") for e in pod["spec"]["containers"][0].get("env") or []}
        print(f"    pod {pod['metadata']['name']}: MASTER_ADDR={env.get('MASTER_ADDR')} "
              f"WORLD_SIZE={env.get('WORLD_SIZE')} NODE_RANK="
              f"{pod['metadata']['annotations'].get('batch.kubernetes.io/job-completion-index')} "
              f"({flow.node.master_addr_note})")
    print(f"    output {status.get('outputClaimName')}:{status.get('outputPath')}")

    step(6, f"FinetuneJob {names.broken} on a broken dataset")
    flow.apply_broken()
    failed = flow.broken_failed()
    print(f"    Failed ({failed.get('reason')}): {failed.get('message', '').splitlines()[0][:500]}")
    untouched = {n: flow.phase(k, n) for k, n in (("LitGPTModel", names.model), ("FinetuneJob", names.finetune),
                                                   ("PretrainJob", names.pretrain), ("ModelServer", names.server))}
    print(f"    the others are untouched: {untouched}")

    step(7, "Deleting everything")
    flow.delete_all()
    flow.nothing_left()
    print("    nothing left: no objects, pods, jobs, claims or processes of the flow")

    if keep_serving:
        print("\nServing the model again so there is something to query:")
        flow.seen_phases.clear()
        flow.apply(flow.model_manifest())
        flow.model_ready()
        flow.apply_server({"modelRef": {"name": names.model}}, name=names.base_server)
        address = flow.server_address(names.base_server)
        model, answer = flow.ask(address)
        print(f"    ModelServer {names.base_server}: {model} at {address} answered: {answer!r}")
        return address
    return None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--down", action="store_true", default=os.environ.get("DEMO_TEARDOWN") == "1",
                        help="stop the control plane at the end (also DEMO_TEARDOWN=1)")
    parser.add_argument("--state-dir", type=Path, default=controlplane.cache_root() / "run" / "demo")
    parser.add_argument("--real-node", action="store_true",
                        help="run on the real node started by `hack/control-plane.sh up --real-node`, from inside "
                             "its network namespace (hack/demo.sh does both when the machine allows it)")
    args = parser.parse_args(argv)
    # A plain `kill` unwinds like Ctrl-C, so the hub stops and --down still tears down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = time.monotonic()
    if args.real_node:
        from litgpt_devcluster.realnode.__main__ import default_state_dir
        from litgpt_devcluster.realnode.node import RealCluster

        cluster = RealCluster(default_state_dir())
        try:
            cluster.check_inside()
        except controlplane.ControlPlaneError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        if "kubelet" not in cluster.running():
            print("error: the real node is not running: start it with hack/control-plane.sh up --real-node",
                  file=sys.stderr)
            return 1
        cp, node = cluster.cp, RealNode(cluster)
        print(f"using the real node in {default_state_dir()}", flush=True)
    else:
        cp = ControlPlane(args.state_dir, nodes=(EXEC_NODE,), agent_mode="exec")
        if cp.running():
            print(f"stopping the previous demo cluster in {args.state_dir}", flush=True)
            cp.stop()
        print(f"starting the control plane and the node agent (exec node exec-0) in {args.state_dir}", flush=True)
        cp.start()
        node = ExecNode(cp)
        print(f"    up in {time.monotonic() - started:.0f}s at {cp.server}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="litgpt-demo-"))
    flow = Flow(cp, work, node=node)
    ok, address = False, None
    try:
        address = run_flow(flow, keep_serving=not args.down)
        ok = True
    except FlowError as error:
        print(f"\nerror: {error}", file=sys.stderr)
        print(f"component logs: {cp.state_dir / 'logs'}"
              + ("" if args.real_node else f"; pod logs: {flow.agent_dir / 'pods'}"), file=sys.stderr)
    finally:
        flow.stop_hub()
        if args.down and not args.real_node:  # the real node: hack/demo.sh stops it and its namespace
            cp.stop()
    print(f"\n{'finished' if ok else 'stopped'} after {time.monotonic() - started:.0f}s", flush=True)
    if ok and not args.down and args.real_node:
        print(f"""
The real node is still up, serving ModelServer {flow.names.base_server} at {address} (its Service's
ClusterIP, which exists only inside the node's network namespace):
    python -m litgpt_devcluster.realnode shell    # how to run kubectl in the namespace
Stop it with: hack/control-plane.sh down --real-node""")
    elif ok and not args.down:
        print(f"""
The cluster is still up (pods run as local processes via our node agent, not a real kubelet):
    export KUBECONFIG={cp.kubeconfig}
    kubectl get litgpt -n {flow.names.namespace}
    curl {address}/v1/models    # ModelServer {flow.names.base_server}: its Service's port, on this host
Stop it with: hack/control-plane.sh --state-dir {args.state_dir} down""")
    elif ok:
        print("\nflow finished; everything stopped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
