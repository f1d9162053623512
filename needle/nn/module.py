"""``Parameter`` and ``Module``: the base of every layer.

A :class:`Module` finds its parameters, buffers and sub-modules by walking its
instance ``__dict__`` (in attribute order), descending into sub-modules and into
dicts (values in insertion order), lists and tuples. Nothing has to be registered:
assigning ``self.weight = Parameter(...)`` or ``self.layers = [Linear(...), ...]`` is
enough, exactly as in the course's framework.

>>> from needle import nn
>>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
>>> [name for name, _ in model.named_parameters()]
['modules.0.weight', 'modules.0.bias']
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..autograd import RemovableHandle, Tensor


class Parameter(Tensor):
    """A tensor that is a trainable parameter of a :class:`Module`.

    It behaves exactly like a :class:`~needle.Tensor`; the subclass only marks it,
    so :meth:`Module.parameters` can find it.

    >>> import needle as ndl
    >>> w = Parameter(ndl.init.ones(2, 3))
    >>> w.shape, w.requires_grad
    ((2, 3), True)
    """

    __slots__ = ()


class StateDictError(KeyError, ValueError):
    """:meth:`Module.load_state_dict` got missing, unexpected or mismatched entries.

    It is both a ``KeyError`` (missing/unexpected keys) and a ``ValueError`` (shape or
    dtype mismatch), so either ``except`` clause catches it.
    """

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of the message (quotes, escaped newlines).
        return str(self.args[0]) if self.args else ""


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` ignored (only non-empty with ``strict=False``)."""

    missing_keys: list
    unexpected_keys: list


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _walk(value: Any, name: str, seen: set, descend: bool) -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted name, item)`` for each Tensor and Module reachable from ``value``.

    Depth-first in attribute / insertion / index order. A Module is yielded before
    its contents (which are only visited when ``descend``). ``seen`` holds the ids of
    everything visited, so a shared tensor or module (and a reference cycle) is
    visited once, under the first name it was reached by.
    """
    if isinstance(value, (Tensor, Module, dict, list, tuple)):
        if id(value) in seen:
            return
        seen.add(id(value))
    if isinstance(value, Tensor):
        yield name, value
    elif isinstance(value, Module):
        yield name, value
        if descend:
            for key, item in vars(value).items():
                yield from _walk(item, _join(name, key), seen, descend)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, _join(name, str(key)), seen, descend)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _walk(item, _join(name, str(index)), seen, descend)


class _ModuleHooks:
    """A module's forward hooks, in registration order (not a list or dict, so the
    traversal of the module's attributes never looks inside)."""

    def __init__(self) -> None:
        self.pre: list = []
        self.post: list = []

    def add(self, kind: str, hook) -> RemovableHandle:
        hooks = getattr(self, kind)
        entry = [hook]  # a fresh object per registration: the same function may come twice
        hooks.append(entry)
        return RemovableHandle(hooks, entry, f"forward {kind}-hook")

    def call(self, module: Module, args: tuple, kwargs: dict) -> Any:
        """``module.forward(*args, **kwargs)`` with the pre-hooks before and the hooks after."""
        for (hook,) in list(self.pre):
            result = hook(module, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = module.forward(*args, **kwargs)
        for (hook,) in list(self.post):
            result = hook(module, args, output)
            if result is not None:
                output = result
        return output


class Module:
    """Base class of layers and models: override :meth:`forward`; call the module to run it.

    Parameters (:class:`Parameter` attributes), buffers (other :class:`~needle.Tensor`
    attributes, e.g. BatchNorm's running statistics) and sub-modules are found through
    the instance attributes, also inside dicts, lists and tuples. Each one is listed
    once, under the first name it is reached by (tied weights are not repeated).

    >>> class Affine(Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.scale = Parameter(Tensor([2.0]))
    ...     def forward(self, x):
    ...         return x * self.scale
    >>> Affine()(Tensor([3.0])).numpy().tolist()
    [6.0]
    """

    #: True in training mode (the default), False after :meth:`eval`.
    training: bool = True

    def __init__(self) -> None:
        self.training = True

    def forward(self, *args, **kwargs):
        """The computation of this module; subclasses override it."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args, **kwargs):
        hooks = self.__dict__.get("_forward_hooks")  # None unless a hook was registered
        if hooks is None:
            return self.forward(*args, **kwargs)
        return hooks.call(self, args, kwargs)

    # ----- hooks ----------------------------------------------------------------------------
    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, args)`` before each ``forward``; a returned value replaces the
        positional arguments (a tuple, or one value). Returns a handle with ``remove()``."""
        return self._module_hooks("register_forward_pre_hook", hook).add("pre", hook)

    def register_forward_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after each ``forward`` (to inspect activations);
        a returned value replaces the output. Returns a handle with ``remove()``.

        >>> from needle import nn
        >>> seen = []
        >>> layer = nn.ReLU()
        >>> handle = layer.register_forward_hook(lambda m, args, out: seen.append(out.shape))
        >>> _ = layer(Tensor([[1.0, -1.0]]))
        >>> seen
        [(1, 2)]
        >>> handle.remove()
        """
        return self._module_hooks("register_forward_hook", hook).add("post", hook)

    def _module_hooks(self, owner: str, hook) -> _ModuleHooks:
        if not callable(hook):
            raise TypeError(f"{owner}: the hook must be callable, got {type(hook).__name__}")
        if "_forward_hooks" not in self.__dict__:
            self.__dict__["_forward_hooks"] = _ModuleHooks()
        return self.__dict__["_forward_hooks"]

    # ----- traversal ------------------------------------------------------------------------
    def _named_members(self, descend: bool = True) -> Iterator[tuple[str, Any]]:
        seen = {id(self)}
        for key, value in vars(self).items():
            yield from _walk(value, key, seen, descend)

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` pairs in attribute order, e.g. ``modules.0.weight``.

        List and tuple indices appear as numbers, dict keys as names.
        """
        return ((n, v) for n, v in self._named_members() if isinstance(v, Parameter))

    def parameters(self) -> list[Parameter]:
        """Every Parameter reachable from this module, in attribute order, each once."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> Iterator[tuple[str, Tensor]]:
        """``(dotted name, Tensor)`` for tensor attributes that are not Parameters.

        For example BatchNorm1d's ``running_mean`` and ``running_var``.
        """
        return (
            (n, v)
            for n, v in self._named_members()
            if isinstance(v, Tensor) and not isinstance(v, Parameter)
        )

    def buffers(self) -> list[Tensor]:
        """The tensors of :meth:`named_buffers`."""
        return [b for _, b in self.named_buffers()]

    def named_modules(self) -> Iterator[tuple[str, Module]]:
        """``("", self)`` then every sub-module with its dotted name, depth first."""
        yield "", self
        yield from ((n, v) for n, v in self._named_members() if isinstance(v, Module))

    def _children(self) -> list[Module]:
        """Every module reachable from this one (all descendants, not only direct ones)."""
        return [m for name, m in self.named_modules() if name]

    def _named_children(self) -> list[tuple[str, Module]]:
        """The direct sub-modules with their attribute paths (``layers.0``, ``fn``)."""
        return [(n, v) for n, v in self._named_members(descend=False) if isinstance(v, Module)]

    def num_parameters(self) -> int:
        """The number of scalar parameters (elements of all Parameters)."""
        return sum(p.size for p in self.parameters())

    # ----- modes ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every sub-module; returns ``self``."""
        self.training = bool(mode)
        for module in self._children():
            module.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``training = False``) recursively; returns ``self``."""
        return self.train(False)

    # ----- state ------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Name → NumPy copy of every parameter, then every buffer (dotted names).

        >>> from needle import nn
        >>> list(nn.BatchNorm1d(3).state_dict())
        ['weight', 'bias', 'running_mean', 'running_var']
        """
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for name, tensor in list(self.named_parameters()) + list(self.named_buffers()):
            state[name] = np.array(tensor.numpy(), copy=True)
        return state

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy ``state`` (name → array or Tensor) into this module's tensors.

        Every tensor keeps its dtype and identity (its array is replaced). Nothing is
        copied unless everything checks out. Raises :class:`StateDictError` (a KeyError
        and a ValueError) listing missing and unexpected keys (only when ``strict``)
        and naming each key whose shape or dtype differs. Returns the ignored keys.
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"{type(self).__name__}.load_state_dict: expected a mapping of name -> array, "
                f"got {type(state).__name__}"
            )
        targets = dict(list(self.named_parameters()) + list(self.named_buffers()))
        values = {key: _as_array(value) for key, value in state.items()}
        missing = [key for key in targets if key not in values]
        unexpected = [key for key in values if key not in targets]
        problems = [_mismatch(key, targets[key], values[key]) for key in targets if key in values]
        problems = [p for p in problems if p]
        if strict:
            problems = _key_problems(missing, unexpected) + problems
        if problems:
            raise StateDictError(
                f"{type(self).__name__}.load_state_dict: the state does not fit this model:\n  "
                + "\n  ".join(problems)
                + "\n  (compare with model.state_dict().keys(); strict=False ignores missing "
                "and unexpected keys)"
            )
        for key, tensor in targets.items():
            if key in values:
                # A copy in the tensor's own dtype and device (works for any backend).
                copy = Tensor(
                    values[key], device=tensor.device, dtype=tensor.dtype, requires_grad=False
                )
                tensor.cached_data = copy.realize_cached_data()
        return IncompatibleKeys(missing, unexpected)

    # ----- repr -------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside the parentheses of this module's repr (hyper-parameters)."""
        return ""

    def _repr_children(self) -> list[tuple[str, Module]]:
        return self._named_children()

    def _repr_lines(self) -> list[str]:
        children = self._repr_children()
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not children:
            return [head + ")"]
        lines = [head]
        for name, child in children:
            child_lines = child._repr_lines()
            lines.append(f"  ({name}): {child_lines[0]}")
            lines.extend("  " + line for line in child_lines[1:])
        return lines + [")"]

    def __repr__(self) -> str:
        lines = self._repr_lines()
        count = self.num_parameters()
        if count:
            # Only the top level shows the count (nested modules use _repr_lines).
            lines[0] += f"  # {count:,} parameters"
        return "\n".join(lines)


def _as_array(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, Tensor) else np.asarray(value)


def _mismatch(key: str, tensor: Tensor, value: np.ndarray) -> str:
    if tuple(value.shape) != tuple(tensor.shape):
        return f"{key!r}: expected shape {tuple(tensor.shape)}, got {tuple(value.shape)}"
    if value.dtype != tensor.dtype:
        return (
            f"{key!r}: expected dtype {tensor.dtype}, got {value.dtype} "
            f"(cast it, e.g. value.astype('{tensor.dtype}'))"
        )
    return ""


def _key_problems(missing: list, unexpected: list) -> list[str]:
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    return problems
