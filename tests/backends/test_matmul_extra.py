"""``nd.matmul`` (the ops' matrix product) and the kernel ``matmul_strided`` under it.

``nd.matmul(a, b)`` is NumPy's matmul without the course's tiled path: operands that a BLAS
can read in place (row-major or transposed views) reach the kernel uncopied. Everything is
checked against NumPy in float64, on every enabled device, for both dtypes.
"""

from __future__ import annotations

import numpy as np
import pytest

from needle import backend_ndarray as nd

DTYPES = ["float32", "float64"]
TOL = {"float32": 1e-5, "float64": 1e-12}


@pytest.fixture
def device(nd_device):
    """Every NDArray device (conftest), under either backend."""
    return nd_device


def _pair(rng, shape, device, dtype):
    """A random float64 NumPy array and its NDArray copy (in ``dtype``) on ``device``."""
    x = rng.standard_normal(shape)
    return x, nd.array(x, device=device, dtype=dtype)


def _check(got: nd.NDArray, expected: np.ndarray, dtype: str) -> None:
    assert got.dtype == dtype and got.is_compact()
    assert got.shape == expected.shape
    tol = TOL[dtype]
    np.testing.assert_allclose(got.numpy(), expected, rtol=tol, atol=tol * 10)


# ----- the NDArray function against NumPy --------------------------------------------------------

