"""``viz.trace(loss)``: one HTML page that steps through the backward pass.

The page lists the forward graph as a tape (``v0``, ``v1``, … in topological order, the
course's Wengert list) and steps through ``backward()`` in reverse topological order,
one node per step: the node, the partial adjoints its users sent it and their sum, which
is the node's ``.grad`` — ``v̄_i = Σ_j v̄_j ∂v_j/∂v_i``. Small tensors are printed in
full; larger ones are summarised by shape, norm, min, max and mean.

The page is self-contained (the data is embedded as JSON, the script and style are
inline): it opens from disk with no network. The template ships as package data
(``needle/viz/trace_template.html``) and is read through :mod:`importlib.resources`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING

import numpy

from .. import autograd
from ..autograd import Tensor, Value, no_grad
from .dot import GraphvizNotFoundError, render
from .graph import graph

if TYPE_CHECKING:  # for the annotations only: needle.nn is loaded when first needed
    from ..nn import Module

__all__ = ["trace", "summarise", "SMALL_TENSOR"]

#: Tensors with at most this many elements are printed in full.
SMALL_TENSOR = 16
_DATA_MARK = "/*NEEDLE_TRACE_DATA*/"
_TITLE_MARK = "<!--NEEDLE_TRACE_TITLE-->"
_SVG_MARK = "<!--NEEDLE_TRACE_SVG-->"


def trace(
    loss: Tensor,
    path: str | None = None,
    *,
    model: Module | None = None,
    names: Mapping[str, Value] | None = None,
    title: str = "backward pass",
    picture: bool | None = None,
) -> str:
    """Run ``loss.backward()`` while recording it; return (and write to ``path``) an HTML page.

    Every node's ``.grad`` is set, exactly as by ``loss.backward()``.

    Args:
        loss: the tensor to differentiate (its default ``out_grad`` is ones).
        path: where to write the page (None: only return it).
        model, names: labels for the leaves, as in :func:`needle.viz.graph`.
        title: shown at the top of the page.
        picture: embed the forward graph drawn by Graphviz, its nodes highlighted step
            by step (None: when Graphviz is installed; True: raise if it is not).

    >>> import needle as ndl
    >>> x = ndl.Tensor([1.0, 2.0])
    >>> page = trace((x * x).sum(), names={"x": x})
    >>> page.startswith("<!DOCTYPE html>"), x.grad.numpy().tolist()
    (True, [2.0, 4.0])
    """
    if not isinstance(loss, Tensor):
        raise TypeError(f"viz.trace: expected a needle.Tensor, got {type(loss).__name__}")
    forward = graph(loss, model=model, names=names, collapse="none")
    ids = {id(node.tensor): node.id for node in forward.nodes}
    received = _record_backward(loss)
    data = {
        "title": title,
        "nodes": [_node_data(node, forward) for node in forward.nodes],
        "steps": _steps(forward, ids, received, loss),
        "small": SMALL_TENSOR,
    }
    page = _fill_template(data, title, _picture(forward, picture))
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    return page


def _record_backward(loss: Tensor) -> dict[int, list[tuple[Value, Value]]]:
    """``loss.backward()``; returns id(node) → [(user, partial adjoint), …] in arrival order."""
    received: dict[int, list[tuple[Value, Value]]] = {}
    previous = autograd._partial_adjoint_hook  # viz.record's, inside its block

    def hook(user: Value, inp: Value, partial: Value) -> None:
        received.setdefault(id(inp), []).append((user, partial))
        if previous is not None:
            previous(user, inp, partial)

    autograd._partial_adjoint_hook = hook
    try:
        loss.backward()
    finally:
        autograd._partial_adjoint_hook = previous
    return received


def _steps(forward, ids: dict, received: dict, loss: Tensor) -> list[dict]:
    """One step per node that received an adjoint, in reverse topological order."""
    steps = []
    for node in reversed(forward.nodes):
        value = node.tensor
        if value is loss:
            parts = [{"from": None, "value": summarise(loss.grad)}]  # the seed: ones
        elif id(value) in received:
            parts = [
                {"from": ids[id(user)], "value": summarise(partial)}
                for user, partial in received[id(value)]
            ]
        else:
            continue  # no path to the loss needs this node's gradient
        steps.append({"node": node.id, "contributions": parts, "sum": summarise(value.grad)})
    return steps


def _node_data(node, forward) -> dict:
    return {
        "id": node.id,
        "kind": node.kind,
        "title": node.title,
        "op": node.op,
        "name": node.name,
        "module": node.module,
        "dtype": node.dtype,
        "shape": list(node.shape),
        "inputs": forward.inputs_of(node.id),
        "value": summarise(node.tensor),
    }


def summarise(value: Value) -> dict:
    """A tensor's values for the page: ``text`` always; ``shape``, ``size`` and ``norm``.

    Small tensors (≤ :data:`SMALL_TENSOR` elements) are printed in full with 6
    significant digits; larger ones as shape, norm, min, max and mean.

    >>> import needle as ndl
    >>> summarise(ndl.Tensor([3.0, 4.0]))["text"]
    '[3 4]'
    >>> summarise(ndl.init.ones(5, 5))["text"]
    'shape (5, 5)  norm 5  min 1  max 1  mean 1'
    """
    if not isinstance(value, Tensor):  # a TensorTuple: each element in turn
        with no_grad():
            parts = [summarise(value[i]) for i in range(len(value))]
        return {
            "shape": [p["shape"] for p in parts],
            "size": sum(p["size"] for p in parts),
            "norm": float(numpy.sqrt(sum(p["norm"] ** 2 for p in parts))),
            "text": "\n".join(f"[{i}] {p['text']}" for i, p in enumerate(parts)),
        }
    array = numpy.asarray(value.numpy(), dtype=numpy.float64)
    norm = float(numpy.linalg.norm(array.ravel()))
    if array.size <= SMALL_TENSOR:
        text = numpy.array2string(array, separator=" ", formatter={"float_kind": _number})
    else:
        text = (
            f"shape {tuple(array.shape)}  norm {_number(norm)}  min {_number(array.min())}"
            f"  max {_number(array.max())}  mean {_number(array.mean())}"
        )
    return {"shape": list(array.shape), "size": int(array.size), "norm": norm, "text": text}


def _number(x: float) -> str:
    return format(float(x), ".6g")


def _picture(forward, wanted: bool | None) -> str:
    """The forward graph as inline SVG ("" when not wanted, or unavailable and optional)."""
    if wanted is False:
        return ""
    try:
        svg = render(forward.to_dot(), "svg").decode()
    except GraphvizNotFoundError:
        if wanted:
            raise
        return ""
    return svg[svg.index("<svg") :]  # inline: without the XML prolog and DOCTYPE


def _fill_template(data: dict, title: str, svg: str) -> str:
    template = resources.files(__package__).joinpath("trace_template.html").read_text("utf-8")
    # "</" inside a <script> would end it early; "<\/" is the same string in JSON.
    payload = json.dumps(data, allow_nan=True).replace("</", "<\\/")
    page = template.replace(_DATA_MARK, payload).replace(_TITLE_MARK, html.escape(title))
    return page.replace(_SVG_MARK, svg)
