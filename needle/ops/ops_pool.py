"""Pooling of NCHW images: ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``; and
its opposite, ``upsample_nearest2d``.

Each channel is pooled on its own, so the images are viewed as ``(N·C, H, W, 1)`` — one
channel, channels-last — which is the layout of the ``conv`` op's helpers:

* max pooling is :class:`MaxPool2d`: the windows come from the same strided im2col view as
  the convolution (padding is ``-inf``, never a maximum), and its gradient routes
  ``out_grad`` to each window's maximum and adds the windows back with
  :class:`~needle.ops.ops_conv.ConvInputGrad` and a one-hot kernel (col2im), so it is
  built from needle ops;
* average pooling is a convolution with a constant ``1/(K_h·K_w)`` kernel;
* adaptive average pooling multiplies by two constant averaging matrices, one per axis
  (PyTorch's bins: ``[⌊i·H/H_o⌋, ⌈(i+1)·H/H_o⌉)``), which covers every output size;
* nearest upsampling broadcasts each pixel to a block between two reshapes, so its
  gradient (the sum over each block) is BroadcastTo's.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..autograd import Tensor, TensorOp
from ..backends import NDArray, array_api
from .ops_conv import Conv, ConvInputGrad, Pair, _im2col, _out_size
from .ops_mathematic import _check_tensor


def _one_hot_kernel(kernel: Pair, like: Tensor) -> Tensor:
    """The (K_h, K_w, 1, K_h·K_w) kernel whose output channel u·K_w + v reads tap (u, v)."""
    kh, kw = kernel
    eye = np.eye(kh * kw, dtype=like.dtype).reshape((kh, kw, 1, kh * kw))
    return Tensor(eye, device=like.device, dtype=like.dtype, requires_grad=False)


def _windows(a: NDArray, kernel: Pair, stride: int, padding: Pair, out_hw: Pair) -> NDArray:
    """The (M·H_o·W_o, K_h·K_w) windows of ``a`` (M, H, W, 1), padded with ``-inf``."""
    (ph, pw), (m, h, w, _) = padding, a.shape
    if ph or pw:
        padded = array_api.full_like(a, -math.inf, shape=(m, h + 2 * ph, w + 2 * pw, 1))
        padded[:, ph : ph + h, pw : pw + w, :] = a
        a = padded
    return _im2col(a, kernel, (stride, stride), (0, 0), out_hw)


class MaxPool2d(TensorOp):
    """The maximum of each ``kernel`` window of an (N, C, H, W) batch → (N, C, H_o, W_o).

    ``H_o = ⌊(H + 2·p_h − K_h)/stride⌋ + 1`` (``W_o`` likewise); padding never wins. The
    gradient goes to the window's maximum, split equally between tied maxima.
    """

    def __init__(self, kernel: Pair, stride: int, padding: Pair):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def _out_hw(self, h: int, w: int) -> Pair:
        (kh, kw), (ph, pw), s = self.kernel, self.padding, self.stride
        return _out_size(h, kh, s, (ph, ph)), _out_size(w, kw, s, (pw, pw))

    def compute(self, a: NDArray):
        n, c, h, w = a.shape
        out_hw = self._out_hw(h, w)
        windows = _windows(
            a.reshape((n * c, h, w, 1)), self.kernel, self.stride, self.padding, out_hw
        )
        return windows.max(axis=1).reshape((n, c) + out_hw)

    def gradient(self, out_grad: Tensor, node: Tensor):
        a = node.inputs[0]
        n, c, h, w = a.shape
        out_hw = self._out_hw(h, w)
        taps = self.kernel[0] * self.kernel[1]
        windows = _windows(
            a.realize_cached_data().reshape((n * c, h, w, 1)),
            self.kernel,
            self.stride,
            self.padding,
            out_hw,
        )
        rows = windows.shape[0]
        maxima = node.realize_cached_data().reshape((rows, 1))
        hits = (windows == array_api.broadcast_to(maxima, windows.shape)).astype(a.dtype)
        ties = array_api.broadcast_to(hits.sum(axis=1, keepdims=True), hits.shape)
        share = Tensor.make_const((hits / ties).reshape((n * c,) + out_hw + (taps,)))
        spread = out_grad.reshape((n * c,) + out_hw + (1,)).broadcast_to(share.shape) * share
        col2im = ConvInputGrad((h, w), self.stride, self.padding)
        return col2im(spread, _one_hot_kernel(self.kernel, a)).reshape(a.shape)


# ----- the functions: argument checks, then the op or the composition -----------------------


def _pair(owner: str, name: str, value, low: int) -> Pair:
    """``value`` (an int or a pair of ints, each >= ``low``) as a pair."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= low for v in pair
    ):
        raise ValueError(
            f"{owner}: {name} must be an int >= {low} or a pair of them, got {value!r}"
        )
    return int(pair[0]), int(pair[1])


