"""The course's MLP ResNet file (hw2): the model, its ``epoch`` and ``train_mnist``.

``ResidualBlock`` and ``MLPResNet`` are defined in :mod:`needle.apps.models_mlp` (and
re-exported here, where the course has them). :func:`epoch` and :func:`train_mnist`
reproduce the course's functions (including ``np.random.seed(4)`` at the start of every
``epoch``).

The per-batch work is needle's one batch loop, :func:`needle.loop.run_batches`, with the
image task's objective, :class:`~needle.tasks.image.Classification`: :func:`run_epoch`
is that pass for flattened (or reshaped) images, :func:`epoch` adds the course's seeding,
and ``needle train`` (:mod:`needle.training`) runs the same loop with its progress bars
and checkpoints.

Example:
    >>> import numpy as np
    >>> np.random.seed(0)
    >>> model = MLPResNet(784, hidden_dim=100, num_blocks=3)
    >>> sum(p.size for p in model.parameters())
    110860
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np

import needle as ndl
from needle import nn
from needle.apps.models_mlp import MLPResNet, ResidualBlock
from needle.loop import BatchResult, run_batches
from needle.tasks.image import FLAT, Classification

__all__ = ["ResidualBlock", "MLPResNet", "run_epoch", "epoch", "train_mnist"]


def run_epoch(
    dataloader: Iterable,
    model: nn.Module,
    opt: ndl.optim.Optimizer | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> tuple[float, float]:
    """One pass over ``dataloader``: train with ``opt``, or evaluate without it.

    :func:`~needle.loop.run_batches` with :class:`~needle.tasks.image.Classification`:
    ``model.train()`` when ``opt`` is given, else ``model.eval()`` (and no graph). Each
    batch ``(X, y)`` — ``X`` of shape ``(batch, ...)``, reshaped to
    ``(batch, *input_shape)`` (default: flattened to ``(batch, features)``), ``y``
    integer labels ``(batch,)`` — gives logits ``model(X)`` and the mean
    :class:`nn.SoftmaxLoss`; with ``opt`` it then runs ``opt.reset_grad();
    loss.backward(); opt.step()``. Draws no random numbers itself (the loader's shuffle
    and the model's dropout do).

    Args:
        dataloader: yields ``(X, y)`` tuples of Tensors.
        model: maps ``(batch, *input_shape)`` to logits ``(batch, classes)``.
        opt: the optimizer; None evaluates.
        on_batch: called after every batch with its :class:`~needle.loop.BatchResult`.
        input_shape: the shape of one sample as the model takes it, e.g. ``(1, 28, 28)``
            for a convolutional network; None flattens each sample.

    Returns:
        ``(error_rate, mean_loss)`` over all samples, each batch weighted by its size.

    Raises:
        ValueError: the loader yielded no batch.

    Example:
        >>> from needle.data import DataLoader, NDArrayDataset
        >>> X = np.random.rand(6, 4).astype("float32"); y = np.array([0, 1, 2, 0, 1, 2])
        >>> loader = DataLoader(NDArrayDataset(X, y), batch_size=4)
        >>> err, loss = run_epoch(loader, nn.Linear(4, 3))
        >>> 0.0 <= err <= 1.0 and loss > 0.0
        True
    """
    objective = Classification(FLAT if input_shape is None else input_shape)
    tally = run_batches(dataloader, model, objective, opt, on_batch=on_batch)
    return tally.error_rate, tally.mean_loss


def epoch(
    dataloader: Iterable, model: nn.Module, opt: ndl.optim.Optimizer | None = None
) -> tuple[float, float]:
    """The course's ``epoch``: ``np.random.seed(4)``, then :func:`run_epoch`.

    Reseeding makes every call draw the same shuffle and dropout masks (the course's
    reference does so for reproducible grading; ``needle train`` does not).

    Returns:
        ``(error_rate, mean_loss)`` over all samples of the loader.
    """
    np.random.seed(4)
    return run_epoch(dataloader, model, opt)


def train_mnist(
    batch_size: int = 100,
    epochs: int = 10,
    optimizer: type = ndl.optim.Adam,
    lr: float = 0.001,
    weight_decay: float = 0.001,
    hidden_dim: int = 100,
    data_dir: str = "data",
) -> tuple[float, float, float, float]:
    """The course's ``train_mnist``: train ``MLPResNet(784, hidden_dim)`` on MNIST IDX files.

    Reads ``train-images-idx3-ubyte.gz``/``train-labels-idx1-ubyte.gz`` and the
    ``t10k-*`` pair from ``data_dir``; seeds ``np.random.seed(4)``; trains ``epochs``
    epochs with a shuffled loader (each through :func:`epoch`, which reseeds), then
    evaluates once on the unshuffled test loader.

    Returns:
        ``(train_err, train_loss, test_err, test_loss)``: the last training epoch's
        metrics and the final test metrics.
    """
    np.random.seed(4)
    train_set = _idx_dataset(data_dir, "train")
    test_set = _idx_dataset(data_dir, "t10k")
    train_loader = ndl.data.DataLoader(train_set, batch_size, shuffle=True)
    test_loader = ndl.data.DataLoader(test_set, batch_size, shuffle=False)
    model = MLPResNet(784, hidden_dim)
    opt = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    train_err, train_loss = float("nan"), float("nan")
    for _ in range(epochs):
        train_err, train_loss = epoch(train_loader, model, opt)
    test_err, test_loss = epoch(test_loader, model)
    return train_err, train_loss, test_err, test_loss


def _idx_dataset(data_dir: str, split: str) -> ndl.data.MNISTDataset:
    """The MNISTDataset of ``data_dir/{split}-images-idx3-ubyte.gz`` and its labels."""
    return ndl.data.MNISTDataset(
        os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"),
        os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"),
    )
