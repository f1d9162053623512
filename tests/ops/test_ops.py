"""Forward and gradient tests of every op, driven by one table.

A row of ``OPS`` names an op case: the needle function, a NumPy reference, the input
shapes it runs on and the domain its inputs are drawn from. Three tests iterate the
table — forward vs NumPy (float64), float32 stays float32, and a float64 numerical
gradient check (``needle.testing.gradcheck``). Adding an op means adding a row here.

Binary elementwise ops cross every broadcast-compatible pair of the shape zoo, so the
implicit BroadcastTo nodes are exercised and every gradient must come back in its
input's shape.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import tensor

import needle as ndl
import needle.nn.functional as F
from needle.autograd import find_topo_sort
from needle.backends import NDArray
from needle.testing import gradcheck

Shape = tuple

# ----- the shape zoo and the input domains -------------------------------------------------

ZOO: list[Shape] = [(), (1,), (3,), (1, 1), (2, 3), (1, 3), (2, 1), (2, 3, 4), (2, 1, 4), (1, 3, 1)]


def _broadcastable(*shapes: Shape) -> bool:
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        return False
    return True


BROADCAST_PAIRS = [(s, t) for s in ZOO for t in ZOO if _broadcastable(s, t)]
UNARY = [(s,) for s in ZOO]
MATRICES = [(s,) for s in ZOO if len(s) >= 2]
NONEMPTY = [(s,) for s in ZOO if len(s) >= 1]


def _draw(domain: str, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Inputs of ``shape`` from ``domain``, kept away from kinks and poles of the ops."""
    if domain == "real":
        return rng.uniform(-2.0, 2.0, size=shape)
    if domain == "positive":  # log, power bases, ** 0.5
        return rng.uniform(0.5, 2.0, size=shape)
    if domain == "nonzero":  # denominators, relu's kink at 0, ** -1
        return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 2.0, size=shape)
    raise ValueError(f"unknown domain {domain!r}")


@dataclass(frozen=True)
class Row:
    """One op case: ``fn(*tensors)`` equals ``ref(*arrays)`` for every shape tuple in ``shapes``."""

    name: str
    fn: Callable[..., ndl.Tensor]
    ref: Callable[..., np.ndarray]
    shapes: Sequence[tuple[Shape, ...]]
    domain: tuple[str, ...] = ("real",)  # one per input; the last one repeats

    def inputs(self, shapes: tuple[Shape, ...], dtype=np.float64) -> list[np.ndarray]:
        # Seeded by the case id (not Python's salted hash), so every run draws the same inputs.
        rng = np.random.default_rng(zlib.crc32(f"{self.name}{shapes}".encode()))
        domains = self.domain + self.domain[-1:] * len(shapes)
        return [_draw(d, s, rng).astype(dtype) for d, s in zip(domains, shapes)]


def _np_fixed(shape: Shape) -> np.ndarray:
    """A constant of ``shape`` with distinct values, zeros and negatives (a stand-in mask)."""
    return (np.arange(int(np.prod(shape))) % 5 - 1.5).reshape(shape) * 0.5


def _draws(shape: Shape) -> np.ndarray:
    """Fixed uniform draws of ``shape`` for fused_dropout (about 40% above keep = 0.6)."""
    return (np.arange(int(np.prod(shape))) * 0.37 % 1.0).reshape(shape)


def _np_dropout_mask(shape: Shape, keep: float) -> np.ndarray:
    """The mask in the dtype of the backend's uniform draws (float32 under nd, float64 under np)."""
    from needle.backends import kernels

    dtype = np.dtype(kernels.DRAW_DTYPE).type
    return (_draws(shape).astype(dtype) <= dtype(keep)).astype(dtype) / dtype(keep)


def _fixed(a: ndl.Tensor) -> NDArray:
    """``_np_fixed`` as a backend array of ``a``'s shape, dtype and device."""
    return ndl.Tensor(_np_fixed(a.shape), dtype=a.dtype, device=a.device).realize_cached_data()


# ----- NumPy references that are not one NumPy call ----------------------------------------


def np_logsumexp(a: np.ndarray, axes=None) -> np.ndarray:
    peak = np.max(a, axis=axes, keepdims=True)
    return np.log(np.sum(np.exp(a - peak), axis=axes)) + np.squeeze(peak, axis=axes)


def np_dilate(a: np.ndarray, axes: tuple, d: int) -> np.ndarray:
    # Interleave d zero blocks after each element: stack then merge, one axis at a time.
    for axis in axes:
        a = np.stack([a] + [np.zeros_like(a)] * d, axis=axis + 1)
        shape = list(a.shape)
        a = a.reshape(shape[:axis] + [shape[axis] * (d + 1)] + shape[axis + 2 :])
    return a


def np_undilate(a: np.ndarray, axes: tuple, d: int) -> np.ndarray:
    for axis in axes:
        a = np.take(a, np.arange(0, a.shape[axis], d + 1), axis=axis)
    return a


def np_sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _get(t: ndl.TensorTuple, i: int) -> ndl.Tensor:
    """A real TupleGetItem node (not folded away into the tuple's input)."""
    return ndl.TupleGetItem(i)(t, fold_const=False)


def _recombine(parts) -> ndl.Tensor:
    """sum_i (i + 1) * parts[i]: touches every element of a split with a distinct weight."""
    parts = list(parts)
    total = parts[0]
    for i, part in enumerate(parts[1:], start=2):
        total = total + part * float(i)
    return total


def _np_recombine(a: np.ndarray, axis: int) -> np.ndarray:
    return sum((i + 1) * np.take(a, i, axis=axis) for i in range(a.shape[axis]))


# ----- helpers of the PyTorch-named ops' rows ----------------------------------------------------

_IDX = np.array([[2, 0], [1, 1]])  # gather / scatter_add indices along dim 1 (a repeat in row 1)


def _np_put(a: np.ndarray, key, v) -> np.ndarray:
    out = a.copy()
    out[key] = v
    return out


def _np_scatter_add(a: np.ndarray, idx: np.ndarray, src: np.ndarray) -> np.ndarray:
    out = a.copy()
    rows = np.arange(idx.shape[0])[:, None]
    np.add.at(out, (np.broadcast_to(rows, idx.shape), idx), src[:, : idx.shape[1]])
    return out


def _setitem_graph(v: ndl.Tensor) -> ndl.Tensor:
    """``out[1] = v * 2`` into a constant: ``out`` becomes a node whose gradient reaches v."""
    out = ndl.zeros(2, *v.shape, dtype=v.dtype, device=v.device)
    out[1] = v * 2.0
    return out


def _np_zeros_mask(shape: Shape) -> np.ndarray:
    """1 everywhere but a zero in row 1 and two zeros in row 2 (prod's three gradient cases)."""
    mask = np.ones(shape)
    mask[1, 0] = mask[2, 1] = mask[2, 3] = 0.0
    return mask


def _zeros_mask(a: ndl.Tensor) -> ndl.Tensor:
    return ndl.Tensor(_np_zeros_mask(a.shape), dtype=a.dtype, device=a.device, requires_grad=False)


def _np_labels(a: np.ndarray, ignore: bool = False) -> np.ndarray:
    """Fixed class labels for the rows of ``a`` (N, C, ...); with ``ignore``, row 1 is -1."""
    labels = np.arange(a.shape[0]) * 2 % a.shape[1]
    if a.ndim > 2:
        labels = (np.arange(a.shape[0] * a.shape[2]) % a.shape[1]).reshape(a.shape[0], a.shape[2])
    if ignore:
        labels[1] = -1
    return labels


