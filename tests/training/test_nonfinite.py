"""A diverging run stops (or skips the bad batch) instead of saving NaN weights.

Runs ``needle train`` through :func:`needle.cli.main` on a tiny random MNIST-format data
set and a tiny model; ``--lr 1e30`` makes the weights overflow within a few batches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

import needle as ndl
from needle import cli, nn, optim, training


def train(data: Path, out: Path, *options: str) -> int:
    """``needle train`` with a tiny model on the tiny data; the exit status."""
    return cli.main(
        [
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            str(data),
            "--batch-size",
            "30",
            "--hidden-dim",
            "8",
            "--num-blocks",
            "1",
            "--out",
            str(out),
            "--no-progress",
            *options,
        ]
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def only_error_line(stderr: str) -> str:
    """The one line on stderr, which must be needle's error (no traceback, no warning)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("needle train: error: "), lines[0]
    return lines[0]


def test_a_diverging_resumed_run_keeps_the_last_good_checkpoint(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tiny_mnist, out, "--epochs", "1") == 0
    checkpoint = out / training.CHECKPOINT_NAME
    before = {
        name: digest(out / name) for name in (training.CHECKPOINT_NAME, training.METRICS_NAME)
    }
    capsys.readouterr()

    assert train(tiny_mnist, out, "--epochs", "3", "--resume", "--lr", "1e30") == 2
    line = only_error_line(capsys.readouterr().err)
    assert "the training loss is nan at epoch 2" in line
    assert f"{checkpoint} still holds epoch 1" in line
    assert f"needle train --resume --out {out} --lr 1e+29" in line
    assert {name: digest(out / name) for name in before} == before

    # The advice works: a smaller learning rate resumes from epoch 1 and finishes.
    assert train(tiny_mnist, out, "--epochs", "3", "--resume", "--lr", "1e-4") == 0
    state = ndl.load(checkpoint)
    assert state["epoch"] == 3 and state["config"]["optim"]["lr"] == 1e-4
    assert all(np.isfinite(w).all() for w in state["model"].values())


def test_a_run_diverging_in_its_first_epoch_writes_no_checkpoint(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tiny_mnist, out, "--epochs", "2", "--lr", "1e30") == 2
    line = only_error_line(capsys.readouterr().err)
    assert "the training loss is nan at epoch 1, batch 2 of 4" in line
    assert "before any checkpoint was written" in line and "--lr 1e+29" in line
    assert not (out / training.CHECKPOINT_NAME).exists()


def test_skip_batch_still_never_saves_non_finite_weights(tiny_mnist, tmp_path, capsys):
    """At lr 1e30 the batch-norm statistics overflow, which skipping steps cannot undo."""
    out = tmp_path / "run"
    assert train(tiny_mnist, out, "--epochs", "1") == 0
    before = digest(out / training.CHECKPOINT_NAME)
    capsys.readouterr()
    assert (
        train(
            tiny_mnist,
            out,
            "--epochs",
            "2",
            "--resume",
            "--lr",
            "1e30",
            "--on-nonfinite",
            "skip-batch",
        )
        == 2
    )
    line = only_error_line(capsys.readouterr().err)
    assert "is not finite after epoch 2" in line and "still holds epoch 1" in line
    assert digest(out / training.CHECKPOINT_NAME) == before


def test_skip_batch_skips_the_step_of_a_batch_with_a_nan_loss(
    tiny_mnist, tmp_path, capsys, monkeypatch
):
    """The second training batch's loss is made NaN: its step is skipped, the run goes on."""
    forward = nn.SoftmaxLoss.forward
    calls = []

    def nan_on_second_call(self, logits, y):
        calls.append(1)
        if len(calls) == 2:
            logits = logits * float("nan")
        return forward(self, logits, y)

    monkeypatch.setattr(nn.SoftmaxLoss, "forward", nan_on_second_call)
    out = tmp_path / "run"
    assert train(tiny_mnist, out, "--epochs", "1", "--on-nonfinite", "skip-batch") == 0
    printed = capsys.readouterr().out
    assert "epoch 1: skipped 1 of 4 batches whose gradients were not finite" in printed
    state = ndl.load(out / training.CHECKPOINT_NAME)
    assert all(np.isfinite(w).all() for w in state["model"].values())
    assert np.isfinite(state["history"][0]["train_loss"])


def test_skipping_optimizer_steps_exactly_when_gradients_are_finite():
    """Against a plain optimizer fed the same finite gradients (the reference)."""

    def parameters():
        return [nn.Parameter(ndl.Tensor(np.arange(3.0, dtype=np.float32)))]

    guarded_params, plain_params = parameters(), parameters()
    guarded = training._SkipNonFiniteSteps(optim.SGD(guarded_params, lr=0.5))
    plain = optim.SGD(plain_params, lr=0.5)
    for grad in ([1.0, 2.0, 3.0], [np.nan, 0.0, 0.0], [0.0, np.inf, 1.0], [-1.0, 0.5, 2.0]):
        guarded_params[0].grad = ndl.Tensor(np.array(grad, dtype=np.float32))
        guarded.step()
        if np.isfinite(grad).all():
            plain_params[0].grad = ndl.Tensor(np.array(grad, dtype=np.float32))
            plain.step()
    assert guarded.skipped == 2
    np.testing.assert_array_equal(guarded_params[0].numpy(), plain_params[0].numpy())


def test_resuming_with_another_lr_restarts_the_schedule_from_it(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    schedule = ["--scheduler", "step", "--step-size", "1", "--gamma", "0.5"]
    assert train(tiny_mnist, out, "--epochs", "1", "--lr", "0.01", *schedule) == 0
    assert train(tiny_mnist, out, "--epochs", "2", "--resume", "--lr", "0.001") == 0
    state = ndl.load(out / training.CHECKPOINT_NAME)
    assert state["scheduler"]["per_epoch"]["base_lr"] == 0.001
    # After two scheduler steps: the new base rate halved twice.
    assert state["optimizer"]["hyperparameters"]["lr"] == 0.001 * 0.5**2
