"""AdamW, RMSprop, Adagrad, parameter groups and the per-step schedules, against PyTorch."""

import math

import numpy as np
import pytest
from helpers import tensor

import needle as ndl
from needle import nn, optim

STEPS = 6
SHAPES = [(3, 4), (4,), (2, 1)]


def _values(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]


def _grads(step):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]


def _needle_run(make, device=None, steps=STEPS):
    """The parameters after ``steps`` updates by ``make(params)``, as NumPy arrays."""
    params = [nn.Parameter(tensor(v, device=device)) for v in _values()]
    opt = make(params)
    for step in range(steps):
        for p, g in zip(params, _grads(step)):
            p.grad = tensor(g, device=device, requires_grad=False)
        opt.step()
    return [p.numpy() for p in params]


def _torch_run(torch, make, steps=STEPS):
    params = [torch.tensor(v, requires_grad=True) for v in _values()]
    opt = make(params)
    for step in range(steps):
        for p, g in zip(params, _grads(step)):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in params]


def _assert_close(ours, theirs):
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


# ----- the new optimizers vs PyTorch ---------------------------------------------------------

OPTIMIZERS = {
    "adamw": (
        lambda ps: optim.AdamW(ps, lr=0.01, beta1=0.8, beta2=0.99, weight_decay=0.1),
        lambda t, ps: t.optim.AdamW(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
    ),
    "adamw-defaults": (lambda ps: optim.AdamW(ps), lambda t, ps: t.optim.AdamW(ps)),
    "rmsprop": (
        lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, weight_decay=0.01),
        lambda t, ps: t.optim.RMSprop(ps, lr=0.01, alpha=0.9, weight_decay=0.01),
    ),
    "rmsprop-momentum-centered": (
        lambda ps: optim.RMSprop(ps, lr=0.005, momentum=0.9, centered=True),
        lambda t, ps: t.optim.RMSprop(ps, lr=0.005, momentum=0.9, centered=True),
    ),
    "adagrad": (
        lambda ps: optim.Adagrad(
            ps, lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.5
        ),
        lambda t, ps: t.optim.Adagrad(
            ps, lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.5
        ),
    ),
    # Without momentum: PyTorch's buffer starts at the first gradient, the course's at zero.
    "sgd-groups": (
        lambda ps: optim.SGD(
            [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01, "weight_decay": 0.0}],
            lr=0.1,
            weight_decay=0.01,
        ),
        lambda t, ps: t.optim.SGD(
            [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01, "weight_decay": 0.0}],
            lr=0.1,
            weight_decay=0.01,
        ),
    ),
    "adam-groups": (
        lambda ps: optim.Adam(
            [{"params": ps[:2], "weight_decay": 0.1}, {"params": ps[2:]}], lr=0.01
        ),
        lambda t, ps: t.optim.Adam(
            [{"params": ps[:2], "weight_decay": 0.1}, {"params": ps[2:]}], lr=0.01
        ),
    ),
    "adamw-groups": (
        lambda ps: optim.AdamW(
            [{"params": ps[:1]}, {"params": ps[1:], "weight_decay": 0.0, "lr": 0.003}],
            lr=0.01,
            weight_decay=0.2,
        ),
        lambda t, ps: t.optim.AdamW(
            [{"params": ps[:1]}, {"params": ps[1:], "weight_decay": 0.0, "lr": 0.003}],
            lr=0.01,
            weight_decay=0.2,
        ),
    ),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_matches_pytorch(name, device, torch):
    ours, theirs = OPTIMIZERS[name]
    _assert_close(_needle_run(ours, device), _torch_run(torch, lambda ps: theirs(torch, ps)))


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
        lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
        lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.01),
    ],
)
def test_groups_with_the_same_options_give_the_same_bits(make):
    one = _needle_run(make)
    split = _needle_run(lambda ps: make([{"params": ps[:1]}, {"params": ps[1:]}]))
    for a, b in zip(one, split):
        np.testing.assert_array_equal(a, b)


def test_adamw_without_decay_is_adam_bit_for_bit():
    adam = _needle_run(lambda ps: optim.Adam(ps, lr=0.01))
    adamw = _needle_run(lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.0))
    for a, b in zip(adam, adamw):
        np.testing.assert_array_equal(a, b)


def test_option_attributes_read_and_set_every_group():
    params = [nn.Parameter(tensor(v)) for v in _values()]
    opt = optim.Adam([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.1}])
    assert opt.lr == 0.01 and opt.params == params
    opt.lr = 0.5
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    with pytest.raises(AttributeError, match=r"different values \[0.0, 0.1\]"):
        _ = opt.weight_decay


