"""Instruction data: rendering with the chat template, prompt masking, splits, and the messages
a user gets for broken files."""

from __future__ import annotations

import pytest

from finetune_tiny import RECORDS, write_records
from litgpt_runtime.errors import UserError
from litgpt_runtime.train.data import IGNORE_INDEX, JSON, pad_collate, split_train_val


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from litgpt_devcluster.hf_tiny import make_tokenizer_files

    from litgpt_runtime.tokenizer import Tokenizer

    return Tokenizer(make_tokenizer_files(tmp_path_factory.mktemp("tok")))


def trained_text(tokenizer, sample) -> str:
    return tokenizer.decode([int(t) for t in sample["targets"] if t != IGNORE_INDEX])


def test_alpaca_record_uses_chat_template_and_masks_the_prompt(tokenizer, tmp_path):
    path = write_records(tmp_path / "d.json", RECORDS[:1])
    (train, val) = JSON(json_path=path, val_split_fraction=0).load(tokenizer, 256)
    assert val == [] and len(train) == 1
    sample = train[0]
    # Pre-shifted: input_ids[t] predicts targets[t]; together they are the whole rendered text.
    full = [*sample["input_ids"].tolist(), sample["targets"][-1].item()]
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name the animal."}, {"role": "assistant", "content": "fox"}], add_generation_prompt=False)
    assert tokenizer.decode(full) == expected
    assert trained_text(tokenizer, sample) == "fox<|im_end|>\n"
    # the prompt exactly as `generate` sends it is masked
    prompt = tokenizer.encode_chat([{"role": "user", "content": "Name the animal."}])
    assert (sample["targets"][: len(prompt) - 1] == IGNORE_INDEX).all()
    assert sample["targets"][len(prompt) - 1] != IGNORE_INDEX


def test_mask_prompt_false_trains_on_everything(tokenizer, tmp_path):
    path = write_records(tmp_path / "d.json", RECORDS[:1])
    train, _ = JSON(json_path=path, val_split_fraction=0, mask_prompt=False).load(tokenizer, 256)
    assert (train[0]["targets"] != IGNORE_INDEX).all()


def test_multi_turn_messages_train_every_assistant_turn(tokenizer, tmp_path):
    record = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye now"},
    ]}
    path = write_records(tmp_path / "d.jsonl", [record], jsonl=True)
    train, _ = JSON(json_path=path, val_split_fraction=0).load(tokenizer, 256)
    assert trained_text(tokenizer, train[0]) == "Hello<|im_end|>\nBye now<|im_end|>\n"


def test_model_without_template_gets_alpaca_prompt_as_its_template(tokenizer, tmp_path):
    from litgpt_runtime.tokenizer import Tokenizer

    bare = Tokenizer(tokenizer.checkpoint_dir)
    bare.chat_template = None
    path = write_records(tmp_path / "d.json", RECORDS[:1])
    data = JSON(json_path=path, val_split_fraction=0)
    train, _ = data.load(bare, 256)
    assert bare.has_chat_template and "### Response:" in bare.chat_template
    text = bare.decode(train[0]["input_ids"].tolist())
    assert "### Instruction:\nName the animal.\n\n### Response:\nfox" in text
    assert trained_text(bare, train[0]) == "fox<|im_end|>"  # answer + EOS: generation learns to stop


def test_split_is_deterministic_and_disjoint():
    items = list(range(100))
    train, val = split_train_val(items, 0.1, seed=3)
    assert len(val) == 10 and sorted(train + val) == items
    assert split_train_val(items, 0.1, seed=3) == (train, val)
    assert split_train_val(items, 0.1, seed=4)[1] != val


def test_folder_with_train_and_val_files(tokenizer, tmp_path):
    write_records(tmp_path / "ds" / "train.jsonl", RECORDS[:5], jsonl=True)
    write_records(tmp_path / "ds" / "val.json", RECORDS[5:])
    train, val = JSON(json_path=tmp_path / "ds").load(tokenizer, 256)
    assert (len(train), len(val)) == (5, 3)


@pytest.mark.parametrize(
    "content, name, message",
    [
        ('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n', "bad.jsonl", "bad.jsonl, line 2: not valid JSON"),
        ('[{"instruction": "a", "output": "b"},\n {"instruction": "a"}]', "missing.json", "missing.json, record 2: missing field 'output'"),
        ('[\n{"instruction": "a", "output": "b"},\n{"instruction": "a" "output": "b"}]', "broken.json", "broken.json, line 3: not valid JSON"),
        ("[]", "empty.json", "empty.json holds no records"),
        ("\n\n", "empty.jsonl", "empty.jsonl holds no records"),
        ('[{"messages": [{"role": "user", "content": "hi"}]}]', "noanswer.json", "noanswer.json, record 1: the conversation has no assistant message"),
        ('[{"instruction": 3, "output": "b"}]', "type.json", "type.json, record 1: field 'instruction' must be a string"),
        ('{"instruction": "a", "output": "b"}', "obj.json", "expected a JSON array"),
    ],
)
def test_malformed_files_name_file_and_position(tokenizer, tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError, match=None) as info:
        JSON(json_path=path, val_split_fraction=0).load(tokenizer, 256)
    assert message in str(info.value)


def test_too_long_sample_errors_or_truncates(tokenizer, tmp_path):
    records = [RECORDS[0], {"instruction": "Repeat " * 40, "output": "ok"}]
    path = write_records(tmp_path / "long.jsonl", records, jsonl=True)
    with pytest.raises(UserError) as info:
        JSON(json_path=path, val_split_fraction=0).load(tokenizer, 32)
    assert "long.jsonl, line 2" in str(info.value) and "--data.long_samples truncate" in str(info.value)
    train, _ = JSON(json_path=path, val_split_fraction=0, long_samples="truncate").load(tokenizer, 32)
    assert max(len(s["input_ids"]) for s in train) == 32


def test_too_small_for_split_and_bad_fraction(tokenizer, tmp_path):
    path = write_records(tmp_path / "one.json", RECORDS[:1])
    with pytest.raises(UserError, match="too few"):
        JSON(json_path=path, val_split_fraction=0.5).load(tokenizer, 256)
    with pytest.raises(UserError, match="val_split_fraction"):
        JSON(json_path=path, val_split_fraction=1.5)


def test_pad_collate_pads_inputs_and_masks_padding():
    import torch

    batch = pad_collate([
        {"input_ids": torch.tensor([5, 6, 7]), "targets": torch.tensor([6, 7, 8])},
        {"input_ids": torch.tensor([5]), "targets": torch.tensor([9])},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["targets"].tolist() == [[6, 7, 8], [9, IGNORE_INDEX, IGNORE_INDEX]]
