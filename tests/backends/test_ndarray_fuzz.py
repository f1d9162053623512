"""A seeded differential fuzz of the NDArray against NumPy.

Each case (device, dtype, seed) builds random *views* — slices with steps, permuted axes,
flips (negative strides at an offset, made with ``NDArray.make``), broadcasts — in
lockstep as an NDArray and a NumPy array, then runs every operation on them: elementwise
with arrays and scalars (NaN, infinities and -0.0 among the values), comparisons,
reductions, matmul, setitem, astype, reshape, pad and flip, comparing dtype, shape and
values with NumPy's. A failure names its seed: rerun that case alone with
``pytest tests/backends/test_ndarray_fuzz.py -k "<device> and <dtype> and -<seed>]"``.

The default run is short; ``-m slow`` runs many more seeds.
"""

from __future__ import annotations

import operator

import numpy as np
import pytest

from needle import backend_ndarray as nd

DEVICES = [
    pytest.param(d, id=d.name)
    if d.enabled()
    else pytest.param(d, id=d.name, marks=pytest.mark.skip(reason=f"{d} is not enabled here"))
    for d in nd.all_devices()
]
DTYPES = ["float32", "float64", "int32", "int64", "bool"]
FLOATS = ("float32", "float64")
SPECIALS = np.array([np.nan, np.inf, -np.inf, -0.0])


class Pair:
    """The same view as a NumPy array and as an NDArray (sharing nothing)."""

    def __init__(self, np_view: np.ndarray, nd_view: nd.NDArray, how: str):
        self.np, self.nd, self.how = np_view, nd_view, how
        assert nd_view.shape == np_view.shape, how


def _values(rng: np.random.Generator, shape: tuple, dtype: str, specials: bool) -> np.ndarray:
    """Small integers (sums and products stay exact), with NaN, ±inf and -0.0 sprinkled in
    for floats when ``specials``."""
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    values = rng.integers(-4, 5, shape).astype(dtype)
    if dtype in FLOATS and specials and values.size:
        where = rng.random(shape) < 0.15
        values[where] = rng.choice(SPECIALS, int(where.sum()))
    return values


def random_view(rng, device, dtype, shape=None, specials=True) -> Pair:
    """A random strided view of ``shape`` (random when None): a bigger array sliced with
    steps and offsets, its axes permuted, one maybe flipped (a negative stride), and some
    axes broadcast from length 1 or added in front (stride 0)."""
    if shape is None:
        shape = tuple(int(n) for n in rng.integers(0, 4, rng.integers(0, 4)))
    source = tuple(1 if rng.random() < 0.2 else n for n in shape)
    source = source[int(rng.integers(0, len(source) + 1)) if rng.random() < 0.2 else 0 :]
    steps = [int(rng.integers(1, 3)) for _ in source]
    starts = [int(rng.integers(0, 2)) for _ in source]
    base = _values(rng, tuple(s + n * k for s, n, k in zip(starts, source, steps)), dtype, specials)
    index = tuple(slice(s, s + n * k, k) for s, n, k in zip(starts, source, steps))
    np_view, nd_view = base[index], nd.array(base, device=device, dtype=dtype)[index]
    how = [f"base {base.shape}[{index}]"]
    if len(source) > 1 and rng.random() < 0.5:  # a permuted view of the transposed source
        axes = tuple(int(a) for a in rng.permutation(len(source)))
        inverse = tuple(int(a) for a in np.argsort(axes))
        base_view = np_view.transpose(axes).copy()
        np_view = base_view.transpose(inverse)
        nd_view = nd.array(base_view, device=device, dtype=dtype).permute(inverse)
        how.append(f"permute {inverse} of a compact {base_view.shape}")
    if source and rng.random() < 0.5:
        axis = int(rng.integers(len(source)))
        np_view, nd_view = np.flip(np_view, axis), _flipped_view(nd_view, axis)
        how.append(f"flip view {axis}")
    if source != shape:
        np_view, nd_view = np.broadcast_to(np_view, shape), nd_view.broadcast_to(shape)
        how.append(f"broadcast {source} to {shape}")
    return Pair(np_view, nd_view, ", ".join(how))


