"""Many LoRA finetunes on one copy of the base: `litgpt serve <base> --adapters name=path,...`.

Each adapter is the output of `litgpt finetune_lora --merge false` (`lit_lora.safetensors` plus
`hyperparameters.yaml` with its LoRA settings). Every Linear that any adapter targets becomes a
`MultiLoRALinear` holding all adapters' factors stacked, slot 0 being zeros (the base):

    A_t:  (N+1, in, R)     each adapter's A^T, its rank padded with zeros to the largest R
    up_t: (N+1, R, out)    each adapter's B^T (parts of a fused qkv placed in their columns),
                           pre-multiplied by its alpha / r

and a step whose rows use adapters `idx` (B,) adds, in the same batched forward as the base,

    y = x W^T + b  +  bmm(bmm(x, A_t[idx]), up_t[idx])        x: (B, T, in)

so rows of different adapters (and of the base) share every decode step. A step with only base rows
skips the product altogether. Zero padding contributes exact zeros, so a row computes the same
update as that adapter alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt_runtime.errors import UserError
from litgpt_runtime.finetune.lora import LORA_FILE
from litgpt_runtime.train.outputs import HPARAMS_FILE
# what must agree between the base and the model an adapter was trained on
_SHAPE_FIELDS = ("n_layer", "n_embd", "n_head", "n_query_groups", "head_size", "intermediate_size",
                 "padded_vocab_size", "bias")


def parse_adapters(spec: Optional[str], base_names: set[str]) -> dict[str, Path]:
    """`name=path[,name=path...]` -> {name: folder}, checked: names unique and new, folders LoRA outputs."""
    if spec is None or not spec.strip():
        return {}
    adapters: dict[str, Path] = {}
    for item in spec.split(","):
        name, sep, path = item.strip().partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise UserError(f"--adapters item {item.strip()!r} is not name=path; write e.g. "
                            "--adapters support=out/lora-support/final,legal=out/lora-legal/final.")
        if name in adapters or name in base_names:
            raise UserError(f"--adapters name {name!r} is used twice (or is the base model's name); give each "
                            "adapter its own name: clients pick it with \"model\".")
        folder = Path(path)
        if not (folder / LORA_FILE).is_file():
            raise UserError(f"Adapter {name!r}: {folder} holds no {LORA_FILE}. Pass the final/ folder of "
                            "`litgpt finetune_lora ... --merge false` (a merged finetune is a whole model: "
                            "serve it on its own).")
        adapters[name] = folder
    return adapters


@dataclass
class AdapterRows:
    """Which adapter each row of the next forward uses: set by the engine before every step,
    read by every MultiLoRALinear. None: all rows are the base."""

    index: Optional[torch.Tensor] = None  # (B,) long, on the model's device


class MultiLoRALinear(nn.Linear):
    """A base Linear (its weight and bias shared, not copied) plus N stacked LoRA updates."""

    def __init__(self, base: nn.Linear, A_t: torch.Tensor, up_t: torch.Tensor, rows: AdapterRows) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.register_buffer("A_t", A_t, persistent=False)
        self.register_buffer("up_t", up_t, persistent=False)
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        index = self.rows.index
        if index is None:
            return out
        shape = out.shape
        x3 = x.reshape(shape[0], -1, self.in_features)  # (B, T, in)
        low = torch.bmm(x3, self.A_t.index_select(0, index))  # (B, T, R)
        return torch.baddbmm(out.reshape(shape[0], -1, self.out_features), low,
                             self.up_t.index_select(0, index)).view(shape)


def _read_adapter(name: str, folder: Path, base_config, base_dir: Path):
    """The adapter's LoRA config and weights, after checking it was trained on this base."""
    import yaml

    from litgpt_runtime.checkpoint import load_state_dict
    from litgpt_runtime.config import Config
    from litgpt_runtime.peft.lora import Config as LoRAConfig

    hparams_file = folder / HPARAMS_FILE
    hparams = yaml.safe_load(hparams_file.read_text()) if hparams_file.is_file() else None
    if not isinstance(hparams, dict) or hparams.get("method", "lora") != "lora":
        raise UserError(f"Adapter {name!r}: {folder} is not the output of `litgpt finetune_lora` "
                        f"(its {hparams_file.name} is missing or names another method).")
    if (folder / "model_config.yaml").is_file() or (folder / "config.json").is_file():
        trained_on = Config.from_checkpoint(folder)
        different = [f for f in _SHAPE_FIELDS if getattr(trained_on, f) != getattr(base_config, f)]
        if different:
            raise UserError(f"Adapter {name!r} was trained on a different model than {base_dir} "
                            f"({', '.join(f'{f} {getattr(trained_on, f)} vs {getattr(base_config, f)}' for f in different)}); "
                            "serve it with the base it was finetuned from.")
    settings = {f.name: hparams[f.name] for f in fields(LoRAConfig) if f.name.startswith("lora_") and f.name in hparams}
    return LoRAConfig.from_base(base_config, **settings), load_state_dict(folder / LORA_FILE)


def attach_adapters(model: nn.Module, folders: list[tuple[str, Path]], base_dir: Path) -> AdapterRows:
    """Turn the targeted Linears of `model` (a plain GPT) into MultiLoRALinears holding every
    adapter; adapter i of `folders` is index i + 1 (0 is the base). Returns the rows handle."""
    from litgpt_runtime.peft.lora import GPT as LoRAGPT
    from litgpt_runtime.peft.lora import LoRALinear

    weight = next(model.parameters())
    device, dtype = weight.device, weight.dtype
    factors: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}  # layer -> {adapter: (A, up)}
    for number, (name, folder) in enumerate(folders, start=1):
        lora_config, weights = _read_adapter(name, folder, model.config, base_dir)
        with torch.device("meta"):
            skeleton = LoRAGPT(lora_config)  # only to learn each layer's LoRA layout (qkv parts)
        for layer, module in skeleton.named_modules():
            if not isinstance(module, LoRALinear):
                continue
            try:
                A, B = weights[f"{layer}.lora_A"], weights[f"{layer}.lora_B"]
            except KeyError as missing:
                raise UserError(f"Adapter {name!r}: {folder / LORA_FILE} lacks {missing.args[0]}, which its "
                                "hyperparameters.yaml says it should have; the file is incomplete.") from None
            if A.shape != module.lora_A.shape or B.shape != module.lora_B.shape:
                raise UserError(f"Adapter {name!r}: {layer} has LoRA shapes {tuple(A.shape)}/{tuple(B.shape)}, not "
                                f"{tuple(module.lora_A.shape)}/{tuple(module.lora_B.shape)}; it was trained on "
                                "another model or with other LoRA settings than its hyperparameters.yaml says.")
            module.lora_A = nn.Parameter(A.float(), requires_grad=False)
            module.lora_B = nn.Parameter(B.float(), requires_grad=False)
            with torch.no_grad():
                up = module.up_matrix() * module.scaling  # (out, r * parts)
            factors.setdefault(layer, {})[number] = (module.lora_A.data, up)

    rows = AdapterRows()
    count = len(folders) + 1
    for layer, by_adapter in factors.items():
        base = model.get_submodule(layer)
        rank = max(A.shape[0] for A, _ in by_adapter.values())
        A_t = torch.zeros(count, base.in_features, rank)
        up_t = torch.zeros(count, rank, base.out_features)
        for number, (A, up) in by_adapter.items():
            A_t[number, :, : A.shape[0]] = A.t()
            up_t[number, : A.shape[0]] = up.t()
        parent, _, child = layer.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                MultiLoRALinear(base, A_t.to(device, dtype), up_t.to(device, dtype), rows))
    return rows
