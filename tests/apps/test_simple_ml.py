"""needle.apps.simple_ml: parse_mnist, softmax_loss, nn_epoch, loss_err."""

import gzip
import os

import numpy as np
import pytest
from helpers import tensor

import needle as ndl
from needle.apps.simple_ml import loss_err, nn_epoch, parse_mnist, softmax_loss
from needle.data import IDXFormatError, write_idx

FASHION = "/usr/share/datasets/fashion-mnist"
needs_fashion = pytest.mark.skipif(
    not os.path.isdir(FASHION), reason="dataset-fashion-mnist not installed"
)


def _numpy_softmax_loss(Z, y):
    Z = Z.astype(np.float64)
    lse = np.log(np.exp(Z - Z.max(1, keepdims=True)).sum(1)) + Z.max(1)
    return np.mean(lse - Z[np.arange(len(y)), y])


def test_softmax_loss_matches_numpy_and_gradcheck():
    rng = np.random.default_rng(0)
    Z, y = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    onehot = np.eye(4)[y]
    got = softmax_loss(tensor(Z), tensor(onehot)).numpy()
    np.testing.assert_allclose(got, _numpy_softmax_loss(Z, y), rtol=1e-12)
    assert ndl.testing.gradcheck(lambda z: softmax_loss(z, tensor(onehot)), Z)


def test_softmax_loss_is_stable_for_huge_logits():
    Z = np.array([[1e5, 0.0, -1e5]], dtype=np.float32)
    loss = softmax_loss(tensor(Z), tensor(np.array([[0, 1, 0]], np.float32))).numpy()
    assert np.isfinite(loss) and np.isclose(loss, 1e5, rtol=1e-6)


def test_softmax_loss_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r"softmax_loss: Z.shape=\(2, 3\)"):
        softmax_loss(tensor(np.zeros((2, 3))), tensor(np.zeros((2, 4))))


def test_nn_epoch_one_batch_matches_hand_computed_sgd():
    rng = np.random.default_rng(1)
    X = rng.random((50, 6), dtype=np.float32)
    y = rng.integers(0, 3, 50)
    W1 = rng.standard_normal((6, 5)).astype(np.float32)
    W2 = rng.standard_normal((5, 3)).astype(np.float32)
    # NumPy reference: one SGD step on the whole batch.
    H = np.maximum(X @ W1, 0)
    Z = H @ W2
    S = np.exp(Z - Z.max(1, keepdims=True))
    S /= S.sum(1, keepdims=True)
    G = (S - np.eye(3)[y]) / 50
    gW2 = H.T @ G
    gW1 = X.T @ ((G @ W2.T) * (H > 0))
    new1, new2 = nn_epoch(X, y, tensor(W1), tensor(W2), lr=0.5, batch=50)
    np.testing.assert_allclose(new1.numpy(), W1 - 0.5 * gW1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new2.numpy(), W2 - 0.5 * gW2, rtol=1e-5, atol=1e-6)
    assert new1.dtype == np.float32 and new2.dtype == np.float32


def test_loss_err_counts_errors():
    h = tensor(np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]]))
    loss, err = loss_err(h, np.array([0, 0, 0]))
    assert err == pytest.approx(1 / 3)
    assert loss == pytest.approx(_numpy_softmax_loss(h.numpy(), np.array([0, 0, 0])))


def test_parse_mnist_reports_truncated_file_by_name(tmp_path):
    images = tmp_path / "imgs.gz"
    labels = tmp_path / "labels.gz"
    write_idx(images, np.zeros((3, 28, 28), np.uint8))
    write_idx(labels, np.zeros(3, np.uint8))
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(IDXFormatError, match="imgs.gz"):
        parse_mnist(str(images), str(labels))


@needs_fashion
def test_nn_epoch_learns_fashion_mnist():
    X, y = parse_mnist(
        f"{FASHION}/train-images-idx3-ubyte.gz", f"{FASHION}/train-labels-idx1-ubyte.gz"
    )
    Xt, yt = parse_mnist(
        f"{FASHION}/t10k-images-idx3-ubyte.gz", f"{FASHION}/t10k-labels-idx1-ubyte.gz"
    )
    assert X.shape == (60000, 784) and X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    np.random.seed(0)
    W1 = tensor(np.random.randn(784, 100).astype(np.float32) / np.sqrt(100))
    W2 = tensor(np.random.randn(100, 10).astype(np.float32) / np.sqrt(10))
    loss_before, _ = loss_err(ndl.relu(tensor(Xt) @ W1) @ W2, yt)
    W1, W2 = nn_epoch(X, y, W1, W2, lr=0.2, batch=100)
    loss_after, err_after = loss_err(ndl.relu(tensor(Xt) @ W1) @ W2, yt)
    assert loss_after < loss_before
    assert err_after < 0.30
