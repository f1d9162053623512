"""Activations and losses as functions, PyTorch's ``torch.nn.functional``:
``import needle.nn.functional as F``.

Each is a composition of needle ops (so gradients and second derivatives come with it);
the modules in :mod:`needle.nn.nn_activations` wrap them. ``nn.SoftmaxLoss`` stays the
course's fused loss; :func:`cross_entropy` is PyTorch's, with its options.
"""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..autograd import Tensor
from ..ops import log_softmax, softmax  # noqa: F401  (part of F)

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(owner: str, loss: Tensor, reduction: str) -> Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else ops.mean(loss)


# ----- activations -----------------------------------------------------------------------------


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)``."""
    return ops.relu(x)


def gelu(x: Tensor, approximate: str = "tanh") -> Tensor:
    """``x * Φ(x)`` with the tanh approximation of the normal CDF Φ,
    ``0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))``. Only ``approximate="tanh"`` exists:
    PyTorch's default, the exact erf form, needs an erf kernel needle does not have (the two
    differ by less than 1e-3)."""
    if approximate != "tanh":
        raise ValueError(f"gelu: only approximate='tanh' is available, got {approximate!r}")
    inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
    return x * (ops.tanh(inner) + 1) * 0.5


def silu(x: Tensor) -> Tensor:
    """``x * sigmoid(x)`` (also called swish)."""
    return x * ops.sigmoid(x)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    return ops.where(x > 0, x, x * negative_slope)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere."""
    # expm1 of min(x, 0): the unused branch never overflows (its inf would poison gradients)
    return ops.where(x > 0, x, ops.expm1(ops.minimum(x, 0.0)) * alpha)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta x)) / beta``, stable; linear where ``beta x > threshold``."""
    z = x * beta
    smooth = (ops.log1p(ops.exp(-ops.abs(z))) + ops.maximum(z, 0.0)) / beta
    return ops.where(z > threshold, x, smooth)


def sigmoid(x: Tensor) -> Tensor:
    """``1 / (1 + exp(-x))``."""
    return ops.sigmoid(x)


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return ops.tanh(x)


# ----- losses ----------------------------------------------------------------------------------


def _class_last(owner: str, logits: Tensor) -> Tensor:
    """(N, C) logits, from (C,), (N, C) or (N, C, d1, ...) (the class axis moved last)."""
    if len(logits.shape) == 1:
        return ops.unsqueeze(logits, 0)
    if len(logits.shape) == 2:
        return logits
    if len(logits.shape) == 0:
        raise ValueError(f"{owner}: needs logits of shape (C,), (N, C) or (N, C, ...), got ()")
    order = (0,) + tuple(range(2, len(logits.shape))) + (1,)
    moved = ops.permute(logits, order)
    return ops.reshape(moved, (-1, logits.shape[1]))


def _targets(owner: str, target, count: int, classes: int, ignore_index: int) -> np.ndarray:
    """Integer class targets as a flat int64 array of ``count`` entries, checked."""
    ids = np.asarray(target.numpy() if isinstance(target, Tensor) else target)
    if ids.dtype.kind not in "iu":
        raise TypeError(
            f"{owner}: class targets must be integers, got dtype {ids.dtype}; for class "
            f"probabilities pass a float tensor of the logits' shape"
        )
    ids = ids.reshape(-1).astype(np.int64)
    if ids.size != count:
        raise ValueError(f"{owner}: {ids.size} targets for {count} rows of logits")
    bad = ids[((ids < 0) | (ids >= classes)) & (ids != ignore_index)]
    if bad.size:
        raise ValueError(
            f"{owner}: target {int(bad[0])} is out of range for {classes} classes (valid: 0 to "
            f"{classes - 1}, or ignore_index={ignore_index})"
        )
    return ids


def nll_loss(
    log_probs: Tensor, target, ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    """``-log_probs[i, target[i]]`` per row: log-probabilities (N, C) (or (C,), or
    (N, C, d1, ...) with targets (N, d1, ...)) and integer targets. Rows whose target is
    ``ignore_index`` count 0 and are left out of the mean."""
    rows = _class_last("nll_loss", log_probs)
    return _pick_loss("nll_loss", rows, target, ignore_index, reduction, 0.0, log_probs.shape)


def cross_entropy(
    logits: Tensor,
    target,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy of ``logits`` (N, C) (or (C,), or (N, C, d1, ...)) against
    integer class ``target``s (or class probabilities: a float tensor of the logits' shape),
    as torch.nn.functional.cross_entropy.

    ``label_smoothing`` ε mixes the one-hot target with the uniform distribution:
    ``(1 - ε) nll + ε mean_c(-log p_c)``. ``reduction`` is "mean" (over the rows not
    ignored), "sum" or "none" (one loss per row, in the target's shape)."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if isinstance(target, Tensor) and target.dtype in ("float32", "float64"):
        if target.shape != logits.shape:
            raise ValueError(
                f"cross_entropy: probability targets need the logits' shape {logits.shape}, "
                f"got {target.shape}"
            )
        classes = logits.shape[1] if len(logits.shape) > 1 else logits.shape[0]
        soft = target * (1 - label_smoothing) + label_smoothing / classes
        rows = -(
            _class_last("cross_entropy", soft)
            * ops.log_softmax(_class_last("cross_entropy", logits), 1)
        ).sum(1)
        shape = (logits.shape[:1] + logits.shape[2:]) if len(logits.shape) > 1 else ()
        return _reduce("cross_entropy", ops.reshape(rows, shape), reduction)
    rows = ops.log_softmax(_class_last("cross_entropy", logits), 1)
    return _pick_loss(
        "cross_entropy", rows, target, ignore_index, reduction, label_smoothing, logits.shape
    )


def _pick_loss(
    owner: str,
    log_probs: Tensor,
    target,
    ignore_index: int,
    reduction: str,
    smoothing: float,
    shape: tuple,
) -> Tensor:
    """The (smoothed) negative log-likelihood of rows of ``log_probs`` (N, C) at ``target``."""
    _reduce(owner, log_probs, reduction)  # checks the name
    count, classes = log_probs.shape
    ids = _targets(owner, target, count, classes, ignore_index)
    kept = ids != ignore_index
    picked = ops.getitem(log_probs, (np.arange(count), np.where(kept, ids, 0)))
    loss = -picked
    if smoothing:
        loss = loss * (1 - smoothing) - ops.mean(log_probs, 1) * smoothing
    weight = Tensor(kept, dtype=log_probs.dtype, device=log_probs.device, requires_grad=False)
    loss = loss * weight
    out_shape = (shape[:1] + shape[2:]) if len(shape) > 1 else ()
    if reduction == "mean":  # over the rows not ignored; nan when all are
        kept_count = int(kept.sum())
        return loss.sum() / kept_count if kept_count else loss.sum() * math.nan
    return _reduce(owner, ops.reshape(loss, out_shape), reduction)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """``(input - target)²`` elementwise, reduced."""
    _same_shape("mse_loss", input, target)
    diff = input - target
    return _reduce("mse_loss", diff * diff, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """``|input - target|`` elementwise, reduced."""
    _same_shape("l1_loss", input, target)
    return _reduce("l1_loss", ops.abs(input - target), reduction)


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,  # noqa: A002
    reduction: str = "mean",
) -> Tensor:
    """``-(t log p + (1 - t) log(1 - p))`` for probabilities ``input`` in [0, 1]; each log is
    clamped to >= -100, as in PyTorch, so p = 0 or 1 gives a finite loss."""
    _same_shape("binary_cross_entropy", input, target)
    log_p = ops.clip(ops.log(input), min=-100.0)
    log_q = ops.clip(ops.log(1 - input), min=-100.0)
    return _reduce("binary_cross_entropy", -(target * log_p + (1 - target) * log_q), reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,  # noqa: A002
    reduction: str = "mean",
) -> Tensor:
    """:func:`binary_cross_entropy` of ``sigmoid(input)``, computed stably from the logits:
    ``max(x, 0) - x t + log(1 + exp(-|x|))``."""
    _same_shape("binary_cross_entropy_with_logits", input, target)
    loss = ops.maximum(input, 0.0) - input * target + ops.log1p(ops.exp(-ops.abs(input)))
    return _reduce("binary_cross_entropy_with_logits", loss, reduction)


def _same_shape(owner: str, input: Tensor, target: Tensor) -> None:  # noqa: A002
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{owner}: input and target must be needle Tensors")
    if input.shape != target.shape:
        raise ValueError(
            f"{owner}: input shape {input.shape} and target shape {target.shape} differ"
        )


__all__ = [
    "relu",
    "gelu",
    "silu",
    "leaky_relu",
    "elu",
    "softplus",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "l1_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
]
