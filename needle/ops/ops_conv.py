"""Convolution ops: ``conv`` (NHWC × KKIO) with its two gradient ops, and ``pad``.

The convolution is lowered onto a strided view: the zero-padded input is viewed as
``(N, H_o, W_o, K_h, K_w, C)`` (im2col, no copy until it is compacted), compacted to a
``(N·H_o·W_o, K_h·K_w·C)`` matrix and multiplied by the weight in **one** matmul.

The gradients are two more ops of the same kind, each one matmul:

* :class:`ConvInputGrad` — at stride 1 a full convolution of ``G`` with the flipped
  weight; otherwise ``(G @ Wᵀ)`` scattered back onto the input positions (col2im: one
  strided add per kernel offset, ``K_h·K_w`` of them, never a loop over pixels);
* :class:`ConvWeightGrad` — ``im2col(a)ᵀ @ G``.

The three ops are each other's gradients (``conv`` is bilinear in input and weight), so
every gradient is built from needle ops and can be differentiated again. This replaces
hw4's dilate-and-convolve recipe: it is correct for every stride and padding without the
crop that recipe needs, and it never multiplies the zeros a dilation inserts
(docs/conv.md has the derivation and the comparison).

Everything runs through ``array_api``, and the strided view through
``kernels.strided_view`` (each backend spells it its own way).
"""

from __future__ import annotations

import numbers

from ..autograd import Tensor, TensorOp
from ..backends import NDArray, array_api, kernels
from .ops_mathematic import _check_tensor

Pair = tuple[int, int]


def _compact_strides(shape: tuple) -> tuple:
    """Row-major strides, in elements, of an array of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


# ----- shape arithmetic ----------------------------------------------------------------------


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length along one axis: ⌊(size + 2·pad − kernel)/stride⌋ + 1."""
    return (size + 2 * pad - kernel) // stride + 1


def _zero_pad_hw(a: NDArray, top: int, bottom: int, left: int, right: int) -> NDArray:
    """``a`` (N, H, W, C) with zero rows above/below and zero columns left/right.

    A zero array and one slice assignment: the same as ``pad`` but without NumPy's
    general ``np.pad`` machinery, which costs more than the copy itself here.
    """
    n, h, w, c = a.shape
    out = array_api.zeros((n, top + h + bottom, left + w + right, c), dtype=a.dtype,
                          device=a.device)
    out[:, top : top + h, left : left + w, :] = a
    return out


def _im2col(a: NDArray, kernel: Pair, stride: int, pad_before: Pair, out_hw: Pair) -> NDArray:
    """The patches of ``a`` (N, H, W, C) as the compact matrix (N·H_o·W_o, K_h·K_w·C).

    Row (n, i, j) holds the receptive field of output pixel (i, j) of image n, in
    (u, v, c) order, which matches the weight reshaped to (K_h·K_w·C, C_out). ``a`` is
    zero-padded by ``pad_before`` above and left, and below and right by what the
    ``out_hw`` windows reach.
    """
    (kh, kw), (top, left), (ho, wo) = kernel, pad_before, out_hw
    n, h, w, c = a.shape
    bottom = max(0, (ho - 1) * stride + kh - top - h)
    right = max(0, (wo - 1) * stride + kw - left - w)
    if top or bottom or left or right:
        a = _zero_pad_hw(a, top, bottom, left, right)
    sn, sh, sw, sc = _compact_strides(a.shape)
    view = kernels.strided_view(
        a, (n, ho, wo, kh, kw, c), (sn, stride * sh, stride * sw, sh, sw, sc)
    )
    return view.reshape((n * ho * wo, kh * kw * c))


def _live_taps(in_hw: Pair, out_hw: Pair, kernel: Pair, stride: int,
               padding: Pair) -> tuple[slice, slice]:
    """The kernel rows and columns that can meet the input; the others only see padding.

    Kernel row u reads input rows i·s + u − p for i < H_o, so it matters only if
    p − (H_o − 1)·s ≤ u < p + H. Deep layers on small images drop most of their kernel
    this way (a 3×3 kernel on a 1×1 image keeps only its centre), and the matmuls skip
    the zeros. An empty range (every window in the padding) keeps the whole kernel.
    """
    live = []
    for size, out, k, p in zip(in_hw, out_hw, kernel, padding):
        first, stop = max(0, p - (out - 1) * stride), min(k, p + size)
        live.append(slice(first, stop) if first < stop else slice(0, k))
    return live[0], live[1]


