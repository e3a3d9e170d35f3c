"""`litgpt_runtime.fit`: the memory estimate behind `litgpt fit_check` and the operator's ResourcesFit.

Verdicts on known configurations, exact parameter counts against the real models (base and PEFT),
the activation term against what autograd really saves on a tiny model, and the import contract
(no torch: the operator image has none).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from litgpt_runtime import fit
from litgpt_runtime.config import Config
from litgpt_runtime.methods import LoRAOptions

LLAMA_8B = "meta-llama/Llama-3.1-8B"
LLAMA_1B = "meta-llama/Llama-3.2-1B"


def verdict(model: str, gpu_gb: float, **setup) -> fit.FitReport:
    return fit.check(Config.from_name(model), fit.TrainingSetup(**setup), gpu_gb)


# --- verdicts on known configurations ------------------------------------------------------------

def test_8b_full_finetune_does_not_fit_one_24gb_gpu_and_lora_is_suggested():
    report = verdict(LLAMA_8B, 24, method="full", precision="bf16-true", max_seq_length=512)
    assert not report.fits
    # weights + gradients + AdamW states alone are 4 x 16 GB
    assert report.estimate.total_gib > 4 * 8.03e9 * 2 / fit.GIB
    assert "method lora instead of full" in report.suggestion
    assert "does not fit in 24 GiB" in report.message and "Try:" in report.message
    # every suggestion really fits
    assert report.alternatives and all(est.total_gib <= 24 for _, _, est in report.alternatives)


def test_8b_lora_bf16_fits_one_24gb_gpu():
    report = verdict(LLAMA_8B, 24, method="lora", precision="bf16-true", max_seq_length=512)
    assert report.fits, report.message
    assert report.suggestion is None
    # Published LoRA runs of Llama 3 8B at bf16-true peak near 20 GB: the estimate is in that range.
    assert 16 < report.estimate.total_gib < 24


def test_8b_lora_with_float32_master_weights_does_not_fit_24gb():
    """bf16-mixed keeps the frozen base in float32 (32 GB): the suggestion is bf16-true."""
    report = verdict(LLAMA_8B, 24, method="lora", precision="bf16-mixed", max_seq_length=512)
    assert not report.fits
    assert report.suggestion.startswith("precision bf16-true")


def test_1b_full_finetune_fits_80gb():
    report = verdict(LLAMA_1B, 80, method="full", precision="bf16-mixed", max_seq_length=2048)
    assert report.fits, report.message


def test_more_gpus_only_help_when_sharded():
    base = dict(method="full", precision="bf16-true", max_seq_length=512)
    one = verdict(LLAMA_8B, 80, **base).estimate.total
    ddp = verdict(LLAMA_8B, 80, devices=8, strategy="auto", **base).estimate.total
    fsdp = verdict(LLAMA_8B, 80, devices=8, strategy="fsdp", **base).estimate.total
    assert ddp >= one  # every DDP rank holds everything (plus gradient buckets)
    assert fsdp < one / 3
    assert verdict(LLAMA_8B, 24, devices=8, strategy="fsdp", **base).fits


def test_smaller_micro_batch_is_suggested_when_it_is_enough():
    report = verdict(LLAMA_1B, 24, method="lora", precision="bf16-true", micro_batch_size=16, max_seq_length=2048)
    assert not report.fits
    first_words, candidate, est = report.alternatives[0]
    assert first_words.startswith("micro-batch size") and candidate.micro_batch_size < 16
    assert est.total_gib <= 24


def test_memory_grows_with_batch_and_sequence():
    small = verdict(LLAMA_1B, 80, micro_batch_size=1, max_seq_length=512).estimate
    assert verdict(LLAMA_1B, 80, micro_batch_size=2, max_seq_length=512).estimate.total > small.total
    assert verdict(LLAMA_1B, 80, micro_batch_size=1, max_seq_length=1024).estimate.total > small.total


def test_bad_inputs_are_user_errors():
    from litgpt_runtime.errors import UserError

    with pytest.raises(UserError, match="method"):
        fit.TrainingSetup(method="qlora")
    with pytest.raises(UserError, match="precision"):
        fit.TrainingSetup(precision="fp8")
    with pytest.raises(UserError, match="micro_batch_size"):
        fit.TrainingSetup(micro_batch_size=0)
    with pytest.raises(UserError, match="gpu_memory_gb"):
        fit.check(Config.from_name(LLAMA_1B), fit.TrainingSetup(), 0)


# --- parameter counts against the real models ----------------------------------------------------

def test_published_parameter_counts():
    assert fit.count_parameters(Config.from_name(LLAMA_8B)) == 8_030_261_248
    assert fit.count_parameters(Config.from_name(LLAMA_1B)) == 1_235_814_400
    assert fit.count_parameters(Config.from_name("EleutherAI/pythia-160m")) == 162_322_944


TINY = {
    "llama-gqa-tied": dict(norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", n_query_groups=2, tie_embeddings=True),
    "neox": dict(bias=True, parallel_residual=True, rotary_percentage=0.25),
    "qwen-attn-bias": dict(norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", attn_bias=True, n_query_groups=1),
    "gemma3-like": dict(norm_class_name="RMSNorm", mlp_class_name="GemmaMLP", post_attention_norm=True,
                        post_mlp_norm=True, norm_qk=True, head_size=16, n_query_groups=2, lm_head_bias=True),
}


def tiny(traits: dict) -> Config:
    return Config(n_layer=3, n_embd=32, n_head=4, intermediate_size=48, vocab_size=100, padded_vocab_size=128,
                  block_size=64, **traits)


def numel(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@pytest.mark.parametrize("family", TINY)
def test_counts_match_the_models_the_runtime_builds(family):
    from litgpt_runtime.model import GPT
    from litgpt_runtime.peft import adapter, adapter_v2, lora

    config = tiny(TINY[family])
    assert fit.count_parameters(config) == numel(GPT(config))

    targets = LoRAOptions(r=4, query=True, key=True, value=False, projection=True, mlp=True,
                          head=not config.tie_embeddings)
    model = lora.GPT(lora.Config.from_base(config, lora_r=4, lora_query=True, lora_key=True, lora_value=False,
                                           lora_projection=True, lora_mlp=True, lora_head=targets.head))
    lora.mark_only_lora_as_trainable(model)
    setup = fit.TrainingSetup(method="lora", lora=targets)
    assert fit.trainable_parameters(config, setup) == numel(model, trainable_only=True)
    assert fit.count_parameters(config) + fit.added_parameters(config, setup) == numel(model)

    for method, module, mark in (("adapter", adapter, adapter.mark_only_adapter_as_trainable),
                                 ("adapter_v2", adapter_v2, adapter_v2.mark_only_adapter_v2_as_trainable)):
        setup = fit.TrainingSetup(method=method, adapter_prompt_length=5, adapter_start_layer=1)
        model = module.GPT(adapter.Config.from_base(config, adapter_prompt_length=5, adapter_start_layer=1))
        mark(model)
        assert fit.trainable_parameters(config, setup) == numel(model, trainable_only=True), method
        assert fit.count_parameters(config) + fit.added_parameters(config, setup) == numel(model), method


# --- the activation term against what autograd saves ---------------------------------------------

def saved_bytes(model, batch: int, seq: int) -> int:
    """Bytes of the distinct storages autograd keeps for backward (parameters excluded)."""
    import torch

    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    idx = torch.randint(0, model.config.vocab_size, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(idx)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), idx.flatten())
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(nbytes for ptr, nbytes in storages.items() if ptr not in params)


@pytest.mark.parametrize("family", ["llama-gqa-tied", "neox"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_activation_estimate_tracks_what_autograd_saves(family, method):
    import torch

    from litgpt_runtime.model import GPT
    from litgpt_runtime.peft import lora

    torch.manual_seed(0)
    config = Config(n_layer=4, n_embd=256, n_head=8, intermediate_size=768, vocab_size=512, block_size=256,
                    **{k: v for k, v in TINY[family].items() if k != "tie_embeddings"})
    if method == "full":
        model = GPT(config)
    else:
        model = lora.GPT(lora.Config.from_base(config))
        lora.mark_only_lora_as_trainable(model)
    measured = saved_bytes(model, batch=2, seq=256)
    est = fit.estimate(config, fit.TrainingSetup(method=method, precision="32-true", micro_batch_size=2,
                                                 max_seq_length=256))
    estimated = est.parts["activations"] + est.parts["logits"]
    # Errs towards "does not fit", but not wildly: within [-20 %, +60 %] of the real figure.
    assert 0.8 * measured <= estimated <= 1.6 * measured, (measured, estimated)


# --- import contract and CLI ---------------------------------------------------------------------

def test_fit_and_config_import_without_torch():
    """The operator image has no torch: importing must not even try (torch is blocked here)."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import litgpt_runtime.fit, litgpt_runtime.config\n"
            "from litgpt_runtime.config import Config\n"
            "r = litgpt_runtime.fit.check(Config.from_name('meta-llama/Llama-3.2-1B'), litgpt_runtime.fit.TrainingSetup(), 80)\n"
            "assert r.fits\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "litgpt_runtime", "fit_check", *args], capture_output=True, text=True)


