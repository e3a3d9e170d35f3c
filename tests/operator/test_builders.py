"""Builders: custom resource (+ settings) -> Kubernetes objects. Pure; no cluster."""

from __future__ import annotations

import hashlib
import json

import pytest

from litgpt_operator.api import FINETUNE_JOB, LITGPT_MODEL, MODEL_SERVER, PRETRAIN_JOB
from litgpt_operator.builders import common, finetune, model, pretrain, server
from litgpt_operator.builders.pretrain import PretrainSources
from litgpt_operator.builders.server import ServeSource
from litgpt_operator.builders.sources import ModelCheckpoint, OutputLocation
from litgpt_operator.settings import Settings

SETTINGS = Settings(runtime_image="example.org/litgpt:test")
CHECKPOINT = ModelCheckpoint("pythia", "EleutherAI/pythia-14m", "model-cache")


def parent(kind: str, name: str = "demo", generation: int = 1) -> common.Parent:
    return common.Parent("litgpt.dev/v1alpha1", kind, name, "team-a", f"uid-{name}", generation)


def container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def mounts(obj: dict) -> dict[str, bool]:
    """Mount path -> read-only, as the container sees it."""
    return {m["mountPath"]: m["readOnly"] for m in container(obj)["volumeMounts"]}


def assert_restricted(pod_spec: dict) -> None:
    """Pod Security Standards "restricted", plus a read-only root filesystem."""
    sc = pod_spec["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["automountServiceAccountToken"] is False
    assert {"name": "tmp", "emptyDir": {"sizeLimit": SETTINGS.tmp_size_limit}} in pod_spec["volumes"]


# --- LitGPTModel ------------------------------------------------------------------------------

def model_spec(**extra):
    return LITGPT_MODEL.parse_spec({"spec": {"repoId": "EleutherAI/pythia-14m",
                                             "checkpointRootPVC": {"claimName": "model-cache"}, **extra}})


def test_download_job_command_and_token_reference():
    spec = model_spec(revision="v1", tokenSecretRef={"name": "hf"})
    job = model.build_download_job(parent("LitGPTModel"), spec, SETTINGS)
    assert job["metadata"]["name"] == "demo-download"
    assert container(job)["command"] == [
        "litgpt", "download", "EleutherAI/pythia-14m", "--checkpoint_root_dir", "/models/checkpoints", "--revision", "v1",
    ]
    env = {e["name"]: e for e in container(job)["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}}
    assert "value" not in env["HF_TOKEN"]
    assert mounts(job)["/models"] is False  # the download writes the cache
    assert container(job)["image"] == "example.org/litgpt:test"
    assert_restricted(job["spec"]["template"]["spec"])
    assert job["spec"]["backoffLimit"] == 2


def test_owner_reference_and_labels():
    job = model.build_download_job(parent("LitGPTModel"), model_spec(), SETTINGS)
    (ref,) = job["metadata"]["ownerReferences"]
    assert ref == {"apiVersion": "litgpt.dev/v1alpha1", "kind": "LitGPTModel", "name": "demo", "uid": "uid-demo",
                   "controller": True, "blockOwnerDeletion": True}
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "litgpt-operator"
    assert labels["app.kubernetes.io/instance"] == "demo" and labels["app.kubernetes.io/component"] == "download"


def test_cache_claim_only_when_sized_and_not_owned():
    assert model.build_cache_claim(parent("LitGPTModel"), model_spec()) is None
    spec = LITGPT_MODEL.parse_spec({"spec": {"repoId": "a/b", "checkpointRootPVC": {
        "claimName": "cache", "size": "20Gi", "storageClassName": "fast", "accessMode": "ReadWriteMany"}}})
    claim = model.build_cache_claim(parent("LitGPTModel"), spec)
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "20Gi"}},
                             "storageClassName": "fast"}
    assert "ownerReferences" not in claim["metadata"]  # a shared cache outlives any one model


def test_names_are_stable_dns_labels():
    long = "a" * 80
    assert common.child_name(long, "finetune") == common.child_name(long, "finetune")
    assert len(common.child_name(long, "finetune")) <= 52
    assert common.child_name("7b.model", "download") == "lg-7b-model-download"
    assert common.child_name(long + "x", "f") != common.child_name(long + "y", "f")


# --- FinetuneJob ------------------------------------------------------------------------------