def _flipped_view(view: nd.NDArray, axis: int) -> nd.NDArray:
    """A view of ``view`` reversed along ``axis``: a negative stride from a moved offset."""
    strides = list(view.strides)
    offset = view._offset + max(view.shape[axis] - 1, 0) * strides[axis]
    strides[axis] = -strides[axis]
    return nd.NDArray.make(view.shape, tuple(strides), view.device, view._handle, offset)


def check(got: nd.NDArray, expected, what: str, exact: bool = True) -> None:
    expected = np.asarray(expected)
    result = got.numpy()
    assert result.shape == expected.shape, f"{what}: shape {result.shape} != {expected.shape}"
    assert result.dtype == expected.dtype, f"{what}: dtype {result.dtype} != {expected.dtype}"
    if exact or expected.dtype.kind != "f":
        np.testing.assert_array_equal(result, expected, err_msg=what)
    else:
        tol = 1e-5 if expected.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(result, expected, rtol=tol, atol=tol, err_msg=what)


def _broadcast_partner(rng, device, dtype, a: Pair) -> Pair:
    """A random view whose shape broadcasts with ``a``'s (trailing axes, some set to 1)."""
    shape = a.np.shape[int(rng.integers(0, a.np.ndim + 1)) :]
    return random_view(rng, device, dtype, tuple(1 if rng.random() < 0.3 else n for n in shape))


# ----- the operations ------------------------------------------------------------------------

BINARY = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "maximum": None,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}


def _binary(name, a, b):
    if name == "maximum":
        return nd.maximum(a.nd, b.nd), np.maximum(a.np, b.np)
    fn = BINARY[name]
    expected = fn(a.np, b.np)
    if name in COMPARISONS:  # the course's rule: 1/0 in the common dtype
        expected = expected.astype(np.result_type(a.np, b.np))
    return fn(a.nd, b.nd), expected


def op_binary(rng, device, dtype):
    a = random_view(rng, device, dtype)
    other = str(rng.choice(DTYPES)) if rng.random() < 0.3 else dtype
    b = _broadcast_partner(rng, device, other, a)
    if rng.random() < 0.5:
        a, b = b, a
    names = [n for n in BINARY if not (n in "+-" and "bool" in (a.nd.dtype, b.nd.dtype))]
    for name in names:
        got, expected = _binary(name, a, b)
        check(got, expected, f"{a.how} {name} {b.how}")


def op_scalar(rng, device, dtype):
    a = random_view(rng, device, dtype)
    scalars = [2, -1, True, 0.5, -0.0] + ([np.nan, np.inf] if dtype in FLOATS else [])
    for c in scalars:
        for name, fn in BINARY.items():
            if dtype == "bool" and name in "+-" or name == "maximum":
                continue
            for got, expected in ((fn(a.nd, c), fn(a.np, c)), (fn(c, a.nd), fn(c, a.np))):
                if name in COMPARISONS:  # with a scalar: 1/0 in the array's dtype
                    expected = np.asarray(expected).astype(dtype)
                elif dtype in FLOATS:  # a scalar never changes a float array's dtype
                    expected = np.asarray(expected).astype(dtype)
                check(got, expected, f"{a.how} {name} {c!r}")
        check(
            nd.maximum(a.nd, c),
            np.asarray(np.maximum(a.np, c)).astype(
                dtype if dtype in FLOATS else np.result_type(a.np, c)
            ),
            f"maximum({a.how}, {c!r})",
        )


def op_unary(rng, device, dtype):
    a = random_view(rng, device, dtype)
    if dtype != "bool":
        check(-a.nd, -a.np, f"-({a.how})")
    if dtype in FLOATS:
        for name in ("log", "exp", "tanh"):
            check(getattr(a.nd, name)(), getattr(np, name)(a.np), f"{name}({a.how})", False)
        check(a.nd**2.0, a.np ** np.array(2.0, dtype), f"({a.how}) ** 2", False)
        b = _broadcast_partner(rng, device, dtype, a)
        check(a.nd / b.nd, a.np / b.np, f"{a.how} / {b.how}", False)


