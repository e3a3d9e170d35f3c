"""Weight integrity: one digest per checkpoint, printed by `litgpt download` (and left in the
termination log for the operator), and checked before use when $LITGPT_EXPECTED_DIGEST is set."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from litgpt_devcluster.hf_tiny import make_hf_model_dir
from litgpt_devcluster.hub_server import make_repo
from litgpt_runtime import checkpoint, download
from litgpt_runtime.checkpoint import (
    EXPECTED_DIGEST_ENV,
    WEIGHTS_FILE,
    checkpoint_digest,
    read_marker,
    resolve_checkpoint_dir,
    save_checkpoint,
    verify_digest,
)
from litgpt_runtime.config import Config
from litgpt_runtime.errors import UserError
from litgpt_runtime.termination import TERMINATION_LOG_ENV
from litgpt_runtime.model import GPT

TINY = dict(n_layer=1, n_embd=32, n_head=4, n_query_groups=2, intermediate_size=64, vocab_size=100, block_size=32)


@pytest.fixture
def folder(tmp_path) -> Path:
    model = GPT(Config.from_name("SmolLM2-135M", **TINY))
    model.reset_parameters()
    path = tmp_path / "checkpoints" / "org" / "tiny"
    save_checkpoint(path, model.state_dict(), model.config, meta={"repo_id": "org/tiny", "revision": "main"})
    checkpoint._verified.clear()
    return path


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside the last tensor: the size (what is_complete checks) stays the same
    path.write_bytes(bytes(data))


def test_digest_is_sha256_over_sorted_name_and_hash_lines(folder):
    files = read_marker(folder)["files"]
    lines = "".join(f"{name}:{files[name]}\n" for name in sorted(files))
    assert checkpoint_digest(folder) == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    assert files[WEIGHTS_FILE] == hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()


def test_intact_weights_pass_and_a_flipped_byte_names_the_file(folder, monkeypatch):
    digest = checkpoint_digest(folder)
    monkeypatch.setenv(EXPECTED_DIGEST_ENV, digest)
    assert resolve_checkpoint_dir("org/tiny", folder.parents[1]) == folder
    checkpoint._verified.clear()
    _flip_a_byte(folder / WEIGHTS_FILE)
    with pytest.raises(UserError) as error:
        resolve_checkpoint_dir("org/tiny", folder.parents[1])
    message = str(error.value)
    assert WEIGHTS_FILE in message and "corrupted" in message
    assert "Delete the folder and run `litgpt download org/tiny` again" in message


def test_without_the_variable_nothing_is_hashed(folder, monkeypatch):
    monkeypatch.delenv(EXPECTED_DIGEST_ENV, raising=False)
    _flip_a_byte(folder / WEIGHTS_FILE)
    hashed = []
    monkeypatch.setattr(checkpoint, "sha256_file", lambda path, *a: hashed.append(path) or "")
    assert resolve_checkpoint_dir(folder) == folder  # cheap: the corruption goes unnoticed
    assert hashed == []


def test_a_consistent_but_different_checkpoint_is_refused(folder, tmp_path):
    # Files and marker agree with each other, but not with the digest the model recorded.
    other = "sha256:" + "0" * 64
    with pytest.raises(UserError, match=r"not the expected sha256:0+ .*Delete the folder and run `litgpt download org/tiny`"):
        verify_digest(folder, other)


def test_download_prints_the_digest_and_writes_the_termination_log(hub, hub_env, tmp_path, monkeypatch, capsys):
    make_repo(hub.root, "tiny-org/tiny-llama", make_hf_model_dir("llama", tmp_path / "hf" / "tiny-llama"))
    log = tmp_path / "termination-log"
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(log))
    final = download.main("tiny-org/tiny-llama", checkpoint_root_dir=tmp_path / "checkpoints")
    digest = checkpoint_digest(final)
    assert f"weights digest: {digest}" in capsys.readouterr().out
    assert log.read_text() == f"weights digest: {digest}\n"
    log.unlink()
    download.main("tiny-org/tiny-llama", checkpoint_root_dir=tmp_path / "checkpoints")  # already complete
    assert log.read_text() == f"weights digest: {digest}\n"


@pytest.mark.slow
def test_generate_refuses_corrupted_weights_with_one_message(litgpt, folder):
    digest = checkpoint_digest(folder)
    _flip_a_byte(folder / WEIGHTS_FILE)
    result = litgpt("generate", str(folder), "--prompt", "hi", "--max_new_tokens", "1",
                    env={EXPECTED_DIGEST_ENV: digest})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{WEIGHTS_FILE} in" in result.stderr and "corrupted" in result.stderr


def test_download_verify_rehashes_an_existing_checkpoint(folder, capsys):
    root = folder.parents[1]
    download.main("org/tiny", checkpoint_root_dir=root, verify=True)
    assert "All weight files match" in capsys.readouterr().err
    _flip_a_byte(folder / WEIGHTS_FILE)
    download.main("org/tiny", checkpoint_root_dir=root)  # without --verify: cheap, nothing re-read
    with pytest.raises(UserError, match=r"model.safetensors in .* is corrupted.*`litgpt download org/tiny`"):
        download.main("org/tiny", checkpoint_root_dir=root, verify=True)
