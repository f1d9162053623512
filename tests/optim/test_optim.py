"""needle.optim: update formulas vs NumPy (and PyTorch), state, schedulers, convergence."""

import gc
import math

import numpy as np
import pytest
from helpers import tensor

import needle as ndl
from needle import nn, optim

GRAD_STEPS = 5


def _params(seed=0, device=None):
    rng = np.random.default_rng(seed)
    return [
        nn.Parameter(tensor(rng.standard_normal(shape).astype(np.float32), device=device))
        for shape in [(3, 4), (4,), (2, 1)]
    ]


def _grads(step, params):
    """Deterministic float32 gradients for step ``step``."""
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(p.shape).astype(np.float32) for p in params]


def _run(opt, params, steps=GRAD_STEPS):
    for step in range(steps):
        for p, g in zip(params, _grads(step, params)):
            p.grad = tensor(g, device=p.device, requires_grad=False)
        opt.step()


# ----- update formulas vs NumPy ---------------------------------------------------------------


def test_sgd_momentum_weight_decay_matches_numpy(device):
    params = _params(device=device)
    expected = [p.numpy().copy() for p in params]
    lr, momentum, wd = 0.1, 0.9, 0.01
    _run(optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd), params)
    u = [np.zeros_like(e) for e in expected]
    for step in range(GRAD_STEPS):
        for i, g in enumerate(_grads(step, expected)):
            g = g + wd * expected[i]
            u[i] = momentum * u[i] + (1 - momentum) * g
            expected[i] = expected[i] - lr * u[i]
    for p, e in zip(params, expected):
        assert p.dtype == np.float32 and p.device == device
        np.testing.assert_array_equal(p.numpy(), e)


def test_plain_sgd_is_gradient_descent():
    params = _params()
    start = [p.numpy().copy() for p in params]
    _run(optim.SGD(params, lr=0.5), params, steps=1)
    for p, s, g in zip(params, start, _grads(0, params)):
        np.testing.assert_array_equal(p.numpy(), s - 0.5 * g)


def test_adam_weight_decay_matches_numpy(device):
    params = _params(device=device)
    expected = [p.numpy().copy() for p in params]
    lr, b1, b2, eps, wd = 0.01, 0.8, 0.99, 1e-8, 0.1
    opt = optim.Adam(params, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)
    _run(opt, params)
    m = [np.zeros_like(e) for e in expected]
    v = [np.zeros_like(e) for e in expected]
    for t in range(1, GRAD_STEPS + 1):
        for i, g in enumerate(_grads(t - 1, expected)):
            g = g + wd * expected[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g**2
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            expected[i] = expected[i] - lr * m_hat / (v_hat**0.5 + eps)
    assert opt.t == GRAD_STEPS
    for p, e in zip(params, expected):
        assert p.dtype == np.float32 and p.device == device
        np.testing.assert_array_equal(p.numpy(), e)


def test_parameters_without_grad_are_skipped():
    params = _params()
    before = params[1].numpy().copy()
    opt = optim.Adam(params)
    params[0].grad = tensor(np.ones((3, 4), np.float32), requires_grad=False)
    opt.step()
    np.testing.assert_array_equal(params[1].numpy(), before)
    # Only the parameter with a gradient has moved state; the others' state is still zero.
    assert np.any(np.asarray(opt.state[0]["m"]) != 0)
    assert all(not np.any(np.asarray(slot)) for i in (1, 2) for slot in opt.state[i].values())


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
        lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.1),
    ],
)
def test_update_keeps_float32_and_leaves_grad_untouched(make):
    params = _params()
    opt = make(params)
    grads = _grads(0, params)
    for p, g in zip(params, grads):
        p.grad = tensor(g.copy(), requires_grad=False)
    held = [p.grad for p in params]
    old_arrays = [p.realize_cached_data() for p in params]
    old_values = [a.copy() for a in old_arrays]
    opt.step()
    for p, h, g, old, value in zip(params, held, grads, old_arrays, old_values):
        assert p.grad is h and np.array_equal(p.grad.numpy(), g)
        assert p.dtype == np.float32 and p.realize_cached_data() is not old
        np.testing.assert_array_equal(old, value)  # the old array was replaced, not mutated


