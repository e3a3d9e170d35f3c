"""`litgpt pretrain`: from scratch, from an initial checkpoint, resume, two processes, the CLI."""

from __future__ import annotations

import csv
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import clean_env, litgpt_command
from litgpt_devcluster.hf_tiny import SENTENCES, make_hf_model_dir, make_tokenizer_files

TINY_CONFIG = """\
name: tiny-llama
block_size: 64
vocab_size: 320
padded_vocab_size: 320
n_layer: 2
n_embd: 64
n_head: 4
n_query_groups: 2
norm_class_name: RMSNorm
mlp_class_name: LLaMAMLP
intermediate_size: 128
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is far faster (no spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    import random

    root = tmp_path_factory.mktemp("pretrain")
    make_tokenizer_files(root / "tok")
    corpus = root / "corpus"
    (corpus / "sub").mkdir(parents=True)
    rng = random.Random(0)
    for i in range(3):
        where = corpus / "sub" if i == 2 else corpus
        (where / f"doc{i}.txt").write_text(" ".join(rng.choice(SENTENCES) for _ in range(120)))
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    return {"root": root, "tok": root / "tok", "corpus": corpus, "config": root / "tiny.yaml"}


def pretrain(assets, out_dir: Path, **overrides):
    from litgpt_runtime.pretrain import setup
    from litgpt_runtime.train.args import EvalArgs, TrainArgs
    from litgpt_runtime.train.text_data import TextFiles

    train = dict(max_steps=12, global_batch_size=8, micro_batch_size=4, lr_warmup_steps=2, learning_rate=3e-3,
                 log_interval=1, save_interval=None, max_seq_length=32)
    train.update(overrides.pop("train", {}))
    kwargs = dict(model_config=assets["config"], tokenizer_dir=assets["tok"],
                  data=TextFiles(train_data_path=assets["corpus"], cache_dir=assets["root"] / "cache"),
                  out_dir=out_dir, train=TrainArgs(**train), eval=EvalArgs(interval=1000, max_iters=4), seed=3,
                  precision="32-true")  # pinned: the default differs between CPUs with and without AMX
    kwargs.update(overrides)
    setup(**kwargs)
    return out_dir


def logged(out_dir: Path, key: str) -> list[float]:
    """`key` of the training-step rows of metrics.csv (validation rows have no loss)."""
    with open(out_dir / "logs" / "metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key) and row.get("loss")]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from litgpt_runtime.checkpoint import WEIGHTS_FILE, load_state_dict

    return {k: v.clone() for k, v in load_state_dict(folder / WEIGHTS_FILE).items()}


def test_loss_falls_from_scratch_and_final_is_a_usable_checkpoint(assets, tmp_path):
    from litgpt_runtime.checkpoint import is_complete, load_model
    from litgpt_runtime.generate import generate_tokens
    from litgpt_runtime.tokenizer import Tokenizer

    out = pretrain(assets, tmp_path / "run", train=dict(max_steps=30))
    losses = logged(out, "loss")
    assert len(losses) == 30
    assert losses[0] > 5.0 and sum(losses[-3:]) / 3 < losses[0] - 1.5, losses  # ln(320) = 5.77 at the start
    assert all(r > 0 for r in logged(out, "tokens_per_sec"))
    final = out / "final"
    assert is_complete(final) and not (final / "config.json").exists()
    model = load_model(final)
    tokenizer = Tokenizer(final)
    ids = list(generate_tokens(model, tokenizer.encode("The quick"), 5))
    assert len(ids) == 5


def test_same_model_name_trains_from_scratch_even_when_a_checkpoint_exists(assets, tmp_path):
    """The positional name is an architecture: never a silent load of weights."""
    from litgpt_runtime.pretrain import build_model, resolve_config

    config = resolve_config("pythia-14m", None, None)
    assert config.n_layer == 6 and config.n_embd == 128
    a = build_model(config, None, seed=1, dtype=torch.float32).state_dict()
    b = build_model(config, None, seed=1, dtype=torch.float32).state_dict()
    torch.testing.assert_close(a, b)  # seeded: every process starts from the same weights


def test_initial_checkpoint_dir_starts_from_its_weights(assets, tmp_path):
    from litgpt_runtime.checkpoint import mark_complete
    from litgpt_runtime.convert.hf_to_litgpt import convert_hf_checkpoint
    from litgpt_runtime.errors import UserError

    hf = make_hf_model_dir("llama", tmp_path / "hf")
    ckpt = tmp_path / "ckpt"
    convert_hf_checkpoint(hf, ckpt, repo_id="tiny/llama")
    mark_complete(ckpt, repo_id="tiny/llama")
    out = pretrain(assets, tmp_path / "cont", model_config=None, initial_checkpoint_dir=ckpt, tokenizer_dir=None,
                   train=dict(max_steps=1, learning_rate=1e-12, lr_warmup_steps=0))
    start, end = weights(ckpt), weights(out / "final")
    assert start.keys() == end.keys()
    for key in start:
        torch.testing.assert_close(end[key], start[key], atol=1e-6, rtol=0)
    assert (out / "final" / "config.json").is_file()  # same architecture: the HF config stays valid
    with pytest.raises(UserError, match="do not fit"):
        pretrain(assets, tmp_path / "bad", model_config=None, model_name="pythia-14m", initial_checkpoint_dir=ckpt)


def test_resume_continues_at_the_same_step_and_data_position(assets, tmp_path, capsys):
    straight = pretrain(assets, tmp_path / "straight", train=dict(max_steps=6, save_interval=3))
    assert (straight / "step-000003").is_dir()
    resumed = pretrain(assets, tmp_path / "resumed", train=dict(max_steps=6, save_interval=3),
                       resume=straight / "step-000003")
    assert "at step 3" in capsys.readouterr().out
    assert logged(resumed, "step") == [4, 5, 6]
    torch.testing.assert_close(logged(resumed, "loss"), logged(straight, "loss")[3:])
    a, b = weights(straight / "final"), weights(resumed / "final")
    for key in a:
        torch.testing.assert_close(b[key], a[key])


def test_text_files_are_tokenised_once_into_memory_mapped_shards(assets, tmp_path):
    from litgpt_runtime.tokenizer import Tokenizer
    from litgpt_runtime.train.text_data import TextFiles, TokenChunks, read_index

    tokenizer = Tokenizer(assets["tok"])
    data = TextFiles(train_data_path=assets["corpus"], shard_tokens=500)
    train_dir, _ = data.prepare(tokenizer, tmp_path / "cache")
    index = read_index(train_dir)
    assert len(index["shards"]) > 1 and index["dtype"] == "uint16"
    stamp = (train_dir / "index.json").stat().st_mtime_ns
    assert data.prepare(tokenizer, tmp_path / "cache")[0] == train_dir  # cached
    assert (train_dir / "index.json").stat().st_mtime_ns == stamp
    expected = sum(len(tokenizer.encode(p.read_text(), eos=True)) for p in sorted(assets["corpus"].rglob("*.txt")))
    chunks = TokenChunks(train_dir, block=16)
    assert chunks.tokens == expected
    sample = chunks[len(chunks) - 1]
    assert sample["input_ids"].shape == (16,) and torch.equal(sample["input_ids"][1:], sample["targets"][:-1])
    one_file = sorted(assets["corpus"].glob("*.txt"))[0]  # a single file is a corpus too
    single, _ = TextFiles(train_data_path=one_file).prepare(tokenizer, tmp_path / "cache")
    assert TokenChunks(single, 16).tokens == len(tokenizer.encode(one_file.read_text(), eos=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_args(assets, out_dir: Path, *extra: str) -> list[str]:
    return [*litgpt_command(), "pretrain", "--model_config", str(assets["config"]), "--tokenizer_dir",
            str(assets["tok"]), "--data", "TextFiles", "--data.train_data_path", str(assets["corpus"]),
            "--out_dir", str(out_dir), "--train.max_steps", "4", "--train.global_batch_size", "8",
            "--train.micro_batch_size", "2", "--train.max_seq_length", "32", "--train.lr_warmup_steps", "1",
            "--train.save_interval", "2", "--precision", "32-true", *extra]


@pytest.mark.slow
def test_two_processes_train_together_from_the_torch_distributed_environment(assets, tmp_path):
    """As a Kubernetes Indexed Job starts them: one process per 'node', RANK and WORLD_SIZE set."""
    port = str(_free_port())
    out = tmp_path / "ddp"
    procs = []
    for rank in (0, 1):
        env = clean_env(tmp_path / "hf", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2",
                        RANK=str(rank), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(_cli_args(assets, out), env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:  # a hung rendezvous must not outlive the test
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "on each of 2 process(es)" in outputs[0]
    assert (out / "final" / ".litgpt_complete.json").is_file() and (out / "step-000004").is_dir()
    assert logged(out, "step") == [1, 2, 3, 4]
    # 8 sequences per step over both processes: 4 x 8 x 32 tokens
    assert logged(out, "tokens")[-1] == 4 * 8 * 32


@pytest.mark.slow
def test_cli_end_to_end_then_generate_and_user_errors(assets, tmp_path):
    env = clean_env(tmp_path / "hf", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = tmp_path / "cli"
    run = subprocess.run(_cli_args(assets, out), env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tok/s" in run.stdout and "Throughput:" in run.stdout
    gen = subprocess.run([*litgpt_command(), "generate", str(out / "final"), "--prompt", "Hello", "--max_new_tokens",
                          "4", "--device", "cpu", "--raw", "true"], env=env, capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr
    # resume: auto picks up step-000004 and has nothing left to do at max_steps 4
    again = subprocess.run(_cli_args(assets, out, "--resume", "auto"), env=env, capture_output=True, text=True,
                           timeout=400)
    assert again.returncode == 0 and "at step 4" in again.stdout, again.stdout + again.stderr

    missing = subprocess.run([*litgpt_command(), "pretrain", "pythia-14m", "--tokenizer_dir", str(assets["tok"]),
                              "--out_dir", str(tmp_path / "x")], env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "--data TextFiles" in missing.stderr and "Traceback" not in missing.stderr
    scratch = subprocess.run([*litgpt_command(), "pretrain", "--tokenizer_dir", str(assets["tok"]), "--data",
                              "TextFiles", "--data.train_data_path", str(assets["corpus"])], env=env,
                             capture_output=True, text=True, timeout=120)
    assert scratch.returncode != 0 and "Say which model" in scratch.stderr and "Traceback" not in scratch.stderr


def test_pretrain_from_pre_tokenised_shards(assets, tmp_path):
    """--data TokenShards: a shard folder written elsewhere (write_token_shards) trains as is."""
    from litgpt_runtime.checkpoint import is_complete
    from litgpt_runtime.tokenizer import Tokenizer
    from litgpt_runtime.train.text_data import TokenShards, write_token_shards

    tokenizer = Tokenizer(assets["tok"])
    documents = (tokenizer.encode(s * 20, eos=True) for s in SENTENCES)
    shards = write_token_shards(documents, tmp_path / "shards", tokenizer.vocab_size, shard_tokens=700)
    out = pretrain(assets, tmp_path / "run", data=TokenShards(path=shards, val_split_fraction=0.1),
                   train=dict(max_steps=2))
    assert is_complete(out / "final") and logged(out, "step") == [1, 2]


def test_two_writers_of_one_token_cache_both_succeed(tmp_path):
    """The pods of a multi-node PretrainJob each tokenise into the same shared volume, and in
    containers every one of them is pid 1. Two writers in one process (one pid, as two pods)
    interleaved shard by shard must both end with the complete folder, neither deleting the
    other's half-written shards."""
    import threading

    from litgpt_runtime.train.text_data import read_index, write_token_shards

    out = tmp_path / "token_cache" / "key"
    started = threading.Barrier(2)
    errors: list[BaseException] = []

    def documents():
        started.wait(timeout=30)  # both writers hold their temporary folders before any shard
        for i in range(6):
            yield list(range(i * 10, i * 10 + 10))

    def write() -> None:
        try:
            write_token_shards(documents(), out, vocab_size=100, shard_tokens=10)
        except BaseException as error:  # reported below with the other writer's outcome
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    index = read_index(out)
    assert [s["tokens"] for s in index["shards"]] == [10] * 6
    assert sorted(p.name for p in out.parent.iterdir()) == ["key"], "a temporary folder was left behind"