# (m, n, p): multiples of the tile size (where ``@`` would tile), odd sizes, ones, zeros.
SIZES = [(8, 16, 24), (5, 7, 3), (1, 9, 1), (9, 1, 4), (0, 4, 3), (4, 0, 3), (64, 32, 8)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,p", SIZES)
def test_matmul_of_every_layout_matches_numpy(device, dtype, m, n, p):
    """Row-major, transposed and sliced views of both operands, in every combination."""
    rng = np.random.default_rng(m * 100 + n * 10 + p)
    x, a = _pair(rng, (m, n), device, dtype)
    xt, at = _pair(rng, (n, m), device, dtype)  # a transposed operand: at.T is (m, n)
    y, b = _pair(rng, (n, p), device, dtype)
    yt, bt = _pair(rng, (p, n), device, dtype)
    lefts = {"rows": (x, a), "transposed": (xt.T, nd.swapaxes(at, 0, 1))}
    rights = {"rows": (y, b), "transposed": (yt.T, nd.swapaxes(bt, 0, 1))}
    for left_ref, left in lefts.values():
        for right_ref, right in rights.values():
            _check(nd.matmul(left, right), left_ref @ right_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_of_strided_slices_and_offsets(device, dtype):
    """Column windows (leading dimension > columns), row steps, flips and broadcasts."""
    rng = np.random.default_rng(0)
    x, a = _pair(rng, (10, 12), device, dtype)
    y, b = _pair(rng, (12, 9), device, dtype)
    _check(nd.matmul(a[2:7, 3:11], b[1:9, 2:8]), x[2:7, 3:11] @ y[1:9, 2:8], dtype)
    _check(nd.matmul(a[::2, ::3], b[:4, ::2]), x[::2, ::3] @ y[:4, ::2], dtype)
    window_t = nd.swapaxes(a[1:9, 2:6], 0, 1)  # (4, 8) read column-major, ld 12
    _check(nd.matmul(window_t, b[:8, :5]), x[1:9, 2:6].T @ y[:8, :5], dtype)
    _check(nd.matmul(a.flip((0, 1)), b), np.flip(x, (0, 1)) @ y, dtype)
    column = nd.broadcast_to(a[:, :1], (10, 12))  # stride 0 along the columns
    _check(nd.matmul(column, b), np.broadcast_to(x[:, :1], (10, 12)) @ y, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_batches_broadcast_like_numpy(device, dtype):
    rng = np.random.default_rng(1)
    x, a = _pair(rng, (3, 4, 5), device, dtype)
    y, b = _pair(rng, (5, 6), device, dtype)
    z, c = _pair(rng, (2, 1, 6, 5), device, dtype)
    _check(nd.matmul(a, b), x @ y, dtype)
    _check(nd.matmul(a, nd.swapaxes(c, 2, 3)), x @ np.swapaxes(z, 2, 3), dtype)
    _check(nd.matmul(nd.swapaxes(a, 1, 2), a), np.swapaxes(x, 1, 2) @ x, dtype)


def test_matmul_promotes_mixed_dtypes_like_the_operator(device):
    rng = np.random.default_rng(2)
    x, a = _pair(rng, (3, 4), device, "float32")
    y, b = _pair(rng, (4, 2), device, "float64")
    got = nd.matmul(a, b)
    assert got.dtype == "float64"
    np.testing.assert_allclose(got.numpy(), x.astype(np.float32) @ y, rtol=1e-6)


def test_transposed_operands_reach_the_kernel_uncopied(device, monkeypatch):
    """The kernel sees the transposes' own strides and buffers: nothing was compacted."""
    if not hasattr(device.mod, "matmul_strided"):
        pytest.skip(f"{device} has no matmul_strided")
    seen = []
    kernel = device.mod.matmul_strided

    def spy(a, b, out, m, n, p, a_strides, a_offset, b_strides, b_offset):
        seen.append((a.ptr(), tuple(a_strides), a_offset, b.ptr(), tuple(b_strides), b_offset))
        kernel(a, b, out, m, n, p, a_strides, a_offset, b_strides, b_offset)

    monkeypatch.setattr(device.mod, "matmul_strided", spy)
    x, w = nd.array(np.ones((16, 24)), device=device), nd.array(np.ones((8, 24)), device=device)
    nd.matmul(x, nd.swapaxes(w, 0, 1))  # x @ Wᵀ, as in a Linear layer's gradient
    nd.matmul(nd.swapaxes(x, 0, 1)[8:16], x[:, :3])  # a window of a transpose, a column slice
    assert seen == [
        (x._handle.ptr(), (24, 1), 0, w._handle.ptr(), (1, 24), 0),
        (x._handle.ptr(), (1, 24), 8, x._handle.ptr(), (24, 1), 0),
    ]


def test_operator_keeps_the_tiled_path_and_matmul_does_not(device, monkeypatch):
    """``@`` tiles when m, n, p are multiples of 8; ``nd.matmul`` never does."""
    if not hasattr(device.mod, "matmul_tiled"):
        pytest.skip(f"{device} has no tiled matmul")
    calls = []
    tiled = device.mod.matmul_tiled
    monkeypatch.setattr(
        device.mod, "matmul_tiled", lambda *args: calls.append(args[3:]) or tiled(*args)
    )
    a = nd.array(np.eye(8), device=device)
    b = nd.array(np.arange(64.0).reshape(8, 8), device=device)
    np.testing.assert_array_equal((a @ b).numpy(), np.arange(64.0).reshape(8, 8))
    assert calls == [(8, 8, 8)]
    np.testing.assert_array_equal(nd.matmul(a, b).numpy(), np.arange(64.0).reshape(8, 8))
    assert calls == [(8, 8, 8)]


def test_matmul_errors_name_the_function_and_shapes(device):
    a = nd.array(np.ones((3, 4)), device=device)
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(3, 4\) do not multiply"):
        nd.matmul(a, a)
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(4,\).*>= 2 dim"):
        nd.matmul(a, nd.array(np.ones(4), device=device))
    with pytest.raises(TypeError, match="matmul: expected NDArrays, got ndarray"):
        nd.matmul(a, np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"matmul.*broadcast"):
        nd.matmul(
            nd.array(np.ones((2, 3, 4)), device=device), nd.array(np.ones((3, 4, 2)), device=device)
        )


def test_matmul_rejects_mixed_devices():
    if not nd.cpu().enabled():
        pytest.skip("needs the compiled cpu() next to cpu_numpy()")
    with pytest.raises(ValueError, match="matmul.*cpu\\(\\).*cpu_numpy\\(\\)"):
        nd.matmul(
            nd.array(np.ones((2, 2)), device=nd.cpu()),
            nd.array(np.ones((2, 2)), device=nd.cpu_numpy()),
        )


# ----- the kernel, called directly ------------------------------------------------------------

MODULES = [
    pytest.param(d.mod, id=d.name)
    if d.enabled() and hasattr(d.mod, "matmul_strided")
    else pytest.param(None, id=d.name, marks=pytest.mark.skip(reason=f"{d}: no matmul_strided"))
    for d in (nd.cpu(), nd.cpu_numpy())
]


@pytest.fixture(params=MODULES)
def mod(request):
    return request.param


def _upload(mod, x: np.ndarray):
    arr = mod.Array(x.size, str(x.dtype))
    mod.from_numpy(np.ascontiguousarray(x).reshape(-1), arr)
    return arr


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_reads_views_at_offsets_and_overwrites_out(mod, dtype):
    rng = np.random.default_rng(3)
    buf_a = rng.standard_normal(60).astype(dtype)
    buf_b = rng.standard_normal(40).astype(dtype)
    a_view = buf_a[5:].reshape(5, 11)[:, 1:8]  # (5, 7) rows, ld 11, offset 6
    b_view = buf_b[2:30].reshape(7, 4)  # (7, 4) ...
    b_view_t = buf_b[2:30].reshape(4, 7).T  # ... and a transposed (7, 4)
    out = _upload(mod, np.full(20, np.nan, dtype))
    mod.matmul_strided(
        _upload(mod, buf_a), _upload(mod, buf_b), out, 5, 7, 4, (11, 1), 6, (4, 1), 2
    )
    got = mod.to_numpy(out, (5, 4), (4, 1), 0)
    np.testing.assert_allclose(got, a_view @ b_view, rtol=TOL[dtype], atol=TOL[dtype])
    mod.matmul_strided(
        _upload(mod, buf_a), _upload(mod, buf_b), out, 5, 7, 4, (11, 1), 6, (1, 7), 2
    )
    got = mod.to_numpy(out, (5, 4), (4, 1), 0)
    np.testing.assert_allclose(got, a_view @ b_view_t, rtol=TOL[dtype], atol=TOL[dtype])


def test_kernel_with_an_empty_inner_dimension_writes_zeros(mod):
    out = _upload(mod, np.full(6, np.nan, np.float32))
    empty = mod.Array(0, "float32")
    mod.matmul_strided(empty, empty, out, 2, 0, 3, (0, 1), 0, (3, 1), 0)
    np.testing.assert_array_equal(mod.to_numpy(out, (6,), (1,), 0), np.zeros(6))


def _f32(mod, n):
    return mod.Array(n, "float32")


KERNEL_ERRORS = {
    "a outside its buffer": (
        ValueError,
        lambda m: m.matmul_strided(
            _f32(m, 6), _f32(m, 6), _f32(m, 4), 2, 3, 2, (3, 1), 1, (2, 1), 0
        ),
    ),
    "b transposed outside": (
        ValueError,
        lambda m: m.matmul_strided(
            _f32(m, 6), _f32(m, 5), _f32(m, 4), 2, 3, 2, (3, 1), 0, (1, 3), 0
        ),
    ),
    "out size": (
        ValueError,
        lambda m: m.matmul_strided(
            _f32(m, 6), _f32(m, 6), _f32(m, 5), 2, 3, 2, (3, 1), 0, (2, 1), 0
        ),
    ),
    "negative m": (
        ValueError,
        lambda m: m.matmul_strided(
            _f32(m, 6), _f32(m, 6), _f32(m, 4), -2, 3, 2, (3, 1), 0, (2, 1), 0
        ),
    ),
    "strides length": (
        ValueError,
        lambda m: m.matmul_strided(
            _f32(m, 6), _f32(m, 6), _f32(m, 4), 2, 3, 2, (3, 1, 1), 0, (2, 1), 0
        ),
    ),
    "mixed dtypes": (
        TypeError,
        lambda m: m.matmul_strided(
            _f32(m, 6), m.Array(6, "float64"), _f32(m, 4), 2, 3, 2, (3, 1), 0, (2, 1), 0
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(KERNEL_ERRORS))
def test_kernel_rejects_bad_calls_without_touching_memory(mod, case):
    error, call = KERNEL_ERRORS[case]
    # The NumPy module's dtype check is shared by all its kernels and names none.
    with pytest.raises(error, match="dtype" if error is TypeError else "matmul_strided"):
        call(mod)
