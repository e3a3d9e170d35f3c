"""Convert a Hugging Face checkpoint folder into ours, one tensor at a time.

Sources are opened lazily (safetensors shards via `safe_open`, `.bin` shards via
`torch.load(mmap=True)`), the output header is planned from shapes alone, and each of our tensors
is built, written and dropped before the next: memory holds one fused tensor, never the model
twice. The folder is *not* marked complete here -- the caller does that when everything
(tokenizer files included) is in place (`litgpt_runtime.checkpoint.mark_complete`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch

from litgpt_runtime.checkpoint import WEIGHTS_FILE, copy_tokenizer_files, unmark_complete
from litgpt_runtime.config import Config
from litgpt_runtime import safetensors_io
from litgpt_runtime.convert.weight_map import hf_to_ours, normalize_hf_key
from litgpt_runtime.errors import UserError


class HFWeights:
    """Lazy access to the tensors of a HF folder: safetensors preferred, `.bin` as fallback."""

    def __init__(self, hf_dir: str | Path) -> None:
        self.hf_dir = Path(hf_dir)
        self._where: dict[str, tuple[object, str]] = {}  # normalized key -> (handle, original key)
        files = self._weight_files("model.safetensors.index.json", "*.safetensors")
        if files:
            from safetensors import safe_open

            for file in files:
                handle = safe_open(str(file), framework="pt")
                for key in handle.keys():
                    self._where[normalize_hf_key(key)] = (handle, key)
            return
        files = self._weight_files("pytorch_model.bin.index.json", "*.bin")
        if not files:
            raise UserError(f"No *.safetensors or *.bin weights in {str(self.hf_dir)!r}.")
        for file in files:
            try:
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) format cannot be mapped
                state = torch.load(file, map_location="cpu", weights_only=True)
            for key in state:
                self._where[normalize_hf_key(key)] = (state, key)

    def _weight_files(self, index_name: str, pattern: str) -> list[Path]:
        index = self.hf_dir / index_name
        if index.is_file():
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            for name in names:  # names from a downloaded file become paths: stay inside the folder
                if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                    raise UserError(f"{index_name} in {str(self.hf_dir)!r} names the shard {name!r}, which is not a "
                                    "plain file name in that folder; refusing to read it.")
            return [self.hf_dir / n for n in names]
        # Mistral repos also ship `consolidated.safetensors` (their own format): not ours to read.
        return sorted(p for p in self.hf_dir.glob(pattern) if not p.name.startswith(("consolidated", "training_args")))

    def keys(self) -> list[str]:
        return list(self._where)

    def get(self, key: str) -> torch.Tensor:
        handle, original = self._where[key]
        if isinstance(handle, dict):
            return handle[original]
        return handle.get_tensor(original)

    def meta(self, key: str, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """A meta tensor with the source's shape and dtype (for planning without reading)."""
        handle, original = self._where[key]
        if isinstance(handle, dict):
            t = handle[original]
            return torch.empty(t.shape, dtype=t.dtype, device="meta")
        sl = handle.get_slice(original)
        return torch.empty(sl.get_shape(), dtype=safetensors_io.DTYPES[sl.get_dtype()], device="meta")


def convert_hf_checkpoint(
    hf_dir: str | Path,
    out_dir: str | Path,
    dtype: Optional[torch.dtype | str] = None,
    repo_id: str = "",
    progress: Optional[Callable[[int, int], None]] = None,
) -> Config:
    """HF folder (config.json + weights + tokenizer files) -> our checkpoint folder (unmarked).

    dtype: store weights in this dtype (e.g. torch.bfloat16 or "bfloat16"); default keeps the source's.
    progress: called with (tensors_done, tensors_total) after each tensor.
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{str(hf_dir)!r} holds no config.json; is it a Hugging Face model folder?")
    config = Config.from_hf_config(json.loads(config_path.read_text()), repo_id=repo_id)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)

    weights = HFWeights(hf_dir)
    try:
        recipes = hf_to_ours(config, weights.keys())
    except KeyError as e:
        raise UserError(f"Cannot convert {str(hf_dir)!r}: {e.args[0]}.") from None

    specs = []
    for recipe in recipes:  # plan shapes on the meta device: nothing is read yet
        planned = recipe.combine([weights.meta(s) for s in recipe.sources])
        specs.append((recipe.target, tuple(planned.shape), dtype if (dtype and planned.is_floating_point()) else planned.dtype))
    by_target = {r.target: r for r in recipes}
    done = 0

    def produce(name: str) -> torch.Tensor:
        nonlocal done
        recipe = by_target[name]
        tensor = recipe.combine([weights.get(s) for s in recipe.sources])
        done += 1
        if progress is not None:
            progress(done, len(recipes))
        return tensor

    out_dir.mkdir(parents=True, exist_ok=True)
    unmark_complete(out_dir)
    stats = safetensors_io.write_streaming(out_dir / WEIGHTS_FILE, specs, produce, metadata={"format": "pt"})
    config.save(out_dir)
    copy_tokenizer_files(hf_dir, out_dir)
    convert_hf_checkpoint.last_stats = stats  # peak bytes held at once; tests check streaming
    return config


convert_hf_checkpoint.last_stats = {}
