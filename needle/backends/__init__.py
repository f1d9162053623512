"""Array backends: where tensors keep their data and how it is computed.

needle's ops never import NumPy; they compute through :data:`array_api`, the array
namespace of the selected backend, and allocate through a :class:`Device`. Today the
only backend is NumPy (``NEEDLE_BACKEND=np``, the default); a strided ``NDArray``
backend with C++/CUDA kernels can be added here without touching the ops.
"""
import os

from .numpy_backend import CPUDevice, Device, all_devices, cpu, cpu_numpy, default_device

BACKEND = os.environ.get("NEEDLE_BACKEND", "np")
if BACKEND != "np":
    raise RuntimeError(
        f"NEEDLE_BACKEND={BACKEND!r}: only the NumPy backend ('np') exists in this build"
    )

import numpy as array_api  # noqa: E402  (the namespace every op computes through)

NDArray = array_api.ndarray

__all__ = [
    "BACKEND", "array_api", "NDArray", "Device", "CPUDevice",
    "cpu", "cpu_numpy", "all_devices", "default_device",
]
