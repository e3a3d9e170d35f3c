"""Checkpoint folders: where they live, how to load and save them, and when they are complete.

Layout (docs/CONTRACTS.md): `<checkpoint_root_dir>/<org>/<name>/` holding `model.safetensors`
(our key names), `model_config.yaml`, the tokenizer files as published, the original
`config.json`, and `.litgpt_complete.json` -- written last, atomically -- listing the sha256 of
every weight file. A folder without that marker is incomplete and no action accepts it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from litgpt_runtime.config import CONFIG_FILE, Config, find_preset
from litgpt_runtime.errors import UserError

if TYPE_CHECKING:
    import torch

    from litgpt_runtime.model import GPT

WEIGHTS_FILE = "model.safetensors"
COMPLETE_MARKER = ".litgpt_complete.json"
DEFAULT_ROOT = "checkpoints"
SIDE_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
    "chat_template.json",
)
"""Published files a checkpoint keeps beside our weights (downloaded when the repo has them, copied
along by finetuning and export): the tokenizer with its chat template and special tokens,
generation defaults, and the original config.json (export needs it)."""


# --- where ----------------------------------------------------------------------------------
def checkpoint_dir_for(repo_id: str, checkpoint_root_dir: str | Path = DEFAULT_ROOT,
                       revision: Optional[str] = None) -> Path:
    """`<root>/<org>/<name>` for a repo id, `<root>/<org>/<name>@<revision>` for a revision other
    than the default branch (so two revisions of one repo never share a folder). No checks."""
    return Path(checkpoint_root_dir) / (repo_id.strip("/") + revision_suffix(revision))


def revision_suffix(revision: Optional[str]) -> str:
    """`@<revision>` ("/" of branch names such as refs/pr/1 as "--"), or "" for the default branch."""
    if not revision or revision == "main":
        return ""
    return "@" + revision.replace("/", "--")


def split_revision(repo_id: str) -> tuple[str, Optional[str]]:
    """`org/name@rev` -> (`org/name`, `rev`); no `@` -> (repo_id, None)."""
    name, at, revision = repo_id.partition("@")
    return (name, revision or None) if at else (repo_id, None)


def _looks_like_repo_id(text: str) -> bool:
    parts = text.strip("/").split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def resolve_checkpoint_dir(repo_id_or_path: str | Path, checkpoint_root_dir: str | Path = DEFAULT_ROOT) -> Path:
    """The complete checkpoint folder for a repo id (or short name, or folder path).

    Raises UserError with the `litgpt download <repo_id>` command to run when the folder is
    missing or incomplete. With $LITGPT_EXPECTED_DIGEST set, the weights are re-hashed and
    checked against it first (`verify_expected`).
    """
    text = str(repo_id_or_path)
    as_path = Path(text).expanduser()
    if as_path.is_dir() and (is_complete(as_path) or not _looks_like_repo_id(text)):
        if is_complete(as_path):
            verify_expected(as_path)
            return as_path
        refuse_litgpt_folder(as_path)
        repo_hint = _repo_id_of(as_path, checkpoint_root_dir)
        raise UserError(
            f"The checkpoint folder {str(as_path)!r} is incomplete (an interrupted download or conversion?). "
            + (f"Run `litgpt download {repo_hint}` to finish it." if repo_hint else
               "Download or convert it again; a folder is usable once it holds .litgpt_complete.json.")
        )
    repo_id, revision = split_revision(text.strip("/"))
    if not _looks_like_repo_id(repo_id):
        preset = find_preset(repo_id)
        if preset is None:
            raise UserError(
                f"{text!r} is neither a checkpoint folder nor a Hugging Face repo id (expected `org/name`, "
                "e.g. `EleutherAI/pythia-160m`)."
            )
        repo_id = preset["hf_repo_id"]
    folder = checkpoint_dir_for(repo_id, checkpoint_root_dir, revision)
    if is_complete(folder, revision or "main"):
        verify_expected(folder)
        return folder
    command = f"litgpt download {repo_id}" + (f" --revision {revision}" if revision else "")
    if folder.exists():
        refuse_litgpt_folder(folder)
        raise UserError(
            f"The checkpoint for {repo_id} in {str(folder)!r} is incomplete (an interrupted download?) "
            f"or holds another revision. Run `{command}` to finish it."
        )
    raise UserError(
        f"No checkpoint for {repo_id} under {str(Path(checkpoint_root_dir))!r}. "
        f"Run `{command}` first"
        + (f" (with --checkpoint_root_dir {checkpoint_root_dir})." if str(checkpoint_root_dir) != DEFAULT_ROOT else ".")
    )


def refuse_litgpt_folder(folder: Path) -> None:
    """A folder LitGPT wrote (lit_model.pth) is not an interrupted download: name the converter."""
    from litgpt_runtime.litgpt_format import convert_hint, is_litgpt_folder

    if is_litgpt_folder(folder):
        raise UserError(convert_hint(folder))


def _repo_id_of(folder: Path, checkpoint_root_dir: str | Path) -> Optional[str]:
    try:
        rel = folder.resolve().relative_to(Path(checkpoint_root_dir).resolve())
    except ValueError:
        return None
    return rel.as_posix() if _looks_like_repo_id(rel.as_posix()) else None


# --- completeness -----------------------------------------------------------------------------
def weight_files(checkpoint_dir: str | Path) -> list[Path]:
    return sorted(Path(checkpoint_dir).glob("*.safetensors"))


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def mark_complete(
    checkpoint_dir: str | Path, repo_id: str = "", revision: Optional[str] = None, **extra: Any
) -> Path:
    """Write `.litgpt_complete.json` last and atomically (tmp file + rename)."""
    checkpoint_dir = Path(checkpoint_dir)
    files = weight_files(checkpoint_dir)
    if not files:
        raise ValueError(f"{checkpoint_dir} holds no weight file; nothing to mark complete")
    if not (checkpoint_dir / CONFIG_FILE).is_file():
        raise ValueError(f"{checkpoint_dir} holds no {CONFIG_FILE}; nothing to mark complete")
    marker = {
        "repo_id": repo_id,
        "revision": revision,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": {f.name: sha256_file(f) for f in files},
        "sizes": {f.name: f.stat().st_size for f in files},
        **extra,
    }
    path = checkpoint_dir / COMPLETE_MARKER
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def unmark_complete(checkpoint_dir: str | Path) -> None:
    """Withdraw the marker before rewriting a folder, so a crash midway leaves it incomplete."""
    (Path(checkpoint_dir) / COMPLETE_MARKER).unlink(missing_ok=True)


def read_marker(checkpoint_dir: str | Path) -> Optional[dict[str, Any]]:
    path = Path(checkpoint_dir) / COMPLETE_MARKER
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), dict) else None


def is_complete(checkpoint_dir: str | Path, revision: Optional[str] = None) -> bool:
    """Marker present and every weight file it lists is there with its recorded size (no hashing).

    With `revision`, the marker must also say the folder holds that revision: the branch or tag
    it was downloaded as, or its commit (a prefix of 7+ hex digits will do); "main" accepts a
    folder downloaded without a revision. Without it, any complete folder counts (a path the
    user named).
    """
    checkpoint_dir = Path(checkpoint_dir)
    marker = read_marker(checkpoint_dir)
    if marker is None or not marker["files"]:
        return False
    if not _holds_revision(marker, revision):
        return False
    sizes = marker.get("sizes", {})
    for name in marker["files"]:
        path = checkpoint_dir / name
        if not path.is_file() or (name in sizes and path.stat().st_size != sizes[name]):
            return False
    return True


def _holds_revision(marker: dict[str, Any], revision: Optional[str]) -> bool:
    asked = marker.get("requested_revision")  # absent in markers of finetunes and older downloads
    if revision is None:
        return True
    if revision == "main":
        return asked in (None, "main")
    commit = str(marker.get("revision") or "")
    is_commit_prefix = len(revision) >= 7 and all(c in "0123456789abcdef" for c in revision.lower())
    return asked == revision or (is_commit_prefix and commit.startswith(revision.lower()))


def verify(checkpoint_dir: str | Path) -> None:
    """Recompute every weight file's sha256; UserError naming the first file that differs."""
    checkpoint_dir = Path(checkpoint_dir)
    marker = read_marker(checkpoint_dir)
    if marker is None:
        raise UserError(f"{str(checkpoint_dir)!r} is not a complete checkpoint (no {COMPLETE_MARKER}).")
    redo = f"`litgpt download {marker['repo_id']}`" if marker.get("repo_id") else "the download or conversion"
    for name, expected in marker["files"].items():
        path = checkpoint_dir / name
        if not path.is_file():
            raise UserError(f"{name} is missing from {str(checkpoint_dir)!r}. Delete the folder and run {redo} again.")
        if sha256_file(path) != expected:
            raise UserError(
                f"{name} in {str(checkpoint_dir)!r} is corrupted (its sha256 differs from the one recorded when "
                f"it was written). Delete the folder and run {redo} again."
            )


