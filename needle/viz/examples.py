"""Ready-made graphs for ``needle graph --model NAME``: a model, a random batch and its loss.

Each example builds its model and a seeded random batch (no dataset needed) and runs
the forward pass inside :func:`needle.viz.record`, so parameters are named and modules
can be collapsed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import needle as ndl
from needle import nn
from needle.autograd import Tensor

from .modules import record

__all__ = ["EXAMPLES", "example"]


def two_layer_mlp(batch_size: int, backward: bool) -> tuple[Tensor, nn.Module]:
    """``Linear(8, 16) → ReLU → Linear(16, 4)`` and the softmax loss, all unfused.

    Unfused layers build their gradients from ops, so the adjoint graph shows every
    step (fused layers would show one hand-derived gradient node per input).
    """
    model = nn.Sequential(nn.Linear(8, 16, fused=False), nn.ReLU(), nn.Linear(16, 4, fused=False))
    return _loss(model, 8, 4, batch_size, nn.SoftmaxLoss(fused=False), backward), model


def mlp_resnet(batch_size: int, backward: bool) -> tuple[Tensor, nn.Module]:
    """The course's ``MLPResNet(784, hidden_dim=100)`` (fused layers, as trained) and its loss."""
    from needle.apps.mlp_resnet import MLPResNet

    model = MLPResNet(784, hidden_dim=100)
    return _loss(model, 784, 10, batch_size, nn.SoftmaxLoss(), backward), model


def _loss(
    model: nn.Module,
    features: int,
    classes: int,
    batch_size: int,
    loss_fn: nn.Module,
    backward: bool,
) -> Tensor:
    """The loss of ``model`` on a seeded random batch, its forward (and backward) recorded."""
    rng = np.random.default_rng(0)
    X = ndl.Tensor(
        rng.standard_normal((batch_size, features)), dtype="float32", requires_grad=False
    )
    y = rng.integers(0, classes, size=batch_size)
    with record(model):
        loss = loss_fn(model(X), y)
        if backward:
            loss.backward()  # differentiable gradients (the default)
    return loss


#: name → function(batch_size, backward) returning (loss, model).
EXAMPLES: dict[str, Callable[[int, bool], tuple[Tensor, nn.Module]]] = {
    "mlp": two_layer_mlp,
    "mlp-resnet": mlp_resnet,
}


def example(
    name: str, batch_size: int = 4, seed: int = 0, backward: bool = False
) -> tuple[Tensor, nn.Module]:
    """The loss and model of example ``name`` (``mlp`` or ``mlp-resnet``), seeded.

    With ``backward``, ``loss.backward()`` has run (inside the record
    block, so gradient nodes know their modules).

    >>> loss, model = example("mlp")
    >>> loss.shape, [n for n, _ in model.named_parameters()][:2]
    ((), ['modules.0.weight', 'modules.0.bias'])
    """
    if name not in EXAMPLES:
        raise ValueError(
            f"viz.example: unknown model {name!r}; choose one of {', '.join(EXAMPLES)}"
        )
    np.random.seed(seed)  # needle's initialisers draw from NumPy's global generator
    return EXAMPLES[name](batch_size, backward)
