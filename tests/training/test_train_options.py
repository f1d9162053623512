"""needle train's options: TrainConfig's groups, the checkpoints of the flat layout, and
--optimizer adamw, --no-decay-norm-bias, --grad-accum, --warmup-steps, --scheduler onecycle
and plateau, each checked against a reference computed without them.

Runs use a tiny model on ``tiny_mnist`` (120 training images: 6 batches of 20 an epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_same_state, run_main

import needle as ndl
from needle import cli, nn, optim, training
from needle.apps.mlp_resnet import MLPResNet
from needle.data import MNIST
from needle.options import GROUPS, OptimOptions, TrainConfig, option_name

TINY = ["--dataset", "mnist", "--batch-size", "20", "--hidden-dim", "8", "--num-blocks", "1"]


def train(data: Path, out: Path, *options: str) -> int:
    """``needle train`` of the tiny model on ``data``, quiet; the exit status."""
    return run_main("train", *TINY, "--data-dir", data, "--out", out, "--quiet", *options)


def checkpoint(out: Path) -> dict:
    return ndl.load(out / training.CHECKPOINT_NAME)


def tiny_config(data: Path, out: Path, **options) -> TrainConfig:
    return TrainConfig(
        dataset="mnist",
        data_dir=str(data),
        batch_size=20,
        hidden_dim=8,
        num_blocks=1,
        out=str(out),
        **options,
    )


def interrupted_after_epoch_one(config: TrainConfig) -> dict:
    """Train ``config`` (of 2 epochs or more), stopped after epoch 1; its checkpoint."""

    def stop(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(config, progress=False, log=stop)
    return checkpoint(Path(config.run.out))


# ----- the groups ---------------------------------------------------------------------------


def test_options_by_name_and_by_group_make_the_same_config():
    by_name = TrainConfig(model="cnn", lr=0.01, epochs=3, seed=7)
    by_group = TrainConfig(
        network={"model": "cnn"}, optim=OptimOptions(lr=0.01, epochs=3), run={"seed": 7}
    )
    assert by_name == by_group
    assert (by_name.network.model, by_name.optim.lr, by_name.run.seed) == ("cnn", 0.01, 7)
    assert (by_name.model, by_name.lr, by_name.seed, by_name.dataset) == (
        "cnn",
        0.01,
        7,
        "fashion-mnist",
    )
    assert by_name.replace(epochs=4).epochs == 4 and by_name.epochs == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_name.lr = 0.1


def test_every_option_is_in_one_group_and_is_a_flag_of_needle_train():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {flag for action in sub.choices["train"]._actions for flag in action.option_strings}
    names = [f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(TrainConfig().options())
    assert {option_name(name) for name in names} <= flags


def test_the_grouped_dict_and_the_flat_one_give_the_config_back():
    config = TrainConfig.for_task(model="lstm-lm", grad_accum=2, clip_grad=0.5)
    assert set(config.to_dict()) == {"network", "data", "optim", "run"}
    assert TrainConfig.from_dict(config.to_dict()) == config
    flat = {k: np.int64(v) if type(v) is int else v for k, v in config.options().items()}
    assert TrainConfig.from_dict(flat) == config  # NumPy scalars, as a checkpoint holds them


def test_unknown_options_are_type_errors_that_name_them():
    with pytest.raises(TypeError, match=r"unknown options \['no_such_option'\]"):
        TrainConfig(no_such_option=1)
    with pytest.raises(TypeError, match=r"unknown options \['model'\]"):
        TrainConfig(optim={"model": "cnn"})  # an option of another group


@pytest.mark.parametrize(
    "options, message",
    [
        (["--grad-accum", "0"], "argument --grad-accum: '0' is not a positive integer"),
        (["--warmup-steps", "-1"], "argument --warmup-steps: '-1' is not a non-negative integer"),
        (["--patience", "1.5"], "argument --patience: '1.5' is not a non-negative integer"),
        (["--optimizer", "lamb"], "argument --optimizer: invalid choice: 'lamb'"),
        (
            ["--scheduler", "onecycle", "--warmup-steps", "5"],
            "--warmup-steps 5 with --scheduler onecycle: the one-cycle schedule warms up by itself",
        ),
        (
            ["--scheduler", "plateau", "--gamma", "1"],
            (
                "--gamma 1.0 with --scheduler plateau never lowers the learning rate; "
                "use a --gamma below 1"
            ),
        ),
        (
            ["--warmup-steps", "12", "--epochs", "2"],
            (
                "--warmup-steps 12 is not shorter than the run: 12 optimizer steps (--epochs 2 × 6 "
                "per epoch)"
            ),
        ),
    ],
)
def test_bad_options_are_one_line_naming_the_flag_and_the_value(
    options, message, tiny_mnist, tmp_path, capsys
):
    assert train(tiny_mnist, tmp_path, *options) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and message in err, err
    assert not (tmp_path / training.CHECKPOINT_NAME).exists()


# ----- checkpoints of the flat layout ----------------------------------------------------------

#: The options a checkpoint of the flat layout (format v1) holds, by name.
V1_OPTIONS = [
    "model",
    "dataset",
    "data_dir",
    "download",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "hidden_dim",
    "num_blocks",
    "drop_prob",
    "width",
    "seq_len",
    "embedding_dim",
    "num_layers",
    "clip_grad",
    "optimizer",
    "momentum",
    "scheduler",
    "step_size",
    "gamma",
    "augment",
    "crop_padding",
    "seed",
    "limit_train",
    "limit_test",
    "out",
    "on_nonfinite",
    "checkpoint_every",
]


def as_v1(out: Path) -> None:
    """Rewrite the checkpoint in ``out`` in the layout of format v1: one flat dict of options
    (without those added since), and the per-epoch schedule's state as ``scheduler``."""
    state = checkpoint(out)
    flat = TrainConfig.from_dict(state["config"]).options()
    state.update(
        format=training.CHECKPOINT_FORMAT_V1,
        scheduler=state["scheduler"]["per_epoch"],
        config={name: flat[name] for name in V1_OPTIONS},
    )
    ndl.save(state, out / training.CHECKPOINT_NAME)


