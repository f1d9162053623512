"""The compiled CPU backend module against NumPy, kernel by kernel.

Calls `needle.backend_ndarray.ndarray_backend_cpu` directly, below the NDArray class: every
kernel in float32 and float64 at sizes 0, 1 and random ones; compact / ewise_setitem /
scalar_setitem / to_numpy on random strided views (up to 8 dims, zero and negative strides)
against an index computed in NumPy; and one test per validation error.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

cpu = pytest.importorskip(
    "needle.backend_ndarray.ndarray_backend_cpu",
    reason="the compiled CPU backend is not built (pip install -e .)",
)

DTYPES = ["float32", "float64"]
SIZES = [0, 1, 7, 64, 1000]


def upload(x: np.ndarray) -> cpu.Array:
    """A backend Array holding a copy of `x` (any shape, flattened row-major)."""
    arr = cpu.Array(x.size, str(x.dtype))
    cpu.from_numpy(np.ascontiguousarray(x), arr)
    return arr


def download(arr: cpu.Array) -> np.ndarray:
    """The whole buffer of `arr` as a flat NumPy copy."""
    return cpu.to_numpy(arr, (arr.size,), (1,), 0)


def empty_like(x: np.ndarray) -> cpu.Array:
    """An Array of x's size and dtype pre-filled with NaN, so unwritten elements show."""
    out = cpu.Array(x.size, str(x.dtype))
    cpu.fill(out, float("nan"))
    return out


def rand(rng: np.random.Generator, n: int, dtype: str, low=-3.0, high=3.0) -> np.ndarray:
    return rng.uniform(low, high, size=n).astype(dtype)


# ---- Array, fill, from_numpy / to_numpy -------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_array_round_trip(dtype, size):
    x = np.random.default_rng(size).standard_normal(size).astype(dtype)
    arr = upload(x)
    assert arr.size == size and arr.dtype == dtype and arr.dtype == np.dtype(dtype)
    assert arr.ptr() % 64 == 0
    back = download(arr)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, x)