def op_reduce(rng, device, dtype):
    a = random_view(rng, device, dtype, specials=rng.random() < 0.5)
    ndim = a.np.ndim
    axes = (
        None
        if rng.random() < 0.3
        else tuple(int(x) for x in rng.permutation(ndim)[: int(rng.integers(0, ndim + 1))])
    )
    keepdims = bool(rng.random() < 0.5)
    what = f"reduce({a.how}, axis={axes}, keepdims={keepdims})"
    expected = a.np.sum(axis=axes, keepdims=keepdims)
    if dtype in ("int32", "bool"):
        expected = expected.astype(np.int64)
    check(a.nd.sum(axis=axes, keepdims=keepdims), expected, "sum " + what, exact=False)
    reduced = range(ndim) if axes is None else axes
    if all(a.np.shape[i] for i in reduced):
        check(
            a.nd.max(axis=axes, keepdims=keepdims),
            a.np.max(axis=axes, keepdims=keepdims),
            "max " + what,
        )
    else:
        with pytest.raises(ValueError, match="empty reduction"):
            a.nd.max(axis=axes, keepdims=keepdims)


def op_matmul(rng, device, dtype):
    if dtype not in FLOATS:
        return
    m, n, p = (int(x) for x in rng.integers(0, 5, 3))
    batch = [(), (2,), (0,), (1, 2)][int(rng.integers(4))]
    a = random_view(rng, device, dtype, batch + (m, n), specials=False)
    b = random_view(
        rng, device, dtype, (n, p) if rng.random() < 0.5 else batch + (n, p), specials=False
    )
    expected = np.matmul(a.np, b.np)
    check(a.nd @ b.nd, expected, f"({a.how}) @ ({b.how})", False)
    check(nd.matmul(a.nd, b.nd), expected, f"matmul({a.how}, {b.how})", False)


def op_setitem(rng, device, dtype):
    shape = tuple(int(n) for n in rng.integers(1, 5, rng.integers(1, 4)))
    target_np = _values(rng, shape, dtype, True)
    target_nd = nd.array(target_np, device=device, dtype=dtype)
    index = tuple(slice(int(rng.integers(0, n)), None, int(rng.integers(1, 3))) for n in shape)
    view_shape = target_np[index].shape
    value = random_view(
        rng,
        device,
        str(rng.choice(DTYPES)),
        tuple(1 if rng.random() < 0.3 else n for n in view_shape),
    )
    target_np[index] = value.np
    target_nd[index] = value.nd
    check(target_nd, target_np, f"a[{index}] = {value.how}")
    mismatched = tuple(reversed(view_shape))
    if len(set(mismatched) - {1}) > 1 and mismatched != view_shape:  # same count, no broadcast
        with pytest.raises(ValueError, match="does not broadcast"):
            target_nd[index] = random_view(rng, device, dtype, mismatched).nd


def op_layout(rng, device, dtype):
    a = random_view(rng, device, dtype, specials=False)
    check(a.nd, a.np, a.how)
    check(a.nd.compact(), a.np, f"compact({a.how})")
    to = str(rng.choice(DTYPES))
    check(a.nd.astype(to), a.np.astype(to), f"astype({a.how}, {to})")
    check(a.nd.reshape((a.np.size,)), a.np.reshape(-1), f"reshape({a.how})")
    if a.np.ndim:  # np.pad refuses the empty padding of a 0-d array
        pads = tuple((int(rng.integers(0, 2)), int(rng.integers(0, 2))) for _ in a.np.shape)
        check(nd.pad(a.nd, pads), np.pad(a.np, pads), f"pad({a.how}, {pads})")
        axes = tuple(
            int(x) for x in rng.permutation(a.np.ndim)[: int(rng.integers(1, a.np.ndim + 1))]
        )
        check(nd.flip(a.nd, axes), np.flip(a.np, axes), f"flip({a.how}, {axes})")


OPERATIONS = [op_binary, op_scalar, op_unary, op_reduce, op_matmul, op_setitem, op_layout]


def run_case(device, dtype: str, seed: int) -> None:
    """Every operation on fresh random views drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):  # NumPy's reference warns on NaN, 0/0, log(-1)
        for operation in OPERATIONS:
            operation(rng, device, dtype)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_fuzz_against_numpy(device, dtype, seed):
    run_case(device, dtype, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 3000))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_fuzz_against_numpy_long(device, dtype, seed):
    run_case(device, dtype, seed)