def _labels(a: ndl.Tensor, ignore: bool = False) -> ndl.Tensor:
    return ndl.Tensor(_np_labels(np.empty(a.shape), ignore), dtype="int64", device=a.device)


def np_cross_entropy(
    logits: np.ndarray,
    labels: np.ndarray,
    ignore_index: int = -100,
    smoothing: float = 0.0,
    reduction: str = "mean",
) -> np.ndarray:
    log_p = logits - np_logsumexp(logits, 1)[:, None]
    kept = labels != ignore_index
    picked = log_p[np.arange(len(labels)), np.where(kept, labels, 0)]
    loss = ((1 - smoothing) * -picked - smoothing * log_p.mean(1)) * kept
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / kept.sum()


def _np_pads(padding) -> tuple:
    """An int, an (H, W) pair or ((top, bottom), (left, right)) as the last form."""
    if np.isscalar(padding):
        padding = (padding, padding)
    return tuple((p, p) if np.isscalar(p) else tuple(p) for p in padding)


def np_conv2d(
    a: np.ndarray, b: np.ndarray, stride=1, padding=0, dilation=1, groups: int = 1
) -> np.ndarray:
    """The definition, pixel by pixel: NHWC ``a`` × (K_h, K_w, C/groups, O) ``b``; output
    channel o of group g reads input channels g·C/groups … (g+1)·C/groups − 1."""
    (s_h, s_w), (d_h, d_w) = np.broadcast_to(stride, 2), np.broadcast_to(dilation, 2)
    a = np.pad(a, ((0, 0), *_np_pads(padding), (0, 0)))
    kh, kw, cg, o = b.shape
    og = o // groups
    ho = (a.shape[1] - d_h * (kh - 1) - 1) // s_h + 1
    wo = (a.shape[2] - d_w * (kw - 1) - 1) // s_w + 1
    out = np.zeros((a.shape[0], ho, wo, o))
    for i, j, g in np.ndindex(ho, wo, groups):
        field = a[
            :,
            i * s_h : i * s_h + d_h * (kh - 1) + 1 : d_h,
            j * s_w : j * s_w + d_w * (kw - 1) + 1 : d_w,
            g * cg : (g + 1) * cg,
        ]
        out[:, i, j, g * og : (g + 1) * og] = np.einsum(
            "nuvc,uvco->no", field, b[..., g * og : (g + 1) * og]
        )
    return out


def np_conv_transpose2d(
    a: np.ndarray, b: np.ndarray, stride=1, padding=0, output_padding=0, dilation=1, groups: int = 1
) -> np.ndarray:
    """The definition as a scatter: input pixel (i, j) adds ``a[i, j] · b[u, v]ᵀ`` at
    output (i·s + u·d, j·s + v·d), before the padding is cropped off."""
    (s_h, s_w), (d_h, d_w) = np.broadcast_to(stride, 2), np.broadcast_to(dilation, 2)
    (top, bottom), (left, right) = _np_pads(padding)
    extra_h, extra_w = np.broadcast_to(output_padding, 2)
    n, h, w, c = a.shape
    kh, kw, og, _ = b.shape
    cg = c // groups
    canvas = np.zeros(
        (
            n,
            (h - 1) * s_h + d_h * (kh - 1) + 1 + extra_h,
            (w - 1) * s_w + d_w * (kw - 1) + 1 + extra_w,
            og * groups,
        )
    )
    for i, j, u, v, g in np.ndindex(h, w, kh, kw, groups):
        canvas[:, i * s_h + u * d_h, j * s_w + v * d_w, g * og : (g + 1) * og] += (
            a[:, i, j, g * cg : (g + 1) * cg] @ b[u, v, :, g * cg : (g + 1) * cg].T
        )
    return canvas[:, top : canvas.shape[1] - bottom, left : canvas.shape[2] - right]


# ----- the table -----------------------------------------------------------------------------

