"""The command line never shows a traceback for a user's mistake: every bad option value
and every unusable input (invalid or mismatched checkpoint, undecodable corpus) exits
with status 2 and one line on stderr naming the option or file.

The fuzz takes every option from the parser itself, so a new option is fuzzed too. Runs
go through :func:`needle.cli.main` in-process with the epoch loop cut to one training
batch (an accepted ``--epochs 10**20`` must not train for ever); data and models are tiny.
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from helpers.datasets import write_ptb_folder

import needle as ndl
from needle import cli, training

HUGE = "99999999999999999999"
VALUES = ["", "-1", "0", "1.5", HUGE, "1e400", "nan", "inf", "-inf", "abc"]


def value_options(command: str) -> list[str]:
    """The options of ``needle COMMAND`` that take a value, from the parser."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [
        action.option_strings[-1]
        for action in sub.choices[command]._actions
        if action.option_strings
        and action.nargs is None
        and action.type is not None
        or action.option_strings
        and action.choices is not None
    ]


@pytest.fixture
def one_batch(monkeypatch, tmp_path):
    """Cut training to one batch of the first epoch; run in a scratch folder."""

    def train_one_batch(run, *rest):
        run.task.run_epoch(itertools.islice(run.train_loader, 1), run.model, run.opt)

    monkeypatch.setattr(training, "_train_epochs", train_one_batch)
    monkeypatch.chdir(tmp_path)


def assert_one_line_error(status: int, err: str, command: str, *names: str) -> None:
    """Exit status 2 and exactly one line naming one of ``names``; no traceback."""
    assert status == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(" ".join(["needle", command]).rstrip()), err
    assert ": error" in err.split("\n")[0], err
    assert any(name in err for name in names), err


def run(*args) -> int:
    try:
        return cli.main([str(a) for a in args])
    except SystemExit as e:
        return e.code


def check_fuzz_case(command: str, base: list, option: str, value: str, capsys) -> None:
    status = run(command, *base, f"{option}={value}")
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    if status != 0:
        assert_one_line_error(status, err, command, option, value or "''")


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("option", value_options("train"))
def test_every_train_option_with_bad_values(option, value, tiny_mnist, one_batch, capsys):
    base = [
        "--dataset",
        "mnist",
        "--data-dir",
        tiny_mnist,
        "--batch-size",
        "30",
        "--hidden-dim",
        "8",
        "--num-blocks",
        "1",
        "--out",
        "run",
        "--quiet",
    ]
    check_fuzz_case("train", base, option, value, capsys)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_ptb_folder(tmp_path_factory.mktemp("ptb") / "data")


