"""Fixtures for the runtime tests: the `litgpt` console script in a subprocess, the local Hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

HERE = Path(__file__).parent
# Helpers beside the tests (finetune_tiny) import the same way under any pytest import mode.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from litgpt_devcluster.hub_server import HubServer  # noqa: E402


def litgpt_command() -> list[str]:
    """The installed console script when there is one (what users run), else `python -m litgpt_runtime`."""
    script = Path(sys.executable).parent / "litgpt"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "litgpt_runtime"]


def clean_env(hf_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    env.update(extra)
    return env


@pytest.fixture
def litgpt(tmp_path_factory) -> Callable[..., subprocess.CompletedProcess]:
    """Run `litgpt <args>`; returns the CompletedProcess (text mode)."""
    hf_home = tmp_path_factory.mktemp("hf_home")

    def run(*args: str, env: Optional[dict[str, str]] = None, input: Optional[str] = None,
            cwd: Optional[Path] = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([*litgpt_command(), *args], capture_output=True, text=True, input=input,
                              env=clean_env(hf_home, **(env or {})), cwd=cwd, timeout=timeout)

    return run


@pytest.fixture
def hub(tmp_path) -> HubServer:
    """A local Hub serving `tmp_path/hub/<org>/<name>`; point HF_ENDPOINT at `hub.url`."""
    root = tmp_path / "hub"
    root.mkdir()
    server = HubServer(root).start()
    yield server
    server.stop()


@pytest.fixture
def hub_env(hub, tmp_path, monkeypatch) -> dict[str, str]:
    """Environment for the real huggingface_hub client (in this process and in subprocesses)."""
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf_home")}
    for key in [k for k in os.environ if k.startswith(("HF_", "HUGGING_FACE"))]:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    # huggingface_hub reads its endpoint when imported; refresh it for in-process calls.
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return env
