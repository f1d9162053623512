"""The NDArray (needle.backend_ndarray): layout, views, operators and errors, on every device.

NumPy is the reference everywhere. These tests run under either NEEDLE_BACKEND: the
package imports with or without the compiled module.
"""

import copy
import pickle

import numpy as np
import pytest

from needle import backend_ndarray as nd

DEVICES = [
    pytest.param(d, id=d.name)
    if d.enabled()
    else pytest.param(d, id=d.name, marks=pytest.mark.skip(reason=f"{d} is not enabled here"))
    for d in nd.all_devices()
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def _arr(x, device, dtype="float32"):
    return nd.array(np.asarray(x), device=device, dtype=dtype)


def _close(a, expected, tol=1e-6):
    got = a.numpy() if isinstance(a, nd.NDArray) else np.asarray(a)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


# ----- devices ---------------------------------------------------------------------------------


def test_device_reprs_and_equality():
    assert repr(nd.cpu()) == str(nd.cpu()) == "cpu()"
    assert repr(nd.cuda()) == "cuda()" and repr(nd.cpu_numpy()) == "cpu_numpy()"
    assert nd.cpu_numpy() == nd.BackendDevice("cpu_numpy", None)
    assert nd.cpu() != nd.cpu_numpy() and (nd.cpu() == "cpu") is False
    assert hash(nd.cpu_numpy()) == hash("cpu_numpy")
    assert [d.name for d in nd.all_devices()] == ["cpu", "cuda", "cpu_numpy"]


def test_default_device_is_the_compiled_cpu_when_it_imports():
    expected = nd.cpu() if nd.cpu().enabled() else nd.cpu_numpy()
    assert nd.default_device() == expected


def test_device_forwards_module_attributes_including_dunders():
    d = nd.cpu_numpy()
    assert d.__device_name__ == "numpy" and d.matmul is nd.ndarray_backend_numpy.matmul
    assert not hasattr(d, "no_such_kernel") and not hasattr(d, "__tile_size__")
    assert not hasattr(nd.BackendDevice("cuda", None), "Array")
    clone = copy.copy(d)
    assert clone == d and pickle.loads(pickle.dumps(d)) == d


def test_disabled_device_factories_raise_runtime_error():
    off = nd.BackendDevice("cuda", None, "no GPU found")
    assert not off.enabled()
    with pytest.raises(RuntimeError, match=r"cuda\(\) is not available in this build: no GPU"):
        off.zeros(2)
    if not nd.cuda().enabled():
        with pytest.raises(RuntimeError, match="not available"):
            nd.array([1.0], device=nd.cuda())


def test_factories(device):
    assert device.empty((2, 3)).shape == (2, 3)
    _close(device.full((2,), 7.5), [7.5, 7.5])
    _close(device.zeros(2, 3), np.zeros((2, 3)))
    _close(device.ones(2, dtype="float64"), np.ones(2))
    assert device.ones(2, dtype="float64").dtype == "float64"
    _close(device.one_hot(3, np.array([[2, 0]])), np.eye(3)[[[2, 0]]])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        device.one_hot(3, np.array([3]))


def test_random_draws_match_numpy_global_generator(device):
    np.random.seed(5)
    expected = np.random.rand(2, 3).astype(np.float32), np.random.randn(4).astype(np.float32)
    np.random.seed(5)
    got = device.rand(2, 3), device.randn(4)
    np.testing.assert_array_equal(got[0].numpy(), expected[0])
    np.testing.assert_array_equal(got[1].numpy(), expected[1])
    assert device.rand().shape == ()


# ----- construction, layout, dtype ----------------------------------------------------------


def test_construction_copies_and_converts(device):
    source = np.arange(6, dtype=np.int64).reshape(2, 3).T  # int and transposed
    a = nd.NDArray(source, device=device)
    assert a.dtype == "float32" and a.dtype == np.float32 and a.dtype == np.dtype("float32")
    np.testing.assert_array_equal(a.numpy(), source)
    assert nd.NDArray(3.5, device=device).shape == ()
    b = nd.NDArray(a)
    assert b._handle is not a._handle and b.device == device
    assert nd.NDArray(a, dtype="float64").dtype == "float64"
    assert nd.array([True, False], device=device).numpy().tolist() == [1.0, 0.0]
    assert nd.array([1, 2], dtype=None, device=device).dtype == "float32"


def test_construction_works_for_subclasses_overriding_getitem(device):
    class Sub(nd.NDArray):
        def __getitem__(self, idx):
            raise AssertionError("the constructor must not index")

    s = Sub(np.ones((2, 2)), device=device)
    assert isinstance(s, Sub) and s.shape == (2, 2)


@pytest.mark.parametrize("bad", ["uint8", "int16", np.float16, "complex64", object])
def test_unsupported_dtypes_raise_type_error(bad, device):
    with pytest.raises(TypeError, match="use float32, float64, int32, int64 or bool"):
        nd.array([1.0], dtype=bad, device=device)


@pytest.mark.parametrize("bad", [["a", "b"], [[1, 2], [3]], {"x": 1}])
def test_non_numeric_or_ragged_data_raises_type_error(bad, device):
    with pytest.raises((TypeError, ValueError)):
        nd.array(bad, device=device)


def test_make_and_compact_strides(device):
    assert nd.NDArray.compact_strides((4, 5, 6)) == (30, 6, 1)
    assert nd.NDArray.compact_strides(()) == ()
    a = nd.NDArray.make((2, 3), device=device)
    assert a.strides == (3, 1) and a._offset == 0 and a.is_compact()
    shared = nd.NDArray.make((3,), device=device, handle=a._handle, offset=3, dtype="float64")
    assert shared.dtype == "float32" and not shared.is_compact()  # the handle's dtype wins


def test_views_share_the_handle_and_is_compact_checks_the_size(device):
    a = _arr(np.arange(12).reshape(3, 4), device)
    views = [a[1:, ::2], a.permute((1, 0)), a.reshape((4, 3)), a.broadcast_to((2, 3, 4))]
    for view in views:
        assert view._handle is a._handle and view._handle.ptr() == a._handle.ptr()
    assert a.reshape((4, 3)).is_compact()
    element = a.flat[5:6]
    assert element.shape == (1,) and not element.is_compact()


def test_flat_of_a_compact_array_is_a_writable_view(device):
    a = _arr([[1.0, 2.0], [3.0, 4.0]], device)
    flat = a.flat
    flat[2] = 10.0
    _close(a, [[1.0, 2.0], [10.0, 4.0]])


def test_as_strided_builds_the_tiled_layout_and_checks_bounds(device):
    a = _arr(np.arange(16).reshape(4, 4), device)
    tiled = a.as_strided((2, 2, 2, 2), (8, 2, 4, 1)).compact()
    expected = np.arange(16).reshape(2, 2, 2, 2).transpose(0, 2, 1, 3)
    _close(tiled, expected)
    with pytest.raises(ValueError, match="buffer of 16"):
        a.as_strided((5, 4), (4, 1))


def test_broadcast_to_gives_zero_strides(device):
    a = _arr(np.ones((1, 3, 4)), device)
    assert a.broadcast_to((6, 3, 4)).strides == (0, 4, 1)
    assert a.broadcast_to((2, 6, 3, 4)).strides == (0, 0, 4, 1)
    with pytest.raises(ValueError, match=r"\(1, 3, 4\) to \(1, 2, 4\)"):
        a.broadcast_to((1, 2, 4))


def test_reshape_rules(device):
    a = _arr(np.arange(6), device)
    assert a.reshape((2, -1)).shape == (2, 3) and a.reshape([3, 2]).shape == (3, 2)
    transposed = a.reshape((2, 3)).permute((1, 0))
    copy_ = transposed.reshape((6,))
    assert copy_._handle is not a._handle
    _close(copy_, np.arange(6).reshape(2, 3).T.reshape(6))
    with pytest.raises(ValueError, match=r"\(6,\) \(6 elements\) to \(4, 2\)"):
        a.reshape((4, 2))
    with pytest.raises(ValueError, match="-1"):
        a.reshape((-1, -1))


def test_permute_errors(device):
    a = _arr(np.ones((2, 3)), device)
    _close(a.permute((-1, 0)), np.ones((3, 2)))
    for bad in [(0,), (0, 0), (0, 2)]:
        with pytest.raises(ValueError):
            a.permute(bad)


# ----- indexing ----------------------------------------------------------------------------------


def test_int_index_keeps_its_dimension(device):
    a = _arr(np.arange(16).reshape(4, 4), device)
    assert a[1, 0].shape == (1, 1) and a[1, 0].item() == 4.0
    assert a[-1].shape == (1, 4)
    _close(a[-1], np.arange(12, 16).reshape(1, 4))


def test_process_slice_is_public_and_rounds_lengths_up(device):
    a = _arr(np.arange(6), device)
    assert a.process_slice(slice(None, None, None), 0) == slice(0, 6, 1)
    assert a.process_slice(slice(-2, 100, 2), 0) == slice(4, 6, 2)
    assert a.process_slice(slice(5, 1), 0) == slice(5, 5, 1)
    assert a[::2].shape == (3,) and a.reshape((6,))[1:5:2].shape == (2,)
    assert a[4:2].shape == (0,)


def test_index_errors(device):
    a = _arr(np.ones((2, 3)), device)
    with pytest.raises(IndexError, match="out of range for axis 1 of size 3"):
        a[0, 3]
    with pytest.raises(IndexError, match="too many indices"):
        a[0, 0, 0]
    with pytest.raises(ValueError, match="flip"):
        a[::-1]
    for bad in [None, Ellipsis, 1.5, np.array([0, 1]), [0]]:
        with pytest.raises(TypeError, match="only ints and slices"):
            a[bad]


def test_setitem_in_place_with_arrays_scalars_and_numpy(device):
    a = _arr(np.zeros((3, 4)), device)
    handle, strides = a._handle, a.strides
    a[0, :] = 1.0
    a[1:, 1:3] = _arr([[2.0], [3.0]], device)  # broadcast
    a[2:, :] = np.arange(4)  # a NumPy value
    a[:, 3] = _arr([7, 8, 9], device)  # NumPy's shape of a[:, 3] is (3,)
    expected = np.zeros((3, 4))
    expected[0, :] = 1
    expected[1:, 1:3] = [[2.0], [3.0]]
    expected[2:, :] = np.arange(4)
    expected[:, 3] = [7, 8, 9]
    _close(a, expected)
    assert a._handle is handle and a.strides == strides
    with pytest.raises(ValueError, match=r"shape \(5,\) .* view of\s+shape \(1, 4\)"):
        a[0, :] = _arr(np.ones(5), device)
    with pytest.raises(ValueError, match=r"shape \(3,\) .* view of\s+shape \(3, 1\)"):
        a[:, 3:] = _arr([7, 8, 9], device)  # the same count, but NumPy refuses it too


def test_overlapping_setitem_copies_the_source_first(device):
    a = _arr(np.arange(6), device)
    a[1:6] = a[0:5]
    expected = np.arange(6.0)
    expected[1:6] = expected[0:5].copy()
    _close(a, expected)


# ----- elementwise -------------------------------------------------------------------------------


def test_binary_operators_and_comparisons(device, rng):
    x, y = rng.standard_normal((2, 3)), rng.standard_normal((3,))
    y[1] = x[0, 1]  # one equal pair
    a, b = _arr(x, device), _arr(y, device)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    _close(a + b, x32 + y32)
    _close(a - b, x32 - y32)
    _close(2 - a, 2 - x32)
    _close(a * b, x32 * y32)
    _close(a / b, x32 / y32, 1e-5)
    _close(3 / a, np.float32(3) / x32, 1e-5)
    _close(-a, -x32)
    _close(a.maximum(b), np.maximum(x32, y32))
    _close(a.maximum(0.1), np.maximum(x32, np.float32(0.1)))
    for name, ref in [
        ("__eq__", np.equal),
        ("__ne__", np.not_equal),
        ("__gt__", np.greater),
        ("__ge__", np.greater_equal),
        ("__lt__", np.less),
        ("__le__", np.less_equal),
    ]:
        got = getattr(a, name)(b)
        assert got.dtype == "float32", name
        _close(got, ref(x32, y32).astype(np.float32))


def test_scalars_are_cast_to_the_array_dtype_before_comparing(device):
    x = np.array([0.1, 0.2], dtype=np.float32)
    a = _arr(x, device)
    assert (a == a[1:].item()).numpy().tolist() == [0.0, 1.0]
    assert (a >= float(x[1])).numpy().tolist() == [0.0, 1.0]


def test_power_is_c_pow(device):
    a = _arr([-2.0, 0.0, 4.0], device)
    got = (a**5.0).numpy()
    assert got.tolist() == [-32.0, 0.0, 1024.0]
    assert np.isnan((a**0.5).numpy()[0]) and (a**0).numpy().tolist() == [1.0, 1.0, 1.0]
    exponents = np.array([[2.0], [1.0]])
    _close(a ** _arr(exponents, device), np.array([-2.0, 0.0, 4.0]) ** exponents)


def test_unary_functions(device, rng):
    x = np.abs(rng.standard_normal((3, 2))).astype(np.float32) + 0.1
    a = _arr(x, device)
    _close(nd.log(a), np.log(x), 1e-6)
    _close(nd.exp(a), np.exp(x), 1e-6)
    _close(nd.tanh(a), np.tanh(x), 1e-6)


def test_mixed_dtypes_promote_and_scalars_never_change_the_dtype(device):
    a32, a64 = _arr([1.0], device), _arr([1.0], device, "float64")
    assert (a32 + a64).dtype == "float64" and (a64 * a32).dtype == "float64"
    assert (a32 * np.float64(2.0)).dtype == "float32" and (a32 + 2).dtype == "float32"


def test_elementwise_errors(device):
    a = _arr(np.ones((2, 3)), device)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\)"):
        a + _arr(np.ones(4), device)
    with pytest.raises(TypeError, match="nd.array"):
        a + np.ones((2, 3))
    with pytest.raises(TypeError, match="nd.array"):
        np.ones((2, 3)) + a
    with pytest.raises(TypeError, match="str"):
        a * "x"
    other = [d for d in nd.all_devices() if d.enabled() and d != device]
    if other:
        with pytest.raises(ValueError, match=rf"{device}.*{other[0]}.*\.to\("):
            a + _arr(np.ones((2, 3)), other[0])


