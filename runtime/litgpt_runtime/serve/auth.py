"""`--api_key` / `LITGPT_API_KEY`: every route needs `Authorization: Bearer <key>`, except the
probes and the metrics scrape (`OPEN_PATHS`), which Kubernetes and Prometheus call without one.

A pure ASGI middleware, so it guards every route the app has -- ours, LitServe's own (`/`,
`/info`, the docs) and any added later -- instead of a list of routes to remember. The key is
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
ENV_VAR = "LITGPT_API_KEY"


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": "invalid_api_key"}}).encode()


_MISSING = _error("You didn't provide an API key. Send it in the Authorization header: "
                  "`Authorization: Bearer <key>` (the openai client does this with api_key=...).")
_WRONG = _error("Incorrect API key provided. Use the key this server was started with.")


class APIKeyMiddleware:
    def __init__(self, app, key: str) -> None:
        self.app = app
        self._key = key.encode()

    def __repr__(self) -> str:  # never show the key, whatever prints the middleware stack
        return f"{type(self).__name__}(key=***)"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
                break
        if given is not None and hmac.compare_digest(given, self._key):
            await self.app(scope, receive, send)
            return
        body = _MISSING if given is None else _WRONG
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
