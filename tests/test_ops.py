"""Forward and gradient tests of every op, driven by one table.

A row of ``OPS`` names an op case: the needle function, a NumPy reference, the input
shapes it runs on and the domain its inputs are drawn from. Three tests iterate the
table — forward vs NumPy (float64), float32 stays float32, and a float64 numerical
gradient check (``needle.testing.gradcheck``). Adding an op means adding a row here.

Binary elementwise ops cross every broadcast-compatible pair of the shape zoo, so the
implicit BroadcastTo nodes are exercised and every gradient must come back in its
input's shape.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pytest

import needle as ndl
from conftest import tensor
from needle.backends import NDArray
from needle.autograd import find_topo_sort
from needle.testing import gradcheck

Shape = tuple

# ----- the shape zoo and the input domains -------------------------------------------------

ZOO: list[Shape] = [(), (1,), (3,), (1, 1), (2, 3), (1, 3), (2, 1), (2, 3, 4), (2, 1, 4), (1, 3, 1)]


def _broadcastable(*shapes: Shape) -> bool:
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        return False
    return True


BROADCAST_PAIRS = [(s, t) for s in ZOO for t in ZOO if _broadcastable(s, t)]
UNARY = [(s,) for s in ZOO]
MATRICES = [(s,) for s in ZOO if len(s) >= 2]
NONEMPTY = [(s,) for s in ZOO if len(s) >= 1]


def _draw(domain: str, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Inputs of ``shape`` from ``domain``, kept away from kinks and poles of the ops."""
    if domain == "real":
        return rng.uniform(-2.0, 2.0, size=shape)
    if domain == "positive":  # log, power bases, ** 0.5
        return rng.uniform(0.5, 2.0, size=shape)
    if domain == "nonzero":  # denominators, relu's kink at 0, ** -1
        return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 2.0, size=shape)
    raise ValueError(f"unknown domain {domain!r}")


@dataclass(frozen=True)
class Row:
    """One op case: ``fn(*tensors)`` equals ``ref(*arrays)`` for every shape tuple in ``shapes``."""

    name: str
    fn: Callable[..., ndl.Tensor]
    ref: Callable[..., np.ndarray]
    shapes: Sequence[tuple[Shape, ...]]
    domain: tuple[str, ...] = ("real",)  # one per input; the last one repeats

    def inputs(self, shapes: tuple[Shape, ...], dtype=np.float64) -> list[np.ndarray]:
        # Seeded by the case id (not Python's salted hash), so every run draws the same inputs.
        rng = np.random.default_rng(zlib.crc32(f"{self.name}{shapes}".encode()))
        domains = self.domain + self.domain[-1:] * len(shapes)
        return [_draw(d, s, rng).astype(dtype) for d, s in zip(domains, shapes)]


def _np_fixed(shape: Shape) -> np.ndarray:
    """A constant of ``shape`` with distinct values, zeros and negatives (a stand-in mask)."""
    return (np.arange(int(np.prod(shape))) % 5 - 1.5).reshape(shape) * 0.5


def _draws(shape: Shape) -> np.ndarray:
    """Fixed uniform draws of ``shape`` for fused_dropout (about 40% above keep = 0.6)."""
    return (np.arange(int(np.prod(shape))) * 0.37 % 1.0).reshape(shape)


def _np_dropout_mask(shape: Shape, keep: float) -> np.ndarray:
    keep32 = np.float32(keep)
    return (_draws(shape).astype(np.float32) <= keep32).astype(np.float32) / keep32


def _fixed(a: ndl.Tensor) -> NDArray:
    """``_np_fixed`` as a backend array of ``a``'s shape, dtype and device."""
    return ndl.Tensor(_np_fixed(a.shape), dtype=a.dtype, device=a.device).realize_cached_data()


# ----- NumPy references that are not one NumPy call ----------------------------------------

def np_logsumexp(a: np.ndarray, axes=None) -> np.ndarray:
    peak = np.max(a, axis=axes, keepdims=True)
    return np.log(np.sum(np.exp(a - peak), axis=axes)) + np.squeeze(peak, axis=axes)