def _pool_arguments(owner: str, x: Tensor, kernel_size, stride, padding) -> tuple[Pair, int, Pair]:
    """Checked ``(kernel, stride, padding)`` for pooling ``x`` (N, C, H, W)."""
    _check_tensor(owner, x, "x")
    if len(x.shape) != 4:
        raise ValueError(
            f"{owner}: expected an NCHW input (N, C, H, W), got shape {tuple(x.shape)}"
        )
    kernel = _pair(owner, "kernel_size", kernel_size, 1)
    strides = kernel if stride is None else _pair(owner, "stride", stride, 1)
    if strides[0] != strides[1]:
        raise ValueError(f"{owner}: stride must be the same along H and W, got {stride!r}")
    padding = _pair(owner, "padding", padding, 0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(
            f"{owner}: padding {padding} must be at most half the kernel "
            f"{kernel}: a window would hold only padding"
        )
    h, w = x.shape[2:]
    if any(size + 2 * p < k for size, p, k in zip((h, w), padding, kernel)):
        raise ValueError(
            f"{owner}: kernel {kernel} is larger than the padded input: "
            f"{h}×{w} with padding {padding} gives "
            f"{h + 2 * padding[0]}×{w + 2 * padding[1]}"
        )
    return kernel, strides[0], padding


def max_pool2d(
    x: Tensor, kernel_size: int | Pair, stride: int | Pair | None = None, padding: int | Pair = 0
) -> Tensor:
    """Max pooling of NCHW images (PyTorch's ``F.max_pool2d``), with gradients.

    ``x`` (N, C, H, W) → (N, C, H_o, W_o), ``H_o = ⌊(H + 2·p − K)/stride⌋ + 1``; ``stride``
    defaults to the kernel size; padding (at most half the kernel) is never the maximum.

    >>> import needle as ndl
    >>> max_pool2d(ndl.init.rand(2, 3, 8, 8), 2).shape
    (2, 3, 4, 4)
    """
    kernel, step, pads = _pool_arguments("max_pool2d", x, kernel_size, stride, padding)
    return MaxPool2d(kernel, step, pads)(x)


def avg_pool2d(
    x: Tensor, kernel_size: int | Pair, stride: int | Pair | None = None, padding: int | Pair = 0
) -> Tensor:
    """Average pooling of NCHW images (PyTorch's ``F.avg_pool2d``: padding counts as zeros).

    ``x`` (N, C, H, W) → (N, C, H_o, W_o), sizes as :func:`max_pool2d`'s.

    >>> import needle as ndl
    >>> avg_pool2d(ndl.init.ones(1, 2, 4, 6), 2).shape
    (1, 2, 2, 3)
    """
    kernel, step, pads = _pool_arguments("avg_pool2d", x, kernel_size, stride, padding)
    n, c, h, w = x.shape
    average = np.full(kernel + (1, 1), 1.0 / (kernel[0] * kernel[1]), dtype=x.dtype)
    weight = Tensor(average, device=x.device, dtype=x.dtype, requires_grad=False)
    out = Conv(step, pads)(x.reshape((n * c, h, w, 1)), weight)
    return out.reshape((n, c) + tuple(out.shape[1:3]))


def _averaging_matrix(size: int, out_size: int, dtype: str) -> np.ndarray:
    """(out_size, size): row i averages PyTorch's adaptive bin i, ``[⌊i·size/out⌋,
    ⌈(i+1)·size/out⌉)``."""
    matrix = np.zeros((out_size, size), dtype=dtype)
    for i in range(out_size):
        start, stop = (i * size) // out_size, -(-((i + 1) * size) // out_size)
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix


def adaptive_avg_pool2d(x: Tensor, output_size: int | Pair) -> Tensor:
    """Average pooling to a fixed output size (PyTorch's ``F.adaptive_avg_pool2d``).

    ``x`` (N, C, H, W) → (N, C, H_o, W_o) with ``(H_o, W_o) = output_size``; output pixel
    (i, j) averages rows ``[⌊i·H/H_o⌋, ⌈(i+1)·H/H_o⌉)`` and the columns likewise.

    >>> import needle as ndl
    >>> adaptive_avg_pool2d(ndl.init.ones(2, 3, 7, 5), 1).shape
    (2, 3, 1, 1)
    """
    _check_tensor("adaptive_avg_pool2d", x, "x")
    if len(x.shape) != 4:
        raise ValueError(
            f"adaptive_avg_pool2d: expected an NCHW input (N, C, H, W), got shape {tuple(x.shape)}"
        )
    out_h, out_w = _pair("adaptive_avg_pool2d", "output_size", output_size, 1)
    n, c, h, w = x.shape
    if out_h > h or out_w > w:
        raise ValueError(
            f"adaptive_avg_pool2d: output_size {(out_h, out_w)} is larger than the input's {h}×{w}"
        )
    rows = Tensor(_averaging_matrix(h, out_h, x.dtype), device=x.device, requires_grad=False)
    cols = Tensor(
        _averaging_matrix(w, out_w, x.dtype).T.copy(), device=x.device, requires_grad=False
    )
    return rows @ (x @ cols)  # (H_o, H) @ (N, C, H, W_o) broadcasts over (N, C)


def upsample_nearest2d(x: Tensor, scale_factor: int | Pair) -> Tensor:
    """Nearest-neighbour upsampling of NCHW images by integer factors (PyTorch's
    ``F.interpolate(x, scale_factor=s, mode="nearest")`` with integer ``s``).

    ``x`` (N, C, H, W) → (N, C, H·s_h, W·s_w): each pixel becomes an s_h×s_w block;
    ``scale_factor`` is an int or an (s_h, s_w) pair of ints >= 1.

    >>> import needle as ndl
    >>> upsample_nearest2d(ndl.Tensor([[[[1.0, 2.0]]]]), (2, 1)).numpy().tolist()
    [[[[1.0, 2.0], [1.0, 2.0]]]]
    """
    _check_tensor("upsample_nearest2d", x, "x")
    if len(x.shape) != 4:
        raise ValueError(
            f"upsample_nearest2d: expected an NCHW input (N, C, H, W), got shape {tuple(x.shape)}"
        )
    s_h, s_w = _pair("upsample_nearest2d", "scale_factor", scale_factor, 1)
    n, c, h, w = x.shape
    blocks = x.reshape((n, c, h, 1, w, 1)).broadcast_to((n, c, h, s_h, w, s_w))
    return blocks.reshape((n, c, h * s_h, w * s_w))


__all__ = ["MaxPool2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "upsample_nearest2d"]