def test_to_numpy_is_a_copy_and_handles_0d():
    arr = upload(np.array([1.0, 2.0, 3.0], dtype="float32"))
    first = cpu.to_numpy(arr, (), (), 2)
    assert first.shape == () and first == 3.0
    copy = download(arr)
    cpu.fill(arr, 7.0)
    np.testing.assert_array_equal(copy, [1.0, 2.0, 3.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_fill(dtype, size):
    out = cpu.Array(size, dtype)
    cpu.fill(out, np.float64(0.1))
    np.testing.assert_array_equal(download(out), np.full(size, 0.1, dtype=dtype))


# ---- elementwise and scalar kernels -------------------------------------------------------------

# name -> (NumPy reference, input domain (low, high) of the first operand, exact?)
BINARY = {
    "add": (np.add, (-3, 3), True),
    "mul": (np.multiply, (-3, 3), True),
    "div": (np.divide, (-3, 3), True),
    "maximum": (np.maximum, (-3, 3), True),
    "eq": (lambda a, b: (a == b).astype(a.dtype), (-3, 3), True),
    "ge": (lambda a, b: (a >= b).astype(a.dtype), (-3, 3), True),
    "power": (lambda a, b: libm_reference(np.power, a, b), (0.1, 3), False),
}


def check_close(ours: np.ndarray, ref: np.ndarray, exact: bool) -> None:
    """Exact for correctly rounded IEEE ops, else within 1 ulp of `ref` (see libm_reference)."""
    assert ours.dtype == ref.dtype
    if exact:
        np.testing.assert_array_equal(ours, ref)
    else:
        np.testing.assert_array_max_ulp(ours, ref, maxulp=1)


def libm_reference(fn, *args: np.ndarray) -> np.ndarray:
    """fn computed in float64 and rounded to the inputs' dtype: the accuracy libm gives.

    NumPy's own float32 loops (SIMD exp/log/tanh/pow) are themselves only within 1-2 ulp, so
    float32 results are compared with the float64 result rounded to float32 (within 1 ulp) and
    float64 results with NumPy's float64 (within 1 ulp of each other, both near-correct).
    """
    dtype = args[0].dtype
    with np.errstate(all="ignore"):
        return fn(*(x.astype(np.float64) for x in args)).astype(dtype)


def operands(rng, n, dtype, domain):
    """Two operands; about a third of b repeats a so that eq/ge/maximum see ties."""
    a = rand(rng, n, dtype, *domain)
    b = rand(rng, n, dtype, 0.5, 2.0)
    ties = rng.random(n) < 0.3
    b[ties] = a[ties]
    return a, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_ewise_binary(name, size, dtype):
    ref, domain, exact = BINARY[name]
    a, b = operands(np.random.default_rng(size), size, dtype, domain)
    out = empty_like(a)
    getattr(cpu, f"ewise_{name}")(upload(a), upload(b), out)
    check_close(download(out), ref(a, b), exact)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_scalar_binary(name, size, dtype):
    ref, domain, exact = BINARY[name]
    a = rand(np.random.default_rng(size), size, dtype, *domain)
    val = 1.7
    if size:
        a[0] = np.dtype(dtype).type(val)  # a tie for eq/ge/maximum
    out = empty_like(a)
    getattr(cpu, f"scalar_{name}")(upload(a), val, out)
    check_close(download(out), ref(a, np.dtype(dtype).type(val)), exact)


@pytest.mark.parametrize("val", [0.1, np.float32(0.1), np.float64(0.1)])
def test_scalar_is_cast_to_the_dtype_first(val):
    a = np.array([0.1, 0.2], dtype="float32")
    out = empty_like(a)
    cpu.scalar_eq(upload(a), val, out)
    np.testing.assert_array_equal(download(out), [1.0, 0.0])


@pytest.mark.parametrize("val", [2, True, np.int64(2), np.float32(2.0)])
def test_scalar_accepts_python_and_numpy_numbers(val):
    a = np.array([1.0, 3.0])
    out = empty_like(a)
    cpu.scalar_add(upload(a), val, out)
    np.testing.assert_array_equal(download(out), a + float(val))


def test_scalar_rejects_non_numbers():
    a = upload(np.zeros(2, dtype="float32"))
    with pytest.raises(TypeError):
        cpu.scalar_add(a, "2", cpu.Array(2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_maximum_propagates_nan(dtype):
    a = np.array([np.nan, 1.0, np.nan, -1.0], dtype=dtype)
    b = np.array([1.0, np.nan, np.nan, -2.0], dtype=dtype)
    out = empty_like(a)
    cpu.ewise_maximum(upload(a), upload(b), out)
    np.testing.assert_array_equal(download(out), np.maximum(a, b))
    cpu.reduce_max(upload(a), out := cpu.Array(1, dtype), 4)
    assert np.isnan(download(out)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("exponent", [0.0, 2.0, 3.0, -1.0, 0.5, 2.5, -0.5])
def test_power_edge_cases(dtype, exponent):
    """C pow: NaN for a negative base with a fractional exponent, exact signs otherwise."""
    a = np.array([-2.0, -1.5, -0.0, 0.0, 0.5, 2.0, np.inf, -np.inf, np.nan], dtype=dtype)
    ref = libm_reference(np.power, a, np.full_like(a, exponent))
    if exponent == 0.5:  # NumPy takes sqrt here; C pow gives pow(-0, .5) = +0, pow(-inf, .5) = inf
        ref[2], ref[7] = 0.0, np.inf
    out = empty_like(a)
    cpu.scalar_power(upload(a), exponent, out)
    np.testing.assert_array_max_ulp(download(out), ref, maxulp=1)
    e = np.full_like(a, exponent)
    cpu.ewise_power(upload(a), upload(e), out)
    np.testing.assert_array_max_ulp(download(out), ref, maxulp=1)
    if exponent == 0.0:
        np.testing.assert_array_equal(download(out), np.ones_like(a))
    if exponent in (2.5, -0.5, 0.5):
        assert np.isnan(download(out)[:2]).all()


# name -> (NumPy function, input domain, max ulp). glibc's tanh/tanhf are within 2 ulp of the
# correctly rounded result (checked against mpmath); exp and log within 1.
UNARY = {
    "log": (np.log, (1e-3, 50.0), 1),
    "exp": (np.exp, (-80.0, 80.0), 1),
    "tanh": (np.tanh, (-20.0, 20.0), 2),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES + [5000])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_accuracy(name, size, dtype):
    ref, domain, maxulp = UNARY[name]
    a = rand(np.random.default_rng(size), size, dtype, *domain)
    out = empty_like(a)
    getattr(cpu, f"ewise_{name}")(upload(a), out)
    np.testing.assert_array_max_ulp(download(out), libm_reference(ref, a), maxulp=maxulp)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unary_special_values(dtype):
    a = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-30], dtype=dtype)
    out = empty_like(a)
    for name, (ref, _, _) in UNARY.items():
        getattr(cpu, f"ewise_{name}")(upload(a), out)
        np.testing.assert_array_max_ulp(download(out), libm_reference(ref, a), maxulp=1)


# ---- reductions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("outer,rs", [(0, 3), (3, 0), (1, 1), (4, 5), (7, 10), (2, 1001)])
def test_reduce_sum(dtype, outer, rs):
    a = rand(np.random.default_rng(rs), outer * rs, dtype).reshape(outer, rs)
    out = cpu.Array(outer, dtype)
    cpu.reduce_sum(upload(a), out, rs)
    exact = a.astype(np.float64).sum(axis=1)
    # Any summation order is within rs·eps·Σ|x| of the exact sum; a wrong index is not.
    bound = rs * np.finfo(dtype).eps * np.abs(a).astype(np.float64).sum(axis=1)
    ours = download(out)
    assert ours.dtype == dtype
    assert np.all(np.abs(ours - exact) <= bound + 1e-300)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("outer,rs", [(0, 3), (1, 1), (4, 5), (7, 10), (2, 1001)])
def test_reduce_max(dtype, outer, rs):
    a = rand(np.random.default_rng(rs), outer * rs, dtype).reshape(outer, rs)
    out = cpu.Array(outer, dtype)
    cpu.reduce_max(upload(a), out, rs)
    np.testing.assert_array_equal(download(out), a.max(axis=1, initial=-np.inf).astype(dtype))


def test_reduce_sum_is_deterministic():
    a = upload(np.random.default_rng(0).standard_normal(10_007).astype("float32"))
    results = []
    for _ in range(3):
        out = cpu.Array(1)
        cpu.reduce_sum(a, out, 10_007)
        results.append(download(out).tobytes())
    assert len(set(results)) == 1


# ---- matrix products ----------------------------------------------------------------------------

MATMUL_SIZES = [(72, 73, 74), (1, 1, 1), (0, 3, 4), (3, 0, 4), (3, 4, 0), (5, 1, 7), (33, 17, 9)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,p", MATMUL_SIZES)
def test_matmul(dtype, m, n, p):
    rng = np.random.default_rng(m * 100 + n)
    a, b = rand(rng, m * n, dtype).reshape(m, n), rand(rng, n * p, dtype).reshape(n, p)
    out = empty_like(np.empty(m * p, dtype))  # NaN-filled: matmul must overwrite it
    cpu.matmul(upload(a), upload(b), out, m, n, p)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(download(out).reshape(m, p), ref, rtol=rtol, atol=rtol * n)


def to_tiles(x: np.ndarray, tile: int) -> np.ndarray:
    """The tiled form (r/T, c/T, T, T) of a row-major r×c matrix."""
    r, c = x.shape
    return x.reshape(r // tile, tile, c // tile, tile).transpose(0, 2, 1, 3).copy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,p", [(8, 8, 8), (16, 8, 24), (24, 32, 8), (0, 8, 8), (8, 0, 16)])
def test_matmul_tiled(dtype, m, n, p):
    tile = cpu.__tile_size__
    rng = np.random.default_rng(m + n + p)
    a, b = rand(rng, m * n, dtype).reshape(m, n), rand(rng, n * p, dtype).reshape(n, p)
    out = empty_like(np.empty(m * p, dtype))  # NaN-filled: matmul_tiled must zero it
    cpu.matmul_tiled(upload(to_tiles(a, tile)), upload(to_tiles(b, tile)), out, m, n, p)
    ref = to_tiles(a.astype(np.float64) @ b.astype(np.float64), tile)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(download(out).reshape(ref.shape), ref, rtol=rtol, atol=rtol * n)


def test_module_constants():
    assert cpu.__device_name__ == "cpu"
    assert cpu.__tile_size__ == 8


# ---- strided views: compact / ewise_setitem / scalar_setitem / to_numpy -------------------------


@st.composite
def strided_views(draw):
    """A random view (shape, strides, offset) of up to 8 dims and the buffer size it needs.

    Strides may be 0 or negative; the offset is chosen so that the view fits, plus slack on both
    sides so that offset and end are not always the buffer's edges.
    """
    ndim = draw(st.integers(0, 8))
    shape = tuple(draw(st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim)))
    strides = tuple(draw(st.lists(st.integers(-5, 5), min_size=ndim, max_size=ndim)))
    low = sum((n - 1) * s for n, s in zip(shape, strides) if s < 0 and n > 0)
    high = sum((n - 1) * s for n, s in zip(shape, strides) if s > 0 and n > 0)
    offset = -low + draw(st.integers(0, 3))
    buffer_size = offset + high + 1 + draw(st.integers(0, 3))
    return shape, strides, offset, buffer_size


def positions(shape, strides, offset) -> np.ndarray:
    """offset + Σ idx·strides for every idx, in row-major order (the reference walk)."""
    if not shape:
        return np.array([offset], dtype=np.int64)
    idx = np.indices(shape, dtype=np.int64).reshape(len(shape), -1)
    return offset + (np.asarray(strides, dtype=np.int64).reshape(-1, 1) * idx).sum(axis=0)


@settings(max_examples=150, deadline=None)
@given(view=strided_views(), dtype=st.sampled_from(DTYPES))
def test_compact_and_to_numpy(view, dtype):
    shape, strides, offset, buffer_size = view
    base = np.arange(buffer_size, dtype=dtype)
    ref = base[positions(shape, strides, offset)].reshape(shape)
    out = empty_like(ref)
    cpu.compact(upload(base), out, shape, strides, offset)
    np.testing.assert_array_equal(download(out), ref.ravel())
    got = cpu.to_numpy(upload(base), shape, strides, offset)
    assert got.shape == shape and got.dtype == dtype
    np.testing.assert_array_equal(got, ref)


@settings(max_examples=150, deadline=None)
@given(view=strided_views(), dtype=st.sampled_from(DTYPES))
def test_ewise_setitem(view, dtype):
    shape, strides, offset, buffer_size = view
    pos = positions(shape, strides, offset)
    values = -1.0 - np.arange(pos.size, dtype=dtype)
    ref = np.arange(buffer_size, dtype=dtype)
    for k, p in enumerate(pos):  # row-major writes: with zero strides the last one wins
        ref[p] = values[k]
    out = upload(np.arange(buffer_size, dtype=dtype))
    cpu.ewise_setitem(upload(values), out, shape, strides, offset)
    np.testing.assert_array_equal(download(out), ref)


@settings(max_examples=100, deadline=None)
@given(view=strided_views(), dtype=st.sampled_from(DTYPES))
def test_scalar_setitem(view, dtype):
    shape, strides, offset, buffer_size = view
    pos = positions(shape, strides, offset)
    ref = np.arange(buffer_size, dtype=dtype)
    ref[pos] = -2.5
    out = upload(np.arange(buffer_size, dtype=dtype))
    cpu.scalar_setitem(pos.size, -2.5, out, shape, strides, offset)
    np.testing.assert_array_equal(download(out), ref)


def test_compact_of_slices_and_broadcasts_matches_numpy():
    """Views the NDArray makes (slices, transposes, flips, broadcasts) against NumPy's own."""
    base = np.arange(2 * 3 * 4 * 5, dtype="float32").reshape(2, 3, 4, 5)
    item = base.itemsize
    views = [
        base[:, 1:, ::2, 1::3],
        base.transpose(3, 1, 0, 2),
        base[::-1, :, ::-2],
        np.broadcast_to(base[:, :1], (2, 6, 4, 5)),
        base[1, 2],
    ]
    for v in views:
        strides = tuple(s // item for s in v.strides)
        offset = (v.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // item
        out = empty_like(np.empty(v.size, "float32"))
        cpu.compact(upload(base), out, v.shape, strides, offset)
        np.testing.assert_array_equal(download(out), v.ravel())


# ---- validation at the boundary: one test per error class ---------------------------------------


def f32(n: int) -> cpu.Array:
    return cpu.Array(n, "float32")


def f64(n: int) -> cpu.Array:
    return cpu.Array(n, "float64")


def test_array_rejects_bad_dtype_and_size():
    with pytest.raises(TypeError, match="float32, float64, int32, int64 or bool"):
        cpu.Array(3, "uint8")
    with pytest.raises(ValueError, match="size must be >= 0"):
        cpu.Array(-1)
    with pytest.raises(ValueError, match="too large"):
        cpu.Array(2**62)


MIXED_DTYPE_CALLS = {
    "ewise_add": lambda: cpu.ewise_add(f32(2), f64(2), f32(2)),
    "scalar_mul": lambda: cpu.scalar_mul(f64(2), 1.0, f32(2)),
    "ewise_exp": lambda: cpu.ewise_exp(f32(2), f64(2)),
    "reduce_sum": lambda: cpu.reduce_sum(f32(4), f64(2), 2),
    "matmul": lambda: cpu.matmul(f32(4), f64(4), f32(4), 2, 2, 2),
    "matmul_tiled": lambda: cpu.matmul_tiled(f32(64), f32(64), f64(64), 8, 8, 8),
    "compact": lambda: cpu.compact(f32(4), f64(4), (4,), (1,), 0),
    "ewise_setitem": lambda: cpu.ewise_setitem(f64(4), f32(4), (4,), (1,), 0),
}


@pytest.mark.parametrize("name", sorted(MIXED_DTYPE_CALLS))
def test_mixed_dtypes_raise_type_error(name):
    with pytest.raises(TypeError, match=f"{name}: all arrays must share one dtype"):
        MIXED_DTYPE_CALLS[name]()


WRONG_SIZE_CALLS = {
    "ewise_add": lambda: cpu.ewise_add(f32(3), f32(2), f32(2)),
    "ewise_mul b": lambda: cpu.ewise_mul(f32(2), f32(3), f32(2)),
    "scalar_add": lambda: cpu.scalar_add(f32(3), 1.0, f32(2)),
    "ewise_log": lambda: cpu.ewise_log(f32(3), f32(2)),
    "reduce_sum": lambda: cpu.reduce_sum(f32(5), f32(2), 2),
    "reduce_max": lambda: cpu.reduce_max(f32(4), f32(2), 3),
    "matmul a": lambda: cpu.matmul(f32(5), f32(6), f32(4), 2, 3, 2),
    "matmul b": lambda: cpu.matmul(f32(6), f32(5), f32(4), 2, 3, 2),
    "matmul out": lambda: cpu.matmul(f32(6), f32(6), f32(5), 2, 3, 2),
    "compact out": lambda: cpu.compact(f32(6), f32(5), (2, 3), (3, 1), 0),
    "ewise_setitem a": lambda: cpu.ewise_setitem(f32(5), f32(6), (2, 3), (3, 1), 0),
    "scalar_setitem size": lambda: cpu.scalar_setitem(5, 1.0, f32(6), (2, 3), (3, 1), 0),
    "from_numpy fewer": lambda: cpu.from_numpy(np.zeros(3, dtype="float32"), f32(4)),
}


@pytest.mark.parametrize("name", sorted(WRONG_SIZE_CALLS))
def test_wrong_sizes_raise_value_error(name):
    with pytest.raises(ValueError, match=name.split()[0]):
        WRONG_SIZE_CALLS[name]()


NEGATIVE_CALLS = {
    "matmul m": lambda: cpu.matmul(f32(0), f32(0), f32(0), -1, 0, 2),
    "matmul_tiled p": lambda: cpu.matmul_tiled(f32(0), f32(0), f32(0), 0, 8, -8),
    "reduce_sum reduce_size": lambda: cpu.reduce_sum(f32(0), f32(0), -1),
    "scalar_setitem size": lambda: cpu.scalar_setitem(-1, 0.0, f32(4), (0,), (1,), 0),
    "compact shape": lambda: cpu.compact(f32(4), f32(0), (-1, 0), (1, 1), 0),
}


@pytest.mark.parametrize("name", sorted(NEGATIVE_CALLS))
def test_negative_sizes_raise_value_error(name):
    with pytest.raises(ValueError, match=">= 0"):
        NEGATIVE_CALLS[name]()


def test_reduce_max_over_nothing_raises():
    with pytest.raises(ValueError, match="reduce_max: cannot reduce over 0 elements"):
        cpu.reduce_max(f32(0), f32(3), 0)


@pytest.mark.parametrize("m,n,p", [(8, 8, 4), (4, 8, 8), (8, 12, 8)])
def test_matmul_tiled_needs_tile_multiples(m, n, p):
    with pytest.raises(ValueError, match="multiples of the tile size 8"):
        cpu.matmul_tiled(f32(m * n), f32(n * p), f32(m * p), m, n, p)


VIEW_FUNCTIONS = {
    "compact": lambda shape, strides, offset, n: cpu.compact(
        f32(n), f32(int(np.prod(shape))), shape, strides, offset
    ),
    "ewise_setitem": lambda shape, strides, offset, n: cpu.ewise_setitem(
        f32(int(np.prod(shape))), f32(n), shape, strides, offset
    ),
    "scalar_setitem": lambda shape, strides, offset, n: cpu.scalar_setitem(
        int(np.prod(shape)), 0.0, f32(n), shape, strides, offset
    ),
    "to_numpy": lambda shape, strides, offset, n: cpu.to_numpy(f32(n), shape, strides, offset),
}

# (shape, strides, offset, buffer size, message): each view is invalid for its buffer.
BAD_VIEWS = {
    "past the end": ((2, 3), (3, 1), 1, 6, "reaches elements 1..6 of a buffer of size 6"),
    "negative stride below 0": ((3,), (-2,), 3, 6, "reaches elements -1..3"),
    "negative offset": ((2,), (1,), -1, 6, "reaches elements -1..0"),
    "0-d past the end": ((), (), 6, 6, "reaches elements 6..6"),
    "empty buffer": ((1,), (1,), 0, 0, "of a buffer of size 0"),
    "stride overflow": ((3,), (2**62,), 0, 6, "overflow"),
    "length mismatch": ((2, 3), (1,), 0, 6, "different lengths"),
    "too many dims": ((1,) * 17, (1,) * 17, 0, 6, "at most 16 dimensions"),
}


@pytest.mark.parametrize("case", sorted(BAD_VIEWS))
@pytest.mark.parametrize("name", sorted(VIEW_FUNCTIONS))
def test_views_outside_the_buffer_raise_value_error(name, case):
    shape, strides, offset, n, message = BAD_VIEWS[case]
    with pytest.raises(ValueError, match=f"{name}: .*{message}"):
        VIEW_FUNCTIONS[name](shape, strides, offset, n)


def test_empty_views_may_sit_anywhere():
    """A view with no elements reads nothing, so its offset is not checked."""
    out = f32(0)
    cpu.compact(f32(0), out, (0, 3), (3, 1), 99)
    assert cpu.to_numpy(f32(0), (2, 0), (5, 1), 7).shape == (2, 0)


def test_from_numpy_copies_the_first_out_size_values():
    out = f64(3)
    cpu.from_numpy(np.arange(6.0).reshape(2, 3), out)
    np.testing.assert_array_equal(download(out), [0.0, 1.0, 2.0])


def test_from_numpy_rejects_wrong_dtype_and_layout():
    with pytest.raises(TypeError, match="from_numpy: the array's dtype"):
        cpu.from_numpy(np.zeros(4, dtype=np.float64), f32(4))
    with pytest.raises(TypeError, match="from_numpy: the array's dtype"):
        cpu.from_numpy(np.zeros(4, dtype=np.int64), f32(4))
    with pytest.raises(ValueError, match="from_numpy: the array is not C-contiguous"):
        cpu.from_numpy(np.zeros((2, 2), dtype=np.float32).T, f32(4))
    with pytest.raises(ValueError, match="from_numpy: the array is not C-contiguous"):
        cpu.from_numpy(np.zeros(8, dtype=np.float32)[::2], f32(4))
    with pytest.raises(TypeError):
        cpu.from_numpy([1.0, 2.0], f32(2))


# ---- flush-denormal extra -----------------------------------------------------------------------


def test_flush_denormal_round_trip():
    before = cpu.get_flush_denormal()
    tiny = upload(np.array([2e-38], dtype="float32"))  # made before FTZ: NumPy would flush it
    try:
        supported = cpu.set_flush_denormal(True)
        if not supported:
            assert cpu.get_flush_denormal() is False
            return
        assert cpu.get_flush_denormal() is True
        out = f32(1)
        cpu.scalar_mul(tiny, 1e-3, out)  # 2e-41 is a float32 denormal
        assert download(out)[0] == 0.0
        assert cpu.set_flush_denormal(False) is True
        assert cpu.get_flush_denormal() is False
        cpu.scalar_mul(tiny, 1e-3, out)
        assert download(out)[0] != 0.0
    finally:
        cpu.set_flush_denormal(before)