# ----- state: resume with groups bit for bit -------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.AdamW([{"params": ps[:1], "weight_decay": 0.0}, {"params": ps[1:]}]),
        lambda ps: optim.RMSprop(ps, momentum=0.5, centered=True),
        lambda ps: optim.Adagrad(
            [{"params": ps[:2], "lr": 0.05}, {"params": ps[2:]}], initial_accumulator_value=0.1
        ),
    ],
)
def test_resume_with_groups_is_bit_identical(make):
    straight = _needle_run(make, steps=4)
    params = [nn.Parameter(tensor(v)) for v in _values()]
    opt = make(params)
    for step in range(2):
        for p, g in zip(params, _grads(step)):
            p.grad = tensor(g, requires_grad=False)
        opt.step()
    state = opt.state_dict()
    assert [g["params"] for g in state["param_groups"]] == [list(r) for r in opt._group_ranges]
    copies = [nn.Parameter(tensor(p.numpy())) for p in params]
    resumed = make(copies)
    resumed.load_state_dict(state)
    for step in range(2, 4):
        for p, g in zip(copies, _grads(step)):
            p.grad = tensor(g, requires_grad=False)
        resumed.step()
    for a, b in zip(straight, copies):
        np.testing.assert_array_equal(a, b.numpy())


def test_load_state_dict_restores_group_options_and_refuses_other_groups():
    params = [nn.Parameter(tensor(v)) for v in _values()]
    opt = optim.SGD([{"params": params[:1], "lr": 0.3}, {"params": params[1:]}])
    fresh = optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.9)
    fresh.load_state_dict(opt.state_dict())
    assert [g["lr"] for g in fresh.param_groups] == [0.3, 0.01]
    with pytest.raises(ValueError, match=r"groups of sizes \[1, 2\], but this optimizer has \[3\]"):
        optim.SGD(params).load_state_dict(opt.state_dict())


# ----- bad input -----------------------------------------------------------------------------


def _p():
    return [nn.Parameter(tensor(v)) for v in _values()]


@pytest.mark.parametrize(
    "build, error, words",
    [
        (
            lambda ps: optim.Adam([{"params": ps[:2]}, {"params": ps[1:]}]),
            ValueError,
            r"Adam: a parameter of shape \(4,\) is in both param_groups\[0\] and param_groups\[1\]",
        ),
        (
            lambda ps: optim.SGD([{"params": ps, "betas": (0.9, 0.99)}]),
            ValueError,
            r"SGD: param_groups\[0\]: unknown option 'betas'; SGD takes \['lr', 'momentum', ",
        ),
        (
            lambda ps: optim.AdamW([{"params": ps, "lr": -1}]),
            ValueError,
            r"AdamW: param_groups\[0\]: lr must be in \[0.0, inf\), got -1.0",
        ),
        (
            lambda ps: optim.SGD([{"params": ps}, ps[0]]),
            TypeError,
            r"SGD: param_groups\[1\] must be a dict with a 'params' list",
        ),
        (lambda ps: optim.SGD([{"lr": 0.1}]), TypeError, r"param_groups\[0\] must be a dict with"),
        (lambda ps: optim.RMSprop(ps, alpha=1.0), ValueError, "RMSprop: alpha must be in"),
        (
            lambda ps: optim.RMSprop(ps, centered="yes"),
            TypeError,
            "RMSprop: centered must be a bool",
        ),
        (lambda ps: optim.Adagrad(ps, eps=0.0), ValueError, "Adagrad: eps must be in"),
        (lambda ps: optim.Adagrad([{"params": []}]), ValueError, "empty parameter list"),
    ],
)
def test_group_and_option_errors(build, error, words):
    with pytest.raises(error, match=words):
        build(_p())


# ----- schedules vs PyTorch ------------------------------------------------------------------


def _lrs(sched, opt, steps, group=0):
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[group]["lr"])
        sched.step()
    return lrs


def _torch_lrs(torch, make_sched, lrs, steps, group=0):
    opt = torch.optim.SGD(
        [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in lrs]
    )
    sched = make_sched(torch, opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[group]["lr"])
        opt.step()
        sched.step()
    return out


def _two_group_sgd(lrs=(0.1, 0.02)):
    params = _p()
    return optim.SGD([{"params": params[:1], "lr": lrs[0]}, {"params": params[1:], "lr": lrs[1]}])


