"""Graphviz output: DOT text (pure Python), and SVG/PNG through Graphviz.

Colours (the legend of every picture, also in docs/viz.md):

========================  =========  ===================================================
kind                      fill       meaning
========================  =========  ===================================================
``input``                 yellow     a leaf tensor that requires grad (``x``)
``parameter``             green      a ``Parameter`` of a model, named by its module path
``constant``              grey       a leaf that needs no gradient (data, labels, masks)
``op``                    blue       made by an op in the forward pass
``adjoint``               orange     made by ``backward()``: a gradient node
``module``                purple     a collapsed module (``collapse="module"``)
``adjoint-module``        salmon     the gradient nodes of one collapsed module
========================  =========  ===================================================

A dashed orange edge labelled ``grad`` goes from a forward node to its ``.grad``;
argument edges of ops with several inputs are numbered in argument order.
"""

from __future__ import annotations

import os
import warnings

__all__ = ["GraphvizNotFoundError", "FILL", "to_dot", "render", "save", "svg_or_none"]

FILL = {
    "input": "#fff3b0",
    "parameter": "#c8e6c9",
    "constant": "#e0e0e0",
    "op": "#bbdefb",
    "adjoint": "#ffccbc",
    "module": "#d1c4e9",
    "adjoint-module": "#ffab91",
}
GRAD_EDGE_COLOUR = "#e64a19"
_FORMATS = (".dot", ".svg", ".png")


class GraphvizNotFoundError(RuntimeError):
    """SVG or PNG output was asked for but Graphviz (the program or the package) is missing."""


def to_dot(graph) -> str:
    """DOT text for a :class:`~needle.viz.Graph`: nodes in order, edges in argument order."""
    lines = [
        "digraph needle {",
        '  graph [rankdir=TB, fontname="Helvetica", nodesep=0.25, ranksep=0.35];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=8, arrowsize=0.6];',
    ]
    lines += _clustered_nodes(graph)
    many_args = {e.dst for e in graph.edges if e.kind == "arg" and e.index > 0}
    lines += [_edge_line(e, e.dst in many_args) for e in graph.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _clustered_nodes(graph) -> list[str]:
    """Node lines; the forward nodes of one top-level module inside a labelled cluster."""
    clusters: dict[str, list] = {}
    lines = []
    for node in graph.nodes:
        if node.group and node.kind not in ("adjoint", "module", "adjoint-module"):
            clusters.setdefault(node.group, []).append(node)
        else:
            lines.append(_node_line(node))
    for k, (group, members) in enumerate(clusters.items()):
        label = _quote(f"{group} ({members[0].group_type})")
        lines.append(f"  subgraph cluster_{k} {{")
        lines.append(f'    label={label}; style="rounded,dashed"; color="#9e9e9e"; fontsize=9;')
        lines += ["  " + _node_line(node) for node in members]
        lines.append("  }")
    return lines


def _node_line(node) -> str:
    return (
        f'  {node.id} [label={_quote(_label(node))}, fillcolor="{FILL[node.kind]}", '
        f"tooltip={_quote(node.module or node.kind)}];"
    )


def _label(node) -> str:
    """``v3  EWiseMul`` / shape and dtype / what it is the gradient of."""
    if node.kind in ("module", "adjoint-module"):
        return f"{node.title}\n{node.members} nodes"
    lines = [f"{node.id}  {node.title}"]
    if node.name and node.op:
        lines.append(node.op)
    lines.append(f"{_shape_text(node.shape)} {node.dtype}")
    if node.grad_of:
        lines.append("grad of " + ", ".join(node.grad_of))
    return "\n".join(lines)


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _edge_line(edge, numbered: bool) -> str:
    if edge.kind == "grad":
        return (
            f'  {edge.src} -> {edge.dst} [style=dashed, color="{GRAD_EDGE_COLOUR}", '
            f'fontcolor="{GRAD_EDGE_COLOUR}", label="grad"];'
        )
    return (
        f'  {edge.src} -> {edge.dst} [label=" {edge.index}"];'
        if numbered
        else (f"  {edge.src} -> {edge.dst};")
    )


def _quote(text: str) -> str:
    """A DOT string literal (backslashes and quotes escaped, newlines as \\n)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render(dot_text: str, fmt: str) -> bytes:
    """Lay out ``dot_text`` with Graphviz's ``dot`` and return it as ``fmt`` (``svg``, ``png``).

    Raises:
        GraphvizNotFoundError: the ``graphviz`` Python package or the Graphviz program is
            missing; the message says what to install.
    """
    try:
        import graphviz
    except ImportError:
        raise GraphvizNotFoundError(
            f"viz: {fmt.upper()} output needs the graphviz Python package: "
            f"pip install 'needle-dl[viz]' (and the Graphviz program: apt-get install "
            f"graphviz, or brew install graphviz); .dot text and viz.trace work without it"
        ) from None
    try:
        return graphviz.Source(dot_text).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise GraphvizNotFoundError(
            f"viz: {fmt.upper()} output needs the Graphviz program 'dot', which is not on "
            f"PATH: apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS), "
            f"or scripts/install-viz-deps.sh; .dot text and viz.trace work without it"
        ) from None


def save(graph, path: str) -> str:
    """Write ``graph`` to ``path`` as DOT, SVG or PNG, chosen by the suffix. Returns ``path``."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in _FORMATS:
        raise ValueError(
            f"viz: cannot save a graph as {path!r}: the suffix must be one of "
            f"{', '.join(_FORMATS)} (an .html trace comes from viz.trace)"
        )
    dot_text = graph.to_dot()
    data = dot_text.encode() if suffix == ".dot" else render(dot_text, suffix[1:])
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def svg_or_none(dot_text: str) -> str | None:
    """SVG text for Jupyter, or None (and a warning saying what to install) without Graphviz."""
    try:
        return render(dot_text, "svg").decode()
    except GraphvizNotFoundError as e:
        warnings.warn(str(e), stacklevel=3)
        return None
