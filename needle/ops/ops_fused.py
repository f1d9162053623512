"""Fused ops: a whole layer in one forward op with a hand-derived gradient.

A layer written as a chain of small ops (``BatchNorm1d`` is about fifteen) spends
most of its time on per-op overhead and temporary arrays, not arithmetic. These ops
compute the layer in one pass and its input gradients from closed-form formulas.

Their gradients are not built from needle ops, so they cannot be differentiated a
second time. Rather than return a silently wrong second derivative, each gradient is
linked into the graph through :class:`HandDerivedGradient`, whose own gradient raises
an error that says how to get a twice-differentiable layer (``fused=False``).
The unfused compositions in ``needle.nn`` are the reference the tests check these against.

The arithmetic is the backend's: each op calls its entry points in
:data:`needle.backends.kernels` (a compiled kernel under ``nd``, a NumPy formula under
``np``), and what a gradient needs from the forward pass is kept on the node
(``node.saved``), never on the op.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_indices
from ..autograd import Saved, Tensor, TensorOp, is_grad_enabled
from ..backends import NDArray, array_api, kernels
from .ops_mathematic import MultiplyConstant, _check_tensor


class HandDerivedGradient(TensorOp):
    """A gradient that a fused op computed directly on arrays, as a graph node.

    Inputs are the fused op's out_grad and inputs, so the node requires grad exactly
    when a graph-built gradient would; differentiating it again raises.
    """

    def __init__(self, value: NDArray, source: str):
        self.value = value
        self.source = source

    def compute(self, *args: NDArray):
        return self.value

    def gradient(self, out_grad: Tensor, node: Tensor):
        raise NotImplementedError(
            f"second derivatives through the fused {self.source} are not supported; "
            f"build the layer with fused=False to differentiate its gradient again"
        )


def _link_gradients(source: str, out_grad: Tensor, node: Tensor, arrays: tuple) -> tuple:
    """One HandDerivedGradient node per input (None where the input needs no gradient)."""
    if not is_grad_enabled():  # no graph is being recorded: plain constants will do
        return tuple(None if array is None else Tensor.make_const(array) for array in arrays)
    links = (out_grad, *node.inputs)
    return tuple(
        HandDerivedGradient(array, source)(*links)
        if array is not None and inp.requires_grad
        else None
        for array, inp in zip(arrays, node.inputs)
    )


class FusedLinear(TensorOp):
    """``X @ W + b`` for X (N, in), W (in, out), b (1, out) or absent."""

    def compute(self, X: NDArray, W: NDArray, b: NDArray | None = None):
        out = array_api.matmul(X, W)
        return out if b is None else kernels.add_row(out, b)

    def gradient(self, out_grad: Tensor, node: Tensor):
        X, W = (t.realize_cached_data() for t in node.inputs[:2])
        g = out_grad.realize_cached_data()
        grads = [
            array_api.matmul(g, array_api.swapaxes(W, 0, 1))
            if node.inputs[0].requires_grad
            else None,
            array_api.matmul(array_api.swapaxes(X, 0, 1), g),
        ]
        if len(node.inputs) == 3:
            grads.append(g.sum(axis=0, keepdims=True).reshape(node.inputs[2].shape))
        return _link_gradients("Linear", out_grad, node, tuple(grads))


def fused_linear(X: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    """``X @ W + b`` as one op: X (N, in), W (in, out), b (1, out), (out,) or None → (N, out)."""
    _check_tensor("fused_linear", X, "X")
    _check_tensor("fused_linear", W, "W")
    if len(X.shape) != 2 or len(W.shape) != 2 or X.shape[1] != W.shape[0]:
        raise ValueError(
            f"fused_linear: X.shape={X.shape}, W.shape={W.shape}: "
            f"expected X (N, in) and W (in, out)"
        )
    if b is None:
        return FusedLinear()(X, W)
    if b.size != W.shape[1]:
        raise ValueError(f"fused_linear: bias has shape {b.shape}, expected {W.shape[1]} elements")
    return FusedLinear()(X, W, b)


class FusedBatchNorm(TensorOp):
    """Training-mode batch norm of x (N, D) with per-feature weight and bias (D,), the batch
    statistics computed in the same pass.

    The node keeps ``(xhat, inv_std, mean, var)`` for the gradient and, even when no graph is
    kept, for the layer's running statistics (:func:`fused_batch_norm` returns them).
    """

    saved_without_graph = True

    def __init__(self, eps: float):
        self.eps = eps

    def compute(self, x: NDArray, weight: NDArray, bias: NDArray):
        out, xhat, mean, var, inv_std = kernels.batchnorm_forward(x, weight, bias, self.eps)
        return Saved(out, xhat, inv_std, mean, var)

    def gradient(self, out_grad: Tensor, node: Tensor):
        xhat, inv_std = node.saved[:2]
        weight = node.inputs[1].realize_cached_data()
        grads = kernels.batchnorm_backward(out_grad.realize_cached_data(), xhat, weight, inv_std)
        return _link_gradients("BatchNorm1d", out_grad, node, grads)


class FusedLayerNorm(TensorOp):
    """Layer norm of x (N, D): each row normalised, then per-feature weight and bias (D,).

    The forward and the gradient are one kernel call each, one pass per row, with the same
    float operations in the same order as the NumPy formula, so the results are its bits.
    """

    def __init__(self, eps: float):
        self.eps = eps

    def compute(self, x: NDArray, weight: NDArray, bias: NDArray):
        out, xhat, inv_std = kernels.layernorm_forward(x, weight, bias, self.eps)
        return Saved(out, xhat, inv_std)

    def gradient(self, out_grad: Tensor, node: Tensor):
        xhat, inv_std = node.saved
        weight = node.inputs[1].realize_cached_data()
        grads = kernels.layernorm_backward(out_grad.realize_cached_data(), xhat, weight, inv_std)
        return _link_gradients("LayerNorm1d", out_grad, node, grads)


def _check_norm(op_name: str, x: Tensor, weight: Tensor, bias: Tensor) -> None:
    _check_tensor(op_name, x, "x")
    if len(x.shape) != 2 or weight.shape != (x.shape[1],) or bias.shape != (x.shape[1],):
        raise ValueError(
            f"{op_name}: x.shape={x.shape}, weight.shape={weight.shape}, bias.shape={bias.shape}: "
            f"expected x (N, D) with weight and bias (D,)"
        )


def fused_batch_norm(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5
) -> tuple[Tensor, Tensor, Tensor]:
    """Batch norm with batch statistics as one op.

    Returns ``(out (N, D), batch_mean (D,), batch_var (D,))``; the statistics are
    constants (for the running averages), the variance biased.
    """
    _check_norm("fused_batch_norm", x, weight, bias)
    out = FusedBatchNorm(eps)(x, weight, bias)
    mean, var = out.saved[2:]
    return out, Tensor.make_const(mean), Tensor.make_const(var)


def fused_layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Layer norm of x (N, D) as one op, weight and bias (D,); returns (N, D)."""
    _check_norm("fused_layer_norm", x, weight, bias)
    return FusedLayerNorm(eps)(x, weight, bias)


