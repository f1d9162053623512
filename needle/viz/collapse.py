"""``collapse="module"``: draw each top-level module of a recorded model as one box.

Forward nodes know their module from :func:`needle.viz.record`, and so do the gradient
nodes of a ``backward()`` run inside the ``record`` block. Other adjoint nodes are
placed by where they come from: a node that is some forward nodes' ``.grad`` goes with
the last of them; any other goes with the latest forward node among its arguments (an
op's gradient takes the op's node or inputs as arguments), else with its first placed
adjoint argument. That guess is right inside a module; at a module's border a gradient
node may land in the neighbouring box.
"""

from __future__ import annotations

from .model import Edge, Graph, Node

__all__ = ["collapse_modules"]


def collapse_modules(g: Graph, required: bool) -> Graph:
    """``g`` with the nodes of each top-level module (and its adjoints) merged into a box.

    Args:
        required: raise when no node has module information (else return ``g`` as is).
    """
    groups = _adjoint_groups(g)
    if not any(node.group for node in g.nodes):
        if required:
            raise ValueError(
                "viz.graph(collapse='module'): no node of this graph was made inside "
                "viz.record(model); run the forward pass in `with viz.record(model):`"
            )
        return g
    rep, boxes = _boxes(g, groups)
    nodes, placed = [], set()
    for node in g.nodes:
        box = boxes.get(rep[node.id])
        if box is None:
            node.grad_of = tuple(dict.fromkeys(rep[i] for i in node.grad_of))
            nodes.append(node)
        elif box.id not in placed:
            placed.add(box.id)
            nodes.append(box)
    return Graph(nodes, _merged_edges(g.edges, rep, boxes))


def _adjoint_groups(g: Graph) -> dict[str, tuple[str, str]]:
    """node id → (group, group type), for forward nodes as recorded, adjoints as placed."""
    groups = {n.id: (n.group, n.group_type) for n in g.nodes}
    order = {n.id: i for i, n in enumerate(g.nodes)}
    is_adjoint = {n.id: n.kind == "adjoint" for n in g.nodes}
    for node in g.nodes:
        if not is_adjoint[node.id] or node.group:
            continue
        args = [a for a in g.inputs_of(node.id) if groups[a][0]]
        forward = [a for a in args if not is_adjoint[a]]
        adjoint = [a for a in args if is_adjoint[a]]
        if node.grad_of:
            groups[node.id] = groups[node.grad_of[-1]]
        elif forward:
            groups[node.id] = groups[max(forward, key=order.__getitem__)]
        else:
            groups[node.id] = groups[adjoint[0]] if adjoint else ("", "")
    return groups


def _boxes(g: Graph, groups: dict) -> tuple[dict[str, str], dict[str, Node]]:
    """Each node's representative id, and the box Node of every representative that is one."""
    rep, boxes = {}, {}
    for node in g.nodes:
        group, group_type = groups[node.id]
        if not group:
            rep[node.id] = node.id
            continue
        is_grad = node.kind == "adjoint"
        box_id = f"{'g' if is_grad else 'm'}_{group.replace('.', '_')}"
        rep[node.id] = box_id
        if box_id not in boxes:
            name = f"∇ {group}" if is_grad else f"{group} ({group_type})"
            kind = "adjoint-module" if is_grad else "module"
            boxes[box_id] = Node(box_id, kind, name=name, module=group, members=0)
        boxes[box_id].members += 1
    return rep, boxes


def _merged_edges(edges: list[Edge], rep: dict[str, str], boxes: dict) -> list[Edge]:
    """Edges between representatives, without self-loops or repeats, in first-seen order."""
    merged: dict[tuple, Edge] = {}
    for e in edges:
        src, dst = rep[e.src], rep[e.dst]
        if src == dst:
            continue
        index = 0 if dst in boxes else e.index  # a box has no argument order
        key = (src, dst, index, e.kind)
        merged.setdefault(key, Edge(src, dst, index, e.kind))
    return list(merged.values())