def test_in_place_operators_write_the_buffer(device):
    a = _arr([1.0, 2.0], device)
    handle = a._handle
    a += 1
    a *= _arr([2.0, 3.0], device)
    a -= 1
    a /= 2
    _close(a, [1.5, 4.0])
    assert a._handle is handle
    out = _arr([0.0, 0.0], device)
    assert nd.multiply(a, 2, out=out) is out
    _close(out, [3.0, 8.0])


def test_equality_makes_arrays_unhashable_and_bool_needs_one_element(device):
    a = _arr([1.0, 2.0], device)
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(a == a)
    assert bool(a[1:] == 2.0)


# ----- matmul, reductions, flip, pad ----------------------------------------------------------


@pytest.mark.parametrize(
    "shapes",
    [
        ((3, 4), (4, 5)),
        ((8, 16), (16, 8)),
        ((1, 1), (1, 1)),
        ((2, 3, 4), (4, 2)),
        ((2, 1, 3, 4), (5, 4, 2)),
        ((0, 3), (3, 2)),
    ],
)
def test_matmul_matches_numpy(shapes, device, rng):
    x, y = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    got = _arr(x, device) @ _arr(y, device)
    _close(got, x.astype(np.float32) @ y.astype(np.float32), 1e-5)
    assert got.is_compact()


