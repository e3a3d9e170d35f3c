"""The shared training loop: schedule, argument checks, batch streams, gradient accumulation,
resume, and the loss really falling."""

from __future__ import annotations

import math

import pytest
import torch

from litgpt_runtime.config import Config
from litgpt_runtime.errors import UserError
from litgpt_runtime.model import GPT
from litgpt_runtime.train.args import EvalArgs, TrainArgs
from litgpt_runtime.train.batches import IndexedBatches
from litgpt_runtime.train.data import IGNORE_INDEX, pad_collate
from litgpt_runtime.train.schedule import lr_at

TINY = dict(n_layer=2, n_embd=32, n_head=4, n_query_groups=2, block_size=32, vocab_size=64,
            norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48)


# --- schedule and arguments ---------------------------------------------------------------------


def test_warmup_then_cosine_to_final():
    lrs = [lr_at(s, peak=1.0, final=0.1, warmup_steps=4, total_steps=20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # never rises after warm-up
    assert math.isclose(lrs[-1], 0.1) and math.isclose(lrs[11], 0.55, rel_tol=0.05)
    assert lr_at(1000, peak=1.0, final=0.1, warmup_steps=4, total_steps=None) == 1.0
    # a warm-up longer than the run is capped so the peak is reached
    assert [lr_at(s, peak=1.0, final=0.0, warmup_steps=100, total_steps=3) for s in range(3)] == [0.5, 1.0, 0.0]
    assert lr_at(0, peak=1.0, final=0.0, warmup_steps=0, total_steps=5) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(global_batch_size=6, micro_batch_size=4), "multiple of --train.micro_batch_size"),
    (dict(micro_batch_size=0), "micro_batch_size must be positive"),
    (dict(learning_rate=-1.0), "learning_rate must be positive"),
    (dict(min_lr=1.0, learning_rate=0.1), "min_lr"),
    (dict(max_steps=0), "max_steps must be positive"),
    (dict(beta2=1.0), "beta2"),
])
def test_train_args_checks(kwargs, message):
    with pytest.raises(UserError, match=message):
        TrainArgs(**kwargs)


def test_accumulation_needs_even_split_over_processes():
    args = TrainArgs(global_batch_size=8, micro_batch_size=2)
    assert args.accumulation_steps(1) == 4 and args.accumulation_steps(2) == 2
    with pytest.raises(UserError, match="split evenly over 3"):
        args.accumulation_steps(3)
    with pytest.raises(UserError):
        EvalArgs(interval=0)


def test_indexed_batches_shard_resume_and_reshuffle():
    data = list(range(10))
    collate = lambda items: items  # noqa: E731
    ranks = [IndexedBatches(data, 2, collate, seed=1, rank=r, world_size=2) for r in (0, 1)]
    first = [[b for b in r.epoch_batches(0)] for r in ranks]
    assert [len(f) for f in first] == [3, 3]  # 5 samples each: micro-batches of 2, 2, 1
    flat = [x for f in first for b in f for x in b]
    assert sorted(flat) == data  # disjoint shards covering the data
    assert first[0] != [b for b in ranks[0].epoch_batches(1)]  # a new order each epoch

    stream = IndexedBatches(data, 3, collate, seed=5)
    it = iter(stream)
    seen = [next(it) for _ in range(5)]  # crosses into epoch 1
    state = stream.state_dict()
    rest = [next(it) for _ in range(4)]
    again = IndexedBatches(data, 3, collate, seed=5)
    again.load_state_dict(state)
    it2 = iter(again)
    assert [next(it2) for _ in range(4)] == rest and state["epoch"] == 1 and len(seen) == 5


# --- training with fit ----------------------------------------------------------------------------


