"""The HTTP API: OpenAI-compatible routes, `/predict`, `/metrics`, and OpenAI-shaped errors.

Each generation route parses the body (intake.py, schemas.py), takes a place in line (503 when the
line is full), renders and tokenises the prompt on a worker thread (a huge prompt or template must
not stall the event loop, which also answers /health), checks it against the context window, and
then streams tokens from LitServe's worker (bridge.py), turning them into text with
`StreamDecoder` (multi-byte characters are held back until whole). A client that leaves -- a
stream closed early, or a plain request whose connection drops -- cancels its generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Optional

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from litgpt_runtime.serve import metrics
from litgpt_runtime.serve.bridge import Bridge, WorkerError
from litgpt_runtime.serve.intake import Admission, Ticket, parse
from litgpt_runtime.serve.readiness import Readiness
from litgpt_runtime.serve.schemas import ChatCompletionRequest, CompletionRequest, OpenAIError, PredictRequest

logger = logging.getLogger("litgpt_runtime.serve")


@dataclass
class Defaults:
    max_new_tokens: int
    temperature: float
    top_k: Optional[int]
    top_p: float


@dataclass
class ServedModel:
    """What one value of the request's "model" field selects."""

    name: str  # listed by /v1/models and echoed in responses
    adapter: int  # 0: the base weights alone; i: the i-th LoRA adapter (see worker.py)
    tokenizer: object  # litgpt_runtime.tokenizer.Tokenizer


@dataclass
class ServeState:
    """What the routes need; built by cli.py in the main process, inherited by the API process."""

    model_name: str  # the base model's served name
    models: dict[str, ServedModel]  # every accepted "model" value (names and aliases)
    context_window: int
    defaults: Defaults
    bridge: Bridge
    admission: Admission
    readiness: Readiness = field(default_factory=Readiness)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def base(self) -> ServedModel:
        return self.models[self.model_name]


@dataclass
class Generated:
    text: str = ""
    completion_tokens: int = 0
    finish_reason: Optional[str] = None


# --- helpers -------------------------------------------------------------------------------
def _served(state: ServeState, name: str) -> ServedModel:
    served = state.models.get(name)
    if served is None:
        names = ", ".join(f"`{n}`" for n in dict.fromkeys(m.name for m in state.models.values()))
        raise OpenAIError(404, f"The model `{name}` does not exist; this server serves {names}.",
                          param="model", code="model_not_found")
    return served


# No tokenizer spells real text with more characters per token than this on average; a prompt
# longer than the context allows even at this rate is refused before it is tokenised (which takes
# seconds per megabyte).
MAX_CHARS_PER_TOKEN = 100


def _check_chars(state: ServeState, chars: int) -> None:
    limit = state.context_window * MAX_CHARS_PER_TOKEN
    if chars > limit:
        raise OpenAIError(400, f"This model's maximum context length is {state.context_window} tokens, and the "
                               f"prompt has {chars} characters, far more than that many tokens can hold. Shorten "
                               "the prompt.", param="messages", code="context_length_exceeded")


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, release_gil=True)  # on a thread: other requests go on meanwhile


def _encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    try:
        return tokenizer.encode_chat(messages, release_gil=True)
    except Exception as error:  # the model's template refused these messages (Jinja raise_exception)
        raise OpenAIError(400, f"The chat template rejected the messages: {error}", param="messages") from None


def _encode_predict(tokenizer, prompt: str) -> list[int]:
    if tokenizer.has_chat_template:
        return _encode_chat(tokenizer, [{"role": "user", "content": prompt}])
    return _encode(tokenizer, prompt)


def _payload(state: ServeState, served: ServedModel, prompt_ids: list[int], max_tokens: Optional[int],
             temperature: Optional[float], top_k: Optional[int], top_p: Optional[float],
             seed: Optional[int] = None) -> dict:
    window = state.context_window
    if len(prompt_ids) >= window:
        raise OpenAIError(400, f"This model's maximum context length is {window} tokens, but the prompt has "
                               f"{len(prompt_ids)} tokens. Shorten the prompt.", param="messages",
                          code="context_length_exceeded")
    if max_tokens is not None and len(prompt_ids) + max_tokens > window:
        raise OpenAIError(400, f"This model's maximum context length is {window} tokens, but you requested "
                               f"{len(prompt_ids) + max_tokens} tokens ({len(prompt_ids)} in the prompt, "
                               f"{max_tokens} for the completion). Lower max_tokens or shorten the prompt.",
                          param="max_tokens", code="context_length_exceeded")
    d = state.defaults
    if max_tokens is None:
        max_tokens = min(d.max_new_tokens, window - len(prompt_ids))
    return {
        "prompt_ids": prompt_ids,
        "max_new_tokens": max_tokens,
        "temperature": d.temperature if temperature is None else temperature,
        "top_k": d.top_k if top_k is None else top_k,
        "top_p": d.top_p if top_p is None else top_p,
        "stop_ids": list(served.tokenizer.stop_ids),
        "seed": seed,
        "adapter": served.adapter,
    }


