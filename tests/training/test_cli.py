"""`needle train` / `needle eval`: files, resume (also after SIGKILL), errors, accuracy.

Training tests use Fashion-MNIST from the Debian package ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist) on small limits, and skip when it is absent.
"""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import assert_same_state, checkout_env, needs_fashion, run_main

import needle as ndl
from needle import cli, training
from needle.data.datasets import mnist_dataset

SMALL = ["--limit-train", "2000", "--limit-test", "500", "--batch-size", "100"]
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+)  train loss (\d\.\d{4}) err (\d\.\d{4})  "
    r"test loss (\d\.\d{4}) err (\d\.\d{4})  \d+\.\ds$"
)


def run_subprocess(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m needle ARGS`` with this checkout first on the path."""
    return subprocess.run(
        [sys.executable, "-m", "needle", *map(str, args)],
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory) -> tuple[Path, str]:
    """A 2-epoch run on 2000/500 samples: its folder and its stdout."""
    out = tmp_path_factory.mktemp("run") / "out"
    capture = _Capture()
    with capture:
        assert cli.main(["train", *SMALL, "--epochs", "2", "--out", str(out)]) == 0
    return out, capture.text


class _Capture:
    """Capture sys.stdout in a module-scoped fixture (capsys is function-scoped)."""

    def __enter__(self):
        import io

        self._saved, sys.stdout = sys.stdout, io.StringIO()
        return self

    def __exit__(self, *exc):
        self.text = sys.stdout.getvalue()
        sys.stdout = self._saved


# ----- files and output -------------------------------------------------------------------


@needs_fashion
def test_train_writes_checkpoint_metrics_and_curves(two_epoch_run):
    out, _ = two_epoch_run
    state = ndl.load(out / "checkpoint.npz")
    assert state["epoch"] == 2 and state["config"]["data"]["limit_train"] == 2000
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "train_loss", "train_err", "test_loss", "test_err", "seconds"]
    for row in rows:
        assert 0.0 <= float(row["test_err"]) <= 1.0 and float(row["seconds"]) > 0.0
    assert float(rows[1]["train_loss"]) == state["history"][1]["train_loss"]
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 100 and height > 100
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@needs_fashion
def test_train_prints_one_summary_line_per_epoch(two_epoch_run):
    _, stdout = two_epoch_run
    lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    for number, line in enumerate(lines, start=1):
        match = EPOCH_LINE.match(line)
        assert match, line
        assert match.group(1) == str(number) and match.group(2) == "2"


@needs_fashion
def test_eval_prints_the_last_epochs_test_metrics(two_epoch_run, capsys):
    out, _ = two_epoch_run
    last = ndl.load(out / "checkpoint.npz")["history"][-1]
    assert run_main("eval", "--checkpoint", out / "checkpoint.npz") == 0
    printed = capsys.readouterr().out
    assert f"test loss {last['test_loss']:.4f} err {last['test_err']:.4f}" in printed
    err, loss, n = training.evaluate_checkpoint(out / "checkpoint.npz")
    assert (err, loss, n) == (last["test_err"], last["test_loss"], 500)  # bit-identical


@needs_fashion
def test_eval_on_another_test_subset(two_epoch_run, capsys):
    out, _ = two_epoch_run
    assert run_main("eval", "--checkpoint", out / "checkpoint.npz", "--limit-test", "200") == 0
    assert "(200 samples" in capsys.readouterr().out


# ----- resume -----------------------------------------------------------------------------


@needs_fashion
def test_resume_is_bit_identical_to_an_uninterrupted_run(two_epoch_run, tmp_path, capsys):
    straight, _ = two_epoch_run
    resumed = tmp_path / "resumed"
    assert run_main("train", *SMALL, "--epochs", "1", "--out", resumed) == 0
    assert run_main("train", "--resume", "--epochs", "2", "--out", resumed) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert_same_state(straight, resumed)
    with open(resumed / "metrics.csv") as f:
        assert len(f.readlines()) == 3  # header + both epochs


@needs_fashion
def test_resume_with_scheduler_momentum_and_augmentation(tmp_path):
    """Interrupt after epoch 1 of 2 (cosine, SGD momentum, augmentation), then resume."""
    config = training.TrainConfig(
        epochs=2,
        limit_train=1000,
        limit_test=200,
        batch_size=100,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        scheduler="cosine",
        augment=True,
        out=str(tmp_path / "straight"),
    )
    training.train(config, progress=False, log=None)
    interrupted = training.TrainConfig(**{**config.to_dict(), "out": str(tmp_path / "resumed")})

    def stop_after_first_epoch(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(interrupted, progress=False, log=stop_after_first_epoch)
    assert ndl.load(tmp_path / "resumed" / "checkpoint.npz")["epoch"] == 1
    training.train(interrupted, resume=True, progress=False, log=None)
    assert_same_state(tmp_path / "straight", tmp_path / "resumed")
    lr = ndl.load(tmp_path / "resumed" / "checkpoint.npz")["optimizer"]["hyperparameters"]["lr"]
    assert lr == pytest.approx(0.0, abs=1e-12)  # cosine reaches 0 after `epochs` steps


@needs_fashion
def test_resume_rejects_other_model_options(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main("train", *SMALL, "--epochs", "1", "--out", out) == 0
    capsys.readouterr()
    assert run_main("train", "--resume", "--out", out, "--hidden-dim", "50") == 2
    err = capsys.readouterr().err
    assert "--hidden-dim 100 -> 50" in err and len(err.strip().splitlines()) == 1


@needs_fashion
def test_resume_of_a_finished_run_does_nothing(two_epoch_run, capsys):
    out, _ = two_epoch_run
    before = (out / "checkpoint.npz").stat().st_mtime_ns
    assert run_main("train", "--resume", "--out", out) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert (out / "checkpoint.npz").stat().st_mtime_ns == before


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    assert run_main("train", "--resume", "--out", tmp_path / "empty") == 2
    err = capsys.readouterr().err
    assert "no checkpoint at" in err and str(tmp_path / "empty") in err


@needs_fashion
def test_sigkill_during_training_then_resume(tmp_path):
    """Kill a 4-epoch run once its first checkpoint exists; --resume finishes it identically."""
    args = ["--limit-train", "10000", "--limit-test", "500", "--epochs", "4", "--no-progress"]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "needle", "train", *args, "--out", str(killed)],
        env=checkout_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (killed / "checkpoint.npz").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    epochs_done = ndl.load(killed / "checkpoint.npz")["epoch"]
    assert 1 <= epochs_done < 4, "the run finished before it could be killed"
    assert run_main("train", "--resume", "--out", killed, "--no-progress") == 0
    straight = tmp_path / "straight"
    assert run_main("train", *args, "--out", straight) == 0
    assert_same_state(straight, killed)


SAVE_LOOP = textwrap.dedent("""
    import sys
    import numpy as np
    import needle
    path = sys.argv[1]
    i = 0
    while True:
        needle.save({"i": i, "big": np.full(4_000_000, i, dtype=np.float32),
                     "tail": [i] * 100}, path)
        print(i, flush=True)
        i += 1
""")


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13, 0.31])
def test_sigkill_during_save_leaves_the_previous_checkpoint(tmp_path, delay):
    path = tmp_path / "checkpoint.npz"
    process = subprocess.Popen(
        [sys.executable, "-c", SAVE_LOOP, str(path)],
        env=checkout_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()  # one complete save exists
        assert first.strip() == "0"
        time.sleep(delay + np.random.default_rng().uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
        process.stdout.close()
    state = ndl.load(path)
    i = state["i"]
    assert i >= 0 and state["tail"] == [i] * 100
    np.testing.assert_array_equal(state["big"], np.full(4_000_000, i, dtype=np.float32))
    others = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(name.startswith(".checkpoint.npz.") for name in others), others


# ----- errors -------------------------------------------------------------------------------


def test_missing_data_exits_2_with_how_to(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mnist_dataset, "SYSTEM_FASHION_MNIST_DIR", str(tmp_path / "system"))
    monkeypatch.setenv("NEEDLE_DATA", str(tmp_path / "cache"))
    assert run_main("train", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert err.startswith("needle train: error: FashionMNIST")
    for hint in (
        str(tmp_path / "nowhere"),
        "apt-get install dataset-fashion-mnist",
        "--download",
        "--data-dir",
    ):
        assert hint in err
    assert "Traceback" not in err


def test_missing_data_from_the_command_line(tmp_path):
    env_cache = {"NEEDLE_DATA": str(tmp_path / "cache")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "needle",
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "o"),
        ],
        env={**checkout_env(), **env_cache},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--download" in result.stderr and str(tmp_path / "nowhere") in result.stderr


def test_damaged_data_file_exits_2(tmp_path, capsys):
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (tmp_path / f"{split}-{kind}-ubyte").write_bytes(b"not an IDX file at all")
    assert (
        run_main("train", "--dataset", "mnist", "--data-dir", tmp_path, "--out", tmp_path / "o")
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("needle train: error: IDX file") and str(tmp_path) in err


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "run" / "checkpoint.npz"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 this is not a real archive")
    assert run_main("eval", "--checkpoint", path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "Traceback" not in err
    assert run_main("train", "--resume", "--out", path.parent) == 2
    assert str(path) in capsys.readouterr().err


def test_a_foreign_npz_is_not_a_training_checkpoint(tmp_path, capsys):
    path = tmp_path / "weights.npz"
    ndl.save({"w": np.zeros(3)}, path)
    assert run_main("eval", "--checkpoint", path) == 2
    assert "not a needle training checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [
        ["--epochs", "0"],
        ["--batch-size", "-5"],
        ["--lr", "-0.1"],
        ["--lr", "abc"],
        ["--drop-prob", "1.5"],
        ["--hidden-dim", "0"],
        ["--limit-train", "0"],
        ["--weight-decay", "-1"],
        ["--optimizer", "rmsprop"],
        ["--scheduler", "linear"],
        ["--gamma", "0"],
        ["--dataset", "cifar"],
    ],
)
def test_invalid_options_are_usage_errors(option, tmp_path, capsys):
    assert run_main("train", *option, "--out", tmp_path) == 2
    assert "error: argument" in capsys.readouterr().err


def test_eval_without_a_checkpoint_or_a_latest_run_says_what_is_missing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert run_main("eval") == 2
    err = capsys.readouterr().err
    assert err == (
        "needle eval: error: no --checkpoint given and no latest run "
        "(runs/latest/checkpoint.npz): train one with needle train, or give "
        "--checkpoint PATH\n"
    )


@needs_fashion
def test_eval_without_a_checkpoint_evaluates_the_latest_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main("train", *SMALL, "--epochs", "1") == 0  # the default --out
    capsys.readouterr()
    assert run_main("eval") == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "evaluating runs/latest/checkpoint.npz (mlp-resnet) on 500 "
        "fashion-mnist test samples (the latest run: no --checkpoint "
        "given)\n"
    )
    last = ndl.load(tmp_path / "runs/latest/checkpoint.npz")["history"][-1]
    assert captured.out == (
        f"test loss {last['test_loss']:.4f} err {last['test_err']:.4f}  "
        f"(500 samples, runs/latest/checkpoint.npz)\n"
    )


def test_eval_help_states_one_rule_for_its_defaults():
    result = run_subprocess("eval", "--help")
    text = " ".join(result.stdout.split())
    assert result.returncode == 0
    assert "Every option not given, --dataset included, is the one the checkpoint's run" in text
    assert "the dataset (default: the checkpoint's)" in text
    assert "fashion-mnist" not in text.replace("{fashion-mnist", "")  # only in the choices
    assert "(default: the latest run's, runs/latest/checkpoint.npz)" in text


@needs_fashion
def test_a_run_that_replaces_another_says_so_on_its_first_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main("train", *SMALL, "--epochs", "1") == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("MLPResNet(hidden 100, 3 blocks) on fashion-mnist")
    assert (
        run_main(
            "train",
            "--model",
            "cnn",
            "--width",
            "4",
            "--limit-train",
            "200",
            "--limit-test",
            "100",
            "--epochs",
            "1",
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "note: this run replaces the mlp-resnet run on fashion-mnist in "
        "runs/latest (--out DIR keeps runs apart; --resume continues it)"
    )
    assert lines[1].startswith("SmallCNN(width 4)")
    assert training.checkpoint_config("runs/latest/checkpoint.npz").model == "cnn"


@needs_fashion
def test_the_header_counts_epochs_in_the_singular_and_the_plural(two_epoch_run, tmp_path, capsys):
    assert ", 2 epochs -> " in two_epoch_run[1].splitlines()[0]
    assert (
        run_main("train", *SMALL, "--limit-train", "200", "--epochs", "1", "--out", tmp_path) == 0
    )
    header = capsys.readouterr().out.splitlines()[0]
    assert header.endswith(f"adam lr 0.001, batch 100, weight decay 0.001, 1 epoch -> {tmp_path}")


@needs_fashion
def test_resuming_a_cosine_run_with_more_epochs_explains_the_rule(tmp_path, capsys):
    out = tmp_path / "cosine"
    assert (
        run_main(
            "train",
            *SMALL,
            "--limit-train",
            "200",
            "--epochs",
            "1",
            "--scheduler",
            "cosine",
            "--out",
            out,
        )
        == 0
    )
    capsys.readouterr()
    assert run_main("train", "--resume", "--epochs", "2", "--out", out) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert (
        "(--epochs 1 -> 2: a cosine schedule anneals the learning rate to 0 over exactly "
        "the run's --epochs, so a cosine run cannot be extended or shortened; to train "
        "on, start a new run with the --epochs you want)"
    ) in err


def test_resume_help_explains_which_options_may_change():
    text = " ".join(run_subprocess("train", "--help").stdout.split())
    assert (
        "--epochs and --lr may change (more epochs continue the run), except that a "
        "cosine schedule spans exactly its --epochs: it cannot be extended"
    ) in text


class _Terminal:
    """A stand-in for stderr that says it is a terminal (so progress bars are shown)."""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _record_bars(monkeypatch) -> list[tuple[str, int]]:
    """Replace the progress bars by a recorder of their (description, batches)."""
    bars = []

    class Bar:
        def __init__(self, total, desc):
            self.desc, self.updates = desc, 0
            bars.append(self)

        def set_postfix_str(self, *args, **kwargs):
            pass

        def update(self, n):
            self.updates += n

        def close(self):
            pass

    monkeypatch.setattr(training, "_make_tqdm", Bar)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    return bars


@needs_fashion
def test_the_test_pass_and_eval_show_progress(tmp_path, monkeypatch):
    bars = _record_bars(monkeypatch)
    config = training.TrainConfig(epochs=1, limit_train=200, limit_test=300, out=str(tmp_path))
    training.train(config, log=None)
    assert [(bar.desc, bar.updates) for bar in bars] == [("epoch 1/1", 2), ("epoch 1/1 test", 3)]
    bars.clear()
    training.evaluate_checkpoint(tmp_path / "checkpoint.npz", progress=True)
    assert [(bar.desc, bar.updates) for bar in bars] == [("test", 3)]


def test_train_help_shows_the_defaults_of_the_models_task():
    image = " ".join(run_subprocess("train", "--help").stdout.split())
    text = " ".join(run_subprocess("train", "--model", "lstm-lm", "--help").stdout.split())
    assert "The defaults shown are those of --model mlp-resnet's task" in image
    assert "learning rate (default: 0.001)" in image and "total epochs (default: 10)" in image
    assert "The defaults shown are those of --model lstm-lm's task" in text
    for shown in (
        "total epochs (default: 2)",
        "learning rate (default: 0.005)",
        "columns of the text (default: 16)",
        "--weight-decay WEIGHT_DECAY (default: 0)",
        "clip the global gradient norm to NORM (default: 1)",
        "tokens per BPTT chunk (default: 20)",
    ):
        assert shown in text, shown


def test_help_from_the_command_line():
    result = run_subprocess("train", "--help")
    assert result.returncode == 0
    for option in ("--resume", "--limit-train", "--scheduler", "--augment", "--no-progress"):
        assert option in result.stdout


def test_parser_defaults_match_the_spec():
    args = cli.build_parser().parse_args(["train"])
    expected = dict(
        model="mlp-resnet",
        epochs=10,
        batch_size=100,
        lr=0.001,
        weight_decay=0.001,
        hidden_dim=100,
        optimizer="adam",
        seed=4,
        out="runs/latest",
        scheduler="none",
        augment=False,
        resume=False,
    )
    assert {k: getattr(args, k) for k in expected} == expected
    # No --dataset: the model's task picks its first dataset (fashion-mnist for images).
    assert args.dataset is None
    assert training.TrainConfig(model=args.model, dataset=args.dataset).dataset == "fashion-mnist"


# ----- accuracy -----------------------------------------------------------------------------


@needs_fashion
def test_one_epoch_on_10k_images_reaches_under_25_percent_test_error(tmp_path):
    """The default recipe, 1 epoch on the first 10k training images, full 10k test set."""
    config = training.TrainConfig(epochs=1, limit_train=10_000, out=str(tmp_path))
    (metrics,) = training.train(config, progress=False, log=None)
    assert metrics.test_err < 0.25, metrics


@pytest.mark.slow
@needs_fashion
def test_default_recipe_reaches_14_percent_test_error(tmp_path):
    """`needle train` defaults: 10 epochs on all 60k images (a few minutes on 2 cores)."""
    history = training.train(training.TrainConfig(out=str(tmp_path)), progress=False, log=None)
    assert history[-1].test_err <= 0.14, history[-1]


# ----- without the training extras ------------------------------------------------------------


def test_missing_extras_are_named_with_the_command_that_installs_them(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("tqdm", "matplotlib") else real(name),
    )
    notice = training.missing_extras_notice(progress_bar=True)
    assert "tqdm is not installed: no progress bar" in notice
    assert "matplotlib is not installed: no curves.png" in notice
    assert "pip install 'needle-dl[train]'" in notice
    # Without a terminal there is no bar to miss: only matplotlib is worth a word.
    assert "tqdm" not in training.missing_extras_notice(progress_bar=False)
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert training.missing_extras_notice(progress_bar=True) is None


@needs_fashion
def test_train_without_matplotlib_says_so_once_and_writes_no_curves(tmp_path):
    # A None entry in sys.modules makes `import matplotlib` fail, as when it is not installed.
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.modules['tqdm'] = None; "
        "from needle import cli; sys.exit(cli.main(sys.argv[1:]))"
    )
    args = ["train", *SMALL, "--epochs", "2", "--out", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stdout.splitlines() if "not installed" in line]
    assert len(notes) == 1 and "pip install 'needle-dl[train]'" in notes[0]
    assert (tmp_path / "metrics.csv").exists() and not (tmp_path / "curves.png").exists()