def test_float64_gradient_does_not_promote_parameter():
    params = _params()
    params[0].grad = tensor(np.ones((3, 4)), requires_grad=False)  # float64
    optim.SGD(params[:1], lr=0.1).step()
    assert params[0].dtype == np.float32


def test_reset_grad_and_zero_grad():
    params = _params()
    opt = optim.SGD(params)
    for p in params:
        p.grad = tensor(np.ones(p.shape, np.float32))
    opt.reset_grad()
    assert all(p.grad is None for p in params)
    params[0].grad = tensor(np.ones((3, 4), np.float32))
    opt.zero_grad()
    assert params[0].grad is None


# ----- PyTorch as a second oracle -------------------------------------------------------------


def _torch_run(torch_opt_factory, params, torch, initial_state=None):
    tensors = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in params]
    opt = torch_opt_factory(tensors)
    if initial_state:
        for t in tensors:
            opt.state[t].update(initial_state(t))
    for step in range(GRAD_STEPS):
        for t, g in zip(tensors, _grads(step, params)):
            t.grad = torch.tensor(g)
        opt.step()
    return [t.detach().numpy() for t in tensors]


def test_sgd_agrees_with_torch(torch):
    params = _params()
    # needle's u starts at 0; torch copies the first gradient unless the buffer exists.
    expected = _torch_run(
        lambda ts: torch.optim.SGD(ts, lr=0.1, momentum=0.9, dampening=0.9, weight_decay=0.01),
        params,
        torch,
        initial_state=lambda t: {"momentum_buffer": torch.zeros_like(t)},
    )
    _run(optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01), params)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.numpy(), e, rtol=0, atol=1e-6)


def test_adam_agrees_with_torch(torch):
    params = _params()
    expected = _torch_run(
        lambda ts: torch.optim.Adam(ts, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
        params,
        torch,
    )
    _run(optim.Adam(params, lr=0.01, weight_decay=0.05), params)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.numpy(), e, rtol=0, atol=1e-6)


# ----- graphs do not grow ---------------------------------------------------------------------


def _blobs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = rng.standard_normal((n, 2)) + np.where(y[:, None] == 1, 2.0, -2.0)
    return x.astype(np.float32), y.astype(np.uint8)


def _mlp(hidden=16, dropout=0.1):
    return nn.Sequential(
        nn.Linear(2, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, 2),
    )


def _train_step(model, opt, x, y, loss_fn=nn.SoftmaxLoss(), create_graph=True):
    opt.reset_grad()
    loss = loss_fn(model(tensor(x, requires_grad=False)), y)
    loss.backward(create_graph=create_graph)
    opt.step()
    return float(loss.numpy())


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3),
    ],
)
def test_tensor_count_stays_flat(make):
    np.random.seed(0)
    model = _mlp()
    opt = make(model.parameters())
    x, y = _blobs(64)

    def count_after(steps, create_graph):
        for _ in range(steps):
            _train_step(model, opt, x, y, create_graph=create_graph)
        if create_graph:
            gc.collect()
        return ndl.autograd.TENSOR_COUNTER

    # backward()'s default records the gradients' graph, which refers back to the forward
    # graph (cycles through .grad): freed by the garbage collector, so the count stays flat.
    warm = count_after(10, create_graph=True)
    assert count_after(100, create_graph=True) <= warm
    # The fast path, with the cyclic garbage collector off: graphs must be freed by
    # reference counting alone (no reference cycles between gradients and the forward graph).
    gc.disable()
    try:
        warm = count_after(10, create_graph=False)
        assert count_after(200, create_graph=False) <= warm
    finally:
        gc.enable()
    assert all(p.dtype == np.float32 for p in model.parameters())


