"""`hack/control-plane.sh up` / `down` (the same ControlPlane the fixture uses) start a working
cluster and leave no process behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from litgpt_devcluster import controlplane

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "control-plane.sh"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.fixture
def installed():
    try:
        controlplane.installed_bin_dir()
    except controlplane.BinariesMissing as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(error), pytrace=False)
        pytest.skip(f"no local control plane: {controlplane.INSTALL_HINT}")


def test_up_env_down_leave_no_processes(installed, tmp_path):
    state = tmp_path / "cp"

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), "--state-dir", str(state), *args],
                              capture_output=True, text=True, timeout=180)

    try:
        up = script("up", "--node", "only-node:cpu=2")
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == f"export KUBECONFIG={state / 'kubeconfig'}"
        assert script("env").stdout == up.stdout
        assert set(script("status").stdout.split()) == {
            "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node-agent"}
        assert len(_processes_mentioning(str(state))) >= 5

        kubectl = subprocess.run(
            [str(controlplane.binary("kubectl")), "--kubeconfig", str(state / "kubeconfig"),
             "get", "nodes", "-o", "name"], capture_output=True, text=True, timeout=60)
        assert kubectl.stdout.split() == ["node/only-node"], kubectl.stderr

        again = script("up")
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        down = script("down")
    assert down.returncode == 0, down.stderr
    assert _processes_mentioning(str(state)) == []
    assert script("status").returncode == 1
    assert "no control plane is running" in script("env").stderr


def test_fixture_style_stop_leaves_no_processes(installed, tmp_path):
    cp = controlplane.ControlPlane(state_dir=tmp_path / "cp", nodes=(), tie_to_parent=True)
    try:
        cp.start()
        assert cp.kubectl("get", "--raw", "/readyz").strip() == "ok"
        pids = [proc.pid for proc in cp._procs.values()]
        assert len(pids) == 4
    finally:
        cp.stop()
    assert _processes_mentioning(str(tmp_path / "cp")) == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


def test_killed_test_process_takes_its_control_plane_with_it(installed, tmp_path):
    """A pytest killed outright (no finalizers) must not leave an apiserver running."""
    import signal
    import sys
    import time

    state = tmp_path / "cp"
    starter = (
        "import sys, time; from pathlib import Path\n"
        "from litgpt_devcluster.controlplane import ControlPlane\n"
        "ControlPlane(state_dir=Path(sys.argv[1]), tie_to_parent=True).start()\n"
        "print('started', flush=True); time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", starter, str(state)], cwd=SCRIPT.parents[1],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        assert len(_processes_mentioning(str(state))) >= 5
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 15
    while _processes_mentioning(str(state)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(state)) == []
