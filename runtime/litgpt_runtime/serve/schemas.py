"""Request bodies of the HTTP API, and errors in OpenAI's shape.

Bodies are strict: an unknown field is a 400 naming the field, not silently ignored (a typo such
as `max_token` would otherwise give surprising results). `top_k` is an extension of OpenAI's API
(the official client sends it with `extra_body={"top_k": ...}`).

Fields of OpenAI's API that we do not implement are accepted only with values that ask for
nothing (`frequency_penalty: 0`, `logprobs: false`, `tools: []`, ...), so clients that send their
defaults work, and a request that relies on such a feature gets a 400 saying so instead of an
answer that silently ignored it. Every number is bounded here, where the request is decoded, so a
bad value is the sender's 400 and never reaches the batch it would share with others.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class OpenAIError(Exception):
    """Becomes {"error": {"message", "type", "param", "code"}} with `status`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_error(error: ValidationError) -> OpenAIError:
    """The first problem pydantic found, as a 400 that names the field."""
    first = error.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return OpenAIError(400, f"Unrecognized request argument supplied: {param}", param=param,
                           code="unknown_parameter")
    if first["type"] == "missing":
        return OpenAIError(400, f"Missing required parameter: {param}", param=param, code="missing_required_parameter")
    return OpenAIError(400, f"Invalid value for {param}: {first['msg']}", param=param, code="invalid_value")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# OpenAI's own limits where it has them (4 stop sequences, 64-bit seeds); ours elsewhere.
MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 256
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
TopK = Annotated[int, Field(ge=1, le=2**31 - 1)]
MaxTokens = Annotated[int, Field(ge=1, le=2**31 - 1)]
StopString = Annotated[str, Field(max_length=MAX_STOP_LENGTH)]


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = Field(None, max_length=256)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


def _unsupported(param: str, what: str) -> OpenAIError:
    return OpenAIError(400, f"{param}{' ' + what if what else ''} is not supported by this server; leave {param} out.",
                       param=param,
                       code="unsupported_parameter")


class _Sampling(_Strict):
    model: str = Field(max_length=256)
    max_tokens: Optional[MaxTokens] = None
    temperature: Optional[Temperature] = None
    top_p: Optional[TopP] = None
    top_k: Optional[TopK] = None
    n: int = Field(1, ge=1, le=1, description="only one choice per request is supported")
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    stop: Union[StopString, Annotated[list[StopString], Field(max_length=MAX_STOP_SEQUENCES)], None] = None
    seed: Optional[Seed] = None
    user: Optional[str] = Field(None, max_length=256)
    # OpenAI fields accepted only with their no-op values (see the module docstring)
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    logit_bias: Optional[dict[str, float]] = None
    store: Optional[bool] = None
    metadata: Optional[dict[str, str]] = None
    service_tier: Optional[str] = Field(None, max_length=64)

    @model_validator(mode="after")
    def _only_no_ops(self):
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) not in (None, 0):
                raise _unsupported(name, "other than 0")
        if self.logit_bias:
            raise _unsupported("logit_bias", "")
        return self

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return [s for s in stops if s]


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[MaxTokens] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    response_format: Optional[dict[str, Any]] = None
    tools: Optional[list[Any]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None

    @model_validator(mode="after")
    def _only_chat_no_ops(self):
        if self.logprobs or self.top_logprobs:
            raise _unsupported("logprobs", "")
        if self.response_format not in (None, {"type": "text"}):
            raise _unsupported("response_format", "other than {\"type\": \"text\"}")
        if self.tools:
            raise _unsupported("tools", "")
        if self.tool_choice not in (None, "none", "auto"):
            raise _unsupported("tool_choice", "other than \"none\"")
        return self


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]
    logprobs: Optional[int] = None
    echo: Optional[bool] = None
    best_of: Optional[int] = None
    suffix: Optional[str] = None

    @model_validator(mode="after")
    def _only_completion_no_ops(self):
        if self.logprobs:
            raise _unsupported("logprobs", "")
        if self.echo:
            raise _unsupported("echo", "")
        if self.best_of not in (None, 1):
            raise _unsupported("best_of", "other than 1")
        if self.suffix:
            raise _unsupported("suffix", "")
        return self

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise OpenAIError(400, "Only one prompt per request is supported.", param="prompt")
        return self.prompt[0]


class PredictRequest(_Strict):
    """The body of `/predict`, as `litgpt serve` users know it: {"prompt": "..."}."""

    prompt: str
    max_new_tokens: Optional[MaxTokens] = None
    temperature: Optional[Temperature] = None
    top_k: Optional[TopK] = None
    top_p: Optional[TopP] = None
