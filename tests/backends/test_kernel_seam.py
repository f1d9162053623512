"""The kernel seam: every backend defines every entry point of ``needle.backends.kernels`` with
one signature, the NDArray backend's kernels give the NumPy formulas' bits, and nothing above
the backends asks which backend it runs on or touches a buffer handle."""

import inspect
import pathlib
import re

import numpy as np
import pytest

from needle.backends.ndarray import kernels as nd_kernels
from needle.backends.numpy import kernels as np_kernels

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "needle"


def _entry_points(module) -> dict:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and inspect.isfunction(value)
        and value.__module__ == module.__name__
    }


def test_both_backends_define_every_entry_point_with_one_signature():
    nd_points, np_points = _entry_points(nd_kernels), _entry_points(np_kernels)
    assert sorted(nd_points) == sorted(np_points)
    assert len(nd_points) >= 20
    for name, function in nd_points.items():
        assert list(inspect.signature(function).parameters) == list(
            inspect.signature(np_points[name]).parameters
        ), name
    assert isinstance(nd_kernels.OFFSET_VIEWS_ARE_COMPACT, bool)
    assert isinstance(np_kernels.OFFSET_VIEWS_ARE_COMPACT, bool)


def test_no_module_above_the_backends_checks_the_backend_or_reads_a_handle():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("backends/"):
            continue
        text = path.read_text()
        for pattern in (
            r"\._handle\b",
            r"BACKEND\s*[!=]=",
            r"hasattr\([^)]*\.device",
            r"hasattr\([^)]*\"compact\"",
        ):
            if re.search(pattern, text, re.M):
                offenders.append(f"{relative}: {pattern}")
    assert offenders == []


# ----- the compiled kernels against the NumPy formulas ---------------------------------------


def _pair(rng, *shapes, dtype="float32", scale=3.0):
    """Random float arrays of ``shapes``: NumPy and the same values as cpu() NDArrays."""
    return _with_ndarrays([(rng.standard_normal(s) * scale).astype(dtype) for s in shapes])


def _with_ndarrays(arrays: list) -> tuple[list, list]:
    import needle.backend_ndarray as nd

    return arrays, [nd.array(a, dtype=a.dtype, device=nd.cpu()) for a in arrays]


def _needs_compiled():
    import needle.backend_ndarray as nd

    if not nd.cpu().enabled():
        pytest.skip("the compiled CPU module is not built here")


def _assert_same(got, want, exact=True):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = g.numpy()
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            tolerance = 2e-6 if g.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(g, w, rtol=tolerance, atol=tolerance)


SHAPES = [(6, 5), (3, 17), (1, 8), (40, 1)]


def _norm_composed(x, weight, bias, eps: float, axis: int):
    """The norm forward and backward as NDArray operations: what the compiled kernels must
    reproduce bit for bit (the same float operations in the same order)."""
    n = x.shape[axis]
    mean = x.sum(axis=axis, keepdims=True) / n
    centred = x - mean
    var = (centred * centred).sum(axis=axis, keepdims=True) / n
    inv_std = (var + eps) ** -0.5
    xhat = centred * inv_std
    return xhat * weight + bias, xhat, inv_std


