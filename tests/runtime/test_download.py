"""`litgpt download` through the real huggingface_hub client against the local Hub server."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from litgpt_devcluster.hf_tiny import make_hf_model_dir
from litgpt_devcluster.hub_server import make_repo
from litgpt_runtime import download
from litgpt_runtime.checkpoint import COMPLETE_MARKER, is_complete, read_marker
from litgpt_runtime.errors import UserError

REPO = "tiny-org/tiny-llama"


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    return make_hf_model_dir("llama", tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture
def repo(hub, hf_folder) -> Path:
    return make_repo(hub.root, REPO, hf_folder)


def _resolves(hub, name: str, method: str = "GET") -> int:
    return sum(1 for m, p, _ in hub.requests if m == method and "/resolve/" in p and p.endswith("/" + name))


# --- through the console script ---------------------------------------------------------------
@pytest.mark.slow
def test_download_happy_path_then_second_run_finds_everything_in_place(litgpt, hub, hub_env, repo, tmp_path):
    root = tmp_path / "checkpoints"
    result = litgpt("download", REPO, "--checkpoint_root_dir", str(root), env=hub_env)
    assert result.returncode == 0, result.stderr
    folder = root / REPO
    assert is_complete(folder)
    marker = read_marker(folder)
    assert marker["repo_id"] == REPO and marker["revision"] == hub.commit_sha(REPO)
    for name in ("model.safetensors", "model_config.yaml", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (folder / name).is_file(), name
    assert not (root / download.DOWNLOADS_DIR / REPO).exists()  # the raw download is cleaned up
    assert "Downloading" in result.stderr and "Done" in result.stderr

    from litgpt_runtime.checkpoint import load_model

    model = load_model(folder)
    assert model.config.n_layer == 2

    before = len(hub.requests)
    again = litgpt("download", REPO, "--checkpoint_root_dir", str(root), env=hub_env)
    assert again.returncode == 0 and "already complete" in again.stderr
    assert [r for r in hub.requests[before:] if "/resolve/" in r[1] or "/api/models/" in r[1]] == []


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "gated-no-token", "gated-bad-token", "gated-no-access"])
def test_hub_refusals_exit_with_their_status_and_one_clear_message(litgpt, hub, hub_env, repo, tmp_path, case):
    hub.valid_tokens = {"good", "other"}
    hub.gated = {REPO: {"good"}}
    repo_id, env, expected = REPO, dict(hub_env), ""
    if case == "missing":
        repo_id, expected = "tiny-org/no-such-model", "not found"
    elif case == "gated-no-token":
        expected = "gated model: open"
    elif case == "gated-bad-token":
        env["HF_TOKEN"], expected = "wrong", "rejected your token"
    else:
        env["HF_TOKEN"], expected = "other", "has no access"
    result = litgpt("download", repo_id, "--checkpoint_root_dir", str(tmp_path / "ck"), env=env)
    assert result.returncode == (4 if case == "missing" else 3)  # NotFound / AccessDenied
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ck" / repo_id / COMPLETE_MARKER).exists()


@pytest.mark.slow
def test_gated_repo_with_an_allowed_token(litgpt, hub, hub_env, repo, tmp_path):
    hub.valid_tokens, hub.gated = {"good"}, {REPO: {"good"}}
    result = litgpt("download", REPO, "--access_token", "good", "--checkpoint_root_dir", str(tmp_path / "ck"),
                    env=hub_env)
    assert result.returncode == 0, result.stderr
    assert is_complete(tmp_path / "ck" / REPO)


@pytest.mark.slow
def test_interrupted_download_leaves_nothing_complete_and_the_next_run_resumes(litgpt, hub, hub_env, repo, tmp_path):
    """Ctrl-C in the middle of the weights: no complete folder; the rerun fetches only what is missing."""
    from conftest import clean_env, litgpt_command

    root = tmp_path / "ck"
    hub.throttle = {"model.safetensors": 40_000}  # ~10 s for the tiny model's weights
    # SIGINT as a terminal's Ctrl-C delivers it: a test run started in the background by a shell
    # without job control inherits SIGINT ignored, and Python then leaves it ignored in the child.
    proc = subprocess.Popen([*litgpt_command(), "download", REPO, "--checkpoint_root_dir", str(root)],
                            env=clean_env(tmp_path / "hf_home", **hub_env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while _resolves(hub, "model.safetensors") == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # part of the file has arrived
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not is_complete(root / REPO)
    assert not (root / REPO).exists()
    fetched_side_files = _resolves(hub, "tokenizer.json")

    hub.throttle = {}
    result = litgpt("download", REPO, "--checkpoint_root_dir", str(root), env=hub_env)
    assert result.returncode == 0, result.stderr
    assert is_complete(root / REPO)
    assert _resolves(hub, "tokenizer.json") == fetched_side_files  # kept from the first run


# --- in this process (faster; faults injected around the real client) ------------------------------
def test_dropped_connection_mid_file_is_resumed_with_a_range_request(hub, hub_env, repo, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    # The client keeps what it has received in whole chunks (10 MB by default); with small chunks
    # the tiny model's weights span several of them, as a real model's do.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    hub.drop_once = {"model.safetensors": 10_000}
    folder = download.main(REPO, checkpoint_root_dir=tmp_path / "ck")
    assert is_complete(folder)
    ranges = [rng for m, p, rng in hub.requests if m == "GET" and p.endswith("/model.safetensors")]
    assert ranges == [None, "bytes=8192-"]  # two whole chunks kept, the rest asked for
    # The converted weights equal a conversion of the source folder: the splice was byte-exact.
    from litgpt_runtime.checkpoint import sha256_file
    from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint

    convert_hf_checkpoint(hub.repo_dir(REPO), tmp_path / "direct")
    assert sha256_file(folder / "model.safetensors") == sha256_file(tmp_path / "direct" / "model.safetensors")


def test_failed_conversion_leaves_no_complete_marker_and_rerun_skips_the_download(hub, hub_env, repo, tmp_path,
                                                                                monkeypatch):
    import litgpt_runtime.convert.hf_to_litgpt as hf_to_litgpt

    real_convert = hf_to_litgpt.convert_hf_checkpoint

    def convert_then_crash(hf_dir, out_dir, **kwargs):
        real_convert(hf_dir, out_dir, **kwargs)  # everything written ...
        raise RuntimeError("killed during conversion")  # ... but the process dies before the marker

    monkeypatch.setattr(hf_to_litgpt, "convert_hf_checkpoint", convert_then_crash)
    root = tmp_path / "ck"
    with pytest.raises(RuntimeError):
        download.main(REPO, checkpoint_root_dir=root)
    assert not is_complete(root / REPO)
    assert not any(root.rglob(COMPLETE_MARKER))
    with pytest.raises(UserError, match="litgpt download"):  # other actions refuse it
        from litgpt_runtime.checkpoint import resolve_checkpoint_dir

        resolve_checkpoint_dir(REPO, root)

    monkeypatch.setattr(hf_to_litgpt, "convert_hf_checkpoint", real_convert)
    weight_gets = _resolves(hub, "model.safetensors")
    folder = download.main(REPO, checkpoint_root_dir=root)
    assert is_complete(folder)
    assert _resolves(hub, "model.safetensors") == weight_gets  # the weights were not fetched again
    assert not list(root.glob(f"{REPO.split('/')[0]}/.*.converting"))


def test_incomplete_leftover_folder_is_replaced(hub, hub_env, repo, tmp_path):
    root = tmp_path / "ck"
    (root / REPO).mkdir(parents=True)
    (root / REPO / "model.safetensors").write_bytes(b"half")
    folder = download.main(REPO, checkpoint_root_dir=root)
    assert is_complete(folder) and (folder / "model.safetensors").stat().st_size > 4


def test_offline_mode_is_a_clear_stop(hub, hub_env, repo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        download.main(REPO, checkpoint_root_dir=tmp_path / "ck")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        download.ensure_checkpoint(REPO, tmp_path / "ck")
    assert hub.requests == []


def test_no_network_is_a_clear_error(hub_env, tmp_path, monkeypatch):
    import socket

    import huggingface_hub.constants as constants

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(UserError, match="Cannot reach the Hugging Face Hub"):
        download.main(REPO, checkpoint_root_dir=tmp_path / "ck")


def test_unsupported_architecture_names_supported_families_before_fetching_weights(hub, hub_env, repo, tmp_path):
    config = json.loads((repo / "config.json").read_text())
    config.update(model_type="bert", architectures=["BertForMaskedLM"])
    (repo / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="(?i)supported"):
        download.main(REPO, checkpoint_root_dir=tmp_path / "ck")
    assert _resolves(hub, "model.safetensors") == 0


def test_not_enough_disk_space_is_detected_before_downloading(hub, hub_env, repo, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(UserError, match="Not enough disk space.*Nothing was marked complete"):
        download.main(REPO, checkpoint_root_dir=tmp_path / "ck")
    assert _resolves(hub, "model.safetensors") == 0


def test_disk_full_during_conversion_is_a_user_error_and_nothing_is_complete(hub, hub_env, repo, tmp_path, monkeypatch):
    import litgpt_runtime.convert.hf_to_litgpt as hf_to_litgpt

    def no_space(hf_dir, out_dir, **kwargs):
        (Path(out_dir) / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hf_to_litgpt, "convert_hf_checkpoint", no_space)
    root = tmp_path / "ck"
    with pytest.raises(UserError, match="Not enough disk space.*free"):
        download.main(REPO, checkpoint_root_dir=root)
    assert not any(root.rglob(COMPLETE_MARKER))


def test_safetensors_preferred_and_only_indexed_shards_fetched(hub, hub_env, tmp_path):
    source = make_hf_model_dir("llama", tmp_path / "sharded", max_shard_size="60KB")
    repo = make_repo(hub.root, REPO, source)
    shards = json.loads((repo / "model.safetensors.index.json").read_text())["weight_map"].values()
    assert len(set(shards)) > 1
    (repo / "pytorch_model.bin").write_bytes(b"not fetched")  # .bin duplicate
    (repo / "consolidated.safetensors").write_bytes(b"not fetched")  # Mistral-style duplicate
    (repo / "original").mkdir()
    (repo / "original" / "consolidated.00.pth").write_bytes(b"not fetched")
    folder = download.main(REPO, checkpoint_root_dir=tmp_path / "ck")
    assert is_complete(folder)
    fetched = {p.rsplit("/", 1)[-1] for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p}
    assert set(shards) <= fetched
    assert not fetched & {"pytorch_model.bin", "consolidated.safetensors", "consolidated.00.pth"}


def test_bad_repo_id_and_dtype_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="<org>/<name>"):
        download.main("just-a-name", checkpoint_root_dir=tmp_path)
    with pytest.raises(UserError, match="dtype"):
        download.main("org/name", checkpoint_root_dir=tmp_path, dtype="float8")


def test_choose_weight_files_prefers_safetensors():
    files = ["config.json", "model.safetensors", "pytorch_model.bin", "onnx/model.safetensors"]
    assert download.choose_weight_files(files, read_index=None) == ["model.safetensors"]
    assert download.choose_weight_files(["pytorch_model.bin", "config.json"], None) == ["pytorch_model.bin"]
    assert download.choose_weight_files(["config.json"], None) == []
