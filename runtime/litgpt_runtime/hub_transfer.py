"""Transfers from the Hub that end: a stall is noticed, retried with back-off, then reported.

huggingface_hub reads each response with a 10 s read timeout and, when it fires, resumes the
same file (a Range request) up to five times with a one-second pause -- counting again from
zero whenever a byte arrives. So how long a hanging download takes to give up is not something
its caller decides. Here it is: inside `stall_guard(seconds, retries)`, huggingface_hub's HTTP
client gets a transport that

- allows `seconds` without a byte (waiting for the headers or for the next chunk of a body);
- counts the stalls of each URL; the first `retries` of them surface as the `ReadTimeout`
  huggingface_hub already handles by resuming, and the next request to that URL waits
  `backoff_seconds` first (2, 4, 8, ... s); one more stall raises `Stalled`, which
  huggingface_hub does not catch, so the download ends.

Requests huggingface_hub does not retry itself (the repo info) go through `with_retries`, which
repeats them on that `ReadTimeout` -- the count and the back-off stay in the transport.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar
from urllib.parse import unquote, urlsplit

T = TypeVar("T")

DEFAULT_STALL_TIMEOUT = 120.0
DEFAULT_RETRIES = 3
BACKOFF_BASE = 2.0
MAX_BACKOFF = 60.0


class Stalled(Exception):
    """No byte for the stall timeout on one request (deliberately not an httpx exception:
    huggingface_hub's own retry loops must let it through)."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__(f"no data for {seconds:g} s from {url}")
        self.url = url
        self.seconds = seconds

    @property
    def filename(self) -> str:
        path = unquote(self.url.split("?", 1)[0])
        return path.split("/resolve/", 1)[1].split("/", 1)[1] if "/resolve/" in path else path


def backoff_seconds(attempt: int) -> float:
    """Wait before retry `attempt` (1, 2, ...): BACKOFF_BASE, twice that, ... capped at MAX_BACKOFF."""
    return min(BACKOFF_BASE * 2 ** (attempt - 1), MAX_BACKOFF)


class _StallPolicy:
    """Stall counts and pending back-offs per URL (without its query: CDN links are re-signed)."""

    def __init__(self, seconds: float, retries: int, sleep: Callable[[float], None]) -> None:
        self.seconds, self.retries, self.sleep = seconds, retries, sleep
        self._lock = threading.Lock()
        self._stalls: dict[str, int] = {}
        self._wait: dict[str, float] = {}

    @staticmethod
    def key(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.netloc}{parts.path}"

    def before_request(self, url: str) -> None:
        with self._lock:
            wait = self._wait.pop(self.key(url), 0.0)
        if wait:
            self.sleep(wait)

    def stalled(self, url: str):
        """The exception to raise for a stall of `url`: a retryable ReadTimeout, or `Stalled`."""
        import httpx2

        with self._lock:
            count = self._stalls[self.key(url)] = self._stalls.get(self.key(url), 0) + 1
            if count > self.retries:
                return Stalled(url, self.seconds)
            wait = self._wait[self.key(url)] = backoff_seconds(count)
        name = Stalled(url, self.seconds).filename
        print(f"{name}: {self.seconds:g} s without data; retrying in {wait:g} s (retry {count} of {self.retries}).",
              file=sys.stderr, flush=True)
        return httpx2.ReadTimeout(f"no data for {self.seconds:g} s")


def _guarded_transport(inner, policy: _StallPolicy):
    import httpx2

    class _GuardedStream(httpx2.SyncByteStream):
        def __init__(self, stream, url: str) -> None:
            self.stream, self.url = stream, url

        def __iter__(self) -> Iterator[bytes]:
            try:
                yield from self.stream
            except httpx2.ReadTimeout:
                raise policy.stalled(self.url) from None

        def close(self) -> None:
            self.stream.close()

    class _StallGuard(httpx2.BaseTransport):
        def handle_request(self, request):
            url = str(request.url)
            policy.before_request(url)
            # The read timeout is the time allowed between two reads from the socket: exactly "no
            # byte for N seconds". huggingface_hub sets it per request; ours wins.
            timeout = dict(request.extensions.get("timeout") or {})
            timeout["read"] = policy.seconds
            request.extensions["timeout"] = timeout
            try:
                response = inner.handle_request(request)
            except httpx2.ReadTimeout:
                raise policy.stalled(url) from None
            return httpx2.Response(status_code=response.status_code, headers=response.headers,
                                   stream=_GuardedStream(response.stream, url),
                                   extensions=response.extensions, request=request)

        def close(self) -> None:
            inner.close()

    return _StallGuard()


@contextmanager
def stall_guard(seconds: float, retries: int, sleep: Callable[[float], None] = time.sleep) -> Iterator[None]:
    """Inside: huggingface_hub's requests stall after `seconds` without a byte, `retries` times
    per URL with back-off, then raise `Stalled`."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    policy = _StallPolicy(seconds, retries, sleep)

    def factory():
        client = default_client_factory()
        # httpx builds its transports (the default one and one per proxy from the environment)
        # in the constructor and offers no hook to wrap them afterwards; wrap them in place.
        client._transport = _guarded_transport(client._transport, policy)
        client._mounts = {pattern: None if t is None else _guarded_transport(t, policy)
                          for pattern, t in client._mounts.items()}
        return client

    set_client_factory(factory)
    try:
        yield
    finally:
        set_client_factory(default_client_factory)


def with_retries(call: Callable[[], T], limit: int = 100) -> T:
    """`call()`, repeated after each retryable stall the transport reports (it counts and waits;
    `Stalled` ends it). `limit` only guards against a loop."""
    import httpx2

    for _ in range(limit):
        try:
            return call()
        except httpx2.ReadTimeout:
            continue
    return call()