# --- digest: one identity for the whole checkpoint ------------------------------------------------
EXPECTED_DIGEST_ENV = "LITGPT_EXPECTED_DIGEST"
DIGEST_PREFIX = "sha256:"
_verified: dict[Path, str] = {}  # folders already hashed in this process (serve workers resolve often)


def digest_of(files: dict[str, str]) -> str:
    """`sha256:<hex>` over the sorted `name:sha256` lines of the weight files."""
    lines = "".join(f"{name}:{sha}\n" for name, sha in sorted(files.items()))
    return DIGEST_PREFIX + hashlib.sha256(lines.encode()).hexdigest()


def checkpoint_digest(checkpoint_dir: str | Path) -> str:
    """The checkpoint's digest from the hashes its marker recorded (cheap: nothing is re-read)."""
    marker = read_marker(checkpoint_dir)
    if marker is None:
        raise UserError(f"{str(checkpoint_dir)!r} is not a complete checkpoint (no {COMPLETE_MARKER}).")
    return digest_of(marker["files"])


def verify_digest(checkpoint_dir: str | Path, expected: str) -> None:
    """Re-hash every weight file (this reads the whole model: seconds per GB) and check them
    against the marker and the whole against `expected`. UserError naming what differs."""
    checkpoint_dir = Path(checkpoint_dir)
    expected = expected.strip()
    if not expected.startswith(DIGEST_PREFIX):
        expected = DIGEST_PREFIX + expected
    if _verified.get(checkpoint_dir.resolve()) == expected:
        return
    verify(checkpoint_dir)  # names the corrupted file
    actual = checkpoint_digest(checkpoint_dir)
    if actual != expected:
        marker = read_marker(checkpoint_dir) or {}
        redo = f"`litgpt download {marker['repo_id']}`" if marker.get("repo_id") else "the download"
        raise UserError(
            f"The checkpoint in {str(checkpoint_dir)!r} has digest {actual}, not the expected {expected} "
            f"({EXPECTED_DIGEST_ENV}): its files were replaced since the model was downloaded. Delete the "
            f"folder and run {redo} again."
        )
    _verified[checkpoint_dir.resolve()] = expected


