"""`litgpt download`: fetch a model from the Hugging Face Hub and convert it into a checkpoint.

Where things go (all under --checkpoint_root_dir, default `checkpoints`):

    .downloads/<org>/<name>/    the Hub's files as published (huggingface_hub's local_dir: files
                                already fetched are kept, so a second run does not fetch them again)
    <org>/.<name>.converting/   conversion output; marked complete last, then renamed into place
    <org>/<name>/               the checkpoint, which appears in one rename, marker included
    <org>/.<name>.lock          held while one process downloads into <org>/<name>

With --revision R (other than main) every <name> above is <name>@R, and the marker records R:
two revisions of one repo never share a folder, and neither passes for the other.

So an interrupted or failed download never leaves a folder that other actions accept: the
completeness marker (`litgpt_runtime.checkpoint.mark_complete`) is written into the staging folder only
after everything else is in it, and only the rename makes it visible. The raw download is removed
once the checkpoint is in place.

Every file is checked against what the Hub lists for it (the SHA-256 of LFS files, the git blob
id of the others, the size of all) before anything is converted; a mismatch names the file.

Resuming: within a run, a dropped connection is resumed by huggingface_hub with a Range request
and a stalled one (`hub_transfer`) is retried with back-off; across runs, files that were
completely fetched are kept and only the missing ones are fetched.

Failures retrying cannot fix end with their own exit status (`litgpt_runtime.errors`: 3 access
denied, 4 not found, 5 stalled, 6 checksum) and `<Reason>: <message>` in the container's
termination log.
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
from typing import Callable, Iterator, Optional

from litgpt_runtime.checkpoint import SIDE_FILES
from litgpt_runtime.errors import AccessDenied, IntegrityError, NotFound, TransferStalled, UserError
from litgpt_runtime.termination import write_termination_message
from litgpt_runtime.hub_transfer import DEFAULT_RETRIES, DEFAULT_STALL_TIMEOUT, stall_guard, with_retries

DOWNLOADS_DIR = ".downloads"
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
            for shard in shards:  # a name from the repo becomes a path on disk: only files we saw listed
                if shard not in top:
                    raise UserError(f"{index} names the shard {shard!r}, which is not a file at the top level of "
                                    "the repo; refusing to use it as a path. The repo is broken or hostile.")
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
def hub_errors(repo_id: str, token_given: bool, root: Path, retries: int = 0) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one-paragraph UserErrors; refusals that retrying
    cannot fix (401/403, 404) become `AccessDenied` / `NotFound`, which exit with their own status."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from litgpt_runtime.hub_transfer import Stalled

    page = f"https://huggingface.co/{repo_id}"
    try:
        yield
    except UserError:
        raise
    except Stalled as exc:
        raise TransferStalled(
            f"The download of {exc.filename} from {repo_id} stalled: no data for {exc.seconds:g} s, "
            f"{1 + retries} times. The Hub (or a proxy on the way) is not sending; files already "
            "fetched are kept, so run the same command again later (--stall_timeout sets the wait)."
        ) from None
    except GatedRepoError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 403 or token_given:
            raise AccessDenied(
                f"{repo_id} is a gated model and your Hugging Face token has no access to it. Open {page}, "
                "accept the license / request access with the account that owns the token, then run again."
            ) from None
        raise AccessDenied(
            f"{repo_id} is a gated model: open {page} to accept its license, then pass a token with "
            "`--access_token <token>` or the HF_TOKEN environment variable."
        ) from None
    except RevisionNotFoundError:
        raise NotFound(f"The revision asked for does not exist in {repo_id}; check --revision.") from None
    except RepositoryNotFoundError:
        hint = "" if token_given else " If it is private, pass a token with --access_token or HF_TOKEN."
        raise NotFound(
            f"Repository {repo_id!r} was not found on the Hugging Face Hub. Check the spelling "
            f"(`litgpt download list` shows known models).{hint}"
        ) from None
    except RemoteEntryNotFoundError as exc:
        raise NotFound(f"A file of {repo_id} listed by the Hub is missing from it ({_first_line(exc)}).") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise AccessDenied(
                "The Hugging Face Hub rejected your token (401 invalid credentials). Check --access_token / "
                "HF_TOKEN, or unset it for public models."
            ) from None
        if status == 403:
            raise AccessDenied(f"The Hugging Face Hub refused access to {repo_id} (403). Check that your token "
                               f"has read access and that you accepted the model's terms at {page}.") from None
        if status == 404:
            raise NotFound(f"The Hugging Face Hub has no {repo_id} (404): {_first_line(exc)}.") from None
        if _is_network_error(exc):
            raise _network_error(constants.ENDPOINT) from None
        raise UserError(f"The Hugging Face Hub answered HTTP {status} while downloading {repo_id}: "
                        f"{_first_line(exc)}. Try again later.") from None
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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


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
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
) -> Optional[Path]:
    """Download a model from the Hugging Face Hub and convert it into a checkpoint.

    The checkpoint lands in <checkpoint_root_dir>/<org>/<name> (<name>@<revision> for a
    --revision other than main) and is marked complete only when every file matches the size and
    SHA-256 the Hub publishes and the conversion is done. Run it again after an interruption:
    files already fetched are kept. A transfer that sends nothing for --stall_timeout seconds is
    retried --retries times with back-off. Exit status: 3 the Hub refused access (401/403), 4 no
    such repo/revision (404), 5 stalled, 6 a file's SHA-256 or size differs, 1 anything else.
    `litgpt download list` prints the models with built-in configs; any model of a supported
    family can be downloaded.

    Args:
        repo_id: Hugging Face repo id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct (or `list`);
            `<org>/<name>@<revision>` is the same as --revision.
        checkpoint_root_dir: Folder the checkpoint goes under.
        access_token: Hugging Face token for gated or private models (default: $HF_TOKEN).
        revision: Branch, tag or commit of the repo (default: main).
        dtype: Store weights as float32, bfloat16 or float16 (default: as published).
        force: Download and convert again even if a complete checkpoint exists.
        verify: For a complete checkpoint, re-hash its weight files against the sha256 recorded at
            download (reads the whole model: takes a while for big ones) before printing its digest.
        stall_timeout: Seconds without a byte from the Hub before a transfer counts as stalled.
        retries: How many times a stalled transfer is retried (waiting 2, 4, 8, ... s) before the
            download fails.
    """
    if repo_id == "list":
        from litgpt_runtime.config import known_repo_ids

        print("\n".join(known_repo_ids()))
        return None
    try:
        return _download(repo_id, Path(checkpoint_root_dir), access_token, revision, dtype, force, verify,
                         stall_timeout, retries)
    except UserError as exc:  # the operator reads why a download Job failed from its termination log
        write_termination_message(f"{exc.reason}: {exc}")
        raise


def _download(repo_id: str, root: Path, access_token: Optional[str], revision: Optional[str], dtype: Optional[str],
              force: bool, verify: bool, stall_timeout: float, retries: int) -> Path:
    from litgpt_runtime.checkpoint import checkpoint_dir_for, is_complete, split_revision

    repo_id, in_name = split_revision(repo_id)
    if in_name and revision and in_name != revision:
        raise UserError(f"Two revisions asked for: @{in_name} in the repo id and --revision {revision}; give one.")
    revision = revision or in_name
    check_repo_id(repo_id)
    _dtype_name(dtype)  # a typo in --dtype should fail before the download, not after
    if stall_timeout <= 0 or retries < 0:
        raise UserError("--stall_timeout must be positive and --retries zero or more.")
    final = checkpoint_dir_for(repo_id, root, revision)
    wanted_revision = revision or "main"
    if not force and is_complete(final, wanted_revision):
        return _already_complete(repo_id, final, verify)
    if is_offline():
        raise UserError(
            f"HF_HUB_OFFLINE=1 is set, so {repo_id} cannot be downloaded. Unset HF_HUB_OFFLINE (or set it "
            "to 0) and run again with network access."
        )
    with download_lock(final):
        if not force and is_complete(final, wanted_revision):  # another process finished it meanwhile
            return _already_complete(repo_id, final, verify)
        token = access_token or None  # None lets huggingface_hub use HF_TOKEN / the stored login
        token_given = bool(token or os.environ.get("HF_TOKEN"))
        hf_dir = root / DOWNLOADS_DIR / final.relative_to(root)
        with hub_errors(repo_id, token_given, root, retries), stall_guard(stall_timeout, retries):
            commit = fetch_hf_files(repo_id, hf_dir, token, revision, root)
        _say(f"Converting {repo_id} into {final} ...")
        convert_and_publish(repo_id, commit, hf_dir, final, dtype, root, requested_revision=revision)
        _remove_download(root, hf_dir)
    _say(f"Done: {final}")
    report_digest(final)
    return final


def _already_complete(repo_id: str, final: Path, verify: bool) -> Path:
    _say(f"{repo_id} is already complete in {final}; nothing to do.")
    if verify:
        from litgpt_runtime.checkpoint import verify as verify_files

        _say(f"Verifying the sha256 of every weight file in {final} ...")
        verify_files(final)  # UserError naming a corrupted file
        _say("All weight files match their recorded sha256.")
    report_digest(final)
    return final


@contextmanager
def download_lock(final: Path) -> Iterator[None]:
    """One download per checkpoint folder at a time, across processes (and pods sharing a volume:
    POSIX record locks work over NFS). The second waits, then finds the checkpoint complete."""
    import fcntl

    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = final.parent / f".{final.name}.lock"  # kept: removing it would race a waiting process
    with open(lock_path, "a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            _say(f"Another download into {final} is in progress; waiting for it to finish ...")
            fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def report_digest(checkpoint_dir: Path) -> str:
    """Print the checkpoint's digest and leave it in the container's termination log, where the
    operator reads it (pod status `terminated.message`) into LitGPTModel.status.digest."""
    from litgpt_runtime.checkpoint import checkpoint_digest

    digest = checkpoint_digest(checkpoint_dir)
    print(f"weights digest: {digest}", flush=True)
    write_termination_message(f"weights digest: {digest}")
    return digest


def _remove_download(root: Path, hf_dir: Path) -> None:
    """Delete the raw Hub files (the checkpoint has what it needs) and the folders left empty."""
    downloads = root / DOWNLOADS_DIR
    shutil.rmtree(hf_dir, ignore_errors=True)
    for folder in (hf_dir.parent, downloads):
        try:
            folder.rmdir()
        except OSError:
            break  # not empty: other downloads are in progress or kept


def fetch_hf_files(repo_id: str, hf_dir: Path, token: Optional[str], revision: Optional[str], root: Path) -> str:
    """Fetch config, tokenizer and weights into `hf_dir`, each checked against the size and hash
    the Hub lists for it; returns the commit sha fetched."""
    from huggingface_hub import HfApi, hf_hub_download

    from litgpt_runtime.config import Config

    api = HfApi(token=token)
    info = with_retries(lambda: api.model_info(repo_id, revision=revision, files_metadata=True))
    commit = info.sha or revision or "main"
    published = {s.rfilename: s for s in info.siblings or []}
    repo_files = list(published)
    hf_dir.mkdir(parents=True, exist_ok=True)

    def fetch(name: str) -> Path:
        try:
            # (huggingface_hub resumes a stalled file itself; with_retries restarts one it gave up on)
            path = with_retries(lambda: Path(hf_hub_download(repo_id, name, revision=commit, local_dir=hf_dir,
                                                             token=token)))
        except OSError as exc:
            # huggingface_hub's check that the body had the announced length (a short file)
            if "Consistency check failed" not in str(exc):
                raise
            _forget_file(hf_dir, name)
            raise IntegrityError(f"{name} arrived incomplete: {_first_line(exc)}. Nothing was marked complete; "
                                 "run the same command again to fetch it again.") from None
        check_published_hash(path, published.get(name), hf_dir)
        return path

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

    sizes = {name: int(published[name].size or 0) for name in wanted if name in published}
    weight_bytes = sum(sizes.get(f, 0) for f in weights)
    missing_bytes = sum(size for f, size in sizes.items() if not (hf_dir / f).is_file())
    needed = missing_bytes + weight_bytes  # the download, plus the converted copy of the weights
    free = shutil.disk_usage(_existing_parent(root)).free
    if needed > free:
        raise UserError(_disk_full_message(root, needed))
    _say(f"Downloading {repo_id} ({commit[:12]}): {len(wanted)} files, {_human(sum(sizes.values()))} "
         f"into {hf_dir}")
    fetch_all(fetch, [f for f in wanted if f not in weights], max_workers=1)
    fetch_all(fetch, weights, max_workers=4)
    return commit


def fetch_all(fetch: Callable[[str], Path], names: list[str], max_workers: int) -> None:
    """`fetch` each name, a few at a time; the first failure is raised once the others stop."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="hub-fetch") as pool:
        futures = [pool.submit(fetch, name) for name in names]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            future.cancel()  # not started yet: not worth starting after a failure
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()


