"""Convolutional layers on NCHW images: ``Conv``, ``BatchNorm2d`` and pooling.

Both follow the course's hw4 exactly (parameters created, and drawn, in its order and
with its bounds), so a seeded model gives the course's numbers. Internally they move
the channels last (NHWC), which is the layout of the ``conv`` op and of BatchNorm1d's
``(rows, features)``.
"""

from __future__ import annotations

import math
from typing import Any

from .. import init, ops
from .._validation import check_positive_int
from ..autograd import Tensor
from ..backends import Device
from .module import Module, Parameter
from .nn_basic import BatchNorm1d, _check_tensor


def _first(value: Any) -> Any:
    """A tuple ``kernel_size``/``stride`` reduced to its first element (the course's rule)."""
    return value[0] if isinstance(value, (tuple, list)) else value


def _nchw_to_nhwc(x: Tensor) -> Tensor:
    return x.transpose((1, 2)).transpose((2, 3))


def _nhwc_to_nchw(x: Tensor) -> Tensor:
    return x.transpose((2, 3)).transpose((1, 2))


def _check_nchw(layer: str, x: Any, channels: int) -> None:
    """Raise unless ``x`` is a 4-D NCHW tensor with ``channels`` channels on axis 1."""
    _check_tensor(layer, x)
    if len(x.shape) == 4 and x.shape[1] == channels:
        return
    if len(x.shape) == 4 and x.shape[3] == channels:
        hint = "; it looks NHWC: transpose to NCHW, e.g. x.transpose((2, 3)).transpose((1, 2))"
    elif len(x.shape) == 4:
        hint = f"; axis 1 (channels) has {x.shape[1]}"
    else:
        hint = "; add the batch axis for a single image: x.reshape((1, C, H, W))"
    raise ValueError(
        f"{layer}: expected an NCHW input of shape (N, {channels}, H, W), got "
        f"{tuple(x.shape)}{hint}"
    )


