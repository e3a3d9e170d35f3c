"""Readiness probes for exec-mode containers (httpGet, tcpSocket, exec), on the kubelet's
schedule: first after `initialDelaySeconds`, then every `periodSeconds`; ready after
`successThreshold` successes in a row, not ready after `failureThreshold` failures in a row.
The pod's address is 127.0.0.1 here (its podIP is only a label), so that is where probes go."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass
class ProbeState:
    probe: dict
    next_at: float
    successes: int = 0
    failures: int = 0
    ready: bool = False

    @classmethod
    def for_container(cls, probe: dict, started_at: float) -> "ProbeState":
        return cls(probe, started_at + probe.get("initialDelaySeconds", 0))

    def update(self, check) -> bool:
        """Run `check()` (-> bool) if a probe is due; return the readiness."""
        now = time.time()
        if now < self.next_at:
            return self.ready
        self.next_at = now + self.probe.get("periodSeconds", 10)
        if check():
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.probe.get("successThreshold", 1):
                self.ready = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= self.probe.get("failureThreshold", 3):
                self.ready = False
        return self.ready


def _port(value, container: dict) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports") or []:  # a named port
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"probe names port {value!r}, which the container does not declare")


def check(probe: dict, container: dict, env: dict[str, str], cwd: str) -> bool:
    timeout = probe.get("timeoutSeconds", 1)
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            scheme = get.get("scheme", "HTTP").lower()
            url = f"{scheme}://127.0.0.1:{_port(get['port'], container)}{get.get('path', '/')}"
            request = urllib.request.Request(url, headers={h["name"]: h["value"] for h in get.get("httpHeaders") or []})
            context = ssl._create_unverified_context() if scheme == "https" else None  # as the kubelet: no verify
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return 200 <= response.status < 400
        if "tcpSocket" in probe:
            with socket.create_connection(("127.0.0.1", _port(probe["tcpSocket"]["port"], container)), timeout=timeout):
                return True
        if "exec" in probe:
            result = subprocess.run(probe["exec"]["command"], env=env, cwd=cwd, capture_output=True, timeout=timeout)
            return result.returncode == 0
    except (urllib.error.URLError, OSError, ValueError, subprocess.TimeoutExpired):
        return False
    return False  # grpc and anything newer: not supported, never ready
