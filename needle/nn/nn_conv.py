"""Convolutional layers on NCHW images: ``Conv``, ``Conv2d``, ``ConvTranspose2d``,
``BatchNorm2d``, pooling and ``Upsample``.

``Conv`` and ``BatchNorm2d`` follow the course's hw4 exactly (parameters created, and
drawn, in its order and with its bounds), so a seeded model gives the course's numbers.
``Conv2d`` and ``ConvTranspose2d`` take PyTorch's signatures and options and draw like
``Conv``. Internally the layers move the channels last (NHWC), which is the layout of the
convolution ops and of BatchNorm1d's ``(rows, features)``.
"""

from __future__ import annotations

import math
from typing import Any

from .. import init, ops
from .._validation import check_positive_int
from ..autograd import Tensor
from ..backends import Device
from ..ops.ops_conv import (
    _check_geometry,
    _check_output_size,
    _check_pair,
    _check_transposed_geometry,
    _check_transposed_hw,
)
from ..ops.ops_pool import _pair as _check_pool_pair
from .module import Module, Parameter
from .nn_basic import BatchNorm1d, _check_tensor


def _first(value: Any) -> Any:
    """A tuple ``kernel_size``/``stride`` reduced to its first element (the course's rule)."""
    return value[0] if isinstance(value, (tuple, list)) else value


def _nchw_to_nhwc(x: Tensor) -> Tensor:
    # one Permute, not the course's two transposes: a view either way, half the graph nodes
    return ops.permute(x, 0, 2, 3, 1)


def _nhwc_to_nchw(x: Tensor) -> Tensor:
    return ops.permute(x, 0, 3, 1, 2)


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


def _conv_parameters(
    shape: tuple, fan_in: int, out_channels: int, bias: bool, device: Device | None, dtype: str
) -> tuple[Parameter, Parameter | None]:
    """A convolution's ``(weight, bias)``, drawn in this order as the course's ``Conv`` draws.

    ``weight`` (``shape``) ~ ``kaiming_uniform(fan_in, …)``, bound √2·√(3/fan_in); ``bias``
    (out_channels,) ~ U(−1/√fan_in, 1/√fan_in), or None (no draw) without ``bias``.
    """
    kernel_area = shape[0] * shape[1]
    weight = Parameter(
        init.kaiming_uniform(
            fan_in,
            out_channels * kernel_area,
            shape=shape,
            device=device,
            dtype=dtype,
            requires_grad=True,
        )
    )
    if not bias:
        return weight, None
    bound = 1.0 / math.sqrt(fan_in)
    return weight, Parameter(
        init.rand(
            out_channels, low=-bound, high=bound, device=device, dtype=dtype, requires_grad=True
        )
    )


def _add_bias(out: Tensor, bias: Tensor | None) -> Tensor:
    """``out`` (N, H, W, C) plus ``bias`` (C,) broadcast over the pixels (None: unchanged)."""
    if bias is None:
        return out
    return out + bias.reshape((1, 1, 1, out.shape[3])).broadcast_to(out.shape)


