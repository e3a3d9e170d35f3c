"""The `litgpt` console script, run as a user runs it (a subprocess): help, removed flags, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from litgpt_runtime.__main__ import ACTIONS
from litgpt_runtime._cli_removed import rewrite


def test_top_level_help_lists_every_action_one_line_each(litgpt):
    result = litgpt("--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for action in ACTIONS:
        matching = [line for line in lines if line.split()[:1] == [action]]
        assert len(matching) == 1, f"{action} should have exactly one line in --help"
        assert len(matching[0].split()) > 1, f"{action} has no summary"
    assert result.stderr == ""


def test_top_level_help_does_not_import_torch(litgpt):
    """`litgpt --help` must stay instant: no action module (and so no torch) is imported."""
    code = ("import sys\nfrom litgpt_runtime.__main__ import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'jsonargparse', 'huggingface_hub', 'transformers') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


@pytest.mark.parametrize("action, options", [
    ("download", ["--checkpoint_root_dir", "--access_token", "--revision"]),
    ("generate", ["--prompt", "--max_new_tokens", "--temperature", "--top_k", "--top_p", "--precision",
                  "--device", "--compile", "--raw", "--checkpoint_root_dir", "--config", "--print_config"]),
    ("chat", ["--max_new_tokens", "--temperature", "--system", "--checkpoint_root_dir"]),
])
def test_action_help_shows_its_real_options_and_docstring(litgpt, action, options):
    result = litgpt(action, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: litgpt {action}" in result.stdout
    assert "repo_id" in result.stdout
    for option in options:
        assert option in result.stdout, f"{option} missing from `litgpt {action} --help`"
    first_doc_line = ACTIONS[action][1].split()[0]  # the summary's first word appears in the docstring
    assert first_doc_line.lower() in result.stdout.lower()


@pytest.mark.parametrize("argv, expected", [
    (["download", "--repo_id", "org/model"], "litgpt download org/model"),
    (["download", "--repo_id=org/model", "--access_token", "t"], "litgpt download org/model --access_token t"),
    (["chat", "--checkpoint_dir", "checkpoints/org/model"], "litgpt chat org/model"),
    (["generate", "--checkpoint_dir", "checkpoints/org/model", "--prompt", "Hi there"],
     "litgpt generate org/model --prompt 'Hi there'"),
    (["chat", "--checkpoint_dir", "/data/ckpt/x"], "litgpt chat /data/ckpt/x"),
    (["finetune_lora", "--checkpoint_dir", "my_root/org/model", "--checkpoint_root_dir", "my_root"],
     "litgpt finetune_lora org/model --checkpoint_root_dir my_root"),
])
def test_removed_flags_exit_2_with_the_new_form_of_the_same_command(litgpt, argv, expected):
    result = litgpt(*argv)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "removed" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_removed_flag_is_caught_before_the_action_module_loads(litgpt):
    result = litgpt("serve", "--checkpoint_dir", "checkpoints/a/b")
    assert result.returncode == 2 and "litgpt serve a/b" in result.stderr


def test_rewrite_keeps_an_existing_positional(litgpt):
    assert rewrite("chat", ["org/model", "--checkpoint_dir", "checkpoints/org/model"]) == ["org/model"]


def test_unknown_action_suggests_the_closest(litgpt):
    result = litgpt("generat", "x/y")
    assert result.returncode == 2
    assert "generate" in result.stderr and "Traceback" not in result.stderr


def test_unknown_option_is_a_usage_error_without_traceback(litgpt):
    result = litgpt("download", "org/model", "--no_such_option", "1")
    assert result.returncode == 2
    assert "no_such_option" in result.stderr and "Traceback" not in result.stderr


def test_missing_repo_id_is_a_usage_error(litgpt):
    result = litgpt("generate")
    assert result.returncode == 2 and "repo_id" in result.stderr and "Traceback" not in result.stderr


def test_user_error_exits_1_with_one_message(litgpt, tmp_path):
    result = litgpt("generate", "no-such-model", "--checkpoint_root_dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_missing_checkpoint_offline_is_a_clear_stop(litgpt, tmp_path):
    result = litgpt("generate", "org/model", "--checkpoint_root_dir", str(tmp_path), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert "HF_HUB_OFFLINE" in result.stderr and "litgpt download org/model" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("action", list(ACTIONS))
def test_every_action_in_the_table_loads_its_entry_point(action):
    from litgpt_runtime._cli import load_entry_point

    assert callable(load_entry_point(action, ACTIONS[action][0]))


def test_a_missing_third_party_package_names_it_and_the_install_command(capsys, monkeypatch):
    import sys as _sys

    from litgpt_runtime._cli import load_entry_point

    monkeypatch.setitem(_sys.modules, "litserve", None)  # as if it were not installed
    monkeypatch.delitem(_sys.modules, "litgpt_runtime.serve.bridge", raising=False)
    with pytest.raises(SystemExit) as exit_info:  # bridge imports litserve at module level
        load_entry_point("serve", "litgpt_runtime.serve.bridge:LitGPTServer")
    assert exit_info.value.code == 1
    assert "'litserve'" in capsys.readouterr().err


def test_config_file_and_print_config(litgpt, tmp_path):
    config = tmp_path / "gen.yaml"
    config.write_text("max_new_tokens: 7\ntemperature: 0.0\n")
    result = litgpt("generate", "org/model", "--config", str(config), "--print_config")
    assert result.returncode == 0, result.stderr
    assert "max_new_tokens: 7" in result.stdout and "repo_id: org/model" in result.stdout


def test_download_list_prints_known_models(litgpt):
    result = litgpt("download", "list")
    assert result.returncode == 0
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in result.stdout.split()