def check_published_hash(path: Path, sibling, hf_dir: Path) -> None:
    """The file must have the size and hash the Hub lists: the SHA-256 of LFS files, the git blob
    SHA-1 of the others. A mismatch deletes the file (so the next run fetches it again) and
    raises IntegrityError naming it."""
    from litgpt_runtime.checkpoint import sha256_file

    if sibling is None:
        return
    name = path.relative_to(hf_dir).as_posix()
    lfs = getattr(sibling, "lfs", None)
    expected_sha256 = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
    expected_size = sibling.size
    size = path.stat().st_size
    problem = None
    if expected_size is not None and size != int(expected_size):
        problem = f"it has {size:,} bytes, not the {int(expected_size):,} the Hub lists"
    elif expected_sha256:
        actual = sha256_file(path)
        if actual != expected_sha256:
            problem = f"its SHA-256 is {actual}, not the {expected_sha256} the Hub publishes"
    elif sibling.blob_id:
        actual = _git_blob_sha1(path)
        if actual != sibling.blob_id:
            problem = f"its git blob id is {actual}, not the {sibling.blob_id} the Hub lists"
    if problem:
        _forget_file(hf_dir, name)
        raise IntegrityError(f"{name} arrived corrupted: {problem}. Nothing was marked complete and the file was "
                             "deleted; run the same command again to fetch it again (if it keeps failing, a proxy "
                             "or mirror between you and the Hub is altering it).")