def test_matmul_of_views_and_errors(device, rng):
    x = rng.standard_normal((8, 8))
    a = _arr(x, device)
    _close(a.permute((1, 0)) @ a[::2, :].permute((1, 0)), (x.T @ x[::2].T).astype(np.float32), 1e-5)
    with pytest.raises(ValueError, match=r"\(8, 8\) and \(3, 2\)"):
        a @ _arr(np.ones((3, 2)), device)
    with pytest.raises(ValueError, match=">= 2 dimensions"):
        a @ _arr(np.ones(8), device)


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (2, 0), (), [1]])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_have_numpy_shapes(axis, keepdims, device, rng):
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    a = _arr(x, device)
    np_axis = tuple(axis) if isinstance(axis, list) else axis
    _close(a.sum(axis=axis, keepdims=keepdims), x.sum(axis=np_axis, keepdims=keepdims), 1e-5)
    _close(a.max(axis=axis, keepdims=keepdims), x.max(axis=np_axis, keepdims=keepdims))


def test_reduction_edge_cases(device):
    assert _arr(np.ones((4, 5, 6)), device).sum(axis=1, keepdims=True).shape == (4, 1, 6)
    assert _arr(np.zeros((0, 3)), device).sum().item() == 0.0
    _close(_arr(np.zeros((0, 3)), device).sum(axis=0), np.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        _arr(np.zeros((0, 3)), device).max()
    for bad in [(0, 0), 3, -4]:
        with pytest.raises(ValueError):
            _arr(np.ones((2, 3, 4)), device).sum(axis=bad)


def test_flip_and_pad_leave_the_input_unchanged(device, rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    a = _arr(x, device)
    _close(a.flip((0, 2)), np.flip(x, (0, 2)))
    _close(nd.flip(a[:, 1:, ::2], -1), np.flip(x[:, 1:, ::2], -1))
    _close(a.pad(((0, 0), (1, 2), (0, 1))), np.pad(x, ((0, 0), (1, 2), (0, 1))))
    assert a.pad(((0, 0),) * 3)._handle is not a._handle
    _close(a, x)
    with pytest.raises(ValueError, match="repeated"):
        a.flip((0, 0))
    with pytest.raises(ValueError, match=r"\(before, after\)"):
        a.pad(((0, 0), (1, -1), (0, 0)))
    with pytest.raises(ValueError, match=r"\(before, after\)"):
        a.pad(((0, 0),))


# ----- conversion --------------------------------------------------------------------------------


def test_numpy_is_an_independent_copy_of_any_layout(device):
    a = _arr(np.arange(6).reshape(2, 3), device)
    view = a.flip(1)[:, ::2].permute((1, 0))
    got = view.numpy()
    assert got.flags.c_contiguous and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.flip(np.arange(6).reshape(2, 3), 1)[:, ::2].T)
    first = a.numpy()
    a[0, 0] = 100.0
    assert first[0, 0] == 0.0
    assert np.asarray(a).shape == (2, 3) and _arr(5.0, device).numpy().shape == ()
    np.testing.assert_array_equal(a.broadcast_to((2, 2, 3)).numpy()[1], a.numpy())


def test_fill_to_astype_copy_item_len(device):
    a = _arr(np.zeros((2, 3)), device)
    a[:, 1:2].fill(5.0)
    _close(a, [[0, 5, 0], [0, 5, 0]])
    assert a.to(device) is a and a.astype("float64").dtype == "float64"
    assert a.astype("float32", copy=False) is a and a.copy()._handle is not a._handle
    assert a[0, 1].item() == 5.0 and len(a) == 2
    with pytest.raises(ValueError, match="one-element"):
        a.item()
    with pytest.raises(TypeError, match="0-d"):
        len(_arr(1.0, device))
    for other in nd.all_devices():
        if other.enabled():
            moved = a.to(other)
            assert moved.device == other and moved.dtype == a.dtype
            _close(moved, a.numpy())


def test_repr_str_pickle_deepcopy(device):
    a = _arr([1.0, 2.0], device, "float64")
    assert repr(a) == f"NDArray([1. 2.], device={device})" and str(a) == "[1. 2.]"
    for clone in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
        assert clone.dtype == "float64" and clone.device == device
        _close(clone, [1.0, 2.0])


# ----- module functions --------------------------------------------------------------------------


def test_numpy_named_module_functions(device, rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    a = _arr(x, device)
    assert nd.asarray(a) is a and nd.asarray(a, dtype="float64").dtype == "float64"
    _close(nd.swapaxes(a, 0, 1), x.T)
    _close(nd.transpose(a), x.T)
    _close(nd.transpose(_arr(np.ones((2, 3, 4)), device), (1, 2, 0)), np.ones((3, 4, 2)))
    _close(nd.stack([a, a + 1], axis=1), np.stack([x, x + 1], axis=1))
    _close(nd.matmul(a, nd.transpose(a)), x @ x.T, 1e-5)
    _close(nd.power(a, 2), x**2, 1e-6)
    _close(nd.pad(a, ((1, 0), (0, 0))), np.pad(x, ((1, 0), (0, 0))))
    _close(nd.max(a, axis=1), x.max(axis=1))
    _close(nd.sum(a, 0, keepdims=True), x.sum(0, keepdims=True), 1e-6)
    _close(nd.clip(a, -0.5, 0.5), np.clip(x, -0.5, 0.5))
    _close(nd.sqrt(nd.zeros_like(a) + 4), np.full((2, 3), 2.0))
    assert nd.zeros((2,), device=device).device == device
    assert nd.full_like(a, -nd.inf, shape=(1,)).numpy().tolist() == [-np.inf]
    assert nd.prod([]) == 1 and nd.prod((2, 3)) == 6


# ----- fused kernels (project extras): every module against the NumPy module ---------------------

NP_MODULE = nd.ndarray_backend_numpy


def _handle(values, device):
    return nd.array(values, device=device).compact()._handle


def _values(handle, device, shape):
    return nd.NDArray.make(shape, device=device, handle=handle).numpy()


def _needs(device, name):
    if not hasattr(device, name):
        pytest.skip(f"{device} has no {name} kernel in this build")


@pytest.mark.parametrize("name", ["sgd_update", "adam_update"])
def test_fused_optimizer_kernels_match_the_numpy_module_bit_for_bit(device, name, rng):
    _needs(device, name)
    shape = (7, 5)
    p, g, s1, s2 = (rng.standard_normal(shape).astype(np.float32) for _ in range(4))
    scalars = (
        (0.1, 0.9, 0.01)
        if name == "sgd_update"
        else (0.01, 0.8, 0.99, 1e-8, 0.1, 1 - 0.8**3, 1 - 0.99**3)
    )
    slots = (s1,) if name == "sgd_update" else (s1, np.abs(s2))
    results = []
    for dev, module in ((device, device.mod), (nd.cpu_numpy(), NP_MODULE)):
        # two parameters in one call: the kernels take a list per argument
        handles = [[_handle(a, dev), _handle(a[:3] * 2, dev)] for a in (p, g, *slots)]
        outs = [nd.NDArray.make(shape, device=dev), nd.NDArray.make((3, 5), device=dev)]
        getattr(module, name)(*handles, [o._handle for o in outs], *scalars)
        results.append(
            [o.numpy() for o in outs]
            + [_values(h[0], dev, shape) for h in handles[2:]]
            + [_values(h[1], dev, (3, 5)) for h in handles[2:]]
        )
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)
    for module in (device.mod, NP_MODULE):
        dev = device if module is device.mod else nd.cpu_numpy()
        lists = [[_handle(a, dev)] for a in (p, g, *slots)]
        out = [nd.NDArray.make(shape, device=dev)._handle]
        small = [nd.NDArray.make((3,), device=dev)._handle]
        run = getattr(module, name)
        before = [_values(h[0], dev, shape) for h in lists[2:]]
        for bad, match in [
            ((small, *lists[1:], out), "3 elements|size"),
            ((*lists, out + out), "differ in length"),
            ((lists[0], [None], *lists[2:], out), "None"),
            ((*lists, [None]), "None"),
        ]:
            with pytest.raises((ValueError, TypeError), match=match):
                run(*bad, *scalars)
        for h, was in zip(lists[2:], before):  # a refused call updates no state
            np.testing.assert_array_equal(_values(h[0], dev, shape), was)


def test_fused_batchnorm_kernels_match_the_numpy_module(device, rng):
    _needs(device, "batchnorm_forward")
    n, d = 6, 4
    x, w, b, g = (rng.standard_normal(s).astype(np.float32) for s in [(n, d), d, d, (n, d)])
    results = []
    for dev, module in ((device, device.mod), (nd.cpu_numpy(), NP_MODULE)):
        outs = [nd.NDArray.make(s, device=dev) for s in [(n, d), (n, d), (d,), (d,), (d,)]]
        module.batchnorm_forward(
            *(_handle(a, dev) for a in (x, w, b)), *(o._handle for o in outs), n, d, 1e-5
        )
        grads = [nd.NDArray.make(s, device=dev) for s in [(n, d), (d,), (d,)]]
        module.batchnorm_backward(
            _handle(g, dev),
            outs[1]._handle,
            _handle(w, dev),
            outs[4]._handle,
            *(o._handle for o in grads),
            n,
            d,
        )
        results.append([o.numpy() for o in outs + grads])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    mean, var = x.mean(axis=0), x.var(axis=0)
    np.testing.assert_allclose(
        results[0][0], (x - mean) / np.sqrt(var + 1e-5) * w + b, rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError):
        device.mod.batchnorm_forward(
            *(_handle(a, device) for a in (x, w, b)),
            *(nd.NDArray.make((2,), device=device)._handle for _ in range(5)),
            n,
            d,
            1e-5,
        )


def _run_layernorm(dev, module, x, w, b, g):
    n, d = x.shape
    outs = [nd.NDArray.make(s, device=dev) for s in [(n, d), (n, d), (n,)]]
    module.layernorm_forward(
        *(_handle(a, dev) for a in (x, w, b)), *(o._handle for o in outs), n, d, 1e-5
    )
    grads = [nd.NDArray.make(s, device=dev) for s in [(n, d), (d,), (d,)]]
    module.layernorm_backward(
        _handle(g, dev),
        outs[1]._handle,
        _handle(w, dev),
        outs[2]._handle,
        *(o._handle for o in grads),
        n,
        d,
    )
    return [o.numpy() for o in outs + grads]


@pytest.mark.parametrize("n, d", [(6, 4), (1, 9), (17, 3), (3, 1)])
def test_fused_layernorm_kernels_match_the_numpy_module_and_formula(device, n, d, rng):
    _needs(device, "layernorm_forward")
    x, w, b, g = (rng.standard_normal(s).astype(np.float32) for s in [(n, d), d, d, (n, d)])
    got = _run_layernorm(device, device.mod, x, w, b, g)
    want = _run_layernorm(nd.cpu_numpy(), NP_MODULE, x, w, b, g)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)
    # independent float64 reference: the layer and its gradients by hand
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    mean, var = x64.mean(axis=1, keepdims=True), x64.var(axis=1, keepdims=True)
    xhat = (x64 - mean) / np.sqrt(var + 1e-5)
    gx = g64 * w64
    grad_x = (gx - gx.mean(1, keepdims=True) - xhat * (gx * xhat).mean(1, keepdims=True)) / np.sqrt(
        var + 1e-5
    )
    for a, e in zip(
        got,
        [
            xhat * w64 + b,
            xhat,
            (1 / np.sqrt(var + 1e-5)).reshape(-1),
            grad_x,
            (g64 * xhat).sum(0),
            g64.sum(0),
        ],
    ):
        np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-4)


