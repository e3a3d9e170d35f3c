"""The HTTP API: OpenAI-compatible routes, `/predict`, `/metrics`, and OpenAI-shaped errors.

Each generation route validates the body (schemas.py), renders and tokenises the prompt, checks
it against the context window, and then streams tokens from LitServe's worker (bridge.py),
turning them into text with `StreamDecoder` (multi-byte characters are held back until whole).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from litgpt_runtime.serve import metrics
from litgpt_runtime.serve.bridge import Bridge, WorkerError
from litgpt_runtime.serve.schemas import (ChatCompletionRequest, CompletionRequest, OpenAIError, PredictRequest,
                                  validation_error)


@dataclass
class Defaults:
    max_new_tokens: int
    temperature: float
    top_k: Optional[int]
    top_p: float


@dataclass
class ServeState:
    """What the routes need; built by cli.py in the main process, inherited by the API process."""

    model_name: str
    aliases: set[str]
    tokenizer: object  # litgpt_runtime.tokenizer.Tokenizer
    context_window: int
    defaults: Defaults
    bridge: Bridge
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Generated:
    text: str = ""
    completion_tokens: int = 0
    finish_reason: Optional[str] = None


# --- helpers -------------------------------------------------------------------------------
async def _parse(request: Request, schema: type[BaseModel]):
    body = await request.body()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OpenAIError(400, "We could not parse the JSON body of your request. Send a JSON object "
                               "with Content-Type: application/json.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise validation_error(error) from None


def _check_model(state: ServeState, name: str) -> None:
    if name not in state.aliases:
        raise OpenAIError(404, f"The model `{name}` does not exist; this server serves `{state.model_name}`.",
                          param="model", code="model_not_found")


def _payload(state: ServeState, prompt_ids: list[int], max_tokens: Optional[int], temperature: Optional[float],
             top_k: Optional[int], top_p: Optional[float], seed: Optional[int] = None) -> dict:
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
        "stop_ids": list(state.tokenizer.stop_ids),
        "seed": seed,
    }


def _find_stop(text: str, stops: list[str]) -> int:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else -1


async def _generate(state: ServeState, request: Request, payload: dict, stops: list[str],
                    result: Generated) -> AsyncIterator[str]:
    """Text pieces of one generation; fills `result`. Stop strings end it early (cancelling)."""
    from litgpt_runtime.tokenizer import StreamDecoder

    decoder = StreamDecoder(state.tokenizer)
    started = time.perf_counter()
    emitted = 0  # chars of result.text already yielded
    hold = max((len(s) for s in stops), default=1) - 1  # a stop string may still be completing
    metrics.PROMPT_TOKENS.inc(len(payload["prompt_ids"]))
    metrics.IN_FLIGHT.inc()
    outputs = state.bridge.generate(request.app, payload)
    try:
        async for output in outputs:
            if output["finish"] == "cancelled":
                break
            if output["token"] is not None:
                if result.completion_tokens == 0:
                    metrics.FIRST_TOKEN.observe(time.perf_counter() - started)
                result.completion_tokens += 1
                metrics.GENERATED_TOKENS.inc()
                metrics.BATCH_SIZE.observe(output["batch"])
                result.text += decoder.push(output["token"])
            if output["finish"] is not None:
                result.text += decoder.flush()
                result.finish_reason = output["finish"]
            cut = _find_stop(result.text, stops) if stops else -1
            if cut >= 0:
                result.text, result.finish_reason = result.text[:cut], "stop"
            safe = len(result.text) if result.finish_reason else max(emitted, len(result.text) - hold)
            if safe > emitted:
                yield result.text[emitted:safe]
                emitted = safe
            if result.finish_reason is not None:
                break
    finally:
        metrics.IN_FLIGHT.dec()
        if result.finish_reason is None:
            metrics.CANCELLED.inc()
        await outputs.aclose()  # cancels the worker's request if it is still running


def _usage(prompt_tokens: int, result: Generated) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": prompt_tokens + result.completion_tokens}


def _sse(data) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _collect(state, request, payload, stops) -> Generated:
    result = Generated()
    try:
        async for _ in _generate(state, request, payload, stops, result):
            pass
    except WorkerError as error:
        raise OpenAIError(500, f"Generation failed: {error}", type="server_error") from None
    return result


def _stream(state: ServeState, request: Request, payload: dict, stops: list[str], make_chunk,
            first_chunk: Optional[dict], include_usage: bool) -> StreamingResponse:
    async def events():
        result = Generated()
        if first_chunk is not None:
            yield _sse(first_chunk)
        try:
            async for piece in _generate(state, request, payload, stops, result):
                yield _sse(make_chunk(piece, None))
        except WorkerError as error:
            yield _sse(OpenAIError(500, f"Generation failed: {error}", type="server_error").body())
            return
        yield _sse(make_chunk(None, result.finish_reason))
        if include_usage:
            chunk = make_chunk(None, None)
            chunk["choices"] = []
            chunk["usage"] = _usage(len(payload["prompt_ids"]), result)
            yield _sse(chunk)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# --- routes --------------------------------------------------------------------------------
def add_routes(app: FastAPI, state: ServeState) -> None:
    async def openai_error(request: Request, error: OpenAIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

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

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created,
                                            "owned_by": "litgpt"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body: ChatCompletionRequest = await _parse(request, ChatCompletionRequest)
        _check_model(state, body.model)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            prompt_ids = state.tokenizer.encode_chat(messages)
        except Exception as error:  # the model's template refused these messages
            raise OpenAIError(400, f"The chat template rejected the messages: {error}", param="messages") from None
        payload = _payload(state, prompt_ids, body.max_completion_tokens or body.max_tokens, body.temperature,
                           body.top_k, body.top_p, body.seed)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.stream:
            result = await _collect(state, request, payload, body.stop_strings())
            return {"id": ident, "object": "chat.completion", "created": created, "model": state.model_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                                 "logprobs": None, "finish_reason": result.finish_reason}],
                    "usage": _usage(len(prompt_ids), result)}

        def chunk(piece: Optional[str], finish: Optional[str], delta: Optional[dict] = None) -> dict:
            if delta is None:
                delta = {"content": piece} if piece is not None else {}
            return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": state.model_name,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _stream(state, request, payload, body.stop_strings(), chunk,
                       chunk(None, None, {"role": "assistant", "content": ""}), include_usage)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body: CompletionRequest = await _parse(request, CompletionRequest)
        _check_model(state, body.model)
        prompt_ids = state.tokenizer.encode(body.prompt_text())
        payload = _payload(state, prompt_ids, body.max_tokens, body.temperature, body.top_k, body.top_p, body.seed)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(piece: Optional[str], finish: Optional[str]) -> dict:
            return {"id": ident, "object": "text_completion", "created": created, "model": state.model_name,
                    "choices": [{"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}]}

        if not body.stream:
            result = await _collect(state, request, payload, body.stop_strings())
            response = chunk(result.text, result.finish_reason)
            response["usage"] = _usage(len(prompt_ids), result)
            return response
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _stream(state, request, payload, body.stop_strings(), chunk, None, include_usage)

    @app.post("/predict")
    async def predict(request: Request):
        """`litgpt serve`'s simple API: the prompt goes through the chat template when the model has one."""
        body: PredictRequest = await _parse(request, PredictRequest)
        tokenizer = state.tokenizer
        if tokenizer.has_chat_template:
            prompt_ids = tokenizer.encode_chat([{"role": "user", "content": body.prompt}])
        else:
            prompt_ids = tokenizer.encode(body.prompt)
        payload = _payload(state, prompt_ids, body.max_new_tokens, body.temperature, body.top_k, body.top_p)
        result = await _collect(state, request, payload, [])
        return {"output": result.text}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        data, content_type = metrics.render()
        return Response(content=data, media_type=content_type)