def test_cli_exit_status_says_the_verdict():
    no = run_cli(LLAMA_8B, "--method", "full", "--gpu_memory_gb", "24", "--precision", "bf16-true")
    assert no.returncode == fit.EXIT_DOES_NOT_FIT, no.stderr
    assert "does not fit in 24 GiB" in no.stdout and "method lora" in no.stdout
    yes = run_cli(LLAMA_8B, "--method", "lora", "--gpu_memory_gb", "24", "--precision", "bf16-true",
                  "--max_seq_length", "512", "--json_output", "true")
    assert yes.returncode == 0, yes.stderr
    report = json.loads(yes.stdout)
    assert report["fits"] is True and report["model"] == LLAMA_8B and report["trainableParameters"] > 0


def test_cli_reads_a_checkpoint_folder(tmp_path):
    tiny(TINY["neox"]).save(tmp_path / "ckpt")
    result = run_cli(str(tmp_path / "ckpt"), "--method", "full", "--gpu_memory_gb", "2")
    assert result.returncode == 0, result.stderr
    assert "fits in 2 GiB" in result.stdout and "64 tokens" in result.stdout


def test_cli_unknown_model_is_one_clear_message():
    result = run_cli("nobody/no-such-model", "--gpu_memory_gb", "24")
    assert result.returncode == 1
    assert "Unknown model 'nobody/no-such-model'" in result.stderr and "Traceback" not in result.stderr