def finetune_spec(**extra):
    body = {"modelRef": {"name": "pythia"}, "data": {"file": {"claimName": "datasets", "path": "alpaca/train.json"}},
            "gpusPerNode": 2, **extra}
    return FINETUNE_JOB.parse_spec({"spec": body})


def test_finetune_lora_command_line():
    spec = finetune_spec(train={"epochs": 3, "globalBatchSize": 8, "microBatchSize": 2, "learningRate": 0.001},
                         lora={"r": 4}, precision="bf16-true")
    (job,) = finetune.build_finetune_children(parent("FinetuneJob"), spec, CHECKPOINT, SETTINGS)
    assert container(job)["command"] == [
        "litgpt", "finetune_lora", "EleutherAI/pythia-14m",
        "--checkpoint_root_dir", "/models/checkpoints",
        "--out_dir", "/output/finetunes/demo",
        "--data", "JSON", "--data.json_path", "/data/alpaca/train.json",
        "--data.prompt_style", "auto", "--data.mask_prompt", "true", "--data.val_split_fraction", "0.05",
        "--train.epochs", "3", "--train.global_batch_size", "8", "--train.micro_batch_size", "2",
        "--train.learning_rate", "0.001",
        "--lora_r", "4", "--lora_alpha", "16", "--lora_dropout", "0.05", "--lora_query", "true",
        "--lora_key", "false", "--lora_value", "true", "--lora_projection", "false", "--lora_mlp", "false",
        "--lora_head", "false",
        "--devices", "2", "--num_nodes", "1", "--precision", "bf16-true",
        "--resume", "auto",
    ]
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == 2
    # the model cache is read-only; the output (by default in the same claim: one volume) is the
    # only writable claim mount
    assert mounts(job)["/models"] is True
    assert mounts(job)["/output"] is False
    assert mounts(job)["/data"] is True
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "model-cache", "readOnly": False}
    assert "output" not in volumes
    assert "completionMode" not in job["spec"]
    assert job["metadata"]["annotations"]["litgpt.dev/output-claim"] == "model-cache"
    assert job["metadata"]["annotations"]["litgpt.dev/output-path"] == "finetunes/demo"
    assert_restricted(job["spec"]["template"]["spec"])


@pytest.mark.parametrize("method", ["full", "adapter", "adapter_v2"])
def test_finetune_other_methods_have_no_lora_flags(method):
    (job,) = finetune.build_finetune_children(parent("FinetuneJob"), finetune_spec(method=method), CHECKPOINT, SETTINGS)
    command = container(job)["command"]
    assert command[1] == f"finetune_{method}"
    assert not any(arg.startswith("--lora") for arg in command)


def test_finetune_inline_data_goes_through_a_configmap():
    records = json.dumps([{"instruction": "hi", "input": "", "output": "hello"}])
    spec = FINETUNE_JOB.parse_spec({"spec": {"modelRef": {"name": "pythia"}, "data": {"inline": records},
                                             "output": {"claimName": "results", "path": "runs/one"}}})
    configmap, job = finetune.build_finetune_children(parent("FinetuneJob"), spec, CHECKPOINT, SETTINGS)
    assert configmap["kind"] == "ConfigMap" and configmap["data"] == {"data.json": records}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "configMap": {"name": configmap["metadata"]["name"]}}
    assert configmap["metadata"]["name"] == f"demo-data-{hashlib.sha256(records.encode()).hexdigest()[:10]}"
    assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "results", "readOnly": False}
    command = container(job)["command"]
    assert command[command.index("--data.json_path") + 1] == "/data/data.json"
    assert command[command.index("--out_dir") + 1] == "/output/runs/one"


def test_scratch_space_is_bounded():
    settings = Settings(runtime_image="x", tmp_size_limit="3Gi", shm_size_limit="512Mi")
    (job,) = finetune.build_finetune_children(parent("FinetuneJob"), finetune_spec(), CHECKPOINT, settings)
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "3Gi"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "512Mi"}


def test_multi_node_finetune_is_an_indexed_job_with_headless_service():
    spec = finetune_spec(nodes=3)
    service, job = finetune.build_finetune_children(parent("FinetuneJob"), spec, CHECKPOINT, SETTINGS)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert service["spec"]["clusterIP"] == "None"
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"] == "demo-finetune"


# --- PretrainJob ------------------------------------------------------------------------------