def _norm_grad_composed(g, xhat, weight, inv_std, axis: int):
    grad_bias, grad_weight = g.sum(axis=0), (g * xhat).sum(axis=0)
    n = g.shape[axis]
    if axis == 0:  # batch norm's per-column sums are weight * grad_bias and weight * grad_weight
        grad_x = (g * n - grad_bias - xhat * grad_weight) * (weight * inv_std / n)
    else:
        gx = g * weight
        sum_gx = gx.sum(axis=1, keepdims=True)
        sum_gx_xhat = (gx * xhat).sum(axis=1, keepdims=True)
        grad_x = (gx * n - sum_gx - xhat * sum_gx_xhat) * (inv_std / n)
    return grad_x, grad_weight, grad_bias


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_norm_kernels_give_the_array_compositions_bits(norm, shape, dtype, rng):
    _needs_compiled()
    axis = 0 if norm == "batchnorm" else 1
    (x, w, b, g), (xn, wn, bn, gn) = _pair(rng, shape, shape[1:], shape[1:], shape, dtype=dtype)
    # layer norm: bit for bit; batch norm's kernel sums its columns in its own order
    exact = norm == "layernorm"
    got = getattr(nd_kernels, f"{norm}_forward")(xn, wn, bn, 1e-5)
    out, xhat, inv_std = _norm_composed(xn, wn, bn, 1e-5, axis)
    _assert_same(
        (got[0], got[1], got[-1].reshape(inv_std.shape)),
        (out.numpy(), xhat.numpy(), inv_std.numpy()),
        exact,
    )
    grads = getattr(nd_kernels, f"{norm}_backward")(gn, got[1], wn, got[-1])
    _assert_same(
        grads, tuple(a.numpy() for a in _norm_grad_composed(gn, xhat, wn, inv_std, axis)), exact
    )
    # the NumPy backend's formulas: the same values (NumPy sums pairwise, so not the same bits)
    want = getattr(np_kernels, f"{norm}_forward")(x, w, b, 1e-5)
    _assert_close(got, want)
    _assert_close(grads, getattr(np_kernels, f"{norm}_backward")(g, want[1], w, want[-1]))


