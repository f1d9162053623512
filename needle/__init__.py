"""needle: a small deep-learning framework you can read end to end.

``import needle as ndl`` gives the Tensor, every op (``ndl.add``, ``ndl.matmul``, …),
the course's creation functions (``ndl.ones``, ``ndl.zeros_like``, …), the backend's names
(``ndl.BACKEND``, ``ndl.array_api``, ``ndl.NDArray``, ``ndl.Device`` and the devices), and
every subpackage (``nn``, ``optim``, ``data``, ``apps``, ``viz``, ``distributed``, …),
loaded on first use.
"""

from . import autograd, backends, init, ops
from .autograd import (
    AnomalyError,
    Tensor,
    TensorTuple,
    Value,
    detect_anomaly,
    is_grad_enabled,
    no_grad,
)
from .backend_selection import *  # noqa: F401,F403  (BACKEND, array_api, NDArray, Device, ...)
from .backends import DTYPES
from .backends.denormals import flush_denormals, is_flush_denormal, set_flush_denormal
from .backends.threads import get_num_threads, set_num_threads
from .init import ones, ones_like, zeros, zeros_like
from .interop import from_dlpack, from_numpy
from .ops import *  # noqa: F401,F403

__version__ = "0.1.0"

# Top-level names that live in a submodule, loaded on first use.
_LAZY_NAMES = {"save": "serialization", "load": "serialization"}


def _submodules() -> set[str]:
    """The names of needle's subpackages and modules (``nn``, ``viz``, ``distributed``, ...)."""
    import pkgutil

    modules = pkgutil.iter_modules(__path__)  # noqa: F405  (the package's own __path__)
    return {m.name for m in modules if not m.name.startswith("_")}


def __getattr__(name: str):
    # Subpackages load on first use, so `import needle` stays fast.
    import importlib

    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    if name in _submodules():
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'needle' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES) | _submodules())
