"""The course's first models, written with needle: MNIST parsing and a two-layer net.

``nn_epoch`` trains ``relu(X @ W1) @ W2`` with plain SGD, differentiating with needle's
autograd, and ``loss_err`` reports the softmax loss and error rate of logits.
"""

from __future__ import annotations

import numpy as np

import needle as ndl
from needle.data.idx import load_mnist_arrays


def parse_mnist(image_filename: str, label_filename: str) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST-format IDX files (gzip or raw).

    Returns ``X`` float32 (N, 784) scaled to [0, 1] and ``y`` uint8 (N,). Bad magic
    numbers, truncated files and image/label count mismatches raise an error naming
    the file.
    """
    return load_mnist_arrays(image_filename, label_filename)


def softmax_loss(Z: ndl.Tensor, y_one_hot: ndl.Tensor) -> ndl.Tensor:
    """Mean softmax cross-entropy of logits ``Z`` (N, k) against one-hot labels (N, k).

    Returns a 0-d Tensor. Uses the stable log-sum-exp.
    """
    if Z.shape != y_one_hot.shape:
        raise ValueError(
            f"softmax_loss: Z.shape={Z.shape} and y_one_hot.shape={y_one_hot.shape} differ"
        )
    per_example = ndl.logsumexp(Z, axes=(1,)) - ndl.summation(Z * y_one_hot, axes=(1,))
    return ndl.summation(per_example) / Z.shape[0]


def _one_hot(y: np.ndarray, num_classes: int, dtype) -> np.ndarray:
    one_hot = np.zeros((y.shape[0], num_classes), dtype=dtype)
    one_hot[np.arange(y.shape[0]), y] = 1
    return one_hot


def nn_epoch(
    X: np.ndarray, y: np.ndarray, W1: ndl.Tensor, W2: ndl.Tensor, lr: float = 0.1, batch: int = 100
) -> tuple[ndl.Tensor, ndl.Tensor]:
    """One epoch of minibatch SGD, in order, on the net ``relu(X @ W1) @ W2``.

    X (N, d) float32, y (N,) integer labels, W1 (d, h), W2 (h, k) Tensors. Returns the
    updated ``(W1, W2)`` (new Tensors).
    """
    num_classes = W2.shape[1]
    for start in range(0, X.shape[0], batch):
        X_batch = ndl.Tensor(X[start : start + batch], requires_grad=False)
        y_batch = y[start : start + batch]
        logits = ndl.relu(X_batch @ W1) @ W2
        targets = ndl.Tensor(
            _one_hot(y_batch, num_classes, logits.dtype), dtype=logits.dtype, requires_grad=False
        )
        softmax_loss(logits, targets).backward(create_graph=False)
        W1 = ndl.Tensor(W1.numpy() - lr * W1.grad.numpy(), dtype=W1.dtype)
        W2 = ndl.Tensor(W2.numpy() - lr * W2.grad.numpy(), dtype=W2.dtype)
    return W1, W2


def loss_err(h: ndl.Tensor, y: np.ndarray) -> tuple[float, float]:
    """The softmax loss and the error rate of logits ``h`` (N, k) against labels ``y`` (N,)."""
    targets = ndl.Tensor(_one_hot(y, h.shape[-1], h.dtype), dtype=h.dtype, requires_grad=False)
    loss = softmax_loss(h, targets).numpy()
    return loss, float(np.mean(h.numpy().argmax(axis=1) != y))


from .simple_ml_cifar import *  # noqa: E402,F401,F403  (hw4: the CIFAR-10 loops)
from .simple_ml_ptb import *  # noqa: E402,F401,F403  (hw4: the PTB loops)
