"""``needle graph``: a picture of a graph, or a backward trace, without writing code.

Two ways to name the graph:

* ``needle graph --model mlp-resnet --out runs/graph.svg`` — a ready-made example
  (:mod:`needle.viz.examples`) on a random batch;
* ``needle graph my_script.py:make_loss --out runs/graph.svg`` — calls ``make_loss()`` from
  your file. It returns the tensor to draw (or a tuple of tensors, optionally with the
  model among them, whose parameter names then label the leaves).

The suffix of ``--out`` picks the output: ``.svg``, ``.png`` (need Graphviz), ``.dot``
(text), or ``.html`` — the step-through trace of the backward pass (:func:`trace`).
Its folder is created when missing; the default, ``runs/graph.svg``, is under ``runs/``
with the training runs (ignored by git).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

from .dot import GraphvizNotFoundError

__all__ = ["add_parser", "run"]

EXIT_USAGE = 2
#: ``--out``'s default: under runs/, with the training runs, out of the work tree's way.
DEFAULT_OUT = "runs/graph.svg"
#: What ``needle graph`` says when it is not told what to draw.
USAGE_EXAMPLES = (
    "e.g. needle graph --model mlp-resnet --out runs/graph.svg, or needle "
    "graph my_script.py:make_loss (a function returning the loss tensor)"
)


def add_parser(commands) -> argparse.ArgumentParser:
    """Add the ``graph`` sub-command to ``commands`` (argparse sub-parsers); returns it."""
    from .examples import EXAMPLES

    parser = commands.add_parser(
        "graph",
        help="draw a computational graph (and its gradients), or trace backward",
        description="Draw the forward graph of a loss, optionally with the gradient nodes "
        "backward() creates, or write a page stepping through the backward "
        "pass. The suffix of --out picks the output: .svg, .png, .dot or .html "
        "(the trace).",
    )
    parser.add_argument(
        "target",
        nargs="?",
        metavar="SCRIPT.py:FUNCTION",
        help="a function in your file that returns the tensor to draw",
    )
    parser.add_argument(
        "--model",
        choices=sorted(EXAMPLES),
        help="a ready-made example instead: its loss on a random batch",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="PATH",
        help=f"output file: .svg, .png, .dot or .html; its folder is created "
        f"if missing (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--adjoints",
        action="store_true",
        help="run backward() first and draw the gradient nodes it creates",
    )
    parser.add_argument(
        "--collapse",
        choices=["auto", "module", "none"],
        default="auto",
        help="draw each top-level module as one box (default: auto, by size)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        metavar="N",
        help="batch size of --model's random batch (default: 4)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``needle graph``; returns the exit status (2 after a one-line error)."""
    from .graph import graph
    from .trace import trace

    try:
        tensors, model = _target(args)
        _make_folder(args.out)
        if args.out.lower().endswith(".html"):
            trace(tensors[0], args.out, model=model, title=args.model or args.target)
        else:
            graph(*tensors, adjoints=args.adjoints, model=model, collapse=args.collapse).save(
                args.out
            )
    except (GraphvizNotFoundError, ValueError, TypeError, OSError) as e:
        print(f"needle graph: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    print(f"wrote {args.out}", flush=True)
    return 0


def _make_folder(path: str) -> None:
    """Create the folder of ``path`` if missing; an OSError names the folder."""
    folder = os.path.dirname(path)
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"cannot create the folder {folder} for --out {path}: {e.strerror or e}"
        ) from e


def _target(args: argparse.Namespace) -> tuple[list, object]:
    """The tensors to draw and the model (or None), from --model or SCRIPT.py:FUNCTION."""
    from .examples import example

    if args.model is None and args.target is None:
        raise ValueError(
            f"nothing to draw: give SCRIPT.py:FUNCTION or --model NAME; {USAGE_EXAMPLES}"
        )
    if args.model is not None and args.target is not None:
        raise ValueError(
            f"give SCRIPT.py:FUNCTION or --model NAME, not both "
            f"({args.target} and --model {args.model})"
        )
    if args.model is not None:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
        loss, model = example(args.model, args.batch_size, backward=args.adjoints)
        return [loss], model
    tensors, model = _call_script(args.target)
    if args.adjoints:
        tensors[0].backward()
    return tensors, model


def _call_script(target: str) -> tuple[list, object]:
    """Call FUNCTION() from SCRIPT.py; split its result into tensors and a model."""
    from ..autograd import Value
    from ..nn import Module

    script, _, function = target.rpartition(":")
    if not script or not function:
        raise ValueError(f"{target!r}: expected SCRIPT.py:FUNCTION, e.g. model.py:make_loss")
    if not os.path.isfile(script):
        raise FileNotFoundError(f"{script}: no such file")
    namespace = runpy.run_path(script, run_name="__needle_graph__")
    if not callable(namespace.get(function)):
        raise ValueError(f"{script} defines no function {function!r}")
    result = namespace[function]()
    items = list(result) if isinstance(result, (list, tuple)) else [result]
    tensors = [x for x in items if isinstance(x, Value)]
    models = [x for x in items if isinstance(x, Module)]
    if not tensors or len(tensors) + len(models) != len(items) or len(models) > 1:
        raise TypeError(
            f"{target} returned {_kinds(items)}; expected a needle Tensor, or a "
            f"tuple of Tensors with at most one Module (the model)"
        )
    return tensors, (models[0] if models else None)


def _kinds(items: list) -> str:
    return "(" + ", ".join(type(x).__name__ for x in items) + ")"
