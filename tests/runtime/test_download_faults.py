"""Downloads that end: stalls, short and altered files, refusals, revisions, locks, hostile shard
names -- each injected by the local Hub server and met by the real huggingface_hub client."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from litgpt_devcluster.hf_tiny import make_hf_model_dir
from litgpt_devcluster.hub_server import make_repo
from litgpt_runtime import download, hub_transfer
from litgpt_runtime.checkpoint import (
    COMPLETE_MARKER,
    is_complete,
    read_marker,
    resolve_checkpoint_dir,
    sha256_file,
)
from litgpt_runtime.errors import EXIT_REASONS, AccessDenied, IntegrityError, NotFound, TransferStalled, UserError

REPO = "tiny-org/tiny-llama"
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    return make_hf_model_dir("llama", tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture
def repo(hub, hf_folder) -> Path:
    return make_repo(hub.root, REPO, hf_folder)


@pytest.fixture
def quick_backoff(monkeypatch):
    """Back-off waits of 0.05, 0.1, ... s instead of 2, 4, ... s (the sequence itself is tested below)."""
    monkeypatch.setattr(hub_transfer, "BACKOFF_BASE", 0.05)


def _gets(hub, name: str) -> list[str | None]:
    return [rng for m, p, rng in hub.requests if m == "GET" and "/resolve/" in p and p.endswith("/" + name)]


def _nothing_complete(root: Path) -> bool:
    return not root.exists() or not any(root.rglob(COMPLETE_MARKER))


# --- stalls ---------------------------------------------------------------------------------------
def test_a_stalled_transfer_is_retried_and_resumes_where_it_stopped(hub, hub_env, repo, tmp_path, quick_backoff,
                                                                    capfd, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)  # the client keeps whole chunks only
    hub.stall_once = {WEIGHTS: 5000}  # 5000 bytes, then silence with the connection open
    folder = download.main(REPO, checkpoint_root_dir=tmp_path / "ck", stall_timeout=1, retries=2)
    assert is_complete(folder)
    gets = _gets(hub, WEIGHTS)
    assert gets == [None, "bytes=4096-"]  # resumed from the chunk it had, not restarted
    assert f"{WEIGHTS}: 1 s without data; retrying in 0.05 s (retry 1 of 2)." in capfd.readouterr().err
    # the spliced file is byte-exact: its sha256 was checked against the Hub's before conversion
    assert read_marker(folder)["revision"] == hub.commit_sha(REPO)


def test_a_transfer_that_stays_stalled_ends_after_the_retries(hub, hub_env, repo, tmp_path, quick_backoff, capfd):
    hub.stall = {WEIGHTS: 5000}
    started = time.monotonic()
    with pytest.raises(TransferStalled, match=rf"{WEIGHTS} .* stalled: no data for 1 s, 3 times"):
        download.main(REPO, checkpoint_root_dir=tmp_path / "ck", stall_timeout=1, retries=2)
    assert time.monotonic() - started < 30
    assert len(_gets(hub, WEIGHTS)) == 3
    err = capfd.readouterr().err
    assert "retrying in 0.05 s (retry 1 of 2)" in err and "retrying in 0.1 s (retry 2 of 2)" in err
    assert _nothing_complete(tmp_path / "ck")


def test_backoff_doubles_and_is_capped():
    assert [hub_transfer.backoff_seconds(a) for a in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert hub_transfer.backoff_seconds(20) == hub_transfer.MAX_BACKOFF


def test_stall_policy_counts_each_url_and_waits_before_the_next_request():
    import httpx2

    waits: list[float] = []
    policy = hub_transfer._StallPolicy(seconds=3, retries=3, sleep=waits.append)
    url = "http://hub/org/m/resolve/main/x.bin?signature=1"
    for attempt in range(3):
        assert isinstance(policy.stalled(url), httpx2.ReadTimeout)  # huggingface_hub resumes on this
        policy.before_request(url.replace("signature=1", "signature=2"))  # a re-signed link is the same file
    final = policy.stalled(url)
    assert isinstance(final, hub_transfer.Stalled) and final.filename == "x.bin"
    assert waits == [2, 4, 8]
    assert isinstance(policy.stalled("http://hub/org/m/resolve/main/y.bin"), httpx2.ReadTimeout)  # its own count


# --- files that do not match what the Hub publishes ------------------------------------------------
@pytest.mark.parametrize("name", [WEIGHTS, "tokenizer.json"])
def test_an_altered_file_is_refused_by_name_and_refetched_next_run(hub, hub_env, repo, tmp_path, name):
    """Regression: a model.safetensors whose last 64 bytes were altered (same length, the Hub
    still listing the true sha256) was converted and marked complete."""
    hub.corrupt = {name}
    root = tmp_path / "ck"
    kind = "SHA-256" if name == WEIGHTS else "git blob id"
    with pytest.raises(IntegrityError, match=rf"{name} arrived corrupted: its {kind} is"):
        download.main(REPO, checkpoint_root_dir=root)
    assert _nothing_complete(root)

    hub.corrupt = set()
    folder = download.main(REPO, checkpoint_root_dir=root)
    assert is_complete(folder)
    assert len(_gets(hub, name)) == 2  # the bad copy was not trusted the second time
    if name == WEIGHTS:
        from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint

        convert_hf_checkpoint(hub.repo_dir(REPO), tmp_path / "direct")
        assert sha256_file(folder / WEIGHTS) == sha256_file(tmp_path / "direct" / WEIGHTS)


def test_a_truncated_file_is_refused_by_name(hub, hub_env, repo, tmp_path):
    hub.truncate = {WEIGHTS: 3000}
    root = tmp_path / "ck"
    with pytest.raises(IntegrityError, match=rf"{WEIGHTS} arrived incomplete"):
        download.main(REPO, checkpoint_root_dir=root)
    assert _nothing_complete(root)
    hub.truncate = {}
    assert is_complete(download.main(REPO, checkpoint_root_dir=root))


# --- refusals end at once, with their own exit status ------------------------------------------
@pytest.mark.parametrize("status,error", [(401, AccessDenied), (403, AccessDenied), (404, NotFound)])
def test_refusals_raise_their_own_error_without_retrying(hub, hub_env, repo, tmp_path, status, error):
    hub.deny = {REPO: status}
    with pytest.raises(error):
        download.main(REPO, checkpoint_root_dir=tmp_path / "ck")
    assert len(hub.requests) == 1  # asked once: no retry loop for what retrying cannot fix
    assert _nothing_complete(tmp_path / "ck")


def test_a_missing_revision_is_not_found(hub, hub_env, repo, tmp_path):
    with pytest.raises(NotFound, match="revision"):
        download.main(REPO, checkpoint_root_dir=tmp_path / "ck", revision="no-such-branch")


@pytest.mark.parametrize("status,code,reason", [(401, 3, "AccessDenied"), (403, 3, "AccessDenied"),
                                                (404, 4, "NotFound")])
def test_cli_exit_status_and_termination_message_name_the_reason(litgpt, hub, hub_env, repo, tmp_path, status, code,
                                                                 reason):
    hub.deny = {REPO: status}
    log = tmp_path / "termination-log"
    result = litgpt("download", REPO, "--checkpoint_root_dir", str(tmp_path / "ck"),
                    env={**hub_env, "LITGPT_TERMINATION_LOG": str(log)}, timeout=120)
    assert result.returncode == code, result.stderr
    assert EXIT_REASONS[code] == reason
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert log.read_text().startswith(f"{reason}: ")


def test_exit_statuses_are_distinct_and_avoid_the_shell_s():
    codes = list(EXIT_REASONS)
    assert len(set(codes)) == len(codes) == len(set(EXIT_REASONS.values()))
    assert not set(codes) & {0, 1, 2, 126, 127, 130, 137, 143}
    assert {"AccessDenied", "NotFound", "DownloadStalled", "ChecksumMismatch"} <= set(EXIT_REASONS.values())


# --- revisions ----------------------------------------------------------------------------------
def test_a_second_revision_gets_its_own_folder_and_is_not_taken_for_the_first(hub, hub_env, repo, tmp_path):
    """Regression: completeness ignored --revision, so another revision of a downloaded repo was
    reported complete with the first one's weights."""
    other = make_hf_model_dir("llama", tmp_path / "v2-source", seed=7)
    hub.branches = {(REPO, "v2"): other}
    root = tmp_path / "ck"
    main_folder = download.main(REPO, checkpoint_root_dir=root)
    v2_folder = download.main(REPO, checkpoint_root_dir=root, revision="v2")
    assert v2_folder == root / "tiny-org" / "tiny-llama@v2" and v2_folder != main_folder
    assert len(_gets(hub, WEIGHTS)) == 2  # fetched again, not "already complete"
    assert sha256_file(v2_folder / WEIGHTS) != sha256_file(main_folder / WEIGHTS)
    marker = read_marker(v2_folder)
    assert marker["requested_revision"] == "v2" and marker["revision"] == hub.commit_of(other)
    assert is_complete(v2_folder, "v2") and not is_complete(main_folder, "v2")
    assert not is_complete(v2_folder, "main") and is_complete(main_folder, "main")
    assert is_complete(v2_folder, marker["revision"][:10])  # by commit prefix too
    assert resolve_checkpoint_dir(f"{REPO}@v2", root) == v2_folder
    assert resolve_checkpoint_dir(REPO, root) == main_folder
    # asked again: both are complete, nothing is fetched
    before = len(hub.requests)
    assert download.main(f"{REPO}@v2", checkpoint_root_dir=root) == v2_folder
    assert len(hub.requests) == before


