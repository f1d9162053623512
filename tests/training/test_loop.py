"""needle.loop.run_batches: the one batch loop, checked against steps written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
from needle import nn, optim
from needle.data import DataLoader, NDArrayDataset
from needle.loop import BatchResult, Forward, Tally, run_batches
from needle.tasks.image import FLAT, Classification

ROWS = 24


def _problem(rows: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((rows, 5)).astype(np.float32), rng.integers(0, 3, rows)


def _model(seed: int = 1) -> nn.Module:
    """No BatchNorm, no dropout: a batch's gradient is the mean of its samples'."""
    np.random.seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


def _loader(X: np.ndarray, y: np.ndarray, batch: int) -> DataLoader:
    return DataLoader(NDArrayDataset(X, y), batch)


def _weights(model: nn.Module) -> list[np.ndarray]:
    return [p.numpy() for p in model.parameters()]


def _hand_steps(
    model: nn.Module, opt: optim.Optimizer, X: np.ndarray, y: np.ndarray, groups: list[list[slice]]
) -> None:
    """Each group of row slices: the mean of its micro-batches' mean-loss gradients, one step."""
    loss_fn = nn.SoftmaxLoss()
    for group in groups:
        grads = []
        for rows in group:
            opt.reset_grad()
            loss_fn(model(ndl.Tensor(X[rows])), ndl.Tensor(y[rows])).backward()
            grads.append([p.grad.numpy() for p in model.parameters()])
        for p, *parts in zip(model.parameters(), *grads):
            p.grad = ndl.Tensor(sum(parts) / len(parts), dtype=p.dtype, requires_grad=False)
        opt.step()


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.1),
    ],
)
def test_two_micro_batches_per_step_equal_batches_twice_as_large(make):
    X, y = _problem()
    big, micro = _model(), _model()
    run_batches(_loader(X, y, 8), big, Classification(), make(big.parameters()))
    run_batches(_loader(X, y, 4), micro, Classification(), make(micro.parameters()), accumulate=2)
    for a, b in zip(_weights(big), _weights(micro)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_last_step_of_a_pass_takes_the_micro_batches_left():
    X, y = _problem(10)  # batches of 2: five micro-batches, steps of 2, 2 and 1
    ours, ref = _model(), _model()
    results: list[BatchResult] = []
    run_batches(
        _loader(X, y, 2),
        ours,
        Classification(),
        optim.SGD(ours.parameters(), lr=0.5),
        accumulate=2,
        on_batch=results.append,
    )
    rows = [slice(k, k + 2) for k in range(0, 10, 2)]
    _hand_steps(ref, optim.SGD(ref.parameters(), lr=0.5), X, y, [rows[0:2], rows[2:4], rows[4:5]])
    for a, b in zip(_weights(ours), _weights(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [r.stepped for r in results] == [False, True, False, True, True]


def test_a_per_step_schedule_steps_after_every_optimizer_step():
    X, y = _problem()
    model = _model()
    opt = optim.SGD(model.parameters(), lr=1.0)
    schedule = optim.StepLR(opt, step_size=1, gamma=0.5)
    used = []
    run_batches(
        _loader(X, y, 4),
        model,
        Classification(),
        opt,
        accumulate=3,
        schedule=schedule,
        on_batch=lambda r: used.append(opt.lr),
    )
    # 6 micro-batches, 2 steps: the rate halves after each step, not after each batch
    assert used == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25] and schedule.last_epoch == 2


def test_gradients_are_clipped_before_the_step():
    X, y = _problem(8)
    ours, ref = _model(), _model()
    run_batches(
        [(ndl.Tensor(X), ndl.Tensor(y))],
        ours,
        Classification(),
        optim.SGD(ours.parameters(), lr=1.0),
        clip_grad=0.01,
    )
    ref_opt = optim.SGD(ref.parameters(), lr=1.0)
    nn.SoftmaxLoss()(ref(ndl.Tensor(X)), ndl.Tensor(y)).backward()
    norm = np.sqrt(
        sum(float((p.grad.numpy().astype(np.float64) ** 2).sum()) for p in ref.parameters())
    )
    assert norm > 0.01
    for p in ref.parameters():
        p.grad = ndl.Tensor(p.grad.numpy() * (0.01 / (norm + 1e-6)), requires_grad=False)
    ref_opt.step()
    for a, b in zip(_weights(ours), _weights(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_evaluation_changes_nothing_and_builds_no_graph():
    X, y = _problem()
    model = _model()
    before = _weights(model)
    tally = run_batches(_loader(X, y, 5), model, Classification())
    assert not model.training and all(p.grad is None for p in model.parameters())
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    logits = model(ndl.Tensor(X)).numpy()
    assert tally.samples == ROWS and tally.batches == 5
    assert tally.errors == int((logits.argmax(axis=1) != y).sum())
    assert tally.error_rate == tally.errors / ROWS
    assert tally.accuracy == (ROWS - tally.errors) / ROWS  # exact, unlike 1 - error_rate


def test_the_carry_runs_from_batch_to_batch_and_a_tally_continues():
    class Counting:
        """An objective whose carry counts the batches seen before."""

        def __call__(self, model, batch, carry):
            loss = ndl.Tensor(np.float32(batch))
            return Forward(loss, 1, 0, (carry or 0) + 1)

    seen = []
    tally = Tally(samples=5, errors=1, loss_sum=2.0, batches=5)
    run_batches(
        [1.0, 2.0, 3.0],
        nn.Identity(),
        Counting(),
        carry=10,
        on_batch=lambda r: seen.append(r.carry),
        tally=tally,
    )
    assert seen == [11, 12, 13]
    assert (tally.samples, tally.errors, tally.loss_sum, tally.batches) == (8, 1, 8.0, 8)


def test_a_finite_only_tally_leaves_non_finite_losses_out():
    tally = Tally(finite_only=True)
    for loss in (1.0, float("nan"), 3.0, float("inf")):
        tally.add(BatchResult(2, loss, 1))
    assert (tally.batches, tally.samples, tally.errors, tally.mean_loss) == (4, 4, 2, 2.0)


@pytest.mark.parametrize(
    "shape, expected", [(FLAT, (4, 18)), (None, (4, 2, 3, 3)), ((2, 9), (4, 2, 9))]
)
def test_classification_takes_batches_in_the_model_layout(shape, expected):
    seen = []

    class Shape(nn.Module):
        def forward(self, x):
            seen.append(x.shape)
            return ndl.Tensor(np.zeros((x.shape[0], 2), np.float32))

    X = np.zeros((4, 2, 3, 3), np.float32)
    run_batches(_loader(X, np.arange(4) % 2, 4), Shape(), Classification(shape))
    assert seen == [expected]


def test_bad_arguments_are_named():
    X, y = _problem()
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="run_batches: accumulate must be a positive int, got 0"):
        run_batches(_loader(X, y, 4), model, Classification(), opt, accumulate=0)
    batches = iter(_loader(X, y, 4))
    with pytest.raises(ValueError, match="accumulate=2 needs num_batches"):
        run_batches(batches, model, Classification(), opt, accumulate=2)
    with pytest.raises(ValueError, match="no batch"):
        run_batches([], model, Classification())