class Conv(Module):
    """2-D convolution of NCHW images: (N, in, H, W) → (N, out, H_o, W_o), padding K // 2.

    ``H_o = ⌊(H + 2·(K//2) − K)/stride⌋ + 1`` ("same" size for odd K and stride 1).

    Parameters, created (and drawn) in this order: ``weight`` (K, K, in, out) ~
    ``kaiming_uniform(in·K², out·K², shape=...)``, then ``bias`` (out,) ~
    U(−1/√(in·K²), 1/√(in·K²)), absent (None, no draw) with ``bias=False``.
    PyTorch's ``Conv2d`` weight is ``weight`` permuted by (3, 2, 0, 1).

    >>> import needle as ndl
    >>> Conv(3, 8, 3, stride=2)(ndl.init.ones(2, 3, 9, 9)).shape
    (2, 8, 5, 5)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple,
        stride: int | tuple = 1,
        bias: bool = True,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("Conv", "in_channels", in_channels)
        self.out_channels = check_positive_int("Conv", "out_channels", out_channels)
        self.kernel_size = check_positive_int("Conv", "kernel_size", _first(kernel_size))
        self.stride = check_positive_int("Conv", "stride", _first(stride))
        self.padding = self.kernel_size // 2
        k, fan_in = self.kernel_size, self.in_channels * self.kernel_size**2
        shape = (k, k, self.in_channels, self.out_channels)
        self.weight = Parameter(
            init.kaiming_uniform(fan_in, self.out_channels * k * k, shape=shape,
                                 device=device, dtype=dtype, requires_grad=True)
        )
        self.bias = None
        if bias:
            bound = 1.0 / math.sqrt(fan_in)
            self.bias = Parameter(
                init.rand(self.out_channels, low=-bound, high=bound, device=device, dtype=dtype,
                          requires_grad=True)
            )

    def forward(self, x: Tensor) -> Tensor:
        """(N, in, H, W) → (N, out, H_o, W_o)."""
        return _nhwc_to_nchw(self.forward_nhwc(self.to_nhwc(x)))

    def to_nhwc(self, x: Tensor) -> Tensor:
        """``x`` checked to be (N, in, H, W) and viewed channels-last, (N, H, W, in)."""
        _check_nchw(f"Conv(in_channels={self.in_channels})", x, self.in_channels)
        return _nchw_to_nhwc(x)

    def forward_nhwc(self, x: Tensor) -> Tensor:
        """The same layer on channels-last tensors: (N, H, W, in) → (N, H_o, W_o, out).

        Blocks that chain layers (``apps.models.ConvBN``) stay channels-last between them:
        under the ``nd`` backend every op on an NCHW view of NHWC data copies it first.
        """
        out = ops.conv(x, self.weight, stride=self.stride, padding=self.padding)
        if self.bias is not None:
            out = out + self.bias.reshape((1, 1, 1, self.out_channels)).broadcast_to(out.shape)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )


class BatchNorm2d(BatchNorm1d):
    """Batch normalisation of each channel of NCHW images over (N, H, W).

    The same parameters (``weight``, ``bias``, ``(dim,)``) and buffers (``running_mean``,
    ``running_var``) as :class:`BatchNorm1d`, which it applies to the ``(N·H·W, C)``
    matrix of pixels. (N, C, H, W) → (N, C, H, W).

    >>> import needle as ndl
    >>> BatchNorm2d(3)(ndl.init.rand(2, 3, 4, 4)).shape
    (2, 3, 4, 4)
    """

    def forward(self, x: Tensor) -> Tensor:
        """(N, dim, H, W) → (N, dim, H, W), each channel normalised."""
        _check_nchw(f"BatchNorm2d(dim={self.dim})", x, self.dim)
        return _nhwc_to_nchw(self.forward_nhwc(_nchw_to_nhwc(x)))

    def forward_nhwc(self, x: Tensor) -> Tensor:
        """The same normalisation on channels-last tensors: (N, H, W, dim) → same shape."""
        n, h, w, c = x.shape
        return super().forward(x.reshape((n * h * w, c))).reshape((n, h, w, c))


class MaxPool2d(Module):
    """Max pooling of NCHW images, PyTorch's ``MaxPool2d``: (N, C, H, W) → (N, C, H_o, W_o).

    ``H_o = ⌊(H + 2·padding − kernel_size)/stride⌋ + 1`` (``W_o`` likewise); ``kernel_size``
    and ``padding`` are an int or an (H, W) pair, ``stride`` an int (default: the kernel
    size). Padding, at most half the kernel, never wins. No parameters.

    >>> import needle as ndl
    >>> MaxPool2d(2)(ndl.init.rand(1, 3, 6, 6)).shape
    (1, 3, 3, 3)
    """

    def __init__(self, kernel_size: int | tuple, stride: int | tuple | None = None,
                 padding: int | tuple = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C, H_o, W_o)."""
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    """Average pooling of NCHW images, PyTorch's ``AvgPool2d`` (padding counts as zeros);
    the arguments and sizes of :class:`MaxPool2d`.

    >>> import needle as ndl
    >>> AvgPool2d(3, stride=1, padding=1)(ndl.init.rand(1, 3, 6, 6)).shape
    (1, 3, 6, 6)
    """

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C, H_o, W_o)."""
        return ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed size, PyTorch's ``AdaptiveAvgPool2d``:
    (N, C, H, W) → (N, C, *output_size); ``output_size`` an int or an (H_o, W_o) pair, at
    most the input's size. ``AdaptiveAvgPool2d(1)`` is global average pooling.

    >>> import needle as ndl
    >>> AdaptiveAvgPool2d((2, 3))(ndl.init.rand(1, 4, 7, 9)).shape
    (1, 4, 2, 3)
    """

    def __init__(self, output_size: int | tuple) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C, H_o, W_o)."""
        return ops.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


__all__ = ["Conv", "BatchNorm2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]