def np_dilate(a: np.ndarray, axes: tuple, d: int) -> np.ndarray:
    # Interleave d zero blocks after each element: stack then merge, one axis at a time.
    for axis in axes:
        a = np.stack([a] + [np.zeros_like(a)] * d, axis=axis + 1)
        shape = list(a.shape)
        a = a.reshape(shape[:axis] + [shape[axis] * (d + 1)] + shape[axis + 2:])
    return a


def np_undilate(a: np.ndarray, axes: tuple, d: int) -> np.ndarray:
    for axis in axes:
        a = np.take(a, np.arange(0, a.shape[axis], d + 1), axis=axis)
    return a


def np_sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _get(t: ndl.TensorTuple, i: int) -> ndl.Tensor:
    """A real TupleGetItem node (not folded away into the tuple's input)."""
    return ndl.TupleGetItem(i)(t, fold_const=False)


def _recombine(parts) -> ndl.Tensor:
    """sum_i (i + 1) * parts[i]: touches every element of a split with a distinct weight."""
    parts = list(parts)
    total = parts[0]
    for i, part in enumerate(parts[1:], start=2):
        total = total + part * float(i)
    return total


def _np_recombine(a: np.ndarray, axis: int) -> np.ndarray:
    return sum((i + 1) * np.take(a, i, axis=axis) for i in range(a.shape[axis]))


# ----- the table -----------------------------------------------------------------------------

