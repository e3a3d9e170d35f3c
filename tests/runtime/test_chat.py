"""`litgpt chat` with piped stdin: the template, the conversation, /reset and leaving."""

from __future__ import annotations

import io

import pytest
import torch

from litgpt_devcluster.hf_tiny import make_hf_model_dir
from litgpt_runtime.chat import chat_loop, fit_to_context
from litgpt_runtime.checkpoint import load_model, mark_complete
from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint
from litgpt_runtime.generate import generate_tokens
from litgpt_runtime.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    base = tmp_path_factory.mktemp("chat")
    hf_dir = make_hf_model_dir("llama", base / "hf")
    out = base / "ours"
    convert_hf_checkpoint(hf_dir, out)
    mark_complete(out, repo_id="test/tiny")
    return out


class Recorder:
    """Wraps the model to record every prompt chat_loop feeds it (the prefill calls)."""

    def __init__(self, model):
        self.model, self.prompts = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, idx, **kwargs):
        if idx.size(1) > 1:
            self.prompts.append(idx[0].tolist())
        return self.model(idx, **kwargs)


def _greedy_reply(model, tokenizer, messages, n):
    ids = tokenizer.encode_chat(messages)
    return tokenizer.decode(list(generate_tokens(model, ids, n, 0.0, stop_ids=tokenizer.stop_ids)))


def test_conversation_history_reset_and_quit(checkpoint, capsys):
    tokenizer = Tokenizer(checkpoint)
    model = load_model(checkpoint)
    recorder = Recorder(model)
    stdin = io.StringIO("Hello world!\nHow are you today?\n/reset\nHello world!\n/quit\nnever read\n")
    stdout = io.StringIO()
    chat_loop(recorder, tokenizer, max_new_tokens=8, temperature=0.0, top_k=None, top_p=1.0, stdin=stdin, stdout=stdout)

    first = _greedy_reply(model, tokenizer, [{"role": "user", "content": "Hello world!"}], 8)
    second_messages = [{"role": "user", "content": "Hello world!"}, {"role": "assistant", "content": first},
                       {"role": "user", "content": "How are you today?"}]
    second = _greedy_reply(model, tokenizer, second_messages, 8)
    # The second turn sees the whole conversation; after /reset it starts over.
    assert recorder.prompts == [
        tokenizer.encode_chat(second_messages[:1]),
        tokenizer.encode_chat(second_messages),
        tokenizer.encode_chat(second_messages[:1]),
    ]
    assert stdout.getvalue() == f"{first}\n{second}\n{first}\n"
    err = capsys.readouterr().err
    assert "conversation reset" in err and "tokens/sec" in err


@pytest.mark.parametrize("ending", ["", "\n", "exit\n"])
def test_end_of_input_empty_line_and_exit_leave(checkpoint, ending):
    tokenizer = Tokenizer(checkpoint)
    recorder = Recorder(load_model(checkpoint))
    stdin = io.StringIO("Hi\n" + ending + "Hello again\n" * bool(ending))
    chat_loop(recorder, tokenizer, 4, 0.0, None, 1.0, stdin=stdin, stdout=io.StringIO())
    assert len(recorder.prompts) == 1  # one reply, then it left


def test_long_conversations_drop_the_oldest_turns(checkpoint):
    tokenizer = Tokenizer(checkpoint)
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(10):
        messages += [{"role": "user", "content": f"Question {i} about the quick brown fox"},
                     {"role": "assistant", "content": "The lazy dog."}]
    messages.append({"role": "user", "content": "Last one?"})
    kept, ids = fit_to_context(tokenizer, messages, 60)
    assert len(ids) <= 60
    assert kept[0]["role"] == "system" and kept[-1]["content"] == "Last one?"
    assert len(kept) < len(messages)


@pytest.mark.slow
def test_chat_cli_with_piped_stdin(litgpt, checkpoint):
    result = litgpt("chat", str(checkpoint), "--temperature", "0", "--max_new_tokens", "8",
                    input="Hello world!\n/reset\nHello world!\n")
    assert result.returncode == 0, result.stderr
    tokenizer = Tokenizer(checkpoint)
    reply = _greedy_reply(load_model(checkpoint), tokenizer, [{"role": "user", "content": "Hello world!"}], 8)
    assert result.stdout == f"{reply}\n{reply}\n"  # the same greedy answer again after /reset
