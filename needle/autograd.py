"""The autograd core: graph nodes, tensors and reverse-mode differentiation.

A :class:`Tensor` is a node of a dynamic graph: it remembers the :class:`Op` that made
it and the input tensors. Calling :meth:`Tensor.backward` walks that graph in reverse
topological order and gives every node its adjoint (``.grad``). Gradients are built
from ops themselves, so they are differentiable too (second derivatives work).

Computation is eager: an op's result is computed when the op is applied. When no
input requires a gradient (or inside :func:`no_grad`) the result is a detached
constant and no graph is kept.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import numbers
import operator
import os
import traceback
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast

import numpy as np

from ._types import Shape
from .backends import (  # noqa: F401  (the course imports them from here)
    FLOAT_DTYPES,
    Device,
    NDArray,
    all_devices,
    array_api,
    check_dtype,
    cpu,
    kernels,
)

_FLOAT32, _FLOAT64 = FLOAT_DTYPES

#: When True, an op's result is computed only when :meth:`Value.realize_cached_data` is called.
LAZY_MODE = False
#: Number of live graph nodes: +1 for every Value initialised, -1 when one is freed.
TENSOR_COUNTER = 0

_grad_enabled = True
# False while a default backward() computes its gradients: ops still work out whether their
# result requires grad (so the gradients are flagged exactly as a recorded graph would flag
# them) but keep no graph; the graph is recorded later, only if someone differentiates a
# gradient (see _BackwardRecord).
_record_graph = True
_anomaly_enabled = False
#: Called as ``hook(node, inp, partial)`` each time the backward pass hands ``inp`` a partial
#: adjoint from its user ``node``; None (the default) costs one check per edge. Set only
#: while :func:`needle.viz.trace` or :func:`needle.viz.record` is active.
_partial_adjoint_hook = None


class Saved:
    """What an op's ``compute`` returns when its gradient needs arrays made by the forward
    pass: the ``output`` and those ``arrays``. The node keeps the arrays as ``node.saved``
    (a tuple) for the op's ``gradient``; the op object keeps nothing from the call, so it
    holds only its constructor's parameters (PyTorch's ``ctx.save_for_backward``)."""

    __slots__ = ("output", "arrays")

    def __init__(self, output, *arrays) -> None:
        self.output = output
        self.arrays = arrays


class Op:
    """An operator: ``compute`` runs it on backend arrays, ``gradient`` differentiates it.

    ``takes_integers`` says whether integer and boolean tensors are valid inputs (views,
    sums, additions and products are; everything that computes in floating point is not,
    and refuses them with a TypeError before computing). ``saved_without_graph`` says
    whether ``node.saved`` stays when no graph is kept (its caller reads results from it);
    otherwise it goes with the graph.
    """

    takes_integers = False
    saved_without_graph = False

    def __call__(self, *args):
        raise NotImplementedError()

    def compute(self, *args: NDArray):
        """Forward on backend arrays; returns a backend array (or a tuple of them), or a
        :class:`Saved` holding it and the arrays the gradient needs."""
        raise NotImplementedError()

    def gradient(self, out_grad: Value, node: Value) -> Value | tuple[Value, ...]:
        """The partial adjoints of the inputs, built from needle ops.

        ``out_grad`` is the adjoint of ``node`` (this op's output). Returns one tensor
        per input, each of that input's shape. An op may return ``None`` for an input
        whose gradient is not needed (it does not require grad).
        """
        raise NotImplementedError()

    def gradient_as_tuple(self, out_grad: Value, node: Value) -> tuple:
        """:meth:`gradient`, always as a tuple (one entry per input)."""
        output = self.gradient(out_grad, node)
        if isinstance(output, tuple):
            return output
        if isinstance(output, list):
            return tuple(output)
        return (output,)

    def __repr__(self) -> str:
        return type(self).__name__


class TensorOp(Op):
    """An op whose output is a :class:`Tensor`."""

    def __call__(self, *args: Value) -> Tensor:
        return Tensor.make_from_op(self, args)


class TensorTupleOp(Op):
    """An op whose output is a :class:`TensorTuple`."""

    def __call__(self, *args: Value) -> TensorTuple:
        return TensorTuple.make_from_op(self, args)


# What Value's constructors return: the class they are called on (typing.Self is 3.11+).
_V = TypeVar("_V", bound="Value")


class Value:
    """A node of the computational graph.

    Attributes: ``op`` (the Op that made it, None for a leaf), ``inputs`` (tuple of
    Values), ``cached_data`` (the backend array, None until computed in lazy mode),
    ``requires_grad``.
    """

    __slots__ = (
        "op",
        "inputs",
        "cached_data",
        "saved",
        "requires_grad",
        "grad",
        "_replay",
        "_hooks",
        "_trace",
        "__weakref__",
    )
    cached_data: Any  # a backend array (NDArray or numpy.ndarray), or a tuple of them

    def realize_cached_data(self):
        """The node's backend array, computing it (and its inputs') first if needed."""
        if self.cached_data is None:
            data = self.op.compute(*[x.realize_cached_data() for x in self.inputs])
            if data.__class__ is Saved:
                self.saved, data = data.arrays, data.output
            self.cached_data = data if isinstance(data, NDArray) else _as_arrays(data)
            if _anomaly_enabled:
                _check_finite(self.cached_data, self, "forward output")
        return self.cached_data

    def is_leaf(self) -> bool:
        """True for a node made by no op (data, parameters, constants)."""
        return self.op is None

    def __del__(self):
        global TENSOR_COUNTER
        # _trace is set last by _init: a Value whose _init never finished was not counted
        if hasattr(self, "_trace"):
            TENSOR_COUNTER -= 1

    def _init(self, op, inputs, *, cached_data=None, requires_grad=None):
        global TENSOR_COUNTER
        if requires_grad is None:
            requires_grad = False
            if _grad_enabled:
                for x in inputs:
                    if x.requires_grad:
                        requires_grad = True
                        break
        if requires_grad and cached_data is not None and not _is_float_array(cached_data):
            raise TypeError(
                f"Tensor: a {cached_data.dtype} tensor cannot require gradients; only float32 and "
                f"float64 tensors can (pass requires_grad=False, or convert with "
                f".astype('float32'))"
            )
        self.op = op
        self.inputs = tuple(inputs)
        self.cached_data = cached_data
        self.saved = ()
        self.requires_grad = requires_grad
        self.grad = None
        self._replay = None
        self._hooks = None
        self._trace = traceback.extract_stack() if _anomaly_enabled else None
        TENSOR_COUNTER += 1

    @classmethod
    def make_const(cls: type[_V], data, requires_grad: bool = False) -> _V:
        """A leaf node holding ``data``: a backend array, or a Value whose array is shared."""
        if isinstance(data, Value):
            data = data.realize_cached_data()
        value = cls.__new__(cls)
        value._init(None, (), cached_data=data, requires_grad=requires_grad)
        return value

    @classmethod
    def make_from_op(cls: type[_V], op: Op, inputs: Sequence[Value]) -> _V:
        """The node ``op(*inputs)``: computed now unless LAZY_MODE.

        A constant (no graph kept) when no input requires grad.
        """
        if not op.takes_integers:  # inlined: this runs for every op applied
            for x in inputs:
                data = x.cached_data
                if data is not None and data.__class__ is not tuple:
                    dtype = data.dtype
                    if dtype is not _FLOAT32 and dtype is not _FLOAT64:
                        _check_float_input(op, dtype)
        value = cls.__new__(cls)
        value._init(op, inputs)
        if not LAZY_MODE:
            data = value.realize_cached_data()
            if value.requires_grad and (
                data.__class__ is tuple
                or (data.dtype is not _FLOAT32 and data.dtype is not _FLOAT64)
            ):
                # integer results (a cast to int) have no gradient
                value.requires_grad = _is_float_array(data)
            if not value.requires_grad or not _record_graph:
                # Nothing upstream needs a gradient (or a default backward() is running):
                # drop the graph so it can be freed.
                value.op, value.inputs = None, ()
                if not op.saved_without_graph:
                    value.saved = ()
        return value


def _is_float_array(data) -> bool:
    """Whether ``data`` (an array, or a tuple of arrays) holds float32/float64 values."""
    if isinstance(data, tuple):
        return all(_is_float_array(x) for x in data)
    dtype = data.dtype
    return dtype is _FLOAT32 or dtype is _FLOAT64 or dtype in FLOAT_DTYPES


def _check_float_input(op: Op, dtype) -> None:
    """TypeError for an input of ``dtype`` (integer or boolean) to an op that computes in
    floating point; ``make_from_op`` calls it for any dtype that is not the float singletons."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{type(op).__name__}: needs float32 or float64 tensors, got one of dtype {dtype}; "
            f"convert it with .astype('float32')"
        )