OPS: list[Row] = [
    # elementwise binary: every broadcast-compatible pair of the zoo
    Row("add", ndl.add, np.add, BROADCAST_PAIRS),
    Row("multiply", ndl.multiply, np.multiply, BROADCAST_PAIRS),
    Row("divide", ndl.divide, np.divide, BROADCAST_PAIRS, ("real", "nonzero")),
    Row("power", ndl.power, np.power, BROADCAST_PAIRS, ("positive", "real")),
    Row("sub (operator)", lambda a, b: a - b, np.subtract, BROADCAST_PAIRS),
    # scalar ops
    Row("add_scalar", lambda a: ndl.add_scalar(a, 1.5), lambda a: a + 1.5, UNARY),
    Row("mul_scalar", lambda a: ndl.mul_scalar(a, -2.5), lambda a: a * -2.5, UNARY),
    Row("divide_scalar", lambda a: ndl.divide_scalar(a, 4.0), lambda a: a / 4.0, UNARY),
    Row("divide_scalar neg", lambda a: ndl.divide_scalar(a, -0.5), lambda a: a / -0.5, UNARY),
    Row("power_scalar 3", lambda a: ndl.power_scalar(a, 3), lambda a: a**3, UNARY),
    Row("power_scalar 2", lambda a: ndl.power_scalar(a, 2), lambda a: a**2, UNARY),
    Row("power_scalar 0.5", lambda a: ndl.power_scalar(a, 0.5), np.sqrt, UNARY, ("positive",)),
    Row("power_scalar -1", lambda a: ndl.power_scalar(a, -1), lambda a: 1 / a, UNARY, ("nonzero",)),
    Row("power_scalar 0", lambda a: ndl.power_scalar(a, 0), np.ones_like, UNARY),
    Row("rsub (c - x)", lambda a: 3.0 - a, lambda a: 3.0 - a, UNARY),
    Row("rtruediv (c / x)", lambda a: 3.0 / a, lambda a: 3.0 / a, UNARY, ("nonzero",)),
    # elementwise unary
    Row("negate", ndl.negate, np.negative, UNARY),
    Row("astype (to its own dtype)", lambda a: ndl.astype(a, a.dtype) * a, np.square, UNARY),
    Row("log", ndl.log, np.log, UNARY, ("positive",)),
    Row("exp", ndl.exp, np.exp, UNARY),
    Row("relu", ndl.relu, lambda a: np.maximum(a, 0.0), UNARY, ("nonzero",)),
    # ReLU's adjoint: linear in out_grad; x is data (its numerical gradient is 0 off the kink)
    Row("relu_gradient", ndl.relu_gradient, lambda g, x: g * (x > 0), [(s, s) for s in ZOO],
        ("real", "nonzero")),
    Row("multiply_constant", lambda a: ndl.multiply_constant(a, _fixed(a)),
        lambda a: a * _np_fixed(a.shape), UNARY),
    Row("fused_dropout", lambda a: ndl.fused_dropout(a, _draws(a.shape), 0.6),
        lambda a: a * _np_dropout_mask(a.shape, 0.6), UNARY),
    Row("tanh", ndl.tanh, np.tanh, UNARY),
    Row("sigmoid", ndl.sigmoid, np_sigmoid, UNARY),
    # transpose: the last two axes by default, or the two given (negative allowed)
    Row("transpose", ndl.transpose, lambda a: np.swapaxes(a, -1, -2), MATRICES + [((2, 3, 4, 5),)]),
    Row("transpose (0, 1)", lambda a: ndl.transpose(a, (0, 1)), lambda a: np.swapaxes(a, 0, 1),
        MATRICES),
    Row("transpose (0, 2)", lambda a: ndl.transpose(a, (0, 2)), lambda a: np.swapaxes(a, 0, 2),
        [((2, 3, 4),), ((2, 1, 4),)]),
    Row("transpose (-1, 0)", lambda a: ndl.transpose(a, (-1, 0)), lambda a: np.swapaxes(a, -1, 0),
        [((2, 3),), ((2, 3, 4),)]),
    Row("transpose (-3, -2)", lambda a: ndl.transpose(a, (-3, -2)),
        lambda a: np.swapaxes(a, -3, -2), [((2, 3, 4),)]),
    Row("Tensor.transpose", lambda a: a.transpose(), lambda a: np.swapaxes(a, -1, -2), MATRICES),
    # reductions
    Row("summation None", ndl.summation, np.sum, UNARY),
    Row("summation 0", lambda a: ndl.summation(a, 0), lambda a: np.sum(a, 0), NONEMPTY),
    Row("summation -1", lambda a: ndl.summation(a, -1), lambda a: np.sum(a, -1), NONEMPTY),
    Row("summation (0, 1)", lambda a: ndl.summation(a, (0, 1)), lambda a: np.sum(a, (0, 1)),
        MATRICES),
    Row("summation (2, 0)", lambda a: ndl.summation(a, (2, 0)), lambda a: np.sum(a, (2, 0)),
        [((2, 3, 4),), ((2, 1, 4),), ((1, 3, 1),)]),
    Row("summation (-1, -3)", lambda a: ndl.summation(a, (-1, -3)), lambda a: np.sum(a, (-1, -3)),
        [((2, 3, 4),)]),
    Row("summation ()", lambda a: ndl.summation(a, ()), lambda a: np.sum(a, ()), UNARY),
    Row("Tensor.sum", lambda a: a.sum((1,)), lambda a: np.sum(a, 1), MATRICES),
    Row("summation empty axis", lambda a: ndl.summation(a, 1), lambda a: np.sum(a, 1),
        [((2, 0),), ((3, 0, 2),)]),
    Row("summation empty all", ndl.summation, np.sum, [((0,),), ((2, 0),)]),
    Row("logsumexp None", ndl.logsumexp, np_logsumexp, UNARY),
    Row("logsumexp 0", lambda a: ndl.logsumexp(a, 0), lambda a: np_logsumexp(a, 0), NONEMPTY),
    Row("logsumexp -1", lambda a: ndl.logsumexp(a, -1), lambda a: np_logsumexp(a, -1), NONEMPTY),
    Row("logsumexp (0, 1)", lambda a: ndl.logsumexp(a, (0, 1)),
        lambda a: np_logsumexp(a, (0, 1)), MATRICES),
    Row("logsumexp (-1, 0)", lambda a: ndl.logsumexp(a, (-1, 0)),
        lambda a: np_logsumexp(a, (-1, 0)), MATRICES),
    Row("logsoftmax", ndl.logsoftmax, lambda a: a - np_logsumexp(a, -1)[..., None],
        [((2, 3),), ((1, 5),), ((4, 1),), ((3,),), ((2, 3, 4),)]),
    # matmul: 2-D, batched, broadcast batch dimensions
    Row("matmul", ndl.matmul, np.matmul, [
        ((2, 3), (3, 4)), ((1, 1), (1, 1)), ((3, 1), (1, 2)), ((2, 3, 4), (2, 4, 5)),
        ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)),
        ((1, 3, 4), (2, 4, 1)), ((2, 1, 2, 3), (1, 4, 3, 2)),
    ]),
    Row("matmul (operator)", lambda a, b: a @ b, np.matmul,
        [((2, 3), (3, 4)), ((2, 2, 3), (3, 2))]),
    Row("negate ∘ matmul", lambda a, b: -(a.matmul(b)), lambda a, b: -(a @ b),
        [((2, 3), (3, 2))]),
    # flip, dilate, undilate
    Row("flip 0", lambda a: ndl.flip(a, 0), lambda a: np.flip(a, 0), NONEMPTY),
    Row("flip (0, 1)", lambda a: ndl.flip(a, (0, 1)), lambda a: np.flip(a, (0, 1)), MATRICES),
    Row("flip -1", lambda a: ndl.flip(a, (-1,)), lambda a: np.flip(a, -1), NONEMPTY),
    Row("dilate 0 by 1", lambda a: ndl.dilate(a, (0,), 1), lambda a: np_dilate(a, (0,), 1),
        [((3,),), ((2, 3),), ((1, 2, 2),)]),
    Row("dilate (0, 1) by 2", lambda a: ndl.dilate(a, (0, 1), 2),
        lambda a: np_dilate(a, (0, 1), 2), [((2, 3),), ((2, 2, 3),)]),
    Row("dilate -1 by 0", lambda a: ndl.dilate(a, -1, 0), lambda a: a, [((2, 3),)]),
    Row("undilate 0 by 1", lambda a: ndl.undilate(a, (0,), 1), lambda a: np_undilate(a, (0,), 1),
        [((4,),), ((6, 2),)]),
    Row("undilate (0, 1) by 2", lambda a: ndl.undilate(a, (0, 1), 2),
        lambda a: np_undilate(a, (0, 1), 2), [((3, 6),), ((6, 3, 2),)]),
    # reshape and broadcast_to, each case its own target
    *[
        Row(f"reshape {src}->{dst}", lambda a, dst=dst: ndl.reshape(a, dst),
            lambda a, dst=dst: a.reshape(dst), [(src,)])
        for src, dst in [
            ((2, 3), (3, 2)), ((2, 3, 4), (-1,)), ((2, 3, 4), (4, -1)), ((3,), (1, 3, 1)),
            ((), (1, 1)), ((1, 1), ()), ((1, 3), (3,)), ((2, 3, 4), (2, 1, 12)), ((0, 3), (3, 0)),
        ]
    ],
    *[
        Row(f"broadcast_to {src}->{dst}", lambda a, dst=dst: ndl.broadcast_to(a, dst),
            lambda a, dst=dst: np.broadcast_to(a, dst), [(src,)])
        for src, dst in [
            ((3,), (2, 3)), ((1, 3), (4, 3)), ((2, 1), (2, 3)), ((), (2, 3)), ((1,), (1,)),
            ((1, 3, 1), (2, 3, 4)), ((2, 1, 4), (3, 2, 5, 4)), ((1,), (2, 0)),
        ]
    ],
    # stack / split and the tuple plumbing
    Row("stack 0", lambda a, b, c: ndl.stack([a, b, c], 0), lambda *a: np.stack(a, 0),
        [((),) * 3, ((3,),) * 3, ((2, 3),) * 3]),
    Row("stack 1", lambda a, b: ndl.stack((a, b), 1), lambda *a: np.stack(a, 1),
        [((3,),) * 2, ((2, 3),) * 2]),
    Row("stack -1", lambda a, b: ndl.stack([a, b], -1), lambda *a: np.stack(a, -1),
        [((),) * 2, ((2, 3),) * 2]),
    Row("split 0", lambda a: _recombine(ndl.split(a, 0)), lambda a: _np_recombine(a, 0),
        [((3,),), ((2, 3),), ((1, 3, 1),)]),
    Row("split 1", lambda a: _recombine(ndl.split(a, 1)), lambda a: _np_recombine(a, 1),
        [((2, 3),), ((2, 3, 4),)]),
    Row("split -1", lambda a: _recombine(ndl.split(a, -1)), lambda a: _np_recombine(a, -1),
        [((2, 3, 4),)]),
    Row("split then stack", lambda a: ndl.stack(list(ndl.split(a, 1)), 1), lambda a: a,
        [((2, 3),), ((2, 3, 4),)]),
    Row("make_tuple / tuple_get_item", lambda a, b: _get(ndl.make_tuple(a, b), 0)
        * _get(ndl.make_tuple(a, b), 1), np.multiply, [((3,), (3,)), ((2, 3), (2, 3))]),
    Row("tuple_get_item -1", lambda a, b: ndl.tuple_get_item(ndl.make_tuple(a, b), -1) * 2.0,
        lambda a, b: b * 2.0, [((3,), (2,))]),
    Row("fused_add_scalars", lambda a: ndl.fused_add_scalars(a, 1.0, -2.0)[0]
        * ndl.fused_add_scalars(a, 1.0, -2.0)[1], lambda a: (a + 1.0) * (a - 2.0), UNARY),
    # a composite: the course's softmax loss shape
    Row("composite", lambda x, w: ndl.logsumexp(ndl.relu(x @ w), 1).sum() / 2,
        lambda x, w: np_logsumexp(np.maximum(x @ w, 0), 1).sum() / 2, [((2, 3), (3, 4))],
        ("nonzero",)),
]