def _git_blob_sha1(path: Path) -> str:
    import hashlib

    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _forget_file(hf_dir: Path, name: str) -> None:
    """Remove a bad file and what huggingface_hub keeps about it (its metadata and any partial
    transfer), so that the next run fetches it from the start instead of trusting it."""
    (hf_dir / name).unlink(missing_ok=True)
    meta = hf_dir / ".cache" / "huggingface" / "download" / name
    Path(str(meta) + ".metadata").unlink(missing_ok=True)
    for partial in meta.parent.glob("*.incomplete"):
        partial.unlink(missing_ok=True)


def convert_and_publish(repo_id: str, commit: str, hf_dir: Path, final: Path, dtype: Optional[str], root: Path,
                        requested_revision: Optional[str] = None) -> None:
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
        mark_complete(staging, repo_id=repo_id, revision=commit, requested_revision=requested_revision)
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
    """A tqdm bar of converted tensors on stderr (conversion of big models takes minutes), as the
    Hub client shows its downloads; without a terminal (a pod's log) only the closing line."""

    def __init__(self) -> None:
        self.bar = None
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc="converting", unit="tensor", file=sys.stderr, disable=not self.tty)
        self.bar.update(done - self.bar.n)
        if done == total:
            self.bar.close()
            if not self.tty:
                print(f"  converted {total} tensors", file=sys.stderr, flush=True)


