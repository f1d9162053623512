"""needle.apps.mlp_resnet: the course's MLP ResNet, its epoch loop and train_mnist."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.apps.mlp_resnet import (
    MLPResNet,
    ResidualBlock,
    epoch,
    run_epoch,
    train_mnist,
)
from needle.data import DataLoader, NDArrayDataset
from needle.loop import BatchResult


def _kaiming_uniform_draw(fan_in: int, fan_out: int) -> np.ndarray:
    """What init.kaiming_uniform(fan_in, fan_out) draws from NumPy's global generator."""
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)
    return (np.random.rand(fan_in, fan_out) * (2 * bound) - bound).astype(np.float32)


# ----- structure --------------------------------------------------------------------------


def test_residual_block_structure():
    block = ResidualBlock(8, 4, norm=nn.LayerNorm1d, drop_prob=0.3)
    assert isinstance(block, nn.Sequential) and len(block.modules) == 2
    residual, relu = block.modules
    assert isinstance(residual, nn.Residual) and isinstance(relu, nn.ReLU)
    kinds = [type(m) for m in residual.fn.modules]
    assert kinds == [nn.Linear, nn.LayerNorm1d, nn.ReLU, nn.Dropout, nn.Linear, nn.LayerNorm1d]
    first, norm1, _, dropout, second, norm2 = residual.fn.modules
    assert first.weight.shape == (8, 4) and second.weight.shape == (4, 8)
    assert norm1.weight.shape == (4,) and norm2.weight.shape == (8,)
    assert dropout.p == 0.3


def test_mlp_resnet_structure():
    model = MLPResNet(20, hidden_dim=16, num_blocks=2, num_classes=5)
    kinds = [type(m) for m in model.modules]
    assert kinds == [nn.Linear, nn.ReLU, nn.Sequential, nn.Sequential, nn.Linear]
    assert model.modules[0].weight.shape == (20, 16)
    assert model.modules[2].modules[0].fn.modules[0].weight.shape == (16, 8)  # hidden_dim // 2
    assert model.modules[-1].weight.shape == (16, 5)
    assert isinstance(model.modules[2].modules[0].fn.modules[1], nn.BatchNorm1d)  # default norm
    out = model(ndl.Tensor(np.ones((3, 20), dtype=np.float32)))
    assert out.shape == (3, 5)


def test_mlp_resnet_parameter_count():
    model = MLPResNet(784)  # hidden 100, 3 blocks of inner width 50, 10 classes
    stem = 784 * 100 + 100
    block = (100 * 50 + 50) + 2 * 50 + (50 * 100 + 100) + 2 * 100  # Linear, BN, Linear, BN
    head = 100 * 10 + 10
    expected = stem + 3 * block + head
    assert expected == 110_860
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == expected
    assert len(model.parameters()) == 2 + 3 * 8 + 2


def test_mlp_resnet_without_blocks():
    model = MLPResNet(6, hidden_dim=4, num_blocks=0, num_classes=2)
    assert [type(m) for m in model.modules] == [nn.Linear, nn.ReLU, nn.Linear]


def test_seeded_construction_draws_in_course_order():
    np.random.seed(0)
    model = MLPResNet(784, hidden_dim=100)
    np.random.seed(0)
    stem_weight = _kaiming_uniform_draw(784, 100)
    stem_bias = _kaiming_uniform_draw(100, 1).reshape(1, 100)
    block_weight = _kaiming_uniform_draw(100, 50)  # first block's first Linear comes next
    stem = model.modules[0]
    np.testing.assert_allclose(stem.weight.numpy(), stem_weight, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stem.bias.numpy(), stem_bias, rtol=1e-6, atol=1e-7)
    inner = model.modules[2].modules[0].fn.modules[0]
    np.testing.assert_allclose(inner.weight.numpy(), block_weight, rtol=1e-6, atol=1e-7)


# ----- epoch ------------------------------------------------------------------------------


def _tiny_problem(n: int = 10, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 2, 3) float32 (flattened to 6 features by epoch) and labels (n,)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, 2, 3)).astype(np.float32)
    y = rng.integers(0, classes, size=n).astype(np.uint8)
    return X, y


def _tiny_model() -> nn.Module:
    np.random.seed(3)
    return MLPResNet(6, hidden_dim=8, num_blocks=1, num_classes=3)