# ----- clip_grad_norm -------------------------------------------------------------------------


def test_clip_grad_norm_scales_to_max_norm():
    params = _params()
    grads = _grads(0, params)
    for p, g in zip(params, grads):
        p.grad = tensor(g, requires_grad=False)
    held = [p.grad for p in params]
    norm = optim.SGD(params).clip_grad_norm(max_norm=0.25)
    expected = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    assert norm == pytest.approx(expected)
    clipped = math.sqrt(sum(float(np.sum(p.grad.numpy().astype(np.float64) ** 2)) for p in params))
    assert clipped == pytest.approx(0.25, rel=1e-5) and clipped <= 0.25
    for p, g, h in zip(params, grads, held):
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad.numpy(), g * (0.25 / (expected + 1e-6)), rtol=1e-6)
        np.testing.assert_array_equal(h.numpy(), g)  # the old gradient tensor is untouched


def test_clip_grad_norm_leaves_small_gradients():
    params = _params()
    params[0].grad = tensor(np.full((3, 4), 0.01, np.float32), requires_grad=False)
    held = params[0].grad
    norm = optim.SGD(params).clip_grad_norm(max_norm=1.0)
    assert norm == pytest.approx(math.sqrt(12) * 0.01, rel=1e-6) and params[0].grad is held


# ----- schedulers -----------------------------------------------------------------------------


def test_step_lr_closed_form():
    opt = optim.SGD(_params(), lr=0.5)
    sched = optim.StepLR(opt, step_size=3, gamma=0.2)
    for epoch in range(10):
        assert opt.lr == pytest.approx(0.5 * 0.2 ** (epoch // 3))
        assert sched.get_last_lr() == opt.lr
        sched.step()


def test_cosine_annealing_closed_form():
    opt = optim.Adam(_params(), lr=0.1)
    sched = optim.CosineAnnealingLR(opt, T_max=8, eta_min=0.01)
    for epoch in range(9):
        expected = 0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * epoch / 8)) / 2
        assert opt.lr == pytest.approx(expected)
        sched.step()
    assert opt.lr == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * 9 / 8)) / 2)


def test_scheduler_state_dict_round_trip():
    opt = optim.SGD(_params(), lr=0.5)
    sched = optim.StepLR(opt, step_size=2)
    for _ in range(3):
        sched.step()
    fresh = optim.StepLR(optim.SGD(_params(), lr=0.5), step_size=5)
    fresh.load_state_dict(sched.state_dict())
    assert fresh.last_epoch == 3 and fresh.step_size == 2 and fresh.get_last_lr() == opt.lr
    with pytest.raises(ValueError, match="unexpected keys"):
        fresh.load_state_dict({"T_max": 3})


# ----- optimizer state: save, load, resume bit for bit ----------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3),
    ],
)
def test_resume_from_checkpoint_is_bit_identical(make, tmp_path):
    x, y = _blobs(50)
    np.random.seed(1)
    straight = _mlp()
    opt = make(straight.parameters())
    for _ in range(4):
        _train_step(straight, opt, x, y)

    np.random.seed(1)
    first = _mlp()
    opt = make(first.parameters())
    for _ in range(2):
        _train_step(first, opt, x, y)
    path = tmp_path / "ckpt.npz"
    ndl.save(
        {"model": first.state_dict(), "optimizer": opt.state_dict(), "rng": np.random.get_state()},
        path,
    )

    np.random.seed(99)
    resumed = _mlp()  # different initial weights, overwritten by the checkpoint
    opt = make(resumed.parameters())
    checkpoint = ndl.load(path)
    resumed.load_state_dict(checkpoint["model"])
    opt.load_state_dict(checkpoint["optimizer"])
    np.random.set_state(checkpoint["rng"])
    for _ in range(2):
        _train_step(resumed, opt, x, y)

    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert np.array_equal(a, b), name