def test_fused_layernorm_kernels_reject_bad_sizes(device):
    _needs(device, "layernorm_forward")
    small = [nd.NDArray.make((2,), device=device)._handle for _ in range(6)]
    with pytest.raises(ValueError, match="layernorm_forward"):
        device.mod.layernorm_forward(*small, 3, 4, 1e-5)
    with pytest.raises(ValueError, match="layernorm_forward"):
        device.mod.layernorm_forward(*small, 2, 0, 1e-5)
    with pytest.raises(ValueError, match="layernorm_backward"):
        device.mod.layernorm_backward(*small[:1], *small, 3, 4)


def _run_softmax_loss(dev, module, logits, labels):
    n, k = logits.shape
    grad, loss = nd.NDArray.make((n, k), device=dev), nd.NDArray.make((), device=dev)
    module.softmax_cross_entropy(_handle(logits, dev), labels, grad._handle, loss._handle, n, k)
    return loss.numpy(), grad.numpy()


@pytest.mark.parametrize("n, k", [(5, 7), (1, 1), (3, 10_000), (9, 2)])
def test_softmax_cross_entropy_kernel_matches_numpy(device, n, k, rng):
    _needs(device, "softmax_cross_entropy")
    logits = (rng.standard_normal((n, k)) * 5).astype(np.float32)
    labels = rng.integers(0, k, n)
    loss, grad = _run_softmax_loss(device, device.mod, logits, labels)
    mirror = _run_softmax_loss(nd.cpu_numpy(), NP_MODULE, logits, labels)
    np.testing.assert_allclose(loss, mirror[0], rtol=1e-6)
    np.testing.assert_allclose(grad, mirror[1], rtol=1e-4, atol=1e-7)
    wide = logits.astype(np.float64)
    logsumexp = np.log(np.exp(wide - wide.max(1, keepdims=True)).sum(1)) + wide.max(1)
    np.testing.assert_allclose(loss, (logsumexp - wide[np.arange(n), labels]).mean(), rtol=1e-5)
    softmax = np.exp(wide - logsumexp[:, None])
    np.testing.assert_allclose(grad, (softmax - np.eye(k)[labels]) / n, rtol=1e-5, atol=1e-6)


