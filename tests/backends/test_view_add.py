"""``view += x`` on NDArray views (the ``ewise_add_setitem`` kernel) and the buffer pool.

``a[idx] += b`` on a strided view adds in place with one walk (col2im in the conv input
gradient does this K·K times); the results must equal NumPy's, including the cases that
must not take the one-walk path (repeated positions, aliasing, mixed dtypes).
"""

from __future__ import annotations

import numpy as np
import pytest

from needle import backend_ndarray as nd


@pytest.fixture
def device(nd_device):
    """Every NDArray device (conftest), under either backend."""
    return nd_device


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "index",
    [
        (slice(None, None, 2), slice(None), slice(1, 5, 2)),  # steps
        (slice(1, 4), slice(2, 7), slice(None)),  # a window
        (slice(None, None, 3), 2, slice(None, None, 4)),  # an int keeps its axis (length 1)
    ],
)
def test_view_add_matches_numpy(device, dtype, index):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 7, 5)).astype(dtype)
    a = nd.array(x, device=device, dtype=dtype)
    np_index = tuple(slice(i, i + 1) if isinstance(i, int) else i for i in index)
    y = rng.standard_normal(x[np_index].shape).astype(dtype)
    handle = a._handle
    a[index] += nd.array(y, device=device, dtype=dtype)
    x[np_index] += y
    np.testing.assert_array_equal(a.numpy(), x)
    assert a._handle is handle  # in place


def test_view_add_broadcasts_and_reads_strided_values(device):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    src = rng.standard_normal((3, 6)).astype(np.float32)
    a = nd.array(x, device=device)
    s = nd.array(src, device=device)
    a[::2, 1:4] += s[:1, ::2]  # (1, 3) broadcast over 2 rows; the source is a view too
    x[::2, 1:4] += src[:1, ::2]
    np.testing.assert_array_equal(a.numpy(), x)


def test_view_add_of_its_own_buffer_reads_before_writing(device):
    x = np.arange(10.0, dtype=np.float32)
    a = nd.array(x, device=device)
    a[1:] += a[:-1]  # overlapping: NumPy reads all of a[:-1] first
    x[1:] += x[:-1].copy()
    np.testing.assert_array_equal(a.numpy(), x)


def test_view_with_repeated_positions_adds_like_the_assignment(device):
    """A zero-stride view names one element several times: the sum is computed first and
    written (the last write wins), never accumulated once per repeat."""
    base = nd.array(np.zeros((3, 1)), device=device)
    view = base.broadcast_to((3, 4))
    view += nd.array(np.ones((3, 4)), device=device)
    np.testing.assert_array_equal(base.numpy(), np.ones((3, 1)))


def test_view_add_with_another_dtype_promotes_then_casts(device):
    a = nd.array(np.zeros((4, 4)), device=device, dtype="float32")
    a[::2, ::2] += nd.array(np.full((2, 2), 1 / 3), device=device, dtype="float64")
    expected = np.zeros((4, 4), np.float32)
    expected[::2, ::2] = np.float32(1 / 3)
    np.testing.assert_array_equal(a.numpy(), expected)


def test_assigning_a_view_to_itself_changes_nothing(device):
    x = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    a = nd.array(x, device=device)
    a[:, 1:3] = a[:, 1:3]
    a[::2] = a[::2]
    np.testing.assert_array_equal(a.numpy(), x)


KERNELS = [
    pytest.param(d.mod, id=d.name)
    if d.enabled() and hasattr(d.mod, "ewise_add_setitem")
    else pytest.param(None, id=d.name, marks=pytest.mark.skip(reason=f"{d}: no kernel"))
    for d in (nd.cpu(), nd.cpu_numpy())
]


@pytest.mark.parametrize("mod", KERNELS)
def test_kernel_adds_into_the_view_and_checks_its_range(mod):
    out = mod.Array(12, "float64")
    mod.from_numpy(np.arange(12.0), out)
    a = mod.Array(4, "float64")
    mod.from_numpy(np.array([10.0, 20.0, 30.0, 40.0]), a)
    mod.ewise_add_setitem(a, out, (2, 2), (-6, 2), 7)  # elements 7, 9, 1, 3
    expected = np.arange(12.0)
    expected[[7, 9, 1, 3]] += [10, 20, 30, 40]
    np.testing.assert_array_equal(mod.to_numpy(out, (12,), (1,), 0), expected)
    with pytest.raises(ValueError, match="ewise_add_setitem"):
        mod.ewise_add_setitem(a, out, (2, 2), (6, 2), 7)  # reaches element 15
    with pytest.raises(ValueError, match="ewise_add_setitem"):
        mod.ewise_add_setitem(a, out, (3, 2), (2, 1), 0)  # a has 4 elements, the view 6
    with pytest.raises(TypeError, match="dtype"):
        mod.ewise_add_setitem(mod.Array(4, "float32"), out, (2, 2), (2, 1), 0)


def test_large_buffers_are_reused_and_can_be_released():
    cpu = pytest.importorskip("needle.backend_ndarray.ndarray_backend_cpu")
    cpu.release_cached_buffers()
    size = 1 << 19  # 2 MiB of float32: above the pool's 1 MiB threshold
    first = cpu.Array(size)
    address = first.ptr()
    del first
    assert cpu.cached_buffer_bytes() == 4 * size
    again = cpu.Array(size)
    assert again.ptr() == address and cpu.cached_buffer_bytes() == 0
    del again
    small = cpu.Array(1000)  # small buffers never enter the pool
    del small
    assert cpu.cached_buffer_bytes() == 4 * size
    assert cpu.release_cached_buffers() == 4 * size and cpu.cached_buffer_bytes() == 0
