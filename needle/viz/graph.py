"""The graph object: the forward graph of some tensors, and optionally its adjoint nodes.

:func:`graph` walks the graph that produced the given tensors (the same walk as the
backward pass, :func:`needle.autograd.find_topo_sort`) and describes each tensor as a
:class:`Node`, each argument as an :class:`Edge`. With ``adjoints=True`` it also walks
the gradients that ``backward()`` left in ``.grad``: the nodes that are not part of the
forward graph were created by the backward pass — the extended graph of reverse-mode
autodiff.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy

from ..autograd import Tensor, Value, find_topo_sort, record_gradient_graphs
from .collapse import collapse_modules
from .model import Edge, Graph, Node
from .modules import module_place, recorded_name

if TYPE_CHECKING:  # for the annotations only: needle.nn is loaded when first needed
    from ..nn import Module

__all__ = ["Node", "Edge", "Graph", "graph", "op_label", "COLLAPSE_AUTO_NODES"]

#: ``collapse="auto"`` collapses modules when the graph has more nodes than this.
COLLAPSE_AUTO_NODES = 60

# Op attributes worth printing: simple values only (fused ops also keep arrays around).
_SIMPLE = (bool, int, float, str, tuple, type(None))


def graph(
    *tensors: Value,
    adjoints: bool = False,
    model: Module | None = None,
    names: Mapping[str, Value] | None = None,
    collapse: str = "auto",
) -> Graph:
    """The graph that produced ``tensors``: one node per tensor, edges in argument order.

    Args:
        tensors: the outputs to draw from (usually the loss).
        adjoints: also draw the nodes ``backward()`` created (the ``.grad`` graphs), with
            a ``grad`` edge from each forward node to its ``.grad``.
        model: a Module whose parameter and buffer names label the leaves (not needed
            after :func:`needle.viz.record`, which remembers them).
        names: extra labels, e.g. ``{"x": x, "w": w}``.
        collapse: ``"module"`` draws each of the model's top-level modules as one box
            (needs a forward pass inside :func:`needle.viz.record`); ``"none"`` draws every
            node; ``"auto"`` collapses when there are more than
            :data:`COLLAPSE_AUTO_NODES` nodes and module information exists.

    >>> import needle as ndl
    >>> x = ndl.Tensor([1.0, 2.0])
    >>> g = graph((x * x).sum(), names={"x": x})
    >>> [(n.id, n.title) for n in g.nodes], g.inputs_of("v1")
    ([('v0', 'x'), ('v1', 'EWiseMul'), ('v2', 'Summation')], ['v0', 'v0'])
    """
    roots = _check_tensors(tensors)
    if collapse not in ("auto", "module", "none"):
        raise ValueError(f"viz.graph: collapse={collapse!r}; expected 'auto', 'module' or 'none'")
    labels = _labels(model, names)
    forward = find_topo_sort(roots)
    values = list(forward)
    if adjoints:
        values += _adjoint_values(forward)
    g = _describe(values, len(forward), labels)
    if collapse == "module" or (collapse == "auto" and len(g.nodes) > COLLAPSE_AUTO_NODES):
        g = collapse_modules(g, required=collapse == "module")
    return g


def _check_tensors(tensors: Sequence) -> list[Value]:
    if not tensors:
        raise TypeError("viz.graph: give at least one tensor, e.g. viz.graph(loss)")
    for i, t in enumerate(tensors):
        if not isinstance(t, Value):
            raise TypeError(
                f"viz.graph: argument {i} is a {type(t).__name__}, expected a needle.Tensor"
            )
    return list(tensors)


def _labels(model, names: Mapping[str, Value] | None) -> dict[int, str]:
    """id(tensor) → label, from the model's parameter/buffer names and ``names``."""
    labels: dict[int, str] = {}
    if model is not None:
        for name, tensor in (*model.named_parameters(), *model.named_buffers()):
            labels[id(tensor)] = name
    for name, tensor in (names or {}).items():
        if not isinstance(tensor, Value):
            raise TypeError(
                f"viz.graph: names[{name!r}] is a {type(tensor).__name__}, expected a needle.Tensor"
            )
        labels[id(tensor)] = name
    return labels


