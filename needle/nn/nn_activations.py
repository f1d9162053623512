"""Activation and loss modules, PyTorch's names, each a thin wrapper of the function of
:mod:`needle.nn.functional` (the options are stored, ``forward`` calls the function)."""

from __future__ import annotations

from collections.abc import Callable

from ..autograd import Tensor
from . import functional as F
from .module import Module


class Softmax(Module):
    """``softmax(x, dim)``."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.dim)


class LogSoftmax(Module):
    """``log_softmax(x, dim)``."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(x, self.dim)


class GELU(Module):
    """:func:`needle.nn.functional.gelu` (the tanh form)."""

    def __init__(self, approximate: str = "tanh") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)


class SiLU(Module):
    """``x * sigmoid(x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)


class LeakyReLU(Module):
    """``x`` where positive, ``negative_slope * x`` elsewhere."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)


class ELU(Module):
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)


class Softplus(Module):
    """``log(1 + exp(beta x)) / beta``, linear above ``threshold``."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)


class CrossEntropyLoss(Module):
    """:func:`needle.nn.functional.cross_entropy` with stored options."""

    def __init__(
        self, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.ignore_index, self.reduction = ignore_index, reduction
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target) -> Tensor:
        return F.cross_entropy(
            logits, target, self.ignore_index, self.reduction, self.label_smoothing
        )


class NLLLoss(Module):
    """:func:`needle.nn.functional.nll_loss` with stored options."""

    def __init__(self, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, log_probs: Tensor, target) -> Tensor:
        return F.nll_loss(log_probs, target, self.ignore_index, self.reduction)


class _ElementwiseLoss(Module):
    """A loss of ``(input, target)`` of one shape with a ``reduction``."""

    function: Callable[[Tensor, Tensor, str], Tensor]  # each subclass's F.<loss>

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return type(self).function(input, target, self.reduction)


class MSELoss(_ElementwiseLoss):
    """Mean (or summed) squared error."""

    function = staticmethod(F.mse_loss)


class L1Loss(_ElementwiseLoss):
    """Mean (or summed) absolute error."""

    function = staticmethod(F.l1_loss)


class BCELoss(_ElementwiseLoss):
    """Binary cross-entropy of probabilities."""

    function = staticmethod(F.binary_cross_entropy)


class BCEWithLogitsLoss(_ElementwiseLoss):
    """Binary cross-entropy of logits, computed stably."""

    function = staticmethod(F.binary_cross_entropy_with_logits)


__all__ = [
    "Softmax",
    "LogSoftmax",
    "GELU",
    "SiLU",
    "LeakyReLU",
    "ELU",
    "Softplus",
    "CrossEntropyLoss",
    "NLLLoss",
    "MSELoss",
    "L1Loss",
    "BCELoss",
    "BCEWithLogitsLoss",
]