def test_pretrain_multi_node_distributed_environment():
    spec = PRETRAIN_JOB.parse_spec({"spec": {
        "modelName": "pythia-14m", "tokenizerRef": {"name": "pythia"}, "nodes": 2, "gpusPerNode": 4,
        "data": {"file": {"claimName": "corpus", "path": "tinystories"}}, "train": {"maxTokens": 1000000}}})
    sources = PretrainSources(tokenizer=CHECKPOINT)
    service, job = pretrain.build_pretrain_children(parent("PretrainJob", "pt"), spec, sources, SETTINGS)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    assert job["spec"]["parallelism"] == 2
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] == "pt-pretrain"
    env = {e["name"]: e for e in container(job)["env"]}
    assert env["MASTER_ADDR"]["value"] == "pt-pretrain-0.pt-pretrain"
    assert env["MASTER_PORT"]["value"] == "29500" and env["WORLD_SIZE"]["value"] == "8"
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert container(job)["command"] == [
        "litgpt", "pretrain", "pythia-14m", "--out_dir", "/output/pretrains/pt",
        "--tokenizer_dir", "/models/checkpoints/EleutherAI/pythia-14m",
        "--data", "TextFiles", "--data.train_data_path", "/data/tinystories", "--data.val_split_fraction", "0.05",
        "--train.max_tokens", "1000000", "--train.global_batch_size", "16", "--train.micro_batch_size", "1",
        "--devices", "4", "--num_nodes", "2", "--resume", "auto",
    ]
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "pt-pretrain"}
    assert service["spec"]["publishNotReadyAddresses"] is True


def test_pretrain_continued_from_checkpoint_with_inline_config():
    spec = PRETRAIN_JOB.parse_spec({"spec": {
        "modelConfig": {"n_layer": 2, "n_embd": 32}, "fromScratch": False, "initialCheckpoint": {"name": "pythia"},
        "gpusPerNode": 0, "data": {"file": {"claimName": "corpus", "path": "text"}}}})
    configmap, job = pretrain.build_pretrain_children(parent("PretrainJob", "pt"), spec,
                                                      PretrainSources(initial=CHECKPOINT), SETTINGS)
    assert "n_layer: 2" in configmap["data"]["model_config.yaml"]
    command = container(job)["command"]
    assert command[:4] == ["litgpt", "pretrain", "--model_config", "/config/model_config.yaml"]
    assert command[command.index("--initial_checkpoint_dir") + 1] == "/models/checkpoints/EleutherAI/pythia-14m"
    assert "limits" not in container(job)["resources"]  # 0 GPUs: none requested
    assert mounts(job)["/models"] is True