# --- two downloads of one repo ------------------------------------------------------------------
@pytest.mark.slow
def test_two_downloads_of_one_repo_take_turns(hub, hub_env, repo, tmp_path):
    from conftest import clean_env, litgpt_command

    root = tmp_path / "ck"
    hub.throttle = {WEIGHTS: 100_000}  # a few seconds for the tiny weights
    env = clean_env(tmp_path / "hf_home", **hub_env)
    command = [*litgpt_command(), "download", REPO, "--checkpoint_root_dir", str(root)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _gets(hub, WEIGHTS) and time.monotonic() < deadline:
        time.sleep(0.1)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert "in progress; waiting" in second.stderr and "already complete" in second.stderr
    assert len(_gets(hub, WEIGHTS)) == 1
    assert is_complete(root / REPO)


def test_download_lock_is_exclusive_across_processes(tmp_path):
    import sys

    final = tmp_path / "org" / "name"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from litgpt_runtime.download import download_lock\n"
         f"with download_lock(Path({str(final)!r})):\n    print('held', flush=True); time.sleep(2)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with download.download_lock(final):
        waited = time.monotonic() - started
    holder.wait(timeout=30)
    assert waited > 0.5

# --- shard names are paths: only those the repo lists ------------------------------------------
def test_index_naming_a_shard_outside_the_repo_is_refused(hub, hub_env, tmp_path):
    source = make_hf_model_dir("llama", tmp_path / "sharded", max_shard_size="60KB")
    repo = make_repo(hub.root, REPO, source)
    index = json.loads((repo / "model.safetensors.index.json").read_text())
    first_key = next(iter(index["weight_map"]))
    index["weight_map"][first_key] = "../../../outside.safetensors"
    (repo / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=r"names the shard '../../../outside.safetensors'.*refusing"):
        download.main(REPO, checkpoint_root_dir=tmp_path / "ck")
    assert not any("outside" in p for _, p, _ in hub.requests)
    assert _nothing_complete(tmp_path / "ck")


@pytest.mark.parametrize("bad", ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors", ".."])
def test_converting_a_folder_whose_index_points_outside_is_refused(tmp_path, bad):
    from litgpt_runtime.convert.hf_to_litgpt import HFWeights

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": bad}}))
    with pytest.raises(UserError, match="not a plain file name"):
        HFWeights(folder)
