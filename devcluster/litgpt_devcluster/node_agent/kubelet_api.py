"""The one kubelet endpoint the agent serves: container logs, so `kubectl logs` (and an operator
reading a failed pod's logs) works. The apiserver reaches it at the node's InternalIP and
`daemonEndpoints.kubeletEndpoint.Port`, over TLS, as it reaches a kubelet.

Only `GET /containerLogs/<namespace>/<pod>/<container>` with `tailLines`, `limitBytes` and
`follow`; simulated containers have empty logs.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlparse

log = logging.getLogger("node-agent.kubelet-api")


class KubeletApi:
    def __init__(
        self,
        port: int,
        cert: Path,
        key: Path,
        find_log: Callable[[str, str, str], Path | None],
        is_running: Callable[[str, str, str], bool],
    ):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - quiet; errors go to our log
                pass

            def do_GET(self):
                url = urlparse(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(404, "only /containerLogs/<namespace>/<pod>/<container> is served")
                    return
                api._serve_logs(self, *parts[1:], parse_qs(url.query))

        self.find_log = find_log
        self.is_running = is_running
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="kubelet-api", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()

    def _serve_logs(self, handler: BaseHTTPRequestHandler, namespace: str, pod: str, container: str, query: dict) -> None:
        path = self.find_log(namespace, pod, container)
        data = path.read_bytes() if path and path.exists() else b""
        tail = query.get("tailLines")
        if tail:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail[0]):]) if int(tail[0]) > 0 else b""
        limit = query.get("limitBytes")
        if limit:
            data = data[: int(limit[0])]
        follow = query.get("follow", ["false"])[0] == "true"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        if not follow:
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()
        offset = path.stat().st_size if path and path.exists() else 0
        # Stream what the container writes until it stops (or the client goes away).
        try:
            while True:
                path = path or self.find_log(namespace, pod, container)
                if path and path.exists() and path.stat().st_size > offset:
                    with open(path, "rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read()
                    offset += len(chunk)
                    handler.wfile.write(chunk)
                    handler.wfile.flush()
                elif not self.is_running(namespace, pod, container):
                    return
                else:
                    time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            return
