"""Checkpoint folders: resolve, completeness marker, verify, save/load (memory-mapped)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from litgpt_runtime.checkpoint import (
    COMPLETE_MARKER, WEIGHTS_FILE, is_complete, load_model, mark_complete, resolve_checkpoint_dir,
    save_checkpoint, verify,
)
from litgpt_runtime.config import Config
from litgpt_runtime.errors import UserError
from litgpt_runtime.model import GPT

TINY = dict(n_layer=2, n_embd=32, n_head=4, n_query_groups=2, intermediate_size=64, vocab_size=100, block_size=64)


def tiny_model(**overrides) -> GPT:
    config = Config.from_name("SmolLM2-135M", **{**TINY, **overrides})
    torch.manual_seed(0)
    model = GPT(config)
    model.reset_parameters()
    return model


def saved(tmp_path, repo_id="org/tiny", **overrides):
    model = tiny_model(**overrides)
    folder = tmp_path / "checkpoints" / repo_id
    save_checkpoint(folder, model.state_dict(), model.config, meta={"repo_id": repo_id, "revision": "main"})
    return model, folder


def test_save_load_round_trip_tied_and_memory_mapped(tmp_path):
    model, folder = saved(tmp_path)
    assert model.config.tie_embeddings
    loaded = load_model(folder)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied after assign=True
    idx = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), model.eval()(idx), rtol=0, atol=0)
    header_len = int.from_bytes((folder / WEIGHTS_FILE).read_bytes()[:8], "little")
    header = json.loads((folder / WEIGHTS_FILE).read_bytes()[8 : 8 + header_len])
    # the tied head is stored once
    assert "lm_head.weight" not in header and "transformer.wte.weight" in header
    # the weights are views into one mapping of the file (addresses keep the file's layout), not copies
    params = dict(loaded.named_parameters(remove_duplicate=False))
    base = params["transformer.wte.weight"].data_ptr() - header["transformer.wte.weight"]["data_offsets"][0]
    for name, info in header.items():
        if name != "__metadata__":
            assert params[name].data_ptr() - base == info["data_offsets"][0], name


def test_load_with_dtype(tmp_path):
    _, folder = saved(tmp_path)
    model = load_model(folder, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).dtype == torch.bfloat16


def test_marker_lists_sha256_and_is_written_atomically(tmp_path, monkeypatch):
    _, folder = saved(tmp_path)
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert marker["repo_id"] == "org/tiny" and marker["revision"] == "main" and marker["created"]
    assert set(marker["files"]) == {WEIGHTS_FILE} and len(marker["files"][WEIGHTS_FILE]) == 64
    verify(folder)

    # a crash while writing the marker leaves no marker (and no half-written one under its name)
    (folder / COMPLETE_MARKER).unlink()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        mark_complete(folder, repo_id="org/tiny")
    assert not (folder / COMPLETE_MARKER).exists() and not is_complete(folder)


def test_rewriting_a_folder_withdraws_the_marker_first(tmp_path, monkeypatch):
    model, folder = saved(tmp_path)
    import litgpt_runtime.safetensors_io as io

    def crash(*args, **kwargs):
        raise OSError("killed mid-write")

    monkeypatch.setattr(io, "write_streaming", crash)
    with pytest.raises(OSError):
        save_checkpoint(folder, model.state_dict(), model.config, meta={"repo_id": "org/tiny"})
    assert not is_complete(folder)


def test_verify_names_the_corrupted_file(tmp_path):
    _, folder = saved(tmp_path)
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF  # same size: is_complete (cheap) cannot tell, verify (sha256) can
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    assert is_complete(folder)
    with pytest.raises(UserError, match=r"model.safetensors .* is corrupted.*litgpt download org/tiny"):
        verify(folder)
    (folder / WEIGHTS_FILE).write_bytes(bytes(data[:-10]))  # truncated: not complete any more
    assert not is_complete(folder)


def test_resolve_checkpoint_dir(tmp_path):
    _, folder = saved(tmp_path)
    root = tmp_path / "checkpoints"
    assert resolve_checkpoint_dir("org/tiny", root) == folder
    assert resolve_checkpoint_dir(str(folder), root) == folder  # a path works in place of a repo id

    with pytest.raises(UserError, match=r"No checkpoint for EleutherAI/pythia-160m .* Run `litgpt download EleutherAI/pythia-160m` first"):
        resolve_checkpoint_dir("pythia-160m", root)  # short names resolve to the repo id
    (folder / COMPLETE_MARKER).unlink()
    with pytest.raises(UserError, match=r"incomplete .* Run `litgpt download org/tiny` to finish it"):
        resolve_checkpoint_dir("org/tiny", root)
    with pytest.raises(UserError, match=r"incomplete .* `litgpt download org/tiny`"):
        resolve_checkpoint_dir(str(folder), root)
    with pytest.raises(UserError, match="neither a checkpoint folder nor a Hugging Face repo id"):
        resolve_checkpoint_dir("no-such-thing", root)


def test_mark_complete_refuses_a_folder_without_weights(tmp_path):
    Config.from_name("pythia-14m").save(tmp_path)
    with pytest.raises(ValueError, match="no weight file"):
        mark_complete(tmp_path)


def _resident_file_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def _kernel_has_pageout() -> bool:
    if not os.path.exists("/proc/self/status"):
        return False
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (5, 4)


@pytest.mark.skipif(not _kernel_has_pageout(), reason="needs Linux >= 5.4 (MADV_PAGEOUT) and /proc")
def test_page_out_drops_read_weights_from_resident_memory_and_keeps_modified_ones(tmp_path):
    """Writing a finetuned model reads every base weight; page_out keeps those reads from adding
    to the process's resident memory, and never loses a weight that was changed in memory."""
    from litgpt_runtime.safetensors_io import load_mmap, page_out, save_state_dict

    path = tmp_path / "big.safetensors"
    save_state_dict(path, {"a": torch.randn(2048, 1024), "b": torch.randn(1024, 1024)})  # 8 + 4 MiB
    tensors = load_mmap(path)
    before = _resident_file_kib()
    expected_b = tensors["b"].clone()
    tensors["b"][0, :10] = 7.0  # copy-on-write: this page now exists only in memory
    total = float(tensors["a"].sum() + tensors["b"].sum())  # read everything: paged in
    assert _resident_file_kib() - before > 10_000
    assert page_out(tensors.values()) >= 12 * 2**20
    assert _resident_file_kib() - before < 2_000
    # read back from the file; the modified row kept its new values
    assert float(tensors["a"].sum() + tensors["b"].sum()) == pytest.approx(total)
    assert torch.equal(tensors["b"][0, :10], torch.full((10,), 7.0))
    assert torch.equal(tensors["b"][1:], expected_b[1:])
    assert page_out([torch.ones(4)]) == 0  # not from a mapped file: nothing to do
