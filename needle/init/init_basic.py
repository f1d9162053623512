"""Tensors filled with constants or random draws.

Random draws go through the device's ``rand``/``randn`` (NumPy's global generator on
the CPU), in the course's order, so ``np.random.seed`` reproduces the course's numbers.
"""

from __future__ import annotations

from .._validation import check_indices, check_shape
from ..autograd import Tensor
from ..backends import Device, NDArray, check_dtype, default_device, kernels


def _device(device: Device | None) -> Device:
    return default_device() if device is None else device


def _draw(device: Device, kind: str, shape: tuple, dtype) -> NDArray:
    """``device.rand``/``randn`` draws for a tensor of ``dtype`` (a float dtype).

    Under ``nd`` the draws are cast to the dtype before any scaling, which then runs in
    that dtype (as the course's NDArray does); under ``np`` they stay float64 and the scaled
    result is cast, as in the course's NumPy framework.
    """
    return kernels.draws(device, kind, shape, dtype)


def _float_dtype(owner: str, dtype) -> str:
    """``dtype`` checked to be float32 or float64: random draws are real numbers."""
    name = check_dtype(owner, dtype)
    if name not in ("float32", "float64"):
        raise TypeError(
            f"{owner}: draws real numbers, so dtype must be float32 or float64, got {name}; "
            f"convert the result with .astype('{name}')"
        )
    return name


def rand(
    *shape: int,
    low: float = 0.0,
    high: float = 1.0,
    device: Device | None = None,
    dtype: str = "float32",
    requires_grad: bool = False,
) -> Tensor:
    """Uniform draws in [low, high): ``device.rand(*shape) * (high - low) + low``.

    >>> rand(2, 3).shape
    (2, 3)
    """
    check_shape("rand", shape)
    device = _device(device)
    array = _draw(device, "rand", shape, _float_dtype("rand", dtype)) * (high - low) + low
    return Tensor(array, device=device, dtype=dtype, requires_grad=requires_grad)


def randn(
    *shape: int,
    mean: float = 0.0,
    std: float = 1.0,
    device: Device | None = None,
    dtype: str = "float32",
    requires_grad: bool = False,
) -> Tensor:
    """Normal draws: ``device.randn(*shape) * std + mean``."""
    check_shape("randn", shape)
    device = _device(device)
    array = _draw(device, "randn", shape, _float_dtype("randn", dtype)) * std + mean
    return Tensor(array, device=device, dtype=dtype, requires_grad=requires_grad)


def constant(
    *shape: int,
    c: float = 1.0,
    device: Device | None = None,
    dtype: str = "float32",
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of ``shape`` filled with ``c`` (cast to ``dtype``: any of
    ``needle.backends.DTYPES``, e.g. ``ones(n, dtype="int64")`` for class labels)."""
    check_shape("constant", shape)
    device = _device(device)
    array = device.full(shape, c, dtype=check_dtype("constant", dtype))
    return Tensor.make_const(array, requires_grad=requires_grad)


def ones(
    *shape: int, device: Device | None = None, dtype: str = "float32", requires_grad: bool = False
) -> Tensor:
    """A tensor of ones."""
    return constant(*shape, c=1.0, device=device, dtype=dtype, requires_grad=requires_grad)


def zeros(
    *shape: int, device: Device | None = None, dtype: str = "float32", requires_grad: bool = False
) -> Tensor:
    """A tensor of zeros."""
    return constant(*shape, c=0.0, device=device, dtype=dtype, requires_grad=requires_grad)


def randb(
    *shape: int,
    p: float = 0.5,
    device: Device | None = None,
    dtype: str = "bool",
    requires_grad: bool = False,
) -> Tensor:
    """Bernoulli draws: ``device.rand(*shape) <= p`` (True with probability p).

    The draws are float32 under ``nd`` (float64 under ``np``), as in the course; the
    result is a bool tensor by default, or 0/1 in ``dtype``.
    """
    check_shape("randb", shape)
    device = _device(device)
    array = _draw(device, "rand", shape, "float32") <= p
    return Tensor(array, device=device, dtype=dtype, requires_grad=requires_grad)


def one_hot(
    n: int, i, device: Device | None = None, dtype: str = "float32", requires_grad: bool = False
) -> Tensor:
    """One-hot rows: shape ``i.shape + (n,)``, row k has a 1 at column ``i[k]``.

    ``i`` is a Tensor or array of integer labels in [0, n).
    """
    device = _device(device)
    labels = check_indices("one_hot", "labels", i.numpy() if isinstance(i, Tensor) else i, n)
    return Tensor(
        device.one_hot(n, labels, dtype=check_dtype("one_hot", dtype)),
        device=device,
        requires_grad=requires_grad,
    )


def zeros_like(
    array: Tensor, *, device: Device | None = None, requires_grad: bool = False
) -> Tensor:
    """Zeros of ``array``'s shape and dtype."""
    return zeros(
        *array.shape, dtype=array.dtype, device=device or array.device, requires_grad=requires_grad
    )


def ones_like(
    array: Tensor, *, device: Device | None = None, requires_grad: bool = False
) -> Tensor:
    """Ones of ``array``'s shape and dtype."""
    return ones(
        *array.shape, dtype=array.dtype, device=device or array.device, requires_grad=requires_grad
    )