def _span(taps: slice) -> int:
    return taps.stop - taps.start


# ----- the ops -------------------------------------------------------------------------------


class Conv(TensorOp):
    """Cross-correlation of an NHWC batch with a (K_h, K_w, C_in, C_out) weight.

    ``out[n,i,j,o] = Σ_{u,v,c} a_pad[n, i·s+u, j·s+v, c] · b[u,v,c,o]``, with ``a`` zero-
    padded by ``padding`` (an int, or a pair ``(p_h, p_w)``) on axes 1 and 2.
    The class default padding is 0 (the course's); :func:`conv`'s is 1.
    """

    def __init__(self, stride: int = 1, padding: int | Pair = 0):
        self.stride = stride
        self.padding = _pair(padding)

    def compute(self, a: NDArray, b: NDArray):
        n, h, w, _ = a.shape
        (ph, pw), s = self.padding, self.stride
        out_hw = (_out_size(h, b.shape[0], s, ph), _out_size(w, b.shape[1], s, pw))
        rows, cols = _live_taps((h, w), out_hw, b.shape[:2], s, self.padding)
        b = b[rows, cols]
        kh, kw, c, o = b.shape
        patches = _im2col(a, (kh, kw), s, (ph - rows.start, pw - cols.start), out_hw)
        product = array_api.matmul(patches, b.reshape((kh * kw * c, o)))
        return product.reshape((n,) + out_hw + (o,))

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, b = node.inputs
        kernel = b.shape[:2]
        grad_a = grad_b = None
        if a.requires_grad:  # e.g. not for the data fed to a network's first layer
            grad_a = ConvInputGrad(a.shape[1:3], self.stride, self.padding)(out_grad, b)
        if b.requires_grad:
            grad_b = ConvWeightGrad(kernel, self.stride, self.padding)(a, out_grad)
        return grad_a, grad_b


class ConvInputGrad(TensorOp):
    """The gradient of :class:`Conv` with respect to its input (a transposed convolution).

    Inputs: ``g`` (N, H_o, W_o, C_out), the out_grad, and the weight ``b``
    (K_h, K_w, C_in, C_out). Output: (N, H, W, C_in), with ``(H, W)`` = ``input_hw``.
    """

    def __init__(self, input_hw: Pair, stride: int, padding: Pair):
        self.input_hw = tuple(input_hw)
        self.stride = stride
        self.padding = padding

    def compute(self, g: NDArray, b: NDArray):
        (ph, pw), s = self.padding, self.stride
        rows, cols = _live_taps(self.input_hw, g.shape[1:3], b.shape[:2], s, self.padding)
        b, pad_before = b[rows, cols], (ph - rows.start, pw - cols.start)
        if s == 1 and pad_before[0] < _span(rows) and pad_before[1] < _span(cols):
            return self._full_convolution(g, b, pad_before)
        return self._col2im(g, b, pad_before)

    def _full_convolution(self, g: NDArray, b: NDArray, pad_before: Pair) -> NDArray:
        """Stride 1: ``g`` padded by K − 1 − p, convolved with the flipped weight.

        The same numbers as :meth:`_col2im`, computed as im2col + one matmul with an inner
        dimension of K·K·C_out, which runs faster than K·K strided adds.
        """
        kh, kw, c, o = b.shape
        (h, w), (top, left) = self.input_hw, pad_before
        flipped = array_api.swapaxes(array_api.flip(b, (0, 1)), 2, 3)  # (K_h, K_w, C_out, C_in)
        patches = _im2col(g, (kh, kw), 1, (kh - 1 - top, kw - 1 - left), (h, w))
        product = array_api.matmul(patches, flipped.reshape((kh * kw * o, c)))
        return product.reshape((g.shape[0], h, w, c))

    def _col2im(self, g: NDArray, b: NDArray, pad_before: Pair) -> NDArray:
        """Any stride: ``G @ Wᵀ`` (one matmul), each kernel offset's slab added in place."""
        kh, kw, c, o = b.shape
        n, ho, wo, _ = g.shape
        (h, w), (top, left), s = self.input_hw, pad_before, self.stride
        # cols[n,i,j,u,v,c] = Σ_o g[n,i,j,o]·b[u,v,c,o]
        b_t = array_api.swapaxes(b.reshape((kh * kw * c, o)), 0, 1)
        cols = array_api.matmul(g.reshape((n * ho * wo, o)), b_t).reshape((n, ho, wo, kh, kw, c))
        # The accumulator (the padded input) has two unit axes so that the slab
        # cols[:, :, :, u:u+1, v:v+1] adds without a reshape (slices, not ints: an NDArray
        # int index keeps its axis).
        acc_h = max(top + h, (ho - 1) * s + kh)
        acc_w = max(left + w, (wo - 1) * s + kw)
        acc = array_api.zeros((n, acc_h, acc_w, 1, 1, c), dtype=cols.dtype, device=cols.device)
        for u in range(kh):
            for v in range(kw):
                rows = slice(u, u + (ho - 1) * s + 1, s)
                columns = slice(v, v + (wo - 1) * s + 1, s)
                acc[:, rows, columns] += cols[:, :, :, u : u + 1, v : v + 1]
        return acc[:, top : top + h, left : left + w].reshape((n, h, w, c))

    def gradient(self, out_grad: Tensor, node: Tensor):
        g, b = node.inputs
        grad_g = Conv(self.stride, self.padding)(out_grad, b) if g.requires_grad else None
        grad_b = None
        if b.requires_grad:
            grad_b = ConvWeightGrad(b.shape[:2], self.stride, self.padding)(out_grad, g)
        return grad_g, grad_b


