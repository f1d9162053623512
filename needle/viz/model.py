"""What a drawn graph is: :class:`Node`, :class:`Edge` and the :class:`Graph` that holds them
(and renders itself through Graphviz, :mod:`.dot`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .dot import save, svg_or_none, to_dot

if TYPE_CHECKING:
    from ..autograd import Value


@dataclass
class Node:
    """One tensor of the graph (or, in a collapsed graph, one module's box).

    Attributes:
        id: ``v0``, ``v1``, … in topological order (forward nodes first).
        kind: ``input`` (a leaf that requires grad), ``parameter``, ``constant`` (a leaf
            that does not), ``op`` (made by an op in the forward pass), ``adjoint`` (made
            by the backward pass), or ``module`` / ``adjoint-module`` (a collapsed box).
        op: the op with its attributes, e.g. ``Summation(axes=(1,))``; "" for a leaf.
        shape: the tensor's shape (a tuple of shapes for a TensorTuple).
        dtype: the dtype as text.
        name: the parameter's dotted path or a name given in ``names=``; "" if none.
        module: the dotted path of the module that made it; "" if none is known.
        group: the root model's top-level module that contains ``module`` (the box
            ``collapse="module"`` draws), with its class name in ``group_type``.
        grad_of: for a node that is forward nodes' ``.grad``, their ids.
        members: in a collapsed box, the number of nodes it stands for.
        tensor: the needle Value itself (None for a box).
    """

    id: str
    kind: str
    op: str = ""
    shape: tuple = ()
    dtype: str = ""
    name: str = ""
    module: str = ""
    group: str = ""
    group_type: str = ""
    grad_of: tuple = ()
    members: int = 1
    tensor: Value | None = field(default=None, repr=False, compare=False)

    @property
    def title(self) -> str:
        """The first line of the node's label: its name, op or kind."""
        if self.kind in ("module", "adjoint-module"):
            return self.name
        if self.kind == "adjoint" and not self.op:
            return self.name or "constant"  # a gradient that depends on no input needing grad
        return self.name or self.op or self.kind


@dataclass(frozen=True)
class Edge:
    """An argument edge ``src → dst`` (``index``: argument position), or a ``grad`` edge.

    A ``grad`` edge (``kind="grad"``) goes from a forward node to its ``.grad``.
    """

    src: str
    dst: str
    index: int = 0
    kind: str = "arg"


class Graph:
    """A drawable graph: :attr:`nodes` in topological order and :attr:`edges`.

    Write it with :meth:`to_dot`, :meth:`save` (``.dot``, ``.svg``, ``.png``) or show it in
    Jupyter (it renders itself as SVG).
    """

    def __init__(self, nodes: list[Node], edges: list[Edge]):
        self.nodes = nodes
        self.edges = edges

    def node(self, node_id: str) -> Node:
        """The node with id ``node_id``."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"Graph.node: no node {node_id!r} (ids are v0 … v{len(self.nodes) - 1})")

    def inputs_of(self, node_id: str) -> list[str]:
        """The ids of a node's arguments, in argument order."""
        args = [e for e in self.edges if e.dst == node_id and e.kind == "arg"]
        return [e.src for e in sorted(args, key=lambda e: e.index)]

    def to_dot(self) -> str:
        """The graph as Graphviz DOT text (no Graphviz needed)."""
        return to_dot(self)

    def save(self, path: str) -> str:
        """Write the graph to ``path``; the suffix picks the format: ``.dot``, ``.svg``, ``.png``.

        SVG and PNG need Graphviz (see :func:`needle.viz.dot.render`). Returns ``path``.
        """
        return save(self, path)

    def _repr_svg_(self) -> str | None:
        """Jupyter's inline picture (None, with a warning, when Graphviz is missing)."""
        return svg_or_none(self.to_dot())

    def __repr__(self) -> str:
        grads = sum(n.kind.startswith("adjoint") for n in self.nodes)
        return (
            f"needle.viz.Graph({len(self.nodes)} nodes ({grads} adjoint), {len(self.edges)} edges)"
        )
