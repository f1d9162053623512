"""Helpers the test modules import (``from helpers import tensor``); fixtures live in conftest.py.

``tests/`` is on ``sys.path`` (pyproject.toml's ``pythonpath``), so ``helpers`` imports from
every test folder. A helper used by one test module stays in that module.
"""

from __future__ import annotations

import numpy as np

import needle as ndl
from needle.backends import NDArray


def tensor(data, **kwargs) -> ndl.Tensor:
    """``ndl.Tensor(data)`` keeping NumPy's inferred float dtype on both backends.

    Under ``nd`` a Tensor is float32 unless a dtype is given (spec), while these tests'
    NumPy references compute in the data's own dtype (float64 for Python floats); under
    ``np`` this is exactly ``ndl.Tensor(data)``.
    """
    if "dtype" not in kwargs and not isinstance(data, (ndl.Tensor, NDArray)):
        inferred = np.asarray(data).dtype
        if inferred.kind == "f":
            kwargs["dtype"] = inferred
    return ndl.Tensor(data, **kwargs)


ND = ndl.backends.BACKEND == "nd"


def scaled_draws(draws: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """``draws * scale + shift`` as needle.init computes it, as float32.

    Under ``np`` in float64, then cast (the course's NumPy framework); under ``nd`` the
    draws and the scalars are cast to float32 first (spec: NDArray arithmetic in the dtype).
    """
    if ND:
        return draws.astype(np.float32) * np.float32(scale) + np.float32(shift)
    return (draws * scale + shift).astype(np.float32)