class ConvWeightGrad(TensorOp):
    """The gradient of :class:`Conv` with respect to its weight.

    Inputs: the conv input ``a`` (N, H, W, C_in) and the out_grad ``g``
    (N, H_o, W_o, C_out). Output: (K_h, K_w, C_in, C_out) = ``im2col(a)ᵀ @ g``.
    """

    def __init__(self, kernel: Pair, stride: int, padding: Pair):
        self.kernel = tuple(kernel)
        self.stride = stride
        self.padding = padding

    def compute(self, a: NDArray, g: NDArray):
        (ph, pw), s, c, o = self.padding, self.stride, a.shape[3], g.shape[3]
        rows, cols = _live_taps(a.shape[1:3], g.shape[1:3], self.kernel, s, self.padding)
        live = (_span(rows), _span(cols))
        patches = _im2col(a, live, s, (ph - rows.start, pw - cols.start), g.shape[1:3])
        grad_rows = g.reshape((patches.shape[0], o))
        grad = array_api.matmul(array_api.swapaxes(patches, 0, 1), grad_rows)
        grad = grad.reshape(live + (c, o))
        if live == self.kernel:
            return grad
        full = array_api.zeros(self.kernel + (c, o), dtype=grad.dtype,
                               device=grad.device)  # dead taps: 0
        full[rows, cols] = grad
        return full

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, g = node.inputs
        grad_a = None
        if a.requires_grad:
            grad_a = ConvInputGrad(a.shape[1:3], self.stride, self.padding)(g, out_grad)
        grad_g = Conv(self.stride, self.padding)(a, out_grad) if g.requires_grad else None
        return grad_a, grad_g


# ----- validation and the public function ----------------------------------------------------


def _pair(value: int | Pair) -> Pair:
    """An int or a pair as a pair of ints."""
    if isinstance(value, numbers.Integral):
        return (int(value), int(value))
    return (int(value[0]), int(value[1]))


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"conv: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"conv: {name} must be an int >= {low}, got {value}")
    return int(value)


