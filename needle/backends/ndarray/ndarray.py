"""The strided ``NDArray``: shape, element strides and an offset over a flat device buffer.

An ``NDArray`` is pure Python bookkeeping; the arithmetic happens in a backend module
(``ndarray_backend_cpu`` compiled, ``ndarray_backend_numpy`` the NumPy reference,
``ndarray_backend_cuda`` optional) whose functions write into flat buffers. Views —
slices, ``permute``, ``broadcast_to``, ``reshape`` of a compact array — share the
buffer and only change ``(shape, strides, offset)``; element ``idx`` lives at
``handle[offset + Σ idx_d · strides_d]``.

>>> a = NDArray([[1.0, 2.0], [3.0, 4.0]], device=cpu_numpy())
>>> (a @ a).numpy().tolist()
[[7.0, 10.0], [15.0, 22.0]]
>>> a[1, :].shape                 # an int index keeps its dimension (course behaviour)
(1, 2)
"""

from __future__ import annotations

import builtins
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..._validation import MAX_ELEMENTS, check_indices, check_shape
from . import ndarray_backend_numpy
from .dtypes import (
    _BOOL,
    _DTYPES,
    _FLOAT32,
    _FLOAT64,
    _INT64,
    DType,
    _cast_scalar,
    _dtype,
    _is_float,
    _promoted,
    _scalar_value,
)
from .layout import (
    Shape,
    _broadcast_shape,
    _broadcasts_to,
    _check_view,
    _compact_strides,
    _distinct_elements,
    _normalize_axes,
    _numpy_index_shape,
    _resolve_reshape,
    prod,
)

# ----- backend modules ---------------------------------------------------------------------


def _import_compiled(name: str):
    """The compiled module ``name`` and None, or None and the import error's text."""
    try:
        module = __import__(f"{__package__}.{name}", fromlist=[name])
    except ImportError as error:  # not built (pure-Python install) or failed to load
        return None, f"{type(error).__name__}: {error}"
    return module, None


ndarray_backend_cpu, CPU_IMPORT_ERROR = _import_compiled("ndarray_backend_cpu")
ndarray_backend_cuda, _CUDA_IMPORT_ERROR = _import_compiled("ndarray_backend_cuda")

#: Fewer draws than this go through NumPy: below it the call costs more than the draws.
_COMPILED_DRAWS_FROM = 2048


def uniform_draws(shape: tuple[int, ...]) -> np.ndarray:
    """``np.random.rand(*shape)``: the same float64 draws from NumPy's global generator, left
    where that call leaves it. Large draws are made by the compiled module on the generator's
    own state (about four times faster than NumPy's legacy loop)."""
    bitgen = np.random.get_bit_generator()
    if math.prod(shape) < _COMPILED_DRAWS_FROM or not _compiled_draws_match(type(bitgen)):
        return np.random.rand(*shape)
    out = np.empty(shape)
    with bitgen.lock:
        ndarray_backend_cpu.mt19937_uniform(bitgen, out)
    return out


_DRAWS_CHECKED: dict[type, bool] = {}


def _compiled_draws_match(kind: type) -> bool:
    """Whether the compiled draws reproduce NumPy's for this kind of bit generator: only
    MT19937, and checked once per process on a private generator (NumPy's state layout is
    read in place, so a NumPy that changed it falls back to its own loop, never wrong draws)."""
    if kind not in _DRAWS_CHECKED:
        match = ndarray_backend_cpu is not None and kind is np.random.MT19937
        if match:
            reference, ours = np.random.RandomState(12345), np.random.MT19937()
            reference.bytes(4)  # one 32-bit word: a later draw's pair straddles a refill
            ours.state = reference.get_state(legacy=False)
            expected, got = reference.random_sample(700), np.empty(700)
            with ours.lock:
                ndarray_backend_cpu.mt19937_uniform(ours, got)
            ends = ours.state["state"], reference.get_state(legacy=False)["state"]
            match = (
                np.array_equal(expected, got)
                and ends[0]["pos"] == ends[1]["pos"]
                and np.array_equal(ends[0]["key"], ends[1]["key"])
            )
        _DRAWS_CHECKED[kind] = match
    return _DRAWS_CHECKED[kind]


def _cuda_module():
    """The CUDA module when it is built and a GPU is usable, else None and the reason."""
    if ndarray_backend_cuda is None:
        return None, f"the CUDA module is not built ({_CUDA_IMPORT_ERROR})"
    try:
        count = ndarray_backend_cuda.device_count()
    except Exception as error:  # a missing driver must not make cuda() raise
        return None, f"no usable GPU ({error})"
    return (ndarray_backend_cuda, None) if count > 0 else (None, "no GPU found")


# ----- devices -----------------------------------------------------------------------------


