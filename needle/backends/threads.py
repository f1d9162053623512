"""How many threads needle's computations use, PyTorch's ``set_num_threads`` convention.

Two pools of threads do needle's arithmetic: the compiled NDArray kernels' own (elementwise
ops, copies and strided views, reductions, the fused layers and optimizers) and the BLAS that
NumPy brings for matrix products (OpenBLAS in NumPy's wheels). :func:`set_num_threads` sets
both; :func:`get_num_threads` reads the kernels' count.

The default is every CPU this process may run on (``os.sched_getaffinity``), like PyTorch's;
``NEEDLE_NUM_THREADS`` overrides it, else ``OMP_NUM_THREADS`` (the usual knob, also read by
the BLAS). The kernels split only work of at least ~32k elements, in chunks fixed by the
size alone, so **the kernels give the same bits at any thread count**, short kernels stay
on the calling thread, and a busy machine costs little: the calling thread works too and
never waits for a thread the system has not scheduled. Matrix products are the BLAS's:
OpenBLAS splits their sums differently at another thread count, so a product (and what
follows from it) may differ in the last bits between thread counts; keep the count to
reproduce a run bit for bit.
"""

from __future__ import annotations

import ctypes
import os

from . import BACKEND

#: The OpenBLAS entry points that set its thread count, by build (NumPy's wheels prefix theirs).
_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")


def _cpu_module():
    """The compiled CPU module, or None (never imported under ``np``)."""
    if BACKEND != "nd":
        return None
    from ..backend_ndarray.ndarray import ndarray_backend_cpu

    return ndarray_backend_cpu


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _check(owner: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{owner}: the number of threads must be an int >= 1, got {n!r}")
    return n


def _from_environment() -> int:
    """``NEEDLE_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs available."""
    for name in ("NEEDLE_NUM_THREADS", "OMP_NUM_THREADS"):
        text = os.environ.get(name, "").strip()
        if text:
            try:
                return _check(name, int(text))
            except ValueError:
                raise ValueError(f"{name}={text!r}: expected a whole number >= 1") from None
    return _available_cpus()


def _blas_setter():
    """OpenBLAS's ``set_num_threads`` among the libraries NumPy loaded, or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line and ".so" in line}
    except OSError:  # not Linux: the BLAS keeps its own setting
        return None
    for path in sorted(paths):
        library = ctypes.CDLL(path)
        for name in _BLAS_SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                return setter
    return None


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (the caller included) for the kernels and the BLAS.

    >>> import needle as ndl
    >>> previous = ndl.get_num_threads()
    >>> ndl.set_num_threads(1); ndl.get_num_threads()
    1
    >>> ndl.set_num_threads(previous)
    """
    n = _check("set_num_threads", n)
    module = _cpu_module()
    if module is not None:
        module.set_num_threads(n)
    global _count
    _count = n
    import numpy  # noqa: F401  (loads the BLAS, so that it can be found)

    setter = _blas_setter()
    if setter is not None:
        setter(ctypes.c_int(n))


def get_num_threads() -> int:
    """The number of threads the kernels use (see :func:`set_num_threads`)."""
    module = _cpu_module()
    return module.get_num_threads() if module is not None else _count


_count = _from_environment()
if "NEEDLE_NUM_THREADS" in os.environ:
    set_num_threads(_count)  # needle's own knob sets the BLAS too
elif _cpu_module() is not None:
    _cpu_module().set_num_threads(_count)  # the BLAS keeps what its environment says
