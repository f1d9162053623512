"""Tools to check your own ops and models: a numerical gradient checker.

>>> import needle as ndl
>>> x = ndl.Tensor([[0.5, -1.0, 2.0]], dtype="float64")
>>> gradcheck(lambda t: (t * t).sum(), x)
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .autograd import Tensor


class GradcheckError(AssertionError):
    """The analytic gradient (``backward()``) disagrees with finite differences."""


def _as_float64_leaf(value, device=None) -> Tensor:
    array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
    return Tensor(
        np.array(array, dtype=np.float64), device=device, dtype="float64", requires_grad=True
    )


def _scalarise(output: Tensor, weights: np.ndarray) -> float:
    return float(np.sum(output.numpy().astype(np.float64) * weights))


def gradcheck(
    fn: Callable[..., Tensor],
    *inputs,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
    device=None,
) -> bool:
    """Compare ``backward()`` of ``fn(*inputs)`` with central differences, in float64.

    Each input (Tensor or array) is copied to a float64 leaf on ``device`` (None: the
    default device). A non-scalar output is
    reduced to ``sum(output * w)`` with fixed random weights ``w`` (from a private
    generator, so NumPy's global seed is untouched), which checks every output element.

    Returns True, or raises :class:`GradcheckError` naming the input, the worst element,
    the analytic and numeric values and the shapes.
    """
    leaves = [_as_float64_leaf(x, device) for x in inputs]
    output = fn(*leaves)
    if not isinstance(output, Tensor):
        raise TypeError(f"gradcheck: fn must return a needle.Tensor, got {type(output).__name__}")
    weights = np.random.default_rng(seed).standard_normal(output.shape)
    for leaf in leaves:  # fn may have called backward() itself: start from clean grads
        leaf.grad = None
    output.backward(Tensor(weights, device=output.device, dtype=output.dtype, requires_grad=False))
    for index, leaf in enumerate(leaves):
        analytic = np.zeros(leaf.shape) if leaf.grad is None else leaf.grad.numpy()
        numeric = _numeric_gradient(fn, leaves, index, weights, eps)
        _compare(index, leaf.shape, analytic, numeric, atol, rtol)
    return True


def _numeric_gradient(
    fn, leaves: list[Tensor], index: int, weights: np.ndarray, eps: float
) -> np.ndarray:
    base = leaves[index].numpy()
    numeric = np.zeros(base.shape)
    for element in np.ndindex(base.shape):
        values = []
        for step in (eps, -eps):
            shifted = base.copy()
            shifted[element] += step
            args = [
                Tensor(shifted, device=x.device, dtype=x.dtype, requires_grad=False)
                if i == index
                else x.detach()
                for i, x in enumerate(leaves)
            ]
            values.append(_scalarise(fn(*args), weights))
        numeric[element] = (values[0] - values[1]) / (2 * eps)
    return numeric


def _compare(
    index: int, shape: tuple, analytic: np.ndarray, numeric: np.ndarray, atol: float, rtol: float
) -> None:
    if analytic.shape != numeric.shape:
        raise GradcheckError(
            f"gradcheck: input {index} has shape {shape} but its gradient has shape "
            f"{analytic.shape}"
        )
    error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if error.size and (np.nanmax(error) > 0 or np.isnan(error).any()):
        worst = np.unravel_index(np.argmax(np.nan_to_num(error, nan=np.inf)), error.shape)
        raise GradcheckError(
            f"gradcheck: input {index} (shape {shape}) element {tuple(int(i) for i in worst)}: "
            f"analytic {analytic[worst]!r} vs numeric {numeric[worst]!r} "
            f"(atol={atol}, rtol={rtol})"
        )
