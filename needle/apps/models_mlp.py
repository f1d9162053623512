"""The course's MLP ResNet (hw2): ``ResidualBlock`` and ``MLPResNet``.

The network is built exactly as the course does — the modules are created in the same
order, so a seeded construction draws the same random numbers as the course's reference.
:mod:`needle.apps.mlp_resnet` (the course's file) re-exports both next to its ``epoch``
and ``train_mnist``.

Example:
    >>> import numpy as np
    >>> np.random.seed(0)
    >>> model = MLPResNet(784, hidden_dim=100, num_blocks=3)
    >>> sum(p.size for p in model.parameters())
    110860
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np  # noqa: F401  (the examples below use np and ndl)

import needle as ndl  # noqa: F401
from needle import nn

__all__ = ["ResidualBlock", "MLPResNet"]

#: A norm layer factory: called with the feature count, returns a Module.
NormFactory = Callable[[int], nn.Module]


def ResidualBlock(
    dim: int, hidden_dim: int, norm: NormFactory = nn.BatchNorm1d, drop_prob: float = 0.1
) -> nn.Sequential:
    """A residual MLP block: ``relu(x + norm(W2 · dropout(relu(norm(W1 · x)))))``.

    Shapes: ``(batch, dim) -> (batch, dim)``. ``W1`` maps ``dim -> hidden_dim`` and
    ``W2`` maps back. Modules are created in the course's order (Linear, norm, ReLU,
    Dropout, Linear, norm), which fixes the order of the random draws.

    Args:
        dim: input and output features.
        hidden_dim: features inside the block.
        norm: the normalisation layer class (``nn.BatchNorm1d`` or ``nn.LayerNorm1d``).
        drop_prob: dropout probability, applied in training mode only.

    Example:
        >>> block = ResidualBlock(8, 4)
        >>> block(ndl.Tensor(np.ones((2, 8), dtype="float32"))).shape
        (2, 8)
    """
    inner = nn.Sequential(
        nn.Linear(dim, hidden_dim),
        norm(hidden_dim),
        nn.ReLU(),
        nn.Dropout(drop_prob),
        nn.Linear(hidden_dim, dim),
        norm(dim),
    )
    return nn.Sequential(nn.Residual(inner), nn.ReLU())


def MLPResNet(
    dim: int,
    hidden_dim: int = 100,
    num_blocks: int = 3,
    num_classes: int = 10,
    norm: NormFactory = nn.BatchNorm1d,
    drop_prob: float = 0.1,
) -> nn.Sequential:
    """The course's MLP ResNet: a stem, ``num_blocks`` residual blocks, a linear head.

    ``Linear(dim, hidden_dim) -> ReLU -> ResidualBlock(hidden_dim, hidden_dim // 2) ×
    num_blocks -> Linear(hidden_dim, num_classes)``. Shapes: ``(batch, dim) ->
    (batch, num_classes)`` (logits).

    Args:
        dim: input features (784 for 28×28 images).
        hidden_dim: width of the residual stream; each block's inner width is half.
        num_blocks: number of residual blocks.
        num_classes: number of output logits.
        norm: the normalisation layer class used inside the blocks.
        drop_prob: dropout probability inside the blocks.

    Example:
        >>> model = MLPResNet(20, hidden_dim=8, num_blocks=2, num_classes=3)
        >>> model(ndl.Tensor(np.ones((5, 20), dtype="float32"))).shape
        (5, 3)
    """
    # Argument order is construction order is the order of the random draws.
    return nn.Sequential(
        nn.Linear(dim, hidden_dim),
        nn.ReLU(),
        *[ResidualBlock(hidden_dim, hidden_dim // 2, norm, drop_prob) for _ in range(num_blocks)],
        nn.Linear(hidden_dim, num_classes),
    )