CASES = [pytest.param(row, shapes, id=f"{row.name}-{'-'.join(map(str, shapes))}".replace(" ", ""))
         for row in OPS for shapes in row.shapes]


# ----- the three table-driven tests -----------------------------------------------------------

@pytest.mark.parametrize("row, shapes", CASES)
def test_forward_matches_numpy(row: Row, shapes, device):
    arrays = row.inputs(shapes)
    out = row.fn(*[tensor(a, device=device) for a in arrays])
    assert out.device == device
    expected = np.asarray(row.ref(*arrays))
    assert isinstance(out, ndl.Tensor), f"{row.name} returned {type(out).__name__}"
    assert out.shape == expected.shape, f"{row.name}: shape {out.shape} != NumPy's {expected.shape}"
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=row.name)


@pytest.mark.parametrize("row, shapes", CASES)
def test_float32_stays_float32(row: Row, shapes):
    arrays = row.inputs(shapes, dtype=np.float32)
    out = row.fn(*[tensor(a) for a in arrays])
    assert out.dtype == np.float32, f"{row.name}: float32 inputs gave {out.dtype}"
    expected = row.ref(*[a.astype(np.float64) for a in arrays])
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5, err_msg=row.name)


@pytest.mark.parametrize("row, shapes", CASES)
def test_float32_gradients_stay_float32(row: Row, shapes):
    leaves = [tensor(a) for a in row.inputs(shapes, dtype=np.float32)]
    row.fn(*leaves).backward()
    for i, x in enumerate(leaves):
        if x.grad is not None:
            assert x.grad.dtype == np.float32, f"{row.name}: input {i} got a {x.grad.dtype} grad"
            assert x.grad.shape == x.shape