# --- used by chat, generate, finetune, serve -------------------------------------------------
def ensure_checkpoint(repo_id: str, checkpoint_root_dir: str | Path = "checkpoints",
                      access_token: Optional[str] = None) -> Path:
    """The checkpoint folder for `repo_id` (`org/name`, `org/name@revision`, a short name or a
    checkpoint path), downloading it on first use."""
    from litgpt_runtime.checkpoint import (
        checkpoint_dir_for, is_complete, refuse_litgpt_folder, resolve_checkpoint_dir, split_revision,
    )

    root = Path(checkpoint_root_dir)
    as_path = Path(repo_id)
    # (root / an absolute path is that path: an absolute folder is always an explicit folder)
    if as_path.is_dir() and (as_path.is_absolute() or not (root / repo_id).is_dir()):
        return resolve_checkpoint_dir(repo_id, root)  # an explicit folder: checked, never downloaded
    if "/" not in repo_id:  # a short name of a known model, e.g. pythia-160m
        from litgpt_runtime.config import find_preset

        preset = find_preset(repo_id)
        repo_id = preset["hf_repo_id"] if preset else repo_id
    name, revision = split_revision(repo_id)
    # (only downloads of the default branch live in <root>/<org>/<name>: no revision check there)
    final = checkpoint_dir_for(name, root, revision) if revision else root / name
    if is_complete(final, revision):
        return resolve_checkpoint_dir(repo_id, root)
    refuse_litgpt_folder(final)  # LitGPT downloads into the same <root>/<org>/<name> layout
    if name.startswith(("/", ".", "~")) or name.count("/") != 1:
        raise UserError(f"{repo_id!r} is neither an existing checkpoint folder nor a Hugging Face repo id "
                        "(<org>/<name>, e.g. HuggingFaceTB/SmolLM2-135M-Instruct).")
    check_repo_id(name)
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