def test_softmax_cross_entropy_kernel_clips_minus_infinity(device):
    _needs(device, "softmax_cross_entropy")
    logits = np.array([[0.0, -np.inf], [-np.inf, 0.0]], dtype=np.float32)
    loss, grad = _run_softmax_loss(device, device.mod, logits, np.array([1, 1]))
    assert np.isfinite(loss) and loss > 1e37  # the -inf target logit counts as the lowest float
    np.testing.assert_array_equal(grad, [[0.5, -0.5], [0, 0]])  # (softmax - one_hot) / n


def test_softmax_cross_entropy_kernel_rejects_bad_labels(device):
    _needs(device, "softmax_cross_entropy")
    logits = np.zeros((2, 3), dtype=np.float32)
    for labels, match in [
        ([0, 3], r"ids\[1\] = 3 is out of range"),
        ([-1, 0], r"ids\[0\] = -1 is out of range"),
        ([0, 1, 2], "3 labels for 2 rows"),
    ]:
        with pytest.raises(ValueError, match=match):
            _run_softmax_loss(device, device.mod, logits, np.array(labels, dtype=np.int64))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("keep", [0.9, 0.5, 1.0])
def test_dropout_kernel_is_the_float32_array_expression(device, keep, dtype, rng):
    _needs(device, "dropout")
    u = rng.random(1000)
    u[:3] = keep  # the boundary: u <= keep keeps the element
    u[3] = np.nextafter(np.float32(keep), 2) - 1e-12  # above keep, rounds to it in float32: kept
    x = rng.standard_normal(1000).astype(dtype)
    mask, out = (nd.NDArray.make((1000,), device=device, dtype=dtype) for _ in "mo")
    device.mod.dropout(
        u, nd.array(x, device=device, dtype=dtype)._handle, mask._handle, out._handle, keep
    )
    keep32 = np.float32(keep)
    expected = ((u.astype(np.float32) <= keep32).astype(np.float32) / keep32).astype(dtype)
    np.testing.assert_array_equal(mask.numpy(), expected)
    np.testing.assert_array_equal(out.numpy(), x * expected)
    # the draws as the course's float32 rand would make them, and its array expression
    draws = nd.array(u, device=device)
    np.testing.assert_array_equal(mask.numpy(), ((draws <= keep) / keep).numpy().astype(dtype))