def test_a_checkpoint_of_the_flat_layout_is_evaluated_and_resumed(tiny_mnist, tmp_path, capsys):
    options = ["--scheduler", "step", "--step-size", "1", "--augment"]
    straight, old = tmp_path / "straight", tmp_path / "old"
    assert train(tiny_mnist, straight, *options, "--epochs", "2") == 0
    assert train(tiny_mnist, old, *options, "--epochs", "1") == 0
    assert checkpoint(old)["config"]["optim"]["scheduler"] == "step"
    as_v1(old)
    assert checkpoint(old)["config"]["scheduler"] == "step"
    capsys.readouterr()
    assert run_main("eval", "--checkpoint", old / training.CHECKPOINT_NAME) == 0
    with open(old / training.METRICS_NAME) as f:
        last = f.readlines()[-1].split(",")
    assert f"test loss {float(last[3]):.4f} err {float(last[4]):.4f}" in capsys.readouterr().out
    assert run_main("train", "--resume", "--out", old, "--epochs", "2", "--quiet") == 0
    assert checkpoint(old)["format"] == training.CHECKPOINT_FORMAT
    assert_same_state(straight, old)


# ----- the optimisation options ------------------------------------------------------------


def test_two_micro_batches_per_step_equal_batches_twice_as_large(tiny_mnist, tmp_path):
    # No BatchNorm and no dropout (0 blocks): a batch's gradient is its samples' mean, and
    # both runs draw the same shuffle, so batches 2k, 2k+1 of 10 are batch k of 20.
    options = ["--num-blocks", "0", "--optimizer", "adamw", "--lr", "0.01", "--epochs", "2"]
    accumulated, large = tmp_path / "accumulated", tmp_path / "large"
    assert train(tiny_mnist, accumulated, *options, "--batch-size", "10", "--grad-accum", "2") == 0
    assert train(tiny_mnist, large, *options, "--batch-size", "20") == 0
    a, b = checkpoint(accumulated), checkpoint(large)
    for key in b["model"]:
        np.testing.assert_allclose(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    assert a["optimizer"]["t"] == b["optimizer"]["t"] == 12  # 6 steps an epoch
    for ma, mb in zip(a["history"], b["history"]):  # metrics count every micro-batch
        assert ma["train_loss"] == pytest.approx(mb["train_loss"], rel=1e-5)
        assert ma["train_err"] == mb["train_err"]


def test_the_header_names_the_options_in_effect(tiny_mnist, tmp_path, capsys):
    assert (
        run_main(
            "train",
            *TINY,
            "--data-dir",
            tiny_mnist,
            "--out",
            tmp_path,
            "--epochs",
            "2",
            "--optimizer",
            "adamw",
            "--warmup-steps",
            "3",
            "--scheduler",
            "cosine",
            "--grad-accum",
            "3",
            "--no-decay-norm-bias",
            "--no-progress",
        )
        == 0
    )
    header = capsys.readouterr().out.splitlines()[0]
    assert header.endswith(
        "adamw lr 0.001 (warmup 3 steps, cosine schedule), batch 20 × 3 "
        "micro-batches per step, weight decay 0.001 (not on biases and "
        f"norms), 2 epochs -> {tmp_path}"
    )


#: The weight matrices of MLPResNet(784, 8, 1): what --no-decay-norm-bias still decays.
WEIGHT_MATRICES = {
    "modules.0.weight",
    "modules.2.modules.0.fn.modules.0.weight",
    "modules.2.modules.0.fn.modules.4.weight",
    "modules.3.weight",
}


def test_no_decay_norm_bias_decays_only_the_weight_matrices():
    config = TrainConfig(optimizer="sgd", lr=0.1, weight_decay=0.5, no_decay_norm_bias=True)
    np.random.seed(0)
    model = MLPResNet(784, 8, 1)
    before = {name: p.numpy().copy() for name, p in model.named_parameters()}
    opt = training.build_optimizer(model, config)
    for p in model.parameters():
        p.grad = ndl.Tensor(np.zeros(p.shape, np.float32), requires_grad=False)
    opt.step()  # zero gradients: only the decay moves a weight, by lr · 0.5 = 5%
    for name, p in model.named_parameters():
        factor = np.float32(0.95) if name in WEIGHT_MATRICES else np.float32(1)
        np.testing.assert_allclose(p.numpy(), before[name] * factor, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    "optimizer, make",
    [
        ("adam", optim.Adam),
        ("adamw", optim.AdamW),
        ("sgd", lambda groups, **kw: optim.SGD(groups, momentum=0.0, **kw)),
    ],
)
def test_no_decay_norm_bias_step_equals_a_hand_built_optimizer(
    optimizer, make, tiny_mnist, tmp_path
):
    # One step on one batch of all 20 samples, no dropout.
    assert (
        train(
            tiny_mnist,
            tmp_path,
            "--limit-train",
            "20",
            "--epochs",
            "1",
            "--drop-prob",
            "0",
            "--optimizer",
            optimizer,
            "--lr",
            "0.01",
            "--weight-decay",
            "0.5",
            "--no-decay-norm-bias",
        )
        == 0
    )
    np.random.seed(4)  # --seed: the weights, then the loader's shuffle
    model = MLPResNet(784, 8, 1, drop_prob=0.0)
    order = np.random.permutation(20)
    X, y = MNIST(root=tiny_mnist, train=True).get_batch(np.arange(120)[order])
    named = dict(model.named_parameters())
    opt = make(
        [
            {"params": [p for n, p in named.items() if n in WEIGHT_MATRICES]},
            {
                "params": [p for n, p in named.items() if n not in WEIGHT_MATRICES],
                "weight_decay": 0.0,
            },
        ],
        lr=0.01,
        weight_decay=0.5,
    )
    model.train()
    nn.SoftmaxLoss()(model(ndl.Tensor(X.reshape(20, 784))), ndl.Tensor(y)).backward()
    opt.step()
    saved = checkpoint(tmp_path)["model"]
    for name, p in named.items():
        np.testing.assert_allclose(saved[name], p.numpy(), rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("accumulate, steps", [(1, 6), (2, 3)])
def test_the_warmup_counts_optimizer_steps(accumulate, steps, tiny_mnist, tmp_path):
    config = tiny_config(
        tiny_mnist, tmp_path, epochs=4, lr=0.01, warmup_steps=10, grad_accum=accumulate
    )
    state = interrupted_after_epoch_one(config)
    assert state["optimizer"]["hyperparameters"]["lr"] == pytest.approx(0.01 * steps / 10)


def _rates(config: TrainConfig, steps_per_epoch: int, test_losses: list[float]) -> list[float]:
    """The learning rate of every optimizer step of a run of ``config``, its schedule stepped
    as ``needle train`` steps it (``test_losses``: each epoch's, for a plateau schedule)."""
    opt = optim.SGD([nn.Parameter(ndl.init.zeros(1))], lr=config.optim.lr)
    schedule = training.build_schedule(opt, config, steps_per_epoch)
    rates = []
    for epoch in range(config.optim.epochs):
        per_step = schedule.for_batches()
        for _ in range(steps_per_epoch):
            rates.append(opt.lr)
            if per_step is not None:
                per_step.step()
        schedule.after_epoch(test_losses[epoch] if test_losses else 0.0)
    return rates


@pytest.mark.parametrize(
    "scheduler, expected",
    [
        ("none", lambda k: 1.0 * min(k / 4, 1)),
        ("cosine", lambda k: k / 4 if k < 4 else 0.5 * (1 + math.cos(math.pi * (k - 4) / 8))),
        ("step", lambda k: k / 4 if k < 4 else 0.5 ** ((k - 4) // 6)),
    ],
)
def test_a_warmup_then_the_schedule_in_optimizer_steps(scheduler, expected):
    config = TrainConfig(
        lr=1.0, epochs=2, warmup_steps=4, scheduler=scheduler, step_size=1, gamma=0.5
    )
    assert _rates(config, 6, []) == pytest.approx([expected(k) for k in range(12)])


def test_plateau_after_a_warmup_watches_only_the_epochs_after_it():
    config = TrainConfig(
        lr=1.0, epochs=4, warmup_steps=8, scheduler="plateau", patience=0, gamma=0.5
    )
    # Epoch 1 ends inside the warmup (its worse loss is not counted); epoch 2 sets the best;
    # epochs 3 and 4 do not improve on it: the rate halves after each.
    rates = _rates(config, 6, [1.0, 2.0, 2.0, 3.0])
    assert rates == pytest.approx([k / 8 for k in range(8)] + [1.0] * 10 + [0.5] * 6)


def test_onecycle_steps_once_per_optimizer_step(tiny_mnist, tmp_path):
    assert (
        train(
            tiny_mnist,
            tmp_path,
            "--epochs",
            "2",
            "--scheduler",
            "onecycle",
            "--grad-accum",
            "2",
            "--lr",
            "0.01",
        )
        == 0
    )
    state = checkpoint(tmp_path)
    assert state["scheduler"]["per_step"]["last_epoch"] == 6 == state["optimizer"]["t"]
    reference = optim.OneCycleLR(
        optim.SGD([nn.Parameter(ndl.init.zeros(1))], lr=1.0), max_lr=0.01, total_steps=6
    )
    for _ in range(6):
        reference.step()
    assert state["optimizer"]["hyperparameters"]["lr"] == reference.get_last_lr()


def test_plateau_lowers_the_rate_after_epochs_without_a_lower_test_loss(tiny_mnist, tmp_path):
    assert (
        train(
            tiny_mnist,
            tmp_path,
            "--epochs",
            "5",
            "--optimizer",
            "sgd",
            "--lr",
            "0.5",
            "--scheduler",
            "plateau",
            "--patience",
            "0",
            "--gamma",
            "0.5",
        )
        == 0
    )
    state = checkpoint(tmp_path)
    lr, best, reductions = 0.5, math.inf, 0
    for metrics in state["history"]:  # ReduceLROnPlateau's rule, on the saved test losses
        if metrics["test_loss"] < best * (1 - 1e-4):
            best = metrics["test_loss"]
        else:
            lr, reductions = lr * 0.5, reductions + 1
    assert reductions > 0  # the random labels make the test loss rise
    assert state["optimizer"]["hyperparameters"]["lr"] == pytest.approx(lr)


def test_a_changed_run_length_is_refused_on_resume_for_onecycle(tiny_mnist, tmp_path, capsys):
    assert train(tiny_mnist, tmp_path, "--epochs", "1", "--scheduler", "onecycle") == 0
    capsys.readouterr()
    assert run_main("train", "--resume", "--out", tmp_path, "--epochs", "2") == 2
    assert (
        "--epochs 1 -> 2: a onecycle schedule rises and falls over exactly the run's --epochs"
    ) in capsys.readouterr().err


def test_a_new_lr_on_resume_keeps_a_plateau_schedules_decays():
    config = TrainConfig(lr=1.0, epochs=3, scheduler="plateau", patience=0, gamma=0.5)
    opt = optim.SGD([nn.Parameter(ndl.init.zeros(1))], lr=1.0)
    schedule = training.build_schedule(opt, config, 4)
    for loss in (1.0, 2.0):  # the second epoch does not improve: the rate halves
        schedule.after_epoch(loss)
    schedule.restart_at(0.1, 1.0, opt)
    assert opt.lr == pytest.approx(0.05)
    constant = optim.SGD([nn.Parameter(ndl.init.zeros(1))], lr=1.0)
    training.build_schedule(constant, TrainConfig(lr=1.0), 4).restart_at(0.1, 1.0, constant)
    assert constant.lr == 0.1
