"""The course's hw4 CIFAR-10 training loops: ``epoch_general_cifar10``, ``train_cifar10``,
``evaluate_cifar10`` (re-exported by :mod:`needle.apps.simple_ml`).

Each starts with ``np.random.seed(4)``, as the course's do, so a shuffled loader draws
the course's order. Results are ``(accuracy, mean_loss)`` as Python floats, the loss
weighted by batch size (the exact mean over samples, also with a short last batch).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

import needle as ndl
from needle import nn
from needle.loop import run_batches
from needle.optim import Optimizer
from needle.tasks.image import Classification

__all__ = ["epoch_general_cifar10", "train_cifar10", "evaluate_cifar10"]


def epoch_general_cifar10(
    dataloader: Iterable,
    model: nn.Module,
    loss_fn: nn.Module = nn.SoftmaxLoss(),
    opt: Optimizer | None = None,
) -> tuple[float, float]:
    """One pass over ``dataloader``: training if ``opt`` is given, else evaluation.

    :func:`~needle.loop.run_batches` with :class:`~needle.tasks.image.Classification`:
    ``model.train()`` or ``model.eval()`` is called first. Each batch ``(X, y)`` moves to
    the model's device, then ``out = model(X)``, ``loss = loss_fn(out, y)`` and, when
    training, ``opt.reset_grad()``, ``loss.backward()``, ``opt.step()``.

    Returns:
        ``(Σ correct / N, Σ loss_b · n_b / N)``, with the loss taken before the step.
    """
    np.random.seed(4)
    device = next(iter(model.parameters())).device
    objective = Classification(loss_fn=loss_fn, device=device)
    tally = run_batches(dataloader, model, objective, opt)
    return tally.accuracy, tally.mean_loss


def train_cifar10(
    model: nn.Module,
    dataloader: Iterable,
    n_epochs: int = 1,
    optimizer: type = ndl.optim.Adam,
    lr: float = 0.001,
    weight_decay: float = 0.001,
    loss_fn: type = nn.SoftmaxLoss,
) -> tuple[float, float]:
    """Train ``model`` for ``n_epochs``; return the last epoch's ``(accuracy, mean_loss)``.

    ``optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)`` is built once, as
    is ``loss_fn()`` (a class, not an instance).
    """
    np.random.seed(4)
    opt = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss = loss_fn()
    result = (0.0, 0.0)
    for _ in range(n_epochs):
        result = epoch_general_cifar10(dataloader, model, loss_fn=loss, opt=opt)
    return result


def evaluate_cifar10(
    model: nn.Module, dataloader: Iterable, loss_fn: type = nn.SoftmaxLoss
) -> tuple[float, float]:
    """One evaluation pass (``model.eval()``, no updates): ``(accuracy, mean_loss)``."""
    np.random.seed(4)
    return epoch_general_cifar10(dataloader, model, loss_fn=loss_fn(), opt=None)