LM_OPTIONS = [
    "--embedding-dim",
    "--hidden-dim",
    "--num-layers",
    "--seq-len",
    "--drop-prob",
    "--batch-size",
    "--limit-train",
    "--limit-test",
    "--clip-grad",
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("option", LM_OPTIONS)
@pytest.mark.parametrize("model", ["lstm-lm", "transformer-lm"])
def test_language_model_sizes_with_bad_values(model, option, value, corpus, one_batch, capsys):
    base = [
        "--model",
        model,
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
        "--out",
        "run",
        "--quiet",
    ]
    check_fuzz_case("train", base, option, value, capsys)


@pytest.mark.parametrize("value", VALUES + ["1", "27", "28", "1048576"])
@pytest.mark.parametrize("option", ["--width", "--crop-padding"])
def test_cnn_sizes_with_bad_values(option, value, tiny_mnist, one_batch, capsys):
    base = [
        "--model",
        "cnn",
        "--dataset",
        "mnist",
        "--data-dir",
        tiny_mnist,
        "--width",
        "2",
        "--batch-size",
        "30",
        "--augment",
        "--out",
        "run",
        "--quiet",
    ]
    check_fuzz_case("train", base, option, value, capsys)


@pytest.fixture(scope="module")
def image_checkpoint(tiny_mnist, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("image") / "run"
    assert (
        run(
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            tiny_mnist,
            "--batch-size",
            30,
            "--hidden-dim",
            8,
            "--num-blocks",
            1,
            "--epochs",
            1,
            "--out",
            out,
            "--quiet",
        )
        == 0
    )
    return out / training.CHECKPOINT_NAME


@pytest.fixture(scope="module")
def lm_checkpoint(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm") / "run"
    assert (
        run(
            "train",
            "--model",
            "lstm-lm",
            "--dataset",
            "ptb",
            "--data-dir",
            corpus,
            "--embedding-dim",
            8,
            "--hidden-dim",
            8,
            "--batch-size",
            4,
            "--seq-len",
            6,
            "--epochs",
            1,
            "--out",
            out,
            "--quiet",
        )
        == 0
    )
    return out / training.CHECKPOINT_NAME


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("option", value_options("eval"))
def test_every_eval_option_with_bad_values(
    option, value, image_checkpoint, tiny_mnist, monkeypatch, tmp_path, capsys
):
    monkeypatch.chdir(tmp_path)
    base = ["--checkpoint", image_checkpoint, "--data-dir", tiny_mnist]
    check_fuzz_case("eval", base, option, value, capsys)


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("option", value_options("generate"))
def test_every_generate_option_with_bad_values(
    option, value, lm_checkpoint, monkeypatch, tmp_path, capsys
):
    if (option, value) == ("--length", HUGE):
        pytest.skip("a valid length: it would generate for ever")
    monkeypatch.chdir(tmp_path)
    check_fuzz_case(
        "generate", ["--checkpoint", lm_checkpoint, "--length", "3"], option, value, capsys
    )


def test_usage_errors_are_one_line(capsys):
    for args in (["train", "--epochs"], ["train", "--no-such-option"], ["frobnicate"], []):
        status = run(*args)
        assert_one_line_error(status, capsys.readouterr().err, "", "error")


# ----- checkpoints whose saved options or weights are unusable ------------------------------


def tampered(source: Path, folder: Path, change) -> Path:
    """A copy of the checkpoint ``source`` in ``folder``, changed by ``change(state)``."""
    state = ndl.load(source)
    change(state)
    folder.mkdir()
    ndl.save(state, folder / training.CHECKPOINT_NAME)
    return folder / training.CHECKPOINT_NAME


def set_config(**values):
    return lambda state: state["config"].update(values)


@pytest.mark.parametrize(
    "values, named",
    [
        ({"lr": math.nan}, "--lr nan"),
        ({"hidden_dim": -3}, "--hidden-dim -3"),
        ({"hidden_dim": 1}, "--hidden-dim 1"),
        ({"seed": 2**40}, "--seed"),
        ({"batch_size": "many"}, "--batch-size 'many'"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_eval_and_resume_refuse_invalid_saved_options(
    values, named, image_checkpoint, tiny_mnist, tmp_path, capsys
):
    path = tampered(image_checkpoint, tmp_path / "run", set_config(**values))
    for args in (
        ["eval", "--checkpoint", path, "--data-dir", tiny_mnist],
        ["train", "--resume", "--out", path.parent, "--quiet"],
    ):
        status = run(*args)
        err = capsys.readouterr().err
        assert_one_line_error(status, err, args[0], named)
        assert str(path) in err and "saved options are invalid" in err


@pytest.mark.parametrize(
    "values, named", [({"lr": math.inf}, "--lr inf"), ({"hidden_dim": -3}, "--hidden-dim -3")]
)
def test_generate_refuses_invalid_saved_options(values, named, lm_checkpoint, tmp_path, capsys):
    path = tampered(lm_checkpoint, tmp_path / "run", set_config(**values))
    status = run("generate", "--checkpoint", path)
    assert_one_line_error(status, capsys.readouterr().err, "generate", named)


def test_resume_names_the_parameter_whose_shape_does_not_fit(image_checkpoint, tmp_path, capsys):
    def widen(state):
        key = next(iter(state["model"]))
        state["model"][key] = np.zeros((784, 9), dtype=np.float32)

    path = tampered(image_checkpoint, tmp_path / "run", widen)
    key = next(iter(ndl.load(path)["model"]))
    for args in (
        ["train", "--resume", "--out", path.parent, "--quiet"],
        ["eval", "--checkpoint", path],
    ):
        status = run(*args)
        err = capsys.readouterr().err
        assert_one_line_error(status, err, args[0], key)
        assert "(784, 8)" in err and "(784, 9)" in err, err


def test_an_undecodable_corpus_names_the_file(tmp_path, capsys):
    folder = write_ptb_folder(tmp_path / "data")
    (folder / "train.txt").write_bytes(b" the cat \n the \xff\xfe dog \n")
    status = run(
        "train",
        "--model",
        "lstm-lm",
        "--dataset",
        "ptb",
        "--data-dir",
        folder,
        "--out",
        tmp_path / "run",
        "--quiet",
    )
    assert_one_line_error(status, capsys.readouterr().err, "train", str(folder / "train.txt"))


def test_too_large_a_model_is_a_one_line_error(tiny_mnist, tmp_path, capsys):
    status = run(
        "train",
        "--model",
        "cnn",
        "--width",
        "1048576",
        "--dataset",
        "mnist",
        "--data-dir",
        tiny_mnist,
        "--out",
        tmp_path / "run",
        "--quiet",
    )
    assert_one_line_error(status, capsys.readouterr().err, "train", "not enough memory")