class BackendDevice:
    """A device: a name and the backend module that computes on it (None when disabled).

    Unknown attributes are looked up on the module, so ``device.matmul`` is its kernel
    and ``device.__tile_size__`` its tile size.

    >>> cpu_numpy(), cpu_numpy().enabled(), cpu_numpy() == cpu_numpy()
    (cpu_numpy(), True, True)
    """

    def __init__(self, name: str, mod: Any, reason: str = "") -> None:
        self.name = name
        self.mod = mod
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BackendDevice) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name + "()"

    __str__ = __repr__

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails; reading __dict__ directly keeps copy and
        # pickle (which probe attributes before mod is set) free of recursion.
        mod = self.__dict__.get("mod")
        if mod is None:
            raise AttributeError(f"device {self.__dict__.get('name', '?')}() has no {name!r}")
        return getattr(mod, name)

    def __reduce__(self):
        return (_device_named, (self.name,))

    def enabled(self) -> bool:
        """Whether arrays can be made on this device in this build."""
        return self.mod is not None

    def _check_enabled(self) -> None:
        if self.mod is None:
            raise RuntimeError(f"{self.name}() is not available in this build: {self.reason}")

    def rand(self, *shape: int, dtype: str = "float32") -> NDArray:
        """Uniform [0, 1) draws: ``np.random.rand(*shape)``'s (:func:`uniform_draws`), cast to
        ``dtype``."""
        self._check_enabled()
        return NDArray(uniform_draws(check_shape("rand", shape)), device=self, dtype=dtype)

    def randn(self, *shape: int, dtype: str = "float32") -> NDArray:
        """Standard normal draws: one ``np.random.randn(*shape)`` call, cast to ``dtype``."""
        self._check_enabled()
        return NDArray(np.random.randn(*check_shape("randn", shape)), device=self, dtype=dtype)

    def one_hot(self, n: int, i: Any, dtype: str = "float32") -> NDArray:
        """Rows of the n×n identity picked by integer labels ``i``: shape ``i.shape + (n,)``."""
        self._check_enabled()
        labels = check_indices("one_hot", "labels", i.numpy() if isinstance(i, NDArray) else i, n)
        return NDArray(np.eye(n, dtype=np.float32)[labels], device=self, dtype=dtype)

    def empty(self, shape: Shape, dtype: str = "float32") -> NDArray:
        """An uninitialised compact array of ``shape`` (a tuple)."""
        return self._allocate("empty", shape, dtype)

    def full(self, shape: Shape, fill_value: float, dtype: str = "float32") -> NDArray:
        """A compact array of ``shape`` (a tuple) with every element ``fill_value`` (cast to
        ``dtype`` as NumPy casts it)."""
        return self._filled("full", shape, fill_value, dtype)

    def zeros(self, *shape: int | Sequence[int], dtype: str = "float32") -> NDArray:
        """Zeros of ``shape``: ``zeros(2, 3)`` or ``zeros((2, 3))``."""
        return self._filled("zeros", _varargs_shape(shape), 0.0, dtype)

    def ones(self, *shape: int | Sequence[int], dtype: str = "float32") -> NDArray:
        """Ones of ``shape``: ``ones(2, 3)`` or ``ones((2, 3))``."""
        return self._filled("ones", _varargs_shape(shape), 1.0, dtype)

    def _allocate(self, owner: str, shape: Shape, dtype: Any) -> NDArray:
        """A new compact array; a bad shape or dtype raises an error naming ``owner``."""
        if (
            type(dtype) is DType
            and type(shape) is tuple
            and self.mod is not None
            and all(type(s) is int and s > 0 for s in shape)
            and math.prod(shape) <= MAX_ELEMENTS
        ):
            # the ops' and optimizers' calls (an array's own shape and dtype) skip the checks;
            # a zero takes the checked path, as it leaves the other dimensions unbounded
            return _empty(shape, self, dtype)
        self._check_enabled()
        return NDArray.make(check_shape(owner, shape), device=self, dtype=_dtype(dtype))

    def _filled(self, owner: str, shape: Shape, fill_value: Any, dtype: Any) -> NDArray:
        out = self._allocate(owner, shape, dtype)
        value = _cast_scalar(_scalar_value(owner, fill_value), out._dtype)
        out._device.mod.fill(out._handle, value)
        return out


