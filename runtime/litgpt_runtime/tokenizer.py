"""Tokenizer of a checkpoint folder: `tokenizers` (tokenizer.json), sentencepiece as fallback
(tokenizer.model), special ids from tokenizer_config.json / generation_config.json, and the
model's chat template (see `litgpt_runtime.prompts`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from litgpt_runtime.errors import UserError
from litgpt_runtime.prompts import Message, render_chat_template, render_plain


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json stores special tokens either as text or as {"content": text, ...}.
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _chat_template_of(checkpoint_dir: Path, config: dict[str, Any]) -> str | None:
    # Newer transformers save the template beside the config as chat_template.jinja.
    for name in ("chat_template.jinja",):
        path = checkpoint_dir / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default") or next(iter(named.values()), None)
    if template is None:
        chat_json = _read_json(checkpoint_dir / "chat_template.json")
        template = chat_json.get("chat_template")
    return template


def write_chat_template(folder: Path, template: str) -> None:
    """Make `template` the folder's chat template (the writer beside `_chat_template_of`, its
    reader): into tokenizer_config.json, with the files that would take precedence removed."""
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    path = folder / "tokenizer_config.json"
    config = _read_json(path)
    config["chat_template"] = template
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


class Tokenizer:
    """Encode/decode text for the model in `checkpoint_dir`."""

    def __init__(self, checkpoint_dir: str | Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        config = _read_json(self.checkpoint_dir / "tokenizer_config.json")
        special_map = _read_json(self.checkpoint_dir / "special_tokens_map.json")
        generation = _read_json(self.checkpoint_dir / "generation_config.json")

        if (self.checkpoint_dir / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as HFTokenizer

            self.backend = "tokenizers"
            self._hf = HFTokenizer.from_file(str(self.checkpoint_dir / "tokenizer.json"))
        elif (self.checkpoint_dir / "tokenizer.model").is_file():
            import sentencepiece

            self.backend = "sentencepiece"
            self._sp = sentencepiece.SentencePieceProcessor(model_file=str(self.checkpoint_dir / "tokenizer.model"))
        else:
            raise UserError(f"No tokenizer.json or tokenizer.model in {self.checkpoint_dir}; the checkpoint is incomplete. Download it again.")

        def special(name: str) -> str | None:
            return _token_text(config.get(name)) or _token_text(special_map.get(name))

        self.special_tokens = {n: special(n) for n in ("bos_token", "eos_token", "pad_token", "unk_token")}
        self.bos_id = self._special_id(self.special_tokens["bos_token"], generation.get("bos_token_id"), "bos")
        self.eos_id = self._special_id(self.special_tokens["eos_token"], generation.get("eos_token_id"), "eos")
        # generate stops on any of these: the tokenizer's eos plus generation_config's (Llama 3
        # instruct lists <|eot_id|> and <|eom_id|> there).
        stop = _as_id_list(generation.get("eos_token_id"))
        if self.eos_id is not None:
            stop.append(self.eos_id)
        self.stop_ids: tuple[int, ...] = tuple(dict.fromkeys(stop))
        self.chat_template = _chat_template_of(self.checkpoint_dir, config)
        self._add_bos_default = self._detect_add_bos(config)

    # --- special tokens -------------------------------------------------------------------
    def token_to_id(self, token: str) -> int | None:
        if self.backend == "tokenizers":
            return self._hf.token_to_id(token)
        piece_id = self._sp.piece_to_id(token)
        return None if piece_id == self._sp.unk_id() and token != self._sp.id_to_piece(piece_id) else piece_id

    def _special_id(self, text: str | None, generation_value: Any, kind: str) -> int | None:
        if text is not None:
            found = self.token_to_id(text)
            if found is not None:
                return found
        ids = _as_id_list(generation_value)
        if ids:
            return ids[0]
        if self.backend == "sentencepiece":
            value = self._sp.bos_id() if kind == "bos" else self._sp.eos_id()
            return value if value >= 0 else None
        return None

    def _detect_add_bos(self, config: dict[str, Any]) -> bool:
        # The explicit setting wins; otherwise do what the tokenizer's own post-processor does
        # (Llama 3's tokenizer.json adds <|begin_of_text|>, Qwen's adds nothing).
        if "add_bos_token" in config:
            return bool(config["add_bos_token"]) and self.bos_id is not None
        if self.bos_id is None:
            return False
        if self.backend == "sentencepiece":
            return True
        with_specials = self._hf.encode("a", add_special_tokens=True).ids
        return bool(with_specials) and with_specials[0] == self.bos_id

    # --- text <-> ids ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True) if self.backend == "tokenizers" else self._sp.get_piece_size()

    def encode(self, text: str, bos: bool | None = None, eos: bool = False, *, release_gil: bool = False) -> list[int]:
        """Token ids of `text`; `bos=None` adds BOS where the model's tokenizer does by default.

        release_gil: let other threads run while a `tokenizers` tokenizer works (its `encode`
        holds the GIL; `encode_batch` does not) -- for a server that tokenises on a thread. Unless
        TOKENIZERS_PARALLELISM=false, this counts as using tokenizers' parallelism, after which a
        fork (DataLoader workers) warns, so training code leaves it off.
        """
        if self.backend == "tokenizers":
            if release_gil:
                ids = list(self._hf.encode_batch([text], add_special_tokens=False)[0].ids)
            else:
                ids = list(self._hf.encode(text, add_special_tokens=False).ids)
        else:
            ids = list(self._sp.encode(text))
        add_bos = self._add_bos_default if bos is None else bos
        if add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids.insert(0, self.bos_id)
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        if self.backend == "tokenizers":
            return self._hf.decode(ids, skip_special_tokens=skip_special_tokens)
        return self._sp.decode(ids)

    # --- chat -----------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    def apply_chat_template(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages`, rendered with the model's template (or plain text)."""
        if not self.chat_template:
            return render_plain(messages, add_generation_prompt)
        tokens = {k: v for k, v in self.special_tokens.items() if v is not None}
        return render_chat_template(self.chat_template, messages, add_generation_prompt, **tokens)

    def encode_chat(self, messages: list[Message], add_generation_prompt: bool = True, *,
                    release_gil: bool = False) -> list[int]:
        """Token ids of a chat prompt. A template writes its own BOS, so none is added here
        (as transformers' `apply_chat_template(tokenize=True)`); plain prompts get the default."""
        text = self.apply_chat_template(messages, add_generation_prompt)
        return self.encode(text, bos=False if self.chat_template else None, release_gil=release_gil)


class StreamDecoder:
    """Turns generated ids into text pieces as they arrive, for streaming to a terminal.

    Decoding one token at a time is wrong in two ways: byte-level tokenizers split a multi-byte
    character over several tokens (each alone decodes to U+FFFD), and sentencepiece drops a word's
    leading space when a token is decoded without its left neighbour. So we decode a short window
    that starts one piece before the new tokens and emit only the text past the window's old end,
    holding back while the text ends in an incomplete character.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the context window
        self.read_offset = 0  # ids before this have been emitted

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        emitted = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset])
        text = self.tokenizer.decode(self.ids[self.prefix_offset:])
        if len(text) > len(emitted) and not text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return text[len(emitted):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (e.g. a character cut off by max_new_tokens)."""
        emitted = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset])
        text = self.tokenizer.decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(emitted):] if len(text) > len(emitted) else ""