def _adjoint_values(forward: list[Value]) -> list[Value]:
    """The nodes of the forward nodes' ``.grad`` graphs that are not forward nodes."""
    record_gradient_graphs(forward)  # a default backward() records them on demand
    grads = [v.grad for v in forward if getattr(v, "grad", None) is not None]
    if not grads:
        raise ValueError(
            "viz.graph(adjoints=True): no tensor of this graph has a .grad; "
            "call loss.backward() first"
        )
    known = {id(v) for v in forward}
    return [v for v in find_topo_sort(grads) if id(v) not in known]


def _describe(values: list[Value], n_forward: int, labels: dict[int, str]) -> Graph:
    """Nodes and edges for ``values`` (the first ``n_forward`` of them are the forward graph)."""
    ids = {id(v): f"v{i}" for i, v in enumerate(values)}
    nodes, edges = [], []
    for i, value in enumerate(values):
        node_id = ids[id(value)]
        nodes.append(_node(node_id, value, i < n_forward, labels))
        edges += [Edge(ids[id(x)], node_id, k) for k, x in enumerate(value.inputs)]
    by_value = {id(v): node for v, node in zip(values, nodes)}
    for value in values[:n_forward]:
        grad = getattr(value, "grad", None)
        if grad is not None and id(grad) in by_value:
            # One adjoint can be the .grad of several nodes (EWiseAdd passes out_grad on).
            by_value[id(grad)].grad_of += (ids[id(value)],)
            edges.append(Edge(ids[id(value)], ids[id(grad)], kind="grad"))
    return Graph(nodes, edges)


def _node(node_id: str, value: Value, is_forward: bool, labels: dict[int, str]) -> Node:
    place = module_place(value)
    return Node(
        id=node_id,
        kind=_kind(value, is_forward),
        op=op_label(value.op) if value.op is not None else "",
        shape=_shape(value),
        dtype=_dtype(value),
        name=labels.get(id(value)) or recorded_name(value) or "",
        module=place.path if place else "",
        group=place.top if place else "",
        group_type=place.top_type if place else "",
        tensor=value,
    )


def _kind(value: Value, is_forward: bool) -> str:
    from ..nn import Parameter

    if not is_forward:
        return "adjoint"
    if value.op is not None:
        return "op"
    if isinstance(value, Parameter):
        return "parameter"
    return "input" if value.requires_grad else "constant"


def op_label(op) -> str:
    """The op's class name with its simple attributes, e.g. ``Summation(axes=(1,))``.

    >>> from needle import ops
    >>> op_label(ops.AddScalar(2.0)), op_label(ops.Transpose())
    ('AddScalar(scalar=2.0)', 'Transpose')
    """
    attrs = [
        f"{k}={_attr_text(v)}"
        for k, v in vars(op).items()
        if not k.startswith("_") and _is_simple(v) and v is not None
    ]
    return f"{type(op).__name__}({', '.join(attrs)})" if attrs else type(op).__name__


def _is_simple(value) -> bool:
    if isinstance(value, numpy.ndarray):
        return value.size == 1  # a NumPy size-1 array used as a scalar
    return isinstance(value, _SIMPLE) or isinstance(value, numpy.generic)


def _attr_text(value) -> str:
    if isinstance(value, (numpy.ndarray, numpy.generic)):
        value = value.item()
    text = repr(value)
    return format(value, ".6g") if isinstance(value, float) and len(text) > 8 else text


def _shape(value: Value) -> tuple:
    if isinstance(value, Tensor):
        return tuple(value.shape)
    return tuple(tuple(part.shape) for part in value.realize_cached_data())


def _dtype(value: Value) -> str:
    if isinstance(value, Tensor):
        return str(value.dtype)
    parts: Iterable = value.realize_cached_data()
    return ",".join(sorted({str(part.dtype) for part in parts}))