def test_dropout_kernel_rejects_bad_arguments(device):
    _needs(device, "dropout")
    x, mask, out = (nd.NDArray.make((10,), device=device) for _ in "xmo")
    for u, keep, error, match in [
        (np.zeros(10), 0.0, ValueError, "keep must be in"),
        (np.zeros(10), 1.5, ValueError, "keep must be in"),
        (np.zeros(9), 0.5, ValueError, "9 draws for 10 elements"),
        (np.zeros(10, dtype=np.float32), 0.5, TypeError, "float64"),
        (np.zeros(20)[::2], 0.5, TypeError, "C-contiguous"),
    ]:
        with pytest.raises(error, match=match):
            device.mod.dropout(u, x._handle, mask._handle, out._handle, keep)
    with pytest.raises(ValueError, match="dropout"):
        device.mod.dropout(
            np.zeros(10),
            nd.NDArray.make((9,), device=device)._handle,
            mask._handle,
            out._handle,
            0.5,
        )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_backward_kernel_is_the_gradient_times_the_ndarrays_mask(device, dtype, rng):
    _needs(device, "relu_backward")
    a = rng.standard_normal(1000).astype(dtype)
    g = rng.standard_normal(1000).astype(dtype)
    # the edges: 0, -0, NaN, the least normal in a; a negative, infinite and NaN g where a <= 0
    a[:7] = [0.0, -0.0, np.nan, np.finfo(dtype).tiny, -1.0, -1.0, -2.0]
    g[4:7] = [-3.0, np.inf, np.nan]
    out = nd.NDArray.make((1000,), device=device, dtype=dtype)
    array, grad = nd.array(a, device=device, dtype=dtype), nd.array(g, device=device, dtype=dtype)
    device.mod.relu_backward(grad._handle, array._handle, out._handle)
    with np.errstate(invalid="ignore"):
        expected = g * (a > 0).astype(dtype)
    np.testing.assert_array_equal(out.numpy(), expected)  # bits too: -0.0 for g = -3
    assert np.signbit(out.numpy()[4]) and np.isnan(out.numpy()[5])
    np.testing.assert_array_equal(out.numpy(), (grad * (array > 0)).numpy())  # the NDArray's ops
    with pytest.raises(ValueError, match="relu_backward"):
        device.mod.relu_backward(grad[:10].compact()._handle, array._handle, out._handle)