def test_a_claim_mounted_twice_is_one_volume_with_per_mount_read_only():
    """Output into the claim the model comes from: one pod volume for the claim (the kubelet
    mounts a claim once per pod, whatever the pod's volume names), writable because /output is;
    /models stays read-only through its own mount."""
    spec = PRETRAIN_JOB.parse_spec({"spec": {"fromScratch": False, "initialCheckpoint": {"name": "pythia"},
                                             "data": {"file": {"claimName": "model-cache", "path": "text"}}}})
    (job,) = pretrain.build_pretrain_children(parent("PretrainJob", "pt"), spec, PretrainSources(initial=CHECKPOINT),
                                              SETTINGS)
    claims = [v for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert [v["persistentVolumeClaim"] for v in claims] == [{"claimName": "model-cache", "readOnly": False}]
    assert mounts(job) == {"/tmp": False, "/dev/shm": False, "/models": True, "/output": False, "/data": True}
    assert {m["name"] for m in container(job)["volumeMounts"] if m["mountPath"] not in ("/tmp", "/dev/shm")} == \
        {claims[0]["name"]}
    # a claim only read stays read-only at the volume too
    spec = PRETRAIN_JOB.parse_spec({"spec": {"fromScratch": False, "initialCheckpoint": {"name": "pythia"},
                                             "output": {"claimName": "results"},
                                             "data": {"file": {"claimName": "model-cache", "path": "text"}}}})
    (job,) = pretrain.build_pretrain_children(parent("PretrainJob", "pt"), spec, PretrainSources(initial=CHECKPOINT),
                                              SETTINGS)
    by_claim = {v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
                for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert by_claim == {"model-cache": True, "results": False}


# --- ModelServer ------------------------------------------------------------------------------

def test_server_deployment_service_and_probe():
    spec = MODEL_SERVER.parse_spec({"spec": {"modelRef": {"name": "pythia"}, "replicas": 2, "gpus": 1}})
    p = parent("ModelServer", "chat")
    source = ServeSource(CHECKPOINT)
    deployment = server.build_deployment(p, spec, source, SETTINGS)
    assert deployment["spec"]["replicas"] == 2
    c = container(deployment)
    assert c["command"] == ["litgpt", "serve", "EleutherAI/pythia-14m", "--checkpoint_root_dir", "/models/checkpoints",
                            "--host", "0.0.0.0", "--port", "8000", "--accelerator", "cuda", "--devices", "1",
                            "--drain_timeout", "45"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8000}]
    assert mounts(deployment)["/models"] is True
    assert deployment["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert_restricted(deployment["spec"]["template"]["spec"])
    service = server.build_service(p, spec)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8000
    assert server.build_hpa(p, spec) is None
    assert server.url(p, spec) == "http://chat.team-a.svc:8000"


def test_server_rolls_without_dropping_requests_and_is_scraped():
    """A new pod answers /ready before an old one stops; an old one gets a preStop pause and time
    to finish its requests (the runtime drains on SIGTERM for --drain_timeout s, within the grace
    period); Prometheus finds /metrics by the usual annotations."""
    spec = MODEL_SERVER.parse_spec({"spec": {"modelRef": {"name": "pythia"}, "port": 9000,
                                             "podMetadata": {"annotations": {"team": "nlp"}}}})
    deployment = server.build_deployment(parent("ModelServer", "chat"), spec, ServeSource(CHECKPOINT), SETTINGS)
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = deployment["spec"]["template"]
    c = container(deployment)
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": server.PRE_STOP_SECONDS}}
    drain = int(c["command"][c["command"].index("--drain_timeout") + 1])
    assert server.PRE_STOP_SECONDS + drain < pod["spec"]["terminationGracePeriodSeconds"]
    annotations = pod["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9000", "prometheus.io/path": "/metrics"}
    assert annotations["team"] == "nlp"
    from litgpt_runtime.serve.readiness import PROBE_TIMEOUT_SECONDS

    assert c["readinessProbe"]["timeoutSeconds"] > PROBE_TIMEOUT_SECONDS  # the runtime answers 503 first


def test_server_with_adapters_mounts_each_output_and_names_it():
    spec = MODEL_SERVER.parse_spec({"spec": {"modelRef": {"name": "pythia"}, "adapters": [
        {"name": "support", "finetuneRef": {"name": "ft-support"}},
        {"name": "legal", "finetuneRef": {"name": "ft-legal"}}]}})
    source = ServeSource(CHECKPOINT, adapters=(
        server.AdapterSource("support", OutputLocation("model-cache", "finetunes/ft-support")),
        server.AdapterSource("legal", OutputLocation("results", "finetunes/ft-legal"))))
    deployment = server.build_deployment(parent("ModelServer", "chat"), spec, source, SETTINGS)
    command = container(deployment)["command"]
    assert command[2] == "EleutherAI/pythia-14m"  # one copy of the base weights
    assert command[command.index("--adapters") + 1] == (
        "support=/adapters/model-cache/finetunes/ft-support/final,legal=/adapters/results/finetunes/ft-legal/final")
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in deployment["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
    by_path = {m["mountPath"]: (claims[m["name"]], m["readOnly"]) for m in container(deployment)["volumeMounts"]
               if m["name"] in claims}
    # the model's own claim is one pod volume, mounted at /models and at /adapters/<claim>
    assert by_path == {"/models": ("model-cache", True), "/adapters/model-cache": ("model-cache", True),
                       "/adapters/results": ("results", True)}
    # another adapter set is another pod template (a rollout); the same one is not
    fewer = ServeSource(CHECKPOINT, adapters=source.adapters[:1])
    digest = lambda s: server.build_deployment(parent("ModelServer", "chat"), spec, s, SETTINGS)[  # noqa: E731
        "spec"]["template"]["metadata"]["annotations"][server.TEMPLATE_ANNOTATION]
    assert digest(source) == digest(source) != digest(fewer)


def test_server_api_key_comes_from_its_secret_only():
    spec = MODEL_SERVER.parse_spec({"spec": {"modelRef": {"name": "pythia"}, "apiKeySecretRef": {"name": "keys"}}})
    deployment = server.build_deployment(parent("ModelServer", "chat"), spec, ServeSource(CHECKPOINT), SETTINGS)
    env = {e["name"]: e for e in container(deployment)["env"]}
    assert env["LITGPT_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "keys", "key": "api-key"}}
    assert "value" not in env["LITGPT_API_KEY"] and "--api_key" not in container(deployment)["command"]
    from litgpt_runtime.serve.auth import ENV_VAR

    assert server.API_KEY_ENV == ENV_VAR  # the variable the runtime reads


def test_server_quantize_reaches_litgpt_serve():
    spec = MODEL_SERVER.parse_spec({"spec": {"modelRef": {"name": "pythia"}, "quantize": "bnb.nf4"}})
    deployment = server.build_deployment(parent("ModelServer", "chat"), spec, ServeSource(CHECKPOINT), SETTINGS)
    command = container(deployment)["command"]
    assert command[command.index("--quantize") + 1] == "bnb.nf4"
    plain = MODEL_SERVER.parse_spec({"spec": {"modelRef": {"name": "pythia"}}})
    assert "--quantize" not in container(server.build_deployment(parent("ModelServer", "chat"), plain,
                                                                 ServeSource(CHECKPOINT), SETTINGS))["command"]
    from litgpt_operator.api.crd import openapi_schema
    from litgpt_runtime.quantize import QUANTIZE_MODES

    fields = openapi_schema(MODEL_SERVER)["properties"]["spec"]["properties"]
    assert tuple(fields["quantize"]["enum"]) == QUANTIZE_MODES  # the runtime's list, one source


def test_server_of_a_finetune_with_autoscaling():
    spec = MODEL_SERVER.parse_spec({"spec": {"finetuneRef": {"name": "ft"}, "autoscaling": {"maxReplicas": 4}}})
    source = ServeSource(CHECKPOINT, OutputLocation("results", "finetunes/ft"))
    deployment = server.build_deployment(parent("ModelServer"), spec, source, SETTINGS)
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert container(deployment)["command"][2] == "/output/finetunes/ft/final"
    assert mounts(deployment)["/output"] is True
    hpa = server.build_hpa(parent("ModelServer"), spec)
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 4
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_pod_metadata_passthrough_keeps_operator_labels():
    spec = MODEL_SERVER.parse_spec({"spec": {"modelRef": {"name": "pythia"}, "podMetadata": {
        "labels": {"team": "nlp", "app.kubernetes.io/managed-by": "someone-else"},
        "annotations": {"sidecar.istio.io/inject": "false"}}}})
    template = server.build_deployment(parent("ModelServer"), spec, ServeSource(CHECKPOINT), SETTINGS)["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "nlp"
    assert template["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "litgpt-operator"
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"


def test_builders_are_deterministic():
    spec = finetune_spec()
    first = finetune.build_finetune_children(parent("FinetuneJob"), spec, CHECKPOINT, SETTINGS)
    assert first == finetune.build_finetune_children(parent("FinetuneJob"), spec, CHECKPOINT, SETTINGS)


def test_continued_pretraining_takes_the_checkpoints_architecture():
    spec = PRETRAIN_JOB.parse_spec({"spec": {"fromScratch": False, "initialCheckpoint": {"name": "pythia"},
                                             "data": {"file": {"claimName": "corpus", "path": "text"}}}})
    (job,) = pretrain.build_pretrain_children(parent("PretrainJob", "pt"), spec, PretrainSources(initial=CHECKPOINT),
                                              SETTINGS)
    command = container(job)["command"]
    assert command[:4] == ["litgpt", "pretrain", "--out_dir", "/output/pretrains/pt"]
    assert "--model_config" not in command
    # the tokenizer defaults to the initial checkpoint's
    assert command[command.index("--tokenizer_dir") + 1] == "/models/checkpoints/EleutherAI/pythia-14m"


# --- weight integrity ---------------------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32


def _env(obj: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(obj)["env"]}


def test_model_status_digest_reaches_the_pods_that_load_its_weights():
    body = {"metadata": {"name": "pythia"}, "spec": {"repoId": "EleutherAI/pythia-14m",
                                                     "checkpointRootPVC": {"claimName": "model-cache"}},
            "status": {"phase": "Ready", "digest": DIGEST}}
    checked = ModelCheckpoint.from_body(body)
    assert checked.digest == DIGEST
    (job,) = finetune.build_finetune_children(parent("FinetuneJob"), finetune_spec(), checked, SETTINGS)
    assert _env(job)["LITGPT_EXPECTED_DIGEST"] == DIGEST
    serve_spec = MODEL_SERVER.parse_spec({"spec": {"modelRef": {"name": "pythia"}}})
    deployment = server.build_deployment(parent("ModelServer"), serve_spec, ServeSource(checked), SETTINGS)
    assert _env(deployment)["LITGPT_EXPECTED_DIGEST"] == DIGEST
    pretrain_spec = PRETRAIN_JOB.parse_spec({"spec": {
        "fromScratch": False, "initialCheckpoint": {"name": "pythia"}, "gpusPerNode": 0,
        "data": {"file": {"claimName": "corpus", "path": "text"}}}})
    children = pretrain.build_pretrain_children(parent("PretrainJob", "pt"), pretrain_spec, PretrainSources(initial=checked), SETTINGS)
    job = next(c for c in children if c["kind"] == "Job")
    assert _env(job)["LITGPT_EXPECTED_DIGEST"] == DIGEST


def test_no_digest_no_verification_and_finetune_outputs_are_not_checked_against_the_base():
    (job,) = finetune.build_finetune_children(parent("FinetuneJob"), finetune_spec(), CHECKPOINT, SETTINGS)
    assert "LITGPT_EXPECTED_DIGEST" not in _env(job)  # a model downloaded before digests existed
    checked = ModelCheckpoint("pythia", "EleutherAI/pythia-14m", "model-cache", DIGEST)
    spec = MODEL_SERVER.parse_spec({"spec": {"finetuneRef": {"name": "ft"}}})
    deployment = server.build_deployment(parent("ModelServer"), spec,
                                         ServeSource(checked, OutputLocation("results", "finetunes/ft")), SETTINGS)
    assert "LITGPT_EXPECTED_DIGEST" not in _env(deployment)


def test_download_job_ends_at_once_on_a_refusal():
    """401/403 (exit 3) and 404 (exit 4) cannot succeed on another pod: the Job fails at once
    instead of running backoffLimit + 1 pods; a stall (5) or a bad file (6) stays retryable."""
    spec = LITGPT_MODEL.parse_spec({"spec": {"repoId": "EleutherAI/pythia-14m", "checkpointRootPVC": {"claimName": "m"}}})
    job = model.build_download_job(parent("LitGPTModel"), spec, SETTINGS)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["containerName"] == common.CONTAINER
    assert {3, 4} <= set(rule["onExitCodes"]["values"]) and not {5, 6} & set(rule["onExitCodes"]["values"])


def test_download_job_names_its_termination_log():
    job = model.build_download_job(parent("LitGPTModel"), model_spec(), SETTINGS)
    assert _env(job)["LITGPT_TERMINATION_LOG"] == "/dev/termination-log"


def test_a_model_at_a_revision_is_read_from_its_revision_folder():
    """`litgpt download org/name --revision v2` writes `checkpoints/org/name@v2` (so two revisions of
    one repo never share a folder): the finetune, the server and the status must name that folder,
    not the default branch's."""
    from litgpt_operator.builders.sources import checkpoint_path

    at_v2 = ModelCheckpoint("pythia", "EleutherAI/pythia-14m", "model-cache", revision="v2")
    (job,) = finetune.build_finetune_children(parent("FinetuneJob"), finetune_spec(), at_v2, SETTINGS)
    assert container(job)["command"][:3] == ["litgpt", "finetune_lora", "EleutherAI/pythia-14m@v2"]
    serve = MODEL_SERVER.parse_spec({"spec": {"modelRef": {"name": "pythia"}}})
    deployment = server.build_deployment(parent("ModelServer", "chat"), serve, ServeSource(at_v2), SETTINGS)
    assert container(deployment)["command"][:3] == ["litgpt", "serve", "EleutherAI/pythia-14m@v2"]
    assert at_v2.mounted_dir == "/models/checkpoints/EleutherAI/pythia-14m@v2"
    assert checkpoint_path("EleutherAI/pythia-14m", "v2") == "checkpoints/EleutherAI/pythia-14m@v2"
    assert checkpoint_path("EleutherAI/pythia-14m", "main") == checkpoint_path("EleutherAI/pythia-14m")
    body = {"metadata": {"name": "pythia"}, "spec": {"repoId": "EleutherAI/pythia-14m", "revision": "v2",
                                                      "checkpointRootPVC": {"claimName": "model-cache"}}}
    assert ModelCheckpoint.from_body(body).ref == "EleutherAI/pythia-14m@v2"