@pytest.mark.parametrize("row, shapes", CASES)
def test_gradient_matches_finite_differences(row: Row, shapes, device):
    # gradcheck raises GradcheckError naming the input, element and both values.
    assert gradcheck(row.fn, *row.inputs(shapes), device=device)


def test_results_are_arrays_not_numpy_scalars():
    # A 0-d result must stay an ndarray (NumPy returns np.float64 scalars for 0-d math).
    x = tensor(np.arange(6.0).reshape(2, 3))
    for out in [x.sum(), ndl.exp(tensor(np.array(2.0))), ndl.logsumexp(x),
                ndl.split(tensor([1.0, 2.0]), 0)[1], tensor(np.array(1.0)) + 1]:
        assert isinstance(out.realize_cached_data(), NDArray), type(out.realize_cached_data())
        assert isinstance(out.numpy(), np.ndarray)


# ----- every op is covered and importable ------------------------------------------------------

SPEC_OPS = {
    "EWiseAdd": "add", "AddScalar": "add_scalar", "EWiseMul": "multiply",
    "MulScalar": "mul_scalar", "EWisePow": "power", "PowerScalar": "power_scalar",
    "EWiseDiv": "divide", "DivScalar": "divide_scalar", "Transpose": "transpose",
    "Reshape": "reshape", "BroadcastTo": "broadcast_to", "Summation": "summation",
    "MatMul": "matmul", "Negate": "negate", "Log": "log", "Exp": "exp", "ReLU": "relu",
    "Tanh": "tanh", "Sigmoid": "sigmoid", "LogSoftmax": "logsoftmax", "LogSumExp": "logsumexp",
    "Stack": "stack", "Split": "split", "Flip": "flip", "Dilate": "dilate", "UnDilate": "undilate",
    "MakeTensorTuple": "make_tuple", "TupleGetItem": "tuple_get_item",
    "FusedAddScalars": "fused_add_scalars",
}


