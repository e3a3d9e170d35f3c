"""`litgpt download`: fetch a model from the Hugging Face Hub and convert it into a checkpoint.

Where things go (all under --checkpoint_root_dir, default `checkpoints`):

    .downloads/<org>/<name>/    the Hub's files as published (huggingface_hub's local_dir: files
                                already fetched are kept, so a second run does not fetch them again)
    <org>/.<name>.converting/   conversion output; marked complete last, then renamed into place
    <org>/<name>/               the checkpoint, which appears in one rename, marker included

So an interrupted or failed download never leaves a folder that other actions accept: the
completeness marker (`litgpt_runtime.checkpoint.mark_complete`) is written into the staging folder only
after everything else is in it, and only the rename makes it visible. The raw download is removed
once the checkpoint is in place.

Resuming: within a run, a dropped connection is resumed by huggingface_hub with a Range request;
across runs, files that were completely fetched are kept and only the missing ones are fetched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterator, Optional

from litgpt_runtime.errors import UserError

DOWNLOADS_DIR = ".downloads"
# Everything a checkpoint needs besides the weights: the model config (kept for export) and the
# tokenizer with its chat template and special tokens.
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def is_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise UserError(
            f"{repo_id!r} is not a Hugging Face repo id: expected the form <org>/<name>, "
            "e.g. HuggingFaceTB/SmolLM2-135M-Instruct (`litgpt download list` shows known models)."
        )


# --- which files to fetch ------------------------------------------------------------------------
def choose_weight_files(repo_files: list[str], read_index) -> list[str]:
    """Weight files to fetch: safetensors when the repo has them, else PyTorch .bin.

    Only top-level files count (repos also carry `original/`, `onnx/`, ... copies). With an index,
    exactly the shards it lists (Mistral repos also hold a `consolidated.safetensors` duplicate).
    `read_index(name)` fetches and parses an index file.
    """
    top = [f for f in repo_files if "/" not in f]
    for index, single, pattern in ((SAFETENSORS_INDEX, "model.safetensors", "*.safetensors"),
                                   (BIN_INDEX, "pytorch_model.bin", "pytorch_model*.bin")):
        if index in top:
            shards = sorted(set(read_index(index)["weight_map"].values()))
            return [index, *shards]
        if single in top:
            return [single]
        matches = sorted(f for f in top if fnmatch(f, pattern))
        if matches:
            return matches
    return []


# --- errors from the Hub, in words ------------------------------------------------------------
_NETWORK_ERRORS = {"ConnectError", "ConnectTimeout", "TimeoutException", "ReadTimeout", "NetworkError",
                   "RemoteProtocolError", "ProxyError", "ConnectionError", "OfflineModeIsEnabled"}


def _is_network_error(exc: BaseException) -> bool:
    for e in (exc, exc.__cause__, exc.__context__):
        if e is not None and {c.__name__ for c in type(e).__mro__} & _NETWORK_ERRORS:
            return True
    return False


def _disk_full_message(root: Path, needed: Optional[int] = None) -> str:
    free = shutil.disk_usage(_existing_parent(root)).free
    need = f"about {_human(needed)} is needed and " if needed else ""
    return (f"Not enough disk space under {root}: {need}{_human(free)} is free. Nothing was marked complete; "
            "free some space (or choose another --checkpoint_root_dir) and run the same command again "
            "to resume.")


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


@contextmanager
def hub_errors(repo_id: str, token_given: bool, root: Path) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one-paragraph UserErrors."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"https://huggingface.co/{repo_id}"
    try:
        yield
    except UserError:
        raise
    except GatedRepoError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 403 or token_given:
            raise UserError(
                f"{repo_id} is a gated model and your Hugging Face token has no access to it. Open {page}, "
                "accept the license / request access with the account that owns the token, then run again."
            ) from None
        raise UserError(
            f"{repo_id} is a gated model: open {page} to accept its license, then pass a token with "
            "`--access_token <token>` or the HF_TOKEN environment variable."
        ) from None
    except RevisionNotFoundError:
        raise UserError(f"The revision asked for does not exist in {repo_id}; check --revision.") from None
    except RepositoryNotFoundError:
        hint = "" if token_given else " If it is private, pass a token with --access_token or HF_TOKEN."
        raise UserError(
            f"Repository {repo_id!r} was not found on the Hugging Face Hub. Check the spelling "
            f"(`litgpt download list` shows known models).{hint}"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise UserError(
                "The Hugging Face Hub rejected your token (401 invalid credentials). Check --access_token / "
                "HF_TOKEN, or unset it for public models."
            ) from None
        if status == 403:
            raise UserError(f"The Hugging Face Hub refused access to {repo_id} (403). Check that your token "
                            f"has read access and that you accepted the model's terms at {page}.") from None
        if _is_network_error(exc):
            raise _network_error(constants.ENDPOINT) from None
        raise UserError(f"The Hugging Face Hub answered HTTP {status} while downloading {repo_id}: "
                        f"{str(exc).strip().splitlines()[0]}. Try again later.") from None
    except LocalEntryNotFoundError:
        raise _network_error(constants.ENDPOINT) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(_disk_full_message(root)) from None
        if _is_network_error(exc):
            raise _network_error(constants.ENDPOINT) from None
        raise
    except Exception as exc:  # httpx2/requests errors are not OSErrors
        if _is_network_error(exc):
            raise _network_error(constants.ENDPOINT) from None
        raise


def _network_error(endpoint: str) -> UserError:
    return UserError(
        f"Cannot reach the Hugging Face Hub at {endpoint} (no network, or a proxy/firewall in the way). "
        "Check your connection and run the same command again; files already fetched are kept."
    )


# --- the action ----------------------------------------------------------------------------------
def main(
    repo_id: str,
    checkpoint_root_dir: Path = Path("checkpoints"),
    access_token: Optional[str] = None,
    revision: Optional[str] = None,
    dtype: Optional[str] = None,
    force: bool = False,
    verify: bool = False,
) -> Optional[Path]:
    """Download a model from the Hugging Face Hub and convert it into a checkpoint.

    The checkpoint lands in <checkpoint_root_dir>/<org>/<name> and is marked complete only when
    everything is in place. Run it again after an interruption: files already fetched are kept.
    `litgpt download list` prints the models with built-in configs; any model of a supported
    family can be downloaded.

    Args:
        repo_id: Hugging Face repo id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct (or `list`).
        checkpoint_root_dir: Folder the checkpoint goes under.
        access_token: Hugging Face token for gated or private models (default: $HF_TOKEN).
        revision: Branch, tag or commit of the repo (default: main).
        dtype: Store weights as float32, bfloat16 or float16 (default: as published).
        force: Download and convert again even if a complete checkpoint exists.
        verify: For a complete checkpoint, re-hash its weight files against the sha256 recorded at
            download (reads the whole model: takes a while for big ones) before printing its digest.
    """
    from litgpt_runtime.checkpoint import is_complete

    if repo_id == "list":
        from litgpt_runtime.config import known_repo_ids

        print("\n".join(known_repo_ids()))
        return None
    check_repo_id(repo_id)
    _dtype_name(dtype)  # a typo in --dtype should fail before the download, not after
    root = Path(checkpoint_root_dir)
    final = root / repo_id
    if not force and is_complete(final):
        _say(f"{repo_id} is already complete in {final}; nothing to do.")
        if verify:
            from litgpt_runtime.checkpoint import verify as verify_files

            _say(f"Verifying the sha256 of every weight file in {final} ...")
            verify_files(final)  # UserError naming a corrupted file
            _say("All weight files match their recorded sha256.")
        report_digest(final)
        return final
    if is_offline():
        raise UserError(
            f"HF_HUB_OFFLINE=1 is set, so {repo_id} cannot be downloaded. Unset HF_HUB_OFFLINE (or set it "
            "to 0) and run again with network access."
        )
    token = access_token or None  # None lets huggingface_hub use HF_TOKEN / the stored login
    token_given = bool(token or os.environ.get("HF_TOKEN"))
    hf_dir = root / DOWNLOADS_DIR / repo_id
    with hub_errors(repo_id, token_given, root):
        commit = fetch_hf_files(repo_id, hf_dir, token, revision, root)
    _say(f"Converting {repo_id} into {final} ...")
    convert_and_publish(repo_id, commit, hf_dir, final, dtype, root)
    _remove_download(root, repo_id)
    _say(f"Done: {final}")
    report_digest(final)
    return final


TERMINATION_LOG_ENV = "LITGPT_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")


def report_digest(checkpoint_dir: Path) -> str:
    """Print the checkpoint's digest and leave it in the container's termination log, where the
    operator reads it (pod status `terminated.message`) into LitGPTModel.status.digest."""
    from litgpt_runtime.checkpoint import checkpoint_digest

    digest = checkpoint_digest(checkpoint_dir)
    print(f"weights digest: {digest}", flush=True)
    target = os.environ.get(TERMINATION_LOG_ENV) or (
        str(DEFAULT_TERMINATION_LOG) if DEFAULT_TERMINATION_LOG.exists() and os.access(DEFAULT_TERMINATION_LOG, os.W_OK) else "")
    if target:
        try:
            Path(target).write_text(f"weights digest: {digest}\n")
        except OSError as exc:  # the digest is a bonus: never fail a finished download over it
            _say(f"Could not write the digest to {target}: {exc.strerror}")
    return digest


def _remove_download(root: Path, repo_id: str) -> None:
    """Delete the raw Hub files (the checkpoint has what it needs) and the folders left empty."""
    downloads = root / DOWNLOADS_DIR
    shutil.rmtree(downloads / repo_id, ignore_errors=True)
    for folder in (downloads / repo_id.split("/")[0], downloads):
        try:
            folder.rmdir()
        except OSError:
            break  # not empty: other downloads are in progress or kept


def fetch_hf_files(repo_id: str, hf_dir: Path, token: Optional[str], revision: Optional[str], root: Path) -> str:
    """Fetch config, tokenizer and weights into `hf_dir`; returns the commit sha fetched."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    from litgpt_runtime.config import Config

    api = HfApi(token=token)
    info = api.model_info(repo_id, revision=revision, files_metadata=True)  # with file sizes
    commit = info.sha or revision or "main"
    repo_files = [s.rfilename for s in (info.siblings or [])]
    hf_dir.mkdir(parents=True, exist_ok=True)

    def fetch(name: str) -> Path:
        return Path(hf_hub_download(repo_id, name, revision=commit, local_dir=hf_dir, token=token))

    if "config.json" not in repo_files:
        raise UserError(f"{repo_id} has no config.json, so it is not a transformers model litgpt can load.")
    # Check the architecture before fetching gigabytes of weights.
    try:
        Config.from_hf_config(json.loads(fetch("config.json").read_text()), repo_id=repo_id)
    except (KeyError, ValueError, TypeError) as exc:  # UserError (unsupported family) passes through
        raise UserError(f"The config.json of {repo_id} cannot be read as a supported model ({exc!r}).") from None

    weights = choose_weight_files(repo_files, lambda name: json.loads(fetch(name).read_text()))
    if not weights:
        raise UserError(f"{repo_id} has no weights in safetensors or PyTorch .bin format at the top level of the repo.")
    wanted = [f for f in SIDE_FILES if f in repo_files] + weights
    if "tokenizer.json" not in wanted and "tokenizer.model" not in wanted:
        raise UserError(f"{repo_id} publishes no tokenizer.json or tokenizer.model; litgpt cannot tokenize for it.")

    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or [] if s.rfilename in wanted}
    weight_bytes = sum(sizes.get(f, 0) for f in weights)
    missing_bytes = sum(size for f, size in sizes.items() if not (hf_dir / f).is_file())
    needed = missing_bytes + weight_bytes  # the download, plus the converted copy of the weights
    free = shutil.disk_usage(_existing_parent(root)).free
    if needed > free:
        raise UserError(_disk_full_message(root, needed))
    _say(f"Downloading {repo_id} ({commit[:12]}): {len(wanted)} files, {_human(sum(sizes.values()))} "
         f"into {hf_dir}")
    snapshot_download(repo_id, revision=commit, local_dir=hf_dir, allow_patterns=wanted, token=token,
                      max_workers=4)
    # snapshot_download falls back to whatever is on disk when the Hub becomes unreachable midway;
    # never convert a partial set of files.
    absent = [f for f in wanted if not (hf_dir / f).is_file()]
    if absent:
        raise UserError(f"The download of {repo_id} is incomplete ({', '.join(absent[:3])} missing). "
                        "Run the same command again to resume.")
    return commit