def _assert_close(got, want):
    for g, w in zip(got, want):
        rtol = 1e-5 if w.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(g.numpy(), w, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("shape", [(4, 3), (1, 1), (7, 1000)])
def test_softmax_loss_kernel_matches_the_formula(shape, rng):
    # the same operations in the same order, except the kernel's own vectorised e^x (within
    # 1 ulp of the library's): equal up to float32 rounding, not bit for bit
    _needs_compiled()
    (logits,), (logits_nd,) = _pair(rng, shape, scale=4.0)
    labels = rng.integers(0, shape[1], shape[0])
    loss, unit_grad = nd_kernels.softmax_cross_entropy(logits_nd, labels)
    assert loss.shape == ()
    _assert_same((loss, unit_grad), np_kernels.softmax_cross_entropy(logits, labels), exact=False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch, hidden", [(4, 3), (1, 1), (16, 20)])
def test_lstm_gate_kernels_give_the_array_compositions_bits(batch, hidden, dtype, rng):
    _needs_compiled()
    import needle.backend_ndarray as nd

    def sigmoid(a):  # ops.sigmoid's overflow-safe formula, on NDArrays
        e = nd.exp(-nd.maximum(a, -a))
        positive = (a >= 0).astype(a.dtype)
        return (positive + (1 - positive) * e) / (1 + e)

    (pre, c, gh, gc), (pre_n, c_n, gh_n, gc_n) = _pair(
        rng, (batch, 4 * hidden), *[(batch, hidden)] * 3, dtype=dtype
    )
    h_new, c_new, act, tanh_c = nd_kernels.lstm_cell_forward(pre_n, c_n)
    i, f, o = (sigmoid(pre_n[:, k * hidden : (k + 1) * hidden]) for k in (0, 1, 3))
    g = nd.tanh(pre_n[:, 2 * hidden : 3 * hidden])
    c_want = f * c_n + i * g
    tanh_want = nd.tanh(c_want)
    _assert_same(
        (h_new, c_new, act, tanh_c),
        (
            (o * tanh_want).numpy(),
            c_want.numpy(),
            np.concatenate([a.numpy() for a in (i, f, g, o)], axis=1),
            tanh_want.numpy(),
        ),
    )
    grad_pre, grad_c_prev = nd_kernels.lstm_cell_backward(gh_n, gc_n, c_n, act, tanh_c)
    total = gc_n + gh_n * o * (1 - tanh_want * tanh_want)
    blocks = (
        total * g * i * (1 - i),
        total * c_n * f * (1 - f),
        total * i * (1 - g * g),
        gh_n * tanh_want * o * (1 - o),
    )
    _assert_same(
        (grad_pre, grad_c_prev),
        (np.concatenate([a.numpy() for a in blocks], axis=1), (total * f).numpy()),
    )
    # the NumPy backend's formulas: the same values (its exp and tanh are NumPy's)
    want = np_kernels.lstm_cell_forward(pre, c)
    _assert_close((h_new, c_new, act, tanh_c), want)
    _assert_close(
        (grad_pre, grad_c_prev), np_kernels.lstm_cell_backward(gh, gc, c, want[2], want[3])
    )


def test_row_kernels_relu_backward_and_add_row_give_the_formulas_bits(rng):
    _needs_compiled()
    (table, rows, g, x, a, row), nds = _pair(rng, (5, 3), (2, 4, 3), (6, 7), (6, 7), (6, 7), (1, 7))
    ids = rng.integers(0, 5, (2, 4))
    ids[0, :2] = 3  # repeated ids accumulate in order
    _assert_same(nd_kernels.take_rows(nds[0], ids), np_kernels.take_rows(table, ids))
    _assert_same(nd_kernels.add_rows(nds[1], ids, 5), np_kernels.add_rows(rows, ids, 5))
    _assert_same(nd_kernels.relu_backward(nds[2], nds[3]), np_kernels.relu_backward(g, x))
    _assert_same(nd_kernels.add_row(nds[4], nds[5]), np_kernels.add_row(a, row))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_kernels_give_the_formulas_bits(optimizer, rng):
    _needs_compiled()
    shapes = [(3, 4), (7,), (1, 1)]
    params, params_nd = _pair(rng, *shapes)
    grads, grads_nd = _pair(rng, *shapes)
    slots = [_pair(rng, *shapes, scale=0.1)]
    if optimizer == "adam":  # second moments are squares: non-negative
        slots.append(_with_ndarrays([np.abs(v) for v in _pair(rng, *shapes, scale=0.1)[0]]))
        scalars = (0.01, 0.9, 0.999, 1e-8, 0.1, 1 - 0.9**3, 1 - 0.999**3)
    else:
        scalars = (0.1, 0.9, 0.01)
    run = f"{optimizer}_update"
    want = getattr(np_kernels, run)(params, grads, *(s[0] for s in slots), *scalars)
    got = getattr(nd_kernels, run)(params_nd, grads_nd, *(s[1] for s in slots), *scalars)
    _assert_same(tuple(got), tuple(want))
    for numpy_slot, nd_slot in slots:  # the state is updated in place, the same way
        _assert_same(tuple(nd_slot), tuple(numpy_slot))


def test_ops_keep_no_per_call_state():
    """Op objects hold their constructor's parameters only: nothing outside ``__init__``
    assigns to ``self`` (what a gradient needs is returned by compute as ``Saved``)."""
    import ast

    offenders = []
    for path in sorted((PACKAGE / "ops").glob("*.py")):
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            for method in cls.body:
                if not isinstance(method, ast.FunctionDef) or method.name == "__init__":
                    continue
                for node in ast.walk(method):
                    targets = (
                        node.targets
                        if isinstance(node, ast.Assign)
                        else [node.target]
                        if isinstance(node, (ast.AugAssign, ast.AnnAssign))
                        else []
                    )
                    for target in targets:
                        leaves = target.elts if isinstance(target, ast.Tuple) else [target]
                        for leaf in leaves:
                            if (
                                isinstance(leaf, ast.Attribute)
                                and isinstance(leaf.value, ast.Name)
                                and leaf.value.id == "self"
                            ):
                                offenders.append(
                                    f"{path.name}: {cls.name}.{method.name} sets self.{leaf.attr}"
                                )
    assert offenders == []