def _as_arrays(data):
    """NumPy returns scalars (np.float64) for 0-d results; keep every cached_data an array."""
    if isinstance(data, tuple):
        return tuple(x if isinstance(x, NDArray) else array_api.asarray(x) for x in data)
    return array_api.asarray(data)


class TensorTuple(Value):
    """A tuple of tensors produced by one op (e.g. :func:`needle.split`)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.realize_cached_data())

    def __getitem__(self, index: int) -> Tensor:

        return ops.tuple_get_item(self, index)

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    def tuple(self) -> tuple:
        """The elements as a Python tuple of Tensors."""
        return tuple(self)

    def __repr__(self) -> str:
        return "needle.TensorTuple" + str(self.tuple())

    def __str__(self) -> str:
        return self.__repr__()

    def __add__(self, other: TensorTuple) -> TensorTuple:

        if not isinstance(other, TensorTuple) or len(self) != len(other):
            raise TypeError("TensorTuple + : both operands must be TensorTuples of equal length")
        return ops.make_tuple(*[self[i] + other[i] for i in range(len(self))])

    def detach(self) -> TensorTuple:
        """A constant TensorTuple sharing the arrays, outside any graph."""
        return TensorTuple.make_const(self.realize_cached_data())


class Tensor(Value):
    """An n-dimensional array that records the ops applied to it for differentiation.

    ``array`` may be a list, a NumPy array, an NDArray or a Tensor, and is copied (a
    Tensor's array is shared when device and dtype stay). With ``dtype=None``: under the
    ``nd`` backend float32 (an NDArray or Tensor keeps its own dtype); under ``np``
    NumPy's inference (Python floats give float64). ``device=None`` keeps an NDArray's
    or Tensor's device, else the default device.

    >>> x = Tensor([1.0, 2.0, 3.0])
    >>> (x * x).sum().backward()
    >>> x.grad.numpy().tolist()
    [2.0, 4.0, 6.0]
    """

    __slots__ = ()
    # NumPy must not turn `ndarray + tensor` into an object array of Tensors: with this,
    # it defers to Tensor's reflected operators, which say what to do instead.
    __array_ufunc__ = None

    def __init__(
        self,
        array,
        *,
        device: Device | None = None,
        dtype=None,
        requires_grad: bool | None = None,
        **kwargs,
    ):
        if isinstance(array, Tensor):
            device = device if device is not None else array.device
            dtype = dtype if dtype is not None else array.dtype
            if device == array.device and dtype == array.dtype:
                cached_data = array.realize_cached_data()
            else:
                cached_data = Tensor._make_array(array.realize_cached_data(), device, dtype)
        else:
            cached_data = Tensor._make_array(array, device, dtype)
        if requires_grad is None:  # the course's default True, for the dtypes that can
            requires_grad = _is_float_array(cached_data)
        self._init(None, (), cached_data=cached_data, requires_grad=requires_grad)

    @staticmethod
    def _make_array(data, device: Device | None, dtype):
        """A new backend array holding ``data`` (always a copy).

        Under ``nd`` the dtype defaults to float32 (an NDArray keeps its own) and the
        device to an NDArray's own, else the default. Under ``np`` NumPy infers the dtype.
        A given dtype must be one of :data:`needle.backends.DTYPES` on both backends.
        """
        if dtype is not None:
            dtype = check_dtype("Tensor", dtype)
        return kernels.make_array(data, device, dtype)

    # ----- properties -------------------------------------------------------------
    @property
    def data(self) -> Tensor:
        """A detached tensor sharing this tensor's array. Setting it replaces the array."""
        return self.detach()

    @data.setter
    def data(self, value: Tensor) -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"Tensor.data: expected a Tensor, got {type(value).__name__}")
        if value.dtype != self.dtype:
            raise TypeError(
                f"Tensor.data: dtype {value.dtype} does not match the tensor's {self.dtype}; "
                f"cast first, e.g. Tensor(x, dtype='{self.dtype}')"
            )
        self.cached_data = value.realize_cached_data()
        release_gradient_graphs()  # an updated parameter: the recorded step is over

    def detach(self) -> Tensor:
        """A new leaf tensor sharing this array, outside any graph."""
        return Tensor.make_const(self.realize_cached_data())

    @property
    def shape(self) -> Shape:
        data = self.cached_data  # read directly: shape is asked for on every op call
        return (data if data is not None else self.realize_cached_data()).shape

    @property
    def dtype(self):
        data = self.cached_data
        return (data if data is not None else self.realize_cached_data()).dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return self.realize_cached_data().size

    @property
    def device(self) -> Device:
        """The device of this tensor's array."""
        return kernels.device_of(self.realize_cached_data())

    def to(self, device: Device) -> Tensor:
        """This tensor on ``device``: itself when it is already there, else a detached copy."""
        if device == self.device:
            return self
        return Tensor(self, device=device, requires_grad=self.requires_grad)

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array: a copy under ``nd``; the array itself under ``np``."""
        return kernels.to_numpy(self.realize_cached_data())

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        if self.size != 1:
            raise ValueError(f"Tensor.item: needs a one-element tensor, got shape {self.shape}")
        return self.numpy().item()

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"needle.Tensor({self.realize_cached_data()!r}{grad})"

    def __str__(self) -> str:
        return str(self.realize_cached_data())

    # ----- hooks ---------------------------------------------------------------------
    def register_hook(self, hook) -> RemovableHandle:
        """Call ``hook(grad)`` when this tensor's gradient is complete during ``backward()``
        (the sum of all its partial adjoints), before it is stored in ``.grad`` and passed
        on. A returned tensor (same shape and dtype) replaces the gradient; None keeps it.
        Hooks run in the order registered. Returns a handle whose ``remove()`` unregisters.

        >>> x = Tensor([1.0, 2.0])
        >>> handle = x.register_hook(lambda g: g * 10)
        >>> (x * x).sum().backward()
        >>> x.grad.numpy().tolist()
        [20.0, 40.0]
        >>> handle.remove()
        """
        return self._add_hook("grad", "register_hook", hook)

    def register_post_accumulate_grad_hook(self, hook) -> RemovableHandle:
        """Call ``hook(tensor)`` right after ``backward()`` has set this leaf's ``.grad``
        (a parameter's gradient is final then: what data-parallel training averages).
        Leaves only. Returns a handle whose ``remove()`` unregisters."""
        if not self.is_leaf():
            raise RuntimeError(
                f"register_post_accumulate_grad_hook: only leaf tensors (parameters, data) have "
                f"their .grad accumulated; this one is the result of {self.op!r}: use "
                f"register_hook for it"
            )
        return self._add_hook("post_accumulate", "register_post_accumulate_grad_hook", hook)

    def _add_hook(self, kind: str, owner: str, hook) -> RemovableHandle:
        if not callable(hook):
            raise TypeError(f"{owner}: the hook must be callable, got {type(hook).__name__}")
        if not self.requires_grad:
            raise RuntimeError(
                f"{owner}: this tensor (shape {self.shape}) does not require grad, so backward() "
                f"never computes its gradient; create it with requires_grad=True"
            )
        if self._hooks is None:
            self._hooks = _TensorHooks()
        return self._hooks.add(kind, hook)

    # ----- differentiation ----------------------------------------------------------
    def backward(
        self,
        out_grad: Tensor | None = None,
        *,
        create_graph: bool | None = None,
        accumulate: bool = False,
    ) -> None:
        """Compute the gradient of this tensor with respect to every node of its graph.

        ``out_grad`` defaults to ones of this tensor's shape (for a non-scalar tensor
        that is the gradient of its sum — the course's convention; PyTorch would
        raise). Each node's ``.grad`` is *replaced*, not accumulated.

        By default (the course's semantics) backward *extends the graph*: every
        gradient is a tensor of ops that can be differentiated again with no flag. Its
        graph is recorded only when that happens (by replaying this backward pass), so
        the default costs what the fast path costs and, after the next optimizer step,
        holds no reference to the forward graph; differentiate gradients before then, or
        keep the output tensor alive. ``create_graph=True`` records the gradient graph
        right away; ``create_graph=False`` makes constant gradients that can never be
        differentiated (see :func:`compute_gradient_of_variables`).

        ``accumulate=True`` *adds* each leaf's new gradient to the ``.grad`` it already
        has (a leaf without one just gets it), PyTorch's behaviour, for gradient
        accumulation over micro-batches: several ``backward(accumulate=True)`` calls, then
        one optimizer step, then ``reset_grad()``. The summed gradients are constants, so
        it cannot be combined with ``create_graph=True``.

        >>> x = Tensor([2.0])
        >>> (x ** 3).backward()
        >>> x.grad.backward()          # d/dx of 3x^2
        >>> x.grad.numpy().tolist()
        [12.0]
        """
        if not self.requires_grad:
            raise RuntimeError(
                f"backward(): this tensor (shape {self.shape}) does not require grad, so it has "
                f"no graph to differentiate; create its inputs with requires_grad=True (and not "
                f"inside no_grad()); a gradient made by backward(create_graph=False) or inside "
                f"no_grad() is a constant: leave create_graph at its default to "
                f"differentiate it"
            )
        if out_grad is None:
            out_grad = Tensor.make_const(self.device.ones(*self.shape, dtype=self.dtype))
        elif out_grad.shape != self.shape:
            raise ValueError(
                f"backward(): out_grad.shape={out_grad.shape} must equal the tensor's "
                f"shape {self.shape}"
            )
        if accumulate and create_graph:
            raise ValueError(
                "backward(): accumulate=True sums gradients as constants; it "
                "cannot record their graph (create_graph=True)"
            )
        if accumulate:
            create_graph = False
        compute_gradient_of_variables(
            self, out_grad, create_graph=create_graph, accumulate=bool(accumulate)
        )

    # ----- operators: dispatch only (see needle.ops for the lowering) -----------------
    def __add__(self, other):

        return ops.add(self, other) if isinstance(other, Tensor) else ops.add_scalar(self, other)

    def __mul__(self, other):

        if isinstance(other, Tensor):
            return ops.multiply(self, other)
        return ops.mul_scalar(self, other)

    def __pow__(self, other):

        if isinstance(other, Tensor):
            return ops.power(self, other)
        return ops.power_scalar(self, other)

    def __sub__(self, other):

        if isinstance(other, Tensor):
            return ops.add(self, ops.negate(other))
        return ops.add_scalar(self, -_shapes.python_scalar("subtract", other))

    def __truediv__(self, other):

        if isinstance(other, Tensor):
            return ops.divide(self, other)
        return ops.divide_scalar(self, other)

    def __matmul__(self, other):

        return ops.matmul(self, other)

    def matmul(self, other: Tensor) -> Tensor:
        """Matrix product ``self @ other``."""
        return self.__matmul__(other)

    def __neg__(self):

        return ops.negate(self)

    def __rsub__(self, other):

        return ops.add_scalar(ops.negate(self), other)

    def __rtruediv__(self, other):

        return ops.mul_scalar(ops.power_scalar(self, -1), other)

    __radd__ = __add__
    __rmul__ = __mul__

    def astype(self, dtype) -> Tensor:
        """This tensor converted to ``dtype`` (``"float32"``, ``"int64"``, ...): a new tensor,
        differentiable between float dtypes (NumPy's name; PyTorch's ``.to(dtype)``)."""

        return ops.astype(self, dtype)

    def sum(self, axes=None) -> Tensor:
        """Sum over ``axes`` (None: all; an int; or a tuple), dropping them."""

        return ops.summation(self, axes)

    def broadcast_to(self, shape: Shape) -> Tensor:
        """This tensor broadcast to ``shape`` (NumPy rules)."""

        return ops.broadcast_to(self, shape)

    def reshape(self, shape: Shape) -> Tensor:
        """The same elements in ``shape``."""

        return ops.reshape(self, shape)

    def transpose(self, axes=None) -> Tensor:
        """Swap two axes: the last two by default, else the two in ``axes``."""

        return ops.transpose(self, axes)

    # ----- PyTorch-style methods: each is the needle function of the same name ------------
    # (see needle.ops for the arguments; ``needle.max(t, ...)`` is ``t.max(...)``)
    def __getitem__(self, key) -> Tensor:
        """``t[key]`` with NumPy's and PyTorch's rules (ints drop their axis; slices with any
        step; None; ...; integer arrays or tensors; bool masks); see :func:`needle.getitem`."""

        return ops.getitem(self, key)

    def __setitem__(self, key, value) -> None:
        """``t[key] = value`` (a scalar, array or tensor broadcast to ``t[key]``'s shape).

        - ``t`` does not require grad: the values are written in place (views of ``t`` see
          them), unless ``value`` requires grad: then ``t`` becomes the differentiable
          result of :func:`needle.index_put`, and gradients reach ``value``.
        - ``t`` requires grad (outside ``no_grad()``): RuntimeError. needle does not track
          which nodes have read ``t``, and a graph that used its old value would compute
          wrong gradients; write ``t = t.index_put(key, value)`` instead.
        """

        if _grad_enabled and self.requires_grad:
            raise RuntimeError(
                f"Tensor.__setitem__: this tensor (shape {self.shape}) requires grad; writing "
                f"into it in place would change a value its graph may still need for gradients. "
                f"Write out of place, t = t.index_put(key, value) (differentiable), or change "
                f"the values without a gradient under no_grad() or through t.data"
            )
        if _grad_enabled and isinstance(value, Tensor) and value.requires_grad:
            result = ops.index_put(self.detach(), key, value)
            self.op, self.inputs, self.requires_grad = result.op, result.inputs, True
            self.cached_data, self.saved = result.cached_data, result.saved
            return
        index = _index.parse_index("setitem", self.shape, key)
        if not isinstance(value, Tensor):
            value = Tensor(value, dtype=self.dtype, device=self.device, requires_grad=False)

        _shapes.check_broadcastable_to("setitem", value.shape, index.shape)
        values = array_api.broadcast_to(value.realize_cached_data(), index.shape)
        _index.write(self.realize_cached_data(), index, values.astype(self.dtype, copy=False))

    def index_put(self, key, value) -> Tensor:
        """A copy with ``value`` written at ``key``, differentiable (:func:`needle.index_put`)."""

        return ops.index_put(self, key, value)

    def __iter__(self) -> Iterator[Tensor]:
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    # Comparisons give bool tensors that need no gradient; hashing stays by identity, so
    # tensors remain usable as dict keys and in sets.
    __hash__ = Value.__hash__

    def _compare(self, kind: str, other):

        if not isinstance(other, (Tensor, numbers.Real)):
            return NotImplemented
        return ops.ops_elementwise._compare(kind, self, other)

    def __eq__(self, other):
        return self._compare("eq", other)

    def __ne__(self, other):
        return self._compare("ne", other)

    def __lt__(self, other):
        return self._compare("lt", other)

    def __le__(self, other):
        return self._compare("le", other)

    def __gt__(self, other):
        return self._compare("gt", other)

    def __ge__(self, other):
        return self._compare("ge", other)

    def __bool__(self) -> bool:
        if self.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor of shape {self.shape} is ambiguous; reduce it "
                f"first, e.g. bool((a == b).all()) or (a == b).sum().item() == a.size"
            )
        return bool(self.item())

    def all(self) -> Tensor:
        """Whether every element is non-zero: a 0-d bool tensor."""
        return (self != 0).astype("int64").sum() == self.size

    def any(self) -> Tensor:
        """Whether some element is non-zero: a 0-d bool tensor."""
        return (self != 0).astype("int64").sum() > 0

    def float(self) -> Tensor:
        """``astype("float32")`` (PyTorch's ``.float()``)."""
        return self.astype("float32")

    def double(self) -> Tensor:
        """``astype("float64")``."""
        return self.astype("float64")

    def long(self) -> Tensor:
        """``astype("int64")``."""
        return self.astype("int64")

    def int(self) -> Tensor:
        """``astype("int32")``."""
        return self.astype("int32")

    def bool(self) -> Tensor:
        """``astype("bool")``."""
        return self.astype("bool")

    @staticmethod  # called in the class body, where it builds methods
    def _call(name: str):
        def method(self, *args, **kwargs):

            return getattr(ops, name)(self, *args, **kwargs)

        method.__name__ = name
        method.__doc__ = f"``needle.{name}(self, ...)``: see :func:`needle.ops.{name}`."
        return method

    # reductions
    max, min, amax, amin = _call("max"), _call("min"), _call("amax"), _call("amin")
    argmax, argmin, mean, var, std, prod = (
        _call("argmax"),
        _call("argmin"),
        _call("mean"),
        _call("var"),
        _call("std"),
        _call("prod"),
    )
    # elementwise
    abs = __abs__ = _call("abs")
    sqrt, rsqrt, sin, cos, exp, log = (
        _call("sqrt"),
        _call("rsqrt"),
        _call("sin"),
        _call("cos"),
        _call("exp"),
        _call("log"),
    )
    log1p, expm1, tanh, sigmoid, relu, sign = (
        _call("log1p"),
        _call("expm1"),
        _call("tanh"),
        _call("sigmoid"),
        _call("relu"),
        _call("sign"),
    )
    clip = clamp = _call("clip")
    maximum, minimum, pow = _call("maximum"), _call("minimum"), _call("power")
    # shapes and selection
    squeeze, unsqueeze, flatten, view = (
        _call("squeeze"),
        _call("unsqueeze"),
        _call("flatten"),
        _call("view"),
    )
    permute, expand, repeat, tile = (
        _call("permute"),
        _call("expand"),
        _call("repeat"),
        _call("tile"),
    )
    gather, scatter_add, masked_fill, chunk = (
        _call("gather"),
        _call("scatter_add"),
        _call("masked_fill"),
        _call("chunk"),
    )
    softmax, log_softmax = _call("softmax"), _call("log_softmax")
    del _call

    # (``builtins.int``: in this class body ``int`` is the method above)
    def split(self, split_size_or_sections, dim: builtins.int = 0) -> tuple[Tensor, ...]:
        """PyTorch's ``Tensor.split``: pieces of an int size along ``dim`` (the last smaller),
        or of each size in a list. (``needle.split(a, axis)`` is the course's op.)"""

        return ops_indexing.split_size(self, split_size_or_sections, dim)

    # ----- interoperability ---------------------------------------------------------------
    def tolist(self):
        """The values as (nested) Python lists of numbers."""
        return self.numpy().tolist()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """``np.asarray(t)``: the array itself under ``np`` (shared memory), a copy under
        ``nd`` (the NDArray's buffer is not NumPy memory)."""
        array = self.numpy()
        if dtype is not None and array.dtype != dtype:
            return array.astype(dtype)
        return array.copy() if copy else array

    def __dlpack__(self, **kwargs):
        """Export through DLPack (``torch.from_dlpack(t)``, ``np.from_dlpack(t)``) on the CPU,
        without a copy on either backend: the receiver shares this tensor's memory (writes show
        on both sides) and keeps it alive."""
        return kernels.shared_numpy(self.realize_cached_data()).__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[builtins.int, builtins.int]:
        """DLPack's device of this tensor: ``(1, 0)``, the CPU."""
        return (1, 0)


# ----- graph traversal and the backward pass -------------------------------------------


def find_topo_sort(node_list: Sequence[Value]) -> list[Value]:
    """Nodes reachable from ``node_list``, in topological order (inputs before users).

    A post-order depth-first search from each node in turn, visiting a node's inputs
    left to right; each node appears once. The search keeps an explicit stack, so deep
    graphs (long RNN unrolls, thousands of steps) cannot hit Python's recursion limit.
    """
    order: list[Value] = []
    visited: set[int] = set()
    for root in node_list:
        if id(root) in visited:
            continue
        visited.add(id(root))
        # Each stack entry: (node, index of the next input to visit).
        stack = [(root, 0)]
        while stack:
            node, next_input = stack[-1]
            if next_input < len(node.inputs):
                stack[-1] = (node, next_input + 1)
                child = node.inputs[next_input]
                if id(child) not in visited:
                    visited.add(id(child))
                    stack.append((child, 0))
            else:
                stack.pop()
                order.append(node)
    return order


def compute_gradient_of_variables(
    output_tensor: Tensor,
    out_grad: Tensor,
    create_graph: bool | None = None,
    accumulate: bool = False,
) -> None:
    """Reverse-mode differentiation: set ``.grad`` on every node of the output's graph.

    Nodes are processed in reverse topological order, so a node's adjoint is complete
    — the sum of the partial adjoints from *all* its users — before it is propagated.
    With ``b = a + a; c = b + b``, ``b`` gets one partial from each use in ``c``
    (total 2) and only then passes 2 + 2 = 4 to ``a``; propagating a partial sum
    early would give ``a`` a wrong gradient. ``.grad`` is replaced, never accumulated.

    ``create_graph``:

    - ``None`` (the default): the course's "extend the graph", recorded on demand. The
      gradients are computed as constants and flagged ``requires_grad`` exactly as
      recorded ones would be; the first time one of them is differentiated, this backward
      pass is replayed with recording on and every gradient it handed out takes its graph
      (same values, bit for bit). Until then the gradients hold no reference to the
      forward graph: the output is held until :func:`release_gradient_graphs` (an
      optimizer step, or the next backward), then only as long as the caller keeps it.
    - ``True``: the gradient graph is recorded right away (and holds the forward graph).
    - ``False``: the gradients are constants that can never be differentiated.

    ``accumulate``: each leaf's gradient is added to the ``.grad`` it had (a constant sum,
    made before the leaf's post-accumulate hooks run); use it with ``create_graph=False``.
    """
    global _grad_enabled, _record_graph, _queued_callbacks, _accumulating
    order = _topo_sort_with_gradient_graphs(output_tensor)
    release_gradient_graphs()
    record = None
    previous = _grad_enabled, _record_graph, _queued_callbacks, _accumulating
    _accumulating = bool(accumulate)
    if create_graph is False:
        _grad_enabled = False
    elif create_graph is None and _grad_enabled and not LAZY_MODE:
        record = _BackwardRecord(output_tensor, out_grad)
        _record_graph = False
    _queued_callbacks = []
    try:
        _backpropagate(order, output_tensor, out_grad, record, accumulate=accumulate)
        _grad_enabled, _record_graph = previous[:2]
        while _queued_callbacks:
            _queued_callbacks.pop(0)()
    finally:
        _grad_enabled, _record_graph, _queued_callbacks, _accumulating = previous


def _backpropagate(
    order: list[Value],
    output_tensor: Tensor,
    out_grad: Tensor,
    record: _BackwardRecord | None = None,
    replayed: dict[int, Value] | None = None,
    replacements: dict[int, Value] | None = None,
    accumulate: bool = False,
) -> None:
    """The backward pass over ``order`` (the output's topological order).

    Each node's adjoint, after its hooks, goes to its ``.grad`` (handed out through
    ``record`` when one is given). When replaying a pass for its graph, it goes into
    ``replayed[id(node)]`` instead, and no hook runs: ``replacements`` holds what the
    hooks returned the first time. With ``accumulate``, a leaf's gradient is added to the
    one it had.
    """
    partial_adjoints: dict[int, list[Any]] = {id(output_tensor): [out_grad]}  # Values, parts
    with_parts: set[int] = set()  # the tuples that got a _TuplePart
    hook = _partial_adjoint_hook if replayed is None else None
    for node in reversed(order):
        partials = partial_adjoints.pop(id(node), None)
        if partials is None:
            continue  # no path from this node to the output carries a gradient
        grad = _tuple_adjoint(node, partials) if id(node) in with_parts else sum_node_list(partials)
        if replayed is not None:
            if replacements:
                grad = replacements.get(id(node), grad)
            replayed[id(node)] = grad
        else:
            if node._hooks is not None:  # only Tensors register hooks
                hooked = node._hooks.run_grad_hooks(cast(Tensor, node), grad)
                if hooked is not grad and record is not None:
                    record.replacements[id(node)] = hooked
                grad = hooked
            if accumulate and node.op is None:
                grad = _accumulated(node.grad, grad)
            node.grad = grad
            if record is not None and grad is not out_grad:
                record.hand_out(grad, node)
            if node._hooks is not None and node.op is None:
                node._hooks.run_post_accumulate_hooks(node)
        if node.op is None:
            continue
        index = getattr(node.op, "tuple_index", None)
        if index is not None and hook is None:
            # one element of a tuple: its adjoint goes to that element alone, instead of a
            # whole tuple of zeros elsewhere (a sequence split into T steps would otherwise
            # build T tuples of T elements and add them: T² operations)
            whole = node.inputs[0]
            if whole.requires_grad:
                partial_adjoints.setdefault(id(whole), []).append(_TuplePart(index, grad))
                with_parts.add(id(whole))
            continue
        input_grads = node.op.gradient_as_tuple(grad, node)
        for inp, inp_grad in zip(node.inputs, input_grads):
            if inp_grad is None or not inp.requires_grad:
                continue
            _check_adjoint(node, inp, inp_grad)
            partial_adjoints.setdefault(id(inp), []).append(inp_grad)
            if hook is not None:
                hook(node, inp, inp_grad)


def _accumulated(old: Value | None, new: Value) -> Value:
    """``old + new`` as a constant in ``new``'s dtype, or ``new`` when there is no ``old``."""
    if old is None:
        return new
    data = new.realize_cached_data()
    total = old.realize_cached_data().astype(data.dtype, copy=False) + data
    return Tensor.make_const(total)


# ----- gradient graphs recorded on demand ---------------------------------------------------


class _SameAs(TensorOp):
    """The identity: the op of a gradient whose recorded counterpart is a leaf."""

    def compute(self, a: NDArray):
        return a

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad


class _BackwardRecord:
    """What a default ``backward()`` keeps so that its gradients can get their graph later.

    The output it differentiated is held strongly until :meth:`release`, then weakly; the
    gradients it handed out are held weakly, each with the id of the node whose ``.grad``
    it became (alive as long as the output is).
    """

    __slots__ = ("output", "output_ref", "out_grad", "grads", "replacements", "__weakref__")

    def __init__(self, output: Tensor, out_grad: Tensor) -> None:
        self.output: Tensor | None = output
        self.output_ref = weakref.ref(output)
        self.out_grad = out_grad
        self.grads: list[tuple[weakref.ref, int]] = []
        self.replacements: dict[int, Value] = {}  # gradients that hooks replaced, by node
        _HELD_RECORDS.add(self)

    def hand_out(self, grad: Value, node: Value) -> None:
        """Note ``grad``, the new ``.grad`` of ``node``; one that requires grad is marked as
        recordable from this pass (constants are noted to stand in for their twins)."""
        if grad._replay is None:
            if grad.requires_grad:
                grad._replay = self
            self.grads.append((weakref.ref(grad), id(node)))

    def release(self) -> None:
        """Stop keeping the output (and so the forward graph) alive."""
        self.output = None

    def record(self) -> None:
        """Replay the backward pass with recording on; every gradient handed out that still
        exists takes the place of its recorded twin (whose values are the same) in the
        recorded graph, so the gradient graphs link the very tensors left in ``.grad``."""
        global _grad_enabled, _record_graph
        output = self.output_ref()
        if output is None:
            raise RuntimeError(
                "cannot differentiate this gradient: the backward() that computed it has been "
                "freed with its forward graph (the output tensor is gone, or an optimizer step "
                "released it). Keep the output tensor alive until you differentiate its "
                "gradients, or call backward(create_graph=True) to record them right away"
            )
        replayed: dict[int, Value] = {}
        previous = _grad_enabled, _record_graph
        _grad_enabled, _record_graph = True, True
        try:
            _backpropagate(
                find_topo_sort([output]),
                output,
                self.out_grad,
                replayed=replayed,
                replacements=self.replacements,
            )
        finally:
            _grad_enabled, _record_graph = previous
        handed_out = [
            (grad, replayed[node_id])
            for grad, node_id in ((ref(), node_id) for ref, node_id in self.grads)
            if grad is not None and (grad._replay is self or not grad.requires_grad)
        ]
        self.grads = []
        for grad, twin in handed_out:
            if grad._replay is self:
                _adopt_graph(grad, twin)
        # Point the recorded graph at the gradients handed out instead of their twins.
        stand_in = {
            id(twin): grad
            for grad, twin in handed_out
            if twin.op is not None or not twin.requires_grad
        }
        for node in find_topo_sort([grad for grad, _ in handed_out]):
            if any(id(x) in stand_in for x in node.inputs):
                node.inputs = tuple(stand_in.get(id(x), x) for x in node.inputs)


def _adopt_graph(grad: Value, twin: Value) -> None:
    """Give ``grad`` the op and inputs of ``twin``, its recorded equal."""
    grad._replay = None
    grad.requires_grad = twin.requires_grad
    if twin.op is not None:
        grad.op, grad.inputs, grad.saved = twin.op, twin.inputs, twin.saved
    elif twin.requires_grad:
        grad.op, grad.inputs = _SameAs(), (twin,)


_HELD_RECORDS: weakref.WeakSet[_BackwardRecord] = weakref.WeakSet()


def release_gradient_graphs() -> None:
    """Stop keeping alive the forward graphs of earlier default ``backward()`` calls.

    Their gradients can still be differentiated while the caller keeps the output tensor.
    Optimizer steps and every ``backward()`` call this, so a training loop written with
    ``loss.backward()`` holds no more than the fast path does.
    """
    for record in list(_HELD_RECORDS):
        record.release()
    _HELD_RECORDS.clear()


def record_gradient_graphs(values: Iterable[Value]) -> None:
    """Record the graph of every gradient among ``values`` and their ``.grad``s that a
    default ``backward()`` computed without one (what differentiating them does first)."""
    for value in values:
        for candidate in (value, value.grad):
            if candidate is not None and candidate._replay is not None:
                candidate._replay.record()


def _topo_sort_with_gradient_graphs(output: Value) -> list[Value]:
    """``find_topo_sort([output])``, after recording the graph of every gradient it reaches
    that a default backward() computed without one (they are leaves until then)."""
    order = find_topo_sort([output])
    while any(node._replay is not None for node in order):
        record_gradient_graphs([node for node in order if node._replay is not None])
        order = find_topo_sort([output])
    return order


# ----- hooks --------------------------------------------------------------------------------


class RemovableHandle:
    """What registering a hook returns: ``remove()`` unregisters it (once)."""

    __slots__ = ("_hooks", "_hook", "_owner")

    def __init__(self, hooks: list, hook, owner: str) -> None:
        self._hooks, self._hook, self._owner = hooks, hook, owner

    def remove(self) -> None:
        """Unregister the hook; a second call raises RuntimeError."""
        for i, hook in enumerate(self._hooks):
            if hook is self._hook:
                del self._hooks[i]
                return
        raise RuntimeError(f"{self._owner}: this hook was already removed")


class _TensorHooks:
    """The hooks of one tensor, in registration order."""

    __slots__ = ("grad", "post_accumulate")

    def __init__(self) -> None:
        self.grad: list = []
        self.post_accumulate: list = []

    def add(self, kind: str, hook) -> RemovableHandle:
        hooks = getattr(self, kind)
        hook = _Hook(hook)  # a wrapper: the same function registered twice is two hooks
        hooks.append(hook)
        return RemovableHandle(hooks, hook, f"{kind} hook")

    def run_grad_hooks(self, node: Tensor, grad: Value) -> Value:
        """``grad`` after every gradient hook (each may return a replacement)."""
        for hook in list(self.grad):
            result = hook.fn(grad)
            if result is not None:
                _check_hook_result(hook.fn, node, result)
                grad = result
        return grad

    def run_post_accumulate_hooks(self, node: Value) -> None:
        for hook in list(self.post_accumulate):
            hook.fn(node)


class _Hook:
    __slots__ = ("fn",)

    def __init__(self, fn) -> None:
        self.fn = fn


def _check_hook_result(hook, node: Tensor, result) -> None:
    """A hook's replacement gradient must be a Tensor of the tensor's shape and dtype."""
    name = getattr(hook, "__name__", type(hook).__name__)
    if not isinstance(result, Tensor):
        raise TypeError(
            f"gradient hook {name} returned {type(result).__name__}; return a "
            f"Tensor of shape {node.shape} (or None to keep the gradient)"
        )
    if result.shape != node.shape or result.dtype != node.dtype:
        raise ValueError(
            f"gradient hook {name} returned a gradient of shape {result.shape} and dtype "
            f"{result.dtype} for a tensor of shape {node.shape} and dtype {node.dtype}"
        )


_queued_callbacks: list | None = None
_accumulating = False


def backward_accumulates() -> bool:
    """Whether the ``backward()`` in progress adds each leaf's gradient to the ``.grad`` it
    had (``accumulate=True``); False outside a backward. A queued callback uses it to tell a
    leaf this backward did not reach but whose earlier gradient still counts."""
    return _accumulating


def queue_callback(callback) -> None:
    """Run ``callback()`` when the ``backward()`` in progress has set every ``.grad``,
    before it returns (callbacks run in the order queued). Hooks use it to finish work
    that must be done before the optimizer reads the gradients."""
    if _queued_callbacks is None:
        raise RuntimeError("queue_callback: no backward() is running; call it from a hook")
    _queued_callbacks.append(callback)


def sum_node_list(node_list: list[Value]) -> Value:
    """The sum of a list of adjoints, built from ops (left to right)."""
    # Adjoints are Tensors or TensorTuples, which add; their base class Value does not.
    return functools.reduce(operator.add, node_list)


class _TuplePart:
    """A partial adjoint of element ``index`` of a TensorTuple alone (from an op that takes
    that element: its ``tuple_index``)."""

    __slots__ = ("index", "grad")

    def __init__(self, index: int, grad: Value) -> None:
        self.index = index
        self.grad = grad


def _tuple_adjoint(node: Value, partials: list) -> TensorTuple:
    """A TensorTuple's adjoint from whole-tuple partials and single-element ones: each
    element the sum of its partials in order (the values of adding one-hot tuples, whose
    other elements are zeros), zeros where it has none."""
    elements = node.realize_cached_data()
    terms: list[list[Value]] = [[] for _ in elements]
    for partial in partials:
        if isinstance(partial, _TuplePart):
            terms[partial.index].append(partial.grad)
        else:
            for i, term in enumerate(terms):
                term.append(cast(TensorTuple, partial)[i])
    return ops.make_tuple(
        *[
            cast(Tensor, sum_node_list(term))
            if term
            else Tensor.make_const(array_api.zeros_like(element))
            for term, element in zip(terms, elements)
        ]
    )


def _check_adjoint(node: Value, inp: Value, grad: Value) -> None:
    """The engine's invariant: a partial adjoint has its input's shape."""
    if isinstance(inp, Tensor) and (not isinstance(grad, Tensor) or grad.shape != inp.shape):
        got = f"shape {grad.shape}" if isinstance(grad, Tensor) else f"type {type(grad).__name__}"
        raise RuntimeError(
            f"{type(node.op).__name__}.gradient returned an adjoint of {got} "
            f"for an input of shape {inp.shape}; an op's gradient must sum broadcast axes back "
            f"(see needle.ops.unbroadcast)"
        )
    if _anomaly_enabled:
        _check_finite(grad.realize_cached_data(), node, "gradient")


# ----- modes: no_grad and anomaly detection -----------------------------------------------


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside this context ops build no graph: every result is a detached constant.

    >>> x = Tensor([1.0], requires_grad=True)
    >>> with no_grad():
    ...     y = x * 2
    >>> y.requires_grad
    False
    """
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    """False inside :func:`no_grad`."""
    return _grad_enabled


class AnomalyError(FloatingPointError):
    """A NaN or Inf appeared in a forward output or a gradient under :func:`detect_anomaly`."""


@contextlib.contextmanager
def detect_anomaly() -> Iterator[None]:
    """Check every op's output and every gradient for NaN/Inf, raising at the first one.

    The error names the op, its input shapes and where in your code the op was
    applied. Costs a full scan of every array, so it is off by default (and free
    when off). Set ``NEEDLE_DETECT_ANOMALY=1`` to turn it on for a whole run.
    """
    global _anomaly_enabled
    previous, _anomaly_enabled = _anomaly_enabled, True
    try:
        yield
    finally:
        _anomaly_enabled = previous


def _check_finite(array, node: Value, what: str) -> None:
    arrays = array if isinstance(array, tuple) else (array,)
    for arr in arrays:
        arr = np.asarray(arr)  # a debugging aid: checking on the host is fine
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = "NaN" if np.isnan(arr).any() else "Inf"
            shapes = ", ".join(str(x.shape) for x in node.inputs if isinstance(x, Tensor))
            frame = _user_frame(node._trace)
            where = (
                f"\n  the op was applied at {frame.filename}:{frame.lineno} in {frame.name}"
                if frame
                else ""
            )
            raise AnomalyError(
                f"detect_anomaly: {what} of {node.op!r} contains {bad} "
                f"(input shapes: {shapes or 'none'}){where}"
            )


def _user_frame(trace):
    """The innermost frame of ``trace`` outside the needle package: where the op was applied."""
    for frame in reversed(trace or ()):
        if not frame.filename.startswith(_PACKAGE_DIR):
            return frame
    return None


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _anomaly_from_environment() -> None:
    global _anomaly_enabled
    _anomaly_enabled = os.environ.get("NEEDLE_DETECT_ANOMALY", "") not in ("", "0")


_anomaly_from_environment()


# The one import circle of the design: Tensor's methods and operators are ops (``a + b`` is
# ops.add), and the ops are built on Tensor and TensorOp. Resolved here, once: this module is
# complete when the ops load, and the methods look the ops up when they are called.
from . import ops  # noqa: E402
from .ops import _index, _shapes, ops_indexing  # noqa: E402