OPS: list[Row] = [
    # elementwise binary: every broadcast-compatible pair of the zoo
    Row("add", ndl.add, np.add, BROADCAST_PAIRS),
    Row("multiply", ndl.multiply, np.multiply, BROADCAST_PAIRS),
    Row("divide", ndl.divide, np.divide, BROADCAST_PAIRS, ("real", "nonzero")),
    Row("power", ndl.power, np.power, BROADCAST_PAIRS, ("positive", "real")),
    Row("sub (operator)", lambda a, b: a - b, np.subtract, BROADCAST_PAIRS),
    # scalar ops
    Row("add_scalar", lambda a: ndl.add_scalar(a, 1.5), lambda a: a + 1.5, UNARY),
    Row("mul_scalar", lambda a: ndl.mul_scalar(a, -2.5), lambda a: a * -2.5, UNARY),
    Row("divide_scalar", lambda a: ndl.divide_scalar(a, 4.0), lambda a: a / 4.0, UNARY),
    Row("divide_scalar neg", lambda a: ndl.divide_scalar(a, -0.5), lambda a: a / -0.5, UNARY),
    Row("power_scalar 3", lambda a: ndl.power_scalar(a, 3), lambda a: a**3, UNARY),
    Row("power_scalar 2", lambda a: ndl.power_scalar(a, 2), lambda a: a**2, UNARY),
    Row("power_scalar 0.5", lambda a: ndl.power_scalar(a, 0.5), np.sqrt, UNARY, ("positive",)),
    Row("power_scalar -1", lambda a: ndl.power_scalar(a, -1), lambda a: 1 / a, UNARY, ("nonzero",)),
    Row("power_scalar 0", lambda a: ndl.power_scalar(a, 0), np.ones_like, UNARY),
    Row("rsub (c - x)", lambda a: 3.0 - a, lambda a: 3.0 - a, UNARY),
    Row("rtruediv (c / x)", lambda a: 3.0 / a, lambda a: 3.0 / a, UNARY, ("nonzero",)),
    # elementwise unary
    Row("negate", ndl.negate, np.negative, UNARY),
    Row("astype (to its own dtype)", lambda a: ndl.astype(a, a.dtype) * a, np.square, UNARY),
    Row("log", ndl.log, np.log, UNARY, ("positive",)),
    Row("exp", ndl.exp, np.exp, UNARY),
    Row("relu", ndl.relu, lambda a: np.maximum(a, 0.0), UNARY, ("nonzero",)),
    # ReLU's adjoint: linear in out_grad; x is data (its numerical gradient is 0 off the kink)
    Row(
        "relu_gradient",
        ndl.relu_gradient,
        lambda g, x: g * (x > 0),
        [(s, s) for s in ZOO],
        ("real", "nonzero"),
    ),
    Row(
        "multiply_constant",
        lambda a: ndl.multiply_constant(a, _fixed(a)),
        lambda a: a * _np_fixed(a.shape),
        UNARY,
    ),
    Row(
        "fused_dropout",
        lambda a: ndl.fused_dropout(a, _draws(a.shape), 0.6),
        lambda a: a * _np_dropout_mask(a.shape, 0.6),
        UNARY,
    ),
    Row("tanh", ndl.tanh, np.tanh, UNARY),
    Row("sigmoid", ndl.sigmoid, np_sigmoid, UNARY),
    # transpose: the last two axes by default, or the two given (negative allowed)
    Row("transpose", ndl.transpose, lambda a: np.swapaxes(a, -1, -2), MATRICES + [((2, 3, 4, 5),)]),
    Row(
        "transpose (0, 1)",
        lambda a: ndl.transpose(a, (0, 1)),
        lambda a: np.swapaxes(a, 0, 1),
        MATRICES,
    ),
    Row(
        "transpose (0, 2)",
        lambda a: ndl.transpose(a, (0, 2)),
        lambda a: np.swapaxes(a, 0, 2),
        [((2, 3, 4),), ((2, 1, 4),)],
    ),
    Row(
        "transpose (-1, 0)",
        lambda a: ndl.transpose(a, (-1, 0)),
        lambda a: np.swapaxes(a, -1, 0),
        [((2, 3),), ((2, 3, 4),)],
    ),
    Row(
        "transpose (-3, -2)",
        lambda a: ndl.transpose(a, (-3, -2)),
        lambda a: np.swapaxes(a, -3, -2),
        [((2, 3, 4),)],
    ),
    Row("Tensor.transpose", lambda a: a.transpose(), lambda a: np.swapaxes(a, -1, -2), MATRICES),
    # reductions
    Row("summation None", ndl.summation, np.sum, UNARY),
    Row("summation 0", lambda a: ndl.summation(a, 0), lambda a: np.sum(a, 0), NONEMPTY),
    Row("summation -1", lambda a: ndl.summation(a, -1), lambda a: np.sum(a, -1), NONEMPTY),
    Row(
        "summation (0, 1)",
        lambda a: ndl.summation(a, (0, 1)),
        lambda a: np.sum(a, (0, 1)),
        MATRICES,
    ),
    Row(
        "summation (2, 0)",
        lambda a: ndl.summation(a, (2, 0)),
        lambda a: np.sum(a, (2, 0)),
        [((2, 3, 4),), ((2, 1, 4),), ((1, 3, 1),)],
    ),
    Row(
        "summation (-1, -3)",
        lambda a: ndl.summation(a, (-1, -3)),
        lambda a: np.sum(a, (-1, -3)),
        [((2, 3, 4),)],
    ),
    Row("summation ()", lambda a: ndl.summation(a, ()), lambda a: np.sum(a, ()), UNARY),
    Row("Tensor.sum", lambda a: a.sum((1,)), lambda a: np.sum(a, 1), MATRICES),
    Row(
        "summation empty axis",
        lambda a: ndl.summation(a, 1),
        lambda a: np.sum(a, 1),
        [((2, 0),), ((3, 0, 2),)],
    ),
    Row("summation empty all", ndl.summation, np.sum, [((0,),), ((2, 0),)]),
    Row("logsumexp None", ndl.logsumexp, np_logsumexp, UNARY),
    Row("logsumexp 0", lambda a: ndl.logsumexp(a, 0), lambda a: np_logsumexp(a, 0), NONEMPTY),
    Row("logsumexp -1", lambda a: ndl.logsumexp(a, -1), lambda a: np_logsumexp(a, -1), NONEMPTY),
    Row(
        "logsumexp (0, 1)",
        lambda a: ndl.logsumexp(a, (0, 1)),
        lambda a: np_logsumexp(a, (0, 1)),
        MATRICES,
    ),
    Row(
        "logsumexp (-1, 0)",
        lambda a: ndl.logsumexp(a, (-1, 0)),
        lambda a: np_logsumexp(a, (-1, 0)),
        MATRICES,
    ),
    Row(
        "logsoftmax",
        ndl.logsoftmax,
        lambda a: a - np_logsumexp(a, -1)[..., None],
        [((2, 3),), ((1, 5),), ((4, 1),), ((3,),), ((2, 3, 4),)],
    ),
    # matmul: 2-D, batched, broadcast batch dimensions
    Row(
        "matmul",
        ndl.matmul,
        np.matmul,
        [
            ((2, 3), (3, 4)),
            ((1, 1), (1, 1)),
            ((3, 1), (1, 2)),
            ((2, 3, 4), (2, 4, 5)),
            ((2, 1, 3, 4), (5, 4, 2)),
            ((3, 4), (2, 4, 5)),
            ((2, 3, 4), (4, 5)),
            ((1, 3, 4), (2, 4, 1)),
            ((2, 1, 2, 3), (1, 4, 3, 2)),
        ],
    ),
    Row(
        "matmul (operator)", lambda a, b: a @ b, np.matmul, [((2, 3), (3, 4)), ((2, 2, 3), (3, 2))]
    ),
    Row("negate ∘ matmul", lambda a, b: -(a.matmul(b)), lambda a, b: -(a @ b), [((2, 3), (3, 2))]),
    # flip, dilate, undilate
    Row("flip 0", lambda a: ndl.flip(a, 0), lambda a: np.flip(a, 0), NONEMPTY),
    Row("flip (0, 1)", lambda a: ndl.flip(a, (0, 1)), lambda a: np.flip(a, (0, 1)), MATRICES),
    Row("flip -1", lambda a: ndl.flip(a, (-1,)), lambda a: np.flip(a, -1), NONEMPTY),
    Row(
        "dilate 0 by 1",
        lambda a: ndl.dilate(a, (0,), 1),
        lambda a: np_dilate(a, (0,), 1),
        [((3,),), ((2, 3),), ((1, 2, 2),)],
    ),
    Row(
        "dilate (0, 1) by 2",
        lambda a: ndl.dilate(a, (0, 1), 2),
        lambda a: np_dilate(a, (0, 1), 2),
        [((2, 3),), ((2, 2, 3),)],
    ),
    Row("dilate -1 by 0", lambda a: ndl.dilate(a, -1, 0), lambda a: a, [((2, 3),)]),
    Row(
        "undilate 0 by 1",
        lambda a: ndl.undilate(a, (0,), 1),
        lambda a: np_undilate(a, (0,), 1),
        [((4,),), ((6, 2),)],
    ),
    Row(
        "undilate (0, 1) by 2",
        lambda a: ndl.undilate(a, (0, 1), 2),
        lambda a: np_undilate(a, (0, 1), 2),
        [((3, 6),), ((6, 3, 2),)],
    ),
    # reshape and broadcast_to, each case its own target
    *[
        Row(
            f"reshape {src}->{dst}",
            lambda a, dst=dst: ndl.reshape(a, dst),
            lambda a, dst=dst: a.reshape(dst),
            [(src,)],
        )
        for src, dst in [
            ((2, 3), (3, 2)),
            ((2, 3, 4), (-1,)),
            ((2, 3, 4), (4, -1)),
            ((3,), (1, 3, 1)),
            ((), (1, 1)),
            ((1, 1), ()),
            ((1, 3), (3,)),
            ((2, 3, 4), (2, 1, 12)),
            ((0, 3), (3, 0)),
        ]
    ],
    *[
        Row(
            f"broadcast_to {src}->{dst}",
            lambda a, dst=dst: ndl.broadcast_to(a, dst),
            lambda a, dst=dst: np.broadcast_to(a, dst),
            [(src,)],
        )
        for src, dst in [
            ((3,), (2, 3)),
            ((1, 3), (4, 3)),
            ((2, 1), (2, 3)),
            ((), (2, 3)),
            ((1,), (1,)),
            ((1, 3, 1), (2, 3, 4)),
            ((2, 1, 4), (3, 2, 5, 4)),
            ((1,), (2, 0)),
        ]
    ],
    # stack / split and the tuple plumbing
    Row(
        "stack 0",
        lambda a, b, c: ndl.stack([a, b, c], 0),
        lambda *a: np.stack(a, 0),
        [((),) * 3, ((3,),) * 3, ((2, 3),) * 3],
    ),
    Row(
        "stack 1",
        lambda a, b: ndl.stack((a, b), 1),
        lambda *a: np.stack(a, 1),
        [((3,),) * 2, ((2, 3),) * 2],
    ),
    Row(
        "stack -1",
        lambda a, b: ndl.stack([a, b], -1),
        lambda *a: np.stack(a, -1),
        [((),) * 2, ((2, 3),) * 2],
    ),
    Row(
        "split 0",
        lambda a: _recombine(ndl.split(a, 0)),
        lambda a: _np_recombine(a, 0),
        [((3,),), ((2, 3),), ((1, 3, 1),)],
    ),
    Row(
        "split 1",
        lambda a: _recombine(ndl.split(a, 1)),
        lambda a: _np_recombine(a, 1),
        [((2, 3),), ((2, 3, 4),)],
    ),
    Row(
        "split -1",
        lambda a: _recombine(ndl.split(a, -1)),
        lambda a: _np_recombine(a, -1),
        [((2, 3, 4),)],
    ),
    Row(
        "split then stack",
        lambda a: ndl.stack(list(ndl.split(a, 1)), 1),
        lambda a: a,
        [((2, 3),), ((2, 3, 4),)],
    ),
    Row(
        "make_tuple / tuple_get_item",
        lambda a, b: _get(ndl.make_tuple(a, b), 0) * _get(ndl.make_tuple(a, b), 1),
        np.multiply,
        [((3,), (3,)), ((2, 3), (2, 3))],
    ),
    Row(
        "tuple_get_item -1",
        lambda a, b: ndl.tuple_get_item(ndl.make_tuple(a, b), -1) * 2.0,
        lambda a, b: b * 2.0,
        [((3,), (2,))],
    ),
    Row(
        "fused_add_scalars",
        lambda a: ndl.fused_add_scalars(a, 1.0, -2.0)[0] * ndl.fused_add_scalars(a, 1.0, -2.0)[1],
        lambda a: (a + 1.0) * (a - 2.0),
        UNARY,
    ),
    # ----- the PyTorch-named ops ---------------------------------------------------------
    # indexing: views for basic keys, gathers for advanced ones; gradients scatter back
    Row("getitem int", lambda a: a[1], lambda a: a[1], [((3,),), ((2, 3),), ((2, 3, 4),)]),
    Row("getitem -1", lambda a: a[-1, 0], lambda a: a[-1, 0], [((2, 3),), ((2, 3, 4),)]),
    Row("getitem slices", lambda a: a[:, 1:3], lambda a: a[:, 1:3], [((2, 3),), ((2, 3, 4),)]),
    Row(
        "getitem negative steps",
        lambda a: a[::-1, ::-2],
        lambda a: a[::-1, ::-2],
        [((2, 3),), ((2, 3, 4),), ((1, 3, 1),)],
    ),
    Row(
        "getitem None and ...",
        lambda a: a[None, ..., 0],
        lambda a: a[None, ..., 0],
        [((3,),), ((2, 3),), ((2, 3, 4),)],
    ),
    Row("getitem ()", lambda a: a[()] * a[()], lambda a: a * a, UNARY),
    Row(
        "getitem int array, repeated",
        lambda a: a[[0, 1, 0]],
        lambda a: a[[0, 1, 0]],
        [((2,),), ((2, 3),), ((2, 3, 4),)],
    ),
    Row(
        "getitem int tensor and slice",
        lambda a: a[ndl.Tensor([[1], [0]], dtype="int64"), 1:],
        lambda a: a[np.array([[1], [0]]), 1:],
        [((2, 3),), ((2, 3, 4),)],
    ),
    Row(
        "getitem two arrays",
        lambda a: a[[1, 0, 1], [2, 2, 0]],
        lambda a: a[[1, 0, 1], [2, 2, 0]],
        [((2, 3),), ((2, 3, 4),)],
    ),
    Row(
        "getitem bool mask",
        lambda a: a[_np_fixed(a.shape) > 0],
        lambda a: a[_np_fixed(a.shape) > 0],
        NONEMPTY,
    ),
    Row(
        "getitem bool mask tensor",
        lambda a: a[ndl.Tensor(_np_fixed(a.shape[:1]) > -1, dtype="bool")],
        lambda a: a[_np_fixed(a.shape[:1]) > -1],
        NONEMPTY,
    ),
    Row(
        "index_put slice",
        lambda a, v: ndl.index_put(a, (slice(None), 0), v) * a,
        lambda a, v: _np_put(a, (slice(None), 0), v) * a,
        [((2, 3), (2,)), ((2, 3), (1,))],
    ),
    Row(
        "index_put mask scalar",
        lambda a: ndl.index_put(a, _np_fixed(a.shape) > 0, 0.5),
        lambda a: _np_put(a, _np_fixed(a.shape) > 0, 0.5),
        NONEMPTY,
    ),
    Row(
        "index_put int array",
        lambda a, v: ndl.index_put(a, [2, 0], v),
        lambda a, v: _np_put(a, [2, 0], v),
        [((3,), (2,)), ((3, 2), (2, 2)), ((3, 2), (2,))],
    ),
    Row(
        "setitem with a value that requires grad",
        _setitem_graph,
        lambda v: _np_put(np.zeros((2,) + v.shape), 1, v * 2.0),
        [((3,),), ((2, 3),)],
    ),
    Row(
        "gather",
        lambda a: ndl.gather(a, 1, _IDX),
        lambda a: np.take_along_axis(a, _IDX, 1),
        [((2, 3),)],
    ),
    Row(
        "gather dim 0",
        lambda a: ndl.gather(a, 0, np.array([[1, 0, 1]])),
        lambda a: np.take_along_axis(a, np.array([[1, 0, 1]]), 0),
        [((2, 3),)],
    ),
    Row(
        "scatter_add",
        lambda a, s: ndl.scatter_add(a, 1, _IDX, s),
        lambda a, s: _np_scatter_add(a, _IDX, s),
        [((2, 3), (2, 2)), ((2, 3), (2, 3))],
    ),
    Row(
        "where (comparison)",
        lambda a, b: ndl.where(a > b, a, b * 2.0),
        lambda a, b: np.where(a > b, a, b * 2.0),
        BROADCAST_PAIRS,
    ),
    Row(
        "where scalar",
        lambda a: ndl.where(a <= 0.5, a, 0.0),
        lambda a: np.where(a <= 0.5, a, 0.0),
        UNARY,
    ),
    Row(
        "masked_fill",
        lambda a: ndl.masked_fill(a, a[..., :1] >= 0.5, -1.0),
        lambda a: np.where(a[..., :1] >= 0.5, -1.0, a),
        NONEMPTY,
    ),
    Row(
        "cat 0",
        lambda a, b: ndl.cat([a, b], dim=0),
        lambda a, b: np.concatenate([a, b], 0),
        [((3,), (2,)), ((2, 3), (1, 3)), ((1, 3, 1), (2, 3, 1))],
    ),
    Row(
        "cat -1 of three",
        lambda a, b, c: ndl.concatenate([a, b, c], -1),
        lambda *a: np.concatenate(a, -1),
        [((2, 3), (2, 1), (2, 2)), ((2, 1, 4),) * 3],
    ),
    Row(
        "split_with_sizes",
        lambda a: ndl.cat(ndl.split_with_sizes(a, [1, 2], 1)[::-1], 1),
        lambda a: np.concatenate([a[:, 1:], a[:, :1]], 1),
        [((2, 3),), ((2, 3, 4),)],
    ),
    Row(
        "Tensor.split",
        lambda a: ndl.cat(a.split(2, -1)[::-1], -1),
        lambda a: np.concatenate([a[..., 2:], a[..., :2]], -1),
        [((2, 3),), ((3,),)],
    ),
    Row(
        "chunk",
        lambda a: ndl.cat(ndl.chunk(a, 2, 0)[::-1], 0),
        lambda a: np.concatenate([a[1:], a[:1]], 0),
        [((2, 3),), ((2, 3, 4),)],
    ),
    # elementwise
    Row("abs", ndl.abs, np.abs, UNARY, ("nonzero",)),
    Row("sign", lambda a: ndl.sign(a) * a, np.abs, UNARY, ("nonzero",)),
    Row("sqrt", ndl.sqrt, np.sqrt, UNARY, ("positive",)),
    Row("rsqrt", ndl.rsqrt, lambda a: 1 / np.sqrt(a), UNARY, ("positive",)),
    Row("sin", ndl.sin, np.sin, UNARY),
    Row("cos", ndl.cos, np.cos, UNARY),
    Row("log1p", ndl.log1p, np.log1p, UNARY, ("positive",)),
    Row("expm1", ndl.expm1, np.expm1, UNARY),
    Row("clip", lambda a: ndl.clip(a, -0.5, 0.7), lambda a: np.clip(a, -0.5, 0.7), UNARY),
    Row("clamp min", lambda a: a.clamp(min=0.1), lambda a: np.maximum(a, 0.1), UNARY),
    Row(
        "clip tensor bounds",
        lambda a, b: ndl.clip(a, min=b, max=b + 1.0),
        lambda a, b: np.clip(a, b, b + 1.0),
        BROADCAST_PAIRS,
    ),
    Row("maximum", ndl.maximum, np.maximum, BROADCAST_PAIRS),
    Row("minimum", ndl.minimum, np.minimum, BROADCAST_PAIRS),
    Row("Tensor.pow", lambda a, b: a.pow(b), np.power, [((2, 3), (3,))], ("positive", "real")),
    # reductions
    Row("amax None", ndl.amax, np.max, UNARY),
    Row(
        "amax 1 keepdims",
        lambda a: ndl.amax(a, 1, keepdims=True),
        lambda a: np.max(a, 1, keepdims=True),
        MATRICES,
    ),
    Row(
        "amax dim (0, -1)",
        lambda a: ndl.amax(a, dim=(0, -1)),
        lambda a: np.max(a, (0, -1)),
        MATRICES,
    ),
    Row("amin -1", lambda a: ndl.amin(a, -1), lambda a: np.min(a, -1), NONEMPTY),
    Row("Tensor.max", lambda a: a.max(), np.max, UNARY),
    Row("max dim values", lambda a: a.max(1).values, lambda a: np.max(a, 1), MATRICES),
    Row(
        "min dim keepdim",
        lambda a: ndl.min(a, -1, keepdim=True)[0],
        lambda a: np.min(a, -1, keepdims=True),
        NONEMPTY,
    ),
    Row(
        "argmax through gather",
        lambda a: ndl.gather(a, 1, a.argmax(1, keepdim=True)),
        lambda a: np.max(a, 1, keepdims=True),
        MATRICES,
    ),
    Row("mean", ndl.mean, np.mean, UNARY),
    Row(
        "mean dim keepdim",
        lambda a: a.mean(dim=-1, keepdim=True),
        lambda a: np.mean(a, -1, keepdims=True),
        NONEMPTY,
    ),
    Row(
        "mean axis tuple",
        lambda a: ndl.mean(a, (0, 2)),
        lambda a: np.mean(a, (0, 2)),
        [((2, 3, 4),), ((1, 3, 1),)],
    ),
    Row("var", ndl.var, lambda a: np.var(a, ddof=1), [((3,),), ((2, 3),), ((2, 3, 4),)]),
    Row(
        "var dim 1 correction 0",
        lambda a: a.var(1, correction=0),
        lambda a: np.var(a, 1),
        [((2, 3),), ((2, 3, 4),)],
    ),
    Row(
        "std",
        lambda a: ndl.std(a, -1, keepdims=True),
        lambda a: np.std(a, -1, ddof=1, keepdims=True),
        [((3,),), ((2, 3),)],
    ),
    Row("prod", ndl.prod, np.prod, UNARY),
    Row("prod dim", lambda a: a.prod(dim=1), lambda a: np.prod(a, 1), MATRICES),
    Row(
        "prod with zeros",
        lambda a: ndl.prod(a * _zeros_mask(a), 1),
        lambda a: np.prod(a * _np_zeros_mask(a.shape), 1),
        [((3, 4),)],
    ),
    # shapes
    Row(
        "permute",
        lambda a: a.permute(2, 0, 1),
        lambda a: np.transpose(a, (2, 0, 1)),
        [((2, 3, 4),), ((1, 3, 1),)],
    ),
    Row(
        "permute (-1, 0)",
        lambda a: ndl.permute(a, (-1, 0)),
        lambda a: a.T,
        [(s,) for s in ZOO if len(s) == 2],
    ),
    Row("squeeze", ndl.squeeze, np.squeeze, UNARY),
    Row(
        "squeeze dim",
        lambda a: a.squeeze(0),
        lambda a: a.reshape(a.shape[1:]) if a.shape[0] == 1 else a,
        NONEMPTY,
    ),
    Row("unsqueeze", lambda a: a.unsqueeze(-1), lambda a: a[..., None], UNARY),
    Row("flatten", ndl.flatten, lambda a: a.reshape(-1), UNARY),
    Row("flatten 1", lambda a: a.flatten(1), lambda a: a.reshape(a.shape[0], -1), MATRICES),
    Row("view", lambda a: a.view(-1, 2), lambda a: a.reshape(-1, 2), [((2, 3),), ((2, 3, 4),)]),
    Row(
        "expand",
        lambda a: a.expand(2, -1, 3),
        lambda a: np.broadcast_to(a, (2, a.shape[0], 3)),
        [((3, 1),), ((2, 1),)],
    ),
    Row(
        "repeat", lambda a: a.repeat(2, 1, 3), lambda a: np.tile(a, (2, 1, 3)), MATRICES + [((3,),)]
    ),
    Row("tile", lambda a: ndl.tile(a, 2), lambda a: np.tile(a, 2), UNARY),
    # softmax
    Row("softmax", ndl.softmax, lambda a: np.exp(a - np_logsumexp(a, -1)[..., None]), NONEMPTY),
    Row(
        "log_softmax dim 0",
        lambda a: ndl.log_softmax(a, 0),
        lambda a: a - np_logsumexp(a, 0)[None],
        NONEMPTY,
    ),
    # activations and losses (needle.nn.functional)
    Row(
        "gelu",
        F.gelu,
        lambda a: 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3))),
        UNARY,
    ),
    Row("silu", F.silu, lambda a: a * np_sigmoid(a), UNARY),
    Row(
        "leaky_relu",
        lambda a: F.leaky_relu(a, 0.1),
        lambda a: np.where(a > 0, a, 0.1 * a),
        UNARY,
        ("nonzero",),
    ),
    Row("elu", F.elu, lambda a: np.where(a > 0, a, np.expm1(a)), UNARY, ("nonzero",)),
    Row(
        "softplus",
        lambda a: F.softplus(a, 2.0, 3.0),
        lambda a: np.where(2 * a > 3.0, a, np.log1p(np.exp(2 * a)) / 2),
        UNARY,
    ),
    Row(
        "cross_entropy",
        lambda a: F.cross_entropy(a, _labels(a)),
        lambda a: np_cross_entropy(a, _np_labels(a)),
        [(s,) for s in ZOO if len(s) == 2] + [((4, 5),)],
    ),
    Row(
        "cross_entropy smoothing, ignore_index, sum",
        lambda a: F.cross_entropy(
            a, _labels(a, ignore=True), ignore_index=-1, label_smoothing=0.1, reduction="sum"
        ),
        lambda a: np_cross_entropy(a, _np_labels(a, ignore=True), -1, 0.1, "sum"),
        [((4, 5),)],
    ),
    Row(
        "cross_entropy (N, C, d)",
        lambda a: F.cross_entropy(a, _labels(a), reduction="none"),
        lambda a: np_cross_entropy(
            np.moveaxis(a, 1, -1).reshape(-1, 3), _np_labels(a).reshape(-1), reduction="none"
        ).reshape(2, 4),
        [((2, 3, 4),)],
    ),
    Row(
        "cross_entropy probabilities",
        lambda a, p: F.cross_entropy(a, ndl.softmax(p)),
        lambda a, p: (
            -np.mean(
                np.sum(
                    np.exp(p - np_logsumexp(p, 1)[:, None]) * (a - np_logsumexp(a, 1)[:, None]), 1
                )
            )
        ),
        [((2, 3), (2, 3))],
    ),
    Row(
        "nll_loss",
        lambda a: F.nll_loss(ndl.log_softmax(a, 1), _labels(a)),
        lambda a: np_cross_entropy(a, _np_labels(a)),
        [((4, 5),)],
    ),
    Row("mse_loss", F.mse_loss, lambda a, b: np.mean((a - b) ** 2), [((2, 3), (2, 3))]),
    Row(
        "l1_loss sum",
        lambda a, b: F.l1_loss(a, b, "sum"),
        lambda a, b: np.abs(a - b).sum(),
        [((2, 3), (2, 3))],
    ),
    Row(
        "binary_cross_entropy",
        lambda a, b: F.binary_cross_entropy(ndl.sigmoid(a), ndl.sigmoid(b)),
        lambda a, b: np.mean(
            -(
                np_sigmoid(b) * np.log(np_sigmoid(a))
                + (1 - np_sigmoid(b)) * np.log(1 - np_sigmoid(a))
            )
        ),
        [((2, 3), (2, 3))],
    ),
    Row(
        "binary_cross_entropy_with_logits",
        lambda a, b: F.binary_cross_entropy_with_logits(a, ndl.sigmoid(b), reduction="none"),
        lambda a, b: (
            -(
                np_sigmoid(b) * np.log(np_sigmoid(a))
                + (1 - np_sigmoid(b)) * np.log(1 - np_sigmoid(a))
            )
        ),
        [((2, 3), (2, 3))],
    ),
    # convolutions (NHWC × KKIO) with every option; the last shape of each row is an edge case
    Row(
        "convolution same padding, even kernel, groups 2",
        lambda a, b: ndl.convolution(a, b, padding="same", groups=2),
        lambda a, b: np_conv2d(
            a, b, padding=[((k - 1) // 2, k // 2) for k in b.shape[:2]], groups=2
        ),  # PyTorch's "same": the odd pixel after
        [((1, 4, 5, 4), (2, 2, 2, 2)), ((2, 3, 3, 2), (3, 2, 1, 4)), ((1, 1, 1, 2), (2, 2, 1, 2))],
    ),  # a 1×1 image: the only live tap is (0, 0)
    Row(
        "convolution depthwise, stride 2, padding 2, dilation 2",
        lambda a, b: ndl.convolution(a, b, stride=2, padding=2, dilation=2, groups=a.shape[3]),
        lambda a, b: np_conv2d(a, b, 2, 2, 2, a.shape[3]),
        [
            ((1, 5, 5, 3), (3, 3, 1, 3)),
            ((2, 6, 4, 2), (2, 3, 1, 4)),  # channel multiplier 2
            ((1, 1, 1, 1), (3, 3, 1, 1)),
        ],
    ),  # only the centre tap meets the image
    Row(
        "convolution stride (2, 1), per-side padding, dilation (1, 2)",
        lambda a, b: ndl.convolution(
            a, b, stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2)
        ),
        lambda a, b: np_conv2d(a, b, (2, 1), ((1, 0), (2, 1)), (1, 2)),
        [((1, 5, 6, 2), (3, 2, 2, 3)), ((1, 2, 7, 1), (2, 3, 1, 1))],
    ),
    Row(
        "conv_transpose stride 2, padding 1, output_padding 1",
        lambda a, b: ndl.conv_transpose(a, b, stride=2, padding=1, output_padding=1),
        lambda a, b: np_conv_transpose2d(a, b, 2, 1, 1),
        [((1, 3, 3, 2), (3, 3, 3, 2)), ((2, 2, 4, 1), (4, 4, 2, 1)), ((1, 1, 1, 2), (3, 3, 1, 2))],
    ),  # one input pixel
    Row(
        "conv_transpose groups 2, stride (1, 2), dilation (2, 1), per-side padding",
        lambda a, b: ndl.conv_transpose(
            a,
            b,
            stride=(1, 2),
            padding=((1, 0), (0, 2)),
            output_padding=(0, 1),
            dilation=(2, 1),
            groups=2,
        ),
        lambda a, b: np_conv_transpose2d(a, b, (1, 2), ((1, 0), (0, 2)), (0, 1), (2, 1), 2),
        [((1, 3, 4, 4), (2, 3, 1, 4)), ((2, 2, 2, 2), (3, 2, 2, 2))],
    ),
    Row(
        "upsample_nearest2d",
        lambda a: ndl.upsample_nearest2d(a, (2, 3)),
        lambda a: a.repeat(2, axis=2).repeat(3, axis=3),
        [((1, 2, 3, 2),), ((2, 1, 1, 1),)],
    ),
    # a composite: the course's softmax loss shape
    Row(
        "composite",
        lambda x, w: ndl.logsumexp(ndl.relu(x @ w), 1).sum() / 2,
        lambda x, w: np_logsumexp(np.maximum(x @ w, 0), 1).sum() / 2,
        [((2, 3), (3, 4))],
        ("nonzero",),
    ),
]

