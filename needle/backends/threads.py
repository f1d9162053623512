"""How many threads needle's computations use, PyTorch's ``set_num_threads`` convention.

Under the NDArray backend one pool of threads does all of needle's arithmetic: the compiled
kernels (elementwise ops, copies and strided views, reductions, the fused layers and
optimizers) and the matrix products, which call the BLAS that NumPy brings (OpenBLAS in
NumPy's wheels) directly, one row block per chunk, with the BLAS itself on one thread. One
pool rather than two: OpenBLAS's own threads spin between products and took the cores from
the kernels, and they stall a whole product when the system deschedules one of them. (So
NumPy's own products, elsewhere in the process, run on one thread too.) Under the NumPy
backend the BLAS's threads are the only ones.

The default is every CPU this process may run on (``os.sched_getaffinity``), like PyTorch's;
``NEEDLE_NUM_THREADS`` overrides it, else ``OMP_NUM_THREADS`` (the usual knob). Work is split
only when it is large (~32k elements, ~1M multiply-adds), in chunks fixed by the sizes alone,
so **results are the same bits at any thread count**; short kernels stay on the calling
thread; and a busy machine costs little: the calling thread works too and never waits for a
thread the system has not scheduled.
"""

from __future__ import annotations

import ctypes
import functools
import os

from . import CPU_MODULE

#: OpenBLAS entry points, by build (NumPy's wheels prefix theirs): its thread-count setter,
#: and its ILP64 CBLAS products (64-bit integers: what the compiled module's calls pass).
_BLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)
_GEMMS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"), ("cblas_sgemm64_", "cblas_dgemm64_"))


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


@functools.lru_cache(maxsize=1)
def _openblas():
    """The OpenBLAS library NumPy loaded, or None (another BLAS, or not Linux); looked up once."""
    import numpy  # noqa: F401  (loads the BLAS, so that it can be found)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line and ".so" in line}
    except OSError:
        return None
    return ctypes.CDLL(sorted(paths)[0]) if paths else None


def _blas_setter():
    """OpenBLAS's ``set_num_threads``, or None."""
    library = _openblas()
    for name in _BLAS_SETTERS if library is not None else ():
        if hasattr(library, name):
            return getattr(library, name)
    return None


def _blas_gemms() -> tuple[int, int] | None:
    """The addresses of OpenBLAS's ILP64 ``cblas_sgemm`` and ``cblas_dgemm``, or None."""
    library = _openblas()
    for single, double in _GEMMS if library is not None else ():
        if hasattr(library, single) and hasattr(library, double):
            sgemm = ctypes.cast(getattr(library, single), ctypes.c_void_p).value
            dgemm = ctypes.cast(getattr(library, double), ctypes.c_void_p).value
            if sgemm and dgemm:  # c_void_p reads NULL as None
                return sgemm, dgemm
    return None


def _set_blas_threads(n: int) -> None:
    setter = _blas_setter()
    if setter is not None:
        setter(ctypes.c_int(n))


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (the caller included) for the kernels and the BLAS.

    >>> import needle as ndl
    >>> previous = ndl.get_num_threads()
    >>> ndl.set_num_threads(1); ndl.get_num_threads()
    1
    >>> ndl.set_num_threads(previous)
    """
    global _count
    _count = _check("set_num_threads", n)
    module = CPU_MODULE
    if module is not None:
        module.set_num_threads(n)
    if not _products_on_the_pool:
        _set_blas_threads(n)


def get_num_threads() -> int:
    """The number of threads the kernels use (see :func:`set_num_threads`)."""
    module = CPU_MODULE
    return module.get_num_threads() if module is not None else _count


def _products_to_the_pool() -> bool:
    """Hand the compiled module the BLAS's products and the BLAS one thread; False when
    there is no compiled module or no usable BLAS (products then keep the BLAS's threads)."""
    module, gemms = CPU_MODULE, None
    if module is not None:
        gemms = _blas_gemms()
    if gemms is None:
        return False
    module.use_blas(*gemms)
    _set_blas_threads(1)
    return True


_count = _from_environment()
_products_on_the_pool = _products_to_the_pool()
if CPU_MODULE is not None:
    CPU_MODULE.set_num_threads(_count)
if "NEEDLE_NUM_THREADS" in os.environ and not _products_on_the_pool:
    _set_blas_threads(_count)  # needle's own knob sets the BLAS's threads too
