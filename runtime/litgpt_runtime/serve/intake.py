"""Taking a request in: the body (bounded), its JSON (strict), and a place in line (bounded).

Everything here answers a bad or untimely request with an OpenAI-shaped 4xx/5xx of its own, before
the request costs the model anything:

- the body is read up to `max_body_bytes` (413 past it, whatever Content-Length claimed);
- the JSON must be UTF-8 and plain: no NaN/Infinity constants, no integers past Python's 4,300
  digits, no nesting deep enough to exhaust the parser, no lone surrogates (`"\\ud800"` is valid
  JSON but no tokenizer can encode it);
- `Admission` bounds the generation requests the server holds at once (in the worker's rows plus
  a waiting line): one more gets a 503 with Retry-After instead of a place in an unbounded queue.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from litgpt_runtime.serve.schemas import OpenAIError, validation_error

MAX_BODY_BYTES = 8 * 1024 * 1024  # a context's worth of text many times over, JSON-escaped
RETRY_AFTER_SECONDS = 1


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> OpenAIError:
    return OpenAIError(413, f"The request body is larger than this server accepts ({limit // (1024 * 1024)} MiB); "
                            "send a shorter prompt.", code="request_too_large")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_strings(data: Any) -> None:
    """Raise UnicodeEncodeError if any string (key or value) holds a lone surrogate."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def decode_json(body: bytes) -> dict:
    try:
        data = json.loads(body, parse_constant=_reject_constant)
        _check_strings(data)
    except UnicodeError:
        raise OpenAIError(400, "The request body is not valid UTF-8 (or holds an unpaired surrogate escape such as "
                               "\\ud800). Send UTF-8 encoded JSON.", code="invalid_json") from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError, over-long integers, NaN, nesting
        reason = str(error) if "digits" in str(error) or "JSON number" in str(error) else "not valid JSON"
        raise OpenAIError(400, f"We could not parse the JSON body of your request ({reason.split(';')[0]}). "
                               "Send a JSON object with Content-Type: application/json.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "The request body must be a JSON object.", code="invalid_json")
    return data


async def parse(request: Request, schema: type[BaseModel], limit: int = MAX_BODY_BYTES):
    data = decode_json(await read_body(request, limit))
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise validation_error(error) from None


class Admission:
    """At most `limit` generation requests held at once (rows being decoded + the waiting line).

    Counted in the API process, which sees every request: entering is a check and an increment on
    the event loop, with no await between them, so it needs no lock.
    """

    def __init__(self, limit: int, drain=None) -> None:
        self.limit = limit
        self.held = 0
        self.drain = drain  # drain.Drain: the same count, shared with the main process for SIGTERM

    def enter(self) -> "Ticket":
        if self.held >= self.limit:
            raise OpenAIError(503, f"The server is busy ({self.held} requests in progress or waiting); retry in "
                                   f"{RETRY_AFTER_SECONDS} s.", type="server_error", code="server_overloaded",
                              headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self.held += 1
        if self.drain is not None:
            self.drain.add(1)
        return Ticket(self)


class Ticket:
    """One request's place; `release()` is idempotent, so every exit path may call it."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission.held -= 1
            if self._admission.drain is not None:
                self._admission.drain.add(-1)
            self._admission = None