@pytest.mark.parametrize("name", sorted(SPEC_OPS) + sorted(SPEC_OPS.values()))
def test_op_is_exported_at_top_level_and_in_ops(name: str):
    assert hasattr(ndl.ops, name), f"needle.ops.{name} is missing"
    assert getattr(ndl, name, None) is getattr(ndl.ops, name), f"needle.{name} != needle.ops.{name}"


def test_every_spec_op_appears_in_the_table():
    """Run each row once and collect the op classes in its graph: the table must reach them all."""
    seen = set()
    for row in OPS:
        tensors = [tensor(a) for a in row.inputs(row.shapes[0])]
        seen |= {type(node.op).__name__ for node in find_topo_sort([row.fn(*tensors)]) if node.op}
    missing = set(SPEC_OPS) - seen
    assert not missing, f"no row of OPS exercises {sorted(missing)}"


# ----- numerical edge cases the table's domains avoid ----------------------------------------

def test_sigmoid_is_finite_for_huge_inputs():
    x = tensor([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow either
        y = ndl.sigmoid(x)
        y.backward()
    np.testing.assert_allclose(y.numpy(), [0.0, np_sigmoid(-50.0), 0.5, np_sigmoid(50.0), 1.0],
                               rtol=1e-12, atol=1e-300)
    assert np.isfinite(x.grad.numpy()).all()
    assert ndl.sigmoid(tensor(np.array([-1000.0, 1000.0], np.float32))).dtype == np.float32


@pytest.mark.parametrize("axes", [None, 1, -1, (0, 1), (1, 0)])
def test_logsumexp_is_stable_for_large_inputs(axes):
    a = np.array([[1e5, 1e5 + 1.0, 1e5 - 2.0], [-1e5, -1e5 + 3.0, -1e5]])
    x = tensor(a)
    out = ndl.logsumexp(x, axes)
    shift = np.max(a, axis=axes, keepdims=True)
    expected = np.squeeze(shift + np.log(np.sum(np.exp(a - shift), axis=axes, keepdims=True)),
                          axis=axes if axes is not None else None)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-14)
    out.backward()
    softmax = np.exp(a - expected.reshape(shift.shape))
    np.testing.assert_allclose(x.grad.numpy(), softmax, rtol=1e-12, atol=1e-300)


def test_logsumexp_with_minus_inf_entries():
    a = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]])
    x = tensor(a)
    out = ndl.logsumexp(x, 1)
    assert out.numpy()[0] == pytest.approx(np.log(1.0 + np.e))
    assert out.numpy()[1] == -np.inf, "a row of all -inf gives -inf"
    assert ndl.logsumexp(x).numpy() == pytest.approx(np.log(1.0 + np.e))
    assert ndl.logsumexp(tensor(a[1:]), (0, 1)).numpy() == -np.inf
    ndl.logsumexp(tensor(a[:1]), 1).backward()  # a -inf entry has zero gradient
    row = tensor(a[:1])
    ndl.logsumexp(row, 1).backward()
    np.testing.assert_allclose(row.grad.numpy(), [[1 / (1 + np.e), 0.0, np.e / (1 + np.e)]])


