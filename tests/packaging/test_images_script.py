"""hack/images.sh without building: the tag follows the build's inputs and only them, and the
pod sandbox program (hack/pause/pause.c) stops on SIGTERM and reaps orphans."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "runtime", "operator", "hack/images.sh",
          "hack/pause")


def images_script(repo: Path, *args: str) -> str:
    result = subprocess.run(["bash", str(repo / "hack" / "images.sh"), *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """The files the images are built from, in a scratch checkout whose sources the test may edit."""
    for name in INPUTS:
        source, target = REPO / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    return tmp_path


def test_tag_changes_with_sources_and_not_with_what_the_build_ignores(repo_copy):
    tag = images_script(repo_copy, "tag").strip()
    assert len(tag) == 12 and images_script(repo_copy, "tag").strip() == tag
    # Not build inputs: bytecode, other folders of the checkout.
    (repo_copy / "runtime" / "litgpt_runtime" / "__pycache__").mkdir()
    (repo_copy / "runtime" / "litgpt_runtime" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (repo_copy / "tests").mkdir()
    (repo_copy / "tests" / "test_x.py").write_text("")
    assert images_script(repo_copy, "tag").strip() == tag
    # A source edit is a new tag: new images and archives, the old ones stay usable.
    config = repo_copy / "runtime" / "litgpt_runtime" / "config.py"
    config.write_text(config.read_text() + "\n# edited\n")
    edited = images_script(repo_copy, "tag").strip()
    assert edited != tag
    names = images_script(repo_copy, "names").split()
    assert names[:2] == [f"localhost/litgpt-runtime:{edited}", f"localhost/litgpt-operator:{edited}"]
    assert names[2].startswith("localhost/pause:")
    archives = images_script(repo_copy, "archives").split()
    assert [Path(a).name for a in archives[:2]] == [f"litgpt-runtime-{edited}.tar", f"litgpt-operator-{edited}.tar"]


def test_usage_without_a_command(repo_copy):
    result = subprocess.run(["bash", str(repo_copy / "hack" / "images.sh")], capture_output=True, text=True)
    assert result.returncode == 2 and "hack/images.sh build" in result.stderr


@pytest.fixture(scope="module")
def pause_binary(tmp_path_factory) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc is missing (apt-get install -y gcc libc6-dev)")
    out = tmp_path_factory.mktemp("pause") / "pause"
    subprocess.run(["gcc", "-static", "-Os", "-Wall", "-Wextra", "-Werror", "-o", str(out),
                    str(REPO / "hack" / "pause" / "pause.c")], check=True, timeout=120)
    return out


def test_pause_exits_cleanly_on_sigterm_and_sigint(pause_binary):
    for signo in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([str(pause_binary)])
        time.sleep(0.2)
        assert proc.poll() is None, "pause must keep running until told to stop"
        proc.send_signal(signo)
        assert proc.wait(timeout=5) == 0


def children_states(pid: int) -> list[str]:
    """The process states (S, Z, ...) of a process's children."""
    states = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            states.append(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:
            pass  # gone between the two reads
    return states


def test_pause_reaps_orphans_as_pid_1(pause_binary):
    """As PID 1 of a PID namespace (a pod sharing its process namespace), pause inherits the
    orphans of that namespace; it must reap them when they end, or they stay zombies."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("needs root, unshare and nsenter for a PID namespace")
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", str(pause_binary)])
    pause = 0
    try:
        deadline = time.monotonic() + 5
        while not (pids := Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()):
            assert time.monotonic() < deadline, "unshare did not start pause"
            time.sleep(0.05)
        pause = int(pids[0])
        # A shell in pause's namespace starts a short sleep and exits: the sleep is orphaned and
        # re-parented to the namespace's PID 1, pause.
        subprocess.run(["nsenter", "-t", str(pause), "-p", "sh", "-c", "sleep 0.5 >/dev/null 2>&1 & exit 0"],
                       check=True, timeout=10)
        states = children_states(pause)
        assert len(states) == 1 and states != ["Z"], f"the orphan should now be pause's child: {states}"
        deadline = time.monotonic() + 10  # the sleep ends after 0.5 s; allow for a loaded machine
        while (states := children_states(pause)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert states == [], f"pause left the ended orphan as a zombie: {states}"
    finally:
        # unshare ignores SIGTERM while it waits (it leaves signals to its child): stop pause.
        if pause:
            os.kill(pause, signal.SIGTERM)
        else:
            outer.kill()
        assert outer.wait(timeout=5) == 0 or not pause
