"""Fused ops: a whole layer in one forward op with a hand-derived gradient.

A layer written as a chain of small ops (``BatchNorm1d`` is about fifteen) spends
most of its time on per-op overhead and temporary arrays, not arithmetic. These ops
compute the layer in one pass and its input gradients from closed-form formulas.

Their gradients are not built from needle ops, so they cannot be differentiated a
second time. Rather than return a silently wrong second derivative, each gradient is
linked into the graph through :class:`HandDerivedGradient`, whose own gradient raises
an error that says how to get a twice-differentiable layer (``fused=False``).
The unfused compositions in ``needle.nn`` are the reference the tests check these against.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_indices
from ..autograd import Tensor, TensorOp, is_grad_enabled
from ..backends import BACKEND, NDArray, array_api
from .ops_mathematic import MultiplyConstant, _check_tensor, _device_kernel


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
        if b is None:
            return out
        add_row = _device_kernel(out, "add_row")
        if add_row is None or b.dtype != out.dtype:
            return out + b
        # the bias added to every row in one pass, its (N, out) broadcast never materialised
        add_row(*_handles(out, b, out), *out.shape)
        return out

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


def _handles(*arrays: NDArray) -> list:
    """The compact buffers of ``arrays``, for a direct kernel call."""
    return [a.compact()._handle for a in arrays]


class _FusedNorm(TensorOp):
    """Normalise x (N, D) along ``axis`` with its mean and biased variance, then scale and shift.

    ``axis`` 0 is batch norm (statistics per feature), 1 is layer norm (per example);
    weight and bias (D,) act per feature either way. The forward keeps ``xhat`` and
    ``inv_std`` for the gradient and exposes ``mean``/``var`` (batch norm's running stats).
    """

    name = "norm"
    axis = 0
    #: The names of the backend module's one-pass kernels (both norms' kernels share their
    #: signatures); None: the array composition only.
    forward_kernel: str | None = None
    backward_kernel: str | None = None

    def __init__(self, eps: float):
        self.eps = eps

    def compute(self, x: NDArray, weight: NDArray, bias: NDArray):
        kernel = self.forward_kernel and _device_kernel(x, self.forward_kernel)
        if kernel is None:
            return self._compose(x, weight, bias)
        (n, d), dtype, device = x.shape, x.dtype, x.device
        out, self.xhat = (array_api.empty((n, d), dtype=dtype, device=device) for _ in "ab")
        stats = self._new_stats(n, d, lambda shape: array_api.empty(shape, dtype=dtype,
                                                                      device=device))
        kernel(*_handles(x, weight, bias, out, self.xhat, *stats), n, d, self.eps)
        return out

    def _new_stats(self, n: int, d: int, empty) -> list:
        """Uninitialised statistics arrays the forward kernel writes after ``out`` and
        ``xhat``, also kept on ``self``; ``empty(shape)`` makes one."""
        raise NotImplementedError

    def _compose(self, x: NDArray, weight: NDArray, bias: NDArray):
        """The forward as array operations (any backend)."""
        n = x.shape[self.axis]
        self.mean = x.sum(axis=self.axis, keepdims=True) / n
        centred = x - self.mean
        self.var = (centred * centred).sum(axis=self.axis, keepdims=True) / n
        self.inv_std = (self.var + self.eps) ** -0.5
        self.xhat = centred * self.inv_std
        return self.xhat * weight + bias

    def gradient(self, out_grad: Tensor, node: Tensor):
        g = out_grad.realize_cached_data()
        weight = node.inputs[1].realize_cached_data()
        grads = self._grad_kernel(g, weight)
        if grads is None:
            grad_bias = g.sum(axis=0)
            grad_weight = (g * self.xhat).sum(axis=0)
            grads = (self._grad_x(g, weight, grad_weight, grad_bias), grad_weight, grad_bias)
        return _link_gradients(self.name, out_grad, node, grads)

    def _grad_kernel(self, g: NDArray, weight: NDArray) -> tuple | None:
        """``(grad_x, grad_weight, grad_bias)`` from the device's one-pass kernel, or None."""
        kernel = self.backward_kernel and _device_kernel(g, self.backward_kernel)
        if kernel is None:
            return None
        (n, d), dtype, device = g.shape, g.dtype, g.device
        grad_x = array_api.empty((n, d), dtype=dtype, device=device)
        grad_weight, grad_bias = (array_api.empty((d,), dtype=dtype, device=device) for _ in "ab")
        kernel(*_handles(g, self.xhat, weight, self.inv_std, grad_x, grad_weight, grad_bias),
               n, d)
        return grad_x, grad_weight, grad_bias

    def _grad_x(self, g: NDArray, weight: NDArray, grad_weight: NDArray, grad_bias: NDArray):
        # d/dx of (x - mean) * inv_std, applied to gx = g * weight, along the stats axis:
        # inv_std / n * (n * gx - sum(gx) - xhat * sum(gx * xhat)).
        gx = g * weight
        n = g.shape[self.axis]
        sum_gx = gx.sum(axis=self.axis, keepdims=True)
        sum_gx_xhat = (gx * self.xhat).sum(axis=self.axis, keepdims=True)
        return (gx * n - sum_gx - self.xhat * sum_gx_xhat) * (self.inv_std / n)


class FusedBatchNorm(_FusedNorm):
    """Training-mode batch norm of x (N, D) with per-feature weight and bias (D,).

    On a device whose backend module has the one-pass ``batchnorm_forward`` and
    ``batchnorm_backward`` kernels (the NDArray devices), forward and gradient are one
    kernel call each instead of about a dozen array operations.
    """

    name = "BatchNorm1d"
    axis = 0
    forward_kernel, backward_kernel = "batchnorm_forward", "batchnorm_backward"

    def _new_stats(self, n: int, d: int, empty) -> list:
        self.mean, self.var, self.inv_std = (empty((1, d)) for _ in "abc")
        return [self.mean, self.var, self.inv_std]

    def _grad_x(self, g: NDArray, weight: NDArray, grad_weight: NDArray, grad_bias: NDArray):
        # With statistics per feature, sum(gx) = weight * grad_bias and
        # sum(gx * xhat) = weight * grad_weight: the general formula's two extra
        # reductions are already done.
        n = g.shape[0]
        centred_grad = g * n - grad_bias - self.xhat * grad_weight
        return centred_grad * (weight * self.inv_std / n)


class FusedLayerNorm(_FusedNorm):
    """Layer norm of x (N, D): each row normalised, then per-feature weight and bias (D,).

    On an NDArray device the forward and the gradient are one kernel call each
    (``layernorm_forward``/``layernorm_backward``), one pass per row, with the same float
    operations in the same order as the composition, so the results are its bits.
    """

    name = "LayerNorm1d"
    axis = 1
    forward_kernel, backward_kernel = "layernorm_forward", "layernorm_backward"

    def _new_stats(self, n: int, d: int, empty) -> list:
        self.inv_std = empty((n, 1))
        return [self.inv_std]


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
    op = FusedBatchNorm(eps)
    out = op(x, weight, bias)
    shape = (x.shape[1],)
    return out, Tensor.make_const(op.mean.reshape(shape)), Tensor.make_const(op.var.reshape(shape))


def fused_layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Layer norm of x (N, D) as one op, weight and bias (D,); returns (N, D)."""
    _check_norm("fused_layer_norm", x, weight, bias)
    return FusedLayerNorm(eps)(x, weight, bias)


class FusedSoftmaxCrossEntropy(TensorOp):
    """Mean over the batch of ``logsumexp(logits_i) - logits_i[y_i]``; a 0-d result.

    ``labels`` are int64 (N,) in [0, K) (checked by the caller). On an NDArray device the
    forward is one kernel call (``softmax_cross_entropy``: per row, max, exp-sum, loss and
    the gradient), so no one-hot matrix is built. Elsewhere the labels become a one-hot
    (N, K) matrix, the target logit is a masked row sum (exact: each row has one non-zero
    term) and the arithmetic is the kernel's. Either way the forward keeps
    ``unit_grad = (softmax - one_hot) * (1 / N)``, the gradient for ``out_grad = 1`` (what
    training passes), which the backward then returns without another pass over (N, K);
    for another ``out_grad`` it is ``unit_grad * out_grad``.
    """

    def __init__(self, labels, device):
        self.labels = labels
        self.device = device

    def compute(self, logits: NDArray):
        kernel = _device_kernel(logits, "softmax_cross_entropy")
        if kernel is None:
            return self._compose(logits)
        (n, k), dtype, device = logits.shape, logits.dtype, logits.device
        self.unit_grad = array_api.empty((n, k), dtype=dtype, device=device)
        loss = array_api.empty((), dtype=dtype, device=device)
        kernel(*_handles(logits), self.labels, *_handles(self.unit_grad, loss), n, k)
        return loss

    def _compose(self, logits: NDArray):
        n, k = logits.shape
        one_hot = self.device.one_hot(k, self.labels, dtype=logits.dtype)
        peak = logits.max(axis=1, keepdims=True)
        shifted = logits - peak
        exps = array_api.exp(shifted)
        total = exps.sum(axis=1, keepdims=True)
        scalar = np.dtype(logits.dtype).type  # 1 / n rounded in the dtype, as out_grad / n is
        self.unit_grad = (exps / total - one_hot) * (scalar(1) / scalar(n))
        # A -inf logit would make 0 * -inf = nan in the masked sum: clip it to the
        # dtype's lowest finite value first (shifted is <= 0, so nothing else changes).
        lowest = -float(array_api.finfo(logits.dtype).max)
        picked = (array_api.maximum(shifted, lowest) * one_hot).sum(axis=1, keepdims=True)
        per_example = array_api.log(total) - picked
        return array_api.asarray(per_example.sum() / n, dtype=logits.dtype)

    def gradient(self, out_grad: Tensor, node: Tensor):
        g = out_grad.realize_cached_data()
        grad = self.unit_grad if float(g) == 1.0 else self.unit_grad * g
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
    return FusedSoftmaxCrossEntropy(labels, logits.device)(logits)


class FusedDropout(TensorOp):
    """Dropout with given uniform draws in one pass: ``out = x * mask``, where
    ``mask = [float32(draws) <= keep] / keep`` in float32 (as the course's float32 ``rand``
    rounds its draws), cast to x's dtype. One kernel on an NDArray device (``dropout``), NumPy
    otherwise; the same values.

    Unlike the other fused ops, the gradient is built from an op (``multiply_constant`` by the
    mask), so it can be differentiated again.
    """

    def __init__(self, draws: np.ndarray, keep: float):
        self.draws = draws
        self.keep = keep
        self.mask: NDArray | None = None

    def compute(self, x: NDArray):
        kernel = _device_kernel(x, "dropout")
        if kernel is None:
            keep = np.float32(self.keep)
            mask = (self.draws.astype(np.float32) <= keep).astype(np.float32) / keep
            self.mask = (array_api.array(mask, dtype=x.dtype, device=x.device)
                         if BACKEND == "nd" else mask.astype(x.dtype))
            return x * self.mask
        self.mask, out = (array_api.empty(x.shape, dtype=x.dtype, device=x.device) for _ in "mo")
        kernel(self.draws, x.compact()._handle, self.mask._handle, out._handle, self.keep)
        return out

    def gradient(self, out_grad: Tensor, node: Tensor):
        return MultiplyConstant(self.mask)(out_grad)


def fused_dropout(x: Tensor, draws: np.ndarray, keep: float) -> Tensor:
    """``x * ([draws <= keep] / keep)`` in one pass; ``draws`` are float64 uniform [0, 1)
    draws of x's shape (``np.random.rand(*x.shape)``), ``keep`` in (0, 1]."""
    _check_tensor("fused_dropout", x, "x")
    draws = np.asarray(draws, dtype=np.float64, order="C")  # (keeps a 0-d shape)
    if draws.shape != x.shape:
        raise ValueError(f"fused_dropout: draws of shape {draws.shape} for x of shape {x.shape}; "
                         f"expected one draw per element")
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
