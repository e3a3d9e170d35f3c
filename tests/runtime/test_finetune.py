"""Each finetuning method end to end on a tiny model: the loss falls on a memorisation task, only
the intended weights change, and the output folder is a complete checkpoint that loads (and, for
plain weights, exports to transformers with matching logits)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from finetune_tiny import make_checkpoint, write_records
from litgpt_runtime.errors import UserError
from litgpt_runtime.train.args import EvalArgs, TrainArgs
from litgpt_runtime.train.data import JSON

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("base") / "tiny-llama")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return write_records(tmp_path_factory.mktemp("data") / "train.json")


def losses(out_dir: Path) -> list[float]:
    with open(out_dir / "logs" / "metrics.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f) if row.get("loss")]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from litgpt_runtime.checkpoint import load_state_dict

    return {k: v.clone() for k, v in load_state_dict(folder / "model.safetensors").items()}


def finetune(method: str, base_dir: Path, data_file: Path, out_dir: Path, lr: float, steps: int = 16, **extra):
    from importlib import import_module

    setup = import_module(f"litgpt_runtime.finetune.{method}").setup
    train = TrainArgs(global_batch_size=4, micro_batch_size=2, max_steps=steps, lr_warmup_steps=2, learning_rate=lr,
                      save_interval=None, log_interval=1)
    # float32 pinned: the default is bf16-mixed only on CPUs with AMX, and these tests must mean the same everywhere
    extra.setdefault("precision", "32-true")
    setup(str(base_dir), data=JSON(json_path=data_file, val_split_fraction=0.0), out_dir=out_dir, train=train,
          eval=EvalArgs(final_validation=False), **extra)
    return out_dir / "final"


def assert_learned(out_dir: Path, ratio: float = 0.6) -> None:
    seen = losses(out_dir)
    assert len(seen) >= 10
    first, last = sum(seen[:2]) / 2, sum(seen[-3:]) / 3
    assert last < ratio * first, seen


def assert_complete_checkpoint(final: Path) -> None:
    from litgpt_runtime.checkpoint import is_complete

    assert is_complete(final)
    for name in ("model_config.yaml", "tokenizer.json", "tokenizer_config.json", "hyperparameters.yaml"):
        assert (final / name).is_file(), name


def test_full_trains_every_weight(base_dir, data_file, tmp_path):
    final = finetune("full", base_dir, data_file, tmp_path / "full", lr=3e-3)
    assert_learned(tmp_path / "full")
    assert_complete_checkpoint(final)
    before, after = weights(base_dir), weights(final)
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []


def test_lora_changes_only_query_and_value_rows(base_dir, data_file, tmp_path):
    final = finetune("lora", base_dir, data_file, tmp_path / "lora", lr=3e-2, steps=20, lora_dropout=0.0)
    assert_learned(tmp_path / "lora")
    assert_complete_checkpoint(final)
    before, after = weights(base_dir), weights(final)
    assert before.keys() == after.keys()  # merged: a plain checkpoint, no LoRA keys left
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == [f"transformer.h.{i}.attn.qkv.weight" for i in range(2)]
    # tiny llama: 4 query heads, 2 kv groups of 16 dims -> rows [q 0:64 | k 64:96 | v 96:128]
    for key in changed:
        delta = (after[key] - before[key]).abs().sum(dim=1)
        assert (delta[:64] > 0).all() and (delta[64:96] == 0).all() and (delta[96:] > 0).all()
    assert_merged_output_also_serves_as_an_adapter(base_dir, final)


def assert_merged_output_also_serves_as_an_adapter(base_dir: Path, final: Path) -> None:
    """The merged output keeps its LoRA weights: the base with them attached (`litgpt serve
    --adapters`, which a ModelServer's spec.adapters runs) computes what the merged weights do."""
    from litgpt_runtime.checkpoint import load_model
    from litgpt_runtime.finetune.lora import LORA_FILE
    from litgpt_runtime.serve.adapters import attach_adapters

    assert (final / LORA_FILE).is_file()
    base = load_model(base_dir)
    rows = attach_adapters(base, [("tuned", final)], base_dir)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    rows.index = torch.tensor([1])
    with torch.no_grad():
        served, merged = base(ids), load_model(final)(ids)
    torch.testing.assert_close(served, merged, rtol=1e-4, atol=1e-4)  # float32, summation order differs


@pytest.mark.parametrize("variant", ["adapter", "adapter_v2"])
def test_adapters_train_only_their_parameters(base_dir, data_file, tmp_path, variant):
    from litgpt_runtime.checkpoint import load_model

    # A few hundred parameters on a random model learn slowly: a high rate, a looser bar.
    final = finetune(variant, base_dir, data_file, tmp_path / variant, lr=0.3 if variant == "adapter" else 3e-2,
                     steps=40 if variant == "adapter" else 24, adapter_start_layer=0, adapter_prompt_length=8)
    assert_learned(tmp_path / variant, ratio=0.8 if variant == "adapter" else 0.6)
    assert_complete_checkpoint(final)
    before, after = weights(base_dir), weights(final)
    own = sorted(set(after) - set(before))
    changed_base = sorted(k for k in before if not torch.equal(before[k], after[k]))
    if variant == "adapter":
        assert own == sorted(f"transformer.h.{i}.attn.{n}" for i in range(2) for n in ("adapter_wte.weight", "gating_factor"))
        assert changed_base == []
    else:
        assert all("norm" in k or k == "transformer.ln_f.weight" for k in changed_base) and changed_base
        assert {k.rsplit(".", 1)[1] for k in own} == {"weight", "gating_factor", "adapter_bias", "adapter_scale"}
    # `load_model` builds the variant from peft.yaml; its gates opened during training
    model = load_model(final)
    assert type(model).__module__ == f"litgpt_runtime.peft.{variant}"
    assert model.transformer.h[0].attn.gating_factor.abs().sum() > 0


def test_lora_unmerged_then_merge_lora_and_export_matches_transformers(base_dir, data_file, tmp_path):
    """--merge false leaves lit_lora.safetensors; `merge_lora` makes it complete; the export to
    Hugging Face format loads in transformers with the same logits as ours."""
    import transformers

    from litgpt_runtime.checkpoint import is_complete, load_model
    from litgpt_runtime.convert.litgpt_to_hf import convert_to_hf
    from litgpt_runtime.merge_lora import main as merge_lora

    final = finetune("lora", base_dir, data_file, tmp_path / "lora", lr=2e-2, steps=4, merge=False,
                     lora_mlp=True, lora_projection=True, lora_key=True)
    assert (final / "lit_lora.safetensors").is_file() and not is_complete(final)
    merge_lora(final)
    assert is_complete(final) and not (final / "lit_lora.safetensors").exists()
    ours = load_model(final)
    hf_dir = convert_to_hf(final, tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager").eval()
    x = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[..., :320], theirs(x).logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(ours(x), load_model(base_dir)(x), atol=1e-3)  # the finetune is in there


def test_wrong_method_option_and_quantize_mode(base_dir, data_file):
    from litgpt_runtime.finetune import setup

    with pytest.raises(UserError, match="--lora_r belongs to --method lora"):
        setup(str(base_dir), method="full", lora_r=4, data=JSON(json_path=data_file))
    with pytest.raises(UserError, match="--adapter_start_layer belongs to --method adapter / adapter_v2"):
        setup(str(base_dir), adapter_start_layer=1, data=JSON(json_path=data_file))
    with pytest.raises(UserError, match="--quantize 'bnb.q3' is not a mode"):
        setup(str(base_dir), quantize="bnb.q3", data=JSON(json_path=data_file))
    with pytest.raises(UserError, match="--data.json_path"):
        setup(str(base_dir))
