"""needle's strided NDArray backend (``nd``; the course's ``needle.backend_ndarray``).

``from needle import backend_ndarray as nd`` gives the :class:`NDArray`, the devices
(``nd.cpu()`` compiled, ``nd.cuda()`` optional, ``nd.cpu_numpy()`` NumPy-backed) and
NumPy-named module functions (``nd.array``, ``nd.zeros``, ``nd.sum``, ``nd.matmul``, …)
so that op bodies run unchanged on this package or on NumPy.

The modules, from the bottom up: :mod:`.dtypes` (element types and promotion),
:mod:`.layout` (shape and stride arithmetic), :mod:`.ndarray` (the devices and the array
type, its views, indexing and operators), :mod:`.functions` (the module functions),
:mod:`.kernels` (needle's fused computations on arrays: the only module besides
:mod:`.ndarray` that passes buffers to a device's kernels) and the kernel modules themselves:
``ndarray_backend_cpu`` (compiled C++) and :mod:`.ndarray_backend_numpy` (the same flat-buffer
API in NumPy).
"""

from . import kernels
from .dtypes import DType
from .functions import *  # noqa: F401,F403
from .functions import __all__ as _function_names
from .layout import prod
from .ndarray import (
    CPU_IMPORT_ERROR,
    BackendDevice,
    NDArray,
    all_devices,
    cpu,
    cpu_numpy,
    cuda,
    default_device,
)

__all__ = [
    "NDArray",
    "BackendDevice",
    "DType",
    "cpu",
    "cuda",
    "cpu_numpy",
    "default_device",
    "all_devices",
    "prod",
    *_function_names,
]