def _check_conv_shapes(a: Tensor, b: Tensor, padding: int) -> None:
    """Raise ValueError unless ``a`` (N, H, W, C) and ``b`` (K, K, C, C_out) fit together."""
    if len(a.shape) != 4 or len(b.shape) != 4:
        raise ValueError(
            f"conv: a.shape={a.shape}, b.shape={b.shape}: expected a 4-D NHWC input "
            f"(N, H, W, C_in) and a 4-D weight (K, K, C_in, C_out)"
        )
    if b.shape[0] != b.shape[1]:
        raise ValueError(
            f"conv: b.shape={b.shape}: the kernel must be square (K, K, C_in, C_out); "
            f"use the Conv op class for a rectangular kernel"
        )
    if a.shape[3] != b.shape[2]:
        hint = (
            "; the input looks NCHW: nn.Conv takes NCHW, the conv op takes NHWC"
            if a.shape[1] == b.shape[2]
            else ""
        )
        raise ValueError(
            f"conv: a.shape={a.shape}, b.shape={b.shape}: the input has {a.shape[3]} channels "
            f"(last axis, NHWC) but the weight expects C_in={b.shape[2]}{hint}"
        )
    k = b.shape[0]
    if min(a.shape[1], a.shape[2]) + 2 * padding < k:
        raise ValueError(
            f"conv: kernel size {k} is larger than the padded input: a.shape={a.shape} "
            f"(H={a.shape[1]}, W={a.shape[2]}) with padding={padding} gives "
            f"{a.shape[1] + 2 * padding}×{a.shape[2] + 2 * padding}; use a smaller kernel or "
            f"more padding"
        )


def conv(a: Tensor, b: Tensor, stride: int = 1, padding: int = 1) -> Tensor:
    """Convolve (cross-correlate) an NHWC batch with a KKIO weight.

    ``a`` (N, H, W, C_in), ``b`` (K, K, C_in, C_out) → (N, H_o, W_o, C_out) with
    ``H_o = ⌊(H + 2·padding − K)/stride⌋ + 1`` (``W_o`` likewise). Zeros pad axes 1 and 2.
    Note the default ``padding=1`` (the course's); pass it explicitly.

    >>> import needle as ndl
    >>> x, w = ndl.init.ones(2, 5, 5, 3), ndl.init.ones(3, 3, 3, 4)
    >>> conv(x, w, stride=2, padding=1).shape
    (2, 3, 3, 4)
    """
    _check_tensor("conv", a, "a")
    _check_tensor("conv", b, "b")
    stride = _check_int("stride", stride, 1)
    padding = _check_int("padding", padding, 0)
    _check_conv_shapes(a, b, padding)
    return Conv(stride, padding)(a, b)


# ----- pad -----------------------------------------------------------------------------------


class Pad(TensorOp):
    """Zero-pad each axis by a ``(before, after)`` pair (NumPy's constant ``np.pad``)."""

    takes_integers = True

    def __init__(self, axes: tuple):
        self.axes = axes

    def compute(self, a: NDArray):
        return array_api.pad(a, self.axes)

    def gradient(self, out_grad: Tensor, node: Tensor):
        starts = tuple(before for before, _ in self.axes)
        return Crop(starts, node.inputs[0].shape)(out_grad)


class Crop(TensorOp):
    """The window ``a[start : start + size]`` on every axis (the gradient of :class:`Pad`)."""

    takes_integers = True

    def __init__(self, starts: tuple, shape: tuple):
        self.starts = starts
        self.shape = shape

    def compute(self, a: NDArray):
        return a[tuple(slice(i, i + n) for i, n in zip(self.starts, self.shape))]

    def gradient(self, out_grad: Tensor, node: Tensor):
        full = node.inputs[0].shape
        pairs = tuple((i, t - i - n) for i, n, t in zip(self.starts, self.shape, full))
        return Pad(pairs)(out_grad)


def pad(a: Tensor, axes) -> Tensor:
    """``a`` zero-padded: ``axes`` holds one ``(before, after)`` pair of ints >= 0 per axis.

    >>> import needle as ndl
    >>> pad(ndl.init.ones(2, 3), ((0, 0), (1, 2))).shape
    (2, 6)
    """
    _check_tensor("pad", a)
    pairs = tuple(tuple(p) for p in axes) if hasattr(axes, "__iter__") else ()
    valid = len(pairs) == len(a.shape) and all(
        len(p) == 2
        and all(isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 0 for x in p)
        for p in pairs
    )
    if not valid:
        raise ValueError(
            f"pad: a.shape={a.shape}: expected one (before, after) pair of ints >= 0 per axis "
            f"({len(a.shape)} pairs), got {axes!r}"
        )
    return Pad(tuple((int(x), int(y)) for x, y in pairs))(a)


__all__ = ["Conv", "ConvInputGrad", "ConvWeightGrad", "conv", "Pad", "Crop", "pad"]