CASES = [
    pytest.param(row, shapes, id=f"{row.name}-{'-'.join(map(str, shapes))}".replace(" ", ""))
    for row in OPS
    for shapes in row.shapes
]


# ----- the three table-driven tests -----------------------------------------------------------


@pytest.mark.parametrize("row, shapes", CASES)
def test_forward_matches_numpy(row: Row, shapes, device):
    arrays = row.inputs(shapes)
    out = row.fn(*[tensor(a, device=device) for a in arrays])
    assert out.device == device
    expected = np.asarray(row.ref(*arrays))
    assert isinstance(out, ndl.Tensor), f"{row.name} returned {type(out).__name__}"
    assert out.shape == expected.shape, f"{row.name}: shape {out.shape} != NumPy's {expected.shape}"
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=row.name)


@pytest.mark.parametrize("row, shapes", CASES)
def test_float32_stays_float32(row: Row, shapes):
    arrays = row.inputs(shapes, dtype=np.float32)
    out = row.fn(*[tensor(a) for a in arrays])
    assert out.dtype == np.float32, f"{row.name}: float32 inputs gave {out.dtype}"
    expected = row.ref(*[a.astype(np.float64) for a in arrays])
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5, err_msg=row.name)


@pytest.mark.parametrize("row, shapes", CASES)
def test_float32_gradients_stay_float32(row: Row, shapes):
    leaves = [tensor(a) for a in row.inputs(shapes, dtype=np.float32)]
    row.fn(*leaves).backward()
    for i, x in enumerate(leaves):
        if x.grad is not None:
            assert x.grad.dtype == np.float32, f"{row.name}: input {i} got a {x.grad.dtype} grad"
            assert x.grad.shape == x.shape


