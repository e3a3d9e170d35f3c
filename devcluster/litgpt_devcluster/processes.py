"""Background processes that can be stopped completely, from this process or a later one.

Each process gets its own process group (so stopping it also stops anything it started), a log
file, and a pid file; a later `down` finds the pid files and stops what is still running. A pid
is only signalled after checking that it still runs the command we started (pids get reused).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test process is killed outright, the kernel
    # kills the child too, so a crashed pytest leaves no apiserver behind.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Managed:
    """One background process started by `spawn`."""

    name: str
    pid: int
    log: Path
    pid_file: Path
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _runs(self.pid, self.pid_file)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def spawn(
    name: str,
    argv: list[str],
    state_dir: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    tie_to_parent: bool = False,
) -> Managed:
    """Start `argv` in its own process group; output goes to `state_dir/logs/<name>.log`."""
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    (state_dir / "pids").mkdir(parents=True, exist_ok=True)
    log = state_dir / "logs" / f"{name}.log"
    pid_file = state_dir / "pids" / f"{name}.pid"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if tie_to_parent else None,
        )
    # The first line of the pid file is the pid, the second what it runs (checked before a kill).
    pid_file.write_text(f"{popen.pid}\n{argv[0]}\n")
    return Managed(name, popen.pid, log, pid_file, popen)


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _runs(pid: int, pid_file: Path) -> bool:
    """True if `pid` is alive and still runs the program named in `pid_file`."""
    cmdline = _cmdline(pid)
    if not cmdline or _is_zombie(pid):
        return False
    try:
        program = pid_file.read_text().splitlines()[1]
    except (OSError, IndexError):
        return False
    return cmdline[0] == program


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A group whose only members are zombies waiting for us to reap them is as good as gone.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid and not _is_zombie(int(entry.name)):
                    return True
            except (ProcessLookupError, PermissionError):
                continue
    return False


def stop(proc: Managed, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace_s`, reap, remove the pid file."""
    # The group id equals the pid (start_new_session); only signal it if it is still ours.
    leader_alive = proc.popen.poll() is None if proc.popen is not None else _runs(proc.pid, proc.pid_file)
    if leader_alive:
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(proc.pid):
            if proc.popen is not None:
                proc.popen.poll()
            time.sleep(0.05)
        if _group_alive(proc.pid):
            _signal_group(proc.pid, signal.SIGKILL)
    elif _group_alive(proc.pid) and proc.popen is not None:
        # The leader exited but something it started lives on in its group.
        _signal_group(proc.pid, signal.SIGKILL)
    if proc.popen is not None:
        try:
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    proc.pid_file.unlink(missing_ok=True)


def kill(proc: Managed, children_groups: bool = False) -> None:
    """SIGKILL the process group at once (no grace), reap, remove the pid file. With
    `children_groups`, also the process groups its children lead (a node agent's containers run
    in sessions of their own, and their workers would outlive a kill of the leader alone)."""
    alive = proc.popen is not None and proc.popen.poll() is None or proc.popen is None and _runs(proc.pid, proc.pid_file)
    groups = _children_groups(proc.pid) if alive and children_groups else set()
    if alive:
        _signal_group(proc.pid, signal.SIGKILL)
    for group in groups:
        _signal_group(group, signal.SIGKILL)
    if proc.popen is not None:
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    proc.pid_file.unlink(missing_ok=True)


def _children_groups(pid: int) -> set[int]:
    """Process groups led by children of `pid` (other than its own)."""
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and int(fields[2]) != pid:  # ppid, pgrp
            groups.add(int(fields[2]))
    return groups


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def from_pid_files(state_dir: Path) -> list[Managed]:
    """The processes a previous `spawn` in `state_dir` left pid files for."""
    found = []
    for pid_file in sorted((state_dir / "pids").glob("*.pid")):
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid_file.unlink(missing_ok=True)
            continue
        name = pid_file.stem
        found.append(Managed(name, pid, state_dir / "logs" / f"{name}.log", pid_file))
    return found


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in process group `pgid` (the server and its children)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != pgid:  # field 5 of /proc/PID/stat: the process group
                continue
            status = (entry / "status").read_text()
        except (OSError, ValueError):
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(match.group(1)) * 1024 if match else 0
    return total

