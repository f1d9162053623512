"""hw4's CIFAR loops in needle.apps.simple_ml, against a hand-written loop of the same steps."""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.apps.simple_ml import epoch_general_cifar10, evaluate_cifar10, train_cifar10
from needle.data import DataLoader, NDArrayDataset


def small_model(seed: int = 0) -> nn.Module:
    np.random.seed(seed)
    return nn.Sequential(
        nn.Conv(3, 4, 3, stride=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
    )


@pytest.fixture
def loader(rng):
    X = rng.random((20, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 20)
    return DataLoader(NDArrayDataset(X, y), batch_size=8, shuffle=True)  # 8, 8, then 4


def _reference_epoch(loader, model, opt):
    """The spec's steps written out: seed 4, mode, per batch forward/loss/step; weighted mean."""
    np.random.seed(4)
    model.train() if opt else model.eval()
    correct = total = n_all = 0.0
    for X, y in loader:
        out = model(X)
        loss = nn.SoftmaxLoss()(out, y)
        if opt:
            opt.reset_grad()
            loss.backward()
            opt.step()
        correct += np.sum(out.numpy().argmax(1) == y.numpy())
        total += float(loss.numpy()) * y.shape[0]
        n_all += y.shape[0]
    return correct / n_all, total / n_all


@pytest.mark.parametrize("train", [False, True])
def test_epoch_matches_reference_loop(loader, train):
    ours, ref = small_model(), small_model()
    opt_ours = ndl.optim.Adam(ours.parameters(), lr=0.01) if train else None
    opt_ref = ndl.optim.Adam(ref.parameters(), lr=0.01) if train else None
    got = epoch_general_cifar10(loader, ours, opt=opt_ours)
    expected = _reference_epoch(loader, ref, opt_ref)
    assert isinstance(got[0], float) and isinstance(got[1], float)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert ours.training == train
    for p, q in zip(ours.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-6)


def test_epoch_seeds_4_so_the_shuffle_is_the_courses(loader):
    np.random.seed(123)
    epoch_general_cifar10(loader, small_model())
    np.random.seed(4)
    np.testing.assert_array_equal(np.concatenate(loader.ordering), np.random.permutation(20))


def test_train_and_evaluate(loader):
    model = small_model()
    first = train_cifar10(small_model(), loader, n_epochs=1, lr=0.01)
    acc, loss = train_cifar10(
        model, loader, n_epochs=3, optimizer=ndl.optim.Adam, lr=0.01, loss_fn=nn.SoftmaxLoss
    )
    assert loss < first[1]  # three epochs of Adam on 20 samples lower the training loss
    eval_acc, eval_loss = evaluate_cifar10(model, loader, loss_fn=nn.SoftmaxLoss)
    assert not model.training and 0.0 <= eval_acc <= 1.0 and eval_loss > 0


def test_star_import_provides_the_cifar_functions():
    namespace = {}
    exec("from needle.apps.simple_ml import *", namespace)
    assert {"epoch_general_cifar10", "train_cifar10", "evaluate_cifar10"} <= set(namespace)