@pytest.mark.parametrize("row, shapes", CASES)
def test_gradient_matches_finite_differences(row: Row, shapes, device):
    # gradcheck raises GradcheckError naming the input, element and both values.
    assert gradcheck(row.fn, *row.inputs(shapes), device=device)


def test_results_are_arrays_not_numpy_scalars():
    # A 0-d result must stay an ndarray (NumPy returns np.float64 scalars for 0-d math).
    x = tensor(np.arange(6.0).reshape(2, 3))
    for out in [
        x.sum(),
        ndl.exp(tensor(np.array(2.0))),
        ndl.logsumexp(x),
        ndl.split(tensor([1.0, 2.0]), 0)[1],
        tensor(np.array(1.0)) + 1,
    ]:
        assert isinstance(out.realize_cached_data(), NDArray), type(out.realize_cached_data())
        assert isinstance(out.numpy(), np.ndarray)


# ----- every op is covered and importable ------------------------------------------------------

SPEC_OPS = {
    "EWiseAdd": "add",
    "AddScalar": "add_scalar",
    "EWiseMul": "multiply",
    "MulScalar": "mul_scalar",
    "EWisePow": "power",
    "PowerScalar": "power_scalar",
    "EWiseDiv": "divide",
    "DivScalar": "divide_scalar",
    "Transpose": "transpose",
    "Reshape": "reshape",
    "BroadcastTo": "broadcast_to",
    "Summation": "summation",
    "MatMul": "matmul",
    "Negate": "negate",
    "Log": "log",
    "Exp": "exp",
    "ReLU": "relu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "LogSoftmax": "logsoftmax",
    "LogSumExp": "logsumexp",
    "Stack": "stack",
    "Split": "split",
    "Flip": "flip",
    "Dilate": "dilate",
    "UnDilate": "undilate",
    "MakeTensorTuple": "make_tuple",
    "TupleGetItem": "tuple_get_item",
    "FusedAddScalars": "fused_add_scalars",
}