def _find_stop(text: str, stops: list[str], start: int) -> int:
    """Where the first stop string begins in `text[start:]` (-1: nowhere)."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def _failed(request_id: str, error: Exception) -> OpenAIError:
    """The client learns that it failed and where to look; the details stay in the server's log."""
    logger.error("request %s failed in the inference worker: %s", request_id, error)
    return OpenAIError(500, f"The server failed while generating this completion (request {request_id}); the "
                            "server's log has the details. Retry, or report it to the server's operator.",
                       type="server_error", code="generation_failed")


async def _generate(state: ServeState, app, served: ServedModel, payload: dict, stops: list[str],
                    result: Generated) -> AsyncIterator[str]:
    """Text pieces of one generation; fills `result`. Stop strings end it early (cancelling)."""
    from litgpt_runtime.tokenizer import StreamDecoder

    decoder = StreamDecoder(served.tokenizer)
    started = last = time.perf_counter()
    emitted = 0  # chars of result.text already yielded
    scanned = 0  # chars of result.text already searched for stop strings
    longest = max((len(s) for s in stops), default=0)
    hold = max(longest - 1, 0)  # a stop string may still be completing
    label = served.name
    metrics.PROMPT_TOKENS.labels(label).inc(len(payload["prompt_ids"]))
    waiting, running = metrics.WAITING.labels(label), metrics.RUNNING.labels(label)
    waiting.inc()
    started_running = False
    outputs = state.bridge.generate(app, payload)
    try:
        async for output in outputs:
            metrics.observe_rows(output)
            if output["finish"] == "cancelled":
                break
            if output["token"] is not None:
                now = time.perf_counter()
                if not started_running:
                    waiting.dec()
                    running.inc()
                    started_running = True
                    metrics.FIRST_TOKEN.labels(label).observe(now - started)
                else:
                    metrics.INTER_TOKEN.labels(label).observe(now - last)
                last = now
                state.readiness.token_generated()
                result.completion_tokens += 1
                metrics.GENERATED_TOKENS.labels(label).inc()
                metrics.BATCH_SIZE.observe(output["batch"])
                result.text += decoder.push(output["token"])
            if output["finish"] is not None:
                result.text += decoder.flush()
                result.finish_reason = output["finish"]
            if stops:
                # only the new text (and the tail a stop string could straddle) is searched
                cut = _find_stop(result.text, stops, max(0, scanned - longest + 1))
                scanned = len(result.text)
                if cut >= 0:
                    result.text, result.finish_reason = result.text[:cut], "stop"
            safe = len(result.text) if result.finish_reason else max(emitted, len(result.text) - hold)
            if safe > emitted:
                yield result.text[emitted:safe]
                emitted = safe
            if result.finish_reason is not None:
                break
    finally:
        (running if started_running else waiting).dec()
        if result.finish_reason is None:
            metrics.CANCELLED.labels(label).inc()
        await outputs.aclose()  # cancels the worker's request if it is still running


def _usage(prompt_tokens: int, result: Generated) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": prompt_tokens + result.completion_tokens}


