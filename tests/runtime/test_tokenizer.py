"""Tokenizer and chat templates, checked against Hugging Face transformers on the tiny tokenizer."""

from __future__ import annotations

import json

import pytest

from litgpt_devcluster.hf_tiny import EOS_ID, make_tokenizer_files
from litgpt_runtime.errors import UserError
from litgpt_runtime.tokenizer import StreamDecoder, Tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "What is a GPU?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world! 日本 é 🎉"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how are you?"},
     {"role": "user", "content": "Fine, thank you."}],
]

# A template using what real ones use: bos_token, namespace, loop.last, tojson, raise_exception,
# whitespace control.
RICH_TEMPLATE = (
    "{{- bos_token }}{%- set ns = namespace(system='') %}"
    "{%- for m in messages %}{%- if m['role'] == 'system' %}{%- set ns.system = m['content'] %}{%- endif %}{%- endfor %}"
    "{%- if ns.system %}<|im_start|>system\n{{ ns.system | trim }}<|im_end|>\n{%- endif %}"
    "{%- for m in messages if m['role'] != 'system' %}"
    "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}{% if loop.last and m['role'] == 'assistant' %}{{ eos_token }}{% endif %}<|im_end|>\n"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
    "{# meta: {{ {'n': messages | length} | tojson }} #}"
)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return make_tokenizer_files(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def hf_tokenizer(tok_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(tok_dir))


def _copy_with_config(src, dst, **changes):
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "special_tokens_map.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    config = json.loads((src / "tokenizer_config.json").read_text())
    config.update(changes)
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    return dst


def _hf_ids(encoding):
    return list(encoding["input_ids"] if hasattr(encoding, "keys") else encoding)


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(tok_dir, hf_tokenizer, messages, add_generation_prompt):
    ours = Tokenizer(tok_dir)
    expected = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours.apply_chat_template(messages, add_generation_prompt) == expected
    expected_ids = hf_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    assert ours.encode_chat(messages, add_generation_prompt) == _hf_ids(expected_ids)


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_rich_template_matches_transformers(tok_dir, tmp_path, messages):
    transformers = pytest.importorskip("transformers")
    folder = _copy_with_config(tok_dir, tmp_path / "rich", chat_template=RICH_TEMPLATE)
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = Tokenizer(folder)
    assert ours.apply_chat_template(messages) == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.apply_chat_template(messages).startswith("<|endoftext|>")  # bos_token reached the template


def test_template_raise_exception_is_a_user_error(tok_dir, tmp_path):
    ours = Tokenizer(_copy_with_config(tok_dir, tmp_path / "rich", chat_template=RICH_TEMPLATE))
    with pytest.raises(UserError, match="roles must alternate"):
        ours.apply_chat_template([{"role": "assistant", "content": "first"}])


def test_chat_template_jinja_file_wins_over_config(tok_dir, tmp_path):
    folder = _copy_with_config(tok_dir, tmp_path / "jinja")
    (folder / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    assert Tokenizer(folder).apply_chat_template(CONVERSATIONS[0]) == "[user] What is a GPU?\n"


def test_plain_fallback_without_template(tok_dir, tmp_path):
    ours = Tokenizer(_copy_with_config(tok_dir, tmp_path / "plain", chat_template=None))
    assert not ours.has_chat_template
    assert ours.apply_chat_template(CONVERSATIONS[0]) == "What is a GPU?"
    assert ours.apply_chat_template(CONVERSATIONS[2]).endswith("User: Fine, thank you.\nAssistant:")


@pytest.mark.parametrize("text", ["What is a GPU?", "Hello world! How are you today?", "日本 é 🎉 — ok", " leading space"])
def test_encode_decode_match_transformers(tok_dir, hf_tokenizer, text):
    ours = Tokenizer(tok_dir)
    assert ours.encode(text) == hf_tokenizer(text)["input_ids"]
    assert ours.decode(ours.encode(text)) == hf_tokenizer.decode(hf_tokenizer(text)["input_ids"]) == text


def test_special_ids_and_bos_setting(tok_dir, tmp_path):
    ours = Tokenizer(tok_dir)
    assert (ours.bos_id, ours.eos_id) == (0, EOS_ID)
    assert ours.encode("Hi")[0] != ours.bos_id  # add_bos_token is false in the tiny tokenizer
    assert ours.encode("Hi", bos=True)[0] == ours.bos_id
    assert ours.encode("Hi", eos=True)[-1] == EOS_ID
    with_bos = Tokenizer(_copy_with_config(tok_dir, tmp_path / "bos", add_bos_token=True))
    assert with_bos.encode("Hi")[0] == with_bos.bos_id


def test_stop_ids_include_generation_config_eos_list(tok_dir, tmp_path):
    folder = _copy_with_config(tok_dir, tmp_path / "gen")
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 2]}))
    assert set(Tokenizer(folder).stop_ids) == {1, 2}


def test_stream_decoder_handles_multibyte_characters(tok_dir):
    """Byte-level BPE splits 日/🎉 over several tokens; streaming must never emit half a character."""
    ours = Tokenizer(tok_dir)
    text = "Hello 日本語 🎉 café, world!"
    ids = ours.encode(text)
    decoder = StreamDecoder(ours)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert sum(1 for p in pieces if p) > 3  # it really streamed


def test_stream_decoder_flushes_a_cut_off_character(tok_dir):
    ours = Tokenizer(tok_dir)
    ids = ours.encode("🎉")
    assert len(ids) > 1
    decoder = StreamDecoder(ours)
    assert "".join(decoder.push(i) for i in ids[:-1]) == ""  # held back: incomplete character
    assert decoder.flush() == ours.decode(ids[:-1])


def test_sentencepiece_fallback(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    import io

    model = io.BytesIO()
    sentences = ["The quick brown fox jumps over the lazy dog."] * 20 + ["Hello world, how are you?"] * 20
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, vocab_size=200, hard_vocab_limit=False,
                                   bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2)
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    ours = Tokenizer(tmp_path)
    assert ours.backend == "sentencepiece"
    assert (ours.bos_id, ours.eos_id) == (1, 2)
    ids = ours.encode("Hello world")
    assert ids[0] == 1  # sentencepiece models add BOS by default
    assert ours.decode(ids[1:]) == "Hello world"
    decoder = StreamDecoder(ours)
    assert "".join(decoder.push(i) for i in ids[1:]) + decoder.flush() == "Hello world"


def test_missing_tokenizer_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="tokenizer"):
        Tokenizer(tmp_path)
