"""The NumPy backend's devices: one CPU whose arrays are ``numpy.ndarray``.

Random draws go through NumPy's *global* generator (``np.random.rand`` /
``np.random.randn``) so that ``np.random.seed`` governs every draw, exactly as in the
course's reference framework.
"""

from __future__ import annotations

import numpy as np


class Device:
    """Base class of devices: where a tensor's array lives."""

    name = "device"

    def enabled(self) -> bool:
        """Whether this device can be used in this build."""
        return False


class CPUDevice(Device):
    """The CPU, backed by NumPy.

    >>> cpu().zeros(2, 3).shape
    (2, 3)
    """

    name = "cpu"

    def __repr__(self) -> str:
        return "cpu()"

    __str__ = __repr__

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CPUDevice)

    def enabled(self) -> bool:
        return True

    def zeros(self, *shape: int, dtype: str = "float32") -> np.ndarray:
        """An array of zeros of ``shape``."""
        return np.zeros(shape, dtype=dtype)

    def ones(self, *shape: int, dtype: str = "float32") -> np.ndarray:
        """An array of ones of ``shape``."""
        return np.ones(shape, dtype=dtype)

    def randn(self, *shape: int) -> np.ndarray:
        """Standard normal draws (float64) from NumPy's global generator."""
        return np.random.randn(*shape)

    def rand(self, *shape: int) -> np.ndarray:
        """Uniform [0, 1) draws (float64) from NumPy's global generator."""
        return np.random.rand(*shape)

    def one_hot(self, n: int, i, dtype: str = "float32") -> np.ndarray:
        """Rows of the n×n identity picked by integer labels ``i``: shape ``i.shape + (n,)``."""
        return np.eye(n, dtype=dtype)[i]

    def empty(self, shape: tuple, dtype: str = "float32") -> np.ndarray:
        """An uninitialised array of ``shape``."""
        return np.empty(shape, dtype=dtype)

    def full(self, shape: tuple, fill_value, dtype: str = "float32") -> np.ndarray:
        """An array of ``shape`` filled with ``fill_value``."""
        return np.full(shape, fill_value, dtype=dtype)


class DisabledCUDADevice(Device):
    """``cuda()`` under the NumPy backend: it exists, but nothing can be made on it.

    >>> cuda(), cuda().enabled()
    (cuda(), False)
    """

    name = "cuda"

    def __repr__(self) -> str:
        return "cuda()"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def _unavailable(self, *args, **kwargs):
        raise RuntimeError(
            "cuda() is not available in this build: the NumPy backend has no GPU "
            "(use NEEDLE_BACKEND=nd with a CUDA build)"
        )

    zeros = ones = randn = rand = one_hot = empty = full = _unavailable


_CPU = CPUDevice()
_CUDA = DisabledCUDADevice()


def cpu() -> CPUDevice:
    """The CPU device (NumPy arrays)."""
    return _CPU


def cpu_numpy() -> CPUDevice:
    """The NumPy CPU device (the same as :func:`cpu` under the NumPy backend)."""
    return _CPU


def cuda() -> DisabledCUDADevice:
    """The CUDA device, always disabled under the NumPy backend."""
    return _CUDA


def default_device() -> CPUDevice:
    """The device tensors are created on when none is given."""
    return _CPU


def all_devices() -> list[Device]:
    """Every device of this backend, enabled or not."""
    return [_CPU, _CUDA]


__all__ = [
    "Device",
    "CPUDevice",
    "DisabledCUDADevice",
    "cpu",
    "cpu_numpy",
    "cuda",
    "default_device",
    "all_devices",
]
