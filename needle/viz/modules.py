"""Which module made which graph node: :func:`record` and the names it remembers.

A forward graph only knows ops and tensors; the model structure (``modules.2`` is a
residual block, ``modules.0.weight`` its first weight) lives in the :class:`~needle.nn.Module`
tree. :func:`record` wraps every module's ``forward`` for the duration of a ``with``
block; each call claims the nodes it created — those reachable from its output without
passing through its inputs — for the module's dotted path. The innermost module returns
first, so a node belongs to the deepest module that made it.

A ``backward()`` inside the block is watched too: the gradient nodes made while
differentiating a node go with that node's module (the nodes that sum a node's partial
adjoints go with the node whose gradient uses the sum).

The registry holds weak references: recorded graphs are freed as usual.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import autograd
from ..autograd import Value

if TYPE_CHECKING:  # for the annotations only: needle.nn is loaded when first needed
    from ..nn import Module

__all__ = ["ModulePlace", "record", "module_place", "recorded_name"]


@dataclass(frozen=True)
class ModulePlace:
    """Where a node was made: the innermost module's dotted path and its top-level part.

    ``top`` is the path of the root model's direct child that contains the module (the
    box a collapsed graph draws), ``top_type`` that child's class name; both are ``""``
    for nodes made by the root model's own ``forward``.
    """

    path: str
    top: str
    top_type: str


class _WeakIdentityMap:
    """A map from graph nodes to values that holds the nodes weakly and compares them by
    identity (a WeakKeyDictionary compares keys with ``==``, which is elementwise for
    tensors); an entry goes when its node is freed."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref, Any]] = {}

    def get(self, key: Value, default: Any = None) -> Any:
        entry = self._items.get(id(key))
        return entry[1] if entry is not None and entry[0]() is key else default

    def __contains__(self, key: Value) -> bool:
        entry = self._items.get(id(key))
        return entry is not None and entry[0]() is key

    def __setitem__(self, key: Value, value: Any) -> None:
        items, key_id = self._items, id(key)

        def forget(ref: weakref.ref) -> None:
            if items.get(key_id, (None,))[0] is ref:
                del items[key_id]

        items[key_id] = (weakref.ref(key, forget), value)

    def setdefault(self, key: Value, value: Any) -> Any:
        if key not in self:
            self[key] = value
        return self.get(key)


_PLACES = _WeakIdentityMap()  # node -> ModulePlace
_NAMES = _WeakIdentityMap()  # parameter or buffer -> its dotted name


def module_place(node: Value) -> ModulePlace | None:
    """The module that made ``node`` in a :func:`record` block (None if unknown)."""
    return _PLACES.get(node)


def recorded_name(node: Value) -> str | None:
    """The dotted name (``modules.0.weight``) of a parameter or buffer of a recorded model."""
    return _NAMES.get(node)


@contextlib.contextmanager
def record(model: Module) -> Iterator[None]:
    """Remember, for every node made inside the block, which sub-module of ``model`` made it.

    Also remembers the dotted names of ``model``'s parameters and buffers, so
    :func:`needle.viz.graph` labels them without being given the model.

    >>> import needle as ndl
    >>> from needle import nn, viz
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> with viz.record(model):
    ...     out = model(ndl.Tensor([[1.0, 2.0]], dtype="float32"))
    >>> viz.module_place(out).path, viz.recorded_name(model.modules[0].weight)
    ('modules.1', 'modules.0.weight')
    """
    from ..nn import Module

    if not isinstance(model, Module):
        raise TypeError(f"viz.record: expected a needle.nn.Module, got {type(model).__name__}")
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        _NAMES[tensor] = name
    modules = [("", model)] + [(n, m) for n, m in model._named_members() if isinstance(m, Module)]
    # A forward set on the instance (say, by an enclosing record block) is put back after.
    own_forwards = [vars(module).get("forward") for _, module in modules]
    # The model's inputs (the data) were not made by the backward pass: its walk stops there.
    model_inputs: dict[int, Value] = {}
    model.forward = _claiming_forward(model.forward, _place_of("", model), model_inputs)
    for path, module in modules[1:]:
        module.forward = _claiming_forward(module.forward, _place_of(path, model), {})
    previous_hook = autograd._partial_adjoint_hook
    autograd._partial_adjoint_hook = _claiming_backward(previous_hook, model_inputs)
    try:
        yield
    finally:
        autograd._partial_adjoint_hook = previous_hook
        for (_, module), own in zip(modules, own_forwards):
            if own is None:
                del module.forward  # the instance attribute: the class's forward shows again
            else:
                module.forward = own


def _place_of(path: str, model) -> ModulePlace:
    """The ModulePlace of the module at dotted ``path`` below ``model``."""
    if not path:
        return ModulePlace("", "", "")
    top = _top_child_path(path, model)
    return ModulePlace(path, top, type(_resolve(model, top)).__name__)


def _top_child_path(path: str, model) -> str:
    """The shortest prefix of ``path`` that names a Module (a direct child of ``model``)."""
    from ..nn import Module

    parts = path.split(".")
    for end in range(1, len(parts) + 1):
        if isinstance(_resolve(model, ".".join(parts[:end])), Module):
            return ".".join(parts[:end])
    return path


def _resolve(model, path: str) -> Any:
    """The object at dotted ``path`` (attributes, list/tuple indices, dict keys)."""
    value = model
    for part in path.split("."):
        if isinstance(value, (list, tuple)):
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value[part]
        else:
            value = vars(value)[part]
    return value


def _claiming_forward(forward, place: ModulePlace, inputs_seen: dict[int, Value]):
    """``forward``, followed by claiming the nodes it made for ``place``.

    Its input nodes are added to ``inputs_seen`` (id → node).
    """

    def recorded_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        inputs_seen.update((id(v), v) for v in _values_in((args, kwargs)))
        inputs = {id(v) for v in _values_in((args, kwargs))}
        for node in _made_between(list(_values_in(out)), inputs):
            _PLACES.setdefault(node, place)  # an inner module claimed it first: keep that
        return out

    return recorded_forward


def _claiming_backward(previous_hook, model_inputs: dict[int, Value]):
    """A partial-adjoint hook giving the gradient nodes of a node its module's place."""
    handled: set[int] = set()
    alive: list[Value] = []  # keeps the handled ids from being reused during the block

    def hook(node: Value, inp: Value, partial: Value) -> None:
        if previous_hook is not None:
            previous_hook(node, inp, partial)
        place = _PLACES.get(node)
        stack = [partial]
        while stack:  # the nodes ``node``'s gradient made: new, unplaced ancestors
            value = stack.pop()
            if id(value) in handled or id(value) in model_inputs or value in _PLACES:
                continue
            handled.add(id(value))
            alive.append(value)
            if place is not None:
                _PLACES[value] = place
            stack.extend(value.inputs)

    return hook


def _values_in(obj: Any) -> Iterator[Value]:
    """The graph nodes in ``obj`` (a Value, or lists, tuples and dicts of them)."""
    if isinstance(obj, Value):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _values_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _values_in(item)


def _made_between(outputs: list[Value], inputs: set[int]) -> list[Value]:
    """Nodes reachable from ``outputs`` without entering a node whose id is in ``inputs``."""
    seen = set(inputs)
    found, stack = [], list(outputs)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        found.append(node)
        stack.extend(node.inputs)
    return found
