"""Pretraining data: plain text files, tokenised once into memory-mapped token shards.

A *shard folder* is the on-disk format for corpora of any size (larger than memory included):

    index.json          {"format": "litgpt-token-shards", "version": 1, "dtype": "uint16"|"uint32",
                         "shards": [{"file": "shard-00000.bin", "tokens": n}, ...], "source": {...}}
    shard-00000.bin     raw little-endian token ids, documents separated by EOS

Shards are read through `numpy.memmap`, so only the pages a batch touches are loaded. Training
samples are fixed-length chunks of `block + 1` tokens (inputs plus the shifted targets) cut from
each shard, consecutive chunks overlapping by one token so that every token is a target once.
Shuffling and the resumable position come from `litgpt_runtime.train.batches.IndexedBatches`: a
permutation per epoch drawn from (seed, epoch), and (epoch, position) stored in checkpoints.

`--data TextFiles` tokenises a folder of `.txt` files into a shard folder once (cached under a key
made of the files' names/sizes/mtimes and the tokenizer, written atomically) and trains from it;
`--data TokenShards` trains from an existing shard folder (e.g. one prepared on another machine
with `write_token_shards`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional

from litgpt_runtime.errors import UserError

if TYPE_CHECKING:
    import torch

    from litgpt_runtime.tokenizer import Tokenizer

FORMAT = "litgpt-token-shards"
INDEX_FILE = "index.json"
DEFAULT_SHARD_TOKENS = 1 << 26  # 64 Mi tokens: 128 MiB per uint16 shard


# --- writing shards -------------------------------------------------------------------------
def write_token_shards(documents: Iterable[list[int]], out_dir: Path, vocab_size: int,
                       shard_tokens: int = DEFAULT_SHARD_TOKENS, source: Optional[dict] = None) -> Path:
    """Write token documents (each a list of ids, already ending in EOS if wanted) as shards.

    Streams: at most one shard's worth of tokens is held in memory. The folder appears under its
    final name only when complete (temporary folder + rename).
    """
    import numpy as np

    out_dir = Path(out_dir)
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    # A temporary name no other writer can hold: pods of a multi-node run each tokenise into the
    # same shared volume, and in containers every one of them is pid 1 (a pid-named folder was
    # shared, and one pod deleted the other's shards mid-write).
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".partial-", dir=out_dir.parent))
    shards: list[dict] = []
    buffer: list[int] = []

    def flush() -> None:
        if not buffer:
            return
        name = f"shard-{len(shards):05d}.bin"
        np.asarray(buffer, dtype=dtype).tofile(tmp / name)
        shards.append({"file": name, "tokens": len(buffer)})
        buffer.clear()

    for document in documents:
        buffer.extend(document)
        if len(buffer) >= shard_tokens:
            flush()
    flush()
    index = {"format": FORMAT, "version": 1, "dtype": np.dtype(dtype).name, "shards": shards, "source": source or {}}
    (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2))
    if out_dir.exists():  # another process finished the same work first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def read_index(folder: Path) -> dict:
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise UserError(f"{str(folder)!r} is not a token shard folder (no {INDEX_FILE}); prepare it with "
                        "--data TextFiles or litgpt_runtime.train.text_data.write_token_shards.")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise UserError(f"{path} is not a {FORMAT} index.")
    return index


# --- reading shards -------------------------------------------------------------------------
class TokenChunks:
    """Map-style dataset of `block + 1`-token chunks over a shard folder (memory-mapped)."""

    def __init__(self, folder: Path, block: int) -> None:
        import numpy as np

        self.folder, self.block = Path(folder), block
        index = read_index(self.folder)
        self.dtype = np.dtype(index["dtype"])
        self._maps: list[Any] = [None] * len(index["shards"])
        self._files = [self.folder / s["file"] for s in index["shards"]]
        # chunk i of shard s starts at token i * block (chunks overlap by one token)
        counts = [max(0, (s["tokens"] - 1) // block) for s in index["shards"]]
        self._starts = np.cumsum([0] + counts)
        self.tokens = sum(s["tokens"] for s in index["shards"])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _map(self, shard: int):
        import numpy as np

        if self._maps[shard] is None:  # opened lazily: DataLoader workers / forked processes
            self._maps[shard] = np.memmap(self._files[shard], dtype=self.dtype, mode="r")
        return self._maps[shard]

    def __getitem__(self, i: int) -> dict[str, "torch.Tensor"]:
        import numpy as np
        import torch

        if not 0 <= i < len(self):
            raise IndexError(i)
        shard = int(np.searchsorted(self._starts, i, side="right") - 1)
        offset = (i - int(self._starts[shard])) * self.block
        chunk = torch.from_numpy(self._map(shard)[offset: offset + self.block + 1].astype(np.int64))
        return {"input_ids": chunk[:-1], "targets": chunk[1:]}


class Subset:
    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def stack_collate(samples: list[dict]) -> dict[str, "torch.Tensor"]:
    import torch

    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def split_every(dataset, fraction: float) -> tuple[Any, Optional[Any]]:
    """(train, val): every round(1/fraction)-th chunk is held out (spread over the corpus,
    the same on every process and every run)."""
    if fraction <= 0 or len(dataset) < 2:
        return dataset, None
    stride = max(2, round(1 / fraction))
    val = list(range(0, len(dataset), stride))
    held = set(val)
    return Subset(dataset, [i for i in range(len(dataset)) if i not in held]), Subset(dataset, val)


# --- the --data choices ---------------------------------------------------------------------
class PretrainData:
    """Base of the `--data` choices for pretraining."""

    def prepare(self, tokenizer: Optional["Tokenizer"], cache_root: Path) -> tuple[Path, Optional[Path]]:
        """(train shard folder, validation shard folder or None); run once per node before loading."""
        raise NotImplementedError

    val_split_fraction: float = 0.0

    def needs_tokenizer(self) -> bool:
        return False


def _text_files(folder: Path, what: str) -> list[Path]:
    folder = Path(folder)
    if folder.is_file():  # a single text file is a corpus too
        return [folder]
    if not folder.is_dir():
        raise UserError(f"{what} {str(folder)!r} does not exist; point it at a folder of .txt files (or one file).")
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise UserError(f"{what} {str(folder)!r} holds no .txt files.")
    return files


def _documents(files: list[Path], tokenizer: "Tokenizer") -> Iterator[list[int]]:
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield tokenizer.encode(text, eos=tokenizer.eos_id is not None)


def _cache_key(files: list[Path], tokenizer: "Tokenizer") -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"):
        source = tokenizer.checkpoint_dir / name
        if source.is_file():
            digest.update(hashlib.sha256(source.read_bytes()).digest())
    return digest.hexdigest()[:20]


@dataclass
class TextFiles(PretrainData):
    """A folder of plain `.txt` files (searched recursively), tokenised once and cached."""

    train_data_path: Optional[Path] = None
    """Folder of .txt files to train on (searched recursively), or a single text file."""
    val_data_path: Optional[Path] = None
    """Folder of .txt files to validate on (default: hold out val_split_fraction of the chunks)."""
    val_split_fraction: float = 0.05
    """Share of the training chunks held out for validation when there is no val_data_path."""
    cache_dir: Optional[Path] = None
    """Where the token shards are cached (default: <out_dir>/token_cache)."""
    shard_tokens: int = DEFAULT_SHARD_TOKENS
    """Tokens per shard file."""

    def __post_init__(self) -> None:
        if not 0 <= self.val_split_fraction < 1:
            raise UserError(f"--data.val_split_fraction must lie in [0, 1) (got {self.val_split_fraction}).")

    def needs_tokenizer(self) -> bool:
        return True

    def _one(self, folder: Path, what: str, tokenizer: "Tokenizer", cache_root: Path) -> Path:
        files = _text_files(folder, what)
        out = cache_root / _cache_key(files, tokenizer)
        if not (out / INDEX_FILE).is_file():
            total = sum(p.stat().st_size for p in files)
            print(f"Tokenising {len(files)} text file(s) ({total / 2**20:.1f} MiB) from {folder} into {out} "
                  "(once; later runs reuse it)", flush=True)
            write_token_shards(_documents(files, tokenizer), out, tokenizer.vocab_size, self.shard_tokens,
                               source={"folder": str(folder), "files": len(files)})
        return out

    def prepare(self, tokenizer, cache_root):
        if self.train_data_path is None:
            raise UserError("Give the training text: --data TextFiles --data.train_data_path <folder of .txt files>")
        root = Path(self.cache_dir) if self.cache_dir is not None else cache_root
        train = self._one(Path(self.train_data_path), "--data.train_data_path", tokenizer, root)
        val = None
        if self.val_data_path is not None:
            val = self._one(Path(self.val_data_path), "--data.val_data_path", tokenizer, root)
        return train, val


@dataclass
class TokenShards(PretrainData):
    """Pre-tokenised shard folders (see the module docstring), for corpora of any size."""

    path: Optional[Path] = None
    """Shard folder to train on (holds index.json)."""
    val_path: Optional[Path] = None
    """Shard folder to validate on (default: hold out val_split_fraction of the chunks)."""
    val_split_fraction: float = 0.0
    """Share of the training chunks held out for validation when there is no val_path."""

    def prepare(self, tokenizer, cache_root):
        if self.path is None:
            raise UserError("Give the shard folder: --data TokenShards --data.path <folder with index.json>")
        read_index(Path(self.path))
        if self.val_path is not None:
            read_index(Path(self.val_path))
        return Path(self.path), (Path(self.val_path) if self.val_path is not None else None)
