"""The demo's finetuning data (litgpt_devcluster.e2e): the question it asks is one the model trains on."""

from __future__ import annotations

from litgpt_devcluster import e2e
from litgpt_runtime.train.data import JSON, split_train_val


def test_the_demo_question_is_in_the_training_split(tmp_path):
    """The demo asks TRAINED_QUESTION and expects the trained answer: a record held out for validation
    would never be learnt, and the demo would fail for a reason that has nothing to do with training."""
    flow = e2e.Flow(cp=None, work=tmp_path)  # only builds a manifest: no cluster needed
    fraction = flow.finetune_manifest("demo", {})["spec"]["data"]["valSplitFraction"]
    train, val = split_train_val(list(range(len(e2e.GOOD_DATA))), fraction, JSON().seed)
    assert val, "the demo holds records out for validation"
    trained = [e2e.GOOD_DATA[i] for i in train]
    assert {"instruction": e2e.TRAINED_QUESTION, "input": "", "output": e2e.TRAINED_ANSWER} in trained