def convert_and_publish(repo_id: str, commit: str, hf_dir: Path, final: Path, dtype: Optional[str], root: Path) -> None:
    """Convert into a staging folder, mark it complete, then rename it into place."""
    from litgpt_runtime.checkpoint import mark_complete
    from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint

    staging = final.parent / f".{final.name}.converting"
    if staging.exists():
        shutil.rmtree(staging)  # leftovers of an interrupted conversion
    staging.mkdir(parents=True)
    try:
        convert_hf_checkpoint(hf_dir, staging, dtype=_dtype_name(dtype), repo_id=repo_id, progress=_ConvertProgress())
        for name in SIDE_FILES:  # the checkpoint keeps the tokenizer and the original config
            if (hf_dir / name).is_file() and not (staging / name).exists():
                shutil.copy2(hf_dir / name, staging / name)
        mark_complete(staging, repo_id=repo_id, revision=commit)
        if final.exists():
            shutil.rmtree(final)  # an incomplete leftover (or --force)
        os.replace(staging, final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise UserError(_disk_full_message(root)) from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _dtype_name(dtype: Optional[str]) -> Optional[str]:
    if dtype is None:
        return None
    names = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16",
             "32": "float32", "bf16": "bfloat16", "16": "float16"}
    if dtype not in names:
        raise UserError(f"Unknown --dtype {dtype!r}; choose float32, bfloat16 or float16.")
    return names[dtype]