@pytest.mark.parametrize("name", sorted(SPEC_OPS) + sorted(SPEC_OPS.values()))
def test_op_is_exported_at_top_level_and_in_ops(name: str):
    assert hasattr(ndl.ops, name), f"needle.ops.{name} is missing"
    assert getattr(ndl, name, None) is getattr(ndl.ops, name), f"needle.{name} != needle.ops.{name}"


def test_every_spec_op_appears_in_the_table():
    """Run each row once and collect the op classes in its graph: the table must reach them all."""
    seen = set()
    for row in OPS:
        tensors = [tensor(a) for a in row.inputs(row.shapes[0])]
        seen |= {type(node.op).__name__ for node in find_topo_sort([row.fn(*tensors)]) if node.op}
    missing = set(SPEC_OPS) - seen
    assert not missing, f"no row of OPS exercises {sorted(missing)}"


# ----- numerical edge cases the table's domains avoid ----------------------------------------


def test_sigmoid_is_finite_for_huge_inputs():
    x = tensor([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow either
        y = ndl.sigmoid(x)
        y.backward()
    np.testing.assert_allclose(
        y.numpy(), [0.0, np_sigmoid(-50.0), 0.5, np_sigmoid(50.0), 1.0], rtol=1e-12, atol=1e-300
    )
    assert np.isfinite(x.grad.numpy()).all()
    assert ndl.sigmoid(tensor(np.array([-1000.0, 1000.0], np.float32))).dtype == np.float32


@pytest.mark.parametrize("axes", [None, 1, -1, (0, 1), (1, 0)])
def test_logsumexp_is_stable_for_large_inputs(axes):
    a = np.array([[1e5, 1e5 + 1.0, 1e5 - 2.0], [-1e5, -1e5 + 3.0, -1e5]])
    x = tensor(a)
    out = ndl.logsumexp(x, axes)
    shift = np.max(a, axis=axes, keepdims=True)
    expected = np.squeeze(
        shift + np.log(np.sum(np.exp(a - shift), axis=axes, keepdims=True)),
        axis=axes if axes is not None else None,
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-14)
    out.backward()
    softmax = np.exp(a - expected.reshape(shift.shape))
    np.testing.assert_allclose(x.grad.numpy(), softmax, rtol=1e-12, atol=1e-300)


def test_logsumexp_with_minus_inf_entries():
    a = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]])
    x = tensor(a)
    out = ndl.logsumexp(x, 1)
    assert out.numpy()[0] == pytest.approx(np.log(1.0 + np.e))
    assert out.numpy()[1] == -np.inf, "a row of all -inf gives -inf"
    assert ndl.logsumexp(x).numpy() == pytest.approx(np.log(1.0 + np.e))
    assert ndl.logsumexp(tensor(a[1:]), (0, 1)).numpy() == -np.inf
    ndl.logsumexp(tensor(a[:1]), 1).backward()  # a -inf entry has zero gradient
    row = tensor(a[:1])
    ndl.logsumexp(row, 1).backward()
    np.testing.assert_allclose(row.grad.numpy(), [[1 / (1 + np.e), 0.0, np.e / (1 + np.e)]])


