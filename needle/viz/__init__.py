"""See the graph: draw the forward graph, its adjoint nodes, and step through backward.

* :func:`graph` — the graph that produced some tensors, optionally extended by the
  gradient nodes ``backward()`` created; write it as DOT, SVG or PNG, or show it in
  Jupyter.
* :func:`trace` — a self-contained HTML page stepping through the backward pass.
* :func:`record` — remember which module of a model made each node (for names and
  ``collapse="module"``).

See docs/viz.md. SVG/PNG need Graphviz (``pip install 'needle-dl[viz]'`` and
``apt-get install graphviz``); DOT text and the trace do not.
"""

from .dot import GraphvizNotFoundError
from .graph import graph
from .model import Edge, Graph, Node
from .modules import module_place, record, recorded_name
from .trace import trace

__all__ = [
    "graph",
    "trace",
    "record",
    "Graph",
    "Node",
    "Edge",
    "GraphvizNotFoundError",
    "module_place",
    "recorded_name",
]
