"""Convolution ops: ``conv``/``convolution`` (NHWC × KKIO) with their two gradient ops,
``conv_transpose``, and ``pad``.

The convolution is lowered onto a strided view: the zero-padded input is viewed as
``(N, H_o, W_o, K_h, K_w, C)`` (im2col, no copy until it is compacted; a dilation only
changes the view's strides), compacted to a ``(N·H_o·W_o, K_h·K_w·C)`` matrix and
multiplied by the weight in **one** matmul. Grouped convolutions run this once per group,
on the group's channel slices.

The gradients are two more ops of the same kind, each one matmul:

* :class:`ConvInputGrad` — at stride 1 a full convolution of ``G`` with the flipped
  weight; otherwise ``(G @ Wᵀ)`` scattered back onto the input positions (col2im: one
  strided add per kernel offset, ``K_h·K_w`` of them, never a loop over pixels). It is
  also the transposed convolution, :func:`conv_transpose`;
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

import math
import numbers

from ..autograd import Tensor, TensorOp
from ..backends import NDArray, array_api, kernels
from .ops_mathematic import _check_tensor

Pair = tuple[int, int]
#: A height and width as array shapes give them (``a.shape[1:3]``).
Size = tuple[int, ...]
#: Zero padding of the two spatial axes, ``((top, bottom), (left, right))``.
Pads = tuple[Pair, Pair]
#: What the functions accept as padding: an int, an ``(H, W)`` pair, or :data:`Pads`.
PaddingLike = int | Pair | Pads


def _compact_strides(shape: tuple) -> tuple:
    """Row-major strides, in elements, of an array of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


# ----- shape arithmetic ----------------------------------------------------------------------


def _pair(value: int | Pair) -> Pair:
    """An int or a pair as a pair of ints."""
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))


def _pads(padding: PaddingLike) -> Pads:
    """An int ``p``, a pair ``(p_h, p_w)`` or ``((top, bottom), (left, right))`` as the last."""
    if not isinstance(padding, (tuple, list)):
        padding = (padding, padding)
    return (_pair(padding[0]), _pair(padding[1]))


def _before(pads: Pads) -> Pair:
    """The (top, left) padding: the offset of the input in the padded image."""
    return (pads[0][0], pads[1][0])


def _extent(kernel: int, dilation: int) -> int:
    """The span of a dilated kernel: ``dilation·(kernel − 1) + 1`` input pixels."""
    return dilation * (kernel - 1) + 1


def _out_size(size: int, kernel: int, stride: int, pads: Pair, dilation: int = 1) -> int:
    """Output length along one axis: ⌊(size + before + after − extent)/stride⌋ + 1."""
    return (size + pads[0] + pads[1] - _extent(kernel, dilation)) // stride + 1


def _out_hw(in_hw: Size, kernel: Size, stride: Pair, pads: Pads, dilation: Pair) -> Pair:
    """The convolution's output (H_o, W_o) for an (H, W) input."""
    h, w = (_out_size(*args) for args in zip(in_hw, kernel, stride, pads, dilation))
    return h, w


def _transposed_size(
    size: int, kernel: int, stride: int, pads: Pair, dilation: int, output_padding: int
) -> int:
    """Output length of a transposed convolution along one axis (the input length of the
    convolution it transposes): ``(size − 1)·stride − before − after + extent + output_padding``.
    """
    return (size - 1) * stride - pads[0] - pads[1] + _extent(kernel, dilation) + output_padding


def _zero_pad_hw(a: NDArray, top: int, bottom: int, left: int, right: int) -> NDArray:
    """``a`` (N, H, W, C) with zero rows above/below and zero columns left/right.

    A zero array and one slice assignment: the same as ``pad`` but without NumPy's
    general ``np.pad`` machinery, which costs more than the copy itself here.
    """
    n, h, w, c = a.shape
    out = array_api.zeros(
        (n, top + h + bottom, left + w + right, c), dtype=a.dtype, device=a.device
    )
    out[:, top : top + h, left : left + w, :] = a
    return out


