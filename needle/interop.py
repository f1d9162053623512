"""Moving data between needle and NumPy or PyTorch: ``from_numpy`` and ``from_dlpack``
(the other direction is ``np.asarray(t)``, ``t.numpy()`` and ``t.__dlpack__``).

Whether memory is shared depends on the backend: under ``np`` a tensor's array *is* a NumPy
array, so nothing is copied either way; under ``nd`` the NDArray's buffer belongs to the
compiled module, so data is copied in and out.
"""

from __future__ import annotations

import numpy as np

from .autograd import Tensor
from .backends import DTYPES, kernels


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor of ``array``'s dtype and shape that does not require grad
    (torch.from_numpy). Under ``np`` it shares ``array``'s memory (writes show on both
    sides); under ``nd`` it is a copy."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    if array.dtype.name not in DTYPES:
        raise TypeError(
            f"from_numpy: dtype {array.dtype} is not supported; use one of {', '.join(DTYPES)}"
        )
    return Tensor.make_const(kernels.share_numpy(array))


def from_dlpack(source) -> Tensor:
    """A tensor from any object that exports DLPack on the CPU (a PyTorch tensor, a NumPy
    array, a needle tensor), that does not require grad (torch.from_dlpack). Zero-copy under
    ``np``; a copy under ``nd``."""
    return from_numpy(np.from_dlpack(source))


__all__ = ["from_numpy", "from_dlpack"]
