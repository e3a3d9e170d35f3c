"""`litgpt validate_data`: the data checked against the model's tokenizer and context, torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_tiny import RECORDS, make_checkpoint, write_records
from litgpt_runtime.errors import InvalidData, UserError
from litgpt_runtime.train.data import JSON
from litgpt_runtime.validate_data import SUMMARY_FIELDS, main


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("base") / "tiny-llama")


def summary(capsys) -> dict:
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    out = json.loads(lines[-1])
    assert tuple(out) == SUMMARY_FIELDS
    return out


def test_good_data_passes_with_a_summary(base_dir, tmp_path, capsys):
    data = write_records(tmp_path / "train.json")
    main(str(base_dir), data=JSON(json_path=data), max_seq_length=64)
    out = summary(capsys)
    assert out["valid"] and out["records"] == len(RECORDS) and out["truncated"] == 0
    assert out["promptStyle"] == "chat"  # the tiny model has a chat template
    assert sum(out["histogram"].values()) == len(RECORDS)
    assert list(out["histogram"]) == ["<=64", ">64"]
    assert 0 < out["longest"] <= 64


def test_first_bad_record_is_named_by_file_and_line(base_dir, tmp_path, capsys):
    records = [*RECORDS[:3], {"instruction": "no output here"}, {"oops": 1}]
    data = write_records(tmp_path / "train.jsonl", records, jsonl=True)
    with pytest.raises(InvalidData, match=r"train.jsonl, line 4: missing field 'output'"):
        main(str(base_dir), data=JSON(json_path=data))
    out = summary(capsys)
    assert not out["valid"] and "line 4" in out["message"]


def test_invalid_json_is_named(base_dir, tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    with pytest.raises(InvalidData, match="line 2: not valid JSON"):
        main(str(base_dir), data=JSON(json_path=data))


def test_samples_longer_than_max_seq_length_fail_unless_truncation_is_asked_for(base_dir, tmp_path, capsys):
    records = [*RECORDS, {"instruction": "Tell a long story.", "output": "once upon a time " * 40}]
    data = write_records(tmp_path / "train.json", records)
    with pytest.raises(InvalidData, match=r"1 sample\(s\) longer than the maximum sequence length 64 .*record 9"):
        main(str(base_dir), data=JSON(json_path=data), max_seq_length=64)
    out = summary(capsys)
    assert out["truncated"] == 1 and out["histogram"][">64"] == 1 and out["longest"] > 64

    main(str(base_dir), data=JSON(json_path=data, long_samples="truncate"), max_seq_length=64)
    out = summary(capsys)
    assert out["valid"] and out["truncated"] == 1 and "will be cut" in out["message"]
    with pytest.raises(InvalidData):
        main(str(base_dir), data=JSON(json_path=data, long_samples="truncate"), max_seq_length=64, strict=True)


def test_empty_records_fail_and_duplicates_warn(base_dir, tmp_path, capsys):
    records = [*RECORDS, RECORDS[1], {"instruction": "Say nothing.", "output": "  "}]
    data = write_records(tmp_path / "train.json", records)
    with pytest.raises(InvalidData, match=r"1 empty record\(s\), the first at .*record 10"):
        main(str(base_dir), data=JSON(json_path=data))
    out = summary(capsys)
    assert out["empty"] == 1 and out["duplicates"] == 1

    data = write_records(tmp_path / "dup.json", [*RECORDS, RECORDS[1]])
    main(str(base_dir), data=JSON(json_path=data))
    out = summary(capsys)
    assert out["valid"] and "duplicate" in out["message"] and "record 9" in out["message"]
    with pytest.raises(InvalidData, match="duplicate record"):
        main(str(base_dir), data=JSON(json_path=data), strict=True)


def test_folder_with_train_and_val_files(base_dir, tmp_path, capsys):
    write_records(tmp_path / "d" / "train.json", RECORDS[:6])
    write_records(tmp_path / "d" / "val.jsonl", RECORDS[6:], jsonl=True)
    main(str(base_dir), data=JSON(json_path=tmp_path / "d"))
    out = summary(capsys)
    assert out["records"] == len(RECORDS) and len(out["files"]) == 2


def test_prompt_style_follows_the_model_and_chat_without_a_template_is_refused(base_dir, tmp_path, capsys):
    import shutil

    data = write_records(tmp_path / "train.json")
    main(str(base_dir), data=JSON(json_path=data, prompt_style="alpaca"))
    assert summary(capsys)["promptStyle"] == "alpaca"

    base_model = tmp_path / "base-model"  # a base model: no chat template
    shutil.copytree(base_dir, base_model)
    config = json.loads((base_model / "tokenizer_config.json").read_text())
    config.pop("chat_template")
    (base_model / "tokenizer_config.json").write_text(json.dumps(config))
    main(str(base_model), data=JSON(json_path=data))
    assert summary(capsys)["promptStyle"] == "alpaca"
    with pytest.raises(InvalidData, match="needs a chat template"):
        main(str(base_model), data=JSON(json_path=data, prompt_style="chat"))


def test_cli_is_torch_free_one_line_and_exit_7(base_dir, tmp_path):
    """The operator runs it in a small CPU pod: torch is blocked here, and the command still works."""
    bad = write_records(tmp_path / "bad.json", [*RECORDS, {"instruction": "x", "output": ""}])
    code = ("import sys; sys.modules['torch'] = None\n"
            "from litgpt_runtime.__main__ import main\n"
            f"main(['validate_data', {str(base_dir)!r}, '--data', 'JSON', '--data.json_path', sys.argv[1]])")
    good = write_records(tmp_path / "good.json")
    log = tmp_path / "termination-log"
    env = {"LITGPT_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"}
    import os

    env.update({k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME")})
    ok = subprocess.run([sys.executable, "-c", code, str(good)], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[-1])["valid"] is True
    assert json.loads(log.read_text())["records"] == len(RECORDS)
    failed = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert failed.returncode == 7, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "empty record" in errors[0]
    assert "Traceback" not in failed.stderr


def test_missing_model_is_a_user_error(tmp_path, capsys):
    data = write_records(tmp_path / "train.json")
    with pytest.raises(UserError, match="litgpt download"):
        main("org/not-downloaded", data=JSON(json_path=data), checkpoint_root_dir=tmp_path / "ck")
