"""Helpers for the `litgpt serve` tests: a tiny checkpoint, a real server process on 127.0.0.1,
reading /metrics."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

from conftest import clean_env, litgpt_command
from litgpt_devcluster.hf_tiny import EOS_ID, make_hf_model_dir

MODEL = "tiny/llama"


def build_checkpoint(root: Path) -> Path:
    from litgpt_runtime.checkpoint import mark_complete
    from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint

    hf_dir = make_hf_model_dir("llama", root / "hf")
    ckpt = root / "checkpoints" / MODEL
    convert_hf_checkpoint(hf_dir, ckpt, repo_id=MODEL)
    mark_complete(ckpt, repo_id=MODEL, revision="test")
    return ckpt


def reference_greedy(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """litgpt_runtime.generate's greedy tokens (sequential, batch of one)."""
    from litgpt_runtime.generate import generate_tokens

    model.max_seq_length = model.config.block_size  # generate_tokens shrinks it to the request
    return list(generate_tokens(model, prompt_ids, max_new_tokens, temperature=0.0, stop_ids=[EOS_ID]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(text: str, name: str, labels: str = "") -> float:
    """The sample `name{labels}`; without labels, the sum over all label sets of `name`."""
    labelled = re.escape("{" + labels + "}") if labels else r"(?:\{[^}]*\})?"
    pattern = r"^" + re.escape(name) + labelled + r" ([0-9.e+-]+)$"
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


@contextlib.contextmanager
def running_server(checkpoint: Path, log_path: Path, hf_home: Path, *args: str,
                   env: Optional[dict[str, str]] = None, ready_path: str = "/health",
                   timeout: float = 180) -> Iterator[dict]:
    """`litgpt serve MODEL ...` in its own process group until the block ends (SIGKILLed then)."""
    import requests

    port = free_port()
    log = open(log_path, "w+")
    proc = subprocess.Popen(
        [*litgpt_command(), "serve", MODEL, "--checkpoint_root_dir", str(checkpoint.parent.parent), "--port", str(port),
         *args],
        stdout=log, stderr=subprocess.STDOUT, env=clean_env(hf_home, HF_HUB_OFFLINE="1", **(env or {})),
        start_new_session=True,  # its own process group: teardown reaches LitServe's children too
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if requests.get(url + ready_path, timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, "server did not become healthy:\n" + log_path.read_text()[-3000:]
            time.sleep(0.5)
        yield {"url": url, "proc": proc, "log": log_path, "port": port}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()