def test_logsumexp_over_an_empty_axis_is_minus_inf():
    out = ndl.logsumexp(tensor(np.zeros((2, 0))), 1)
    assert out.shape == (2,)
    assert (out.numpy() == -np.inf).all()


def test_logsoftmax_is_stable_for_large_inputs():
    x = tensor([[1e5, 0.0], [-1e5, -1e5]])
    np.testing.assert_allclose(ndl.logsoftmax(x).numpy(), [[0.0, -1e5], [-np.log(2), -np.log(2)]])


def test_summation_over_an_empty_axis_gives_zeros_and_empty_gradients():
    x = tensor(np.zeros((2, 0)))
    out = ndl.summation(x, 1)
    np.testing.assert_array_equal(out.numpy(), [0.0, 0.0])
    out.backward()
    assert x.grad.shape == (2, 0)


def test_relu_gradient_at_zero_is_zero():
    x = tensor([-1.0, 0.0, 2.0])
    ndl.relu(x).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 1.0])


def test_stack_and_split_are_inverse():
    a = np.arange(24.0).reshape(2, 3, 4)
    for axis in (0, 1, 2, -1, -3):
        parts = ndl.split(tensor(a), axis)
        assert len(parts) == a.shape[axis]
        for i, part in enumerate(parts):
            np.testing.assert_array_equal(part.numpy(), np.take(a, i, axis=axis))
        np.testing.assert_array_equal(ndl.stack(parts.tuple(), axis).numpy(), a)
    xs = [tensor(np.full((2, 3), float(i))) for i in range(4)]
    for axis in (0, 1, 2, -1):
        back = ndl.split(ndl.stack(xs, axis), axis)
        assert [p.numpy().tolist() for p in back] == [x.numpy().tolist() for x in xs]


def test_undilate_inverts_dilate():
    a = np.arange(6.0).reshape(2, 3)
    for axes, d in [((0,), 1), ((1,), 2), ((0, 1), 3)]:
        dilated = ndl.dilate(tensor(a), axes, d)
        np.testing.assert_array_equal(ndl.undilate(dilated, axes, d).numpy(), a)


def test_implicit_broadcasting_inserts_broadcast_to_nodes():
    a, b = tensor(np.ones((2, 1))), tensor(np.ones(3))
    out = a * b
    assert [type(x.op).__name__ for x in out.inputs] == ["BroadcastTo", "BroadcastTo"]
    out.backward()
    assert a.grad.shape == (2, 1) and b.grad.shape == (3,)
    np.testing.assert_array_equal(a.grad.numpy(), [[3.0], [3.0]])
    np.testing.assert_array_equal(b.grad.numpy(), [2.0, 2.0, 2.0])