class _ConvertProgress:
    """A one-line counter of converted tensors on stderr (conversion of big models takes minutes)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            print(f"\r  converted {done}/{total} tensors", end="\n" if done == total else "", file=sys.stderr, flush=True)
        elif done == total:
            print(f"  converted {total} tensors", file=sys.stderr, flush=True)


# --- used by chat, generate, finetune, serve -------------------------------------------------
def ensure_checkpoint(repo_id: str, checkpoint_root_dir: str | Path = "checkpoints",
                      access_token: Optional[str] = None) -> Path:
    """The checkpoint folder for `repo_id` (or a checkpoint path), downloading it on first use."""
    from litgpt_runtime.checkpoint import is_complete, resolve_checkpoint_dir

    root = Path(checkpoint_root_dir)
    as_path = Path(repo_id)
    if as_path.is_dir() and not (root / repo_id).is_dir():
        return resolve_checkpoint_dir(repo_id, root)  # an explicit folder: checked, never downloaded
    if "/" not in repo_id:  # a short name of a known model, e.g. pythia-160m
        from litgpt_runtime.config import find_preset

        preset = find_preset(repo_id)
        repo_id = preset["hf_repo_id"] if preset else repo_id
    final = root / repo_id
    if is_complete(final):
        return resolve_checkpoint_dir(repo_id, root)
    if repo_id.startswith(("/", ".", "~")) or repo_id.count("/") != 1:
        raise UserError(f"{repo_id!r} is neither an existing checkpoint folder nor a Hugging Face repo id "
                        "(<org>/<name>, e.g. HuggingFaceTB/SmolLM2-135M-Instruct).")
    check_repo_id(repo_id)
    if is_offline():
        raise UserError(
            f"{repo_id} is not downloaded yet (no complete checkpoint in {final}) and HF_HUB_OFFLINE=1 "
            f"forbids downloading it. Run `litgpt download {repo_id}` with network access first, or unset "
            "HF_HUB_OFFLINE."
        )
    _say(f"{repo_id} is not in {root} yet; downloading it first (as `litgpt download {repo_id}` would).")
    # stdout belongs to the action that called us (generated text, chat replies): the download's
    # own report (its digest line) goes to stderr with its progress.
    with contextlib.redirect_stdout(sys.stderr):
        main(repo_id, checkpoint_root_dir=root, access_token=access_token)
    return resolve_checkpoint_dir(repo_id, root)