def test_optimizer_state_dict_format():
    params = _params()
    opt = optim.Adam(params, lr=0.02)
    _run(opt, params, steps=2)
    state = opt.state_dict()
    assert state["optimizer"] == "Adam" and state["t"] == 2 and state["num_params"] == 3
    assert state["hyperparameters"] == {
        "lr": 0.02,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
    }
    assert set(state["state"]) == {"0", "1", "2"} and set(state["state"]["1"]) == {"m", "v"}
    state["state"]["0"]["m"][:] = 0  # a copy
    assert not np.all(np.asarray(opt.state[0]["m"]) == 0)


def test_optimizer_load_state_dict_errors():
    opt = optim.SGD(_params(), momentum=0.5)
    _run(opt, opt.params, steps=1)
    state = opt.state_dict()
    with pytest.raises(ValueError, match="saved by 'SGD', not 'Adam'"):
        optim.Adam(_params()).load_state_dict(state)
    with pytest.raises(ValueError, match="for 3 parameters, but this optimizer has 1"):
        optim.SGD(_params()[:1]).load_state_dict(state)
    state["state"]["1"]["u"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"state\['1'\]\['u'\] has shape \(5,\)"):
        optim.SGD(_params()).load_state_dict(state)


# ----- convergence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4),
        lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-4),
    ],
)
def test_mlp_with_batchnorm_and_dropout_learns_blobs(make):
    np.random.seed(0)
    x, y = _blobs(400)
    model = _mlp(dropout=0.2)
    opt = make(model.parameters())
    model.train()
    for _epoch in range(15):
        order = np.random.permutation(len(x))
        for start in range(0, len(x), 50):
            batch = order[start : start + 50]
            _train_step(model, opt, x[batch], y[batch])
    logits = model.eval()(tensor(x, requires_grad=False)).numpy()
    accuracy = np.mean(logits.argmax(axis=1) == y)
    assert accuracy > 0.95


# ----- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, error, words",
    [
        (lambda: optim.SGD([]), ValueError, "SGD: got an empty parameter list"),
        (
            lambda: optim.Adam([nn.Parameter(tensor([1.0])), np.zeros(2)]),
            TypeError,
            r"Adam: params\[1\] must be a Parameter.*got ndarray",
        ),
        (lambda: optim.SGD(_params()[0]), TypeError, "single Tensor"),
        (lambda: optim.SGD(_params() * 2), ValueError, r"params\[3\] appears more than once"),
        (lambda: optim.SGD(_params(), lr=-0.1), ValueError, "SGD: lr must be in .* got -0.1"),
        (lambda: optim.SGD(_params(), momentum=1.0), ValueError, "SGD: momentum must be in"),
        (lambda: optim.SGD(_params(), weight_decay=-1), ValueError, "weight_decay must be in"),
        (lambda: optim.Adam(_params(), beta1=1.0), ValueError, "Adam: beta1 must be in"),
        (lambda: optim.Adam(_params(), beta2=-0.5), ValueError, "Adam: beta2"),
        (lambda: optim.Adam(_params(), eps=0), ValueError, "Adam: eps must be in"),
        (lambda: optim.StepLR(optim.SGD(_params()), step_size=0), ValueError, "StepLR: step_size"),
        (lambda: optim.CosineAnnealingLR(optim.SGD(_params()), T_max=-1), ValueError, "T_max"),
        (lambda: optim.StepLR("opt", step_size=2), TypeError, "expected a needle.optim.Optimizer"),
    ],
)
def test_validation_errors(build, error, words):
    with pytest.raises(error, match=words):
        build()


def test_lr_setter_validates():
    opt = optim.SGD(_params())
    opt.lr = 0.3
    assert opt.lr == 0.3
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0
    with pytest.raises(ValueError, match="max_norm"):
        opt.clip_grad_norm(0)
