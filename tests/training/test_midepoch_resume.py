"""Checkpoints in mid-epoch (``--checkpoint-every``): a run killed at a random step and
resumed finishes bit-identical to an uninterrupted one.

Each killed run is a subprocess that SIGKILLs itself right after training step N (a hook
installed by the script below, not by needle); N is drawn at random, and printed on
failure, so a failing case can be replayed. Data and models are tiny: seconds per run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import assert_same_state, checkout_env, run_main
from helpers.datasets import write_ptb_folder
from helpers.mpi import mpiexec, needs_mpiexec

import needle as ndl
from needle import tasks, training
from needle.options import CheckpointInterval

#: Runs ``needle train ARGS`` and SIGKILLs the process after training step ``N`` (on rank 0
#: in a data-parallel job: the launcher then ends every rank).
KILL_AFTER_STEP = textwrap.dedent("""
    import os, signal, sys
    from needle import cli, distributed, training
    kill_at, steps = int(sys.argv[1]), 0
    after_step = training._Checkpoints.after_step
    def counting(self, position):
        global steps
        after_step(self, position)
        steps += 1
        if steps == kill_at and (not distributed.is_initialized() or distributed.rank() == 0):
            os.kill(os.getpid(), signal.SIGKILL)
    training._Checkpoints.after_step = counting
    sys.exit(cli.main(sys.argv[2:]))
""")

MNIST_MLP = ["--batch-size", "10", "--hidden-dim", "8", "--num-blocks", "1", "--augment"]
MNIST_CNN = ["--model", "cnn", "--width", "4", "--batch-size", "20"]


def mnist(folder: Path) -> list[str]:
    return ["--dataset", "mnist", "--data-dir", str(folder)]


def kill_after_step(step: int, *args) -> None:
    """Run ``needle train ARGS`` in a subprocess that kills itself after ``step`` steps."""
    result = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_STEP, str(step), "train", *map(str, args)],
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr


def saved_position(out: Path) -> dict | None:
    return ndl.load(out / training.CHECKPOINT_NAME)["position"]


def check_kill_and_resume(tmp_path: Path, options: list[str], steps: int, every: str) -> None:
    """Kill a run after a random step of ``steps`` (all but the epochs' last ones can be
    checkpointed), resume it, and compare it with an uninterrupted run."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_main("train", *options, "--out", straight, "--quiet") == 0
    step = int(np.random.default_rng().integers(2, steps))
    kill_after_step(step, *options, "--out", killed, "--checkpoint-every", every, "--quiet")
    position = saved_position(killed)
    assert position is None or 0 < position["done"], f"killed after step {step}"
    assert run_main("train", "--resume", "--out", killed, "--quiet") == 0, f"step {step}"
    assert_same_state(straight, killed)


def test_mlp_killed_at_a_random_step_resumes_bit_identically(tiny_mnist, tmp_path):
    # 12 batches per epoch, dropout and augmentation drawing from NumPy's generator.
    check_kill_and_resume(tmp_path, [*mnist(tiny_mnist), *MNIST_MLP, "--epochs", "2"], 22, "1")


def test_cnn_killed_at_a_random_step_resumes_bit_identically(tiny_mnist, tmp_path):
    # BatchNorm's running statistics, a cosine schedule, checkpoints by time.
    options = [
        *mnist(tiny_mnist),
        *MNIST_CNN,
        "--epochs",
        "2",
        "--scheduler",
        "cosine",
        "--augment",
    ]
    check_kill_and_resume(tmp_path, options, 10, "0.001s")


@pytest.mark.parametrize(
    "options, checkpoints",
    [
        (
            [
                "--optimizer",
                "adamw",
                "--warmup-steps",
                "4",
                "--grad-accum",
                "2",
                "--scheduler",
                "cosine",
                "--no-decay-norm-bias",
                "--epochs",
                "2",
            ],
            2 * 5,
        ),
        (
            [
                "--optimizer",
                "sgd",
                "--momentum",
                "0.9",
                "--lr",
                "0.05",
                "--grad-accum",
                "3",
                "--scheduler",
                "onecycle",
                "--epochs",
                "2",
            ],
            2 * 3,
        ),
        (
            [
                "--optimizer",
                "adamw",
                "--warmup-steps",
                "5",
                "--scheduler",
                "plateau",
                "--patience",
                "0",
                "--gamma",
                "0.5",
                "--epochs",
                "3",
            ],
            3 * 11,
        ),
    ],
    ids=["adamw-warmup-cosine-accumulation", "sgd-onecycle-accumulation", "warmup-plateau"],
)
def test_optimizer_schedule_and_accumulation_state_resume_bit_identically(
    options, checkpoints, tiny_mnist, tmp_path
):
    # 12 batches an epoch; a checkpoint after every optimizer step but an epoch's last (never
    # inside an accumulation), holding the schedule's step count and the optimizer's moments.
    check_kill_and_resume(tmp_path, [*mnist(tiny_mnist), *MNIST_MLP, *options], checkpoints, "1")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_ptb_folder(tmp_path_factory.mktemp("ptb") / "data")