SCHEDULES = {
    "step": (
        lambda o: optim.StepLR(o, step_size=3, gamma=0.5),
        lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
        10,
    ),
    "warmup-cosine": (
        lambda o: optim.LinearWarmup(
            o, 4, after=optim.CosineAnnealingLR(o, T_max=10, eta_min=0.001), start_factor=0.1
        ),
        lambda t, o: t.optim.lr_scheduler.SequentialLR(
            o,
            [
                t.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=4),
                t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
            ],
            milestones=[4],
        ),
        14,
    ),
    "warmup-only": (
        lambda o: optim.LinearWarmup(o, 5, start_factor=0.2),
        lambda t, o: t.optim.lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=5),
        8,
    ),
    "onecycle": (
        lambda o: optim.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=20),
        lambda t, o: t.optim.lr_scheduler.OneCycleLR(
            o, max_lr=[1.0, 0.5], total_steps=20, cycle_momentum=False
        ),
        20,
    ),
    "onecycle-linear-3phase": (
        lambda o: optim.OneCycleLR(
            o,
            max_lr=0.4,
            total_steps=17,
            pct_start=0.25,
            anneal_strategy="linear",
            three_phase=True,
        ),
        lambda t, o: t.optim.lr_scheduler.OneCycleLR(
            o,
            max_lr=0.4,
            total_steps=17,
            pct_start=0.25,
            anneal_strategy="linear",
            three_phase=True,
            cycle_momentum=False,
        ),
        17,
    ),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_matches_pytorch_in_every_group(name, torch):
    ours, theirs, steps = SCHEDULES[name]
    for group in (0, 1):
        opt = _two_group_sgd()
        expected = _torch_lrs(torch, theirs, (0.1, 0.02), steps, group)
        assert _lrs(ours(opt), opt, steps, group) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"mode": "max", "factor": 0.5, "patience": 1, "cooldown": 2, "min_lr": [0.01, 0.015]},
        {"threshold_mode": "abs", "threshold": 0.05, "patience": 0},
    ],
)
def test_reduce_on_plateau_matches_pytorch(options, torch):
    metrics = [5.0, 4.0, 4.0, 3.99, 4.1, 4.2, 3.0, 3.0, 3.0, 3.0, 2.99, 2.5, 2.5, 2.6] * 2
    options = {"patience": 2, **options}
    opt = _two_group_sgd()
    sched = optim.ReduceLROnPlateau(opt, **options)
    topt = torch.optim.SGD(
        [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in (0.1, 0.02)]
    )
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **options)
    for metric in metrics:
        sched.step(metric)
        tsched.step(metric)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [g["lr"] for g in topt.param_groups], rel=1e-12
        )
    assert opt.param_groups[0]["lr"] < 0.1  # the metrics do plateau: the test can fail


def test_per_step_schedule_resumes_from_its_saved_state(tmp_path):
    opt = _two_group_sgd()
    sched = optim.LinearWarmup(opt, 3, after=optim.CosineAnnealingLR(opt, T_max=6))
    for _ in range(4):
        sched.step()
    fresh_opt = _two_group_sgd()
    fresh = optim.LinearWarmup(fresh_opt, 3, after=optim.CosineAnnealingLR(fresh_opt, T_max=6))
    ndl.save({"scheduler": sched.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "s")
    saved = ndl.load(tmp_path / "s")
    fresh.load_state_dict(saved["scheduler"])
    fresh_opt.load_state_dict(saved["optimizer"])
    assert _lrs(fresh, fresh_opt, 5, 1) == _lrs(sched, opt, 5, 1)


def test_onecycle_refuses_steps_past_the_run_and_plateau_needs_a_metric():
    opt = _two_group_sgd()
    sched = optim.OneCycleLR(opt, max_lr=0.1, total_steps=2)
    sched.step()
    sched.step()
    with pytest.raises(ValueError, match="OneCycleLR: stepped 3 times, but total_steps is 2"):
        sched.step()
    plateau = optim.ReduceLROnPlateau(opt)
    with pytest.raises(TypeError, match="metric must be a real number, got NoneType"):
        plateau.step(None)


@pytest.mark.parametrize(
    "build, error, words",
    [
        (
            lambda o: optim.OneCycleLR(o, max_lr=[0.1], total_steps=5),
            ValueError,
            "max_lr has 1 values, but the optimizer has 2 parameter groups",
        ),
        (
            lambda o: optim.OneCycleLR(o, max_lr=0.1, total_steps=5, anneal_strategy="exp"),
            ValueError,
            "anneal_strategy must be 'cos' or 'linear', got 'exp'",
        ),
        (lambda o: optim.LinearWarmup(o, 0), ValueError, "LinearWarmup: warmup_steps"),
        (
            lambda o: optim.LinearWarmup(o, 3, after=optim.ReduceLROnPlateau(o)),
            TypeError,
            "after must be a closed-form schedule",
        ),
        (
            lambda o: optim.LinearWarmup(o, 3, after=optim.StepLR(_two_group_sgd(), 2)),
            ValueError,
            "after is built on another optimizer",
        ),
        (lambda o: optim.ReduceLROnPlateau(o, mode="lowest"), ValueError, "mode must be 'min'"),
        (lambda o: optim.ReduceLROnPlateau(o, patience=-1), ValueError, "patience must be an int"),
        (lambda o: optim.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor must be in"),
    ],
)
def test_schedule_errors(build, error, words):
    with pytest.raises(error, match=words):
        build(_two_group_sgd())


def test_resuming_with_a_new_base_rate_keeps_the_group_ratios():
    opt = _two_group_sgd()
    sched = optim.CosineAnnealingLR(opt, T_max=4)
    sched.base_lr = 0.05
    assert sched.base_lrs == pytest.approx([0.05, 0.01])
    sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01 * (1 + math.cos(math.pi / 4)) / 2)
