"""A local stand-in for the Hugging Face Hub's file API, serving repos from a folder.

The real `huggingface_hub` client talks to it through `HF_ENDPOINT=http://127.0.0.1:<port>`. It
implements what `snapshot_download` / `hf_hub_download` of the installed client call (read from
its `_snapshot_download.py`, `file_download.py` and `hf_api.py`):

- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: repo info (`sha`, `siblings`).
- `GET /api/models/{repo}/tree/{rev}[/{path}]`: the file listing (`oid`, `size`, `lfs`).
- `HEAD|GET /{repo}/resolve/{rev}/{file}`: `X-Repo-Commit`, `ETag` (git blob sha1, or
  `X-Linked-Etag` = sha256 for LFS-style weight files), `Content-Length`, `Range` -> 206.
- Errors the way the Hub sends them: `X-Error-Code` RepoNotFound / GatedRepo / EntryNotFound /
  RevisionNotFound, `X-Error-Message` "Invalid credentials in Authorization header" for a bad token.

Faults for tests (set attributes of `HubServer` while it runs):
- `gated = {repo_id: {allowed tokens}}`, `valid_tokens = {tokens}`: 401 without a token, 401
  "Invalid credentials" for an unknown token, 403 for a known token without access.
- `drop_once = {filename: nbytes}`: the next GET of that file sends `nbytes` bytes, then closes
  the connection (the client resumes with a Range request).
- `throttle = {filename: bytes_per_second}`: slow transfer (to interrupt a download from outside).
- `stall = {filename: offset}`: every GET of that file sends its bytes up to `offset`, then
  nothing more while the connection stays open (a transfer that hangs rather than fails);
  `stall_once` the same for the next GET only.
- `truncate = {filename: nbytes}`: GETs serve only the first `nbytes` bytes as if that were the
  whole file, while the listing and HEAD still give the true size and hashes.
- `corrupt = {filename}`: GETs serve the file with its last 64 bytes altered (same length; the
  listing and HEAD still give the true sha256), as a bad mirror or a flipped disk block would.
- `deny = {repo_id: status}`: answer every request about that repo with 401, 403 or 404 the
  way the Hub does (for tests of each refusal without setting up gating).
- `requests`: log of `(method, path, range_header)` for assertions.

Other revisions: `branches = {(repo_id, name): folder}` serves `folder` as branch or tag `name`
of the repo (by name or by its own commit sha); `main` is always `root/<org>/<name>/`.

Repos live in `root/<org>/<name>/`. The commit sha is derived from the files' contents, so it
changes when a test edits the repo, as on the Hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model", ".gguf")
BAD_TOKEN_MESSAGE = "Invalid credentials in Authorization header"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class RepoFile:
    path: str
    size: int
    blob_sha1: str
    sha256: str
    lfs: bool


@dataclass
class HubServer:
    root: Path
    # 127.0.0.1; the real node's address inside its network namespace, for pods to reach it.
    host: str = "127.0.0.1"
    gated: dict[str, set[str]] = field(default_factory=dict)
    valid_tokens: set[str] = field(default_factory=set)
    drop_once: dict[str, int] = field(default_factory=dict)
    throttle: dict[str, int] = field(default_factory=dict)
    stall: dict[str, int] = field(default_factory=dict)
    stall_once: dict[str, int] = field(default_factory=dict)
    truncate: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    deny: dict[str, int] = field(default_factory=dict)
    branches: dict[tuple[str, str], Path] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # ends stalled responses

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> "HubServer":
        hub = self

        class Handler(_HubHandler):
            server_state = hub

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # --- repo contents ---------------------------------------------------------------------
    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_id

    def revision_dir(self, repo_id: str, revision: str) -> Path | None:
        """The folder serving `revision` (main, a branch name, or either one's commit sha)."""
        main = self.repo_dir(repo_id)
        if revision in ("main", self.commit_sha(repo_id)):
            return main
        for (repo, name), folder in self.branches.items():
            if repo == repo_id and revision in (name, _commit_of(self.files_in(folder))):
                return Path(folder)
        return None

    def files(self, repo_id: str) -> dict[str, RepoFile]:
        return self.files_in(self.repo_dir(repo_id))

    @staticmethod
    def files_in(base: Path) -> dict[str, RepoFile]:
        out: dict[str, RepoFile] = {}
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = path.relative_to(base).as_posix()
            if rel.startswith("."):
                continue
            data = path.read_bytes()
            out[rel] = RepoFile(rel, len(data), _git_blob_sha1(data), hashlib.sha256(data).hexdigest(),
                                rel.endswith(LFS_SUFFIXES))
        return out

    def commit_sha(self, repo_id: str) -> str:
        return _commit_of(self.files(repo_id))

    def commit_of(self, folder: Path) -> str:
        """The commit sha a branch folder (see `branches`) is served under."""
        return _commit_of(self.files_in(Path(folder)))

    def count(self, method: str, path_suffix: str) -> int:
        """How many logged requests of `method` ended with `path_suffix`."""
        with self._lock:
            return sum(1 for m, p, _ in self.requests if m == method and p.endswith(path_suffix))


def _commit_of(files: dict[str, RepoFile]) -> str:
    digest = hashlib.sha1()
    for f in files.values():
        digest.update(f"{f.path}\0{f.blob_sha1}\n".encode())
    return digest.hexdigest()


class _HubHandler(BaseHTTPRequestHandler):
    server_state: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass

    # --- helpers --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def _check_access(self, repo_id: str, file_request: bool) -> bool:
        """Answer the request with the Hub's error and return False when access is denied."""
        hub = self.server_state
        token = self._token()
        denied = hub.deny.get(repo_id)
        if denied == 401:
            self._error(401, None, BAD_TOKEN_MESSAGE)
            return False
        if denied == 403:
            self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the authorized list. Visit https://huggingface.co/{repo_id} to ask for access.")
            return False
        if denied == 404:
            self._error(404, "RepoNotFound", "Repository not found")
            return False
        if token is not None and token not in hub.valid_tokens:
            self._error(401, None, BAD_TOKEN_MESSAGE)
            return False
        if not hub.repo_dir(repo_id).is_dir():
            self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
            return False
        if repo_id in hub.gated and file_request:
            # Like the Hub: repo info is public for gated repos; their files are not.
            if token is None:
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to access it. Please log in.")
                return False
            if token not in hub.gated[repo_id]:
                self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the authorized list. Visit https://huggingface.co/{repo_id} to ask for access.")
                return False
        return True

    # --- routing --------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        hub = self.server_state
        path = unquote(urlsplit(self.path).path)
        with hub._lock:
            hub.requests.append((self.command, path, self.headers.get("Range")))
        parts = [p for p in path.split("/") if p]
        try:
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(parts[2] + "/" + parts[3], parts[4:])
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]))
            else:
                self._error(404, None, "Not found")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _api(self, repo_id: str, rest: list[str]) -> None:
        hub = self.server_state
        if not self._check_access(repo_id, file_request=False):
            return
        revision = rest[1] if rest and rest[0] in ("revision", "tree") and rest[1:] else "main"
        folder = hub.revision_dir(repo_id, revision)
        if folder is None:
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return
        files = hub.files_in(folder)
        sha = _commit_of(files)
        if not rest or rest[0] == "revision":
            # With `?blobs=true` (files_metadata=True) the Hub adds the LFS sha256 and size.
            siblings = [{"rfilename": f.path, "size": f.size, "blobId": f.blob_sha1,
                         **({"lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134}} if f.lfs else {})}
                        for f in files.values()]
            gated = "manual" if repo_id in hub.gated else False
            self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False, "gated": gated,
                             "disabled": False, "siblings": siblings, "tags": []})
        elif rest[0] == "tree" and len(rest) >= 2:
            prefix = "/".join(rest[2:])
            entries = []
            for f in files.values():
                if prefix and not f.path.startswith(prefix + "/"):
                    continue
                entry = {"type": "file", "oid": f.blob_sha1, "size": f.size, "path": f.path}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
                entries.append(entry)
            self._json(200, entries)
        else:
            self._error(404, None, "Not found")

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        hub = self.server_state
        if not self._check_access(repo_id, file_request=True):
            return
        folder = hub.revision_dir(repo_id, revision)
        if folder is None:
            self._error(404, "RevisionNotFound", "Invalid rev id", {"X-Repo-Commit": hub.commit_sha(repo_id)})
            return
        files = hub.files_in(folder)
        sha = _commit_of(files)
        info = files.get(filename)
        if info is None:
            self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
            return
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "ETag": f'"{info.blob_sha1}"'}
        if info.lfs:
            headers["X-Linked-Etag"] = f'"{info.sha256}"'
            headers["X-Linked-Size"] = str(info.size)
        data = (folder / filename).read_bytes()
        if self.command == "GET" and filename in hub.corrupt and data:
            tail = bytes(b ^ 0xFF for b in data[-64:])
            data = data[:-64] + tail
        if self.command == "GET" and filename in hub.truncate:
            data = data[:hub.truncate[filename]]
        start, end, status = 0, len(data) - 1, 200
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            first, _, last = range_header[len("bytes="):].partition("-")
            start = int(first) if first else 0
            end = int(last) if last else len(data) - 1
            if start >= len(data):
                self._error(416, None, "Range not satisfiable", {"Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start:end + 1]

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return

        with hub._lock:
            drop_at = hub.drop_once.pop(filename, None)
            stall_at = hub.stall_once.pop(filename, hub.stall.get(filename))
        if stall_at is not None:
            self.wfile.write(body[:max(0, stall_at - start)])
            self.wfile.flush()
            self._hold_open()
            return
        rate = hub.throttle.get(filename)
        if drop_at is not None and drop_at < len(body):
            self.wfile.write(body[:drop_at])
            self.wfile.flush()
            # An abrupt close mid-body, as a network cut looks to the client.
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if rate:
            chunk = max(1, rate // 20)
            for i in range(0, len(body), chunk):
                self.wfile.write(body[i:i + chunk])
                self.wfile.flush()
                time.sleep(chunk / rate)
        else:
            self.wfile.write(body)


    def _hold_open(self) -> None:
        """Send nothing more until the client gives up (closes) or the server stops."""
        import select

        self.close_connection = True
        while not self.server_state._stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.2)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return  # the client closed its end
                except OSError:
                    return


def make_repo(root: Path, repo_id: str, source_dir: Path) -> Path:
    """Copy a Hugging Face model folder into the server's tree as `repo_id`."""
    import shutil

    target = Path(root) / repo_id
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source_dir, target, ignore=shutil.ignore_patterns(".*"))
    return target


if __name__ == "__main__":  # serve a folder by hand: python devcluster/litgpt_devcluster/hub_server.py FOLDER
    import sys

    server = HubServer(Path(sys.argv[1])).start()
    print(f"HF_ENDPOINT={server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