@pytest.mark.parametrize("ids", [[2, 0, 2, 4], [1], [], [3] * 7])
def test_row_gather_and_scatter_add_kernels_match_numpy(device, ids, rng):
    _needs(device, "take_rows")
    table = rng.standard_normal((5, 3)).astype(np.float32)
    ids = np.array(ids, dtype=np.int64)
    out = nd.NDArray.make((ids.size, 3), device=device)
    device.mod.take_rows(_handle(table, device), ids, out._handle, 5, 3)
    np.testing.assert_array_equal(out.numpy(), table[ids])
    rows = rng.standard_normal((ids.size, 3)).astype(np.float32)
    summed = nd.NDArray.make((5, 3), device=device)
    device.mod.add_rows(_handle(rows, device), ids, summed._handle, 5, 3)
    expected = np.zeros((5, 3), dtype=np.float32)
    np.add.at(expected, ids, rows)  # repeated ids accumulate, in order
    np.testing.assert_array_equal(summed.numpy(), expected)


@pytest.mark.parametrize("bad", [5, -1, 2**40])
def test_row_kernels_reject_ids_outside_the_table(device, bad):
    _needs(device, "take_rows")
    table = _handle(np.zeros((5, 3), dtype=np.float32), device)
    ids = np.array([0, bad], dtype=np.int64)
    out = nd.NDArray.make((2, 3), device=device)._handle
    with pytest.raises(ValueError, match=rf"take_rows: ids\[1\] = {bad} is out of range for 5"):
        device.mod.take_rows(table, ids, out, 5, 3)
    with pytest.raises(ValueError, match=rf"add_rows: ids\[1\] = {bad} is out of range for 5"):
        device.mod.add_rows(out, ids, table, 5, 3)
    with pytest.raises(ValueError, match="take_rows"):  # out of the wrong size
        device.mod.take_rows(table, ids[:1], out, 5, 3)


def _run_lstm_cell(dev, module, pre, c, grad_h, grad_c):
    batch, hidden = c.shape
    fwd = [nd.NDArray.make(s, device=dev) for s in [pre.shape, c.shape, c.shape, c.shape]]
    module.lstm_cell_forward(
        _handle(pre, dev), _handle(c, dev), *(o._handle for o in fwd), batch, hidden
    )
    bwd = [nd.NDArray.make(s, device=dev) for s in [pre.shape, c.shape]]
    module.lstm_cell_backward(
        _handle(grad_h, dev),
        _handle(grad_c, dev),
        _handle(c, dev),
        fwd[0]._handle,
        fwd[3]._handle,
        *(o._handle for o in bwd),
        batch,
        hidden,
    )
    return [o.numpy() for o in fwd + bwd]