def _im2col(
    a: NDArray,
    kernel: Size,
    stride: Pair,
    pad_before: Pair,
    out_hw: Size,
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> NDArray:
    """The patches of ``a`` (N, H, W, C) as the compact matrix (N·H_o·W_o, K_h·K_w·C), or
    with ``groups`` > 1 one such matrix per group of C/groups channels: (G, N·H_o·W_o,
    K_h·K_w·C/G).

    Row (n, i, j) holds the receptive field of output pixel (i, j) of image n, in
    (u, v, c) order, which matches the weight reshaped to (K_h·K_w·C, C_out); tap (u, v)
    reads padded pixel (i·s_h + u·d_h, j·s_w + v·d_w). ``a`` is zero-padded by
    ``pad_before`` above and left, and below and right by what the ``out_hw`` windows reach.
    """
    (kh, kw), (top, left), (ho, wo) = kernel, pad_before, out_hw
    (s_h, s_w), (d_h, d_w) = stride, dilation
    n, h, w, c = a.shape
    bottom = max(0, (ho - 1) * s_h + _extent(kh, d_h) - top - h)
    right = max(0, (wo - 1) * s_w + _extent(kw, d_w) - left - w)
    if top or bottom or left or right:
        a = _zero_pad_hw(a, top, bottom, left, right)
    step_n, step_h, step_w, step_c = _compact_strides(a.shape)
    taps = (step_n, s_h * step_h, s_w * step_w, d_h * step_h, d_w * step_w)
    if groups == 1:
        view = kernels.strided_view(a, (n, ho, wo, kh, kw, c), taps + (step_c,))
        return view.reshape((n * ho * wo, kh * kw * c))
    width = c // groups
    view = kernels.strided_view(
        a, (n, ho, wo, kh, kw, groups, width), taps + (width * step_c, step_c)
    )
    view = array_api.transpose(view, (5, 0, 1, 2, 3, 4, 6))
    return view.reshape((groups, n * ho * wo, kh * kw * width))


def _live_taps(
    in_hw: Size, out_hw: Size, kernel: Size, stride: Pair, pad_before: Pair, dilation: Pair
) -> tuple[tuple[slice, slice], Pair]:
    """The kernel rows and columns that can meet the input (the others only see padding),
    and the (top, left) padding left once the leading dead taps are cut off.

    Kernel row u reads input rows i·s + u·d − p for i < H_o, so it matters only if
    p − (H_o − 1)·s ≤ u·d ≤ p + H − 1. Deep layers on small images drop most of their
    kernel this way (a 3×3 kernel on a 1×1 image keeps only its centre), and the matmuls
    skip the zeros. The first kept tap is at most ⌊p/d⌋, so the padding left is never
    negative. An empty range (every window in the padding) keeps the whole kernel.
    """
    live, before = [], []
    for size, out, k, s, p, d in zip(in_hw, out_hw, kernel, stride, pad_before, dilation):
        first = max(0, min(-(-(p - (out - 1) * s) // d), p // d))
        stop = min(k, (p + size - 1) // d + 1)
        taps = slice(first, stop) if first < stop else slice(0, k)
        live.append(taps)
        before.append(p - taps.start * d)
    return (live[0], live[1]), (before[0], before[1])


def _span(taps: slice) -> int:
    return taps.stop - taps.start


def _weight_by_group(b: NDArray, groups: int, axes: tuple, rows: int) -> NDArray:
    """A (K_h, K_w, C, G·O) weight as one matrix per group, (G, R, ·): the axes (K_h, K_w, C,
    O) in the order ``axes`` gives, the first ``rows`` of them making R (a copy)."""
    kh, kw, c, out = b.shape
    split = b.reshape((kh, kw, c, groups, out // groups))
    ordered = array_api.transpose(split, (3,) + tuple((0, 1, 2, 4)[i] for i in axes))
    # sizes spelled out, never -1 (ambiguous when a size is 0)
    shape = ordered.shape[1:]
    return ordered.reshape((groups, math.prod(shape[:rows]), math.prod(shape[rows:])))


def _rows_by_group(x: NDArray, groups: int) -> NDArray:
    """(..., G·C) as one matrix per group: (G, rows, C) (a copy)."""
    rows, width = math.prod(x.shape[:-1]), x.shape[-1] // groups
    split = x.reshape((rows, groups, width))
    return array_api.transpose(split, (1, 0, 2)).reshape((groups, rows, width))


def _join_groups(product: NDArray, shape: tuple) -> NDArray:
    """(G, rows, C) per-group results as (..., G·C) of ``shape`` (a copy)."""
    return array_api.transpose(product, (1, 0, 2)).reshape(shape)


# ----- the ops -------------------------------------------------------------------------------


class Conv(TensorOp):
    """Cross-correlation of an NHWC batch with a (K_h, K_w, C_in/groups, C_out) weight.

    ``out[n,i,j,o] = Σ_{u,v,c} a_pad[n, i·s_h + u·d_h, j·s_w + v·d_w, g·C_g + c]·b[u,v,c,o]``
    where ``g`` is output channel o's group and ``C_g = C_in/groups``; ``a`` is zero-padded
    on axes 1 and 2 by ``padding`` (an int, an (H, W) pair, or ``((top, bottom), (left,
    right))``). ``stride`` and ``dilation`` are an int or an (H, W) pair. The class default
    padding is 0 (the course's); :func:`conv`'s is 1.
    """

    def __init__(
        self,
        stride: int | Pair = 1,
        padding: PaddingLike = 0,
        dilation: int | Pair = 1,
        groups: int = 1,
    ):
        self.stride = _pair(stride)
        self.padding = _pads(padding)
        self.dilation = _pair(dilation)
        self.groups = groups

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        n, h, w, _ = a.shape
        out_hw = _out_hw((h, w), b.shape[:2], self.stride, self.padding, self.dilation)
        taps, pad_before = _live_taps(
            (h, w), out_hw, b.shape[:2], self.stride, _before(self.padding), self.dilation
        )
        b = b[taps]
        kh, kw, c, o = b.shape
        patches = _im2col(a, (kh, kw), self.stride, pad_before, out_hw, self.dilation, self.groups)
        if self.groups == 1:
            product = array_api.matmul(patches, b.reshape((kh * kw * c, o)))
            return product.reshape((n,) + out_hw + (o,))
        # one product per group, all in one batched matmul: (G, rows, K·C/G) @ (G, K·C/G, O/G)
        product = array_api.matmul(patches, _weight_by_group(b, self.groups, (0, 1, 2, 3), 3))
        return _join_groups(product, (n,) + out_hw + (o,))

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, b = node.inputs
        geometry = (self.stride, self.padding, self.dilation, self.groups)
        grad_a = grad_b = None
        if a.requires_grad:  # e.g. not for the data fed to a network's first layer
            grad_a = ConvInputGrad(a.shape[1:3], *geometry)(out_grad, b)
        if b.requires_grad:
            grad_b = ConvWeightGrad(b.shape[:2], *geometry)(a, out_grad)
        return grad_a, grad_b


class ConvInputGrad(TensorOp):
    """The gradient of :class:`Conv` with respect to its input: a transposed convolution.

    Inputs: ``g`` (N, H_o, W_o, C_out), the out_grad, and the weight ``b``
    (K_h, K_w, C_in/groups, C_out). Output: (N, H, W, C_in), with ``(H, W)`` =
    ``input_hw``; the geometry arguments are :class:`Conv`'s.
    """

    def __init__(
        self,
        input_hw: Pair,
        stride: int | Pair,
        padding: PaddingLike,
        dilation: int | Pair = 1,
        groups: int = 1,
    ):
        self.input_hw = tuple(input_hw)
        self.stride = _pair(stride)
        self.padding = _pads(padding)
        self.dilation = _pair(dilation)
        self.groups = groups

    def compute(self, g: NDArray, b: NDArray) -> NDArray:
        taps, pad_before = _live_taps(
            self.input_hw,
            g.shape[1:3],
            b.shape[:2],
            self.stride,
            _before(self.padding),
            self.dilation,
        )
        b = b[taps]
        reach = (_extent(b.shape[0], self.dilation[0]), _extent(b.shape[1], self.dilation[1]))
        if self.stride == (1, 1) and pad_before[0] < reach[0] and pad_before[1] < reach[1]:
            return self._full_convolution(g, b, pad_before)
        return self._col2im(g, b, pad_before)

    def _full_convolution(self, g: NDArray, b: NDArray, pad_before: Pair) -> NDArray:
        """Stride 1: ``g`` padded by extent − 1 − p, convolved with the flipped weight.

        The same numbers as :meth:`_col2im`, computed as im2col + one matmul with an inner
        dimension of K·K·C_out, which runs faster than K·K strided adds.
        """
        kh, kw, c, o = b.shape
        (h, w), (top, left), (d_h, d_w) = self.input_hw, pad_before, self.dilation
        full_pad = (_extent(kh, d_h) - 1 - top, _extent(kw, d_w) - 1 - left)
        patches = _im2col(g, (kh, kw), (1, 1), full_pad, (h, w), self.dilation, self.groups)
        flipped = array_api.flip(b, (0, 1))
        out_shape = (g.shape[0], h, w, c * self.groups)
        if self.groups == 1:
            flipped = array_api.swapaxes(flipped, 2, 3)  # (K_h, K_w, C_out, C_in)
            product = array_api.matmul(patches, flipped.reshape((kh * kw * o, c)))
            return product.reshape(out_shape)
        # per group: (K_h·K_w·C_out/G, C_in/G), rows in the patches' (u, v, o) order
        weight = _weight_by_group(flipped, self.groups, (0, 1, 3, 2), 3)
        return _join_groups(array_api.matmul(patches, weight), out_shape)

    def _col2im(self, g: NDArray, b: NDArray, pad_before: Pair) -> NDArray:
        """Any stride: ``G @ Wᵀ`` (one matmul), each kernel offset's slab added in place."""
        kh, kw, c, o = b.shape
        n, ho, wo, _ = g.shape
        (h, w), (top, left) = self.input_hw, pad_before
        (s_h, s_w), (d_h, d_w) = self.stride, self.dilation
        # cols[n,i,j,u,v,c] = Σ_o g[n,i,j,o]·b[u,v,c,o] (within c's group)
        if self.groups == 1:
            b_t = array_api.swapaxes(b.reshape((kh * kw * c, o)), 0, 1)
            cols = array_api.matmul(g.reshape((n * ho * wo, o)), b_t)
        else:
            # (G, rows, O/G) @ (G, O/G, K_h·K_w·C/G), back to (rows, K_h, K_w, G, C/G)
            per_group = array_api.matmul(
                _rows_by_group(g, self.groups), _weight_by_group(b, self.groups, (3, 0, 1, 2), 1)
            )
            split = per_group.reshape((self.groups, n * ho * wo, kh, kw, c))
            cols = array_api.transpose(split, (1, 2, 3, 0, 4))
            c *= self.groups
        cols = cols.reshape((n, ho, wo, kh, kw, c))
        # The accumulator (the padded input) has two unit axes so that the slab
        # cols[:, :, :, u:u+1, v:v+1] adds without a reshape (slices, not ints: an NDArray
        # int index keeps its axis).
        acc_h = max(top + h, (ho - 1) * s_h + _extent(kh, d_h))
        acc_w = max(left + w, (wo - 1) * s_w + _extent(kw, d_w))
        acc = array_api.zeros((n, acc_h, acc_w, 1, 1, c), dtype=cols.dtype, device=cols.device)
        for u in range(kh):
            for v in range(kw):
                rows = slice(u * d_h, u * d_h + (ho - 1) * s_h + 1, s_h)
                columns = slice(v * d_w, v * d_w + (wo - 1) * s_w + 1, s_w)
                acc[:, rows, columns] += cols[:, :, :, u : u + 1, v : v + 1]
        return acc[:, top : top + h, left : left + w].reshape((n, h, w, c))

    def gradient(self, out_grad: Tensor, node: Tensor):
        g, b = node.inputs
        geometry = (self.stride, self.padding, self.dilation, self.groups)
        grad_g = Conv(*geometry)(out_grad, b) if g.requires_grad else None
        grad_b = None
        if b.requires_grad:
            grad_b = ConvWeightGrad(b.shape[:2], *geometry)(out_grad, g)
        return grad_g, grad_b


class ConvWeightGrad(TensorOp):
    """The gradient of :class:`Conv` with respect to its weight.

    Inputs: the conv input ``a`` (N, H, W, C_in) and the out_grad ``g``
    (N, H_o, W_o, C_out). Output: (K_h, K_w, C_in/groups, C_out) = ``im2col(a)ᵀ @ g``
    (group by group); the geometry arguments are :class:`Conv`'s.
    """

    def __init__(
        self,
        kernel: Pair,
        stride: int | Pair,
        padding: PaddingLike,
        dilation: int | Pair = 1,
        groups: int = 1,
    ):
        self.kernel = tuple(kernel)
        self.stride = _pair(stride)
        self.padding = _pads(padding)
        self.dilation = _pair(dilation)
        self.groups = groups

    def compute(self, a: NDArray, g: NDArray) -> NDArray:
        c, o = a.shape[3] // self.groups, g.shape[3]
        (rows, cols), pad_before = _live_taps(
            a.shape[1:3],
            g.shape[1:3],
            self.kernel,
            self.stride,
            _before(self.padding),
            self.dilation,
        )
        live = (_span(rows), _span(cols))
        patches = _im2col(
            a, live, self.stride, pad_before, g.shape[1:3], self.dilation, self.groups
        )
        if self.groups == 1:
            grad_rows = g.reshape((patches.shape[0], o))
            grad = array_api.matmul(array_api.swapaxes(patches, 0, 1), grad_rows)
            grad = grad.reshape(live + (c, o))
        else:
            # (G, K·C/G, rows) @ (G, rows, O/G) → (G, K_h, K_w, C/G, O/G) → (K_h, K_w, C/G, O)
            per_group = array_api.matmul(
                array_api.swapaxes(patches, 1, 2), _rows_by_group(g, self.groups)
            )
            split = per_group.reshape((self.groups,) + live + (c, o // self.groups))
            grad = array_api.transpose(split, (1, 2, 3, 0, 4)).reshape(live + (c, o))
        if live == self.kernel:
            return grad
        full = array_api.zeros(
            self.kernel + (c, o), dtype=grad.dtype, device=grad.device
        )  # dead taps: 0
        full[rows, cols] = grad
        return full

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, g = node.inputs
        geometry = (self.stride, self.padding, self.dilation, self.groups)
        grad_a = None
        if a.requires_grad:
            grad_a = ConvInputGrad(a.shape[1:3], *geometry)(g, out_grad)
        grad_g = Conv(*geometry)(a, out_grad) if g.requires_grad else None
        return grad_a, grad_g


# ----- argument checks, shared with the layers ----------------------------------------------


def _check_int(owner: str, name: str, value, low: int) -> int:
    """``value`` as an int >= ``low``: TypeError for a non-int, ValueError below ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{owner}: {name} must be an int >= {low}, got {value}")
    return int(value)


def _check_pair(owner: str, name: str, value, low: int) -> Pair:
    """``value`` (an int, or an (H, W) pair of ints) as a pair, each >= ``low``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{owner}: {name} must be an int or an (H, W) pair, got {value!r}")
        return (_check_int(owner, name, value[0], low), _check_int(owner, name, value[1], low))
    value = _check_int(owner, name, value, low)
    return (value, value)


def _check_padding(owner: str, padding, kernel: Pair, stride: Pair, dilation: Pair) -> Pads:
    """``padding`` as ``((top, bottom), (left, right))``.

    Accepts an int, an (H, W) pair, the full form, ``"valid"`` (none) or ``"same"``
    (stride 1 only: ``extent − 1`` in all, the odd pixel after, as PyTorch pads).
    """
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(
                f"{owner}: padding='same' needs stride 1, got stride={stride}; "
                f"pass the padding as numbers for a strided convolution"
            )
        totals = (_extent(k, d) - 1 for k, d in zip(kernel, dilation))
        rows, columns = ((t // 2, t - t // 2) for t in totals)
        return (rows, columns)
    if isinstance(padding, str):
        raise ValueError(
            f"{owner}: padding must be an int, a pair, ((top, bottom), "
            f"(left, right)), 'same' or 'valid', got {padding!r}"
        )
    if (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, (tuple, list)) for p in padding)
    ):
        return (
            _check_pair(owner, "padding", tuple(padding[0]), 0),
            _check_pair(owner, "padding", tuple(padding[1]), 0),
        )
    p_h, p_w = _check_pair(owner, "padding", padding, 0)
    return ((p_h, p_h), (p_w, p_w))


def _check_geometry(owner: str, kernel: Pair, stride, padding, dilation) -> tuple[Pair, Pads, Pair]:
    """A convolution's checked ``(stride, padding, dilation)``, as pairs and :data:`Pads`."""
    stride = _check_pair(owner, "stride", stride, 1)
    dilation = _check_pair(owner, "dilation", dilation, 1)
    return stride, _check_padding(owner, padding, kernel, stride, dilation), dilation


def _check_transposed_geometry(
    owner: str, kernel: Pair, stride, padding, output_padding, dilation
) -> tuple[Pair, Pads, Pair, Pair]:
    """A transposed convolution's checked ``(stride, padding, output_padding, dilation)``.

    ``output_padding`` must be smaller than the stride: only then does the convolution
    being transposed map the output back to the input's size.
    """
    if isinstance(padding, str):
        raise ValueError(
            f"{owner}: padding must be an int, a pair or ((top, bottom), (left, "
            f"right)), got {padding!r}"
        )
    stride, pads, dilation = _check_geometry(owner, kernel, stride, padding, dilation)
    extra = _check_pair(owner, "output_padding", output_padding, 0)
    if extra[0] >= stride[0] or extra[1] >= stride[1]:
        raise ValueError(
            f"{owner}: output_padding={output_padding!r} must be smaller than the "
            f"stride {stride} along each axis"
        )
    return stride, pads, extra, dilation


def _describe_padding(pads: Pads) -> str:
    """``pads`` as the user would write it: an int when all four sides agree."""
    sides = {*pads[0], *pads[1]}
    return str(sides.pop()) if len(sides) == 1 else str(pads)


def _check_output_size(
    owner: str, shape: tuple, in_hw: Pair, kernel: Pair, pads: Pads, dilation: Pair
) -> None:
    """Raise unless the dilated kernel fits in the padded (H, W) input (``shape`` is the input
    as the caller passed it, for the message)."""
    reach = (_extent(kernel[0], dilation[0]), _extent(kernel[1], dilation[1]))
    padded = tuple(size + sum(p) for size, p in zip(in_hw, pads))
    if padded[0] >= reach[0] and padded[1] >= reach[1]:
        return
    size = str(kernel[0]) if kernel[0] == kernel[1] else str(kernel)
    if dilation != (1, 1):
        size += f" dilated by {dilation} to {reach[0]}×{reach[1]}"
    raise ValueError(
        f"{owner}: kernel size {size} is larger than the padded input: input shape {shape} "
        f"(H={in_hw[0]}, W={in_hw[1]}) with padding={_describe_padding(pads)} gives "
        f"{padded[0]}×{padded[1]}, an empty output; use a smaller kernel or more padding"
    )


def _check_transposed_hw(
    owner: str,
    shape: tuple,
    in_hw: Pair,
    kernel: Pair,
    stride: Pair,
    pads: Pads,
    dilation: Pair,
    output_padding: Pair,
) -> Pair:
    """The transposed convolution's output (H_o, W_o), or a ValueError if it is empty."""
    h, w = (
        _transposed_size(*args)
        for args in zip(in_hw, kernel, stride, pads, dilation, output_padding)
    )
    if h < 1 or w < 1:
        raise ValueError(
            f"{owner}: input shape {shape} with kernel {kernel}, stride {stride} and padding="
            f"{_describe_padding(pads)} gives an empty output ({h}, {w}); use less padding"
        )
    return h, w


def _check_ranks(op: str, a: Tensor, b: Tensor, weight: str) -> None:
    _check_tensor(op, a, "a")
    _check_tensor(op, b, "b")
    if len(a.shape) != 4 or len(b.shape) != 4:
        raise ValueError(
            f"{op}: a.shape={a.shape}, b.shape={b.shape}: expected a 4-D NHWC input "
            f"(N, H, W, C_in) and a 4-D weight {weight}"
        )


def _check_groups(op: str, groups: int, a_channels: int, b: Tensor, what: str) -> None:
    """Raise unless ``groups`` divides the input channels and the weight's last axis."""
    if a_channels % groups or b.shape[3] % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide both the input channels ({a_channels}) and "
            f"{what} (b.shape[3]={b.shape[3]}, b.shape={b.shape})"
        )


def _check_conv_shapes(
    op: str, a: Tensor, b: Tensor, pads: Pads, dilation: Pair, groups: int
) -> None:
    """Raise ValueError unless ``a`` (N, H, W, C) and ``b`` (K_h, K_w, C/groups, C_out) fit."""
    _check_ranks(op, a, b, "(K_h, K_w, C_in/groups, C_out)")
    _check_groups(op, groups, a.shape[3], b, "the output channels")
    if a.shape[3] != b.shape[2] * groups:
        hint = (
            "; the input looks NCHW: nn.Conv takes NCHW, the conv op takes NHWC"
            if a.shape[1] == b.shape[2] * groups
            else ""
        )
        expects = (
            f"C_in={b.shape[2]}"
            if groups == 1
            else (f"C_in = groups·b.shape[2] = {groups}·{b.shape[2]} = {groups * b.shape[2]}")
        )
        raise ValueError(
            f"{op}: a.shape={a.shape}, b.shape={b.shape}: the input has {a.shape[3]} channels "
            f"(last axis, NHWC) but the weight expects {expects}{hint}"
        )
    _check_output_size(op, a.shape, a.shape[1:3], b.shape[:2], pads, dilation)


# ----- the public functions ------------------------------------------------------------------


def conv(a: Tensor, b: Tensor, stride: int = 1, padding: int = 1) -> Tensor:
    """Convolve (cross-correlate) an NHWC batch with a square KKIO weight (the course's op).

    ``a`` (N, H, W, C_in), ``b`` (K, K, C_in, C_out) → (N, H_o, W_o, C_out) with
    ``H_o = ⌊(H + 2·padding − K)/stride⌋ + 1`` (``W_o`` likewise). Zeros pad axes 1 and 2.
    Note the default ``padding=1`` (the course's); pass it explicitly. :func:`convolution`
    adds rectangular kernels, per-side padding, dilation and groups.

    >>> import needle as ndl
    >>> x, w = ndl.init.ones(2, 5, 5, 3), ndl.init.ones(3, 3, 3, 4)
    >>> conv(x, w, stride=2, padding=1).shape
    (2, 3, 3, 4)
    """
    _check_ranks("conv", a, b, "(K, K, C_in, C_out)")
    stride = _check_int("conv", "stride", stride, 1)
    padding = _check_int("conv", "padding", padding, 0)
    if b.shape[0] != b.shape[1]:
        raise ValueError(
            f"conv: b.shape={b.shape}: the kernel must be square (K, K, C_in, C_out); "
            f"use ndl.convolution for a rectangular kernel"
        )
    _check_conv_shapes("conv", a, b, _pads(padding), (1, 1), 1)
    return Conv(stride, padding)(a, b)


def convolution(
    a: Tensor,
    b: Tensor,
    *,
    stride: int | Pair = 1,
    padding=0,
    dilation: int | Pair = 1,
    groups: int = 1,
) -> Tensor:
    """2-D convolution with every option: NHWC input, (K_h, K_w, C_in/groups, C_out) weight.

    ``a`` (N, H, W, C_in), ``b`` (K_h, K_w, C_in/groups, C_out) → (N, H_o, W_o, C_out) with
    ``H_o = ⌊(H + top + bottom − d_h·(K_h − 1) − 1)/s_h⌋ + 1`` (``W_o`` likewise).
    ``stride`` and ``dilation`` are an int or an (H, W) pair; ``padding`` an int, an (H, W)
    pair, ``((top, bottom), (left, right))``, ``"valid"`` or ``"same"`` (stride 1; an odd
    total puts the extra pixel after). ``groups`` splits the channels: output channel o sees
    only the input channels of its group (``groups = C_in`` is depthwise). The numbers are
    ``torch.nn.functional.conv2d``'s with the layouts permuted.

    >>> import needle as ndl
    >>> x, w = ndl.init.ones(1, 6, 6, 4), ndl.init.ones(2, 3, 2, 4)
    >>> convolution(x, w, padding="same", dilation=2, groups=2).shape
    (1, 6, 6, 4)
    """
    _check_ranks("convolution", a, b, "(K_h, K_w, C_in/groups, C_out)")
    stride, pads, dilation = _check_geometry("convolution", b.shape[:2], stride, padding, dilation)
    groups = _check_int("convolution", "groups", groups, 1)
    _check_conv_shapes("convolution", a, b, pads, dilation, groups)
    return Conv(stride, pads, dilation, groups)(a, b)


def conv_transpose(
    a: Tensor,
    b: Tensor,
    *,
    stride: int | Pair = 1,
    padding=0,
    output_padding: int | Pair = 0,
    dilation: int | Pair = 1,
    groups: int = 1,
) -> Tensor:
    """Transposed convolution (the input gradient of :func:`convolution`), NHWC.

    ``a`` (N, H, W, C_in), ``b`` (K_h, K_w, C_out/groups, C_in) — the weight of the
    convolution from C_out to C_in that this transposes — → (N, H_o, W_o, C_out) with
    ``H_o = (H − 1)·s_h − top − bottom + d_h·(K_h − 1) + 1 + output_padding_h``.
    ``padding`` is an int, an (H, W) pair or ``((top, bottom), (left, right))`` and crops
    the output; ``output_padding`` (each < the stride) adds rows and columns at the end.
    The numbers are ``torch.nn.functional.conv_transpose2d``'s with the layouts permuted.

    >>> import needle as ndl
    >>> conv_transpose(ndl.init.ones(1, 4, 4, 3), ndl.init.ones(3, 3, 2, 3), stride=2,
    ...                padding=1, output_padding=1).shape
    (1, 8, 8, 2)
    """
    op = "conv_transpose"
    _check_ranks(op, a, b, "(K_h, K_w, C_out/groups, C_in)")
    stride, pads, extra, dilation = _check_transposed_geometry(
        op, b.shape[:2], stride, padding, output_padding, dilation
    )
    groups = _check_int(op, "groups", groups, 1)
    if a.shape[3] != b.shape[3]:
        raise ValueError(
            f"{op}: a.shape={a.shape}, b.shape={b.shape}: the input has {a.shape[3]} channels "
            f"(last axis, NHWC) but the weight (K_h, K_w, C_out/groups, C_in) expects "
            f"C_in={b.shape[3]}"
        )
    _check_groups(op, groups, a.shape[3], b, "the weight's C_in")
    out_hw = _check_transposed_hw(
        op, a.shape, a.shape[1:3], b.shape[:2], stride, pads, dilation, extra
    )
    return ConvInputGrad(out_hw, stride, pads, dilation, groups)(a, b)


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
        and all(
            isinstance(x, numbers.Integral) and not isinstance(x, bool) and int(x) >= 0 for x in p
        )
        for p in pairs
    )
    if not valid:
        raise ValueError(
            f"pad: a.shape={a.shape}: expected one (before, after) pair of ints >= 0 per axis "
            f"({len(a.shape)} pairs), got {axes!r}"
        )
    return Pad(tuple((int(x), int(y)) for x, y in pairs))(a)


__all__ = [
    "Conv",
    "ConvInputGrad",
    "ConvWeightGrad",
    "conv",
    "convolution",
    "conv_transpose",
    "Pad",
    "Crop",
    "pad",
]