def test_epoch_eval_matches_manual_computation():
    X, y = _tiny_problem()
    model = _tiny_model()
    model.train()  # epoch must switch to eval mode itself
    err, loss = epoch(DataLoader(NDArrayDataset(X, y), batch_size=4), model)
    assert model.training is False
    logits = model(ndl.Tensor(X.reshape(10, 6))).numpy().astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    per_sample = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(10), y]
    assert isinstance(err, float) and isinstance(loss, float)
    assert err == pytest.approx(np.mean(logits.argmax(axis=1) != y))
    assert loss == pytest.approx(per_sample.mean(), rel=1e-5)


def test_epoch_seeds_numpy_with_4():
    X, y = _tiny_problem()
    np.random.seed(123)
    epoch(DataLoader(NDArrayDataset(X, y), batch_size=4), _tiny_model())  # draws nothing
    after = np.random.get_state()[1]
    np.random.seed(4)
    np.testing.assert_array_equal(after, np.random.get_state()[1])


def test_epoch_with_optimizer_trains():
    X, y = _tiny_problem(n=40)
    model = _tiny_model()
    before = [p.numpy().copy() for p in model.parameters()]
    opt = ndl.optim.Adam(model.parameters(), lr=0.01)
    loader = DataLoader(NDArrayDataset(X, y), batch_size=8, shuffle=True)
    err, loss = epoch(loader, model, opt)
    assert model.training is True
    assert 0.0 <= err <= 1.0 and loss > 0.0
    changed = [not np.array_equal(b, p.numpy()) for b, p in zip(before, model.parameters())]
    assert all(changed)
    losses = [epoch(loader, model, opt)[1] for _ in range(15)]
    assert losses[-1] < loss  # it learns the tiny problem


def test_epoch_is_reproducible():
    X, y = _tiny_problem(n=40)
    results = []
    for _ in range(2):
        model = _tiny_model()
        opt = ndl.optim.SGD(model.parameters(), lr=0.1)
        loader = DataLoader(NDArrayDataset(X, y), batch_size=8, shuffle=True)
        results.append(epoch(loader, model, opt))
    assert results[0] == results[1]


def test_run_epoch_reports_every_batch():
    X, y = _tiny_problem()
    seen: list[BatchResult] = []
    err, loss = run_epoch(
        DataLoader(NDArrayDataset(X, y), batch_size=4), _tiny_model(), on_batch=seen.append
    )
    assert [r.size for r in seen] == [4, 4, 2]
    assert sum(r.errors for r in seen) / 10 == err
    assert sum(r.loss * r.size for r in seen) / 10 == pytest.approx(loss)


def test_run_epoch_in_eval_builds_no_graph():
    X, y = _tiny_problem()
    model = _tiny_model()
    run_epoch(DataLoader(NDArrayDataset(X, y), batch_size=4), model)
    assert all(p.grad is None for p in model.parameters())


def test_run_epoch_rejects_an_empty_loader():
    with pytest.raises(ValueError, match="no batch"):
        run_epoch([], _tiny_model())


# ----- train_mnist ------------------------------------------------------------------------


def _write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format (big-endian header), gzip-compressed."""
    magic = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(magic + dims + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist_dir(tmp_path):
    """A data_dir with 200 training and 100 test 28×28 images whose class is learnable."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("t10k", 100)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        images[np.arange(n), labels, :] = 255  # class k lights up row k
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    return tmp_path


def test_train_mnist_on_a_tiny_data_dir(tiny_mnist_dir):
    result = train_mnist(
        batch_size=50, epochs=5, lr=0.01, hidden_dim=20, data_dir=str(tiny_mnist_dir)
    )
    assert len(result) == 4 and all(isinstance(v, float) for v in result)
    train_err, train_loss, test_err, test_loss = result
    assert 0.0 <= train_err <= 1.0 and 0.0 <= test_err <= 1.0
    assert train_loss > 0.0 and test_loss > 0.0
    assert test_err < 0.25  # the lit rows make the classes easy
    again = train_mnist(
        batch_size=50, epochs=5, lr=0.01, hidden_dim=20, data_dir=str(tiny_mnist_dir)
    )
    assert again == result


def test_train_mnist_with_sgd(tiny_mnist_dir):
    result = train_mnist(
        batch_size=100,
        epochs=1,
        optimizer=ndl.optim.SGD,
        lr=0.1,
        hidden_dim=10,
        data_dir=str(tiny_mnist_dir),
    )
    assert all(math.isfinite(v) for v in result)
