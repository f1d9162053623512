"""The scripts in examples/ run unchanged, as a user runs them, on the selected backend."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _stats(line: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, cov) from a line 'name: mean [..] cov [[..], [..]]'."""
    _, rest = line.split(": mean ")
    mean, cov = rest.split(" cov ")
    return np.array(ast.literal_eval(mean)), np.array(ast.literal_eval(cov))


def test_course_style_gan_learns_the_data_distribution():
    lines = {line.split(":")[0]: _stats(line) for line in _run("gan_course_style.py").splitlines()}
    (data_mean, data_cov), (before_mean, _), (after_mean, after_cov) = (
        lines["data"],
        lines["before"],
        lines["after"],
    )
    assert np.abs(before_mean - data_mean).max() > 1.0, "the untrained generator is far off"
    np.testing.assert_allclose(after_mean, data_mean, atol=0.2)
    np.testing.assert_allclose(after_cov, data_cov, rtol=0.2, atol=0.2)
