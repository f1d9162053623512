"""Optimizers: the course's SGD (momentum, L2 decay) and Adam (L2 decay); AdamW, RMSprop,
Adagrad; parameter groups with per-group options in every one.

Updates work on the parameters' detached arrays, never on graph tensors: no graph is
built (the live tensor count stays flat over any number of steps), ``p.grad`` is never
modified, and each parameter's array is *replaced* by a new one of the same dtype.
Scalars are Python floats, so float32 parameters stay float32 and the arithmetic is
the course's, in the course's order (seeded runs give the course's numbers).
"""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .._validation import check_real
from ..autograd import Tensor, release_gradient_graphs
from ..backends import NDArray, array_api, kernels
from ..backends.denormals import flush_in_place, optimizer_must_flush

#: Checks that run on a parameter before every optimizer step, by the parameter's id (a
#: data-parallel model registers one that refuses gradients it has not averaged).
_STEP_CHECKS: dict[int, Callable[[Tensor], None]] = {}


def register_step_check(param: Tensor, check: Callable[[Tensor], None]) -> None:
    """Run ``check(param)`` at the start of every optimizer step that updates ``param``
    (it raises to refuse the step); replaces an earlier check, ends with the parameter."""
    _STEP_CHECKS[id(param)] = check
    weakref.finalize(param, _STEP_CHECKS.pop, id(param), None)


#: The options an optimizer's parameter groups may carry, by name: the check each value
#: must pass (it returns the value as a float, or raises naming the owner and the option).
OptionChecks = dict[str, Callable[[str, str, Any], Any]]


def _nonnegative(owner: str, name: str, value: Any) -> float:
    return check_real(owner, name, value, low=0.0)


def _positive(owner: str, name: str, value: Any) -> float:
    return check_real(owner, name, value, low=0.0, low_open=True)


def _fraction(owner: str, name: str, value: Any) -> float:
    """A value in [0, 1): momentum and moving-average coefficients."""
    return check_real(owner, name, value, low=0.0, high=1.0, high_open=True)


def _check_bool(owner: str, name: str, value: Any) -> bool:
    """``value`` as a bool (True, False, 1 or 0), or a TypeError naming the option."""
    if not isinstance(value, (bool, np.bool_)) and value not in (0, 1):
        raise TypeError(f"{owner}: {name} must be a bool, got {value!r}")
    return bool(value)


