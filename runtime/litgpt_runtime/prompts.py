"""Chat prompts: the model's own chat template (Jinja, from its tokenizer files), as transformers
renders it, and a plain fallback for models that publish none (base models).

We render with the same Jinja settings and helpers as transformers' `apply_chat_template`
(sandboxed environment, `trim_blocks`/`lstrip_blocks`, loop controls, `raise_exception`,
`strftime_now`, a `tojson` that keeps non-ASCII text), so the prompt text is byte-identical and
the model sees exactly what it was trained on.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from litgpt_runtime.errors import UserError

Message = dict[str, Any]


def _raise_exception(message: str) -> None:
    # Templates call this to reject conversations they cannot format (e.g. roles out of order).
    raise UserError(f"The model's chat template rejected the conversation: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Jinja's built-in tojson escapes HTML characters and sorts keys; chat templates expect
    # plain JSON text (this matches what transformers installs).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render_chat_template(template: str, messages: list[Message], add_generation_prompt: bool = True,
                         **special_tokens: Any) -> str:
    """Render `template` for `messages`; `special_tokens` are e.g. bos_token, eos_token."""
    from jinja2 import TemplateError

    try:
        compiled = _compile(template)
    except TemplateError as exc:
        raise UserError(f"The model's chat template is not valid Jinja ({exc}); use --raw to send the prompt as is.") from None
    return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                           tools=None, documents=None, **special_tokens)


def render_plain(messages: list[Message], add_generation_prompt: bool = True) -> str:
    """Fallback for models without a chat template.

    A single user message is sent as is (a base model continues the text, as LitGPT's default
    prompt style does); a conversation is written as "Role: text" lines.
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    if add_generation_prompt:
        lines.append("Assistant:")
    return "\n".join(lines)
