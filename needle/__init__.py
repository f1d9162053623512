"""needle: a small deep-learning framework you can read end to end.

``import needle as ndl`` gives the Tensor, every op (``ndl.add``, ``ndl.matmul``, …),
devices, and the subpackages ``init``, ``nn``, ``optim``, ``data`` and ``apps``.
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
from .backends import Device, all_devices, cpu, cpu_numpy, cuda, default_device
from .backends.denormals import flush_denormals, is_flush_denormal, set_flush_denormal
from .ops import *  # noqa: F401,F403

__version__ = "0.1.0"


def __getattr__(name: str):
    # The heavier subpackages load on first use so `import needle` stays fast.
    import importlib

    if name in {"nn", "optim", "data", "apps", "testing", "serialization", "training", "cli"}:
        return importlib.import_module(f".{name}", __name__)
    if name in {"save", "load"}:
        return getattr(importlib.import_module(".serialization", __name__), name)
    raise AttributeError(f"module 'needle' has no attribute {name!r}")
