"""LitGPT recipes given to --config: translated into our options, or one line naming what we lack.

The recipes here are written for these tests in the form of LitGPT 0.5.13's config_hub files
(a LoRA/QLoRA/full finetune recipe, a pretraining recipe with an inline model config).
"""

from __future__ import annotations

import pytest
import yaml

from finetune_tiny import RECORDS, make_checkpoint, write_records
from litgpt_runtime.errors import UserError
from litgpt_runtime.litgpt_config import from_litgpt
from litgpt_runtime.litgpt_recipe import looks_like_litgpt_recipe, translate


def lora_recipe(json_path: str = "train.json", **changes) -> dict:
    recipe = {
        "checkpoint_dir": "checkpoints/test/tiny-llama",
        "out_dir": "out/finetune/lora-tiny",
        "precision": "32-true",
        "quantize": None,
        "devices": 1,
        "num_nodes": 1,
        "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_query": True, "lora_key": False,
        "lora_value": True, "lora_projection": False, "lora_mlp": True, "lora_head": False,
        "data": {"class_path": "litgpt.data.JSON", "init_args": {
            "json_path": json_path, "mask_prompt": False, "val_split_fraction": 0.25, "prompt_style": "alpaca",
            "ignore_index": -100, "seed": 7, "num_workers": 4}},
        "train": {"save_interval": 200, "log_interval": 1, "global_batch_size": 4, "micro_batch_size": 2,
                  "lr_warmup_steps": 1, "epochs": 1, "max_tokens": None, "max_steps": 2, "max_seq_length": 64,
                  "tie_embeddings": None, "max_norm": None, "min_lr": 6.0e-05},
        "eval": {"interval": 100, "max_new_tokens": 100, "max_iters": 2, "initial_validation": False,
                 "final_validation": False},
        "logger_name": "csv",
        "seed": 1337,
        "optimizer": {"class_path": "torch.optim.AdamW",
                      "init_args": {"lr": 0.0002, "weight_decay": 0.01, "betas": [0.9, 0.95]}},
    }
    recipe.update(changes)
    return recipe


LORA_PARAMS = {"repo_id", "data", "checkpoint_root_dir", "out_dir", "precision", "devices", "num_nodes", "strategy",
               "quantize", "lora_r", "lora_alpha", "lora_dropout", "lora_query", "lora_key", "lora_value",
               "lora_projection", "lora_mlp", "lora_head", "merge", "train", "eval", "seed", "resume", "access_token"}


def test_a_lora_recipe_means_the_same_options():
    ours, notes = translate("finetune_lora", lora_recipe(), LORA_PARAMS, model_given=True)
    assert ours["train"]["learning_rate"] == 0.0002 and ours["train"]["weight_decay"] == 0.01
    assert (ours["train"]["beta1"], ours["train"]["beta2"]) == (0.9, 0.95)
    assert ours["train"]["max_steps"] == 2 and "tie_embeddings" not in ours["train"]
    assert ours["train"]["max_norm"] is None  # no clipping, in both tools
    assert ours["data"] == {"class_path": "JSON", "init_args": {
        "json_path": "train.json", "mask_prompt": False, "val_split_fraction": 0.25, "prompt_style": "alpaca",
        "seed": 7, "long_samples": "truncate"}}  # LitGPT cuts long samples to train.max_seq_length
    assert ours["lora_r"] == 4 and "checkpoint_dir" not in ours and "logger_name" not in ours
    assert "max_new_tokens" not in ours["eval"]
    assert any(n.startswith("checkpoint_dir") for n in notes) and any("eval.max_new_tokens" in n for n in notes)
    assert any("data.num_workers" in n for n in notes) and all("\n" not in n for n in notes)


