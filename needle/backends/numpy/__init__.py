"""needle's NumPy backend (``np``): tensors hold plain ``numpy.ndarray``s, NumPy is the array
namespace, and no compiled code is loaded.

:mod:`.devices` has the one CPU device (``cuda()`` is a disabled stand-in), :mod:`.kernels`
needle's fused computations as NumPy formulas.
"""

from . import kernels
from .devices import *  # noqa: F401,F403
from .devices import __all__  # noqa: F401