def _check_groups(owner: str, groups: int, in_channels: int, out_channels: int) -> int:
    """``groups`` as a positive int that divides both channel counts."""
    groups = check_positive_int(owner, "groups", groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{owner}: groups={groups} must divide in_channels={in_channels} and "
            f"out_channels={out_channels}"
        )
    return groups


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
        k = self.kernel_size
        self.weight, self.bias = _conv_parameters(
            (k, k, self.in_channels, self.out_channels),
            self.in_channels * k * k,
            self.out_channels,
            bias,
            device,
            dtype,
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
        return _add_bias(
            ops.conv(x, self.weight, stride=self.stride, padding=self.padding), self.bias
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )


class Conv2d(Module):
    """2-D convolution of NCHW images with PyTorch's signature and options:
    (N, in, H, W) → (N, out, H_o, W_o).

    ``H_o = ⌊(H + top + bottom − dilation_h·(K_h − 1) − 1)/stride_h⌋ + 1`` (``W_o``
    likewise). ``kernel_size``, ``stride`` and ``dilation`` are an int or an (H, W) pair;
    ``padding`` an int, an (H, W) pair, ``((top, bottom), (left, right))``, ``"valid"`` or
    ``"same"`` (stride 1; an odd total puts the extra pixel after, as PyTorch).
    ``groups`` splits the channels into independent convolutions (``groups=in_channels``
    is depthwise). Unlike the course's :class:`Conv`, a pair ``kernel_size`` is a
    rectangle and the padding defaults to 0.

    Parameters, drawn in this order as :class:`Conv` draws them, with
    ``fan_in = in/groups·K_h·K_w``: ``weight`` (K_h, K_w, in/groups, out) (PyTorch's
    weight permuted by (2, 3, 1, 0)), then ``bias`` (out,), or None with ``bias=False``.
    ``Conv2d(i, o, k, padding=k // 2)`` draws and computes exactly what ``Conv(i, o, k)``
    does. Attributes hold the checked arguments as pairs, ``padding`` as
    ``((top, bottom), (left, right))``.

    >>> import needle as ndl
    >>> layer = Conv2d(4, 6, (3, 2), padding="same", dilation=2, groups=2)
    >>> layer(ndl.init.ones(1, 4, 5, 5)).shape
    (1, 6, 5, 5)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple,
        stride: int | tuple = 1,
        padding: int | tuple | str = 0,
        dilation: int | tuple = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("Conv2d", "in_channels", in_channels)
        self.out_channels = check_positive_int("Conv2d", "out_channels", out_channels)
        self.kernel_size = _check_pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride, self.padding, self.dilation = _check_geometry(
            "Conv2d", self.kernel_size, stride, padding, dilation
        )
        self.groups = _check_groups("Conv2d", groups, self.in_channels, self.out_channels)
        (kh, kw), group_in = self.kernel_size, self.in_channels // self.groups
        self.weight, self.bias = _conv_parameters(
            (kh, kw, group_in, self.out_channels),
            group_in * kh * kw,
            self.out_channels,
            bias,
            device,
            dtype,
        )

    def forward(self, x: Tensor) -> Tensor:
        """(N, in, H, W) → (N, out, H_o, W_o)."""
        name = f"Conv2d({self.in_channels}, {self.out_channels})"
        _check_nchw(name, x, self.in_channels)
        _check_output_size(
            name, tuple(x.shape), tuple(x.shape[2:]), self.kernel_size, self.padding, self.dilation
        )
        return _nhwc_to_nchw(self.forward_nhwc(_nchw_to_nhwc(x)))

    def forward_nhwc(self, x: Tensor) -> Tensor:
        """The same layer on channels-last tensors: (N, H, W, in) → (N, H_o, W_o, out)."""
        out = ops.convolution(
            x,
            self.weight,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )
        return _add_bias(out, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}"
        )


class ConvTranspose2d(Module):
    """Transposed 2-D convolution of NCHW images with PyTorch's signature:
    (N, in, H, W) → (N, out, H_o, W_o), the gradient of a :class:`Conv2d` from out to in.

    ``H_o = (H − 1)·s_h − top − bottom + d_h·(K_h − 1) + 1 + output_padding_h`` (``W_o``
    likewise; s the stride, d the dilation). ``padding`` (an int, an (H, W) pair or
    ``((top, bottom), (left, right))``) crops the output; ``output_padding`` (each < the
    stride) picks among the sizes a strided convolution maps to the same input size.
    ``groups`` as in Conv2d.

    Parameters, drawn in this order as :class:`Conv` draws them, with
    ``fan_in = in/groups·K_h·K_w``: ``weight`` (K_h, K_w, out/groups, in) — the weight of
    the convolution it transposes; PyTorch's (in, out/groups, K_h, K_w) weight permuted by
    (2, 3, 1, 0) — then ``bias`` (out,), or None with ``bias=False``.

    >>> import needle as ndl
    >>> up = ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
    >>> up(ndl.init.ones(2, 8, 5, 5)).shape
    (2, 4, 10, 10)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple,
        stride: int | tuple = 1,
        padding: int | tuple = 0,
        output_padding: int | tuple = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple = 1,
        *,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        name = "ConvTranspose2d"
        self.in_channels = check_positive_int(name, "in_channels", in_channels)
        self.out_channels = check_positive_int(name, "out_channels", out_channels)
        self.kernel_size = _check_pair(name, "kernel_size", kernel_size, 1)
        self.stride, self.padding, self.output_padding, self.dilation = _check_transposed_geometry(
            name, self.kernel_size, stride, padding, output_padding, dilation
        )
        self.groups = _check_groups(name, groups, self.in_channels, self.out_channels)
        (kh, kw), group_in = self.kernel_size, self.in_channels // self.groups
        self.weight, self.bias = _conv_parameters(
            (kh, kw, self.out_channels // self.groups, self.in_channels),
            group_in * kh * kw,
            self.out_channels,
            bias,
            device,
            dtype,
        )

    def forward(self, x: Tensor) -> Tensor:
        """(N, in, H, W) → (N, out, H_o, W_o)."""
        name = f"ConvTranspose2d({self.in_channels}, {self.out_channels})"
        _check_nchw(name, x, self.in_channels)
        _check_transposed_hw(
            name,
            tuple(x.shape),
            tuple(x.shape[2:]),
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.output_padding,
        )
        return _nhwc_to_nchw(self.forward_nhwc(_nchw_to_nhwc(x)))

    def forward_nhwc(self, x: Tensor) -> Tensor:
        """The same layer on channels-last tensors: (N, H, W, in) → (N, H_o, W_o, out)."""
        out = ops.conv_transpose(
            x,
            self.weight,
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            dilation=self.dilation,
            groups=self.groups,
        )
        return _add_bias(out, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, "
            f"output_padding={self.output_padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}"
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

    def __init__(
        self, kernel_size: int | tuple, stride: int | tuple | None = None, padding: int | tuple = 0
    ) -> None:
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


class Upsample(Module):
    """Nearest-neighbour upsampling of NCHW images by integer factors, PyTorch's
    ``Upsample(scale_factor=s, mode="nearest")``: (N, C, H, W) → (N, C, H·s_h, W·s_w).

    ``scale_factor`` is an int or an (s_h, s_w) pair of ints >= 1; ``mode`` must be
    ``"nearest"``. No parameters.

    >>> import needle as ndl
    >>> Upsample(scale_factor=2)(ndl.init.ones(1, 3, 4, 5)).shape
    (1, 3, 8, 10)
    """

    def __init__(self, scale_factor: int | tuple, mode: str = "nearest") -> None:
        super().__init__()
        if mode != "nearest":
            raise ValueError(f"Upsample: mode={mode!r} is not available; only 'nearest' is")
        self.scale_factor = _check_pool_pair("Upsample", "scale_factor", scale_factor, 1)
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C, H·s_h, W·s_w)."""
        return ops.upsample_nearest2d(x, self.scale_factor)

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}"


__all__ = [
    "Conv",
    "Conv2d",
    "ConvTranspose2d",
    "BatchNorm2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Upsample",
]
