"""Runs inside the real LitGPT's virtualenv (benchmarks/.work/venv-litgpt-<version>), driven by
test_litgpt_peer.py. It imports only `litgpt` (and what LitGPT needs), never our runtime.

    python litgpt_peer.py greedy <litgpt folder> <kind> <n_new> <id> <id> ...   -> JSON list of ids
    python litgpt_peer.py finetunes <litgpt base folder> <out root>             -> writes 4 outputs
    python litgpt_peer.py config <model_config.yaml>                            -> JSON of the fields
    python litgpt_peer.py make-base <LitGPT config name> <out> <tokenizer dir>  -> a tiny LitGPT model

`make-base` writes what `litgpt pretrain` writes (save_config's model_config.yaml and the state
dict in lit_model.pth) for a small random model of a LitGPT built-in architecture.

`finetunes` writes what LitGPT's finetune_lora / finetune_adapter / finetune_adapter_v2 write,
through LitGPT's own save functions and merge_lora, with random (non-zero) trainable weights in
place of a training run: `lora/final` (lit_model.pth.lora + merged lit_model.pth), `lora/step`
(the LoRA file alone, as a step-* folder), `adapter/final`, `adapter_v2/final`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch
import yaml

# LitGPT's default (2) would leave a 2-layer test model without any adapter layer; LitGPT's
# finetune scripts take it from the model config, so a real run with a small model does the same.
START_LAYER = 1


def _load(folder: Path, kind: str):
    from litgpt.config import Config

    config = Config.from_file(folder / "model_config.yaml")
    state = torch.load(folder / "lit_model.pth", weights_only=True) if (folder / "lit_model.pth").is_file() else None
    if kind in ("base", "full", "lora"):
        from litgpt.model import GPT

        model = GPT(config)
        model.load_state_dict(state.get("model", state))
        return model
    hparams = yaml.safe_load((folder / "hyperparameters.yaml").read_text())
    base = torch.load(Path(hparams["checkpoint_dir"]) / "lit_model.pth", weights_only=True)
    if kind == "adapter":
        from litgpt.adapter import GPT, Config as AConfig
    else:
        from litgpt.adapter_v2 import GPT, Config as AConfig
    model = GPT(AConfig(**dataclasses.asdict(config), adapter_start_layer=START_LAYER))
    adapter = torch.load(folder / f"lit_model.pth.{kind}", weights_only=True)
    base.update(adapter.get("model", adapter))
    model.load_state_dict(base)  # as litgpt/generate/adapter*.py does
    return model


@torch.no_grad()
def greedy(folder: Path, kind: str, n_new: int, ids: list[int]) -> list[int]:
    model = _load(folder, kind).eval()
    tokens = torch.tensor([ids])
    out = []
    for _ in range(n_new):
        nxt = int(model(tokens)[0, -1].argmax())
        out.append(nxt)
        tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
    return out


def _write_common(base: Path, out: Path, hparams: dict) -> None:
    from litgpt.parser_config import save_hyperparameters  # noqa: F401  (the file's form: a flat YAML)
    from litgpt.prompts import save_prompt_style
    from litgpt.utils import copy_config_files

    out.mkdir(parents=True, exist_ok=True)
    copy_config_files(base, out)
    (out / "hyperparameters.yaml").write_text(yaml.safe_dump({"checkpoint_dir": str(base), "precision": "32-true",
                                                               **hparams}))
    save_prompt_style("alpaca", out)


def finetunes(base: Path, root: Path) -> None:
    import lightning as L

    from litgpt.config import Config

    fabric = L.Fabric(accelerator="cpu", devices=1)
    config = Config.from_file(base / "model_config.yaml")
    state = torch.load(base / "lit_model.pth", weights_only=True)
    gen = torch.Generator().manual_seed(3)

    def randomise(model, wanted) -> None:
        for name, p in model.named_parameters():
            if wanted(name, p):
                p.data = torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if name.endswith("adapter_scale") else 0.0)

    # LoRA: query + value + mlp + head, r=4
    from litgpt.finetune.lora import save_lora_checkpoint
    from litgpt.lora import GPT as LoRAGPT, Config as LoRAConfig, lora_filter
    from litgpt.scripts.merge_lora import merge_lora

    lora_settings = dict(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_query=True, lora_key=False, lora_value=True,
                         lora_projection=True, lora_mlp=True, lora_head=True)
    model = LoRAGPT(LoRAConfig(**{**dataclasses.asdict(config), **lora_settings}))
    model.load_state_dict(state, strict=False)
    randomise(model, lambda n, p: lora_filter(n, p))
    for folder in ("final", "step"):
        out = root / "lora" / folder
        _write_common(base, out, lora_settings)
        save_lora_checkpoint(fabric, model, out / "lit_model.pth.lora")
    merge_lora(root / "lora" / "final", base)

    from litgpt.adapter import GPT as AdapterGPT, Config as AdapterConfig, adapter_filter
    from litgpt.finetune.adapter import save_adapter_checkpoint

    model = AdapterGPT(AdapterConfig(**dataclasses.asdict(config), adapter_start_layer=START_LAYER))
    model.load_state_dict(state, strict=False)
    randomise(model, adapter_filter)
    _write_common(base, root / "adapter" / "final", {})
    save_adapter_checkpoint(fabric, model, root / "adapter" / "final" / "lit_model.pth.adapter")

    from litgpt.adapter_v2 import GPT as V2GPT, Config as V2Config, adapter_filter as v2_filter
    from litgpt.finetune.adapter_v2 import save_adapter_v2_checkpoint

    model = V2GPT(V2Config(**dataclasses.asdict(config), adapter_start_layer=START_LAYER))
    model.load_state_dict(state, strict=False)
    randomise(model, lambda n, p: v2_filter(n, p) and ("adapter" in n or "gating" in n))
    _write_common(base, root / "adapter_v2" / "final", {})
    save_adapter_v2_checkpoint(fabric, model, root / "adapter_v2" / "final" / "lit_model.pth.adapter_v2")


TINY = dict(n_layer=3, n_embd=64, n_head=4, n_query_groups=2, head_size=16, intermediate_size=96, vocab_size=320,
            padded_vocab_size=320, block_size=256)
TINY_EXTRA = {  # keep each family's traits at sizes where they matter within a short generation
    "Gemma-3-1b-it": dict(n_layer=6, sliding_window_size=5, attention_scores_scalar=16),
    "Llama-3.2-1B": dict(rope_adjustments=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                               original_max_seq_len=32)),
}


@torch.no_grad()
def make_base(name: str, out: Path, tokenizer_dir: Path) -> None:
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.utils import save_config

    config = Config.from_name(name, **{**TINY, **TINY_EXTRA.get(name, {})})
    torch.manual_seed(4)
    model = GPT(config)
    for pname, p in model.named_parameters():  # decisive logits: weights well away from zero
        if p.dim() > 1:
            p.normal_(0, 0.2)
        elif "norm" in pname:
            p.copy_((0.0 if "Gemma" in name else 1.0) + 0.1 * torch.randn_like(p))
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    torch.save(model.state_dict(), out / "lit_model.pth")
    for file_name in ("tokenizer.json", "tokenizer_config.json"):
        (out / file_name).write_bytes((tokenizer_dir / file_name).read_bytes())


def config_fields(path: Path) -> dict:
    from litgpt.config import Config

    return dataclasses.asdict(Config.from_file(path))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "greedy":
        print(json.dumps(greedy(Path(args[0]), args[1], int(args[2]), [int(a) for a in args[3:]])))
    elif command == "finetunes":
        finetunes(Path(args[0]), Path(args[1]))
    elif command == "make-base":
        make_base(args[0], Path(args[1]), Path(args[2]))
    elif command == "config":
        print(json.dumps(config_fields(Path(args[0])), default=str))
    else:
        raise SystemExit(f"unknown command {command!r}")