def test_logsumexp_over_an_empty_axis_is_minus_inf():
    out = ndl.logsumexp(tensor(np.zeros((2, 0))), 1)
    assert out.shape == (2,)
    assert (out.numpy() == -np.inf).all()


def test_logsoftmax_is_stable_for_large_inputs():
    x = tensor([[1e5, 0.0], [-1e5, -1e5]])
    np.testing.assert_allclose(ndl.logsoftmax(x).numpy(), [[0.0, -1e5], [-np.log(2), -np.log(2)]])


def test_summation_over_an_empty_axis_gives_zeros_and_empty_gradients():
    x = tensor(np.zeros((2, 0)))
    out = ndl.summation(x, 1)
    np.testing.assert_array_equal(out.numpy(), [0.0, 0.0])
    out.backward()
    assert x.grad.shape == (2, 0)


def test_relu_gradient_at_zero_is_zero():
    x = tensor([-1.0, 0.0, 2.0])
    ndl.relu(x).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 1.0])


def test_stack_and_split_are_inverse():
    a = np.arange(24.0).reshape(2, 3, 4)
    for axis in (0, 1, 2, -1, -3):
        parts = ndl.split(tensor(a), axis)
        assert len(parts) == a.shape[axis]
        for i, part in enumerate(parts):
            np.testing.assert_array_equal(part.numpy(), np.take(a, i, axis=axis))
        np.testing.assert_array_equal(ndl.stack(parts.tuple(), axis).numpy(), a)
    xs = [tensor(np.full((2, 3), float(i))) for i in range(4)]
    for axis in (0, 1, 2, -1):
        back = ndl.split(ndl.stack(xs, axis), axis)
        assert [p.numpy().tolist() for p in back] == [x.numpy().tolist() for x in xs]


def test_undilate_inverts_dilate():
    a = np.arange(6.0).reshape(2, 3)
    for axes, d in [((0,), 1), ((1,), 2), ((0, 1), 3)]:
        dilated = ndl.dilate(tensor(a), axes, d)
        np.testing.assert_array_equal(ndl.undilate(dilated, axes, d).numpy(), a)


def test_implicit_broadcasting_inserts_broadcast_to_nodes():
    a, b = tensor(np.ones((2, 1))), tensor(np.ones(3))
    out = a * b
    assert [type(x.op).__name__ for x in out.inputs] == ["BroadcastTo", "BroadcastTo"]
    out.backward()
    assert a.grad.shape == (2, 1) and b.grad.shape == (3,)
    np.testing.assert_array_equal(a.grad.numpy(), [[3.0], [3.0]])
    np.testing.assert_array_equal(b.grad.numpy(), [2.0, 2.0, 2.0])


# ----- second derivatives: gradients are built from ops ----------------------------------------

def test_second_derivative_of_cube():
    values = np.array([-1.5, 0.0, 2.0])
    for cube in (lambda x: x**3, lambda x: x * x * x):
        x = tensor(values)
        cube(x).backward(create_graph=True)
        g = x.grad
        np.testing.assert_allclose(g.numpy(), 3 * values**2)
        assert g.requires_grad, "the gradient must itself be a differentiable graph"
        g.backward()
        np.testing.assert_allclose(x.grad.numpy(), 6 * values)


def test_default_backward_extends_the_graph():
    # The course's semantics: gradients are tensors built from ops, differentiable with
    # no flag. y = x*x + x*z: dy/dx = 2x + z, d/dx (dy/dx) = 2, d/dz (dy/dx) = 1.
    x = tensor(np.array([1.0, -2.0]))
    z = tensor(np.array([3.0, 0.5]))
    y = x * x + x * z
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + z.numpy())
    assert x.grad.requires_grad  # its graph is recorded when it is differentiated
    x.grad.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])
    np.testing.assert_allclose(z.grad.numpy(), [1.0, 1.0])


