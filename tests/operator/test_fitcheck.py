"""ResourcesFit: the operator's verdict before it creates a training Job (litgpt_runtime.fit underneath)."""

from __future__ import annotations

import subprocess
import sys

from tests.operator.finetune_bodies import finetune_body

from litgpt_operator import fitcheck
from litgpt_operator.api import FINETUNE_JOB

LLAMA_8B = "meta-llama/Llama-3.1-8B"


def verdict(annotations=None, default=None, repo_id=LLAMA_8B, **spec):
    body = finetune_body(annotations=annotations, **spec)
    parsed = FINETUNE_JOB.parse_spec(body)
    return fitcheck.resources_fit(body, repo_id, parsed.method, parsed, parsed.lora, default)


def test_8b_full_finetune_on_24gb_is_refused_with_a_suggestion():
    cond = verdict({fitcheck.GPU_MEMORY_ANNOTATION: "24"}, method="full", precision="bf16-true",
                   train={"maxSeqLength": 512, "microBatchSize": 1, "globalBatchSize": 8})
    assert (cond.type, cond.status, cond.reason) == ("ResourcesFit", "False", "InsufficientGPUMemory")
    assert "does not fit in 24 GiB" in cond.message and "method lora instead of full" in cond.message
    assert cond.warning


def test_qlora_is_estimated_at_its_quantized_size():
    """FinetuneJob.quantize: the fit check counts the frozen weights at 4 bits (as `litgpt fit_check
    --quantize` does), so an 8B LoRA that does not fit in 16 GiB fits as QLoRA."""
    train = {"maxSeqLength": 512, "microBatchSize": 1, "globalBatchSize": 8}
    plain = verdict({fitcheck.GPU_MEMORY_ANNOTATION: "16"}, method="lora", precision="bf16-true", train=train)
    qlora = verdict({fitcheck.GPU_MEMORY_ANNOTATION: "16"}, method="lora", quantize="bnb.nf4", train=train)
    assert (plain.status, qlora.status) == ("False", "True"), (plain.message, qlora.message)


def test_qlora_reaches_the_pod_command_line():
    from tests.operator.finetune_bodies import finetune_children

    job = finetune_children(finetune_body(method="lora", quantize="bnb.nf4-dq"))[-1]
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--quantize") + 1] == "bnb.nf4-dq"
    plain = finetune_children(finetune_body(method="lora"))[-1]
    assert "--quantize" not in plain["spec"]["template"]["spec"]["containers"][0]["command"]


def test_8b_lora_on_24gb_fits():
    cond = verdict({fitcheck.GPU_MEMORY_ANNOTATION: "24"}, method="lora", precision="bf16-true",
                   train={"maxSeqLength": 512, "microBatchSize": 1, "globalBatchSize": 8})
    assert (cond.status, cond.reason) == ("True", "EstimatedToFit")


def test_default_gpu_memory_comes_from_the_operator_and_the_annotation_wins():
    spec = dict(method="full", precision="bf16-true", train={"maxSeqLength": 512, "globalBatchSize": 8})
    assert verdict(default=40.0, **spec).status == "False"  # 8B full needs ~4 x 16 GB
    assert verdict(default=24.0, annotations={fitcheck.GPU_MEMORY_ANNOTATION: "1000"}, **spec).status == "True"


def test_unknown_inputs_do_not_block():
    assert verdict(method="full").status == "Unknown"  # no GPU size anywhere
    assert verdict({fitcheck.GPU_MEMORY_ANNOTATION: "24"}, repo_id="someone/custom-model").reason == "ModelSizeUnknown"
    assert verdict({fitcheck.GPU_MEMORY_ANNOTATION: "lots"}).reason == "GPUMemoryUnknown"
    assert verdict({fitcheck.GPU_MEMORY_ANNOTATION: "24", fitcheck.SKIP_ANNOTATION: "true"},
                   method="full").reason == "CheckSkipped"
    assert verdict({fitcheck.GPU_MEMORY_ANNOTATION: "24"}, gpusPerNode=0) is None  # CPU run


def test_fit_check_needs_no_torch_in_the_operator():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from litgpt_operator import fitcheck\n"
            "from litgpt_operator.api import FINETUNE_JOB\n"
            "body = {'metadata': {'annotations': {'litgpt.dev/gpu-memory-gb': '24'}},"
            " 'spec': {'modelRef': {'name': 'm'}, 'data': {'inline': '[]'}, 'method': 'full'}}\n"
            "s = FINETUNE_JOB.parse_spec(body)\n"
            "c = fitcheck.resources_fit(body, 'meta-llama/Llama-3.1-8B', s.method, s, s.lora)\n"
            "assert c.status == 'False', c\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pretrain_from_an_inline_config_is_checked_as_full_training():
    from litgpt_operator.api import PRETRAIN_JOB

    body = {"metadata": {"annotations": {fitcheck.GPU_MEMORY_ANNOTATION: "24"}},
            "spec": {"modelConfig": {"n_layer": 32, "n_embd": 4096, "n_head": 32, "vocab_size": 128256,
                                     "intermediate_size": 14336, "mlp_class_name": "LLaMAMLP",
                                     "norm_class_name": "RMSNorm"},
                     "data": {"file": {"claimName": "corpus", "path": "text"}}, "gpusPerNode": 1}}
    spec = PRETRAIN_JOB.parse_spec(body)
    cond = fitcheck.resources_fit(body, spec.architecture, "full", spec)
    assert cond.status == "False" and "full at bf16-mixed" in cond.message
    bad = fitcheck.resources_fit(body, {"n_layer": "many"}, "full", spec)
    assert bad.status == "Unknown"