def samples(n: int = 8, seed: int = 0):
    """Sequences of different lengths with a masked 'prompt' part: targets are the next token."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 6 + (i * 3) % 9
        tokens = torch.randint(1, 64, (length + 1,), generator=g)
        targets = tokens[1:].clone()
        targets[: length // 3] = IGNORE_INDEX
        out.append({"input_ids": tokens[:-1], "targets": targets})
    return out


def train_tiny(tmp_path, *, micro: int, global_batch: int = 8, max_steps: int = 4, save_interval=None,
               resume_from=None, data=None, lr=1e-2, dropout_model=False, precision="32-true"):
    import lightning as L

    from litgpt_runtime.train.loop import fit

    fabric = L.Fabric(accelerator="cpu", devices=1, precision=precision, loggers=[])
    fabric.seed_everything(7)
    if dropout_model:
        from litgpt_runtime.peft import lora

        model = lora.GPT(lora.Config.from_base(Config(**TINY), lora_dropout=0.3, lora_mlp=True))
        lora.mark_only_lora_as_trainable(model)
        with torch.no_grad():  # start away from B = 0 so dropout matters from step 1
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(std=0.1)
    else:
        model = GPT(Config(**TINY))
    model = fabric.setup_module(model)
    optimizer = fabric.setup_optimizers(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr))
    data = data or samples()
    source = IndexedBatches(data, micro, pad_collate, seed=3)
    train = TrainArgs(global_batch_size=global_batch, micro_batch_size=micro, max_steps=max_steps,
                      lr_warmup_steps=1, learning_rate=lr, save_interval=save_interval, log_interval=1)
    state = fit(fabric, model, optimizer, source, None, train, EvalArgs(final_validation=False), tmp_path,
                resume_from=resume_from, seed=11, batches_per_epoch=source.batches_per_epoch())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, state


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """2 x micro 4 and 1 x micro 8 give the same step: the loss is normalised by the step's target
    tokens, not per micro-batch (which would weigh short and long micro-batches differently).

    In float64: AdamW divides by sqrt(v), so a near-zero gradient's summation-order error (which
    depends on the CPU's kernels: AVX2, AVX-512, AMX) is amplified up to lr/eps = 1e6 times. In
    float32 that reached 3e-4 on AMD EPYC; in float64 it stays below 1e-9, while a wrong
    normalisation (per micro-batch instead of per step) moves weights by ~1e-3."""
    two_by_four, _ = train_tiny(tmp_path / "a", micro=4, precision="64-true")
    one_by_eight, _ = train_tiny(tmp_path / "b", micro=8, precision="64-true")
    for key in two_by_four:
        assert two_by_four[key].dtype == torch.float64
        torch.testing.assert_close(two_by_four[key], one_by_eight[key], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dropout_model", [False, True], ids=["full", "lora-dropout"])
def test_resume_reproduces_an_uninterrupted_run(tmp_path, dropout_model):
    """N steps in one go == N/2 steps, then resume from the step-N/2 checkpoint for the rest
    (weights, optimizer moments, step, data position and dropout masks all continue)."""
    from litgpt_runtime.train.loop import newest_checkpoint, resume_checkpoint

    straight, state = train_tiny(tmp_path / "one", micro=2, global_batch=4, max_steps=6, save_interval=3,
                                 dropout_model=dropout_model)
    assert state.step == 6 and newest_checkpoint(tmp_path / "one").name == "step-000006"
    halfway = resume_checkpoint(tmp_path / "one", tmp_path / "one" / "step-000003")
    resumed, state2 = train_tiny(tmp_path / "two", micro=2, global_batch=4, max_steps=6, save_interval=3,
                                 resume_from=halfway, dropout_model=dropout_model)
    assert state2.step == 6 and state2.iter_num == state.iter_num and state2.data == state.data
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)


def test_resume_options(tmp_path):
    from litgpt_runtime.train.loop import resume_checkpoint

    assert resume_checkpoint(tmp_path, "auto") is None
    assert resume_checkpoint(tmp_path, False) is None
    with pytest.raises(UserError, match="no checkpoint"):
        resume_checkpoint(tmp_path, True)
    (tmp_path / "step-000004.partial").mkdir()  # an interrupted save is never picked
    assert resume_checkpoint(tmp_path, "auto") is None
    with pytest.raises(UserError, match="no training checkpoint"):
        resume_checkpoint(tmp_path, tmp_path / "nope")


@pytest.mark.slow
def test_loss_falls_and_epochs_limit(tmp_path):
    import lightning as L

    from litgpt_runtime.train.loop import fit

    fabric = L.Fabric(accelerator="cpu", devices=1, loggers=[])
    fabric.seed_everything(0)
    model = fabric.setup_module(GPT(Config(**TINY)))
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters(), lr=3e-3))
    data = samples(4)
    source = IndexedBatches(data, 2, pad_collate, seed=0)
    val = IndexedBatches(data, 2, pad_collate, shuffle=False)
    train = TrainArgs(global_batch_size=4, micro_batch_size=2, epochs=30, lr_warmup_steps=2, learning_rate=3e-3,
                      save_interval=None, log_interval=5)
    from litgpt_runtime.train.loop import validate

    before = validate(fabric, model, val, 10)
    state = fit(fabric, model, optimizer, source, val, train, EvalArgs(interval=1000), tmp_path,
                batches_per_epoch=source.batches_per_epoch())
    assert state.step == 30 and state.iter_num == 60  # one step per epoch of 4 samples
    assert state.data == {"epoch": 29, "position": 2, "seed": 0}  # the last epoch fully consumed
    assert state.val_loss < 0.5 * before


def test_target_only_loss_equals_full_loss_and_gradients():
    from litgpt_runtime.train.loop import TargetOnlyLoss, summed_loss

    torch.manual_seed(0)
    model = GPT(Config(**TINY, tie_embeddings=True, final_logit_softcapping=5.0))
    batch = pad_collate(samples(4))
    full = summed_loss(model, batch)
    full.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    selective = TargetOnlyLoss(model)(model, batch)
    selective.backward()
    torch.testing.assert_close(selective, full, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)
    assert model(batch["input_ids"]).shape[:2] == batch["input_ids"].shape  # hook idle outside the loss


def test_num_nodes_from_the_torch_distributed_environment(monkeypatch):
    from litgpt_runtime.train.launch import resolve_num_nodes

    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert resolve_num_nodes(2, None) == 1
    assert resolve_num_nodes(2, 3) == 3
    monkeypatch.setenv("WORLD_SIZE", "8")  # e.g. a Kubernetes Indexed Job of 4 pods x 2 devices
    assert resolve_num_nodes(2, None) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun sets this
    assert resolve_num_nodes("auto", None) == 2
    with pytest.raises(UserError, match="num_nodes"):
        resolve_num_nodes(1, 0)


def test_precision_checks():
    from litgpt_runtime.train.launch import check_precision

    assert check_precision("32") == "32-true"
    with pytest.raises(UserError, match="not supported"):
        check_precision("fp8")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="needs a CUDA GPU"):
            check_precision("16-mixed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's default")
@pytest.mark.parametrize("amx", [True, False])
def test_cpu_default_precision_is_bf16_mixed_only_where_the_cpu_has_amx(monkeypatch, capsys, amx):
    import litgpt_runtime.train.launch as launch

    monkeypatch.setattr(launch, "cpu_has_bf16_matrix_units", lambda: amx)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert launch.check_precision(None) == ("bf16-mixed" if amx else "32-true")
    said = capsys.readouterr().err
    assert ("Training in bf16-mixed" in said and "--precision 32-true" in said) is amx
    assert launch.check_precision("32-true") == "32-true"  # an explicit choice is kept, silently
    monkeypatch.setenv("LOCAL_RANK", "1")
    launch.check_precision(None)  # only the first process of a multi-process run says it
    assert capsys.readouterr().err == ""


def test_amx_detection_reads_the_cpu_flags():
    from litgpt_runtime.train.launch import cpu_has_bf16_matrix_units

    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags here")
    assert cpu_has_bf16_matrix_units() is ("amx_bf16" in flags)
