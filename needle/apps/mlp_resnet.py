"""The course's MLP ResNet: model, one-epoch loop and the MNIST training recipe.

``ResidualBlock`` and ``MLPResNet`` build the network exactly as the course does — the
modules are created in the same order, so a seeded construction draws the same random
numbers as the course's reference. :func:`epoch` and :func:`train_mnist` reproduce the
course's functions (including ``np.random.seed(4)`` at the start of every ``epoch``).

The per-batch work lives in one place, :func:`run_epoch`; :func:`epoch` adds the
course's seeding and ``needle train`` (:mod:`needle.training`) adds progress bars and
metrics through its ``on_batch`` callback.

Example:
    >>> import numpy as np
    >>> np.random.seed(0)
    >>> model = MLPResNet(784, hidden_dim=100, num_blocks=3)
    >>> sum(p.size for p in model.parameters())
    110860
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

import needle as ndl
from needle import nn
from needle.autograd import Tensor

__all__ = ["ResidualBlock", "MLPResNet", "BatchResult", "run_epoch", "epoch", "train_mnist"]

#: A norm layer factory: called with the feature count, returns a Module.
NormFactory = Callable[[int], nn.Module]


def ResidualBlock(dim: int, hidden_dim: int, norm: NormFactory = nn.BatchNorm1d,
                  drop_prob: float = 0.1) -> nn.Sequential:
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


def MLPResNet(dim: int, hidden_dim: int = 100, num_blocks: int = 3, num_classes: int = 10,
              norm: NormFactory = nn.BatchNorm1d, drop_prob: float = 0.1) -> nn.Sequential:
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


@dataclass(frozen=True)
class BatchResult:
    """What one batch contributed to an epoch.

    Attributes:
        size: number of samples in the batch.
        loss: the batch's mean softmax loss.
        errors: number of samples whose arg-max logit is not the label.
        carry: what the pass carries from this batch into the next (a recurrent
            model's hidden state); None when batches are independent.
    """

    size: int
    loss: float
    errors: int
    carry: Any = None


def run_epoch(dataloader: Iterable, model: nn.Module, opt: "ndl.optim.Optimizer | None" = None,
              on_batch: Callable[[BatchResult], None] | None = None,
              input_shape: tuple[int, ...] | None = None) -> tuple[float, float]:
    """One pass over ``dataloader``: train with ``opt``, or evaluate without it.

    Sets ``model.train()`` when ``opt`` is given, else ``model.eval()`` (and builds no
    graph). Each batch ``(X, y)`` — ``X`` of shape ``(batch, ...)``, reshaped to
    ``(batch, *input_shape)`` (default: flattened to ``(batch, features)``), ``y``
    integer labels ``(batch,)`` — gives logits
    ``model(X)`` and the mean :class:`nn.SoftmaxLoss`; with ``opt`` it then runs
    ``opt.reset_grad(); loss.backward(); opt.step()`` (a
    :class:`nn.DistributedDataParallel` model averages the gradients during
    ``backward()``). Draws no random numbers itself
    (the loader's shuffle and the model's dropout do).

    Args:
        dataloader: yields ``(X, y)`` tuples of Tensors.
        model: maps ``(batch, *input_shape)`` to logits ``(batch, classes)``.
        opt: the optimizer; None evaluates.
        on_batch: called after every batch with its :class:`BatchResult`.
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
    if opt is not None:
        model.train()
    else:
        model.eval()
    loss_fn = nn.SoftmaxLoss()
    samples, errors, loss_sum = 0, 0, 0.0
    for X, y in dataloader:
        if opt is None:
            with ndl.no_grad():
                result = _batch(model, loss_fn, X, y, None, input_shape)
        else:
            result = _batch(model, loss_fn, X, y, opt, input_shape)
        samples += result.size
        errors += result.errors
        loss_sum += result.loss * result.size
        if on_batch is not None:
            on_batch(result)
    if samples == 0:
        raise ValueError("run_epoch: the dataloader yielded no batch; is the dataset empty?")
    return errors / samples, loss_sum / samples


def _batch(model: nn.Module, loss_fn: nn.Module, X: Tensor, y: Tensor,
           opt: "ndl.optim.Optimizer | None",
           input_shape: tuple[int, ...] | None) -> BatchResult:
    """Forward one batch (and step ``opt`` if given); return its :class:`BatchResult`."""
    batch_size = X.shape[0]
    if input_shape is None:
        input_shape = (math.prod(X.shape[1:]),)
    if X.shape[1:] != tuple(input_shape):
        X = X.reshape((batch_size, *input_shape))
    logits = model(X)
    loss = loss_fn(logits, y)
    if opt is not None:
        opt.reset_grad()
        loss.backward(create_graph=False)
        opt.step()
    errors = int((logits.numpy().argmax(axis=1) != y.numpy()).sum())
    return BatchResult(size=batch_size, loss=float(loss.numpy()), errors=errors)


def epoch(dataloader: Iterable, model: nn.Module,
          opt: "ndl.optim.Optimizer | None" = None) -> tuple[float, float]:
    """The course's ``epoch``: ``np.random.seed(4)``, then :func:`run_epoch`.

    Reseeding makes every call draw the same shuffle and dropout masks (the course's
    reference does so for reproducible grading; ``needle train`` does not).

    Returns:
        ``(error_rate, mean_loss)`` over all samples of the loader.
    """
    np.random.seed(4)
    return run_epoch(dataloader, model, opt)


def train_mnist(batch_size: int = 100, epochs: int = 10, optimizer: type = ndl.optim.Adam,
                lr: float = 0.001, weight_decay: float = 0.001, hidden_dim: int = 100,
                data_dir: str = "data") -> tuple[float, float, float, float]:
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


def _idx_dataset(data_dir: str, split: str) -> "ndl.data.MNISTDataset":
    """The MNISTDataset of ``data_dir/{split}-images-idx3-ubyte.gz`` and its labels."""
    return ndl.data.MNISTDataset(
        os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"),
        os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"),
    )
