"""The command lines the builders write are accepted by our runtime's own `litgpt` parser.

The pods run `litgpt <action> ...`; parsing (and instantiating the argument dataclasses, which
runs their checks) with `litgpt_runtime._cli.build_parser` proves every flag exists with a valid value,
without starting any training.
"""

from __future__ import annotations

import pytest

from litgpt_operator.api import FINETUNE_JOB, LITGPT_MODEL, MODEL_SERVER, PRETRAIN_JOB
from litgpt_operator.builders import finetune, model, pretrain, server
from litgpt_operator.builders.pretrain import PretrainSources
from litgpt_operator.builders.server import ServeSource
from litgpt_operator.builders.sources import OutputLocation
from tests.operator.test_builders import CHECKPOINT, SETTINGS, container, parent

pytest.importorskip("jsonargparse")
# Loading the actions' modules imports torch (seconds), hence slow.
pytestmark = pytest.mark.slow


def parse(command: list[str]):
    from litgpt_runtime import __main__ as table
    from litgpt_runtime._cli import build_parser, load_entry_point

    assert command[0] == "litgpt"
    action = command[1]
    function = load_entry_point(action, table.ACTIONS[action][0])
    parser = build_parser(action, function)
    config = parser.parse_args(command[2:])
    return parser.instantiate_classes(config)


def test_download_command_parses():
    spec = LITGPT_MODEL.parse_spec({"spec": {"repoId": "EleutherAI/pythia-14m", "revision": "main",
                                             "checkpointRootPVC": {"claimName": "c"}}})
    args = parse(container(model.build_download_job(parent("LitGPTModel"), spec, SETTINGS))["command"])
    assert args["repo_id"] == "EleutherAI/pythia-14m" and str(args["checkpoint_root_dir"]) == "/models/checkpoints"
    assert args["revision"] == "main"


@pytest.mark.parametrize("method", ["lora", "full", "adapter", "adapter_v2"])
def test_finetune_command_parses(method):
    spec = FINETUNE_JOB.parse_spec({"spec": {
        "modelRef": {"name": "m"}, "method": method, "data": {"inline": "[]", "promptStyle": "alpaca"},
        "train": {"epochs": 2, "globalBatchSize": 8, "microBatchSize": 2, "learningRate": 0.001, "maxSeqLength": 256,
                  "lrWarmupSteps": 5, "saveInterval": 10, "weightDecay": 0.01, "maxSteps": 100},
        "precision": "bf16-true", "gpusPerNode": 2, "nodes": 2}})
    job = finetune.build_finetune_children(parent("FinetuneJob"), spec, CHECKPOINT, SETTINGS)[-1]
    args = parse(container(job)["command"])
    assert args["repo_id"] == "EleutherAI/pythia-14m" and str(args["out_dir"]) == "/output/finetunes/demo"
    assert args["train"].epochs == 2 and args["train"].micro_batch_size == 2 and args["train"].learning_rate == 0.001
    assert args["devices"] == 2 and args["num_nodes"] == 2 and args["precision"] == "bf16-true"
    assert str(args["data"].json_path) == "/data/data.json" and args["data"].prompt_style == "alpaca"
    if method == "lora":
        assert args["lora_r"] == 8 and args["lora_query"] is True


def test_continued_pretrain_command_parses():
    spec = PRETRAIN_JOB.parse_spec({"spec": {"modelConfig": {"n_layer": 2}, "fromScratch": False,
                                             "initialCheckpoint": {"name": "m"}, "nodes": 2, "gpusPerNode": 0,
                                             "data": {"file": {"claimName": "c", "path": "text"}}}})
    job = pretrain.build_pretrain_children(parent("PretrainJob"), spec, PretrainSources(initial=CHECKPOINT), SETTINGS)[-1]
    args = parse(container(job)["command"])
    assert str(args["model_config"]) == "/config/model_config.yaml"
    assert str(args["initial_checkpoint_dir"]) == "/models/checkpoints/EleutherAI/pythia-14m"
    assert args["num_nodes"] == 2


def test_pretrain_command_parses():
    spec = PRETRAIN_JOB.parse_spec({"spec": {"modelName": "pythia-14m", "tokenizerRef": {"name": "m"},
                                             "data": {"file": {"claimName": "c", "path": "text"}},
                                             "train": {"maxTokens": 1000}}})
    job = pretrain.build_pretrain_children(parent("PretrainJob"), spec, PretrainSources(tokenizer=CHECKPOINT), SETTINGS)[-1]
    args = parse(container(job)["command"])
    assert args["train"].max_tokens == 1000


@pytest.mark.parametrize("finetuned", [False, True])
def test_serve_command_parses(finetuned):
    ref = {"finetuneRef": {"name": "f"}} if finetuned else {"modelRef": {"name": "m"}}
    spec = MODEL_SERVER.parse_spec({"spec": {**ref, "gpus": 0, "maxNewTokens": 32, "precision": "32-true"}})
    source = ServeSource(CHECKPOINT, OutputLocation("c", "finetunes/f") if finetuned else None)
    args = parse(container(server.build_deployment(parent("ModelServer"), spec, source, SETTINGS))["command"])
    assert args["host"] == "0.0.0.0" and args["port"] == 8000 and args["accelerator"] == "cpu"
    assert args["max_new_tokens"] == 32
    assert args["repo_id"] == ("/output/finetunes/f/final" if finetuned else "EleutherAI/pythia-14m")
