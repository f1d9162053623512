"""For the tests of the ``needle`` command (tests/training/): run it, compare two runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
from needle import cli, training
from needle.data.datasets import mnist_dataset

REPO = Path(__file__).resolve().parents[2]
FASHION_DIR = Path(mnist_dataset.SYSTEM_FASHION_MNIST_DIR)
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not in {FASHION_DIR} (apt-get install dataset-fashion-mnist)",
)


def run_main(*args: str) -> int:
    """Run the CLI in-process; argparse usage errors come back as their exit code."""
    try:
        return cli.main([str(a) for a in args])
    except SystemExit as e:
        return e.code


def checkout_env() -> dict:
    """The environment for a subprocess: this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _history(out: Path) -> list[tuple]:
    """The metrics of every epoch of a run, without the wall time."""
    state = ndl.load(out / training.CHECKPOINT_NAME)
    return [
        (m["epoch"], m["train_loss"], m["train_err"], m["test_loss"], m["test_err"])
        for m in state["history"]
    ]


def assert_same_state(out_a: Path, out_b: Path) -> None:
    """The two runs' checkpoints hold identical weights, optimizer state and metrics."""
    a = ndl.load(out_a / training.CHECKPOINT_NAME)
    b = ndl.load(out_b / training.CHECKPOINT_NAME)
    assert a["epoch"] == b["epoch"]
    assert list(a["model"]) == list(b["model"])
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    for index, slots in a["optimizer"]["state"].items():
        for name, value in slots.items():
            np.testing.assert_array_equal(value, b["optimizer"]["state"][index][name])
    assert _history(out_a) == _history(out_b)
    np.testing.assert_array_equal(a["rng_state"][1], b["rng_state"][1])
