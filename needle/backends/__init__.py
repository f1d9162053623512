"""Array backends: where tensors keep their data and how it is computed.

A *backend* is the array library behind tensors. There are two, one package each:

- :mod:`needle.backends.ndarray` (``nd``, the default): strided ``NDArray``s whose kernels
  are compiled C++ on ``cpu()`` (NumPy on ``cpu_numpy()``);
- :mod:`needle.backends.numpy` (``np``): plain ``numpy.ndarray``s; no compiled code is loaded.

``NEEDLE_BACKEND`` selects one once per process; unset, ``nd`` is used when its compiled
CPU module imports and ``np`` otherwise (with one warning). Everything above the backends
computes through three names exported here: :data:`array_api` (the NumPy-like array
namespace), :class:`Device` (where arrays live) and :data:`kernels` (needle's fused
computations and the few array operations the two array types spell differently, with
one signature on both backends). The course's names for these modules stay importable:
``needle.backend_selection`` (this module), ``needle.backend_ndarray`` and
``needle.backend_numpy``.
"""

import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np


def _select(requested: str | None) -> str:
    """The backend to use for ``NEEDLE_BACKEND=requested`` (None: unset)."""
    if requested not in (None, "", "nd", "np"):
        raise RuntimeError(
            f"NEEDLE_BACKEND={requested!r} is not a backend; use 'nd' (strided NDArray, the "
            f"default) or 'np' (NumPy arrays)"
        )
    if requested == "np":
        return "np"
    from .ndarray import CPU_IMPORT_ERROR

    if CPU_IMPORT_ERROR is None:
        return "nd"
    if requested == "nd":
        raise ImportError(
            f"NEEDLE_BACKEND=nd needs the compiled module needle.backends.ndarray."
            f"ndarray_backend_cpu, which failed to import ({CPU_IMPORT_ERROR}). Build it with "
            f"`pip install -e .` (needs a C++17 compiler and CMake), or set NEEDLE_BACKEND=np."
        )
    warnings.warn(
        f"needle: the compiled NDArray module failed to import ({CPU_IMPORT_ERROR}); using the "
        f"NumPy backend. Fix: pip install -e . (or set NEEDLE_BACKEND=np to silence this)",
        RuntimeWarning,
        stacklevel=2,
    )
    return "np"


BACKEND = _select(os.environ.get("NEEDLE_BACKEND"))

#: The dtypes tensors can hold, on both backends: floats for values and gradients; integers and
#: bools for labels, token ids and masks (they never require gradients).
DTYPES = ("float32", "float64", "int32", "int64", "bool")


def check_dtype(owner: str, dtype: Any) -> str:
    """The name of ``dtype`` (a string, a NumPy type or dtype, ``bool``/``int``/``float``) when
    it is one of :data:`DTYPES`, else a TypeError naming ``owner`` and the supported dtypes."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise TypeError(
            f"{owner}: dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}"
        )
    return name


# The type checker reads the code against the default backend's types (NDArray, BackendDevice):
# the np backend's names stand in for them at run time, duck-typed.
if TYPE_CHECKING or BACKEND == "nd":
    from . import ndarray as array_api
    from .ndarray import BackendDevice as Device
    from .ndarray import NDArray, all_devices, cpu, cpu_numpy, cuda, default_device, kernels
    from .ndarray.ndarray import ndarray_backend_cpu as CPU_MODULE
else:
    import numpy as array_api

    from .numpy import Device, all_devices, cpu, cpu_numpy, cuda, default_device, kernels

    NDArray = array_api.ndarray
    CPU_MODULE = None  # no compiled code under np

#: The backend's float32 and float64 dtype objects (what ``array.dtype`` is), in that order.
FLOAT_DTYPES = (
    (array_api.float32, array_api.float64)
    if BACKEND == "nd"
    else (np.dtype("float32"), np.dtype("float64"))
)

__all__ = [
    "BACKEND",
    "array_api",
    "NDArray",
    "Device",
    "cpu",
    "cuda",
    "cpu_numpy",
    "all_devices",
    "default_device",
]
