"""Each finetuning default and each list of names lives once (`litgpt_runtime.methods`,
`litgpt_runtime.precision`); everything that repeats one for its own reasons (a CLI signature, a
model config's fields, the operator's API) must agree with it. These tests fail when a copy drifts."""

from __future__ import annotations

import inspect
import typing
from dataclasses import fields

import pytest

from litgpt_runtime import fit, methods, precision
from litgpt_runtime.methods import ADAPTER, LORA, METHODS, flat


def defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()}


def test_the_finetune_commands_take_their_defaults_from_methods():
    from litgpt_runtime.finetune import adapter, adapter_v2, full, lora

    for module, name in ((lora, "lora"), (full, "full"), (adapter, "adapter"), (adapter_v2, "adapter_v2")):
        given = defaults(module.setup)
        assert given["train"] == methods.TRAIN_DEFAULTS[name]
        assert str(given["out_dir"]) == f"out/finetune/{name}"
        own = {k: v for k, v in given.items() if k.startswith(("lora_", "adapter_"))}
        expected = {**flat(LORA, "lora_")} if name == "lora" else {}
        expected = {**flat(ADAPTER, "adapter_")} if name.startswith("adapter") else expected
        assert own == expected


def test_litgpt_finetune_has_every_method_and_every_option_of_each():
    from litgpt_runtime.finetune import setup
    from litgpt_runtime.finetune.cli import method_options

    params = inspect.signature(setup).parameters
    assert typing.get_args(params["method"].annotation) == METHODS
    for name in METHODS:
        for option in method_options(name):
            assert params[option.name].default is None  # None: the method's own default
    from litgpt_runtime.__main__ import ACTIONS

    assert {f"finetune_{m}" for m in METHODS} <= set(ACTIONS)


def test_the_model_configs_default_to_the_same_options():
    from litgpt_runtime.peft import adapter, lora

    def config_defaults(cls, options):
        return {f.name: f.default for f in fields(cls) if f.name in options}

    assert config_defaults(lora.Config, flat(LORA, "lora_")) == flat(LORA, "lora_")
    assert config_defaults(adapter.Config, flat(ADAPTER, "adapter_")) == flat(ADAPTER, "adapter_")


def test_the_fit_check_defaults_to_the_same_options():
    setup = fit.TrainingSetup()
    assert setup.lora == LORA
    assert (setup.adapter_prompt_length, setup.adapter_start_layer) == (ADAPTER.prompt_length, ADAPTER.start_layer)
    cli = defaults(fit.main)
    assert {k: v for k, v in cli.items() if k.startswith("lora_")} == {
        k: v for k, v in flat(LORA, "lora_").items() if k in cli}
    for name in METHODS:
        fit.TrainingSetup(method=name)


def test_the_operator_api_defaults_to_the_same_options():
    from litgpt_operator.api.finetunejob import LoRA, Method

    assert typing.get_args(Method) == METHODS
    # Same names (the builder writes --lora_<field>) and the same defaults.
    assert LoRA().model_dump() == flat(LORA, "")


def test_precision_lists_are_one_list():
    from litgpt_operator.api.common import InferencePrecision, Precision

    assert typing.get_args(Precision) == precision.TRAINING_PRECISIONS
    assert typing.get_args(InferencePrecision) == tuple(precision.INFERENCE_DTYPES)
    for name in precision.TRAINING_PRECISIONS:
        assert precision.training_precision(name, allow_test=False) == name
        fit.TrainingSetup(precision=name)
    assert precision.training_precision("64-true") == "64-true"  # the CLI's exact-comparison precision


@pytest.mark.parametrize("name", list(precision.INFERENCE_DTYPES))
def test_inference_precisions_load_as_their_dtype(name):
    import torch

    from litgpt_runtime.generate import pick_dtype

    assert pick_dtype(name, torch.device("cpu")) == getattr(torch, precision.INFERENCE_DTYPES[name])