def verify_expected(checkpoint_dir: str | Path) -> None:
    """`verify_digest` against $LITGPT_EXPECTED_DIGEST when it is set (the operator sets it from
    LitGPTModel.status.digest); nothing otherwise, since hashing a large model takes a while."""
    expected = os.environ.get(EXPECTED_DIGEST_ENV, "").strip()
    if expected:
        _say_verifying(checkpoint_dir)
        verify_digest(checkpoint_dir, expected)


def _say_verifying(checkpoint_dir: str | Path) -> None:
    import sys

    if Path(checkpoint_dir).resolve() not in _verified:
        size = sum(f.stat().st_size for f in weight_files(checkpoint_dir)) / 1e9
        print(f"Verifying the sha256 of {str(checkpoint_dir)!r} ({size:.1f} GB) against {EXPECTED_DIGEST_ENV} ...",
              file=sys.stderr, flush=True)


# --- load and save ------------------------------------------------------------------------------
def load_state_dict(path: str | Path) -> dict[str, "torch.Tensor"]:
    """Memory-mapped tensors of a safetensors file (read on use)."""
    from litgpt_runtime.safetensors_io import load_mmap

    return load_mmap(path)


def load_model(
    checkpoint_dir: str | Path,
    device: "str | torch.device" = "cpu",
    dtype: "Optional[torch.dtype]" = None,
    model_class: "Optional[type[GPT]]" = None,
) -> "GPT":
    """Build the model on the meta device and adopt the mapped weights (no second copy).

    With `dtype` or a non-CPU `device` the weights are converted/moved once, tensor by tensor.
    The returned model is in eval mode.
    """
    import torch

    from litgpt_runtime.model import GPT

    checkpoint_dir = Path(checkpoint_dir)
    config = Config.from_checkpoint(checkpoint_dir)
    weights = checkpoint_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{str(checkpoint_dir)!r} holds no {WEIGHTS_FILE}; download or convert the model again.")
    state_dict = load_state_dict(weights)
    device = torch.device(device)
    if dtype is not None or device.type != "cpu":
        state_dict = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in state_dict.items()}
    if model_class is None:  # adapter finetunes name their variant classes in peft.yaml
        from litgpt_runtime.peft import model_class_for

        model_class, config = model_class_for(checkpoint_dir, config)
    with torch.device("meta"):
        model = (model_class or GPT)(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def save_checkpoint(
    checkpoint_dir: str | Path,
    state_dict: dict[str, "torch.Tensor"],
    config: Config,
    copy_tokenizer_from: Optional[str | Path] = None,
    meta: Optional[dict[str, Any]] = None,
) -> Path:
    """Write weights (streamed, atomically), model_config.yaml and tokenizer files.

    The folder is marked complete only when `meta` is given ({"repo_id": ..., "revision": ...,
    anything else}); otherwise the caller adds its own files and calls `mark_complete` last.
    """
    from litgpt_runtime.safetensors_io import save_state_dict

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    unmark_complete(checkpoint_dir)
    if config.tie_embeddings:  # one tensor, stored once under wte
        state_dict = {k: v for k, v in state_dict.items() if k != "lm_head.weight"}
    save_state_dict(checkpoint_dir / WEIGHTS_FILE, state_dict)
    config.save(checkpoint_dir)
    if copy_tokenizer_from is not None:
        copy_tokenizer_files(copy_tokenizer_from, checkpoint_dir)
    if meta is not None:
        mark_complete(checkpoint_dir, **meta)
    return checkpoint_dir


def copy_tokenizer_files(source_dir: str | Path, target_dir: str | Path) -> list[str]:
    """Copy the published tokenizer/chat-template/generation/config files that exist."""
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    copied = []
    for name in SIDE_FILES:
        src = source_dir / name
        if src.is_file() and src.resolve() != (target_dir / name).resolve():
            shutil.copyfile(src, target_dir / name)
            copied.append(name)
    return copied