@pytest.mark.parametrize("batch, hidden", [(3, 5), (1, 1), (16, 100)])
def test_lstm_cell_kernels_match_the_numpy_module_and_formula(device, batch, hidden, rng):
    _needs(device, "lstm_cell_forward")
    pre = (rng.standard_normal((batch, 4 * hidden)) * 4).astype(np.float32)
    pre[0, 0] = -100.0  # far out on both sides: the overflow-safe sigmoid
    pre[0, -1] = 100.0
    c, grad_h, grad_c = (rng.standard_normal((batch, hidden)).astype(np.float32) for _ in range(3))
    got = _run_lstm_cell(device, device.mod, pre, c, grad_h, grad_c)
    mirror = _run_lstm_cell(nd.cpu_numpy(), NP_MODULE, pre, c, grad_h, grad_c)
    for a, e in zip(got, mirror):  # NumPy's float32 exp/tanh may differ from libm's by an ulp
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    # an independent float64 reference by hand
    p = pre.astype(np.float64).reshape(batch, 4, hidden)
    sig = 1 / (1 + np.exp(-p))
    i, f, g, o = sig[:, 0], sig[:, 1], np.tanh(p[:, 2]), sig[:, 3]
    c_new = f * c + i * g
    total = grad_c + grad_h * o * (1 - np.tanh(c_new) ** 2)
    grad_pre = np.stack(
        [
            total * g * i * (1 - i),
            total * c * f * (1 - f),
            total * i * (1 - g * g),
            grad_h * np.tanh(c_new) * o * (1 - o),
        ],
        1,
    )
    act = np.stack([i, f, g, o], 1).reshape(batch, -1)
    for a, e in zip(
        got,
        [act, o * np.tanh(c_new), c_new, np.tanh(c_new), grad_pre.reshape(batch, -1), total * f],
    ):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


def test_lstm_cell_kernels_reject_bad_sizes(device):
    _needs(device, "lstm_cell_forward")
    h = [nd.NDArray.make((6,), device=device)._handle for _ in range(7)]
    with pytest.raises(ValueError, match="lstm_cell_forward"):
        device.mod.lstm_cell_forward(*h[:6], 2, 3)
    with pytest.raises(ValueError, match="lstm_cell_backward"):
        device.mod.lstm_cell_backward(*h, 2, 3)


@pytest.mark.parametrize(
    "batch, m, n, p", [(3, 2, 4, 5), (1, 1, 1, 1), (0, 2, 2, 2), (64, 20, 32, 20)]
)
def test_matmul_batched_kernel_matches_numpy(device, batch, m, n, p, rng):
    _needs(device, "matmul_batched")
    a = rng.standard_normal((batch, m, n)).astype(np.float32)
    b = rng.standard_normal((batch, n, p)).astype(np.float32)
    out = nd.NDArray.make((batch, m, p), device=device)
    device.mod.matmul_batched(_handle(a, device), _handle(b, device), out._handle, batch, m, n, p)
    np.testing.assert_allclose(out.numpy(), a @ b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="matmul_batched"):
        device.mod.matmul_batched(
            _handle(a, device), _handle(b, device), out._handle, batch + 1, m, n, p
        )


def test_batched_matmul_of_transposed_views_matches_numpy(device, rng):
    a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    got = nd.matmul(_arr(a, device), nd.swapaxes(_arr(b, device), 2, 3))
    np.testing.assert_allclose(got.numpy(), a @ np.swapaxes(b, 2, 3), rtol=1e-5, atol=1e-5)
    got = nd.matmul(_arr(a[0], device), nd.swapaxes(_arr(b, device), 2, 3))  # broadcast
    np.testing.assert_allclose(got.numpy(), a[0] @ np.swapaxes(b, 2, 3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, cols", [(5, 3), (1, 4), (17, 1), (0, 3)])
def test_row_sum_and_row_add_kernels_match_numpy(device, rows, cols, rng):
    _needs(device, "reduce_sum_rows")
    a = rng.standard_normal((rows, cols)).astype(np.float32)
    row = rng.standard_normal(cols).astype(np.float32)
    summed = nd.NDArray.make((cols,), device=device)
    device.mod.reduce_sum_rows(_handle(a, device), summed._handle, rows, cols)
    np.testing.assert_allclose(summed.numpy(), a.sum(axis=0), rtol=1e-5, atol=1e-6)
    out = nd.NDArray.make((rows, cols), device=device)
    device.mod.add_row(_handle(a, device), _handle(row, device), out._handle, rows, cols)
    np.testing.assert_array_equal(out.numpy(), a + row)
    with pytest.raises(ValueError, match="reduce_sum_rows"):
        device.mod.reduce_sum_rows(_handle(a, device), summed._handle, rows + 1, cols)
    with pytest.raises(ValueError, match="add_row"):
        device.mod.add_row(_handle(a, device), _handle(a, device), out._handle, rows, cols + 1)


def test_sum_over_leading_axes_gives_the_bits_of_the_transposed_reduction(rng):
    if not hasattr(nd.cpu(), "reduce_sum_rows"):
        pytest.skip("no compiled module")
    x = nd.array(rng.standard_normal((37, 4, 5)).astype(np.float32), device=nd.cpu())
    for axes in [(0,), (0, 1)]:
        kept = tuple(i for i in range(3) if i not in axes)
        transposed = x.permute(kept + axes).compact()  # what the reduction did before
        expected = nd.NDArray.make(tuple(x.shape[i] for i in kept), device=nd.cpu())
        nd.cpu().mod.reduce_sum(
            transposed._handle, expected._handle, int(np.prod([x.shape[i] for i in axes]))
        )
        np.testing.assert_array_equal(x.sum(axis=axes).numpy(), expected.numpy())
