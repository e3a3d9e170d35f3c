"""The real LitGPT 0.5.13 as the peer: checkpoints go through both tools and give the same greedy
tokens (base model, LoRA merged and unmerged, adapter, adapter v2), and each tool loads the
other's model_config.yaml.

LitGPT runs in its own virtualenv, the benchmarks' one (`benchmarks/.work/venv-litgpt-0.5.13`,
made by `python benchmarks/bench_generate.py` or by hand: `python -m venv ...; pip install
litgpt==0.5.13`), or the one $LITGPT_PEER_VENV names; without it these tests are skipped.
Greedy decoding is compared on token ids (no prompt templates involved), in float32.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from litgpt_devcluster.hf_tiny import make_hf_model_dir
from litgpt_runtime.checkpoint import load_model, mark_complete
from litgpt_runtime.config import Config
from litgpt_runtime.convert.from_litgpt import convert
from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint
from litgpt_runtime.convert.to_litgpt import convert_to_litgpt
from litgpt_runtime.generate import generate_tokens

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_VENV = Path(os.environ.get("LITGPT_PEER_VENV", REPO_ROOT / "benchmarks" / ".work" / "venv-litgpt-0.5.13"))
PEER_PYTHON = PEER_VENV / "bin" / "python"
SCRIPT = Path(__file__).with_name("litgpt_peer.py")
PROMPT = [5, 17, 33, 60, 71, 90]
NEW_TOKENS = 16

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PEER_PYTHON.is_file(), reason=f"the real litgpt is not installed in {PEER_VENV} "
                       "(python benchmarks/bench_generate.py creates it, or set LITGPT_PEER_VENV)"),
]


def peer(*args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(OMP_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([str(PEER_PYTHON), str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return (result.stdout.strip().splitlines() or [""])[-1]


def theirs(folder: Path, kind: str) -> list[int]:
    return json.loads(peer("greedy", str(folder), kind, str(NEW_TOKENS), *map(str, PROMPT), cwd=folder))


def ours(folder: Path) -> list[int]:
    return list(generate_tokens(load_model(folder), PROMPT, NEW_TOKENS, temperature=0.0))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(our tiny GQA Llama checkpoint, the same written for LitGPT by convert_to_litgpt)."""
    root = tmp_path_factory.mktemp("peer")
    mine = root / "ours"
    convert_hf_checkpoint(make_hf_model_dir("llama", root / "hf", seed=1), mine)
    mark_complete(mine, repo_id="test/tiny-llama")
    return mine, convert_to_litgpt(mine, root / "litgpt")


def test_our_checkpoint_generates_the_same_in_litgpt(base):
    mine, lit = base
    expected = ours(mine)
    assert theirs(lit, "base") == expected
    convert(lit, out_dir=lit.parent / "back")  # and back again
    assert ours(lit.parent / "back") == expected


@pytest.mark.parametrize("family", ["gemma3", "gpt_neox", "qwen2"])
def test_other_families_round_trip_through_litgpt(family, tmp_path):
    """Sliding windows with a local RoPE base and Gemma's +1 norms, GPT-NeoX's partial RoPE and
    parallel residual, Qwen2's qkv bias and tied head."""
    mine = tmp_path / "ours"
    convert_hf_checkpoint(make_hf_model_dir(family, tmp_path / "hf", seed=1), mine)
    mark_complete(mine, repo_id=f"test/tiny-{family}")
    lit = convert_to_litgpt(mine, tmp_path / "litgpt")
    assert theirs(lit, "base") == ours(mine)


@pytest.mark.parametrize("kind, folder", [
    ("lora", "lora/final"),          # LitGPT merged it: lit_model.pth beside lit_model.pth.lora
    ("lora_step", "lora/step"),      # lit_model.pth.lora alone: merged here onto the base
    ("adapter", "adapter/final"),
    ("adapter_v2", "adapter_v2/final"),
])
def test_litgpt_finetune_outputs_generate_the_same_here(base, kind, folder, tmp_path_factory):
    _, lit = base
    outputs = lit.parent / "finetunes"
    if not outputs.is_dir():
        peer("finetunes", str(lit), str(outputs), cwd=lit.parent)
    source = outputs / folder
    expected = theirs(source if kind != "lora_step" else outputs / "lora/final", kind.replace("_step", ""))
    converted = convert(source, out_dir=tmp_path_factory.mktemp(kind) / "converted")
    assert ours(converted) == expected
    assert ours(convert(source)) == expected  # in place too


@pytest.mark.parametrize("name", ["SmolLM2-135M", "Llama-3.2-1B", "Qwen3-0.6B", "Gemma-3-1b-it", "pythia-14m"])
def test_a_model_litgpt_wrote_generates_the_same_here(name, tmp_path):
    """LitGPT's own files (save_config's model_config.yaml with every field, lit_model.pth) for
    small models of its built-in architectures: GQA, Llama 3 RoPE scaling, q/k norms, sliding
    windows with a local RoPE base and Gemma's +1 norms, GPT-NeoX."""
    from litgpt_devcluster.hf_tiny import make_tokenizer_files

    tokenizer = make_tokenizer_files(tmp_path / "tokenizer")
    lit = tmp_path / "checkpoints" / name
    peer("make-base", name, str(lit), str(tokenizer), cwd=tmp_path)
    expected = theirs(lit, "base")
    Config.from_file(lit / "model_config.yaml")  # LitGPT's own file, every field
    assert ours(convert(lit)) == expected


def test_litgpt_reads_our_model_config(base):
    mine, lit = base
    fields = json.loads(peer("config", str(lit / "model_config.yaml"), cwd=lit))
    config = Config.from_checkpoint(mine)
    for key in ("n_layer", "n_embd", "n_head", "n_query_groups", "head_size", "intermediate_size",
                "padded_vocab_size", "norm_class_name", "mlp_class_name", "parallel_residual", "bias"):
        assert fields[key] == getattr(config, key), key
    assert set(yaml.safe_load((lit / "model_config.yaml").read_text())) <= set(fields)