def test_fast_path_backward_records_no_gradient_graph():
    x = tensor(np.array([1.0, 2.0]))
    (x**3).backward(create_graph=False)
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 12.0])
    assert not x.grad.requires_grad and x.grad.op is None
    with pytest.raises(RuntimeError, match="leave create_graph at its default"):
        x.grad.backward()


def _grad_of(f: Callable[..., ndl.Tensor], wrt: int = 0) -> Callable[..., ndl.Tensor]:
    """x ↦ ∇_x sum(f(x, ...)), as a needle graph (for gradcheck: its gradient is a Hessian)."""

    def grad(*xs: ndl.Tensor) -> ndl.Tensor:
        # gradcheck's finite differences pass detached inputs; give them a graph again.
        xs = [x if x.requires_grad else tensor(x, requires_grad=True) for x in xs]
        f(*xs).backward(create_graph=True)
        grad = xs[wrt].grad
        # A leaf that the gradient graph does not reach keeps this first-order .grad
        # through gradcheck's backward (grads are replaced only on the graph's nodes).
        for x in xs:
            x.grad = None
        return grad

    return grad


SECOND_ORDER = [
    ("exp", ndl.exp, [(3,)], "real"),
    ("log", ndl.log, [(3,)], "positive"),
    ("tanh", ndl.tanh, [(2, 3)], "real"),
    ("sigmoid", ndl.sigmoid, [(2, 3)], "real"),
    ("power_scalar 0.5", lambda a: a**0.5, [(3,)], "positive"),
    ("power_scalar -1", lambda a: a**-1, [(3,)], "nonzero"),
    ("multiply broadcast", lambda a, b: a * b, [(2, 1), (3,)], "real"),
    ("divide wrt a", lambda a, b: a / b, [(2, 3), (3,)], "nonzero"),
    ("power wrt a", ndl.power, [(3,), (3,)], "positive"),
    ("logsumexp None", ndl.logsumexp, [(2, 3)], "real"),
    ("logsumexp 1", lambda a: ndl.logsumexp(a, 1), [(2, 3)], "real"),
    ("logsoftmax", lambda a: ndl.logsoftmax(a) * tensor(np.arange(6.0).reshape(2, 3)),
     [(2, 3)], "real"),
    ("matmul", lambda a, b: (a @ b) * (a @ b), [(2, 3), (3, 2)], "real"),
    ("summation", lambda a: ndl.summation(a * a, 1) ** 2, [(2, 3)], "real"),
]


@pytest.mark.parametrize("name, f, shapes, domain", SECOND_ORDER, ids=[c[0] for c in SECOND_ORDER])
def test_gradient_of_gradient(name, f, shapes, domain):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    assert gradcheck(_grad_of(f), *[_draw(domain, s, rng) for s in shapes])


def test_logsumexp_hessian_vector_product_matches_finite_differences(rng):
    a, v = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))

    def gradient(values: np.ndarray) -> np.ndarray:
        x = tensor(values)
        ndl.logsumexp(x, 1).sum().backward()
        return x.grad.numpy()

    x = tensor(a)
    ndl.logsumexp(x, 1).sum().backward(create_graph=True)
    (x.grad * tensor(v)).sum().backward()  # d/dx <∇f(x), v> = H v (H is symmetric)
    eps = 1e-6
    numeric = (gradient(a + eps * v) - gradient(a - eps * v)) / (2 * eps)
    np.testing.assert_allclose(x.grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("op, second", [
    (ndl.tanh, lambda t: -2 * t * (1 - t**2)),
    (ndl.sigmoid, lambda s: s * (1 - s) * (1 - 2 * s)),
])
def test_second_derivative_of_tanh_and_sigmoid(op, second):
    values = np.linspace(-3, 3, 7)
    x = tensor(values)
    op(x).backward(create_graph=True)
    x.grad.backward()
    y = op(tensor(values)).numpy()
    np.testing.assert_allclose(x.grad.numpy(), second(y), rtol=1e-10, atol=1e-12)
