"""Integer and boolean dtypes: the NDArray on every device against NumPy, the Tensor rules
(no gradients, float-only ops refuse them), and one table of calls run on both backends."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import needle as ndl
from needle import backend_ndarray as nd
from needle import nn

INT_DTYPES = ["int32", "int64", "bool"]
ALL_DTYPES = ["float32", "float64", *INT_DTYPES]
DEVICES = [d for d in (nd.cpu(), nd.cpu_numpy()) if d.enabled()]


@pytest.fixture(params=DEVICES, ids=str)
def dev(request):
    return request.param


def _values(dtype: str, shape=(3, 4)) -> np.ndarray:
    """Distinct values of ``dtype`` with negatives (0/1 pattern for bool)."""
    base = np.arange(int(np.prod(shape))).reshape(shape)
    return (base % 3 == 0) if dtype == "bool" else (base * 7 % 11 - 5).astype(dtype)


# ----- the NDArray, every device -------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_creation_and_numpy(dtype, dev):
    data = _values(dtype)
    a = nd.array(data, dtype=dtype, device=dev)
    assert a.dtype == dtype and a.dtype == np.dtype(dtype) and a.shape == (3, 4)
    out = a.numpy()
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, data)
    for make, fill in [(nd.zeros, 0), (nd.ones, 1)]:
        np.testing.assert_array_equal(
            make((2, 3), dtype=dtype, device=dev).numpy(), np.full((2, 3), fill, dtype=dtype)
        )
    full = dev.full((2,), 7, dtype=dtype).numpy()
    np.testing.assert_array_equal(full, np.full((2,), 7, dtype=dtype))


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_views_setitem_and_compact(dtype, dev):
    data = _values(dtype, (4, 5))
    a = nd.array(data, dtype=dtype, device=dev)
    np.testing.assert_array_equal(a[1:4:2, ::2].numpy(), data[1:4:2, ::2])
    np.testing.assert_array_equal(a.permute((1, 0)).compact().numpy(), data.T)
    np.testing.assert_array_equal(a.reshape((5, 4)).numpy(), data.reshape(5, 4))
    np.testing.assert_array_equal(
        a[0:1, :].broadcast_to((3, 5)).numpy(), np.broadcast_to(data[0:1], (3, 5))
    )
    np.testing.assert_array_equal(a.flip((0, 1)).numpy(), data[::-1, ::-1])
    np.testing.assert_array_equal(a.pad(((1, 0), (0, 2))).numpy(), np.pad(data, ((1, 0), (0, 2))))
    b = nd.array(data, dtype=dtype, device=dev)
    b[1:3, 2:4] = 1
    expected = data.copy()
    expected[1:3, 2:4] = 1
    np.testing.assert_array_equal(b.numpy(), expected)
    b[0:1, :] = a[3:4, :]
    expected[0:1, :] = data[3:4, :]
    np.testing.assert_array_equal(b.numpy(), expected)
    np.testing.assert_array_equal(nd.stack([a, a], axis=1).numpy(), np.stack([data, data], 1))
    assert nd.stack([a, a]).dtype == dtype


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_astype_and_device_moves(dtype, dev):
    data = _values(dtype)
    a = nd.array(data, dtype=dtype, device=dev)
    for target in ALL_DTYPES:
        np.testing.assert_array_equal(a.astype(target).numpy(), data.astype(target))
    f = nd.array([1.7, -2.5, 0.0], device=dev)
    np.testing.assert_array_equal(
        f.astype(dtype).numpy(), np.array([1.7, -2.5, 0.0], np.float32).astype(dtype)
    )
    for other in DEVICES:
        moved = a.to(other)
        assert moved.device == other and moved.dtype == dtype
        np.testing.assert_array_equal(moved.numpy(), data)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_arithmetic_matches_numpy(dtype, dev):
    x, y = _values(dtype), _values(dtype)[::-1].copy()
    a, b = nd.array(x, dtype=dtype, device=dev), nd.array(y, dtype=dtype, device=dev)
    for got, want in [
        (a + b, x + y),
        (a - b, x - y),
        (a * b, x * y),
        (-a, -x),
        (a.maximum(b), np.maximum(x, y)),
        (a + 3, x + 3),
        (a * -2, x * -2),
        (2 - a, 2 - x),
        (a.maximum(0), np.maximum(x, 0)),
    ]:
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        np.testing.assert_array_equal(got.numpy(), want)
    big = nd.array([2**40 + 1], dtype="int64", device=dev)
    assert (big + 1).numpy().tolist() == [2**40 + 2], "int64 scalars are exact (not via double)"


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_comparisons_give_one_and_zero_in_the_operands_dtype(dtype, dev):
    x, y = _values(dtype), _values(dtype)[::-1].copy()
    a, b = nd.array(x, dtype=dtype, device=dev), nd.array(y, dtype=dtype, device=dev)
    for got, want in [
        (a == b, x == y),
        (a != b, x != y),
        (a >= b, x >= y),
        (a > b, x > y),
        (a < b, x < y),
        (a <= b, x <= y),
        (a == 1, x == 1),
    ]:
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.numpy(), want.astype(dtype))


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_reductions(dtype, dev):
    x = _values(dtype, (3, 4, 2))
    a = nd.array(x, dtype=dtype, device=dev)
    for axis in [None, 0, (0, 2), -1]:
        s = a.sum(axis=axis)
        assert s.dtype == "int64", "integer and bool sums are int64, as in NumPy and PyTorch"
        np.testing.assert_array_equal(s.numpy(), np.sum(x, axis=axis))
        m = a.max(axis=axis, keepdims=True)
        assert m.dtype == dtype
        np.testing.assert_array_equal(m.numpy(), np.max(x, axis=axis, keepdims=True))


def test_promotion_follows_numpy(dev):
    arrays = {d: nd.array(_values(d), dtype=d, device=dev) for d in ALL_DTYPES}
    for d1 in ALL_DTYPES:
        for d2 in ALL_DTYPES:
            got = arrays[d1] * arrays[d2]
            want = _values(d1) * _values(d2)
            assert got.dtype == want.dtype, (d1, d2)
            np.testing.assert_array_equal(got.numpy(), want)
    # NumPy's rule for Python scalars: a float makes an integer array float64
    assert (arrays["int32"] + 0.5).dtype == "float64"
    assert (arrays["bool"] + 1).dtype == "int64" and (arrays["bool"] * True).dtype == "bool"
    assert (arrays["float32"] + 2).dtype == "float32"


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_float_computations_refuse_integers(dtype, dev):
    a = nd.array(_values(dtype), dtype=dtype, device=dev)
    for name, call in [
        ("log", a.log),
        ("exp", a.exp),
        ("tanh", a.tanh),
        ("/", lambda: a / 2),
        ("/", lambda: 2 / a),
        ("**", lambda: a**2),
        ("@", lambda: a @ a.permute((1, 0))),
    ]:
        with pytest.raises(
            TypeError,
            match=re.escape(f"NDArray {name}: needs float32 or float64 arrays, got {dtype}"),
        ):
            call()


@pytest.mark.parametrize(
    "mod",
    [m for m in (nd.ndarray_backend_cpu, nd.ndarray_backend_numpy) if m is not None],
    ids=lambda m: m.__device_name__,
)
def test_backend_modules_validate_integer_buffers(mod):
    """The flat-buffer kernels take every dtype where it makes sense and raise otherwise."""
    a, out = mod.Array(4, "int32"), mod.Array(4, "int32")
    mod.from_numpy(np.array([1, -2, 3, 4], np.int32), a)
    mod.ewise_add(a, a, out)
    assert mod.to_numpy(out, (4,), (1,), 0).tolist() == [2, -4, 6, 8]
    mod.scalar_mul(a, 3, out)
    assert mod.to_numpy(out, (2,), (2,), 1).tolist() == [-6, 12]
    for call in [
        lambda: mod.ewise_log(a, out),
        lambda: mod.ewise_div(a, a, out),
        lambda: mod.scalar_power(a, 2, out),
        lambda: mod.matmul(a, a, out, 2, 2, 2),
    ]:
        with pytest.raises(TypeError, match="float32 or float64"):
            call()
    with pytest.raises(TypeError, match="dtype"):
        mod.from_numpy(np.zeros(4, np.float32), a)


def test_compiled_scalars_are_checked():
    cpu = nd.ndarray_backend_cpu
    if cpu is None:
        pytest.skip("the compiled module is not built")
    a = cpu.Array(2, "int32")
    with pytest.raises(ValueError, match="does not fit"):
        cpu.fill(a, 2**40)
    with pytest.raises(TypeError, match="needs an integer scalar"):
        cpu.fill(a, 1.5)
    b = cpu.Array(2, "bool")
    cpu.fill(b, True)
    assert cpu.to_numpy(b, (2,), (1,), 0).tolist() == [True, True]


# ----- Tensors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_integer_tensors_never_require_grad(dtype):
    t = ndl.Tensor(np.array([1, 0, 1]), dtype=dtype)
    assert t.dtype == dtype and not t.requires_grad, "the default requires_grad is off for them"
    for make in [
        lambda: ndl.Tensor([1, 2], dtype=dtype, requires_grad=True),
        lambda: ndl.ones(3, dtype=dtype, requires_grad=True),
        lambda: ndl.init.zeros(2, dtype=dtype, requires_grad=True),
    ]:
        with pytest.raises(TypeError, match=f"a {dtype} tensor cannot require gradients"):
            make()
    x = ndl.Tensor([1.5, -2.5], requires_grad=True)
    cast = x.astype(dtype)
    assert cast.dtype == dtype and not cast.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        cast.sum().backward()


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize(
    "name, call",
    [
        ("Log", ndl.log),
        ("Exp", ndl.exp),
        ("Tanh", ndl.tanh),
        ("ReLU", ndl.relu),
        ("Sigmoid", ndl.sigmoid),
        ("LogSoftmax", ndl.logsoftmax),
        ("LogSumExp", ndl.logsumexp),
        ("DivScalar", lambda t: t / 2),
        ("PowerScalar", lambda t: t**2),
        ("MatMul", lambda t: t @ t),
        ("EWiseDiv", lambda t: t / t),
    ],
)
def test_float_only_ops_name_themselves_and_the_dtype(name, call, dtype):
    t = ndl.Tensor(np.ones((2, 2)), dtype=dtype)
    with pytest.raises(
        TypeError,
        match=f"{name}: needs float32 or float64 tensors, got one of "
        f"dtype {dtype}; convert it with .astype",
    ):
        call(t)


def test_integer_ops_that_work_match_numpy():
    x = np.array([[1, -2, 3], [4, 5, -6]])
    t = ndl.Tensor(x, dtype="int64")
    for got, want in [
        (t + t, x + x),
        (t * 3, x * 3),
        (-t, -x),
        (t - 1, x - 1),
        (t.sum(), x.sum()),
        (t.sum(axes=1), x.sum(1)),
        (t.transpose(), x.T),
        (t.reshape((3, 2)), x.reshape(3, 2)),
        (ndl.stack([t, t], 0), np.stack([x, x])),
        (ndl.flip(t, (1,)), x[:, ::-1]),
        (t.broadcast_to((2, 2, 3)), np.broadcast_to(x, (2, 2, 3))),
    ]:
        assert got.dtype == "int64", got.dtype
        np.testing.assert_array_equal(got.numpy(), want)
    parts = ndl.split(t, 0)
    np.testing.assert_array_equal(parts[1].numpy(), x[1])


def test_integer_and_float_tensors_promote_as_in_numpy():
    ints = ndl.Tensor([1, 2], dtype="int32")
    floats = ndl.Tensor([0.5, 1.5], dtype="float32", requires_grad=True)
    total = ints + floats
    assert total.dtype == "float64" and total.numpy().tolist() == [1.5, 3.5]
    mask = ndl.Tensor([True, False], dtype="bool")
    out = floats * mask
    assert out.dtype == "float32" and out.numpy().tolist() == [0.5, 0.0]
    out.sum().backward()
    assert floats.grad.dtype == "float32" and floats.grad.numpy().tolist() == [1.0, 0.0]


def test_astype_is_differentiable_between_floats():
    x = ndl.Tensor([1.0, 2.0], dtype="float32")
    y = x.astype("float64")
    assert y.dtype == "float64" and y.requires_grad
    (y * y).sum().backward()
    assert x.grad.dtype == "float32" and x.grad.numpy().tolist() == [2.0, 4.0]
    with pytest.raises(TypeError, match="astype: dtype 'float16' is not supported"):
        x.astype("float16")


def test_randb_is_a_bool_tensor_that_masks_floats():
    np.random.seed(0)
    mask = ndl.init.randb(1000, p=0.3)
    assert mask.dtype == "bool"
    assert 250 < int(mask.sum().numpy()) < 350
    x = ndl.Tensor(np.full(1000, 2.0), dtype="float32")
    np.testing.assert_array_equal((x * mask).numpy(), np.where(mask.numpy(), 2.0, 0.0))
    with pytest.raises(TypeError, match="rand: draws real numbers"):
        ndl.init.rand(3, dtype="int32")


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_layers_take_integer_labels_and_ids(dtype):
    logits = ndl.Tensor(
        np.log(np.array([[0.25, 0.75], [0.5, 0.5]])), dtype="float32", requires_grad=True
    )
    y = ndl.Tensor([1, 0], dtype=dtype)
    loss = nn.SoftmaxLoss()(logits, y)
    np.testing.assert_allclose(loss.numpy(), -(np.log(0.75) + np.log(0.5)) / 2, rtol=1e-6)
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), [[0.125, -0.125], [-0.25, 0.25]], atol=1e-7)
    emb = nn.Embedding(5, 3)
    ids = ndl.Tensor([[4, 0], [2, 2]], dtype=dtype)
    np.testing.assert_array_equal(emb(ids).numpy(), emb.weight.numpy()[ids.numpy()])


def test_float_labels_with_fractions_are_refused():
    logits = ndl.Tensor(np.zeros((2, 3)), dtype="float32")
    with pytest.raises(ValueError, match="SoftmaxLoss: labels must be integers"):
        nn.SoftmaxLoss()(logits, ndl.Tensor([0.5, 1.0]))


def test_loader_labels_are_int64():
    ds = ndl.data.NDArrayDataset(np.ones((4, 2), np.float32), np.arange(4, dtype=np.uint8))
    x, y = next(iter(ndl.data.DataLoader(ds, batch_size=4)))
    assert x.dtype == "float32" and y.dtype == "int64" and y.numpy().tolist() == [0, 1, 2, 3]


# ----- one table of calls, run under both backends ----------------------------------------------

TABLE = textwrap.dedent("""
    import json, numpy as np, needle as ndl
    from needle import nn
    ints = np.array([[1, -2, 3], [4, 5, -6]])
    def run():
        yield "Tensor(int array)", ndl.Tensor(ints, dtype="int32")
        yield "Tensor(int64)", ndl.Tensor(ints, dtype="int64")
        yield "Tensor(bool)", ndl.Tensor(ints > 0, dtype="bool")
        yield "Tensor(float64)", ndl.Tensor(ints, dtype="float64")
        yield "Tensor(float32)", ndl.Tensor(ints, dtype="float32")
        for d in ["float32", "float64", "int32", "int64", "bool"]:
            yield "ones " + d, ndl.ones(2, 3, dtype=d)
            yield "zeros " + d, ndl.zeros(2, dtype=d)
            yield "constant " + d, ndl.init.constant(2, c=3, dtype=d)
            yield "ones_like " + d, ndl.ones_like(ndl.zeros(2, dtype=d))
            yield "one_hot " + d, ndl.init.one_hot(3, ndl.Tensor([0, 2], dtype="int64"), dtype=d)
            yield "astype " + d, ndl.Tensor(ints * 0.75, dtype="float32").astype(d)
        np.random.seed(3)
        yield "randb", ndl.init.randb(2, 5, p=0.5)
        yield "randb float32", ndl.init.randb(2, 5, p=0.5, dtype="float32")
        yield "rand float64", ndl.init.rand(2, dtype="float64")
        t = ndl.Tensor(ints, dtype="int32")
        yield "int add", t + t
        yield "int add scalar", t + 2
        yield "int add float scalar", t + 0.5
        yield "int mul scalar", t * 3
        yield "int negate", -t
        yield "int sum", t.sum()
        yield "int sum axes", t.sum(axes=0)
        yield "int reshape", t.reshape((3, 2))
        yield "int transpose", t.transpose()
        yield "int broadcast", t.broadcast_to((2, 2, 3))
        yield "int stack", ndl.stack([t, t], 1)
        yield "int split", ndl.split(t, 0)[1]
        yield "bool sum", ndl.Tensor(ints > 0, dtype="bool").sum()
        yield "bool mask", ndl.Tensor(ints, dtype="float32") * ndl.Tensor(ints > 0, dtype="bool")
        yield "int64 + int32", ndl.Tensor(ints, dtype="int64") + t
        yield "int32 * float32", t * ndl.Tensor(ints, dtype="float32")
        yield "loader labels", next(iter(ndl.data.DataLoader(ndl.data.NDArrayDataset(
            np.zeros((3, 2), np.float32), np.arange(3, dtype=np.uint8)), 3)))[1]
        logits = ndl.Tensor(np.eye(3)[:2] * 2, dtype="float32")
        yield "SoftmaxLoss int labels", nn.SoftmaxLoss()(logits, ndl.Tensor([0, 2], dtype="int32"))
        emb = nn.Embedding(4, 2)
        yield "Embedding int ids", emb(ndl.Tensor([[3, 1]], dtype="int64"))
    def refused(call):
        try:
            call()
        except (TypeError, ValueError) as error:
            return type(error).__name__
        return "accepted"
    rows = {name: [str(t.dtype), list(t.shape), np.asarray(t.numpy(), dtype=float).tolist()]
            for name, t in run()}
    t = ndl.Tensor(ints, dtype="int32")
    for name, call in [("log int", lambda: ndl.log(t)), ("matmul int", lambda: t @ t),
                       ("grad int", lambda: ndl.Tensor(ints, dtype="int32", requires_grad=True)),
                       ("float16", lambda: ndl.Tensor(ints, dtype="float16")),
                       ("uint8", lambda: ndl.ones(2, dtype="uint8"))]:
        rows[name] = refused(call)
    print(json.dumps(rows))
""")


def _table(backend: str) -> dict:
    env = {**os.environ, "NEEDLE_BACKEND": backend}
    done = subprocess.run([sys.executable, "-c", TABLE], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_both_backends_agree_on_dtypes_shapes_and_values():
    nd_rows, np_rows = _table("nd"), _table("np")
    assert nd_rows.keys() == np_rows.keys()
    for name in nd_rows:
        a, b = nd_rows[name], np_rows[name]
        if isinstance(a, str):
            assert a == b != "accepted", f"{name}: nd {a}, np {b}"
            continue
        assert a[:2] == b[:2], f"{name}: nd gives {a[:2]}, np gives {b[:2]}"
        np.testing.assert_allclose(a[2], b[2], rtol=1e-6, err_msg=name)
