"""QLoRA (`--quantize`): base weights quantized by bitsandbytes as they load, LoRA trains, the
output is an ordinary checkpoint. On the CPU (bitsandbytes 0.49+ runs every mode there)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from finetune_tiny import make_checkpoint, write_records
from litgpt_runtime.errors import UserError
from litgpt_runtime.quantize import QUANTIZE_MODES, mode, quantized_layer_names
from litgpt_runtime.train.args import EvalArgs, TrainArgs
from litgpt_runtime.train.data import JSON

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    # Wider than the default tiny model: 4-bit blocks are 64 weights, int8 rows want some width.
    return make_checkpoint(tmp_path_factory.mktemp("base") / "tiny-llama", hidden_size=128, intermediate_size=256)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return write_records(tmp_path_factory.mktemp("data") / "train.json")


def _losses(out_dir: Path) -> list[float]:
    with open(out_dir / "logs" / "metrics.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f) if row.get("loss")]


def _finetune(base_dir: Path, data_file: Path, out_dir: Path, quantize, steps: int = 12, **extra) -> Path:
    from litgpt_runtime.finetune.lora import setup

    train = TrainArgs(global_batch_size=4, micro_batch_size=2, max_steps=steps, lr_warmup_steps=2,
                      learning_rate=1e-2, save_interval=None, log_interval=1)
    extra.setdefault("precision", "32-true")
    setup(str(base_dir), data=JSON(json_path=data_file, val_split_fraction=0.0), out_dir=out_dir, train=train,
          eval=EvalArgs(final_validation=False), quantize=quantize, **extra)
    return out_dir / "final"


def test_modes_and_their_sizes():
    assert [mode(m).bits for m in QUANTIZE_MODES] == [4, 4, 4, 4, 8]
    assert mode("bnb.nf4-dq").double_quant and not mode("bnb.nf4").double_quant
    assert mode("bnb.fp4").quant_type == "fp4"
    assert mode("bnb.nf4-dq").bytes_per_weight < mode("bnb.nf4").bytes_per_weight < 0.6
    with pytest.raises(UserError, match="choose one of"):
        mode("bnb.nf3")


@pytest.mark.parametrize("name", QUANTIZE_MODES)
def test_quantized_model_loads_without_a_full_precision_copy_and_tracks_the_base(base_dir, name):
    from litgpt_runtime.checkpoint import load_model
    from litgpt_runtime.finetune.common import load_variant
    from litgpt_runtime.finetune.lora import method

    model, _, _ = load_variant(method(lora_r=4, lora_alpha=8, lora_dropout=0.0), base_dir, torch.float32, name, "cpu")
    qkv = model.transformer.h[0].attn.qkv
    assert qkv.weight is None and type(qkv.base).__module__.startswith("bitsandbytes")
    mlp = model.transformer.h[0].mlp.fc_1
    assert type(mlp).__module__.startswith("bitsandbytes")
    assert mlp.weight.dtype == (torch.int8 if name == "bnb.int8" else torch.uint8)
    # no float copy of a block weight anywhere in the model
    floats = {n for n, p in model.named_parameters() if p.is_floating_point() and "lora_" not in n}
    assert not [n for n in floats if n.startswith("transformer.h.") and n.endswith(("qkv.weight", "fc_1.weight"))]
    x = torch.randint(0, 300, (1, 16))
    full = load_model(base_dir)
    with torch.no_grad():
        ours, reference = model(x), full(x)
    if name == "bnb.int8":
        # LLM.int8 also quantizes the activations: close to the full-precision model, not equal
        rel = ((ours - reference).norm() / reference.norm()).item()
        assert rel < 0.1, rel
        return
    # 4-bit: exactly the model whose weights are the dequantized ones (so the layers compute with
    # the right weights in the right places); the quantization error itself is bitsandbytes'.
    for layer_name in quantized_layer_names(full):
        quantized = model.get_submodule(layer_name)
        weight = (quantized.base if hasattr(quantized, "base") else quantized).weight
        full.get_submodule(layer_name).weight.data = bnb.functional.dequantize_4bit(weight.data, weight.quant_state)
    with torch.no_grad():
        torch.testing.assert_close(model(x), full(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", QUANTIZE_MODES)
def test_qlora_trains_and_writes_an_ordinary_checkpoint(base_dir, data_file, tmp_path, name):
    from litgpt_runtime.checkpoint import is_complete, load_model, load_state_dict

    final = _finetune(base_dir, data_file, tmp_path / "out", name)
    seen = _losses(tmp_path / "out")
    assert sum(seen[-3:]) / 3 < 0.7 * sum(seen[:2]) / 2, seen
    assert is_complete(final)
    before, after = load_state_dict(base_dir / "model.safetensors"), load_state_dict(final / "model.safetensors")
    assert before.keys() == after.keys()  # plain keys: no quantization state, no LoRA keys
    assert after["transformer.h.0.attn.qkv.weight"].dtype == before["transformer.h.0.attn.qkv.weight"].dtype
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # the LoRA update went into the checkpoint's own weights (query and value rows of qkv)
    assert changed and all(k.endswith("attn.qkv.weight") for k in changed), changed
    assert torch.equal(before["transformer.h.0.mlp.fc_1.weight"], after["transformer.h.0.mlp.fc_1.weight"])
    load_model(final)  # loads as any checkpoint


@pytest.mark.slow
def test_qlora_unmerged_output_holds_only_lora_weights(base_dir, data_file, tmp_path):
    from litgpt_runtime.checkpoint import load_state_dict
    from litgpt_runtime.finetune.lora import LORA_FILE

    final = _finetune(base_dir, data_file, tmp_path / "out", "bnb.nf4", steps=4, merge=False)
    keys = set(load_state_dict(final / LORA_FILE))
    assert keys and all("lora_" in k for k in keys)


def test_qlora_refuses_mixed_precision_and_fsdp(base_dir, data_file, tmp_path):
    with pytest.raises(UserError, match="does not combine with --precision bf16-mixed"):
        _finetune(base_dir, data_file, tmp_path / "a", "bnb.nf4", precision="bf16-mixed")
    with pytest.raises(UserError, match="fsdp"):
        _finetune(base_dir, data_file, tmp_path / "b", "bnb.nf4", strategy="fsdp")
    with pytest.raises(UserError, match="choose one of"):
        _finetune(base_dir, data_file, tmp_path / "c", "bnb.int4")


# --- the fit check accounts for it ------------------------------------------------------------
def test_fit_check_counts_quantized_weights_at_their_size():
    from litgpt_runtime import fit
    from litgpt_runtime.config import Config

    config = Config.from_name("meta-llama/Llama-2-7b-hf")
    plain = fit.estimate(config, fit.TrainingSetup(method="lora", precision="bf16-true"))
    nf4 = fit.estimate(config, fit.TrainingSetup(method="lora", precision="bf16-true", quantize="bnb.nf4"))
    dq = fit.estimate(config, fit.TrainingSetup(method="lora", precision="bf16-true", quantize="bnb.nf4-dq"))
    int8 = fit.estimate(config, fit.TrainingSetup(method="lora", precision="bf16-true", quantize="bnb.int8"))
    assert dq.parts["weights"] < nf4.parts["weights"] < int8.parts["weights"] < plain.parts["weights"]
    assert 0.25 < nf4.parts["weights"] / plain.parts["weights"] < 0.32  # ~4.5 of 16 bits, embeddings stay
    assert nf4.parts["activations"] == plain.parts["activations"]
    # a LoRA run that does not fit hears about QLoRA
    report = fit.check(config, fit.TrainingSetup(method="lora", precision="bf16-mixed"), 12)
    assert not report.fits and "quantize bnb.nf4 (QLoRA)" in report.suggestion
    with pytest.raises(UserError, match="--method lora"):
        fit.TrainingSetup(method="full", quantize="bnb.nf4")
    with pytest.raises(UserError, match="does not combine"):
        fit.TrainingSetup(method="lora", precision="bf16-mixed", quantize="bnb.nf4")


@pytest.mark.parametrize("name", ["bnb.nf4", "bnb.nf4-dq", "bnb.int8"])
def test_fit_check_quantized_bytes_match_the_model_the_runtime_builds(base_dir, name):
    from litgpt_runtime import fit
    from litgpt_runtime.config import Config
    from litgpt_runtime.finetune.common import load_variant
    from litgpt_runtime.finetune.lora import method
    from litgpt_runtime.quantize import is_quantized_tensor

    model, config, _ = load_variant(method(), base_dir, torch.float32, name, "cpu")
    weights, stored = 0, 0
    for param in model.parameters():
        if not is_quantized_tensor(param):
            continue
        state = getattr(param, "quant_state", None)
        weights += int(torch.Size(state.shape).numel()) if state is not None else param.numel()
        stored += param.data.nbytes
        if state is not None:
            stored += state.absmax.nbytes + (state.state2.absmax.nbytes if state.nested else 0)
        else:
            stored += param.SCB.nbytes
    setup = fit.TrainingSetup(method="lora", precision="32-true", quantize=name)
    assert weights == fit.quantized_parameters(Config.from_checkpoint(base_dir), setup)
    assert stored == pytest.approx(weights * mode(name).bytes_per_weight, rel=0.05)


# --- inference on a quantized base ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["bnb.nf4", "bnb.int8"])
def test_generate_on_a_quantized_base(litgpt, base_dir, name):
    result = litgpt("generate", str(base_dir), "--prompt", "Name the animal.", "--max_new_tokens", "8",
                    "--temperature", "0", "--quantize", name, timeout=300)
    assert result.returncode == 0, result.stderr
    assert ", 8 tokens," in result.stderr
    assert "kernels" not in result.stderr  # bitsandbytes' note about an optional kernel is silenced


def test_inference_model_is_quantized_and_generates(base_dir):
    from litgpt_runtime.generate import generate_tokens
    from litgpt_runtime.quantize import load_quantized_model

    model = load_quantized_model(base_dir, "bnb.nf4", "cpu", torch.float32)
    assert type(model.transformer.h[0].attn.qkv).__module__.startswith("bitsandbytes")
    ids = list(generate_tokens(model, [1, 5, 9], 6, 0.0, None, 1.0, []))
    assert len(ids) == 6


def test_bad_quantize_mode_in_generate_is_one_line(litgpt, base_dir):
    result = litgpt("generate", str(base_dir), "--quantize", "bnb.nf2", timeout=120)
    assert result.returncode == 2 and "bnb.nf4" in result.stderr  # jsonargparse lists the choices