# ----- second derivatives: gradients are built from ops ----------------------------------------


def test_second_derivative_of_cube():
    values = np.array([-1.5, 0.0, 2.0])
    for cube in (lambda x: x**3, lambda x: x * x * x):
        x = tensor(values)
        cube(x).backward(create_graph=True)
        g = x.grad
        np.testing.assert_allclose(g.numpy(), 3 * values**2)
        assert g.requires_grad, "the gradient must itself be a differentiable graph"
        g.backward()
        np.testing.assert_allclose(x.grad.numpy(), 6 * values)


def test_default_backward_extends_the_graph():
    # The course's semantics: gradients are tensors built from ops, differentiable with
    # no flag. y = x*x + x*z: dy/dx = 2x + z, d/dx (dy/dx) = 2, d/dz (dy/dx) = 1.
    x = tensor(np.array([1.0, -2.0]))
    z = tensor(np.array([3.0, 0.5]))
    y = x * x + x * z
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + z.numpy())
    assert x.grad.requires_grad  # its graph is recorded when it is differentiated
    x.grad.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])
    np.testing.assert_allclose(z.grad.numpy(), [1.0, 1.0])


def test_fast_path_backward_records_no_gradient_graph():
    x = tensor(np.array([1.0, 2.0]))
    (x**3).backward(create_graph=False)
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 12.0])
    assert not x.grad.requires_grad and x.grad.op is None
    with pytest.raises(RuntimeError, match="leave create_graph at its default"):
        x.grad.backward()


def _grad_of(f: Callable[..., ndl.Tensor], wrt: int = 0) -> Callable[..., ndl.Tensor]:
    """x ↦ ∇_x sum(f(x, ...)), as a needle graph (for gradcheck: its gradient is a Hessian)."""

    def grad(*xs: ndl.Tensor) -> ndl.Tensor:
        # gradcheck's finite differences pass detached inputs; give them a graph again.
        xs = [x if x.requires_grad else tensor(x, requires_grad=True) for x in xs]
        f(*xs).backward(create_graph=True)
        grad = xs[wrt].grad
        # A leaf that the gradient graph does not reach keeps this first-order .grad
        # through gradcheck's backward (grads are replaced only on the graph's nodes).
        for x in xs:
            x.grad = None
        return grad

    return grad


SECOND_ORDER = [
    ("exp", ndl.exp, [(3,)], "real"),
    ("log", ndl.log, [(3,)], "positive"),
    ("tanh", ndl.tanh, [(2, 3)], "real"),
    ("sigmoid", ndl.sigmoid, [(2, 3)], "real"),
    ("power_scalar 0.5", lambda a: a**0.5, [(3,)], "positive"),
    ("power_scalar -1", lambda a: a**-1, [(3,)], "nonzero"),
    ("multiply broadcast", lambda a, b: a * b, [(2, 1), (3,)], "real"),
    ("divide wrt a", lambda a, b: a / b, [(2, 3), (3,)], "nonzero"),
    ("power wrt a", ndl.power, [(3,), (3,)], "positive"),
    ("logsumexp None", ndl.logsumexp, [(2, 3)], "real"),
    ("logsumexp 1", lambda a: ndl.logsumexp(a, 1), [(2, 3)], "real"),
    (
        "logsoftmax",
        lambda a: ndl.logsoftmax(a) * tensor(np.arange(6.0).reshape(2, 3)),
        [(2, 3)],
        "real",
    ),
    ("matmul", lambda a, b: (a @ b) * (a @ b), [(2, 3), (3, 2)], "real"),
    ("summation", lambda a: ndl.summation(a * a, 1) ** 2, [(2, 3)], "real"),
]


@pytest.mark.parametrize("name, f, shapes, domain", SECOND_ORDER, ids=[c[0] for c in SECOND_ORDER])
def test_gradient_of_gradient(name, f, shapes, domain):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    assert gradcheck(_grad_of(f), *[_draw(domain, s, rng) for s in shapes])


def test_logsumexp_hessian_vector_product_matches_finite_differences(rng):
    a, v = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))

    def gradient(values: np.ndarray) -> np.ndarray:
        x = tensor(values)
        ndl.logsumexp(x, 1).sum().backward()
        return x.grad.numpy()

    x = tensor(a)
    ndl.logsumexp(x, 1).sum().backward(create_graph=True)
    (x.grad * tensor(v)).sum().backward()  # d/dx <∇f(x), v> = H v (H is symmetric)
    eps = 1e-6
    numeric = (gradient(a + eps * v) - gradient(a - eps * v)) / (2 * eps)
    np.testing.assert_allclose(x.grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "op, second",
    [
        (ndl.tanh, lambda t: -2 * t * (1 - t**2)),
        (ndl.sigmoid, lambda s: s * (1 - s) * (1 - 2 * s)),
    ],
)
def test_second_derivative_of_tanh_and_sigmoid(op, second):
    values = np.linspace(-3, 3, 7)
    x = tensor(values)
    op(x).backward(create_graph=True)
    x.grad.backward()
    y = op(tensor(values)).numpy()
    np.testing.assert_allclose(x.grad.numpy(), second(y), rtol=1e-10, atol=1e-12)


# ----- every op's gradient is differentiable: Hessian-vector products ----------------------


def _gradients(row: Row, arrays: list, weights: list, create_graph: bool):
    """The leaves and their gradients of ``sum(row.fn(*leaves) * weights)``."""
    leaves = [tensor(a, requires_grad=True) for a in arrays]
    out = row.fn(*leaves)
    (out * tensor(weights[0])).sum().backward(create_graph=create_graph)
    return leaves, [x.grad for x in leaves]


def _largest_case(row: Row) -> tuple:
    return max(row.shapes, key=lambda shapes: sum(int(np.prod(s)) for s in shapes))


@pytest.mark.parametrize("row", [pytest.param(row, id=row.name.replace(" ", "")) for row in OPS])
def test_hessian_vector_product_matches_finite_differences(row: Row):
    """d/dx <∇f(x), v> (the gradient's own backward) against central differences of ∇f
    along v, for every op of the table on its largest case."""
    shapes = _largest_case(row)
    arrays = row.inputs(shapes)
    rng = np.random.default_rng(zlib.crc32(row.name.encode()))
    vs = [rng.standard_normal(a.shape) for a in arrays]
    weights = [_np_fixed(np.shape(row.ref(*arrays))) + 0.25]
    leaves, grads = _gradients(row, arrays, weights, create_graph=True)
    linked = [(g * tensor(v)).sum() for g, v in zip(grads, vs) if g is not None and g.requires_grad]
    if not linked:  # a gradient that does not depend on the inputs: the Hessian is 0
        hvp = [np.zeros(a.shape) for a in arrays]
    else:
        for x in leaves:
            x.grad = None
        sum(linked[1:], linked[0]).backward()
        hvp = [
            np.zeros(a.shape) if x.grad is None else x.grad.numpy() for a, x in zip(arrays, leaves)
        ]
    eps = 1e-6

    def gradient_at(sign: float) -> list:
        moved = [a + sign * eps * v for a, v in zip(arrays, vs)]
        return [
            np.zeros(a.shape) if g is None else g.numpy()
            for a, g in zip(moved, _gradients(row, moved, weights, False)[1])
        ]

    numeric = [(p - m) / (2 * eps) for p, m in zip(gradient_at(1.0), gradient_at(-1.0))]
    for i, (got, want) in enumerate(zip(hvp, numeric)):
        np.testing.assert_allclose(
            got, want, rtol=1e-5, atol=1e-6, err_msg=f"{row.name}: input {i}"
        )