class FusedSoftmaxCrossEntropy(TensorOp):
    """Mean over the batch of ``logsumexp(logits_i) - logits_i[y_i]``; a 0-d result.

    ``labels`` are int64 (N,) in [0, K) (checked by the caller). The forward is one kernel
    call (per row: max, exp-sum, loss and the gradient; no one-hot matrix is built), and the
    node keeps ``unit_grad = (softmax - one_hot) * (1 / N)``, the gradient for
    ``out_grad = 1`` (what training passes), which the backward then returns without another
    pass over (N, K); for another ``out_grad`` it is ``unit_grad * out_grad``.
    """

    def __init__(self, labels: np.ndarray):
        self.labels = labels

    def compute(self, logits: NDArray):
        loss, unit_grad = kernels.softmax_cross_entropy(logits, self.labels)
        return Saved(loss, unit_grad)

    def gradient(self, out_grad: Tensor, node: Tensor):
        (unit_grad,) = node.saved
        g = out_grad.realize_cached_data()
        grad = unit_grad if float(g) == 1.0 else unit_grad * g
        return _link_gradients("SoftmaxLoss", out_grad, node, (grad,))


def fused_softmax_cross_entropy(logits: Tensor, labels) -> Tensor:
    """Mean softmax cross-entropy of logits (N, K) against integer labels (N,) in [0, K).

    >>> import needle as ndl
    >>> loss = fused_softmax_cross_entropy(ndl.init.zeros(2, 4), [0, 3])
    >>> round(float(loss.numpy()), 4)  # log(4)
    1.3863
    """
    _check_tensor("fused_softmax_cross_entropy", logits, "logits")
    labels = np.asarray(labels)
    if len(logits.shape) != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"fused_softmax_cross_entropy: labels of shape {labels.shape} for logits of shape "
            f"{logits.shape}; expected logits (N, K) and labels (N,)"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"fused_softmax_cross_entropy: labels must be integers, got dtype {labels.dtype}"
        )
    labels = check_indices("fused_softmax_cross_entropy", "labels", labels, logits.shape[1])
    labels = np.ascontiguousarray(labels)
    return FusedSoftmaxCrossEntropy(labels)(logits)


class FusedDropout(TensorOp):
    """Dropout with given uniform draws in one pass: ``out = x * mask``, where
    ``mask = [draws <= keep] / keep`` computed in the dtype of the backend's ``rand`` draws
    (``kernels.DRAW_DTYPE``: float32 under ``nd``, float64 under ``np``, so the mask is the
    course's ``randb`` expression on either), cast to x's dtype; the node keeps the mask.

    Unlike the other fused ops, the gradient is built from an op (``multiply_constant`` by the
    mask), so it can be differentiated again.
    """

    def __init__(self, draws: np.ndarray, keep: float):
        self.draws = draws
        self.keep = keep

    def compute(self, x: NDArray):
        out, mask = kernels.dropout(x, self.draws, self.keep)
        return Saved(out, mask)

    def gradient(self, out_grad: Tensor, node: Tensor):
        (mask,) = node.saved
        return MultiplyConstant(mask)(out_grad)


def fused_dropout(x: Tensor, draws: np.ndarray, keep: float) -> Tensor:
    """``x * ([draws <= keep] / keep)`` in one pass, compared in the dtype of the backend's
    ``rand`` draws; ``draws`` are float64 uniform [0, 1) draws of x's shape
    (``np.random.rand(*x.shape)``), ``keep`` in (0, 1]."""
    _check_tensor("fused_dropout", x, "x")
    draws = np.asarray(draws, dtype=np.float64, order="C")  # (keeps a 0-d shape)
    if draws.shape != x.shape:
        raise ValueError(
            f"fused_dropout: draws of shape {draws.shape} for x of shape {x.shape}; "
            f"expected one draw per element"
        )
    if not 0 < keep <= 1:
        raise ValueError(f"fused_dropout: keep must be in (0, 1], got {keep}")
    return FusedDropout(draws, float(keep))(x)


__all__ = [
    "HandDerivedGradient",
    "FusedLinear",
    "fused_linear",
    "FusedBatchNorm",
    "fused_batch_norm",
    "FusedLayerNorm",
    "fused_layer_norm",
    "FusedSoftmaxCrossEntropy",
    "fused_softmax_cross_entropy",
    "FusedDropout",
    "fused_dropout",
]