@pytest.mark.parametrize("change, option", [
    ({"data": {"class_path": "litgpt.data.Alpaca2k", "init_args": {"mask_prompt": False}}}, "data="),
    ({"logger_name": "wandb"}, "logger_name="),
    ({"optimizer": "SGD"}, "optimizer="),
    ({"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3, "amsgrad": True}}},
     "optimizer.init_args.amsgrad="),
    ({"train": {"tie_embeddings": True}}, "train.tie_embeddings="),
    ({"longlora": {"use_longlora": True}}, "longlora="),
    ({"data": {"class_path": "litgpt.data.JSON", "init_args": {"json_path": "x.json", "prompt_style": "llama3"}}},
     "data.prompt_style="),
])
def test_what_we_lack_is_one_line_naming_the_option(change, option):
    with pytest.raises(UserError) as info:
        translate("finetune_lora", lora_recipe(**change), LORA_PARAMS, model_given=True)
    assert option in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_dir_without_a_model_names_the_new_command():
    with pytest.raises(UserError) as info:
        translate("finetune_lora", lora_recipe(), LORA_PARAMS, model_given=False, config_path="lora.yaml")
    assert "litgpt finetune_lora test/tiny-llama --config lora.yaml" in str(info.value)


def test_pretrain_recipe_with_an_inline_model_config(tmp_path):
    recipe = {
        "model_name": None,
        "model_config": {"name": "tiny-stories", "hf_config": {}, "block_size": 64, "padded_vocab_size": 320,
                         "n_layer": 2, "n_head": 4, "n_query_groups": 4, "n_embd": 32, "head_size": 8,
                         "rotary_percentage": 1.0, "parallel_residual": False, "bias": False,
                         "norm_class_name": "RMSNorm", "mlp_class_name": "LLaMAMLP", "intermediate_size": 64},
        "out_dir": "out/pretrain/tiny", "precision": "32-true", "initial_checkpoint_dir": None, "resume": False,
        "data": {"class_path": "litgpt.data.TextFiles", "init_args": {"train_data_path": "corpus", "num_workers": 2}},
        "train": {"global_batch_size": 4, "micro_batch_size": 2, "max_tokens": 1000, "tie_embeddings": None},
        "eval": {"interval": 10, "max_new_tokens": None, "max_iters": 2},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 5e-4, "weight_decay": 0.1,
                                                                       "betas": [0.9, 0.95]}},
        "devices": "auto", "tokenizer_dir": "checkpoints/test/tiny", "logger_name": "tensorboard", "seed": 42,
    }
    params = {"model_name", "model_config", "initial_checkpoint_dir", "tokenizer_dir", "data", "out_dir", "precision",
              "devices", "num_nodes", "strategy", "train", "eval", "seed", "resume", "compile"}
    assert looks_like_litgpt_recipe(recipe)
    ours, _ = translate("pretrain", recipe, params, model_given=False)
    assert ours["data"] == {"class_path": "TextFiles", "init_args": {"train_data_path": "corpus"}}
    from litgpt_runtime.config import Config

    config = Config.from_file(ours["model_config"])
    assert (config.n_layer, config.n_embd, config.mlp_class_name, config.rotary_percentage) == (2, 32, "LLaMAMLP", 1.0)
    assert config.padded_vocab_size == 320 and ours["train"]["learning_rate"] == 5e-4
    with pytest.raises(UserError, match="latent_attention"):
        translate("pretrain", {**recipe, "model_config": {**recipe["model_config"], "latent_attention": {"q": 1}}},
                  params, model_given=False)
    with pytest.raises(UserError, match="data=.*TinyStories"):
        translate("pretrain", {**recipe, "data": "TinyStories"}, params, model_given=False)
    assert from_litgpt(recipe["model_config"])["n_head"] == 4


def test_our_own_config_files_pass_through(tmp_path, litgpt):
    ours = tmp_path / "ours.yaml"
    ours.write_text(yaml.safe_dump({"lora_r": 4, "train": {"max_steps": 3}}))
    assert not looks_like_litgpt_recipe(yaml.safe_load(ours.read_text()))
    result = litgpt("finetune_lora", "test/tiny", "--config", str(ours), "--print_config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["lora_r"] == 4 and printed["train"]["max_steps"] == 3


def test_cli_reads_a_litgpt_recipe(tmp_path, litgpt):
    recipe = tmp_path / "lora.yaml"
    recipe.write_text(yaml.safe_dump(lora_recipe(str(tmp_path / "train.json"))))
    result = litgpt("finetune_lora", "test/tiny", "--config", str(recipe), "--print_config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["train"]["learning_rate"] == 0.0002 and printed["train"]["beta2"] == 0.95
    assert printed["data"]["init_args"]["prompt_style"] == "alpaca" and printed["lora_mlp"] is True
    assert "note: checkpoint_dir" in result.stderr
    missing = litgpt("finetune_lora", "--config", str(recipe))
    assert missing.returncode == 1 and f"litgpt finetune_lora test/tiny-llama --config {recipe}" in missing.stderr
    bad = tmp_path / "alpaca2k.yaml"
    bad.write_text(yaml.safe_dump(lora_recipe(data={"class_path": "litgpt.data.Alpaca2k"})))
    result = litgpt("finetune_lora", "test/tiny", "--config", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "data='litgpt.data.Alpaca2k'" in result.stderr and len(result.stderr.strip().splitlines()) <= 2


@pytest.mark.slow
def test_a_litgpt_recipe_trains(tmp_path, litgpt):
    base = make_checkpoint(tmp_path / "tiny-llama")
    data = write_records(tmp_path / "train.json", RECORDS)
    recipe = tmp_path / "lora.yaml"
    recipe.write_text(yaml.safe_dump(lora_recipe(str(data), out_dir=str(tmp_path / "out"))))
    result = litgpt("finetune_lora", str(base), "--config", str(recipe))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "final" / ".litgpt_complete.json").is_file()
    hparams = yaml.safe_load((tmp_path / "out" / "final" / "hyperparameters.yaml").read_text())
    assert hparams["train"]["learning_rate"] == 0.0002 and hparams["lora_r"] == 4
