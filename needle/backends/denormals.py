"""Subnormal floats, and flushing them to zero for speed.

Floats below the normal range (``|x| < 1.18e-38`` in float32) are *subnormal*. Training
produces them: weights that get no data gradient (always-zero input pixels, dead ReLU
units) and their Adam moments decay towards zero under weight decay and pass through that
range. On many x86 CPUs (Intel's, notably) every arithmetic operation that reads or makes a
subnormal costs a microcode assist, about a hundred times an ordinary one, so a long run
slows down several-fold as they accumulate. Flushing them to zero changes results only
below 1.18e-38, and keeps runs bit-reproducible.

:func:`set_flush_denormal` (PyTorch's name and meaning) turns flushing on or off:

- where the compiled NDArray backend is loaded on x86-64, it sets the CPU's flush-to-zero
  and denormals-are-zero modes (MXCSR FTZ/DAZ) of the calling thread, so every kernel,
  NumPy ufunc and single-threaded BLAS call of that thread flushes;
- elsewhere (``NEEDLE_BACKEND=np``, which loads no compiled code, or another CPU) the
  optimizers flush what they store instead: an update whose exact result is subnormal
  stores 0 in the parameter and its moments. Those are where subnormals accumulate, so
  the cost is avoided with either backend and any BLAS thread count.

It is off when needle is imported (IEEE results, PyTorch's default); ``needle train`` and
``needle eval`` run with it on (:func:`flush_denormals`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from . import BACKEND, CPU_MODULE, array_api

_enabled = False
_in_hardware = False  # whether the CPU's FTZ/DAZ modes carry it (else the optimizers do)


def set_flush_denormal(enabled: bool) -> bool:
    """Flush subnormal floats to zero (``True``) or keep IEEE gradual underflow (``False``).

    Returns True when the CPU's flush-to-zero modes can carry the setting (x86-64 with the
    compiled backend; they are set for the calling thread), False when only the optimizers
    flush (the NumPy backend, other CPUs).

    >>> import needle as ndl
    >>> isinstance(ndl.set_flush_denormal(False), bool)
    True
    """
    global _enabled, _in_hardware
    if not isinstance(enabled, bool):
        raise TypeError(f"set_flush_denormal: expected True or False, got {enabled!r}")
    module = CPU_MODULE
    supported = module is not None and bool(module.set_flush_denormal(enabled))
    _enabled, _in_hardware = enabled, supported and enabled
    return supported


def is_flush_denormal() -> bool:
    """Whether subnormals are being flushed (by the CPU or by the optimizers)."""
    return _enabled


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """Run a block with :func:`set_flush_denormal` ``(enabled)``; restore the previous mode."""
    previous = _enabled
    set_flush_denormal(enabled)
    try:
        yield
    finally:
        set_flush_denormal(previous)


def optimizer_must_flush() -> bool:
    """Whether optimizers must flush what they store (flushing on, but not by the CPU)."""
    return _enabled and not _in_hardware


def flush_in_place(array) -> None:
    """Set the subnormal elements of ``array`` (NumPy array or NDArray) to zero, in place."""
    tiny = 1.1754943508222875e-38 if str(array.dtype) == "float32" else 2.2250738585072014e-308
    if BACKEND == "np":  # two passes instead of five: this runs over every parameter per step
        np.putmask(array, np.abs(array) < tiny, 0)
        return
    magnitude = array_api.maximum(array, -array)
    array[(slice(None),) * len(array.shape)] = array * (magnitude >= tiny)