class Optimizer:
    """Base class: holds the parameter groups, their options and per-parameter state.

    ``params`` is a list (or any iterable) of Parameters, e.g. ``model.parameters()``, or a
    list of dicts, one per *parameter group* (PyTorch's ``param_groups`` shape): each dict has
    ``"params"`` and any of the optimizer's options, which override the keyword arguments
    for that group's parameters::

        Adam([{"params": weights}, {"params": biases, "weight_decay": 0.0}], lr=1e-3)

    ``param_groups`` lists the groups, each a dict with ``"params"`` and every option
    filled in; ``params`` is all parameters, group after group, and ``state[i]`` holds the
    arrays the optimizer keeps for ``params[i]``. An option read as an attribute
    (``opt.lr``) is the value the groups share; setting it sets it in every group (a
    learning-rate schedule sets each group's ``"lr"`` itself). Subclasses implement
    :meth:`_update` and list their options, with their checks, in ``_option_checks``.
    """

    _option_checks: OptionChecks = {"lr": _nonnegative}

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], **defaults: Any) -> None:
        owner = type(self).__name__
        defaults = {
            name: self._check_option(owner, name, value) for name, value in defaults.items()
        }
        self.param_groups = _build_groups(owner, params, defaults, self._check_option)
        self.params = [p for group in self.param_groups for p in group["params"]]
        # The indices into ``params`` of each group's parameters (groups are contiguous).
        sizes = np.cumsum([0] + [len(group["params"]) for group in self.param_groups])
        self._group_ranges = [range(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        self.state: dict[int, dict[str, NDArray]] = {}
        self._flat: dict = {}  # flat buffers behind ``state``: empty until the first step

    @property
    def _hyperparameters(self) -> tuple[str, ...]:
        return tuple(self._option_checks)

    @classmethod
    def _check_option(cls, owner: str, name: str, value: Any) -> Any:
        check = cls._option_checks.get(name)
        if check is None:
            raise ValueError(
                f"{owner}: unknown option {name!r}; {cls.__name__} takes "
                f"{sorted(cls._option_checks)}"
            )
        return check(owner, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached when ordinary lookup fails: an option read as ``opt.lr``.
        if name in type(self)._option_checks and "param_groups" in self.__dict__:
            values = {group[name] for group in self.param_groups}
            if len(values) > 1:
                raise AttributeError(
                    f"{type(self).__name__}.{name}: the parameter groups have different "
                    f"values {sorted(values)}; read param_groups[i][{name!r}]"
                )
            return values.pop()
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self)._option_checks and "param_groups" in self.__dict__:
            value = self._check_option(type(self).__name__, name, value)
            for group in self.param_groups:
                group[name] = value
        else:
            super().__setattr__(name, value)

    # ----- the update ----------------------------------------------------------------------
    def step(self) -> None:
        """Update every parameter that has a gradient; those whose ``grad`` is None are skipped.

        Each group is updated with its own options. When there is one group, every parameter
        has a gradient and all share one dtype (the usual case), the update runs once over all
        of them: gradients are gathered into one flat array and the formula is applied to
        flat state buffers (``state[i]`` are views into them), instead of a Python loop of
        small array ops per parameter. The arithmetic, and so every bit of the result, is the
        same either way. The step ends the recorded backward pass: its forward graph is no
        longer kept alive for the gradients (:func:`needle.autograd.release_gradient_graphs`).
        """
        release_gradient_graphs()
        params = self.params
        if _STEP_CHECKS:
            for param in params:
                check = _STEP_CHECKS.get(id(param))
                if check is not None:
                    check(param)
        if not self._flat:
            self._allocate_state()
        if (
            len(self.param_groups) == 1
            and self._flat["slots"] is not None
            and all(p.grad is not None for p in params)
        ):
            self._step_flat(self.param_groups[0])
            return
        for group, indices in zip(self.param_groups, self._group_ranges):
            self._step_group(group, [i for i in indices if params[i].grad is not None])

    def _step_group(self, group: dict, indices: list[int]) -> None:
        """Update ``params[i]`` for each ``i`` in ``indices`` (one group's) with ``group``'s
        options."""
        params = self.params
        datas = [params[i].realize_cached_data() for i in indices]
        # Cast the gradients (not in place) so a float64 loss cannot promote a parameter.
        grads = [
            params[i].grad.realize_cached_data().astype(data.dtype, copy=False)
            for i, data in zip(indices, datas)
        ]
        datas = [self._decayed(data, group) for data in datas]
        slots = [self.state[i] for i in indices]
        news = self._apply(datas, grads, slots, group)
        for index, data, new in zip(indices, datas, news):
            _flush_if_needed(new, self.state[index].values())
            params[index].cached_data = new.astype(data.dtype, copy=False)

    def _decayed(self, data, group: dict):
        """``data`` before the update proper: unchanged here; decoupled weight decay
        (:class:`AdamW`) shrinks it. Returns a new array where it changes anything."""
        return data

    def _apply(self, datas: list, grads: list, slots: list, group: dict) -> list:
        """The new parameter arrays for ``datas`` with gradients ``grads`` and state ``slots``
        (one dict per parameter, updated in place) under ``group``'s options: :meth:`_update`
        per parameter here; an optimizer with a fused kernel makes one call for the list."""
        return [
            self._update(slot, data, grad, group) for slot, data, grad in zip(slots, datas, grads)
        ]

    def _update(
        self, slots: dict[str, NDArray], data: NDArray, grad: NDArray, group: dict
    ) -> NDArray:
        """The new parameter array given its array, its gradient, its state ``slots`` and
        its group's options ``group``.

        ``slots`` (this parameter's, or the flat buffers of all of them) are updated in
        place; ``data`` and ``grad`` are not modified.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _update()")

    _slot_names: tuple[str, ...] = ()

    def _allocate_state(self) -> None:
        """Initial state for every parameter: one flat buffer per slot, ``state[i]`` views of it.

        Slots start at zero, or at :meth:`_initial_slot_value` of the parameter's group.
        """
        dtypes = {p.dtype for p in self.params}
        sizes = [p.size for p in self.params]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._flat = {"offsets": offsets, "slots": None, "data": None, "views": None}
        # One flat buffer per slot makes every parameter's state a view into it; that pays
        # only where a view at an offset is an ordinary array (NumPy's), not a strided one
        # that each op would copy (an NDArray's).
        if len(dtypes) == 1 and kernels.OFFSET_VIEWS_ARE_COMPACT:
            dtype = dtypes.pop()
            flat = {
                name: array_api.zeros((int(offsets[-1]),), dtype=dtype) for name in self._slot_names
            }
            self._flat["slots"] = flat
            for i, p in enumerate(self.params):
                self.state[i] = {
                    name: buffer[offsets[i] : offsets[i + 1]].reshape(p.shape)
                    for name, buffer in flat.items()
                }
        else:
            for i, p in enumerate(self.params):
                self.state[i] = {
                    name: array_api.zeros_like(p.realize_cached_data()) for name in self._slot_names
                }
        for group, indices in zip(self.param_groups, self._group_ranges):
            for name in self._slot_names:
                value = self._initial_slot_value(name, group)
                if value:
                    for i in indices:
                        slot = self.state[i][name]
                        slot[(slice(None),) * len(slot.shape)] = value

    def _initial_slot_value(self, name: str, group: dict) -> float:
        """The value state slot ``name`` starts at for ``group``'s parameters."""
        return 0.0

    def _step_flat(self, group: dict) -> None:
        flat, params = self._flat, self.params
        offsets = flat["offsets"]
        dtype = params[0].dtype
        views = flat["views"]
        if views is not None and all(p.cached_data is v for p, v in zip(params, views)):
            data = flat["data"]  # the parameters are still the views made by the last step
        else:
            data = np.concatenate(
                [p.realize_cached_data().reshape(-1) for p in params], dtype=dtype
            )
        grad = np.concatenate(
            [p.grad.realize_cached_data().reshape(-1) for p in params], dtype=dtype
        )
        new = self._apply([self._decayed(data, group)], [grad], [flat["slots"]], group)[0]
        _flush_if_needed(new, flat["slots"].values())
        # Each parameter gets a view of the new array; the old arrays are left untouched.
        views = [new[offsets[i] : offsets[i + 1]].reshape(p.shape) for i, p in enumerate(params)]
        for param, view in zip(params, views):
            param.cached_data = view
        flat["data"], flat["views"] = new, views

    def reset_grad(self) -> None:
        """Set every parameter's ``grad`` to None (call before each ``backward()``)."""
        for param in self.params:
            param.grad = None

    def zero_grad(self) -> None:
        """PyTorch's name for :meth:`reset_grad`."""
        self.reset_grad()

    def clip_grad_norm(self, max_norm: float = 0.25) -> float:
        """:func:`clip_grad_norm` over this optimizer's parameters; returns the norm before."""
        caller = f"{type(self).__name__}.clip_grad_norm"
        return clip_grad_norm(self.params, max_norm, caller=caller)

    # ----- state --------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        """Options and per-parameter state (NumPy copies), for saving.

        ``{"optimizer": class name, "num_params": n, "hyperparameters": {...},
        "param_groups": [{"params": [indices], option: value, ...}, ...],
        "state": {"0": {"u": array}, ...}, ...}``; the state is keyed by the parameter's
        index in ``params`` (as a string), and each group lists its parameters' indices.
        ``hyperparameters`` are the first group's options.
        """
        groups = [
            {"params": list(indices), **{k: v for k, v in group.items() if k != "params"}}
            for group, indices in zip(self.param_groups, self._group_ranges)
        ]
        return {
            "optimizer": type(self).__name__,
            "num_params": len(self.params),
            "hyperparameters": {k: v for k, v in groups[0].items() if k != "params"},
            "param_groups": groups,
            "state": {
                str(i): {k: np.array(v, copy=True) for k, v in slots.items()}
                for i, slots in sorted(self.state.items())
            },
            **self._extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned; training then continues bit-identically.

        The optimizer must have been built with the same groups (the same parameter counts);
        each group's options are restored. A state without ``param_groups`` (saved before
        groups existed) applies its ``hyperparameters`` to every group.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        _check_state_header(owner, state, type(self).__name__, len(self.params))
        per_param = {}
        for key, slots in state["state"].items():
            index = _state_index(owner, key, len(self.params))
            per_param[index] = {
                name: _state_array(owner, key, name, value, self.params[index])
                for name, value in slots.items()
            }
        options = self._saved_group_options(owner, state)
        self._load_extra_state(state)
        for group, saved in zip(self.param_groups, options):
            group.update(saved)
        self._allocate_state()
        for index, slots in per_param.items():
            for name, value in slots.items():
                if name not in self.state[index]:
                    raise ValueError(
                        f"{owner}: unknown state slot {name!r} for "
                        f"{type(self).__name__}; expected {list(self._slot_names)}"
                    )
                slot = self.state[index][name]
                slot[(slice(None),) * len(slot.shape)] = value  # in place: may view a flat buffer

    def _saved_group_options(self, owner: str, state: dict) -> list[dict]:
        """Each group's checked options in ``state``, or a ValueError if its groups differ."""
        if "param_groups" not in state:
            saved = {k: v for k, v in state["hyperparameters"].items() if k in self._option_checks}
            return [saved] * len(self.param_groups)
        groups = state["param_groups"]
        mine = [list(indices) for indices in self._group_ranges]
        theirs = [list(group.get("params", ())) for group in groups]
        if mine != theirs:
            raise ValueError(
                f"{owner}: the state has parameter groups of sizes "
                f"{[len(g) for g in theirs]}, but this optimizer has "
                f"{[len(g) for g in mine]}; build it with the same groups"
            )
        return [
            {
                name: self._check_option(f"{owner}: param_groups[{i}]", name, value)
                for name, value in group.items()
                if name != "params"
            }
            for i, group in enumerate(groups)
        ]


def _build_groups(
    owner: str, params: Any, defaults: dict[str, Any], check: Callable[[str, str, Any], Any]
) -> list[dict]:
    """The parameter groups, each ``{"params": [...], **options}`` with every default
    filled in; a ValueError for an unknown option or a parameter in two groups."""
    if isinstance(params, Tensor):
        raise TypeError(
            f"{owner}: params must be a list of Parameters, got a single Tensor; "
            f"wrap it in a list: [param]"
        )
    params = list(params)
    if not params or not any(isinstance(p, dict) for p in params):
        return [{"params": _check_params(owner, params), **defaults}]
    groups: list[dict] = []
    seen: dict[int, int] = {}  # the group index of each parameter, by id
    for index, group in enumerate(params):
        where = f"param_groups[{index}]"
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(
                f"{owner}: {where} must be a dict with a 'params' list (all "
                f"entries dicts, or all Parameters), got {type(group).__name__}"
            )
        members = _check_params(f"{owner}: {where}", group["params"])
        for param in members:
            if id(param) in seen:
                raise ValueError(
                    f"{owner}: a parameter of shape {tuple(param.shape)} is in "
                    f"both param_groups[{seen[id(param)]}] and {where}; each "
                    f"parameter must be in exactly one group"
                )
            seen[id(param)] = index
        options = {
            name: check(f"{owner}: {where}", name, value)
            for name, value in group.items()
            if name != "params"
        }
        groups.append({"params": members, **defaults, **options})
    return groups


def _flush_if_needed(new, slots: Iterable) -> None:
    """Flush subnormals in a new parameter array and its state, when needle.set_flush_denormal
    is on but the CPU's own flush-to-zero mode is not doing it (see backends.denormals)."""
    if optimizer_must_flush():
        for array in (new, *slots):
            flush_in_place(array)


def _squared_norm(array) -> float:
    """The sum of squares of ``array``'s elements, accumulated in float64."""
    wide = array.astype("float64")
    return float((wide * wide).sum().item())


def _check_params(owner: str, params: Iterable[Tensor]) -> list[Tensor]:
    if isinstance(params, Tensor):
        raise TypeError(
            f"{owner}: params must be a list of Parameters, got a single Tensor; "
            f"wrap it in a list: [param]"
        )
    params = list(params)
    if not params:
        raise ValueError(
            f"{owner}: got an empty parameter list; pass model.parameters() "
            f"of a model that has parameters"
        )
    seen = set()
    for index, param in enumerate(params):
        if not isinstance(param, Tensor):
            raise TypeError(
                f"{owner}: params[{index}] must be a Parameter (needle.Tensor), "
                f"got {type(param).__name__}"
            )
        if id(param) in seen:
            raise ValueError(
                f"{owner}: params[{index}] appears more than once in the "
                f"parameter list; each parameter would be updated twice"
            )
        seen.add(id(param))
    return params


def _check_state_header(owner: str, state: Any, kind: str, num_params: int) -> None:
    required = {"optimizer", "state", "hyperparameters"}
    if not isinstance(state, dict) or not required <= set(state):
        got = f"keys {sorted(state)}" if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{owner}: expected a dict from Optimizer.state_dict() with keys "
            f"{sorted(required)}, got {got}"
        )
    if state["optimizer"] != kind:
        raise ValueError(f"{owner}: the state was saved by {state['optimizer']!r}, not {kind!r}")
    if state.get("num_params", num_params) != num_params:
        raise ValueError(
            f"{owner}: the state is for {state['num_params']} parameters, but this "
            f"optimizer has {num_params}; build it on the same model"
        )


def _state_index(owner: str, key: Any, num_params: int) -> int:
    try:
        index = int(key)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < num_params:
        raise ValueError(
            f"{owner}: state key {key!r} is not a parameter index in [0, {num_params})"
        )
    return index


def _state_array(owner: str, key: str, name: str, value: Any, param: Tensor) -> np.ndarray:
    array = np.array(value.numpy() if isinstance(value, Tensor) else value, copy=True)
    if array.shape != tuple(param.shape):
        raise ValueError(
            f"{owner}: state[{key!r}][{name!r}] has shape {array.shape}, but "
            f"params[{key}] has shape {tuple(param.shape)}"
        )
    if array.dtype != param.dtype:
        raise ValueError(
            f"{owner}: state[{key!r}][{name!r}] has dtype {array.dtype}, but "
            f"params[{key}] has dtype {param.dtype}"
        )
    return array


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (an exponential average) and weight decay.

    Per parameter: ``g = grad + weight_decay * p``;
    ``u = momentum * u + (1 - momentum) * g`` (u starts at 0); ``p = p - lr * u``.
    (PyTorch's equivalent is ``SGD(momentum=m, dampening=m)`` with a zero initial buffer.)
    ``params`` may be parameter groups (see :class:`Optimizer`).

    >>> import needle as ndl
    >>> w = ndl.nn.Parameter(ndl.Tensor([1.0], dtype="float32"))
    >>> (w * w).sum().backward()
    >>> SGD([w], lr=0.1).step()
    >>> w.numpy().tolist()
    [0.800000011920929]
    """

    _option_checks = {"lr": _nonnegative, "momentum": _fraction, "weight_decay": _nonnegative}

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    _slot_names = ("u",)

    def _apply(self, datas: list, grads: list, slots: list, group: dict) -> list:
        # The course's u = m*u + (1-m)*(grad + wd*p); p - lr*u, one kernel for the list.
        return kernels.sgd_update(
            datas,
            grads,
            [slot["u"] for slot in slots],
            group["lr"],
            group["momentum"],
            group["weight_decay"],
        )


class _StepCounter:
    """Mixin for optimizers whose formula uses the step count ``t`` (+1 per :meth:`step`),
    saved in :meth:`state_dict`."""

    t: int

    def step(self) -> None:
        """One step: ``t += 1``, then update every parameter that has a gradient."""
        self.t += 1
        super().step()  # type: ignore[misc]

    def _extra_state(self) -> dict:
        return {"t": self.t}

    def _load_extra_state(self, state: dict) -> None:
        t = state.get("t", 0)
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: step count t must be an "
                f"int >= 0, got {t!r}"
            )
        self.t = int(t)


class Adam(_StepCounter, Optimizer):
    """Adam with bias correction and (L2, not decoupled) weight decay.

    ``t`` increases once per :meth:`step`. Per parameter: ``g = grad + weight_decay * p``;
    ``m = beta1 * m + (1 - beta1) * g``; ``v = beta2 * v + (1 - beta2) * g**2``;
    ``m_hat = m / (1 - beta1**t)``; ``v_hat = v / (1 - beta2**t)``;
    ``p = p - lr * m_hat / (sqrt(v_hat) + eps)``. ``params`` may be parameter groups (see
    :class:`Optimizer`); PyTorch's ``betas=(b1, b2)`` are ``beta1``, ``beta2`` here.
    """

    _option_checks = {
        "lr": _nonnegative,
        "beta1": _fraction,
        "beta2": _fraction,
        "eps": _positive,
        "weight_decay": _nonnegative,
    }

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay
        )
        self.t = 0

    _slot_names = ("m", "v")

    def _l2_decay(self, group: dict) -> float:
        """The weight decay added to the gradient (``g = grad + wd * p``)."""
        return group["weight_decay"]

    def _apply(self, datas: list, grads: list, slots: list, group: dict) -> list:
        # The course's formula, operation for operation, one kernel for the list.
        beta1, beta2 = group["beta1"], group["beta2"]
        return kernels.adam_update(
            datas,
            grads,
            [slot["m"] for slot in slots],
            [slot["v"] for slot in slots],
            group["lr"],
            beta1,
            beta2,
            group["eps"],
            self._l2_decay(group),
            1 - beta1**self.t,
            1 - beta2**self.t,
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's ``AdamW``.

    Per parameter, first ``p = p * (1 - lr * weight_decay)``, then :class:`Adam`'s update
    with no decay in the gradient: the decay shrinks the weights directly instead of being
    rescaled by the adaptive denominator. Defaults are PyTorch's (``lr=1e-3``,
    ``weight_decay=1e-2``); ``params`` may be parameter groups (see :class:`Optimizer`),
    e.g. ``weight_decay=0`` for biases and norm parameters.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(
            params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay
        )

    def _l2_decay(self, group: dict) -> float:
        return 0.0

    def _decayed(self, data, group: dict):
        shrink = 1 - group["lr"] * group["weight_decay"]
        return data if shrink == 1 else array_api.multiply(data, shrink)


class RMSprop(Optimizer):
    """RMSprop, PyTorch's ``RMSprop`` (same options and defaults).

    Per parameter: ``g = grad + weight_decay * p``; ``v = alpha * v + (1 - alpha) * g**2``;
    the denominator is ``sqrt(v) + eps``, or with ``centered``
    ``sqrt(v - a**2) + eps`` where ``a = alpha * a + (1 - alpha) * g``; then with
    ``momentum`` > 0 ``b = momentum * b + g / denominator`` and ``p = p - lr * b``, else
    ``p = p - lr * g / denominator``. ``params`` may be parameter groups.
    """

    _option_checks = {
        "lr": _nonnegative,
        "alpha": _fraction,
        "eps": _positive,
        "weight_decay": _nonnegative,
        "momentum": _fraction,
        "centered": _check_bool,
    }
    _slot_names = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
        )

    def _update(
        self, slots: dict[str, NDArray], data: NDArray, grad: NDArray, group: dict
    ) -> NDArray:
        alpha = group["alpha"]
        g = array_api.multiply(data, group["weight_decay"])
        g += grad
        square_avg = slots["square_avg"]
        square_avg *= alpha
        square_avg += (g * g) * (1 - alpha)
        if group["centered"]:
            grad_avg = slots["grad_avg"]
            grad_avg *= alpha
            grad_avg += g * (1 - alpha)
            denominator = array_api.sqrt(square_avg - grad_avg * grad_avg)
        else:
            denominator = array_api.sqrt(square_avg)
        denominator += group["eps"]
        step = g / denominator
        if group["momentum"] > 0:
            buffer = slots["momentum_buffer"]
            buffer *= group["momentum"]
            buffer += step
            step = buffer
        return data - step * group["lr"]


class Adagrad(_StepCounter, Optimizer):
    """Adagrad, PyTorch's ``Adagrad`` (same options and defaults).

    ``t`` increases once per :meth:`step`. Per parameter: ``g = grad + weight_decay * p``;
    ``s = s + g**2`` (``s`` starts at ``initial_accumulator_value``);
    ``p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)``.
    ``params`` may be parameter groups (see :class:`Optimizer`).
    """

    _option_checks = {
        "lr": _nonnegative,
        "lr_decay": _nonnegative,
        "weight_decay": _nonnegative,
        "initial_accumulator_value": _nonnegative,
        "eps": _positive,
    }
    _slot_names = ("sum",)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
        self.t = 0

    def _initial_slot_value(self, name: str, group: dict) -> float:
        return group["initial_accumulator_value"]

    def _update(
        self, slots: dict[str, NDArray], data: NDArray, grad: NDArray, group: dict
    ) -> NDArray:
        g = array_api.multiply(data, group["weight_decay"])
        g += grad
        total = slots["sum"]
        total += g * g
        denominator = array_api.sqrt(total)
        denominator += group["eps"]
        lr = group["lr"] / (1 + (self.t - 1) * group["lr_decay"])
        return data - (g / denominator) * lr


def clip_grad_norm(
    parameters: Iterable[Tensor], max_norm: float = 0.25, *, caller: str = "clip_grad_norm"
) -> float:
    """Scale all gradients so their global L2 norm is at most ``max_norm``.

    The norm is taken over every gradient together, as if concatenated (parameters
    without a gradient are skipped). If it exceeds ``max_norm`` each gradient is
    multiplied by ``max_norm / (norm + 1e-6)`` (the small constant keeps the clipped
    norm just under ``max_norm``, as PyTorch's ``clip_grad_norm_`` does); each clipped
    gradient is a new tensor (the old one is not modified).

    Args:
        parameters: the tensors whose ``grad`` to clip (e.g. ``model.parameters()``).
        max_norm: the largest global norm allowed, > 0.
        caller: the name used in error messages.

    Returns:
        the global norm before clipping.

    Example:
        >>> import needle as ndl
        >>> w = ndl.Tensor([3.0, 4.0]); (w * w).sum().backward()  # grad (6, 8), norm 10
        >>> clip_grad_norm([w], 5.0), w.grad.numpy().round(4).tolist()
        (10.0, [3.0, 4.0])
    """
    max_norm = check_real(caller, "max_norm", max_norm, low=0.0, low_open=True)
    with_grad = [(p, p.grad.realize_cached_data()) for p in parameters if p.grad is not None]
    total = math.sqrt(sum(_squared_norm(grad) for _, grad in with_grad))
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for param, grad in with_grad:
            param.grad = Tensor.make_const((grad * scale).astype(grad.dtype, copy=False))
    return total