def _varargs_shape(shape: tuple) -> Shape:
    """``zeros(2, 3)`` and ``zeros((2, 3))`` both mean shape (2, 3)."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def cpu() -> BackendDevice:
    """The compiled CPU device (disabled when the compiled module is missing)."""
    return _CPU


def cuda() -> BackendDevice:
    """The CUDA device; disabled (``enabled()`` False) without a build or a GPU. Never raises."""
    return _CUDA


def cpu_numpy() -> BackendDevice:
    """The NumPy-backed reference device: always available."""
    return _CPU_NUMPY


def default_device() -> BackendDevice:
    """``cpu()`` when the compiled module imports, else ``cpu_numpy()``."""
    return _CPU if _CPU.mod is not None else _CPU_NUMPY


def all_devices() -> list[BackendDevice]:
    """``[cpu(), cuda(), cpu_numpy()]``, enabled or not."""
    return [_CPU, _CUDA, _CPU_NUMPY]


_CPU = BackendDevice(
    "cpu",
    ndarray_backend_cpu,
    f"the compiled CPU module is missing ({CPU_IMPORT_ERROR}); run pip install -e .",
)
_CUDA = BackendDevice("cuda", *_cuda_module())
_CPU_NUMPY = BackendDevice("cpu_numpy", ndarray_backend_numpy)


def _device_named(name: str) -> BackendDevice:
    """The device called ``name`` (unpickling)."""
    for device in all_devices():
        if device.name == name:
            return device
    raise ValueError(f"unknown device {name!r}; expected one of cpu, cuda, cpu_numpy")


# ----- small helpers ----------------------------------------------------------------------


def _scalar_operands(array: NDArray, value: float | int | bool) -> tuple[NDArray, Any]:
    """NumPy's promotion of an integer or boolean array with a Python scalar: a float scalar
    makes it float64, an int makes a bool array int64; otherwise the dtype is kept."""
    if isinstance(value, bool):
        return array, value
    if isinstance(value, int):
        return (array.astype(_INT64) if array._dtype is _BOOL else array), value
    return array.astype(_FLOAT64), value


def _integer_with_scalar(array: NDArray, value: float | int | bool, kernel: str) -> NDArray:
    """``array (op) value`` for a compact integer or boolean array: computed in NumPy's
    promoted dtype; a comparison's 1/0 comes back in the array's own dtype."""
    a, value = _scalar_operands(array, value)
    out = _empty(a._shape, a._device, a._dtype)
    getattr(a._device.mod, kernel)(a._handle, value, out._handle)
    if kernel in ("scalar_eq", "scalar_ge") and out._dtype is not array._dtype:
        return out.astype(array._dtype)
    return out


def _require_float(owner: str, *arrays: NDArray) -> None:
    """A TypeError for an integer or boolean operand of a floating-point computation."""
    for array in arrays:
        if not _is_float(array._dtype):
            raise TypeError(
                f"NDArray {owner}: needs float32 or float64 arrays, got {array._dtype}; convert "
                f"with astype('float32')"
            )


# ----- the array ----------------------------------------------------------------------------


class NDArray:
    """An n-dimensional strided view of a flat buffer on a device.

    ``NDArray(other, device=None, dtype=None)`` copies ``other`` (an NDArray, a NumPy
    array, a list or a scalar) into a new compact array; ``dtype=None`` keeps an
    NDArray's dtype and makes float32 from anything else.

    >>> x = NDArray([[1, 2, 3]], device=cpu_numpy())
    >>> x.shape, x.strides, x.dtype
    ((1, 3), (3, 1), 'float32')
    """

    # _dtype mirrors the handle's dtype and _compact caches is_compact() (None: not yet
    # known): a layout never changes after creation, and both are asked for on every op.
    __slots__ = (
        "_shape",
        "_strides",
        "_offset",
        "_device",
        "_handle",
        "_dtype",
        "_compact",
        "__weakref__",
    )
    _shape: Shape
    _strides: Shape
    _offset: int
    _device: BackendDevice
    _handle: Any  # the device module's flat Array (compiled or NumPy)
    _dtype: DType
    _compact: bool | None
    # NumPy defers `numpy_array + nd_array` to our reflected operators (which explain).
    __array_ufunc__ = None

    def __init__(self, other: Any, device: BackendDevice | None = None, dtype: Any = None):
        if isinstance(other, NDArray):
            source = _copy_ndarray(other, device, dtype)
        else:
            source = _from_numpy(_numeric_numpy(other), device, dtype)
        _adopt(self, source)

    # ----- construction -------------------------------------------------------------------
    @staticmethod
    def make(
        shape: Sequence[int],
        strides: Sequence[int] | None = None,
        device: BackendDevice | None = None,
        handle: Any = None,
        offset: int = 0,
        dtype: Any = "float32",
    ) -> NDArray:
        """An array over ``handle`` (a new uninitialised buffer when None), without ``__init__``.

        Strides default to the compact ones and device to :func:`default_device`; a
        given handle is shared and its dtype wins. A view reaching outside the buffer
        raises ValueError here, before any operation can read past it.
        """
        shape = check_shape("make", shape)
        device = default_device() if device is None else device
        if handle is None and strides is None:
            device._check_enabled()
            return _empty(shape, device, _dtype(dtype))
        strides = _compact_strides(shape) if strides is None else tuple(strides)
        if handle is None:
            device._check_enabled()
            handle = device.mod.Array(prod(shape), _dtype(dtype))
        _check_view("make", shape, strides, offset, handle.size)
        array = object.__new__(NDArray)
        array._shape, array._strides, array._offset = shape, strides, int(offset)
        array._device = device
        array._handle = handle
        array._dtype = _DTYPES[handle.dtype]
        array._compact = None
        return array

    @staticmethod
    def compact_strides(shape: Sequence[int]) -> Shape:
        """Row-major strides in elements: ``(4, 5, 6)`` → ``(30, 6, 1)``."""
        return _compact_strides(tuple(shape))

    # ----- properties ---------------------------------------------------------------------
    @property
    def shape(self) -> Shape:
        return self._shape

    @property
    def strides(self) -> Shape:
        return self._strides

    @property
    def device(self) -> BackendDevice:
        return self._device

    @property
    def dtype(self) -> DType:
        """``"float32"`` or ``"float64"`` (equal to the NumPy dtype too)."""
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return prod(self._shape)

    # ----- layout -------------------------------------------------------------------------
    def is_compact(self) -> bool:
        """Row-major strides over exactly the whole buffer from its first element."""
        compact = self._compact
        if compact is None:
            compact = self._compact = (
                self._offset == 0
                and self._strides == _compact_strides(self._shape)
                and prod(self._shape) == self._handle.size
            )
        return compact

    def compact(self) -> NDArray:
        """``self`` when compact, else a compact copy."""
        if self.is_compact():
            return self
        out = _empty(self._shape, self._device, self._dtype)
        self._device.mod.compact(
            self._handle, out._handle, self._shape, self._strides, self._offset
        )
        return out

    def as_strided(self, shape: Sequence[int], strides: Sequence[int]) -> NDArray:
        """A view with ``shape`` and ``strides`` over the same buffer and offset."""
        shape, strides = check_shape("as_strided", shape), tuple(strides)
        _check_view("as_strided", shape, strides, self._offset, self._handle.size)
        return self._view(shape, strides, self._offset)

    def _view(self, shape: Shape, strides: Shape, offset: int) -> NDArray:
        view = object.__new__(NDArray)
        view._shape, view._strides, view._offset = shape, strides, offset
        view._device, view._handle, view._dtype = self._device, self._handle, self._dtype
        view._compact = None
        return view

    @property
    def flat(self) -> NDArray:
        """``reshape((size,))``: a writable view for a compact array, else a copy."""
        return self.reshape((self.size,))

    def reshape(self, new_shape: Sequence[int]) -> NDArray:
        """The same elements in ``new_shape`` (one -1 allowed); a view when compact."""
        shape = _resolve_reshape(self._shape, new_shape)
        if shape == self._shape and self.is_compact():
            return self._view(shape, self._strides, 0)
        source = self.compact()
        return source._view(shape, _compact_strides(shape), 0)

    def permute(self, new_axes: Sequence[int]) -> NDArray:
        """A view with the axes reordered: ``shape[i] = old_shape[new_axes[i]]``."""
        ndim = len(self._shape)
        axes = _normalize_axes("permute", tuple(new_axes), ndim) if ndim else tuple(new_axes)
        if len(axes) != ndim:
            raise ValueError(
                f"permute: {tuple(new_axes)} is not a permutation of the {ndim} axes of "
                f"shape {self._shape}"
            )
        return self._view(
            tuple(self._shape[i] for i in axes),
            tuple(self._strides[i] for i in axes),
            self._offset,
        )

    def broadcast_to(self, new_shape: Sequence[int]) -> NDArray:
        """A view of ``new_shape`` (NumPy's rule); broadcast dimensions get stride 0."""
        new_shape = tuple(new_shape)
        if new_shape == self._shape:
            return self
        return self._broadcast_view(check_shape("broadcast_to", new_shape))

    def _broadcast_view(self, new_shape: Shape) -> NDArray:
        """:meth:`broadcast_to` for a ``new_shape`` known to be valid (the operators'
        common shapes), without checking it again on every operation."""
        if new_shape == self._shape:
            return self
        lead = len(new_shape) - len(self._shape)
        if lead < 0:
            raise ValueError(f"broadcast_to: cannot broadcast {self._shape} to {new_shape}")
        strides = [0] * lead
        for old, new, stride in zip(self._shape, new_shape[lead:], self._strides):
            if old == new:
                strides.append(stride)
            elif old == 1:
                strides.append(0)
            else:
                raise ValueError(
                    f"broadcast_to: cannot broadcast {self._shape} to {new_shape}; "
                    f"each dimension must match or be 1"
                )
        return self._view(new_shape, tuple(strides), self._offset)

    # ----- indexing -----------------------------------------------------------------------
    def process_slice(self, sl: slice, dim: int) -> slice:
        """``sl`` on axis ``dim`` as a slice with 0 ≤ start ≤ stop ≤ n and step ≥ 1.

        The slice selects the elements NumPy would; a step ≤ 0 raises ValueError.
        """
        n = self._shape[dim]
        step = 1 if sl.step is None else sl.step
        if not isinstance(step, numbers.Integral) or step <= 0:
            raise ValueError(
                f"NDArray index: slice step must be a positive int, got {sl.step!r}; "
                f"to reverse an axis use flip(a, axis)"
            )
        start, stop, _ = slice(sl.start, sl.stop, 1).indices(n)
        return slice(start, builtins.max(start, stop), int(step))

    def __getitem__(self, idxs: Any) -> NDArray:
        shape, strides, offset = self._index(idxs)
        return self._view(shape, strides, offset)

    def _index(self, idxs: Any) -> tuple[Shape, Shape, int]:
        if not isinstance(idxs, tuple):
            idxs = (idxs,)
        ndim = len(self._shape)
        if len(idxs) > ndim:
            raise IndexError(
                f"NDArray index: too many indices ({len(idxs)}) for a {ndim}-d array of shape "
                f"{self._shape}"
            )
        shape, strides, offset = [], [], self._offset
        for dim, idx in enumerate(idxs + (slice(None),) * (ndim - len(idxs))):
            stride = self._strides[dim]
            if isinstance(idx, slice):
                sl = self.process_slice(idx, dim)
                shape.append((sl.stop - sl.start + sl.step - 1) // sl.step)
                strides.append(stride * sl.step)
                offset += sl.start * stride
            elif isinstance(idx, numbers.Integral) and not isinstance(idx, bool):
                n, idx = self._shape[dim], int(idx)
                if not -n <= idx < n:
                    raise IndexError(
                        f"NDArray index: {idx} is out of range for axis {dim} of size {n}"
                    )
                shape.append(1)  # an int keeps its dimension (course behaviour)
                strides.append(stride)
                offset += (idx % n) * stride
            else:
                raise TypeError(
                    f"NDArray index: only ints and slices are supported, got "
                    f"{type(idx).__name__} {idx!r} (no arrays, masks, None or ...)"
                )
        return tuple(shape), tuple(strides), offset

    def __setitem__(self, idxs: Any, other: Any) -> None:
        shape, strides, offset = self._index(idxs)
        mod = self._device.mod
        if isinstance(other, np.ndarray):
            other = NDArray(other, device=self._device, dtype=self.dtype)
        if not isinstance(other, NDArray):
            value = _cast_scalar(_scalar_value("setitem", other), self._dtype)
            mod.scalar_setitem(prod(shape), value, self._handle, shape, strides, offset)
            return
        _check_devices("setitem", self, other)
        if other._handle is self._handle and (other._shape, other._strides, other._offset) == (
            shape,
            strides,
            offset,
        ):  # the view itself, e.g. after `a[idx] += b`: every element already holds its value
            return
        source = _setitem_source(other, shape, idxs)
        if source._handle is self._handle:  # overlapping memory: read everything first
            source = NDArray(source)
        elif source.dtype != self.dtype:
            source = source.astype(self.dtype)
        mod.ewise_setitem(source._handle, self._handle, shape, strides, offset)

    # ----- elementwise ----------------------------------------------------------------------
    def _binary(self, other: Any, ewise: str, scalar: str) -> NDArray:
        if isinstance(other, NDArray):
            if (
                self._shape == other._shape
                and self._dtype is other._dtype
                and self._device is other._device
            ):  # the common case: nothing to broadcast, promote or check
                a, b = self.compact(), other.compact()
            else:
                a, b = _common(ewise, self, other)
            out = _empty(a._shape, a._device, a._dtype)
            getattr(a._device.mod, ewise)(a._handle, b._handle, out._handle)
            return out
        value = _scalar_value(scalar, other)
        a = self.compact()
        if not _is_float(a._dtype):
            return _integer_with_scalar(a, value, scalar)
        out = _empty(a._shape, a._device, a._dtype)
        getattr(a._device.mod, scalar)(a._handle, value, out._handle)
        return out

    def _into(self, other: Any, out: NDArray, ewise: str, scalar: str) -> NDArray:
        """``self (op) other`` written into ``out`` (NumPy's ``out=``); returns ``out``.

        The kernel writes ``out``'s buffer directly when ``out`` is compact and of the
        result's shape and dtype; otherwise the result is computed and assigned.
        """
        b: NDArray | float | int | bool
        if isinstance(other, NDArray):
            a, b = _common(ewise, self, other)
        else:
            a, b = self.compact(), _scalar_value(scalar, other)
            if not _is_float(a._dtype):
                a, b = _scalar_operands(a, b)
        if not (out.is_compact() and out._shape == a._shape and out.dtype == a.dtype):
            out[(slice(None),) * out.ndim] = a._binary(b, ewise, scalar)
            return out
        _check_devices(ewise, a, out)
        if isinstance(b, NDArray):
            getattr(a._device.mod, ewise)(a._handle, b._handle, out._handle)
        else:
            getattr(a._device.mod, scalar)(a._handle, b, out._handle)
        return out

    def __iadd__(self, other: Any) -> NDArray:
        if _adds_in_place(self, other):  # a strided view: one walk instead of four passes
            source = _setitem_source(other, self._shape)
            self._device.mod.ewise_add_setitem(
                source._handle, self._handle, self._shape, self._strides, self._offset
            )
            return self
        return self._into(other, self, "ewise_add", "scalar_add")

    def __isub__(self, other: Any) -> NDArray:
        negated = -other if isinstance(other, NDArray) else -_scalar_value("subtract", other)
        return self._into(negated, self, "ewise_add", "scalar_add")

    def __imul__(self, other: Any) -> NDArray:
        return self._into(other, self, "ewise_mul", "scalar_mul")

    def __itruediv__(self, other: Any) -> NDArray:
        return self._into(other, self, "ewise_div", "scalar_div")

    def _unary(self, kernel: str) -> NDArray:
        _require_float(kernel[6:], self)
        a = self.compact()
        out = _empty(a._shape, a._device, a._dtype)
        getattr(a._device.mod, kernel)(a._handle, out._handle)
        return out

    def __add__(self, other: Any) -> NDArray:
        return self._binary(other, "ewise_add", "scalar_add")

    __radd__ = __add__

    def __sub__(self, other: Any) -> NDArray:
        if isinstance(other, NDArray):
            return self + (-other)
        return self + (-_scalar_value("subtract", other))

    def __rsub__(self, other: Any) -> NDArray:
        return (-self) + _scalar_value("subtract", other)

    def __mul__(self, other: Any) -> NDArray:
        return self._binary(other, "ewise_mul", "scalar_mul")

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> NDArray:
        _require_float("/", self, *([other] if isinstance(other, NDArray) else []))
        return self._binary(other, "ewise_div", "scalar_div")

    def __rtruediv__(self, other: Any) -> NDArray:
        _require_float("/", self)
        numerator = _scalar_value("rtruediv", other)
        return self._device.full(self._shape, numerator, dtype=self.dtype) / self

    def __neg__(self) -> NDArray:
        return self * -1

    def __pow__(self, other: Any) -> NDArray:
        _require_float("**", self, *([other] if isinstance(other, NDArray) else []))
        return self._binary(other, "ewise_power", "scalar_power")

    def maximum(self, other: Any) -> NDArray:
        """Elementwise maximum with an array (broadcast) or a scalar."""
        return self._binary(other, "ewise_maximum", "scalar_maximum")

    def __eq__(self, other: Any) -> NDArray:  # type: ignore[override]
        return self._binary(other, "ewise_eq", "scalar_eq")

    def __ge__(self, other: Any) -> NDArray:
        return self._binary(other, "ewise_ge", "scalar_ge")

    # The other comparisons are formed from == and >= and keep their dtype. None of them may
    # negate >= or >: a NaN operand makes every ordered comparison 0, and only != 1.
    def __ne__(self, other: Any) -> NDArray:  # type: ignore[override]
        return _logical_not(self == other)

    def __gt__(self, other: Any) -> NDArray:
        return (self >= other) * (self != other)

    def __lt__(self, other: Any) -> NDArray:
        if isinstance(other, NDArray):
            return other > self
        return _less_than_scalar(self, other, strict=True)

    def __le__(self, other: Any) -> NDArray:
        if isinstance(other, NDArray):
            return other >= self
        return _less_than_scalar(self, other, strict=False)

    __hash__ = None  # type: ignore[assignment]  # == returns an array

    def log(self) -> NDArray:
        """Natural logarithm elementwise."""
        return self._unary("ewise_log")

    def exp(self) -> NDArray:
        """Exponential elementwise."""
        return self._unary("ewise_exp")

    def tanh(self) -> NDArray:
        """Hyperbolic tangent elementwise."""
        return self._unary("ewise_tanh")

    # ----- matrix product -------------------------------------------------------------------
    def __matmul__(self, other: NDArray) -> NDArray:
        """``self @ other``; 2-D products whose sizes are multiples of the device's tile size
        take the course's tiled path. :func:`matmul` never does."""
        return _matmul("NDArray @", self, other, _matmul_2d)

    # ----- reductions -----------------------------------------------------------------------
    def sum(self, axis: Any = None, keepdims: bool = False) -> NDArray:
        """Sum over ``axis`` (None: all; an int; a tuple); NumPy's output shape and dtype
        (integers and bools sum to int64, as in NumPy and PyTorch)."""
        if not _is_float(self._dtype) and self._dtype is not _INT64:
            return self.astype(_INT64)._reduce(axis, keepdims, "reduce_sum")
        return self._reduce(axis, keepdims, "reduce_sum")

    def max(self, axis: Any = None, keepdims: bool = False) -> NDArray:
        """Maximum over ``axis``; an empty reduction raises ValueError."""
        return self._reduce(axis, keepdims, "reduce_max")

    def _reduce(self, axis: Any, keepdims: bool, kernel: str) -> NDArray:
        shape = self._shape
        axes = _normalize_axes(kernel[7:], axis, len(shape))
        if not axes:
            return self.copy()
        kept = tuple(i for i in range(len(shape)) if i not in axes)
        reduce_size = prod(shape[i] for i in axes)
        if reduce_size == 0 and kernel == "reduce_max":
            raise ValueError(f"max: empty reduction over axes {axes} of shape {shape}")
        out = _empty(tuple(shape[i] for i in kept), self._device, self._dtype)
        mod = self._device.mod
        if (
            kernel == "reduce_sum"
            and kept
            and axes == tuple(range(len(axes)))
            and _is_float(self._dtype)
            and hasattr(mod, "reduce_sum_rows")
        ):
            # leading axes: sum the rows in place instead of compacting a transposed copy
            mod.reduce_sum_rows(self.compact()._handle, out._handle, reduce_size, out.size)
        else:
            order = kept + axes
            source = self if order == tuple(range(len(shape))) else self.permute(order)
            getattr(mod, kernel)(source.compact()._handle, out._handle, reduce_size)
        if keepdims:
            kept_shape = tuple(1 if i in axes else s for i, s in enumerate(shape))
            return out._view(kept_shape, _compact_strides(kept_shape), 0)
        return out

    # ----- flip and pad ---------------------------------------------------------------------
    def flip(self, axes: Any) -> NDArray:
        """A new array reversed along ``axes`` (np.flip)."""
        axes = _normalize_axes("flip", axes, self.ndim)
        strides, offset = list(self._strides), self._offset
        for axis in axes:
            offset += (self._shape[axis] - 1) * strides[axis]
            strides[axis] = -strides[axis]
        flipped = self._view(self._shape, tuple(strides), offset)
        return NDArray(flipped) if flipped.is_compact() else flipped.compact()

    def pad(self, axes: Sequence[tuple[int, int]]) -> NDArray:
        """A new zero-filled array with ``(before, after)`` zeros around each dimension."""
        pairs = [tuple(p) for p in axes] if len(axes) == self.ndim else None
        if pairs is None or any(
            len(p) != 2 or not all(isinstance(x, numbers.Integral) and x >= 0 for x in p)
            for p in pairs
        ):
            raise ValueError(
                f"pad: expected one (before, after) pair of ints >= 0 per dimension of shape "
                f"{self._shape}, got {axes!r}"
            )
        shape = tuple(s + b + e for s, (b, e) in zip(self._shape, pairs))
        out = self._device.full(shape, 0.0, dtype=self.dtype)
        out[tuple(slice(b, b + s) for s, (b, _) in zip(self._shape, pairs))] = self
        return out

    # ----- conversion -----------------------------------------------------------------------
    def fill(self, value: float) -> None:
        """Set every element of this array (only this view's elements) to ``value``."""
        self._device.mod.scalar_setitem(
            self.size,
            _cast_scalar(_scalar_value("fill", value), self._dtype),
            self._handle,
            self._shape,
            self._strides,
            self._offset,
        )

    def to(self, device: BackendDevice) -> NDArray:
        """``self`` on the same device, else a copy on ``device`` (same dtype)."""
        return self if device == self._device else NDArray(self, device=device)

    def numpy(self) -> np.ndarray:
        """A new, independent, C-contiguous NumPy array of this dtype."""
        return self._device.mod.to_numpy(self._handle, self._shape, self._strides, self._offset)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.numpy()
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype: Any, copy: bool = True) -> NDArray:
        """A compact copy in ``dtype`` (``self`` when ``copy=False`` and nothing changes)."""
        dtype = _dtype(dtype)
        if not copy and dtype == self.dtype:
            return self
        return NDArray(self, dtype=dtype)

    def copy(self) -> NDArray:
        """A compact copy."""
        return NDArray(self)

    def item(self) -> float | int | bool:
        """The value of a one-element array as a Python float (int, bool for those dtypes)."""
        if self.size != 1:
            raise ValueError(f"item: needs a one-element array, got shape {self._shape}")
        return self.numpy().reshape(-1)[0].item()

    def __float__(self) -> float:
        return self.item()

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError(
                f"the truth value of an NDArray of shape {self._shape} is ambiguous; "
                f"reduce it first (e.g. (a == b).sum() == a.size)"
            )
        return bool(self.item())

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d NDArray")
        return self._shape[0]

    def __repr__(self) -> str:
        return f"NDArray({self.numpy()}, device={self._device})"

    def __str__(self) -> str:
        return str(self.numpy())

    def __reduce__(self):
        return (_unpickle, (self.numpy(), self._device.name))


def _unpickle(data: np.ndarray, device_name: str) -> NDArray:
    return NDArray(data, device=_device_named(device_name), dtype=data.dtype)


# ----- construction helpers (used by __init__, so they never touch overridable methods) ------


def _adopt(target: NDArray, source: NDArray) -> None:
    target._shape, target._strides, target._offset = source._shape, source._strides, 0
    target._device, target._handle = source._device, source._handle
    target._dtype, target._compact = source._dtype, source._compact


def _empty(shape: Shape, device: BackendDevice, dtype: DType) -> NDArray:
    """A new compact array (the hot path of every result; inputs already validated)."""
    array = object.__new__(NDArray)
    array._shape, array._strides, array._offset = shape, _compact_strides(shape), 0
    array._device, array._handle = device, device.mod.Array(prod(shape), dtype)
    array._dtype, array._compact = dtype, True
    return array


def _numeric_numpy(value: Any) -> np.ndarray:
    array = value if isinstance(value, np.ndarray) else np.array(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"NDArray: cannot make an array from {type(value).__name__} data of dtype "
            f"{array.dtype} (ragged lists and non-numbers are not supported)"
        )
    return array


def _from_numpy(array: np.ndarray, device: BackendDevice | None, dtype: Any) -> NDArray:
    dtype = _FLOAT32 if dtype is None else _dtype(dtype)
    device = default_device() if device is None else device
    out = NDArray.make(array.shape, device=device, dtype=dtype)
    # A raw copy of int, bool, float64 or transposed data would scramble it.
    device.mod.from_numpy(np.ascontiguousarray(array, dtype=dtype), out._handle)
    return out


def _copy_ndarray(other: NDArray, device: BackendDevice | None, dtype: Any) -> NDArray:
    device = other._device if device is None else device
    dtype = other.dtype if dtype is None else _dtype(dtype)
    if device != other._device or dtype != other.dtype:
        return _from_numpy(other.numpy(), device, dtype)
    out = NDArray.make(other._shape, device=device, dtype=dtype)
    device.mod.compact(other._handle, out._handle, other._shape, other._strides, other._offset)
    return out


def _logical_not(mask: NDArray) -> NDArray:
    """1 where the 1/0 array ``mask`` is 0, in its dtype (``1 - mask`` would make a bool
    mask int64)."""
    return mask == (False if mask._dtype is _BOOL else 0)


def _less_than_scalar(array: NDArray, value: Any, strict: bool) -> NDArray:
    """``array < value`` (``strict``) or ``array <= value`` as 1/0 in the array's dtype.

    ``not (a >= c)`` would be 1 where a or c is NaN, so floats compare their negations:
    ``a <= c`` is ``-a >= -c``, exact in IEEE arithmetic (NaN stays unordered, -0.0 equals
    0.0). Integers have no NaN but their negation overflows at the minimum, so they keep
    ``not (a > c)``; a float scalar makes them compare in float64, as NumPy does.
    """
    value = _scalar_value("<" if strict else "<=", value)
    if _is_float(array._dtype):
        mirrored = -array
        return mirrored > -value if strict else mirrored >= -value
    if isinstance(value, float):
        as_float = array.astype(_FLOAT64)
        return _less_than_scalar(as_float, value, strict).astype(array._dtype)
    return _logical_not(array >= value if strict else array > value)


def _check_devices(owner: str, a: NDArray, b: NDArray) -> None:
    if a._device is not b._device and a._device != b._device:
        raise ValueError(
            f"NDArray {owner}: operands are on different devices, {a._device} and "
            f"{b._device}; move one with .to(device) first"
        )


def _promote(a: NDArray, b: NDArray) -> tuple[NDArray, NDArray]:
    """Both operands in NumPy's common dtype: equal dtypes kept; float32 with float64 computes
    in float64, bool with int32 in int32, float32 with int32 in float64."""
    if a._dtype is b._dtype:
        return a, b
    common = _promoted(a._dtype, b._dtype)
    return a.astype(common, copy=False), b.astype(common, copy=False)


def _common(owner: str, a: NDArray, b: NDArray) -> tuple[NDArray, NDArray]:
    """Both operands compact at their common shape, device and dtype."""
    _check_devices(owner, a, b)
    a, b = _promote(a, b)
    if a._shape != b._shape:
        shape = _broadcast_shape(owner, a._shape, b._shape)
        a, b = a._broadcast_view(shape), b._broadcast_view(shape)
    return a.compact(), b.compact()


def _adds_in_place(view: NDArray, other: Any) -> bool:
    """Whether ``view += other`` can run as one ``ewise_add_setitem`` walk.

    That needs a non-compact ``view`` (a compact one takes the plain kernel) whose elements
    are all distinct (no zero strides or overlaps, else NumPy's one-add-per-element result
    differs), and an ``other`` of its dtype and device that shares no memory with it.
    """
    return (
        isinstance(other, NDArray)
        and hasattr(view._device.mod, "ewise_add_setitem")
        and other._dtype is view._dtype
        and other._device == view._device
        and other._handle is not view._handle
        and not view.is_compact()
        and _distinct_elements(view._shape, view._strides)
    )


def _setitem_source(other: NDArray, shape: Shape, index: Any = ()) -> NDArray:
    """The value of ``a[index] = other`` as a compact array of the view's ``shape``.

    NumPy's rule: ``other`` must broadcast to the view (leading length-1 axes beyond the
    view's dimensions are dropped first, as NumPy does). The view keeps a length-1 axis for
    each int in ``index`` where NumPy's ``a[index]`` drops it, so a value broadcasting to
    NumPy's shape is accepted too (``a[:, 0] = column``). Anything else raises ValueError,
    even with the right number of elements: a row-major copy would silently transpose it.
    """
    if other._shape == shape:
        return other.compact()
    if _broadcasts_to(other._shape, shape):
        return _without_leading_ones(other, len(shape))._broadcast_view(shape).compact()
    numpy_shape = _numpy_index_shape(shape, index)
    if _broadcasts_to(other._shape, numpy_shape):
        value = _without_leading_ones(other, len(numpy_shape))._broadcast_view(numpy_shape)
        return value.compact().reshape(shape)
    as_numpy = f" (shape {numpy_shape} as NumPy indexes it)" if numpy_shape != shape else ""
    raise ValueError(
        f"NDArray setitem: a value of shape {other.shape} cannot be assigned to a view of "
        f"shape {shape}{as_numpy}: it does not broadcast (dimensions must be equal or 1)"
    )


def _without_leading_ones(array: NDArray, ndim: int) -> NDArray:
    """``array`` without the leading length-1 axes that take it beyond ``ndim`` dimensions."""
    extra = array.ndim - ndim
    if extra <= 0:
        return array
    return array._view(array._shape[extra:], array._strides[extra:], array._offset)


# ----- matrix products -------------------------------------------------------------------------


def _matmul(name: str, a: Any, b: Any, product: Callable) -> NDArray:
    """``a @ b`` with NumPy's shape rules, each 2-D product done by ``product(a, b)``."""
    if not isinstance(a, NDArray) or not isinstance(b, NDArray):
        bad = type(b if isinstance(a, NDArray) else a).__name__
        raise TypeError(f"{name}: expected NDArrays, got {bad}; wrap it with nd.array(x)")
    _check_devices("matmul", a, b)
    _require_float(name.removeprefix("NDArray "), a, b)
    if a.ndim < 2 or b.ndim < 2 or a._shape[-1] != b._shape[-2]:
        raise ValueError(
            f"{name}: shapes {a._shape} and {b._shape} do not multiply; "
            f"both need >= 2 dimensions and equal inner dimensions"
        )
    a, b = _promote(a, b)
    if a.ndim == 2 and b.ndim == 2:
        return product(a, b)
    if b.ndim == 2:  # (..., m, n) @ (n, p): one product over the stacked rows
        # sizes spelled out, never -1: with a zero-length axis the -1 is ambiguous
        rows = a.reshape((prod(a._shape[:-1]), a._shape[-1]))
        return product(rows, b).reshape(a._shape[:-1] + b._shape[-1:])
    return _matmul_batched(a, b, product)


def _matmul_2d(a: NDArray, b: NDArray) -> NDArray:
    (m, n), p = a._shape, b._shape[1]
    device = a._device
    tile = getattr(device.mod, "__tile_size__", 0)
    if hasattr(device.mod, "matmul_tiled") and tile and m % tile == n % tile == p % tile == 0:
        return _matmul_tiled(a, b, tile)
    a, b = a.compact(), b.compact()
    out = _empty((m, p), device, a._dtype)
    device.mod.matmul(a._handle, b._handle, out._handle, m, n, p)
    return out


def _tiled(matrix: NDArray, tile: int) -> NDArray:
    """The tiled form (r/T, c/T, T, T) of an r×c matrix, compact."""
    r, c = matrix._shape
    square = matrix.compact()
    return square.as_strided((r // tile, c // tile, tile, tile), (c * tile, tile, c, 1)).compact()


def _matmul_tiled(a: NDArray, b: NDArray, tile: int) -> NDArray:
    (m, n), p = a._shape, b._shape[1]
    out = NDArray.make((m // tile, p // tile, tile, tile), device=a._device, dtype=a._dtype)
    a._device.mod.matmul_tiled(
        _tiled(a, tile)._handle, _tiled(b, tile)._handle, out._handle, m, n, p
    )
    return out.permute((0, 2, 1, 3)).compact().reshape((m, p))


def _blas_view(x: NDArray) -> NDArray:
    """``x`` (2-D) itself when a BLAS can read it in place, else a compact copy.

    A BLAS reads a matrix with one unit stride: row-major with a leading dimension >= the
    columns, or column-major (the transpose of a compact matrix) with one >= the rows. The
    stride of a length-1 axis is never used, so it is set to the value that fits.
    """
    (rows, cols), (row_step, col_step) = x._shape, x._strides
    col_step = 1 if cols == 1 else col_step
    row_step = cols if rows == 1 else row_step
    if (col_step == 1 and row_step >= cols) or (row_step == 1 and col_step >= rows):
        return x._view(x._shape, (row_step, col_step), x._offset)
    return x.compact()


def _matmul_strided(a: NDArray, b: NDArray) -> NDArray:
    """The 2-D product through the device's ``matmul_strided`` (no tiles, no transposes
    copied), or through its plain ``matmul`` on compacted operands when it has none."""
    (m, n), p = a._shape, b._shape[1]
    device = a._device
    out = _empty((m, p), device, a._dtype)
    if not hasattr(device.mod, "matmul_strided"):
        a, b = a.compact(), b.compact()
        device.mod.matmul(a._handle, b._handle, out._handle, m, n, p)
        return out
    a, b = _blas_view(a), _blas_view(b)
    device.mod.matmul_strided(
        a._handle, b._handle, out._handle, m, n, p, a._strides, a._offset, b._strides, b._offset
    )
    return out


def _matmul_batched(a: NDArray, b: NDArray, product: Callable) -> NDArray:
    """Batch dimensions broadcast as in np.matmul; one 2-D ``product`` per batch entry."""
    batch = _broadcast_shape("matmul", a._shape[:-2], b._shape[:-2])
    count = prod(batch)
    a = a._broadcast_view(batch + a._shape[-2:]).reshape((count,) + a._shape[-2:])
    b = b._broadcast_view(batch + b._shape[-2:]).reshape((count,) + b._shape[-2:])
    m, p = a._shape[1], b._shape[2]
    out = NDArray.make((a._shape[0], m, p), device=a._device, dtype=a._dtype)
    if product is _matmul_strided and hasattr(a._device.mod, "matmul_batched"):
        # the whole stack in one kernel call: the ops' attention products are thousands of
        # small matrices, and a Python loop over them cost more than the arithmetic
        a, b = a.compact(), b.compact()
        a._device.mod.matmul_batched(
            a._handle, b._handle, out._handle, a._shape[0], m, a._shape[2], p
        )
        return out.reshape(batch + (m, p))
    for i in range(a._shape[0]):
        out[i] = product(a[i].reshape(a._shape[1:]), b[i].reshape(b._shape[1:]))
    return out.reshape(batch + (m, p))