def _sse(data) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _until_disconnected(request: Request) -> None:
    """Returns when the client hangs up (the body has been read; the next message is the end)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _collect(state: ServeState, request: Request, served: ServedModel, payload: dict, stops: list[str],
                   request_id: str) -> Generated:
    """A whole generation; stops generating when the client disconnects first."""
    result = Generated()

    async def run() -> None:
        async for _ in _generate(state, request.app, served, payload, stops, result):
            pass

    generation = asyncio.ensure_future(run())
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({generation, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not generation.done():  # the client left (or we are shutting down): stop its row
            generation.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await generation
    if generation.cancelled():
        return result  # nobody is listening
    try:
        generation.result()
    except WorkerError as error:
        raise _failed(request_id, error) from None
    return result


class _GenerationStream(StreamingResponse):
    """A server-sent-events response that, however it ends (finished, client gone before or after
    the first byte), closes its generation and gives back its place in line."""

    def __init__(self, events: AsyncIterator[str], ticket: Ticket) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events, self._ticket = events, ticket

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._ticket.release()
            with anyio.CancelScope(shield=True):
                await self._events.aclose()


def _stream(state: ServeState, app, served: ServedModel, payload: dict, stops: list[str], make_chunk,
            first_chunk: Optional[dict], include_usage: bool, request_id: str, ticket: Ticket) -> StreamingResponse:
    async def events():
        result = Generated()
        if first_chunk is not None:
            yield _sse(first_chunk)
        try:
            async for piece in _generate(state, app, served, payload, stops, result):
                yield _sse(make_chunk(piece, None))
        except WorkerError as error:
            yield _sse(_failed(request_id, error).body())
            return
        yield _sse(make_chunk(None, result.finish_reason))
        if include_usage:
            chunk = make_chunk(None, None)
            chunk["choices"] = []
            chunk["usage"] = _usage(len(payload["prompt_ids"]), result)
            yield _sse(chunk)
        yield "data: [DONE]\n\n"

    return _GenerationStream(events(), ticket)


# --- routes --------------------------------------------------------------------------------
def add_error_handlers(app: FastAPI) -> None:
    async def openai_error(request: Request, error: OpenAIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        return JSONResponse(OpenAIError(error.status_code, str(error.detail), type=kind).body(),
                            status_code=error.status_code, headers=getattr(error, "headers", None))

    async def request_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"])
        return JSONResponse(OpenAIError(400, f"Invalid request: {param}: {first['msg']}", param=param).body(),
                            status_code=400)

    app.add_exception_handler(OpenAIError, openai_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_validation_error)


def add_routes(app: FastAPI, state: ServeState) -> None:
    add_error_handlers(app)

    @app.get("/v1/models")
    async def list_models() -> dict:
        names = dict.fromkeys(m.name for m in state.models.values())
        return {"object": "list", "data": [{"id": name, "object": "model", "created": state.created,
                                            "owned_by": "litgpt"} for name in names]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body: ChatCompletionRequest = await parse(request, ChatCompletionRequest)
        served = _served(state, body.model)
        ticket = state.admission.enter()
        handed_over = False
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
            _check_chars(state, sum(len(m["content"]) for m in messages))
            prompt_ids = await run_in_threadpool(_encode_chat, served.tokenizer, messages)
            payload = _payload(state, served, prompt_ids, body.max_completion_tokens or body.max_tokens,
                               body.temperature, body.top_k, body.top_p, body.seed)
            ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
            if not body.stream:
                result = await _collect(state, request, served, payload, body.stop_strings(), ident)
                return {"id": ident, "object": "chat.completion", "created": created, "model": served.name,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                                     "logprobs": None, "finish_reason": result.finish_reason}],
                        "usage": _usage(len(prompt_ids), result)}

            def chunk(piece: Optional[str], finish: Optional[str], delta: Optional[dict] = None) -> dict:
                if delta is None:
                    delta = {"content": piece} if piece is not None else {}
                return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": served.name,
                        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            response = _stream(state, request.app, served, payload, body.stop_strings(), chunk,
                               chunk(None, None, {"role": "assistant", "content": ""}), include_usage, ident, ticket)
            handed_over = True
            return response
        finally:
            if not handed_over:
                ticket.release()

    @app.post("/v1/completions")
    async def completions(request: Request):
        body: CompletionRequest = await parse(request, CompletionRequest)
        served = _served(state, body.model)
        ticket = state.admission.enter()
        handed_over = False
        try:
            prompt = body.prompt_text()
            _check_chars(state, len(prompt))
            prompt_ids = await run_in_threadpool(_encode, served.tokenizer, prompt)
            payload = _payload(state, served, prompt_ids, body.max_tokens, body.temperature, body.top_k, body.top_p,
                               body.seed)
            ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

            def chunk(piece: Optional[str], finish: Optional[str]) -> dict:
                return {"id": ident, "object": "text_completion", "created": created, "model": served.name,
                        "choices": [{"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}]}

            if not body.stream:
                result = await _collect(state, request, served, payload, body.stop_strings(), ident)
                response = chunk(result.text, result.finish_reason)
                response["usage"] = _usage(len(prompt_ids), result)
                return response
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            response = _stream(state, request.app, served, payload, body.stop_strings(), chunk, None, include_usage,
                               ident, ticket)
            handed_over = True
            return response
        finally:
            if not handed_over:
                ticket.release()

    @app.post("/predict")
    async def predict(request: Request):
        """`litgpt serve`'s simple API: the prompt goes through the chat template when the model has one."""
        body: PredictRequest = await parse(request, PredictRequest)
        served = state.base
        ticket = state.admission.enter()
        try:
            _check_chars(state, len(body.prompt))
            prompt_ids = await run_in_threadpool(_encode_predict, served.tokenizer, body.prompt)
            payload = _payload(state, served, prompt_ids, body.max_new_tokens, body.temperature, body.top_k,
                               body.top_p)
            result = await _collect(state, request, served, payload, [], f"predict-{uuid.uuid4().hex}")
            return {"output": result.text}
        finally:
            ticket.release()

    @app.get("/ready")
    async def ready(request: Request) -> Response:
        """Readiness: 200 when a 1-token generation succeeds (see readiness.py), 503 with the reason."""
        drain = state.admission.drain
        if drain is not None and drain.draining:  # stopping: let the Service take this pod out
            return Response("not ready: stopping (SIGTERM), finishing the requests in progress", status_code=503)
        if not state.bridge.workers_ready():
            return Response("not ready: the model is still loading", status_code=503)
        ok, reason = await state.readiness.check(state, request.app)
        return Response("ok" if ok else f"not ready: {reason}", status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        data, content_type = metrics.render()
        return Response(content=data, media_type=content_type)
