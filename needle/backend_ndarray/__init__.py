"""needle's strided NDArray backend (the course's ``needle.backend_ndarray``).

``from needle import backend_ndarray as nd`` gives the :class:`NDArray`, the devices
(``nd.cpu()`` compiled, ``nd.cuda()`` optional, ``nd.cpu_numpy()`` NumPy-backed) and
NumPy-named module functions (``nd.array``, ``nd.zeros``, ``nd.sum``, ``nd.matmul``, …)
so that op bodies run unchanged on this package or on NumPy.
"""
from .ndarray import *  # noqa: F401,F403
from .ndarray import CPU_IMPORT_ERROR, __all__  # noqa: F401