def test_language_model_killed_at_a_random_step_resumes_bit_identically(corpus, tmp_path):
    # The LSTM's hidden state runs from chunk to chunk: the checkpoint carries it.
    options = [
        "--model",
        "lstm-lm",
        "--dataset",
        "ptb",
        "--data-dir",
        corpus,
        "--embedding-dim",
        "8",
        "--hidden-dim",
        "8",
        "--batch-size",
        "4",
        "--seq-len",
        "6",
        "--drop-prob",
        "0.1",
        "--epochs",
        "2",
    ]
    task = tasks.create(
        training.TrainConfig.for_task(
            model="lstm-lm", dataset="ptb", data_dir=str(corpus), batch_size=4, seq_len=6
        )
    )
    chunks = len(task.loader(task.dataset(train=True), True))
    check_kill_and_resume(tmp_path, options, 2 * chunks - 2, "2")


def test_a_mid_epoch_checkpoint_holds_the_position_and_says_so_on_resume(
    tiny_mnist, tmp_path, capsys
):
    out = tmp_path / "run"
    kill_after_step(
        5,
        *mnist(tiny_mnist),
        *MNIST_MLP,
        "--epochs",
        "1",
        "--out",
        out,
        "--checkpoint-every",
        "2",
        "--quiet",
    )
    state = ndl.load(out / training.CHECKPOINT_NAME)
    position = state["position"]
    assert state["epoch"] == 0 and state["history"] == []
    assert (position["epoch"], position["done"]) == (1, 4)
    assert sorted(position["order"].tolist()) == list(range(120))  # the epoch's shuffle
    assert position["samples"] == 40 and 0 < position["loss_sum"]
    assert run_main("train", "--resume", "--out", out, "--no-progress") == 0
    assert "resuming at epoch 1, batch 4 of 12" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize(
    "text, interval",
    [
        ("30s", CheckpointInterval(seconds=30.0)),
        ("5m", CheckpointInterval(seconds=300.0)),
        ("1.5h", CheckpointInterval(seconds=5400.0)),
        ("200", CheckpointInterval(steps=200)),
        ("epoch", CheckpointInterval()),
        ("0", CheckpointInterval()),
    ],
)
def test_checkpoint_intervals(text, interval):
    assert CheckpointInterval.parse(text) == interval


@pytest.mark.parametrize("text", ["", "-5m", "0s", "5x", "m", "nan", "infs", "1e400s", "5 m s"])
def test_bad_checkpoint_intervals_are_usage_errors(text, tmp_path, capsys):
    assert run_main("train", f"--checkpoint-every={text}", "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --checkpoint-every" in err and "30s" in err


def test_the_default_saves_every_five_minutes():
    assert training.TrainConfig().checkpoint_interval == CheckpointInterval(seconds=300.0)


def test_a_run_diverging_mid_epoch_keeps_the_last_finite_checkpoint(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    status = run_main(
        "train",
        *mnist(tiny_mnist),
        *MNIST_MLP,
        "--epochs",
        "1",
        "--lr",
        "1e30",
        "--checkpoint-every",
        "1",
        "--out",
        out,
        "--no-progress",
    )
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "diverged" in err
    state = ndl.load(out / training.CHECKPOINT_NAME)
    for name, array in state["model"].items():
        assert np.isfinite(array).all(), name
    assert f"still holds epoch 1, batch {state['position']['done']} of 12" in err


@needs_mpiexec
def test_two_ranks_killed_at_a_random_step_resume_bit_identically(tiny_mnist, tmp_path):
    options = ["train", *mnist(tiny_mnist), *MNIST_MLP, "--epochs", "2", "--quiet"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    job = mpiexec(2, "-m", "needle", *options, "--out", straight)
    assert job.returncode == 0, job.stderr
    step = int(np.random.default_rng().integers(2, 10))  # 6 steps per epoch and rank
    mpiexec(
        2, "-c", KILL_AFTER_STEP, step, *options, "--out", killed, "--checkpoint-every", "0.001s"
    )
    state = ndl.load(killed / training.CHECKPOINT_NAME)
    assert state["world_size"] == 2 and len(state["positions"]) == 2, f"step {step}"
    job = mpiexec(2, "-m", "needle", "train", "--resume", "--out", killed, "--quiet")
    assert job.returncode == 0, (step, job.stderr)
    assert_same_state(straight, killed)
    resumed, whole = (ndl.load(p / training.CHECKPOINT_NAME) for p in (killed, straight))
    for a, b in zip(resumed["rng_states"], whole["rng_states"]):
        np.testing.assert_array_equal(a[1], b[1])
